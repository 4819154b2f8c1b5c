"""Staff: browse customers."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from app.models import utcnow
from app.services import customers

bp = Blueprint("customers", __name__, url_prefix="/customers")


@bp.get("/")
def index():
    """Customers, searchable, keyset-paginated; optionally only the lapsed."""
    search = request.args.get("q", "")[:100]
    lapsed_only = request.args.get("lapsed") == "1"
    page = customers.list_customers(
        search=search,
        lapsed_only=lapsed_only,
        now=utcnow(),
        after_id=request.args.get("after", type=int),
    )
    return render_template("customers/index.html", page=page, search=search, lapsed_only=lapsed_only)


@bp.get("/<int:customer_id>")
def show(customer_id: int):
    """One customer."""
    customer = customers.get_customer(customer_id)
    return render_template("customers/show.html", customer=customer)
