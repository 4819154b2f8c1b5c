"""Bounces reported by a mail provider: hard bounces and complaints suppress at once, soft bounces
are counted per customer and suppress once SOFT_BOUNCE_LIMIT is reached."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from flask import current_app

from app.exceptions import InvalidInput
from app.extensions import db
from app.models import Customer, Invitation, InvitationStatus, SuppressionReason
from app.services import audit, customers, suppressions
from app.services.csvfiles import clean_text

REASON_LIMIT = 500


class BounceKind(enum.StrEnum):
    """What the provider reports: a permanent failure, a temporary one, or a spam complaint."""

    HARD = "hard"
    SOFT = "soft"
    COMPLAINT = "complaint"


@dataclass(frozen=True)
class BounceResult:
    """What a bounce did. `soft_bounces` is the customer's count after a soft bounce, else None."""

    address_suppressed: bool
    already_suppressed: bool
    soft_bounces: int | None = None


def record_bounce(address: str, kind: BounceKind, reason: str = "", *, now: datetime) -> BounceResult:
    """Apply one bounce and commit. Raises InvalidInput (naming the field) for a bad address or a
    reason that is too long.

    hard: suppress (hard bounce) and mark the customer's latest sent invitation bounced.
    complaint: suppress (complaint). soft: add one to the customer's count, suppressing once it
    reaches SOFT_BOUNCE_LIMIT; a soft bounce for an address with no customer is ignored. An
    address with no customer is still suppressed by hard bounces and complaints, so a later
    import of it arrives suppressed."""
    try:
        normalised = customers.normalise_email(address)
    except InvalidInput as exc:
        raise InvalidInput(f"address: {exc}") from exc
    try:
        reason = clean_text(reason or "", REASON_LIMIT)
    except ValueError as exc:
        raise InvalidInput(f"reason: {exc}") from exc

    already = suppressions.is_suppressed(normalised)
    customer_id = db.session.scalar(sa.select(Customer.id).where(Customer.email == normalised))
    if kind == BounceKind.SOFT:
        result, detail = _soft_bounce(normalised, customer_id, already, now)
    else:
        suppression_reason = (
            SuppressionReason.HARD_BOUNCE if kind == BounceKind.HARD else SuppressionReason.COMPLAINT
        )
        suppressions.suppress(normalised, suppression_reason, now, note=reason)
        if kind == BounceKind.HARD and customer_id is not None:
            _mark_latest_invitation_bounced(customer_id)
        result = BounceResult(address_suppressed=True, already_suppressed=already)
        detail = "already suppressed" if already else "suppressed"
        if customer_id is None:
            detail += "; no customer with this address"

    audit.record(f"bounce.{kind.value}", "customer", customer_id, detail=f"api: {detail}", now=now)
    db.session.commit()
    return result


def _soft_bounce(
    normalised: str, customer_id: int | None, already: bool, now: datetime
) -> tuple[BounceResult, str]:
    """Count one soft bounce in a single UPDATE (safe against concurrent reports); suppress at
    the limit."""
    if customer_id is None:
        return BounceResult(address_suppressed=already, already_suppressed=already), "ignored: no customer"
    count = db.session.execute(
        sa.update(Customer)
        .where(Customer.id == customer_id)
        .values(soft_bounce_count=Customer.soft_bounce_count + 1, updated_at=now)
        .returning(Customer.soft_bounce_count)
    ).scalar_one()
    limit = current_app.config["SOFT_BOUNCE_LIMIT"]
    suppressed = already
    if count >= limit and not already:
        suppressed = suppressions.suppress(
            normalised, SuppressionReason.HARD_BOUNCE, now, note=f"{count} soft bounces"
        )
    detail = f"{count} soft bounces" + ("; suppressed" if suppressed and not already else "")
    return BounceResult(address_suppressed=suppressed, already_suppressed=already, soft_bounces=count), detail


def _mark_latest_invitation_bounced(customer_id: int) -> None:
    """The customer's most recently sent invitation becomes bounced. Only the latest one sent is
    considered, so the same bounce reported twice never reaches an older invitation."""
    latest = (
        sa.select(Invitation.id, Invitation.status)
        .where(
            Invitation.customer_id == customer_id,
            Invitation.status.in_([InvitationStatus.SENT, InvitationStatus.BOUNCED]),
            Invitation.sent_at.is_not(None),
        )
        .order_by(Invitation.sent_at.desc(), Invitation.id.desc())
        .limit(1)
    )
    row = db.session.execute(latest).first()
    if row is not None and row.status == InvitationStatus.SENT:
        db.session.execute(
            sa.update(Invitation).where(Invitation.id == row.id).values(status=InvitationStatus.BOUNCED)
        )
