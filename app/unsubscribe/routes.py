"""Unsubscribe links: GET asks to confirm, POST (one-click, RFC 8058) unsubscribes."""

from __future__ import annotations

from flask import Blueprint, render_template

from app import i18n
from app.extensions import csrf
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
    """Suppress the address and answer 200, no redirect; safe to repeat."""
    unsubscribe.unsubscribe(token, now=utcnow())
    return render_template("unsubscribe/done.html")
