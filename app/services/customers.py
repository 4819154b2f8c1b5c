"""Customers: email normalisation, lapsed-customer queries, listing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from flask import current_app

from app.exceptions import InvalidInput, NotFound
from app.extensions import db
from app.models import Customer, CustomerStatus


def normalise_email(raw: str) -> str:
    """A validated address in one canonical form: `A@X.com ` and `a@x.com` are one customer.

    Raises InvalidInput with a message fit to show."""
    candidate = (raw or "").strip()
    if not candidate:
        raise InvalidInput("an email address is required")
    try:
        result = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput(f"not a valid email address: {exc}") from exc
    return result.normalized.lower()


def lapse_cutoff(now: datetime, lapsed_days: int | None = None) -> datetime:
    """Customers whose last purchase is before this time are lapsed."""
    days = lapsed_days if lapsed_days is not None else current_app.config["LAPSE_AFTER_DAYS"]
    return now - timedelta(days=days)


def lapsed_filter(now: datetime, lapsed_days: int | None = None) -> sa.ColumnElement[bool]:
    """SQL condition for a contactable lapsed customer."""
    return sa.and_(
        Customer.status == CustomerStatus.ACTIVE,
        Customer.last_purchase_at < lapse_cutoff(now, lapsed_days),
    )


def count_lapsed(now: datetime, lapsed_days: int | None = None) -> int:
    """How many customers a campaign with this lapse rule would reach."""
    return db.session.scalar(sa.select(sa.func.count()).where(lapsed_filter(now, lapsed_days)))


@dataclass
class CustomerPage:
    """One page of customers and the keyset cursor to the next."""

    customers: list[Customer]
    next_after: int | None


def list_customers(
    *,
    search: str = "",
    lapsed_only: bool = False,
    now: datetime,
    after_id: int | None = None,
    limit: int = 50,
) -> CustomerPage:
    """Customers by id, filtered, keyset-paginated."""
    query = sa.select(Customer).order_by(Customer.id).limit(limit + 1)
    if search:
        pattern = f"%{search.strip().lower()}%"
        query = query.where(
            sa.or_(
                Customer.email.like(pattern),
                sa.func.lower(Customer.first_name + " " + Customer.last_name).like(pattern),
            )
        )
    if lapsed_only:
        query = query.where(lapsed_filter(now))
    if after_id:
        query = query.where(Customer.id > after_id)
    rows = list(db.session.scalars(query))
    next_after = rows[limit - 1].id if len(rows) > limit else None
    return CustomerPage(rows[:limit], next_after)


def get_customer(customer_id: int) -> Customer:
    """One customer, or NotFound."""
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        raise NotFound(f"no customer #{customer_id}")
    return customer
