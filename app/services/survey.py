"""The survey: open an invitation from its signed link, store one response, suggest an outcome."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from app.exceptions import InvalidLink
from app.extensions import db
from app.models import (
    ContactPreference,
    Invitation,
    Outcome,
    Response,
    StopReason,
    SuppressionReason,
    WouldReturn,
)
from app.services import suppressions
from app.tokens import read_survey_token


@dataclass(frozen=True)
class Answers:
    """The five answers, already validated by the form."""

    stop_reason: StopReason
    better_elsewhere: str
    win_back_text: str
    would_return: WouldReturn
    contact_via: ContactPreference
    phone: str
    may_quote: bool


def open_invitation(token: str, *, now: datetime | None = None) -> Invitation:
    """The invitation behind a survey link. Every way a link can be bad raises InvalidLink.

    With `now`, the first opening is recorded: the only change a GET may make."""
    reference, nonce = read_survey_token(token)
    if now is not None:
        # Write first, then read: a GET's transaction may not hold the write lock up front.
        db.session.execute(
            sa.update(Invitation)
            .where(
                Invitation.reference == reference,
                Invitation.nonce == nonce,
                Invitation.revoked.is_(False),
                Invitation.opened_at.is_(None),
            )
            .values(opened_at=now)
        )
        db.session.commit()
    invitation = db.session.scalar(
        sa.select(Invitation)
        .options(joinedload(Invitation.customer), joinedload(Invitation.campaign))
        .where(Invitation.reference == reference)
    )
    if invitation is None or invitation.revoked or invitation.nonce != nonce:
        raise InvalidLink("unknown or revoked invitation")
    return invitation


def response_for(invitation_id: int) -> Response | None:
    """The stored response of an invitation, if it has one."""
    return db.session.scalar(sa.select(Response).where(Response.invitation_id == invitation_id))


def suggest_outcome(answers: Answers) -> tuple[Outcome, str]:
    """A first sorting of an answer, for staff to confirm: never, or actionable."""
    if answers.would_return == WouldReturn.NEVER:
        return Outcome.NEVER, "Answered \u201cNo, never\u201d to buying again."
    return Outcome.ACTIONABLE, "Open to coming back; read what they asked for."


def submit_response(invitation_id: int, answers: Answers, *, now: datetime) -> Response:
    """Store the answers once. A second submission (even a simultaneous one) gets the first."""
    existing = response_for(invitation_id)
    if existing is not None:
        return existing
    invitation = db.session.get(Invitation, invitation_id, options=[joinedload(Invitation.customer)])
    outcome, reason = suggest_outcome(answers)
    response = Response(
        invitation_id=invitation_id,
        stop_reason=answers.stop_reason,
        better_elsewhere=answers.better_elsewhere,
        win_back_text=answers.win_back_text,
        would_return=answers.would_return,
        contact_via=answers.contact_via,
        phone=answers.phone,
        may_quote=answers.may_quote,
        submitted_at=now,
        suggested_outcome=outcome,
        suggested_reason=reason,
    )
    db.session.add(response)
    invitation.answered_at = now
    invitation.next_reminder_at = None  # an answer ends the reminders
    if answers.would_return == WouldReturn.NEVER:
        suppressions.suppress(invitation.customer.email, SuppressionReason.NEVER, now)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        existing = response_for(invitation_id)
        if existing is None:
            raise
        return existing
    return response
