"""Campaign audiences: segments, minimum spent, contact cooldown and limit, counted before and
queued by the same rule."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.exceptions import InvalidInput
from app.extensions import db
from app.models import Campaign, Invitation, InvitationStatus, SuppressionReason, utcnow
from app.services import audiences, campaigns, suppressions
from app.services.scoring import Segment
from tests.factories import make_customer


def audience_of(campaign_id: int) -> set[str]:
    db.session.rollback()
    rows = db.session.scalars(sa.select(Invitation).where(Invitation.campaign_id == campaign_id))
    return {row.customer.email for row in rows}


def customer_in(segment: Segment | None, email: str, **options):
    customer = make_customer(email, **options)
    customer.segment = segment.value if segment else None
    db.session.commit()
    return customer


def test_segments_pick_only_their_customers(app):
    customer_in(Segment.AT_RISK, "risk@example.com")
    customer_in(Segment.CANT_LOSE_THEM, "cant@example.com")
    customer_in(Segment.LOST, "lost@example.com")
    customer_in(None, "unscored@example.com")

    campaign, queued = campaigns.create_campaign(
        name="Best lapsed", segments=["at risk", " Can't lose them "], now=utcnow()
    )
    assert queued == 2
    assert audience_of(campaign.id) == {"risk@example.com", "cant@example.com"}
    db.session.refresh(campaign)
    assert campaign.segments == ["Can't lose them", "At risk"]


def test_an_unknown_segment_is_refused_with_the_names_to_choose_from(app):
    make_customer()
    with pytest.raises(InvalidInput, match=r"segment: no segment called 'Sleepy'.*Hibernating"):
        campaigns.create_campaign(name="Typo", segments=["Sleepy"], now=utcnow())
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Campaign)) == 0


@pytest.mark.parametrize("amount", ["100", "£100.00", "100,00", 10_000])
def test_minimum_spent_takes_amounts_as_staff_type_them(app, amount):
    make_customer("exactly@example.com", total_spent=10_000)
    make_customer("less@example.com", total_spent=9_999)
    make_customer("more@example.com", total_spent=250_000)
    campaign, queued = campaigns.create_campaign(name="Spenders", min_spent=amount, now=utcnow())
    assert audience_of(campaign.id) == {"exactly@example.com", "more@example.com"}
    assert queued == 2


@pytest.mark.parametrize(
    ("amount", "message"), [("lots", "minimum spent: 'lots' is not an amount"), (-5, "negative")]
)
def test_a_bad_minimum_spent_is_refused(app, amount, message):
    with pytest.raises(InvalidInput, match=message):
        campaigns.create_campaign(name="Bad", min_spent=amount, now=utcnow())


def test_customers_contacted_within_the_cooldown_are_left_out(app):
    now = utcnow()
    make_customer("emailed-lately@example.com")
    make_customer("emailed-long-ago@example.com")
    make_customer("waiting-in-another@example.com")
    make_customer("never-emailed@example.com")
    first, _ = campaigns.create_campaign(name="First", now=now - timedelta(days=200), cooldown_days=0)
    db.session.execute(
        sa.update(Invitation)
        .where(Invitation.campaign_id == first.id)
        .values(
            status=InvitationStatus.SENT,
            sent_at=now - timedelta(days=120),
            last_sent_at=now - timedelta(days=120),
        )
    )
    lately = db.session.scalar(
        sa.select(Invitation)
        .join(Invitation.customer)
        .where(sa.text("customers.email = 'emailed-lately@example.com'"))
    )
    lately.last_sent_at = now - timedelta(days=30)  # a reminder went out a month ago
    waiting = db.session.scalar(
        sa.select(Invitation)
        .join(Invitation.customer)
        .where(sa.text("customers.email = 'waiting-in-another@example.com'"))
    )
    waiting.status = InvitationStatus.QUEUED
    waiting.sent_at = waiting.last_sent_at = None
    db.session.commit()

    preview = audiences.preview(audiences.make_rule(), now)
    campaign, queued = campaigns.create_campaign(name="Second", now=now)
    assert audience_of(campaign.id) == {"emailed-long-ago@example.com", "never-emailed@example.com"}
    assert queued == preview.count == 2
    assert campaign.cooldown_days == 90

    _, queued = campaigns.create_campaign(name="No cooldown", cooldown_days=0, now=now)
    assert queued == 4


def test_the_cooldown_defaults_to_its_setting(app):
    app.config["CONTACT_COOLDOWN_DAYS"] = 7
    assert audiences.make_rule().cooldown_days == 7
    assert audiences.make_rule(cooldown_days=0).cooldown_days == 0
    with pytest.raises(InvalidInput, match="cooldown days: must be at least 0"):
        audiences.make_rule(cooldown_days=-1)


def test_the_preview_counts_and_samples_exactly_what_the_campaign_queues(app):
    for spent in range(1, 31):
        make_customer(f"c{spent:02}@example.com", total_spent=spent * 1_000)
    make_customer("recent@example.com", days_since_purchase=10, total_spent=10**9)
    suppressions.suppress("c30@example.com", SuppressionReason.UNSUBSCRIBED, utcnow())
    db.session.commit()
    rule = audiences.make_rule(min_spent=5_000, limit=12)

    preview = audiences.preview(rule, utcnow())
    assert preview.count == 12
    assert [customer.email for customer in preview.sample] == [
        f"c{n:02}@example.com" for n in range(29, 19, -1)
    ]

    campaign, queued = campaigns.create_campaign(name="Same", min_spent=5_000, limit=12, now=utcnow())
    assert queued == 12
    assert audience_of(campaign.id) == {f"c{n:02}@example.com" for n in range(29, 17, -1)}
    # The twelve now queued are in their cooldown; without one, all 25 qualify again.
    assert audiences.preview(audiences.make_rule(min_spent=5_000, limit=100), utcnow()).count == 13
    assert audiences.preview(audiences.make_rule(min_spent=5_000, cooldown_days=0), utcnow()).count == 25


def test_the_rule_is_kept_on_the_campaign_and_described_in_words(app):
    campaign, _ = campaigns.create_campaign(
        name="Kept",
        lapsed_days=365,
        segments=["Lost"],
        min_spent="£50",
        cooldown_days=30,
        limit=500,
        now=utcnow(),
    )
    rule = campaigns.audience_rule(campaign)
    assert rule == audiences.AudienceRule(
        lapsed_days=365, segments=(Segment.LOST,), min_spent=5_000, cooldown_days=30, limit=500
    )
    assert rule.describe() == (
        "not bought for 365 days; in Lost; spent at least 50.00; "
        "not contacted in the last 30 days; at most 500, best win-back priority first"
    )
