"""A customer's answers to the survey, and how staff sorted them."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, UTCDateTime, str_enum, utcnow
from app.models.campaign import Invitation
from app.models.enums import ContactPreference, Outcome, StopReason, WouldReturn


class Response(Base):
    """The answers for one invitation (at most one), its suggested and confirmed outcome."""

    __tablename__ = "responses"
    __table_args__ = (sa.Index("ix_responses_outcome_submitted", "outcome", "submitted_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    invitation_id: Mapped[int] = mapped_column(
        sa.ForeignKey("invitations.id", ondelete="CASCADE"), unique=True
    )
    stop_reason: Mapped[StopReason] = mapped_column(str_enum(StopReason))
    better_elsewhere: Mapped[str] = mapped_column(sa.String(200), default="")
    win_back_text: Mapped[str] = mapped_column(sa.Text, default="")
    would_return: Mapped[WouldReturn] = mapped_column(str_enum(WouldReturn))
    contact_via: Mapped[ContactPreference] = mapped_column(str_enum(ContactPreference))
    phone: Mapped[str] = mapped_column(sa.String(40), default="")
    may_quote: Mapped[bool] = mapped_column(default=False)
    # Asked after "No, never" only: what we did to cause this (optional, may come later).
    follow_up_text: Mapped[str] = mapped_column(sa.Text, default="", server_default="")
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    suggested_outcome: Mapped[Outcome] = mapped_column(str_enum(Outcome))
    suggested_reason: Mapped[str] = mapped_column(sa.String(300), default="")
    outcome: Mapped[Outcome | None] = mapped_column(str_enum(Outcome))  # None: untriaged
    triaged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    triaged_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("staff_users.id", ondelete="SET NULL"))

    invitation: Mapped[Invitation] = relationship()
