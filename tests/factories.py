"""Test data, made through the models or the services a real business uses."""

from __future__ import annotations

from datetime import timedelta

from app.extensions import db
from app.models import Customer, utcnow
from app.services import suppressions
from app.services.customers import normalise_email

_counter = iter(range(1, 10**9))


def make_customer(
    email: str | None = None,
    *,
    days_since_purchase: int | None = 400,
    first_name: str = "Ada",
    last_name: str = "Lovelace",
    total_spent: int = 10_000,
    orders_count: int = 3,
    phone: str = "",
) -> Customer:
    """A customer, lapsed by default (last purchase 400 days ago)."""
    address = normalise_email(email or f"customer{next(_counter)}@example.com")
    now = utcnow()
    last = now - timedelta(days=days_since_purchase) if days_since_purchase is not None else None
    customer = Customer(
        email=address,
        email_hash=suppressions.email_hash(address),
        first_name=first_name,
        last_name=last_name,
        phone=phone,
        first_purchase_at=last - timedelta(days=300) if last else None,
        last_purchase_at=last,
        orders_count=orders_count,
        total_spent=total_spent,
    )
    db.session.add(customer)
    db.session.commit()
    return customer
