"""The staff area under /staff: login required for every page, in one place."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template
from flask_login import current_user

from app import emails
from app.auth.session import role_required
from app.campaigns.routes import bp as campaigns_bp
from app.customers.routes import bp as customers_bp
from app.imports.routes import bp as imports_bp
from app.improvements.routes import bp as improvements_bp
from app.models import StaffRole, utcnow
from app.privacy.routes import bp as privacy_bp
from app.services import reports
from app.settings.routes import bp as settings_bp
from app.suppressions.routes import bp as suppressions_bp
from app.triage.routes import bp as triage_bp

bp = Blueprint("staff", __name__, url_prefix="/staff")
# Each staff area is nested here, so the login check below covers every one of them.
for child in (
    customers_bp,
    campaigns_bp,
    triage_bp,
    improvements_bp,
    imports_bp,
    suppressions_bp,
    privacy_bp,
    settings_bp,
):
    bp.register_blueprint(child)


@bp.before_request
def require_login():
    """Every staff page, in this blueprint and those nested in it, needs a logged-in user."""
    if not current_user.is_authenticated:
        return current_app.login_manager.unauthorized()
    return None


@bp.get("/")
def home():
    """The staff home: what needs doing, and links to each area."""
    return render_template("staff/home.html", stats=reports.dashboard(now=utcnow()))


@bp.get("/outbox")
@role_required(StaffRole.ADMIN)
def outbox():
    """Development outbox: the emails the app would have sent."""
    return render_template(
        "staff/outbox.html",
        entries=emails.outbox_entries(),
        backend=current_app.config["MAIL_BACKEND"],
    )


@bp.get("/outbox/<name>")
@role_required(StaffRole.ADMIN)
def outbox_message(name: str):
    """One email from the outbox, its headers and both parts."""
    try:
        entry = emails.read_outbox_entry(name)
    except FileNotFoundError:
        abort(404)
    return render_template("staff/outbox_message.html", entry=entry)
