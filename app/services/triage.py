"""Triage: staff read the answers and sort each into never, actionable or unfeasible."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from app.exceptions import NotFound
from app.extensions import db
from app.models import Invitation, Outcome, Response, SuppressionReason
from app.services import audit, suppressions

UNTRIAGED = "untriaged"
FILTERS = (UNTRIAGED, *(outcome.value for outcome in Outcome), "all")
SUPPRESS_ON = {Outcome.NEVER: SuppressionReason.NEVER, Outcome.UNFEASIBLE: SuppressionReason.UNFEASIBLE}


@dataclass
class InboxPage:
    """One page of responses and the keyset cursor to the next (older) page."""

    responses: list[Response]
    next_before: int | None


def inbox(*, show: str = UNTRIAGED, before_id: int | None = None, limit: int = 50) -> InboxPage:
    """Responses newest first, filtered by outcome ("untriaged", an outcome, or "all")."""
    query = (
        sa.select(Response)
        .options(joinedload(Response.invitation).joinedload(Invitation.customer))
        .order_by(Response.id.desc())
        .limit(limit + 1)
    )
    if show == UNTRIAGED:
        query = query.where(Response.outcome.is_(None))
    elif show in {outcome.value for outcome in Outcome}:
        query = query.where(Response.outcome == Outcome(show))
    if before_id:
        query = query.where(Response.id < before_id)
    rows = list(db.session.scalars(query))
    next_before = rows[limit - 1].id if len(rows) > limit else None
    return InboxPage(rows[:limit], next_before)


def get_response(response_id: int) -> Response:
    """One response with its invitation and customer, or NotFound."""
    response = db.session.get(
        Response,
        response_id,
        options=[joinedload(Response.invitation).joinedload(Invitation.customer)],
    )
    if response is None:
        raise NotFound(f"no response #{response_id}")
    return response


def set_outcome(response_id: int, outcome: Outcome, *, actor_id: int, now: datetime) -> Response:
    """Confirm a response's outcome. Never and unfeasible suppress the address: we leave them
    alone from now on."""
    response = get_response(response_id)
    response.outcome = outcome
    response.triaged_at = now
    response.triaged_by_id = actor_id
    if outcome in SUPPRESS_ON:
        suppressions.suppress(response.invitation.customer.email, SUPPRESS_ON[outcome], now)
    audit.record("response.triage", "response", response_id, actor_id=actor_id, detail=outcome.value, now=now)
    db.session.commit()
    return response
