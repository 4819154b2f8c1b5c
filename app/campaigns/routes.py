"""Staff: create campaigns and send them."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app.auth.forms import EmptyForm
from app.auth.session import role_required
from app.campaigns.forms import CampaignForm
from app.exceptions import InvalidInput
from app.models import StaffRole, utcnow
from app.services import audiences, campaigns

bp = Blueprint("campaigns", __name__, url_prefix="/campaigns")


@bp.get("/")
def index():
    """Every campaign."""
    return render_template("campaigns/index.html", campaigns=campaigns.list_campaigns())


@bp.route("/new", methods=["GET", "POST"])
@role_required(StaffRole.ADMIN)
def new():
    """The campaign form with a live count and sample of the audience its rule reaches.
    A GET with the form's fields in the query string previews that rule; a POST creates."""
    now = utcnow()
    if request.method == "POST":
        form = CampaignForm()
    else:  # the preview: the fields from the query string, nothing changes, no CSRF needed
        form = CampaignForm(formdata=request.args or None, meta={"csrf": False})
    if form.validate_on_submit():
        try:
            campaign, queued = campaigns.create_campaign(
                name=form.name.data,
                lapsed_days=form.lapsed_days.data,
                segments=form.segments.data,
                min_spent=form.min_spent.data,
                cooldown_days=form.cooldown_days.data,
                limit=form.limit.data,
                subject=form.subject.data,
                now=now,
                actor_id=current_user.id,
            )
        except InvalidInput as exc:
            flash(str(exc), "error")
        else:
            flash(f"Campaign created with {queued} invitations queued.", "success")
            return redirect(url_for("staff.campaigns.show", campaign_id=campaign.id))
    preview, problem = _audience_preview(form, now)
    status = 400 if form.is_submitted() else 200
    return render_template("campaigns/new.html", form=form, preview=preview, problem=problem), status


def _audience_preview(form: CampaignForm, now) -> tuple[audiences.AudiencePreview | None, str]:
    """The audience of the rule as the form stands, or why it cannot be counted yet."""
    rule_fields = (form.lapsed_days, form.cooldown_days, form.limit, form.min_spent)
    if any(field.process_errors or field.errors for field in rule_fields):
        return None, "Correct the audience fields to see who it reaches."
    try:
        rule = audiences.make_rule(
            lapsed_days=form.lapsed_days.data,
            segments=form.segments.data,
            min_spent=form.min_spent.data,
            cooldown_days=form.cooldown_days.data,
            limit=form.limit.data,
        )
    except InvalidInput as exc:
        return None, str(exc)
    return audiences.preview(rule, now), ""


@bp.get("/<int:campaign_id>")
def show(campaign_id: int):
    """A campaign: its audience rule and invitations by status."""
    campaign = campaigns.get_campaign(campaign_id)
    return render_template(
        "campaigns/show.html",
        campaign=campaign,
        audience_rule=campaigns.audience_rule(campaign),
        counts=campaigns.status_counts(campaign_id),
        progress=campaigns.send_progress(campaign_id, now=utcnow()),
        failures=campaigns.failed_invitations(campaign_id, after_id=request.args.get("after", type=int)),
        form=EmptyForm(),
    )


@bp.post("/<int:campaign_id>/send")
@role_required(StaffRole.ADMIN)
def send(campaign_id: int):
    """Hand the queued invitations to the background worker."""
    try:
        waiting = campaigns.queue_send(campaign_id, actor_id=current_user.id, now=utcnow())
    except InvalidInput as exc:
        flash(str(exc), "error")
    else:
        flash(f"Sending {waiting} invitations in the background. This page shows how far it got.", "success")
    return redirect(url_for("staff.campaigns.show", campaign_id=campaign_id))


@bp.post("/<int:campaign_id>/pause")
@role_required(StaffRole.ADMIN)
def pause(campaign_id: int):
    """Stop sending; a sender stops before its next batch."""
    campaigns.pause_campaign(
        campaign_id, reason=f"Paused by {current_user.email}.", actor_id=current_user.id, now=utcnow()
    )
    flash("Campaign paused.", "success")
    return redirect(url_for("staff.campaigns.show", campaign_id=campaign_id))


@bp.post("/<int:campaign_id>/resume")
@role_required(StaffRole.ADMIN)
def resume(campaign_id: int):
    """Allow sending again, then hand what is queued to the worker."""
    try:
        waiting = campaigns.resume_campaign(campaign_id, actor_id=current_user.id, now=utcnow())
    except InvalidInput as exc:
        flash(str(exc), "error")
    else:
        flash(f"Campaign resumed: sending {waiting} invitations in the background.", "success")
    return redirect(url_for("staff.campaigns.show", campaign_id=campaign_id))


@bp.post("/<int:campaign_id>/retry-failed")
@role_required(StaffRole.ADMIN)
def retry_failed(campaign_id: int):
    """Queue the refused invitations again (bounced addresses stay suppressed)."""
    try:
        retried = campaigns.retry_failed(campaign_id, actor_id=current_user.id, now=utcnow())
    except InvalidInput as exc:
        flash(str(exc), "error")
    else:
        flash(f"Retrying {retried} failed invitations in the background.", "success")
    return redirect(url_for("staff.campaigns.show", campaign_id=campaign_id))
