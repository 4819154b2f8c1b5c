"""Unsubscribing from an emailed link: idempotent, and it never expires."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from app.exceptions import InvalidLink
from app.extensions import db
from app.models import Invitation, SuppressionReason
from app.services import suppressions
from app.tokens import read_unsubscribe_token


def invitation_for(token: str) -> Invitation:
    """The invitation an unsubscribe link was sent with, or InvalidLink."""
    reference = read_unsubscribe_token(token)
    invitation = db.session.scalar(
        sa.select(Invitation)
        .options(joinedload(Invitation.customer))
        .where(Invitation.reference == reference)
    )
    if invitation is None:
        raise InvalidLink("unknown invitation")
    return invitation


def unsubscribe(token: str, *, now: datetime) -> None:
    """Suppress the address the link was sent to. Running it again changes nothing."""
    invitation = invitation_for(token)
    suppressions.suppress(invitation.customer.email, SuppressionReason.UNSUBSCRIBED, now)
    # No more reminders to this customer, from any campaign.
    db.session.execute(
        sa.update(Invitation)
        .where(Invitation.customer_id == invitation.customer_id)
        .values(next_reminder_at=None)
    )
    db.session.commit()
