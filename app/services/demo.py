"""Demonstration data: a small shop's customers, a sent campaign, answers and improvements.

Everything goes through the same services a real business uses."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from app.extensions import db
from app.models import (
    ContactPreference,
    Customer,
    ImprovementStatus,
    Invitation,
    Outcome,
    StaffRole,
    StaffUser,
    StopReason,
    WouldReturn,
)
from app.services import campaigns, imports, improvements, staff, survey, triage
from app.services.improvements import ImprovementData
from app.services.survey import Answers

DEMO_EMAIL = "admin@example.com"
DEMO_PASSWORD = "winback-demo"

FIRST = [
    "Amelia",
    "Oliver",
    "Isla",
    "George",
    "Ava",
    "Noah",
    "Mia",
    "Leo",
    "Freya",
    "Arthur",
    "Lily",
    "Oscar",
    "Grace",
    "Harry",
    "Ella",
    "Jack",
    "Sophie",
    "Alfie",
    "Ruby",
    "Theo",
]
LAST = [
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Johnson",
    "Davies",
    "Patel",
    "Wright",
    "Evans",
    "Walker",
    "Roberts",
    "Green",
    "Hall",
    "Wood",
    "Clarke",
    "Hughes",
]

ANSWERS = [
    (StopReason.DELIVERY, "Faster delivery. Twice my order took over a week.", WouldReturn.YES),
    (StopReason.PRICE, "A loyalty discount for people who order every month.", WouldReturn.MAYBE),
    (StopReason.QUALITY, "The last two jackets lost their buttons. Better stitching.", WouldReturn.MAYBE),
    (StopReason.SERVICE, "Answer emails within a day, please.", WouldReturn.YES),
    (StopReason.BETTER_ELSEWHERE, "Free returns like the other shop offers.", WouldReturn.MAYBE),
    (StopReason.MOVED_OR_CLOSED, "Ship to Canada and I'd be back.", WouldReturn.YES),
    (StopReason.NO_LONGER_NEEDED, "", WouldReturn.MAYBE),
    (StopReason.SERVICE, "Nothing. I was treated rudely on the phone.", WouldReturn.NEVER),
    (StopReason.DELIVERY, "Evening delivery slots.", WouldReturn.YES),
    (StopReason.OTHER, "An app so I can reorder in one tap.", WouldReturn.MAYBE),
]

# (the answers it grew from, you said, we did, done and published)
IMPROVEMENTS = [
    (
        StopReason.DELIVERY,
        "Deliveries took too long.",
        "We moved to a next-day courier for all UK orders over **£20**.",
        True,
    ),
    (
        StopReason.SERVICE,
        "Emails went unanswered for days.",
        "A second person now answers email; our target is one working day.",
        True,
    ),
    (
        StopReason.BETTER_ELSEWHERE,
        "You wanted free returns.",
        "Returns are free within 30 days, with a prepaid label in every parcel.",
        True,
    ),
    (StopReason.PRICE, "Reward customers who order often.", "", False),
]


@dataclass(frozen=True)
class DemoResult:
    customers: int
    invitations: int
    responses: int
    improvements: int

    def line(self) -> str:
        return (
            f"Demo loaded: {self.customers} customers, {self.invitations} invitations, "
            f"{self.responses} responses, {self.improvements} improvements. "
            f"Staff login: {DEMO_EMAIL} / {DEMO_PASSWORD}"
        )


def load_demo(*, now: datetime, seed: int = 7) -> DemoResult | None:
    """Fill an empty database with a demo shop; None (and no change) if it has any data."""
    if db.session.scalar(sa.select(sa.func.count(Customer.id))) or db.session.scalar(
        sa.select(sa.func.count(StaffUser.id))
    ):
        return None
    rng = random.Random(seed)
    admin = staff.create_staff(DEMO_EMAIL, StaffRole.ADMIN, DEMO_PASSWORD, now=now)

    lines = ["email,first_name,last_name,first_purchase_at,last_purchase_at,orders_count,total_spent"]
    for number in range(240):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        last_days = rng.randint(5, 720)
        first_days = last_days + rng.randint(0, 900)
        orders = rng.randint(1, 25)
        spent = orders * rng.randint(1500, 12000)
        lines.append(
            f"{first.lower()}.{last.lower()}{number}@example.com,{first},{last},"
            f"{(now - timedelta(days=first_days)).date()},{(now - timedelta(days=last_days)).date()},"
            f"{orders},{spent / 100:.2f}"
        )
    imports.import_customers(io.BytesIO("\n".join(lines).encode()), "demo-customers.csv", now=now)

    campaign, queued = campaigns.create_campaign(
        name="Autumn win-back",
        lapsed_days=current_app.config["LAPSE_AFTER_DAYS"],
        now=now - timedelta(days=21),
        actor_id=admin.id,
    )
    if current_app.config["MAIL_BACKEND"] == "outbox":
        campaigns.send_campaign(campaign.id, clock=lambda: now - timedelta(days=20))

    invitation_ids = list(
        db.session.scalars(
            sa.select(Invitation.id).where(Invitation.campaign_id == campaign.id).order_by(Invitation.id)
        )
    )
    answered = invitation_ids[: min(30, len(invitation_ids))]
    response_ids = []
    for index, invitation_id in enumerate(answered):
        reason, text, would_return = ANSWERS[index % len(ANSWERS)]
        response = survey.submit_response(
            invitation_id,
            Answers(
                stop_reason=reason,
                better_elsewhere="Another local shop" if reason == StopReason.BETTER_ELSEWHERE else "",
                win_back_text=text,
                would_return=would_return,
                contact_via=ContactPreference.EMAIL,
                phone="",
                may_quote=index % 3 != 0,
            ),
            now=now - timedelta(days=19, hours=index),
        )
        response_ids.append(response.id)

    triaged = response_ids[:18]
    for index, response_id in enumerate(triaged):
        outcome = (
            Outcome.NEVER
            if ANSWERS[index % len(ANSWERS)][2] == WouldReturn.NEVER
            else (Outcome.UNFEASIBLE if index % len(ANSWERS) == 5 else Outcome.ACTIONABLE)
        )
        triage.set_outcome(response_id, outcome, actor_id=admin.id, now=now - timedelta(days=15))

    actionable = triage.inbox(show=Outcome.ACTIONABLE.value, limit=100).responses
    made = 0
    for index, (reason, you_said, we_did, done) in enumerate(IMPROVEMENTS):
        linked = [response.id for response in actionable if response.stop_reason == reason][:3]
        if not linked:
            continue
        improvements.create_improvement(
            ImprovementData(
                you_said=you_said,
                we_did=we_did,
                status=ImprovementStatus.DONE if done else ImprovementStatus.IN_PROGRESS,
                published=done,
            ),
            response_ids=linked,
            actor_id=admin.id,
            now=now - timedelta(days=10 - index),
        )
        made += 1
    return DemoResult(customers=240, invitations=queued, responses=len(response_ids), improvements=made)
