"""Customers and their orders."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, UTCDateTime, str_enum, utcnow
from app.models.enums import ContactPreference, CustomerStatus


class Customer(Base):
    """Someone who bought; purchase figures are derived from orders or imported as they are."""

    __tablename__ = "customers"
    __table_args__ = (
        sa.Index("ix_customers_status_last_purchase", "status", "last_purchase_at"),
        sa.Index("ix_customers_status_priority", "status", "win_back_priority", "id"),
        sa.Index("ix_customers_segment_priority", "segment", "win_back_priority", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    email_hash: Mapped[str] = mapped_column(sa.String(64), index=True)
    first_name: Mapped[str] = mapped_column(sa.String(100), default="")
    last_name: Mapped[str] = mapped_column(sa.String(100), default="")
    phone: Mapped[str] = mapped_column(sa.String(40), default="")
    external_id: Mapped[str | None] = mapped_column(sa.String(100))
    preferred_contact: Mapped[ContactPreference] = mapped_column(
        str_enum(ContactPreference), default=ContactPreference.EMAIL
    )
    locale: Mapped[str | None] = mapped_column(sa.String(10))
    accepts_marketing: Mapped[bool | None] = mapped_column()
    first_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    orders_count: Mapped[int] = mapped_column(default=0)
    total_spent: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # minor units
    currency: Mapped[str] = mapped_column(sa.String(3), default="GBP")
    status: Mapped[CustomerStatus] = mapped_column(str_enum(CustomerStatus), default=CustomerStatus.ACTIVE)
    # RFM: each 1-5 by quintile over the customer base, recomputed after every import.
    recency_score: Mapped[int | None] = mapped_column(sa.SmallInteger)
    frequency_score: Mapped[int | None] = mapped_column(sa.SmallInteger)
    monetary_score: Mapped[int | None] = mapped_column(sa.SmallInteger)
    segment: Mapped[str | None] = mapped_column(sa.String(40))
    # Expected return of winning this customer back, in minor units (see docs/scoring.md).
    win_back_priority: Mapped[int | None] = mapped_column(sa.BigInteger)
    scored_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Soft bounces reported since the last delivery; past SOFT_BOUNCE_LIMIT the address is suppressed.
    soft_bounce_count: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    orders: Mapped[list[Order]] = relationship(back_populates="customer", lazy="raise_on_sql")

    @property
    def name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)


class Order(Base):
    """One purchase, unique by (source, external id)."""

    __tablename__ = "orders"
    __table_args__ = (
        sa.UniqueConstraint("source", "external_id"),
        sa.Index("ix_orders_customer_placed", "customer_id", "placed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(40), default="csv")
    external_id: Mapped[str] = mapped_column(sa.String(100))
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    amount: Mapped[int] = mapped_column(sa.BigInteger)  # minor units
    currency: Mapped[str] = mapped_column(sa.String(3), default="GBP")

    customer: Mapped[Customer] = relationship(back_populates="orders")
