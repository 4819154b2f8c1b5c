"""Several senders on one campaign: every invitation is sent exactly once (RELIABILITY 30)."""

from __future__ import annotations

import threading
from collections import Counter

import sqlalchemy as sa

from app.extensions import db
from app.models import Customer, Invitation, InvitationStatus, utcnow
from app.services import campaigns, suppressions

INVITATIONS = 1000


def make_audience(count: int) -> int:
    """`count` lapsed customers, inserted in one statement, and a campaign for them all."""
    now = utcnow()
    rows = []
    for number in range(count):
        email = f"c{number:04d}@example.com"
        rows.append(
            {
                "email": email,
                "email_hash": suppressions.email_hash(email),
                "first_name": "C",
                "last_name": str(number),
                "phone": "",
                "preferred_contact": "email",
                "orders_count": 1,
                "total_spent": 1000,
                "currency": "GBP",
                "status": "active",
                "last_purchase_at": now.replace(year=now.year - 2),
                "created_at": now,
                "updated_at": now,
                "soft_bounce_count": 0,
            }
        )
    db.session.execute(sa.insert(Customer.__table__), rows)
    db.session.commit()
    campaign, queued = campaigns.create_campaign(name="Race", lapsed_days=180, now=now)
    assert queued == count
    return campaign.id


def test_two_senders_on_one_campaign_send_each_invitation_exactly_once(app, smtp):
    campaign_id = make_audience(INVITATIONS)
    db.session.commit()
    errors: list[BaseException] = []
    sent_by: list[int] = []
    barrier = threading.Barrier(2)

    def sender() -> None:
        with app.app_context():
            try:
                barrier.wait()
                sent_by.append(campaigns.send_campaign(campaign_id).sent)
            except BaseException as exc:  # reported below, with the test's own assertion
                errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert errors == []
    assert len(sent_by) == 2
    assert min(sent_by) > 0  # both senders really took part
    assert sum(sent_by) == INVITATIONS
    arrived = Counter(str(message["To"].addresses[0].addr_spec) for message in smtp.messages)
    assert len(arrived) == INVITATIONS
    assert set(arrived.values()) == {1}
    db.session.rollback()
    statuses = db.session.execute(
        sa.select(Invitation.status, sa.func.count())
        .where(Invitation.campaign_id == campaign_id)
        .group_by(Invitation.status)
    ).all()
    assert statuses == [(InvitationStatus.SENT, INVITATIONS)]
