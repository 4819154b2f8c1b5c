"""Privacy requests: erase a customer's personal data, or export it as one JSON document.

Erasure keeps what aggregate figures need (orders, anonymous answers) and the keyed hash of the
address on the suppression list, so the address is never emailed again, even if a later import
brings it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from app.extensions import cache, db
from app.models import (
    Campaign,
    Customer,
    CustomerStatus,
    Invitation,
    InvitationStatus,
    Order,
    Response,
)
from app.services import audit, suppressions
from app.services.customers import get_customer
from app.services.improvements import PUBLIC_PAGE_CACHE_KEY


def erased_placeholder(customer_id: int) -> str:
    """What an erased customer's email column holds: unique per row, and never an address
    (no @), so nothing can validate it, match it or send to it."""
    return f"erased:{customer_id}"


@dataclass(frozen=True)
class Erasure:
    """What erasing a customer did; `already_erased` when there was nothing left to do."""

    customer_id: int
    already_erased: bool = False
    responses: int = 0
    invitations: int = 0

    def message(self) -> str:
        """A sentence for the person who asked."""
        if self.already_erased:
            return f"Customer #{self.customer_id} was already erased: nothing changed."
        return (
            f"Customer #{self.customer_id} erased: personal data removed, {self.responses} answers "
            f"kept as anonymous text, {self.invitations} survey links revoked. "
            "The address stays on the suppression list."
        )


def erase_customer(customer_id: int, *, actor_id: int | None, now: datetime) -> Erasure:
    """Erase one customer's personal data, in one transaction, and record it.

    The address goes on the suppression list as erased first. Then: email replaced by a
    placeholder, name, phone, external id and locale cleared; answers kept as anonymous text
    without phone numbers or permission to quote; survey links revoked and unsent invitations
    withdrawn. Orders and purchase figures stay (they hold no personal data). Erasing again
    changes nothing. Raises NotFound for an unknown id."""
    customer = get_customer(customer_id)
    if customer.status == CustomerStatus.ERASED:
        return Erasure(customer_id, already_erased=True)
    address = customer.email
    previous = suppressions.suppress_erased(address, now)

    customer.email = erased_placeholder(customer.id)
    # The hash stays (under the current key) so that an import of the same address arrives
    # suppressed and campaign audiences, which match on it, leave that customer out.
    customer.email_hash = suppressions.email_hash(address)
    customer.first_name = ""
    customer.last_name = ""
    customer.phone = ""
    customer.external_id = None
    customer.locale = None
    customer.status = CustomerStatus.ERASED
    customer.erased_at = now
    customer.updated_at = now

    invitation_ids = sa.select(Invitation.id).where(Invitation.customer_id == customer.id)
    responses = db.session.execute(
        sa.update(Response)
        .where(Response.invitation_id.in_(invitation_ids))
        .values(phone="", may_quote=False)
    ).rowcount
    invitations = db.session.execute(
        sa.update(Invitation).where(Invitation.customer_id == customer.id).values(revoked=True)
    ).rowcount
    # Sending checks suppression by the customer's address, which is now a placeholder: take
    # unsent invitations out of the queue so that no sender ever picks them up.
    db.session.execute(
        sa.update(Invitation)
        .where(
            Invitation.customer_id == customer.id,
            Invitation.status.in_([InvitationStatus.QUEUED, InvitationStatus.SENDING]),
        )
        .values(status=InvitationStatus.SUPPRESSED, lease_expires_at=None)
    )
    kept = f"suppression kept (was {previous.value})" if previous else "suppression added"
    audit.record(
        "customer.erase",
        "customer",
        customer.id,
        actor_id=actor_id,
        detail=f"{responses} answers anonymised, {invitations} invitations revoked, {kept}",
        now=now,
    )
    db.session.commit()
    # A quote of theirs may be on the public page: it must go now, not when the cache expires.
    cache.delete(PUBLIC_PAGE_CACHE_KEY)
    return Erasure(customer.id, responses=responses, invitations=invitations)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _value(member) -> str | None:
    return member.value if member is not None else None


def export_customer(customer_id: int) -> dict:
    """Everything held about one customer, for an access request, as JSON-ready data: profile,
    orders, invitations, answers and suppression state. Link references, nonces and mail
    server identifiers are left out: they are keys to the links, not data about the person.

    Raises NotFound for an unknown id."""
    customer = get_customer(customer_id)
    orders = db.session.scalars(
        sa.select(Order).where(Order.customer_id == customer.id).order_by(Order.placed_at, Order.id)
    )
    invitations = db.session.execute(
        sa.select(Invitation, Campaign.subject)
        .join(Campaign, Campaign.id == Invitation.campaign_id)
        .where(Invitation.customer_id == customer.id)
        .order_by(Invitation.id)
    )
    responses = db.session.execute(
        sa.select(Response, Invitation.campaign_id)
        .join(Invitation, Invitation.id == Response.invitation_id)
        .where(Invitation.customer_id == customer.id)
        .order_by(Response.id)
    )
    return {
        "customer": {
            "id": customer.id,
            "email": customer.email,
            "first_name": customer.first_name,
            "last_name": customer.last_name,
            "phone": customer.phone,
            "external_id": customer.external_id,
            "preferred_contact": _value(customer.preferred_contact),
            "locale": customer.locale,
            "accepts_marketing": customer.accepts_marketing,
            "status": customer.status.value,
            "first_purchase_at": _time(customer.first_purchase_at),
            "last_purchase_at": _time(customer.last_purchase_at),
            "orders_count": customer.orders_count,
            "total_spent": customer.total_spent,
            "currency": customer.currency,
            "recency_score": customer.recency_score,
            "frequency_score": customer.frequency_score,
            "monetary_score": customer.monetary_score,
            "segment": customer.segment,
            "created_at": _time(customer.created_at),
            "updated_at": _time(customer.updated_at),
            "erased_at": _time(customer.erased_at),
        },
        "orders": [
            {
                "order_id": order.external_id,
                "source": order.source,
                "placed_at": _time(order.placed_at),
                "amount": order.amount,
                "currency": order.currency,
            }
            for order in orders
        ],
        "invitations": [
            {
                "campaign_id": invitation.campaign_id,
                "subject": subject,
                "status": invitation.status.value,
                "created_at": _time(invitation.created_at),
                "sent_at": _time(invitation.sent_at),
                "opened_at": _time(invitation.opened_at),
                "answered_at": _time(invitation.answered_at),
                "revoked": invitation.revoked,
            }
            for invitation, subject in invitations
        ],
        "responses": [
            {
                "campaign_id": campaign_id,
                "submitted_at": _time(response.submitted_at),
                "stop_reason": response.stop_reason.value,
                "better_elsewhere": response.better_elsewhere,
                "win_back_text": response.win_back_text,
                "would_return": response.would_return.value,
                "follow_up_text": response.follow_up_text,
                "contact_via": response.contact_via.value,
                "phone": response.phone,
                "may_quote": response.may_quote,
                "outcome": _value(response.outcome),
            }
            for response, campaign_id in responses
        ],
        "suppression": _suppression_state(customer),
    }


def _suppression_state(customer: Customer) -> dict:
    """Whether the customer's address is suppressed, why and since when (never the hash)."""
    row = suppressions.suppression_for_customer(customer)
    if row is None:
        return {"suppressed": False, "reason": None, "since": None}
    return {"suppressed": True, "reason": row.reason.value, "since": _time(row.created_at)}
