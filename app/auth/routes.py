"""Staff log in and log out."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app.auth.forms import LoginForm
from app.exceptions import AuthenticationFailed
from app.extensions import limiter
from app.models import utcnow
from app.services import staff
from app.services.csvfiles import header_key

bp = Blueprint("auth", __name__, url_prefix="/staff")


def _account_key() -> str:
    """Rate-limit key for the account being tried, whatever address the attempts come from."""
    return "login-account:" + header_key(request.form.get("email", ""))


def _login_limit() -> str:
    from flask import current_app

    return current_app.config["LOGIN_RATE_LIMIT"]


def _failed(response) -> bool:
    return response.status_code == 401


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"], deduct_when=_failed)
@limiter.limit(_login_limit, methods=["POST"], deduct_when=_failed, key_func=_account_key)
def login():
    """Show the login form; on success renew the session and go where the user was heading."""
    if current_user.is_authenticated:
        return redirect(url_for("staff.home"))
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("auth/login.html", form=form), 400 if form.is_submitted() else 200
    try:
        user = staff.authenticate(form.email.data, form.password.data, now=utcnow())
    except AuthenticationFailed:
        flash("That email and password don't match an active account.", "error")
        return render_template("auth/login.html", form=form), 401
    session.clear()  # a fresh session at login: nothing set before it survives
    login_user(user)
    return redirect(_safe_next(request.args.get("next")) or url_for("staff.home"))


def _safe_next(target: str | None) -> str | None:
    """Follow `next` only to a local path, never to another site."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target:
        return None
    return target


@bp.post("/logout")
@login_required
def logout():
    """End every session of this user and log out."""
    staff.end_sessions(current_user.id, now=utcnow())
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))
