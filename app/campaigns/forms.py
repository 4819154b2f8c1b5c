"""Campaign forms."""

from flask import current_app
from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField
from wtforms import (
    IntegerField,
    RadioField,
    SelectChoice,
    SelectMultipleField,
    StringField,
    SubmitField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp
from wtforms.widgets import CheckboxInput, ListWidget

from app.models import OfferKind
from app.services import campaign_content
from app.services.audiences import MAX_DAYS
from app.services.scoring import SEGMENT_DESCRIPTIONS, Segment


class CheckboxesField(SelectMultipleField):
    """Several choices, shown as checkboxes."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


# The email and offer fields, shared by the new-campaign form and the edit form.
SUBJECT = StringField(
    "Subject",
    validators=[Optional(), Length(max=200), Regexp(r"^[^\r\n]*$", message="One line only.")],
    description="Placeholders work here too, e.g. {{ first_name }}.",
)
BODY = TextAreaField(
    "Email body",
    validators=[Optional(), Length(max=campaign_content.BODY_MAX_CHARS)],
    description=(
        "Plain text with light Markdown (**bold**, *italic*, [words](address)). Placeholders: "
        "{{ first_name }}, {{ business_name }}, {{ link }} (required: the customer's survey link), "
        "{{ offer_code }}. A link alone on its line becomes a button. Leave empty for the default."
    ),
    render_kw={"rows": 18},
)
OFFER_KIND = RadioField(
    "Offer",
    choices=[
        SelectChoice(OfferKind.NONE.value, "No offer"),
        SelectChoice(OfferKind.SHARED.value, "One code for everyone"),
        SelectChoice(OfferKind.UNIQUE.value, "A code of their own for each customer, from a file"),
    ],
    default=OfferKind.NONE.value,
)
OFFER_CODE = StringField(
    "Shared offer code",
    validators=[Optional(), Length(max=campaign_content.OFFER_CODE_MAX_CHARS)],
    description="Shown in the email through {{ offer_code }}.",
)
OFFER_CODES = FileField(
    "File of unique codes",
    validators=[FileAllowed(["csv", "txt"], "Upload a .txt or .csv file.")],
    description=(
        "One code per line, or a one-column CSV (a header such as \u201ccode\u201d is skipped). "
        "There must be a code for every customer of the audience."
    ),
)


class CampaignForm(FlaskForm):
    """Name, who to reach, and the email."""

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
    subject = SUBJECT
    body = BODY
    offer_kind = OFFER_KIND
    offer_code = OFFER_CODE
    offer_codes = OFFER_CODES
    reminder_days = StringField(
        "Remind after (days)",
        validators=[Optional(), Length(max=100)],
        description="Days after the first email on which those who have not answered get a reminder, "
        "e.g. 4, 10. Empty: no reminders.",
    )
    submit = SubmitField("Create campaign")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = current_app.config
        if self.lapsed_days.data is None and not self.lapsed_days.raw_data:
            self.lapsed_days.data = config["LAPSE_AFTER_DAYS"]
        if self.cooldown_days.data is None and not self.cooldown_days.raw_data:
            self.cooldown_days.data = config["CONTACT_COOLDOWN_DAYS"]
        if not self.is_submitted():
            self.reminder_days.data = ", ".join(str(day) for day in config["REMINDER_DAYS"])
            self.subject.data = self.subject.data or campaign_content.DEFAULT_SUBJECT
            self.body.data = self.body.data or campaign_content.DEFAULT_BODY

    @staticmethod
    def segment_description(value: str) -> str:
        return SEGMENT_DESCRIPTIONS[Segment(value)]


class CampaignContentForm(FlaskForm):
    """A draft campaign's subject, body and offer."""

    subject = SUBJECT
    body = BODY
    offer_kind = OFFER_KIND
    offer_code = OFFER_CODE
    offer_codes = OFFER_CODES
    submit = SubmitField("Save")
