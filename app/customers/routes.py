"""Staff: browse, search and filter customers, see one customer, download the CSV."""

from __future__ import annotations

from flask import Blueprint, Response, render_template, request, stream_with_context, url_for
from flask_login import current_user
from werkzeug.routing import BuildError

from app.auth.session import role_required
from app.customers.forms import SORT_DESCRIPTIONS, CustomerFilterForm
from app.models import StaffRole, utcnow
from app.services import customers, exports

bp = Blueprint("customers", __name__, url_prefix="/customers")


@bp.get("/")
def index():
    """Customers, searchable and filterable, sorted, keyset-paginated."""
    form = CustomerFilterForm(request.args)
    filters = form.filters()
    page = customers.list_customers(filters, now=utcnow(), after=request.args.get("after"))
    return render_template(
        "customers/index.html",
        form=form,
        page=page,
        sort_description=SORT_DESCRIPTIONS[filters.order],
        args=form.query_args(),
        paged=bool(request.args.get("after")),
        can_export=current_user.can(StaffRole.ADMIN),
    )


@bp.get("/export.csv")
@role_required(StaffRole.ADMIN)
def export():
    """The customers matching the page's filters as CSV, streamed as it is read."""
    form = CustomerFilterForm(request.args)
    now = utcnow()
    body = exports.CustomerCsv(form.filters(), now=now)
    filename = f"customers-{now:%Y-%m-%d}.csv"
    return Response(
        stream_with_context(iter(body)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@bp.get("/<int:customer_id>")
def show(customer_id: int):
    """One customer: figures, scores and why, orders, invitations, answers, suppression."""
    detail = customers.customer_detail(customer_id, now=utcnow())
    return render_template(
        "customers/show.html",
        detail=detail,
        customer=detail.customer,
        detail_limit=customers.DETAIL_LIMIT,
        **_privacy_links(customer_id),
    )


def _privacy_links(customer_id: int) -> dict[str, str | None]:
    """Where an admin erases a customer or downloads their data, when those pages exist."""
    links: dict[str, str | None] = {"erase_url": None, "export_json_url": None}
    if not current_user.can(StaffRole.ADMIN):
        return links
    for key, endpoint in (
        ("erase_url", "staff.privacy.erase"),
        ("export_json_url", "staff.privacy.export_json"),
    ):
        try:
            links[key] = url_for(endpoint, customer_id=customer_id)
        except BuildError:  # not built yet, or named differently: no link rather than an error
            links[key] = None
    return links
