"""Staff: the suppression list. All staff may view it; only admins add to it or lift from it."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app.auth.session import role_required
from app.exceptions import InvalidInput
from app.models import StaffRole, SuppressionReason, utcnow
from app.services import suppressions
from app.services.suppressions import REASON_LABELS
from app.suppressions.forms import AddSuppressionForm, LiftForm

bp = Blueprint("suppressions", __name__, url_prefix="/suppressions")


@bp.get("/")
def index():
    """Suppressions newest first, optionally of one reason, with "Older →" pages."""
    shown = request.args.get("reason", "")
    if shown and shown not in {reason.value for reason in SuppressionReason}:
        abort(404)
    page = suppressions.list_suppressions(
        reason=SuppressionReason(shown) if shown else None,
        before_id=request.args.get("before", type=int),
    )
    return render_template("suppressions/index.html", page=page, shown=shown, labels=REASON_LABELS)


@bp.route("/new", methods=["GET", "POST"])
@role_required(StaffRole.ADMIN)
def new():
    """Add an address to the list by hand."""
    form = AddSuppressionForm()
    if form.validate_on_submit():
        try:
            suppressions.add_suppression(
                form.email.data,
                SuppressionReason(form.reason.data),
                note=form.note.data or "",
                actor_id=current_user.id,
                now=utcnow(),
            )
        except InvalidInput as exc:
            flash(str(exc), "error")
        else:
            flash("Address suppressed: it will never be emailed.", "success")
            return redirect(url_for("staff.suppressions.index"))
    status = 400 if form.is_submitted() else 200
    return render_template("suppressions/new.html", form=form), status


@bp.get("/<int:suppression_id>/lift")
@role_required(StaffRole.ADMIN)
def confirm_lift(suppression_id: int):
    """Ask why a suppression should be lifted."""
    row = suppressions.get_suppression(suppression_id)
    return render_template("suppressions/lift.html", row=row, form=LiftForm(), labels=REASON_LABELS)


@bp.post("/<int:suppression_id>/lift")
@role_required(StaffRole.ADMIN)
def lift(suppression_id: int):
    """Lift a suppression, recording the reason given."""
    row = suppressions.get_suppression(suppression_id)
    form = LiftForm()
    if form.validate_on_submit():
        try:
            suppressions.lift_suppression(
                suppression_id, reason=form.reason.data, actor_id=current_user.id, now=utcnow()
            )
        except InvalidInput as exc:
            flash(str(exc), "error")
        else:
            flash("Suppression lifted.", "success")
            return redirect(url_for("staff.suppressions.index"))
    return render_template("suppressions/lift.html", row=row, form=form, labels=REASON_LABELS), 400
