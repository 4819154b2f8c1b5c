"""The survey's copy and the labels shown for every enum value. The survey labels are a
contract (DESIGN §5): keep them exactly."""

from __future__ import annotations

import enum

from app.models.enums import (
    ContactPreference,
    ImprovementStatus,
    Outcome,
    StopReason,
    SuppressionReason,
    WouldReturn,
)

QUESTION_STOP_REASON = "What made you stop buying from us?"
QUESTION_WIN_BACK = "We really valued your custom. What would it take to win you back?"
QUESTION_WOULD_RETURN = "Would you consider buying from us again?"
QUESTION_CONTACT = "How should we get back to you?"
QUESTION_MAY_QUOTE = "You may quote my words, without my name, on your 'You Said, We Did' page."
QUESTION_FOLLOW_UP = "Would you tell us what we did to cause this?"
QUESTION_REFERRAL = "Know someone who might like us?"
LABEL_BETTER_ELSEWHERE = "Which?"
LABEL_PHONE = "Phone number"

STOP_REASON_LABELS = {
    StopReason.PRICE: "Price",
    StopReason.QUALITY: "Quality of the product",
    StopReason.SERVICE: "Customer service",
    StopReason.DELIVERY: "Delivery or availability",
    StopReason.BETTER_ELSEWHERE: "I found something better elsewhere",
    StopReason.NO_LONGER_NEEDED: "I no longer need it",
    StopReason.MOVED_OR_CLOSED: "I moved away or closed my business",
    StopReason.OTHER: "Something else",
}
WOULD_RETURN_LABELS = {
    WouldReturn.YES: "Yes",
    WouldReturn.MAYBE: "Maybe",
    WouldReturn.NEVER: "No, never",
}
CONTACT_LABELS = {
    ContactPreference.EMAIL: "Email",
    ContactPreference.PHONE: "Phone",
    ContactPreference.NONE: "Please don't contact me",
}

# Keyed by (class, value): members of different enums share values ("never") and, being
# strings, would collide as plain dictionary keys.
LABELS: dict[tuple[type, str], str] = {
    (type(member), member.value): label
    for table in (STOP_REASON_LABELS, WOULD_RETURN_LABELS, CONTACT_LABELS)
    for member, label in table.items()
}
LABELS.update(
    {
        (Outcome, Outcome.NEVER.value): "Never",
        (Outcome, Outcome.ACTIONABLE.value): "Actionable",
        (Outcome, Outcome.UNFEASIBLE.value): "Unfeasible",
        (ImprovementStatus, "planned"): "Planned",
        (ImprovementStatus, "in_progress"): "In progress",
        (ImprovementStatus, "done"): "Done",
        (SuppressionReason, "unsubscribed"): "Unsubscribed",
        (SuppressionReason, "never"): "Said never",
        (SuppressionReason, "unfeasible"): "Unfeasible request",
        (SuppressionReason, "hard_bounce"): "Hard bounce",
        (SuppressionReason, "complaint"): "Complaint",
        (SuppressionReason, "no_consent"): "No marketing consent",
        (SuppressionReason, "manual"): "Added by staff",
        (SuppressionReason, "erased"): "Erased",
    }
)


def label_for(value: object) -> str:
    """The label people see for an enum value (statuses without one are title-cased)."""
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        key = (type(value), value.value)
        if key in LABELS:
            return LABELS[key]
        return str(value.value).replace("_", " ").capitalize()
    return str(value)
