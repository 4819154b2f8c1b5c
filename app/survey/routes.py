"""The survey a lapsed customer answers from their emailed link."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for

from app.models import utcnow
from app.services import survey
from app.survey.forms import SurveyForm

bp = Blueprint("survey", __name__, url_prefix="/s")


@bp.get("/<token>")
def show_form(token: str):
    """The form, or the thank-you page once answered. Records the first opening only."""
    invitation = survey.open_invitation(token, now=utcnow())
    response = survey.response_for(invitation.id)
    if response is not None:
        return render_template("survey/thanks.html", invitation=invitation, response=response)
    form = SurveyForm()
    if invitation.customer.phone and not form.phone.data:
        form.phone.data = invitation.customer.phone
    return render_template("survey/form.html", form=form, invitation=invitation, token=token)


@bp.post("/<token>")
def submit(token: str):
    """Store the answers once, then thank them."""
    invitation = survey.open_invitation(token)
    form = SurveyForm()
    if not form.validate_on_submit():
        return render_template("survey/form.html", form=form, invitation=invitation, token=token), 400
    survey.submit_response(invitation.id, form.answers(), now=utcnow())
    return redirect(url_for("survey.show_form", token=token), code=303)
