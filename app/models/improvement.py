"""Improvements: what customers said and what the business did about it."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, UTCDateTime, str_enum, utcnow
from app.models.enums import ImprovementStatus
from app.models.response import Response

improvement_responses = sa.Table(
    "improvement_responses",
    Base.metadata,
    sa.Column(
        "improvement_id",
        sa.ForeignKey("improvements.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "response_id",
        sa.ForeignKey("responses.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)


class Improvement(Base):
    """One change: "You said" (a public paraphrase) and "We did" (sanitised Markdown)."""

    __tablename__ = "improvements"
    __table_args__ = (sa.Index("ix_improvements_published_done", "published", "done_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    you_said: Mapped[str] = mapped_column(sa.String(500))
    we_did: Mapped[str] = mapped_column(sa.Text, default="")
    # "We did" rendered and sanitised when saved, so public pages never parse Markdown.
    we_did_html: Mapped[str] = mapped_column(sa.Text, default="")
    status: Mapped[ImprovementStatus] = mapped_column(
        str_enum(ImprovementStatus), default=ImprovementStatus.PLANNED
    )
    published: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    responses: Mapped[list[Response]] = relationship(secondary=improvement_responses)

    @property
    def is_public(self) -> bool:
        """Shown on /you-said-we-did only when done and published."""
        return self.published and self.status == ImprovementStatus.DONE
