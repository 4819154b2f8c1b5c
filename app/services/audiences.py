"""Campaign audiences: which lapsed customers a campaign reaches, counted and sampled before it is
created, and turned into invitations in one INSERT … SELECT."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from app.exceptions import InvalidInput
from app.extensions import db
from app.models import Customer, Invitation, InvitationStatus, Suppression
from app.services import customers
from app.services.csvfiles import parse_amount
from app.services.scoring import Segment

SAMPLE_SIZE = 10
MAX_DAYS = 36_500


@dataclass(frozen=True)
class AudienceRule:
    """Who a campaign reaches: lapsed at least `lapsed_days`, in any of `segments` (all when
    empty), who spent at least `min_spent` (minor units), not contacted (or waiting to be) in the
    last `cooldown_days`, at most `limit` of them by win-back priority. Suppressed and erased
    customers are never in an audience."""

    lapsed_days: int
    segments: tuple[Segment, ...] = ()
    min_spent: int | None = None
    cooldown_days: int = 0
    limit: int | None = None

    def describe(self) -> str:
        """The rule in words, for the campaign page and the audit log."""
        parts = [f"not bought for {self.lapsed_days} days"]
        if self.segments:
            parts.append("in " + ", ".join(segment.value for segment in self.segments))
        if self.min_spent is not None:
            parts.append(f"spent at least {self.min_spent / 100:,.2f}")
        if self.cooldown_days:
            parts.append(f"not contacted in the last {self.cooldown_days} days")
        if self.limit:
            parts.append(f"at most {self.limit:,}, best win-back priority first")
        return "; ".join(parts)


def parse_segments(names: list[str] | tuple[str, ...] | None) -> tuple[Segment, ...]:
    """Segment names as staff type them (any case, surrounding spaces), each once, in map order."""
    by_name = {segment.value.casefold(): segment for segment in Segment}
    chosen = set()
    for name in names or ():
        segment = by_name.get(name.strip().casefold())
        if segment is None:
            valid = ", ".join(segment.value for segment in Segment)
            raise InvalidInput(f"segment: no segment called {name.strip()!r} (choose from {valid})")
        chosen.add(segment)
    return tuple(segment for segment in Segment if segment in chosen)


def parse_min_spent(text: str | None) -> int | None:
    """An amount such as `250`, `£1,200.50` or `1.200,50`, in minor units; blank means none."""
    if text is None or not str(text).strip():
        return None
    try:
        amount = parse_amount(str(text).strip())
    except ValueError as exc:
        raise InvalidInput(f"minimum spent: {text!r} is {exc}") from exc
    if amount < 0:
        raise InvalidInput("minimum spent: must not be negative")
    return amount


def make_rule(
    *,
    lapsed_days: int | None = None,
    segments: list[str] | tuple[str, ...] | None = None,
    min_spent: int | str | None = None,
    cooldown_days: int | None = None,
    limit: int | None = None,
) -> AudienceRule:
    """A checked audience rule; unset values take their settings (LAPSE_AFTER_DAYS,
    CONTACT_COOLDOWN_DAYS). A cooldown of 0 contacts customers whatever their last email."""
    config = current_app.config
    lapsed_days = config["LAPSE_AFTER_DAYS"] if lapsed_days is None else lapsed_days
    cooldown_days = config["CONTACT_COOLDOWN_DAYS"] if cooldown_days is None else cooldown_days
    if lapsed_days < 1:
        raise InvalidInput("lapsed days: must be at least 1")
    if cooldown_days < 0:
        raise InvalidInput("cooldown days: must be at least 0")
    if max(lapsed_days, cooldown_days) > MAX_DAYS:
        raise InvalidInput(f"lapsed days and cooldown days: at most {MAX_DAYS}")
    if limit is not None and limit < 1:
        raise InvalidInput("limit: must be at least 1")
    if isinstance(min_spent, str) or min_spent is None:
        min_spent = parse_min_spent(min_spent)
    elif min_spent < 0:
        raise InvalidInput("minimum spent: must not be negative")
    return AudienceRule(
        lapsed_days=lapsed_days,
        segments=parse_segments(segments),
        min_spent=min_spent,
        cooldown_days=cooldown_days,
        limit=limit,
    )


def audience_filter(rule: AudienceRule, now: datetime) -> sa.ColumnElement[bool]:
    """SQL condition for a customer in the rule's audience (before its limit)."""
    conditions = [
        customers.lapsed_filter(now, rule.lapsed_days),
        ~sa.exists().where(Suppression.email_hash == Customer.email_hash),
    ]
    if rule.segments:
        conditions.append(Customer.segment.in_([segment.value for segment in rule.segments]))
    if rule.min_spent is not None:
        conditions.append(Customer.total_spent >= rule.min_spent)
    if rule.cooldown_days:
        since = now - timedelta(days=rule.cooldown_days)
        # Emailed lately, or waiting to be emailed by another campaign: either way, not again yet.
        conditions.append(
            ~sa.exists().where(
                Invitation.customer_id == Customer.id,
                sa.or_(
                    Invitation.last_sent_at >= since,
                    Invitation.status.in_([InvitationStatus.QUEUED, InvitationStatus.SENDING]),
                ),
            )
        )
    return sa.and_(*conditions)


# Best expected return first, so a limit keeps the customers most worth winning back.
PRIORITY_ORDER = (Customer.win_back_priority.desc().nulls_last(), Customer.total_spent.desc(), Customer.id)


def audience_select(rule: AudienceRule, now: datetime, *columns) -> sa.Select:
    """SELECT `columns` for every customer of the audience, best win-back priority first."""
    query = sa.select(*columns).where(audience_filter(rule, now)).order_by(*PRIORITY_ORDER)
    return query.limit(rule.limit) if rule.limit else query


@dataclass
class AudiencePreview:
    """How many customers a rule reaches now, and the first few of them."""

    rule: AudienceRule
    count: int
    sample: list[Customer] = field(default_factory=list)


def preview(rule: AudienceRule, now: datetime, *, sample_size: int = SAMPLE_SIZE) -> AudiencePreview:
    """Count the audience and take the first `sample_size` customers, as the campaign would."""
    matching = db.session.scalar(sa.select(sa.func.count()).where(audience_filter(rule, now)))
    count = min(matching, rule.limit) if rule.limit else matching
    sample_rule = AudienceRule(**{**rule.__dict__, "limit": min(sample_size, rule.limit or sample_size)})
    sample = list(db.session.scalars(audience_select(sample_rule, now, Customer)))
    return AudiencePreview(rule=rule, count=count, sample=sample)
