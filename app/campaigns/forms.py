"""Campaign forms."""

from flask import current_app
from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectChoice, SelectMultipleField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp
from wtforms.widgets import CheckboxInput, ListWidget

from app.services.audiences import MAX_DAYS
from app.services.scoring import SEGMENT_DESCRIPTIONS, Segment


class CheckboxesField(SelectMultipleField):
    """Several choices, shown as checkboxes."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class CampaignForm(FlaskForm):
    """Name, who to reach, and the subject line."""

    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    lapsed_days = IntegerField(
        "Lapsed for at least (days)", validators=[DataRequired(), NumberRange(min=1, max=MAX_DAYS)]
    )
    segments = CheckboxesField(
        "Segments",
        choices=[SelectChoice(segment.value, segment.value) for segment in Segment],
        validators=[Optional()],
        description="None ticked: every segment.",
    )
    min_spent = StringField(
        "Spent at least",
        validators=[Optional(), Length(max=30)],
        description="In total over all their orders, e.g. 250 or £1,200.",
    )
    cooldown_days = IntegerField(
        "Not emailed in the last (days)",
        validators=[Optional(), NumberRange(min=0, max=MAX_DAYS)],
        description=(
            "Customers emailed by any campaign since then, or waiting in one, are left out. 0: no cooldown."
        ),
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
        config = current_app.config
        if self.lapsed_days.data is None and not self.lapsed_days.raw_data:
            self.lapsed_days.data = config["LAPSE_AFTER_DAYS"]
        if self.cooldown_days.data is None and not self.cooldown_days.raw_data:
            self.cooldown_days.data = config["CONTACT_COOLDOWN_DAYS"]

    @staticmethod
    def segment_description(value: str) -> str:
        return SEGMENT_DESCRIPTIONS[Segment(value)]
