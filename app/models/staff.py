"""Staff users who log in to /staff."""

from __future__ import annotations

import secrets
from datetime import datetime

import sqlalchemy as sa
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, str_enum, utcnow
from app.models.enums import StaffRole


def new_session_token() -> str:
    return secrets.token_urlsafe(24)


class StaffUser(UserMixin, Base):
    """A person who triages answers or runs campaigns."""

    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[StaffRole] = mapped_column(str_enum(StaffRole), default=StaffRole.VIEWER)
    active: Mapped[bool] = mapped_column(default=True)
    # Rotated at logout and deactivation so that an old session cookie stops working.
    session_token: Mapped[str] = mapped_column(sa.String(64), unique=True, default=new_session_token)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def get_id(self) -> str:
        """Flask-Login keeps this in the session: the rotating token, never the row id."""
        return self.session_token

    @property
    def is_active(self) -> bool:
        return self.active

    def can(self, *roles: StaffRole) -> bool:
        """True when this user has one of the roles (admins can do everything)."""
        return self.role == StaffRole.ADMIN or self.role in roles
