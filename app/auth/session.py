"""Flask-Login wiring and the role check used by staff views."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from flask import Flask, abort
from flask_login import current_user

from app.extensions import login_manager
from app.models import StaffRole


def init_login(app: Flask) -> None:
    """Configure Flask-Login: sessions name a rotating token, not a user id."""
    from app.services import staff

    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to see that page."
    login_manager.login_message_category = "info"
    login_manager.session_protection = app.config["SESSION_PROTECTION"]
    login_manager.user_loader(staff.load_by_session_token)


def role_required(*roles: StaffRole) -> Callable:
    """Allow a view to the given roles only (admins are always allowed)."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated or not current_user.can(*roles):
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorator
