"""The survey: open an invitation from its signed link, store one response (editable until
staff triage it), suggest an outcome, and email a fresh link for an expired one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from app import emails
from app.database import Writes, first_row, write_together
from app.exceptions import InvalidInput, InvalidLink
from app.extensions import db
from app.models import (
    ContactPreference,
    Customer,
    Invitation,
    Outcome,
    Response,
    Setting,
    StopReason,
    SuppressionReason,
    WouldReturn,
)
from app.services import settings, suppressions
from app.tokens import read_expired_survey_token, read_survey_token

MAX_FOLLOW_UP = 2000
DONT_CONTACT_NOTE = "Survey answer: please don't contact me."


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
    return open_survey(token, now=now)[0]


def open_survey(token: str, *, now: datetime | None = None) -> tuple[Invitation, Response | None]:
    """The invitation behind a survey link and its response if it has one, in one query.
    Every way a link can be bad raises InvalidLink.

    With `now`, the first opening is recorded: the only change a GET may make. Later openings
    only read (no write lock is taken)."""
    reference, nonce = read_survey_token(token)
    invitation, response = _invitation_and_response(reference)
    if invitation is None or invitation.revoked or invitation.nonce != nonce:
        raise InvalidLink("unknown or revoked invitation")
    if now is not None and invitation.opened_at is None:
        # End the read first: a transaction that read may not then take SQLite's write lock.
        db.session.rollback()
        db.session.execute(
            sa.update(Invitation)
            .where(Invitation.id == invitation.id, Invitation.opened_at.is_(None))
            .values(opened_at=now)
        )
        db.session.commit()
        invitation, response = _invitation_and_response(reference)
    return invitation, response


@dataclass(frozen=True)
class LinkState:
    """What a survey link's page depends on, read in one row without loading any object."""

    first_name: str
    phone: str
    locale: str | None
    opened: bool
    answered: bool


# Built once: a Core SELECT of plain columns, compiled once by SQLAlchemy's statement cache.
_LINK_STATE = (
    sa.select(
        Invitation.revoked,
        Invitation.nonce,
        Invitation.opened_at.is_not(None),
        Customer.first_name,
        Customer.phone,
        Customer.locale,
        Response.id.is_not(None),
    )
    .join(Customer, Customer.id == Invitation.customer_id)
    .outerjoin(Response, Response.invitation_id == Invitation.id)
    .where(Invitation.reference == sa.bindparam("reference"))
)


def link_state(token: str) -> LinkState:
    """The state of the invitation behind a survey link, read only (nothing is recorded; see
    open_survey). Every way a link can be bad raises InvalidLink, as in open_survey."""
    reference, nonce = read_survey_token(token)
    # Outside the ORM session and SQLAlchemy's execution: nothing is loaded or tracked.
    row = first_row(_LINK_STATE, {"reference": reference})
    if row is None or row[0] or row[1] != nonce:
        raise InvalidLink("unknown or revoked invitation")
    return LinkState(
        first_name=row[3] or "", phone=row[4] or "", locale=row[5], opened=bool(row[2]), answered=bool(row[6])
    )


def _invitation_and_response(reference: str) -> tuple[Invitation | None, Response | None]:
    row = db.session.execute(
        sa.select(Invitation, Response)
        .outerjoin(Response, Response.invitation_id == Invitation.id)
        .options(joinedload(Invitation.customer))
        .where(Invitation.reference == reference)
    ).first()
    return (row[0], row[1]) if row is not None else (None, None)


def response_for(invitation_id: int) -> Response | None:
    """The stored response of an invitation, if it has one."""
    return db.session.scalar(sa.select(Response).where(Response.invitation_id == invitation_id))


def suggest_outcome(answers: Answers, cannot_offer: list[str]) -> tuple[Outcome, str]:
    """A first sorting of an answer, for staff to confirm (stored apart from their decision):
    "No, never" suggests never; a request matching one of the things the business cannot offer
    (`cannot_offer`, the staff-edited list) suggests unfeasible; anything else, actionable."""
    if answers.would_return == WouldReturn.NEVER:
        return Outcome.NEVER, "Answered \u201cNo, never\u201d to buying again."
    text = "\n".join(part for part in (answers.win_back_text, answers.better_elsewhere) if part)
    phrase = settings.matching_phrase(text, cannot_offer)
    if phrase is not None:
        return Outcome.UNFEASIBLE, f"Asks for \u201c{phrase}\u201d, on the list of things we cannot offer."
    return Outcome.ACTIONABLE, "Open to coming back; read what they asked for."


def is_editable(response: Response) -> bool:
    """Answers can be changed until staff triage them."""
    return response.outcome is None and response.triaged_at is None


def submit_response(invitation_id: int, answers: Answers, *, now: datetime, edit: bool = False) -> Response:
    """Store the answers once. A second submission of a new form (even a simultaneous one) gets
    the first; with `edit`, the stored answers are replaced, as long as staff have not triaged
    them (after triage the stored response is returned unchanged)."""
    existing = response_for(invitation_id)
    if existing is not None:
        if edit and is_editable(existing):
            return _replace_answers(existing, answers, now=now)
        return existing
    invitation = db.session.get(Invitation, invitation_id, options=[joinedload(Invitation.customer)])
    outcome, reason = suggest_outcome(answers, settings.unfeasible_phrases())
    response = Response(invitation_id=invitation_id, **_columns(answers, outcome, reason, now))
    db.session.add(response)
    invitation.answered_at = now
    invitation.next_reminder_at = None  # an answer ends the reminders
    _respect_wishes(invitation.customer.email, answers, now)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        existing = response_for(invitation_id)
        if existing is None:
            raise
        return existing
    return response


# Everything an answer needs to know, in one row: the link, any earlier answer and
# the staff's list of things the business cannot offer.
_ANSWER_STATE = (
    sa.select(
        Invitation.id,
        Invitation.revoked,
        Invitation.nonce,
        Response.id,
        Response.outcome.is_(None) & Response.triaged_at.is_(None),
        sa.select(Setting.value).where(Setting.key == settings.UNFEASIBLE_LIST).scalar_subquery(),
    )
    .outerjoin(Response, Response.invitation_id == Invitation.id)
    .where(Invitation.reference == sa.bindparam("reference"))
)


def answer(token: str, answers: Answers, *, now: datetime, edit: bool = False) -> None:
    """Store the answers sent from a survey link, as submit_response does, in one read and one
    short write: the link, the earlier answer and the staff's list are read first, outside any
    write transaction, so that on SQLite the write lock is held only for the UPDATE, the INSERT
    and the commit. Every way a link can be bad raises InvalidLink."""
    reference, nonce = read_survey_token(token)
    row = first_row(_ANSWER_STATE, {"reference": reference})
    if row is None or row[1] or row[2] != nonce:
        raise InvalidLink("unknown or revoked invitation")
    invitation_id, response_id, editable, cannot_offer = row[0], row[3], row[4], row[5]
    if response_id is not None:
        if edit and editable:
            submit_response(invitation_id, answers, now=now, edit=True)
        return
    if _suppresses(answers):
        # "No, never" and "Please don't contact me" (a few answers in many): stored with the
        # suppression they bring, in one transaction through the ORM.
        submit_response(invitation_id, answers, now=now)
        return
    outcome, reason = suggest_outcome(answers, settings.parse_phrases(cannot_offer or ""))
    values = {"invitation_id": invitation_id, "follow_up_text": "", **_columns(answers, outcome, reason, now)}
    try:
        write_together(lambda writes: _store_answer(writes, values))
    except IntegrityError:
        # Answered meanwhile (two tabs, a double click): the first answer stays.
        if response_for(invitation_id) is None:
            raise


# The writes of an answer, built once: an invitation still open is marked answered (which ends
# its reminders), and the response is added.
_INVITATIONS = Invitation.__table__
_MARK_ANSWERED = (
    sa.update(_INVITATIONS)
    .where(_INVITATIONS.c.id == sa.bindparam("invitation_id"), _INVITATIONS.c.revoked.is_(False))
    .values(answered_at=sa.bindparam("submitted_at"), next_reminder_at=None)
)


def _store_answer(writes: Writes, values: dict) -> None:
    """The writes of survey.answer, for write_together to commit. The UPDATE goes first and only
    touches an invitation that is still open: revoked between the read and here, nothing is
    stored."""
    marked = writes.execute(
        _MARK_ANSWERED, {"invitation_id": values["invitation_id"], "submitted_at": values["submitted_at"]}
    )
    if not marked:
        raise InvalidLink("revoked invitation")
    writes.insert(Response.__table__, values)


def _suppresses(answers: Answers) -> bool:
    """Whether these answers put the address on the suppression list (see _respect_wishes)."""
    return answers.would_return == WouldReturn.NEVER or answers.contact_via == ContactPreference.NONE


def _columns(answers: Answers, outcome: Outcome, reason: str, now: datetime) -> dict:
    """A response's columns for these answers and their suggested outcome."""
    return {
        "stop_reason": answers.stop_reason,
        "better_elsewhere": answers.better_elsewhere,
        "win_back_text": answers.win_back_text,
        "would_return": answers.would_return,
        "contact_via": answers.contact_via,
        "phone": answers.phone,
        "may_quote": answers.may_quote,
        "submitted_at": now,
        "suggested_outcome": outcome,
        "suggested_reason": reason,
    }


def _replace_answers(response: Response, answers: Answers, *, now: datetime) -> Response:
    """Replace untriaged answers in one UPDATE that does nothing once staff have triaged them."""
    outcome, reason = suggest_outcome(answers, settings.unfeasible_phrases())
    values = _columns(answers, outcome, reason, now)
    if answers.would_return != WouldReturn.NEVER:
        values["follow_up_text"] = ""
    changed = db.session.execute(
        sa.update(Response)
        .where(Response.id == response.id, Response.outcome.is_(None), Response.triaged_at.is_(None))
        .values(**values)
    ).rowcount
    if changed:
        invitation = db.session.get(
            Invitation, response.invitation_id, options=[joinedload(Invitation.customer)]
        )
        _respect_wishes(invitation.customer.email, answers, now)
    db.session.commit()
    db.session.refresh(response)
    return response


def _respect_wishes(email: str, answers: Answers, now: datetime) -> None:
    """ "No, never" and "Please don't contact me" both keep the address out of every later
    campaign and reminder: it is suppressed (staff can lift it if asked to)."""
    if answers.would_return == WouldReturn.NEVER:
        suppressions.suppress(email, SuppressionReason.NEVER, now)
    elif answers.contact_via == ContactPreference.NONE:
        suppressions.suppress(email, SuppressionReason.UNSUBSCRIBED, now, note=DONT_CONTACT_NOTE)


def save_follow_up(invitation_id: int, text: str) -> Response:
    """Store the optional answer to "what did we do to cause this?" on a "No, never" response.

    Raises InvalidInput when there is no such untriaged response or the text is too long."""
    response = response_for(invitation_id)
    if response is None or response.would_return != WouldReturn.NEVER or not is_editable(response):
        raise InvalidInput("follow_up_text: there is no \u201cNo, never\u201d answer to add this to.")
    if len(text) > MAX_FOLLOW_UP:
        raise InvalidInput(f"follow_up_text: at most {MAX_FOLLOW_UP} characters.")
    response.follow_up_text = text
    db.session.commit()
    return response


def send_fresh_link(token: str, *, now: datetime) -> bool:
    """Email a fresh link for a genuine expired survey link, to the address on file only.

    Returns whether a message was sent; callers answer alike either way. Nothing is sent for a
    link that does not verify, has not expired, belongs to a revoked or answered-and-triaged
    invitation, or to a suppressed address."""
    try:
        reference, nonce = read_expired_survey_token(token, now_timestamp=now.timestamp())
    except InvalidLink:
        return False
    invitation = db.session.scalar(
        sa.select(Invitation)
        .options(joinedload(Invitation.customer), joinedload(Invitation.campaign))
        .where(Invitation.reference == reference)
    )
    if invitation is None or invitation.revoked or invitation.nonce != nonce:
        return False
    response = response_for(invitation.id)
    if response is not None and not is_editable(response):
        return False
    customer = invitation.customer
    if suppressions.suppression_for_customer(customer) is not None:
        return False
    message = emails.compose_invitation(invitation, customer, invitation.campaign)
    db.session.rollback()  # hold no transaction while the mail server answers
    with emails.connect() as connection:
        connection.send(message)
    return True
