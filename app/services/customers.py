"""Customers: email normalisation, lapsed-customer queries, the filtered listing and one customer's page."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from flask import current_app
from sqlalchemy.orm import joinedload

from app.exceptions import InvalidInput, NotFound
from app.extensions import db
from app.models import Customer, CustomerStatus, Invitation, Order, Response, Suppression
from app.services import scoring, suppressions

# Lower-case addresses made of letters, digits and `._+-` at an ordinary domain (groups: the
# domain, its top-level label): a subset of what email_validator accepts, with the same answer
# once the domain has no `--` and is not special-use. The importers check the common address
# against it before calling normalise_email.
PLAIN_EMAIL_PATTERN = (
    r"[a-z0-9_+\-]+(?:\.[a-z0-9_+\-]+)*@((?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+([a-z]{2,63}))"
)


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


PAGE_SIZE = 50
DETAIL_LIMIT = 50
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CustomerSort(enum.StrEnum):
    """Orders the customers page offers, each highest first."""

    PRIORITY = "priority"
    LAST_PURCHASE = "last_purchase"
    TOTAL_SPENT = "total_spent"


SORT_COLUMNS = {
    CustomerSort.PRIORITY: Customer.win_back_priority,
    CustomerSort.LAST_PURCHASE: Customer.last_purchase_at,
    CustomerSort.TOTAL_SPENT: Customer.total_spent,
}
# Orders served by an index on (status, sort value): ix_customers_status_priority and
# ix_customers_status_last_purchase. Total spent has none; a page of it is a scan.
BY_STATUS_INDEX = {CustomerSort.PRIORITY, CustomerSort.LAST_PURCHASE}


@dataclass(frozen=True)
class CustomerFilters:
    """What the customers page and the export show: a search, filters and an order."""

    search: str = ""
    status: CustomerStatus | None = None
    segment: str | None = None
    lapsed_only: bool = False
    sort: CustomerSort | None = None

    @property
    def order(self) -> CustomerSort:
        """The chosen order; without one, lapsed customers come by priority, others by last purchase."""
        if self.sort is not None:
            return self.sort
        return CustomerSort.PRIORITY if self.lapsed_only else CustomerSort.LAST_PURCHASE


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the sort value (None once past the customers without one) and the id."""

    sort: CustomerSort
    value: int | datetime | None
    id: int

    def encode(self) -> str:
        """The cursor as a URL parameter, e.g. `priority:12345:678`."""
        if isinstance(self.value, datetime):
            value = str((self.value - _EPOCH) // timedelta(microseconds=1))
        else:
            value = "" if self.value is None else str(self.value)
        return f"{self.sort.value}:{value}:{self.id}"

    @classmethod
    def decode(cls, raw: str | None, sort: CustomerSort) -> Cursor | None:
        """The cursor from a URL parameter; None (the first page) if it is missing, malformed or
        was made for another order."""
        parts = (raw or "").split(":")
        if len(parts) != 3 or parts[0] != sort.value:
            return None
        try:
            number = int(parts[1]) if parts[1] else None
            customer_id = int(parts[2])
        except ValueError:
            return None
        value: int | datetime | None = number
        if number is not None and sort == CustomerSort.LAST_PURCHASE:
            try:
                value = _EPOCH + timedelta(microseconds=number)
            except OverflowError:
                return None
        return cls(sort, value, customer_id)

    @classmethod
    def after(cls, customer: Customer, sort: CustomerSort) -> Cursor:
        return cls(sort, getattr(customer, SORT_COLUMNS[sort].key), customer.id)


@dataclass
class CustomerPage:
    """One page of customers and the keyset cursor to the next (None on the last page)."""

    customers: list[Customer]
    next_cursor: str | None


def _filtered(query: sa.Select, filters: CustomerFilters, now: datetime) -> sa.Select:
    """The query narrowed by the search and filters; each filter has an index to use."""
    search = filters.search.strip().lower()
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        query = query.where(
            sa.or_(
                Customer.email.like(pattern, escape="\\"),
                sa.func.lower(Customer.first_name + " " + Customer.last_name).like(pattern, escape="\\"),
            )
        )
    if filters.status is not None:
        query = query.where(Customer.status == filters.status)
    if filters.segment:
        query = query.where(Customer.segment == filters.segment)
    if filters.lapsed_only:
        query = query.where(lapsed_filter(now))
    return query


def _in_order(query: sa.Select, sort: CustomerSort, cursor: Cursor | None) -> list[sa.Select]:
    """The queries that, run one after the other, list the rows after `cursor` in page order:
    highest sort value first, ties by id (highest first), then those without a value by id.

    Customers without a value come from a query of their own rather than NULLS LAST, so each
    part reads an index in order on both databases."""
    key = SORT_COLUMNS[sort]
    parts = []
    if cursor is None or cursor.value is not None:
        with_value = query.where(key.is_not(None))
        if cursor is not None:
            with_value = with_value.where(sa.tuple_(key, Customer.id) < sa.tuple_(cursor.value, cursor.id))
        parts.append(with_value.order_by(key.desc(), Customer.id.desc()))
    if key.nullable:
        without = query.where(key.is_(None))
        if cursor is not None and cursor.value is None:
            without = without.where(Customer.id < cursor.id)
        parts.append(without.order_by(Customer.id.desc()))
    return parts


def list_customers(
    filters: CustomerFilters,
    *,
    now: datetime,
    after: str | None = None,
    limit: int = PAGE_SIZE,
) -> CustomerPage:
    """One page of customers, filtered and sorted, keyset-paginated by (sort value, id)."""
    sort = filters.order
    cursor = Cursor.decode(after, sort)
    key = SORT_COLUMNS[sort].key
    query = _filtered(sa.select(Customer), filters, now)
    unnarrowed = not (filters.status or filters.lapsed_only or filters.segment or filters.search)
    if sort in BY_STATUS_INDEX and unnarrowed:
        # The indexes for these orders start with the status: one query per status reads its
        # index in order and stops at a page, where one query over all statuses would sort them
        # all. (A search scans anyway; walking the index for rare matches would be slower.)
        groups = [query.where(Customer.status == status) for status in CustomerStatus]
    else:
        groups = [query]
    rows: list[Customer] = []
    for phase in zip(*(_in_order(group, sort, cursor) for group in groups), strict=True):
        wanted = limit + 1 - len(rows)
        found = [customer for part in phase for customer in db.session.scalars(part.limit(wanted))]
        found.sort(key=lambda customer: (getattr(customer, key), customer.id), reverse=True)
        rows.extend(found[:wanted])
        if len(rows) > limit:
            break
    more = len(rows) > limit
    rows = rows[:limit]
    return CustomerPage(rows, Cursor.after(rows[-1], sort).encode() if more else None)


def stream_customers(
    filters: CustomerFilters, columns: list[sa.ColumnElement], *, now: datetime, batch: int = 1000
) -> Iterator[sa.Row]:
    """Every matching customer's `columns`, in page order, read in batches (constant memory)."""
    for query in _in_order(_filtered(sa.select(*columns), filters, now), filters.order, None):
        yield from db.session.execute(query.execution_options(yield_per=batch))


def get_customer(customer_id: int) -> Customer:
    """One customer, or NotFound."""
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        raise NotFound(f"no customer #{customer_id}")
    return customer


def is_lapsed(customer: Customer, now: datetime) -> bool:
    """True when the customer is active and has not bought since the lapse cutoff."""
    return (
        customer.status == CustomerStatus.ACTIVE
        and customer.last_purchase_at is not None
        and customer.last_purchase_at < lapse_cutoff(now)
    )


@dataclass
class CustomerDetail:
    """Everything the customer page shows about one customer."""

    customer: Customer
    orders: list[Order]
    invitations: list[Invitation]
    responses: list[Response]
    suppression: Suppression | None  # the suppression list entry: why and since when
    lapsed: bool
    explanation: scoring.PriorityExplanation | None
    segment_description: str


def customer_detail(customer_id: int, *, now: datetime) -> CustomerDetail:
    """One customer with their latest orders, invitations and answers, suppression state and
    the reasoning behind their win-back priority. NotFound if there is no such customer."""
    customer = get_customer(customer_id)
    orders = db.session.scalars(
        sa.select(Order)
        .where(Order.customer_id == customer_id)
        .order_by(Order.placed_at.desc(), Order.id.desc())
        .limit(DETAIL_LIMIT)
    )
    invitations = db.session.scalars(
        sa.select(Invitation)
        .options(joinedload(Invitation.campaign))
        .where(Invitation.customer_id == customer_id)
        .order_by(Invitation.created_at.desc(), Invitation.id.desc())
        .limit(DETAIL_LIMIT)
    )
    responses = db.session.scalars(
        sa.select(Response)
        .options(joinedload(Response.invitation).joinedload(Invitation.campaign))
        .join(Invitation, Response.invitation_id == Invitation.id)
        .where(Invitation.customer_id == customer_id)
        .order_by(Response.submitted_at.desc(), Response.id.desc())
        .limit(DETAIL_LIMIT)
    )
    suppression = suppressions.suppression_for_customer(customer)
    return CustomerDetail(
        customer=customer,
        orders=list(orders),
        invitations=list(invitations.unique()),
        responses=list(responses.unique()),
        suppression=suppression,
        lapsed=is_lapsed(customer, now),
        explanation=scoring.explain_priority(customer, now=now),
        segment_description=scoring.SEGMENT_DESCRIPTIONS.get(customer.segment or "", ""),
    )
