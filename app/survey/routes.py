"""The survey a lapsed customer answers from their emailed link."""

from __future__ import annotations

import contextlib
import logging

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from sqlalchemy.exc import OperationalError

from app import i18n
from app.database import write_intent
from app.exceptions import InvalidInput
from app.extensions import csrf, db, limiter
from app.models import Invitation, Response, utcnow
from app.services import survey
from app.survey import page
from app.survey.forms import FollowUpForm, SurveyForm
from app.urls import public_url

bp = Blueprint("survey", __name__, url_prefix="/s")
log = logging.getLogger("winback.survey")

FRESH_LINK_FIELD = "fresh_link"
BUSY_RETRY_SECONDS = 5


def _fresh_link_limit() -> str:
    return current_app.config["FRESH_LINK_RATE_LIMIT"]


def _per_link_limit() -> str:
    return current_app.config["FRESH_LINK_PER_LINK_LIMIT"]


def _link_key() -> str:
    # Keyed by the link itself: one address is not flooded, whoever presses the button.
    return "fresh-link:" + (request.view_args or {}).get("token", "")


def render_form(
    form: SurveyForm, invitation: Invitation, token: str, status: int = 200, *, busy: bool = False
):
    """The form, with the phone number we know when none was typed. `busy`: the answers could
    not be stored just now; they are shown again to be sent once more."""
    if invitation.customer.phone and not form.phone.data:
        form.phone.data = invitation.customer.phone
    html = render_template("survey/form.html", form=form, invitation=invitation, token=token, busy=busy)
    return html, status, ({"Retry-After": str(BUSY_RETRY_SECONDS)} if busy else {})


def render_thanks(invitation: Invitation, response: Response, token: str):
    """The thank-you page that follows the answer; the answers, with a way to change them until
    staff triage them."""
    return render_template(
        "survey/thanks.html",
        invitation=invitation,
        response=response,
        token=token,
        editable=survey.is_editable(response),
        follow_up=FollowUpForm(data={"follow_up_text": response.follow_up_text}),
        share_url=public_url("you_said_we_did.index"),
    )


@bp.get("/<token>")
def show_form(token: str):
    """The form; once answered, the thank-you page (or, with ?edit, the answers to change).
    Records the first opening only.

    A blank form for a link opened before (a customer coming back to it) is read in one row and
    served from the form's fixed parts (app/survey/page.py); every other case renders it all."""
    state = survey.link_state(token)
    if state.opened and not state.answered and page.can_serve():
        i18n.use_customer_locale(state.locale)
        return page.blank_form(token, state.first_name, state.phone)
    invitation, response = survey.open_survey(token, now=utcnow())
    i18n.use_customer_locale(invitation.customer.locale)
    if response is None:
        return render_form(SurveyForm(), invitation, token)
    if "edit" in request.args and survey.is_editable(response):
        return render_form(SurveyForm.from_response(response), invitation, token)
    return render_thanks(invitation, response, token)


@limiter.limit(_fresh_link_limit)
@limiter.limit(_per_link_limit, key_func=_link_key)
def _send_fresh_link(token: str):
    """The invalid-link page's "Email me a fresh link", rate limited per visitor and per link.
    The limits sit here rather than on the view, so that answers are not checked against them."""
    survey.send_fresh_link(token, now=utcnow())
    return render_template("errors/fresh_link_sent.html")


@bp.post("/<token>")
@csrf.exempt  # the form checks its own CSRF token, so that a stale page keeps the answers typed
def submit(token: str):
    """Store the answers (once; replaced only by an explicit edit), then thank them.

    The invalid-link page's "Email me a fresh link" button posts here too, to the same URL."""
    if FRESH_LINK_FIELD in request.form:
        return _send_fresh_link(token)
    # The form is checked before the database is touched; the service then reads everything
    # before it writes, so that on SQLite other answers wait for the write lock only briefly.
    form = SurveyForm()
    if not form.validate_on_submit():
        invitation = survey.open_invitation(token)
        i18n.use_customer_locale(invitation.customer.locale)
        return render_form(form, invitation, token, status=400)
    try:
        survey.answer(token, form.answers(), now=utcnow(), edit=form.edit.data == "1")
    except OperationalError as exc:
        # The database is busy past its timeout (a long import holding SQLite's write lock) or
        # out of reach: nothing was stored, so the answers go back to the customer to send again.
        db.session.rollback()
        log.warning("survey answer not stored, the form was shown again: %s", exc.orig)
        with write_intent(False):  # a read, which must not queue for the write lock again
            invitation = survey.open_invitation(token)
            i18n.use_customer_locale(invitation.customer.locale)
            return render_form(form, invitation, token, status=503, busy=True)
    return redirect(url_for("survey.show_form", token=token), code=303)


@bp.post("/<token>/follow-up")
def follow_up(token: str):
    """The optional "what did we do to cause this?" after "No, never"."""
    invitation = survey.open_invitation(token)
    i18n.use_customer_locale(invitation.customer.locale)
    form = FollowUpForm()
    if form.validate_on_submit():
        # No "No, never" answer to add it to (changed or triaged meanwhile): show the page as it is.
        with contextlib.suppress(InvalidInput):
            survey.save_follow_up(invitation.id, form.follow_up_text.data or "")
    return redirect(url_for("survey.show_form", token=token) + "#follow-up", code=303)
