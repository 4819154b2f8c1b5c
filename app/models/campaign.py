"""Campaigns and the invitations they send."""

from __future__ import annotations

import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, UTCDateTime, str_enum, utcnow
from app.models.customer import Customer
from app.models.enums import CampaignStatus, InvitationStatus


def new_reference() -> str:
    """An opaque public reference for an invitation: reveals nothing about the customer."""
    return secrets.token_urlsafe(12)


def new_nonce() -> str:
    return secrets.token_urlsafe(12)


class Campaign(Base):
    """One outreach to an audience of lapsed customers."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    lapsed_days: Mapped[int] = mapped_column()
    subject: Mapped[str] = mapped_column(sa.String(200))
    status: Mapped[CampaignStatus] = mapped_column(str_enum(CampaignStatus), default=CampaignStatus.DRAFT)
    # Why sending stopped by itself (or who paused it), shown on the campaign page.
    pause_reason: Mapped[str] = mapped_column(sa.String(500), default="", server_default="")
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("staff_users.id", ondelete="SET NULL"))

    invitations: Mapped[list[Invitation]] = relationship(back_populates="campaign", lazy="raise_on_sql")


class Invitation(Base):
    """One customer in one campaign: the link's reference and nonce, and what was sent."""

    __tablename__ = "invitations"
    __table_args__ = (
        sa.UniqueConstraint("campaign_id", "customer_id"),
        sa.Index("ix_invitations_campaign_status", "campaign_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(sa.ForeignKey("campaigns.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    reference: Mapped[str] = mapped_column(sa.String(32), unique=True, default=new_reference)
    nonce: Mapped[str] = mapped_column(sa.String(32), default=new_nonce)
    status: Mapped[InvitationStatus] = mapped_column(
        str_enum(InvitationStatus), default=InvitationStatus.QUEUED
    )
    attempts: Mapped[int] = mapped_column(default=0)
    last_smtp_reply: Mapped[str] = mapped_column(sa.String(500), default="")
    message_id: Mapped[str | None] = mapped_column(sa.String(255))
    revoked: Mapped[bool] = mapped_column(default=False)
    # While sending: the claim lasts until then; after it, another sender may take it over.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    campaign: Mapped[Campaign] = relationship(back_populates="invitations")
    customer: Mapped[Customer] = relationship()
