"""Improvement form."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectChoice, SelectField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length

from app.models import ImprovementStatus
from app.survey.choices import label_for


class ImprovementForm(FlaskForm):
    """You said / We did, status and publication."""

    you_said = TextAreaField(
        "You said",
        validators=[DataRequired(), Length(max=500)],
        description="A short public paraphrase of what customers asked for. No names.",
    )
    we_did = TextAreaField(
        "We did",
        validators=[Length(max=5000)],
        description="What changed. Markdown: **bold**, *italic*, lists and links.",
    )
    status = SelectField(
        "Status", choices=[SelectChoice(status.value, label_for(status)) for status in ImprovementStatus]
    )
    published = BooleanField("Publish on the public \u201cYou Said, We Did\u201d page once done")
    submit = SubmitField("Save")
