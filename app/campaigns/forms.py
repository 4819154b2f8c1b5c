"""Campaign forms."""

from flask import current_app
from flask_wtf import FlaskForm
from wtforms import IntegerField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp


class CampaignForm(FlaskForm):
    """Name, who to reach, and the subject line."""

    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    lapsed_days = IntegerField(
        "Lapsed for at least (days)", validators=[DataRequired(), NumberRange(min=1, max=36500)]
    )
    limit = IntegerField(
        "At most this many customers",
        validators=[Optional(), NumberRange(min=1)],
        description="The customers most worth winning back (highest win-back priority) come first.",
    )
    subject = StringField(
        "Subject",
        validators=[Optional(), Length(max=200), Regexp(r"^[^\r\n]*$", message="One line only.")],
    )
    submit = SubmitField("Create campaign")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.lapsed_days.data is None and not self.is_submitted():
            self.lapsed_days.data = current_app.config["LAPSE_AFTER_DAYS"]
