"""Figures for the staff home page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from app.extensions import db
from app.models import Campaign, Customer, Improvement, ImprovementStatus, Invitation, Response, Suppression
from app.services import customers


@dataclass(frozen=True)
class Dashboard:
    customers: int
    lapsed: int
    suppressed: int
    campaigns: int
    invitations_sent: int
    responses: int
    untriaged: int
    improvements_done: int


def dashboard(*, now: datetime) -> Dashboard:
    """The counts on the staff home page."""
    count = lambda query: db.session.scalar(query)  # noqa: E731
    return Dashboard(
        customers=count(sa.select(sa.func.count(Customer.id))),
        lapsed=customers.count_lapsed(now),
        suppressed=count(sa.select(sa.func.count(Suppression.id))),
        campaigns=count(sa.select(sa.func.count(Campaign.id))),
        invitations_sent=count(
            sa.select(sa.func.count(Invitation.id)).where(Invitation.sent_at.is_not(None))
        ),
        responses=count(sa.select(sa.func.count(Response.id))),
        untriaged=count(sa.select(sa.func.count(Response.id)).where(Response.outcome.is_(None))),
        improvements_done=count(
            sa.select(sa.func.count(Improvement.id)).where(Improvement.status == ImprovementStatus.DONE)
        ),
    )
