"""The public "You Said, We Did" page."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for

from app.extensions import cache
from app.services import improvements

bp = Blueprint("you_said_we_did", __name__)


@bp.get("/you-said-we-did")
@cache.cached(key_prefix=improvements.PUBLIC_PAGE_CACHE_KEY)
def index():
    """Done, published improvements, newest first."""
    return render_template("you_said_we_did/index.html", improvements=improvements.public_improvements())


@bp.get("/")
def root():
    """The site's front door is the public page."""
    return redirect(url_for("you_said_we_did.index"))
