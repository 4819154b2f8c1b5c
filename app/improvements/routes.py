"""Staff: improvements made from actionable answers."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app.auth.session import role_required
from app.exceptions import InvalidInput
from app.improvements.forms import ImprovementForm
from app.models import ImprovementStatus, StaffRole, utcnow
from app.services import improvements, triage
from app.services.improvements import ImprovementData

bp = Blueprint("improvements", __name__, url_prefix="/improvements")


def _data(form: ImprovementForm) -> ImprovementData:
    return ImprovementData(
        you_said=form.you_said.data or "",
        we_did=form.we_did.data or "",
        status=ImprovementStatus(form.status.data),
        published=bool(form.published.data),
    )


@bp.get("/")
def index():
    """Every improvement."""
    return render_template("improvements/index.html", improvements=improvements.list_improvements())


@bp.route("/new", methods=["GET", "POST"])
@role_required(StaffRole.TRIAGER)
def new():
    """Start an improvement from an actionable response (?response=ID)."""
    response = triage.get_response(request.args.get("response", type=int) or 0)
    form = ImprovementForm()
    if form.validate_on_submit():
        try:
            improvement = improvements.create_improvement(
                _data(form), response_ids=[response.id], actor_id=current_user.id, now=utcnow()
            )
        except InvalidInput as exc:
            flash(str(exc), "error")
        else:
            flash("Improvement saved.", "success")
            return redirect(url_for("staff.improvements.edit", improvement_id=improvement.id))
    status = 400 if form.is_submitted() else 200
    return render_template("improvements/form.html", form=form, response=response, improvement=None), status


@bp.route("/<int:improvement_id>", methods=["GET", "POST"])
@role_required(StaffRole.TRIAGER)
def edit(improvement_id: int):
    """Edit, move along, publish."""
    improvement = improvements.get_improvement(improvement_id)
    form = ImprovementForm(obj=improvement if request.method == "GET" else None)
    if request.method == "GET":
        form.status.data = improvement.status.value
    if form.validate_on_submit():
        try:
            improvements.update_improvement(
                improvement_id, _data(form), actor_id=current_user.id, now=utcnow()
            )
        except InvalidInput as exc:
            flash(str(exc), "error")
        else:
            flash("Improvement saved.", "success")
            return redirect(url_for("staff.improvements.edit", improvement_id=improvement_id))
    status = 400 if form.is_submitted() else 200
    return render_template(
        "improvements/form.html", form=form, response=None, improvement=improvement
    ), status
