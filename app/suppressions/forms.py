"""Forms to add an address to the suppression list and to lift a suppression."""

from flask_wtf import FlaskForm
from wtforms import EmailField, SelectChoice, SelectField, StringField, SubmitField, TextAreaField
from wtforms.validators import AnyOf, DataRequired, Length

from app.models import SuppressionReason
from app.services.suppressions import REASON_LABELS

# "Erased" is given by erasing a customer, never chosen by hand.
ADDABLE = [reason for reason in SuppressionReason if reason != SuppressionReason.ERASED]


class AddSuppressionForm(FlaskForm):
    """An address, why it must not be emailed, and an optional note."""

    email = EmailField(
        "Email address",
        validators=[DataRequired("Enter the address to suppress."), Length(max=254)],
        description="Only a keyed hash of it is kept, never the address itself.",
    )
    reason = SelectField(
        "Reason",
        choices=[SelectChoice(reason.value, REASON_LABELS[reason]) for reason in ADDABLE],
        default=SuppressionReason.MANUAL.value,
        validators=[AnyOf([reason.value for reason in ADDABLE])],
    )
    note = TextAreaField(
        "Note",
        validators=[Length(max=500)],
        description="Optional, for other staff: where the request came from. Leave out personal details.",
    )
    submit = SubmitField("Suppress this address")


class LiftForm(FlaskForm):
    """Why a suppression is lifted: required, and kept in the audit trail."""

    reason = StringField(
        "Why lift it?",
        validators=[DataRequired("Say why: the reason is recorded."), Length(max=500)],
        description="Recorded in the audit trail, e.g. “added by mistake”, “asked to hear from us again”.",
    )
    submit = SubmitField("Lift suppression")
