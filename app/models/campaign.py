"""Campaigns and the invitations they send."""

from __future__ import annotations

import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, UTCDateTime, str_enum, utcnow
from app.models.customer import Customer
from app.models.enums import CampaignStatus, InvitationStatus, OfferKind


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
    # The audience rule, kept as it was when the invitations were queued.
    segments: Mapped[list[str]] = mapped_column(sa.JSON, default=list, server_default="[]")
    min_spent: Mapped[int | None] = mapped_column(sa.BigInteger)  # minor units
    cooldown_days: Mapped[int | None] = mapped_column()
    audience_limit: Mapped[int | None] = mapped_column()
    # The email: subject and body are templates with placeholders; an empty body is the default.
    subject: Mapped[str] = mapped_column(sa.String(200))
    body: Mapped[str] = mapped_column(sa.Text, default="", server_default="")
    # Days after the first send on which reminders go to those who have not answered.
    reminder_days: Mapped[list[int]] = mapped_column(sa.JSON, default=list, server_default="[]")
    offer_kind: Mapped[OfferKind] = mapped_column(
        str_enum(OfferKind), default=OfferKind.NONE, server_default=OfferKind.NONE.value
    )
    offer_code: Mapped[str] = mapped_column(sa.String(100), default="", server_default="")  # shared code
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
        sa.Index("ix_invitations_next_reminder_at", "next_reminder_at"),
        sa.Index("ix_invitations_customer_last_sent", "customer_id", "last_sent_at"),
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
    # A temporary refusal (4xx) waits until then before the next attempt (exponential backoff).
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Reminders: how many went out, when the next one is due (None: no more), the latest email.
    reminders_sent: Mapped[int] = mapped_column(default=0, server_default="0")
    next_reminder_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The offer code handed to this customer (a unique code from the campaign's list).
    offer_code: Mapped[str | None] = mapped_column(sa.String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    campaign: Mapped[Campaign] = relationship(back_populates="invitations")
    customer: Mapped[Customer] = relationship()


class OfferCode(Base):
    """One unique offer code of a campaign, handed to at most one invitation."""

    __tablename__ = "offer_codes"
    __table_args__ = (sa.UniqueConstraint("campaign_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(sa.ForeignKey("campaigns.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(sa.String(100))
    invitation_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("invitations.id", ondelete="SET NULL"), unique=True
    )


class SendSlot(Base):
    """The next moment any sender may send, shared by every worker so that SEND_RATE_PER_MINUTE
    holds across processes and machines (one row, id 1)."""

    __tablename__ = "send_slots"

    id: Mapped[int] = mapped_column(primary_key=True)
    next_at: Mapped[datetime] = mapped_column(UTCDateTime)
