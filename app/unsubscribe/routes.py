"""Unsubscribe links: GET asks to confirm, POST (one-click, RFC 8058) unsubscribes."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy.exc import OperationalError

from app import i18n
from app.extensions import csrf, db
from app.models import utcnow
from app.services import unsubscribe

bp = Blueprint("unsubscribe", __name__, url_prefix="/u")


@bp.get("/<token>")
def confirm(token: str):
    """A confirm button; a GET never unsubscribes (link scanners fetch every URL)."""
    invitation = unsubscribe.invitation_for(token)
    i18n.use_customer_locale(invitation.customer.locale)
    return render_template("unsubscribe/confirm.html", token=token)


@bp.post("/<token>")
@csrf.exempt  # mail clients post cookieless one-click requests: the signed token is the proof
def one_click(token: str):
    """Suppress the address and answer 200, no redirect; safe to repeat. When the database cannot
    take it just now, it is kept on disk and applied by the next tick: never lost."""
    try:
        unsubscribe.unsubscribe(token, now=utcnow())
    except OperationalError:
        db.session.rollback()
        unsubscribe.unsubscribe_later(token)
    return render_template("unsubscribe/done.html")
