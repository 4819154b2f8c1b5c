"""Staff: the inbox of answers, sorted into never, actionable or unfeasible."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app.auth.session import role_required
from app.models import Outcome, StaffRole, utcnow
from app.services import triage
from app.triage.forms import OutcomeForm

bp = Blueprint("triage", __name__, url_prefix="/triage")


@bp.get("/")
def inbox():
    """Responses, newest first; untriaged by default."""
    show = request.args.get("show", triage.UNTRIAGED)
    if show not in triage.FILTERS:
        abort(404)
    page = triage.inbox(show=show, before_id=request.args.get("before", type=int))
    return render_template(
        "triage/inbox.html", page=page, show=show, filters=triage.FILTERS, form=OutcomeForm()
    )


@bp.get("/<int:response_id>")
def show(response_id: int):
    """One response in full, with the outcome buttons."""
    response = triage.get_response(response_id)
    return render_template("triage/show.html", response=response, form=OutcomeForm(), outcomes=list(Outcome))


@bp.post("/<int:response_id>/outcome")
@role_required(StaffRole.TRIAGER)
def set_outcome(response_id: int):
    """Confirm the outcome of a response."""
    form = OutcomeForm()
    if not form.validate_on_submit():
        abort(400)
    triage.set_outcome(response_id, Outcome(form.outcome.data), actor_id=current_user.id, now=utcnow())
    flash(f"Marked {form.outcome.data}.", "success")
    if request.form.get("back") == "inbox":
        return redirect(url_for("staff.triage.inbox"))
    return redirect(url_for("staff.triage.show", response_id=response_id))
