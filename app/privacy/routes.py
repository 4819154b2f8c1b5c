"""Staff (admins): erase a customer, and export one customer's data as JSON."""

from __future__ import annotations

import json
import logging

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user

from app.auth.session import role_required
from app.models import StaffRole, utcnow
from app.privacy.forms import ConfirmEraseForm
from app.services import customers, privacy

bp = Blueprint("privacy", __name__, url_prefix="/customers")
log = logging.getLogger("winback.audit")


@bp.get("/<int:customer_id>/erase")
@role_required(StaffRole.ADMIN)
def confirm_erase(customer_id: int):
    """Say what erasing removes and keeps, and ask for confirmation."""
    customer = customers.get_customer(customer_id)
    return render_template("privacy/erase.html", customer=customer, form=ConfirmEraseForm())


@bp.post("/<int:customer_id>/erase")
@role_required(StaffRole.ADMIN)
def erase(customer_id: int):
    """Erase the customer's personal data; the address stays suppressed. A post that did not
    come from the confirmation page (CSRF is checked before this view) is sent there first."""
    if not ConfirmEraseForm().validate_on_submit():
        return redirect(url_for("staff.privacy.confirm_erase", customer_id=customer_id), code=303)
    erasure = privacy.erase_customer(customer_id, actor_id=current_user.id, now=utcnow())
    flash(erasure.message(), "info" if erasure.already_erased else "success")
    return redirect(url_for("staff.customers.show", customer_id=customer_id))


@bp.get("/<int:customer_id>/data.json")
@role_required(StaffRole.ADMIN)
def export_json(customer_id: int):
    """One customer's data as a JSON download, for an access request."""
    data = privacy.export_customer(customer_id)
    # Logged, not stored: a GET changes nothing, but who downloaded personal data is worth a line.
    log.info("customer.export customer#%s by staff#%s", customer_id, current_user.id)
    body = json.dumps(data, indent=2, ensure_ascii=False)
    return (
        body,
        200,
        {
            "Content-Type": "application/json; charset=utf-8",
            "Content-Disposition": f'attachment; filename="customer-{customer_id}.json"',
            "Cache-Control": "no-store",
        },
    )
