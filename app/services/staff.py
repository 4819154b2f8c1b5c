"""Staff accounts: create, authenticate, and end sessions."""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa
from flask import current_app
from werkzeug.security import check_password_hash, generate_password_hash

from app.exceptions import AuthenticationFailed, InvalidInput
from app.extensions import db
from app.models import StaffRole, StaffUser
from app.models.staff import new_session_token
from app.services import audit
from app.services.customers import normalise_email

log = logging.getLogger("winback.auth")
MIN_PASSWORD_LENGTH = 10
# Compared against when the address is unknown, so a wrong address costs as long as a wrong password.
_DUMMY_HASH = None


def create_staff(email: str, role: StaffRole, password: str, *, now: datetime) -> StaffUser:
    """A new staff account. Refuses a taken address or a short password."""
    address = normalise_email(email)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password: at least {MIN_PASSWORD_LENGTH} characters")
    if db.session.scalar(sa.select(StaffUser.id).where(StaffUser.email == address)):
        raise InvalidInput(f"{address} already has a staff account")
    user = StaffUser(email=address, role=role, password_hash=_hash(password), created_at=now)
    db.session.add(user)
    db.session.flush()
    audit.record("staff.create", "staff_user", user.id, detail=role.value, now=now)
    db.session.commit()
    return user


def _hash(password: str) -> str:
    return generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])


def authenticate(email: str, password: str, *, now: datetime) -> StaffUser:
    """The active account with this address and password, or AuthenticationFailed."""
    global _DUMMY_HASH
    try:
        address = normalise_email(email)
    except InvalidInput:
        address = ""
    user = db.session.scalar(sa.select(StaffUser).where(StaffUser.email == address)) if address else None
    if user is None:
        _DUMMY_HASH = _DUMMY_HASH or _hash("not-a-real-password")
        check_password_hash(_DUMMY_HASH, password)
        log.info("login failed: unknown address")
        raise AuthenticationFailed()
    if not check_password_hash(user.password_hash, password) or not user.active:
        log.info("login failed for staff#%s", user.id)
        raise AuthenticationFailed()
    user.last_login_at = now
    audit.record("staff.login", "staff_user", user.id, actor_id=user.id, now=now)
    db.session.commit()
    log.info("login staff#%s", user.id)
    return user


def load_by_session_token(token: str) -> StaffUser | None:
    """The active user whose current session token this is (Flask-Login's user loader)."""
    user = db.session.scalar(sa.select(StaffUser).where(StaffUser.session_token == token))
    return user if user is not None and user.active else None


def end_sessions(user_id: int, *, now: datetime) -> None:
    """Rotate the user's session token: every cookie issued before stops working."""
    user = db.session.get(StaffUser, user_id)
    if user is None:
        return
    user.session_token = new_session_token()
    audit.record("staff.logout", "staff_user", user_id, actor_id=user_id, now=now)
    db.session.commit()
