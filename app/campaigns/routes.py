"""Staff: create campaigns and send them."""

from __future__ import annotations

from flask import Blueprint, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user

from app.auth.forms import EmptyForm
from app.auth.session import role_required
from app.campaigns.forms import CampaignContentForm, CampaignForm
from app.exceptions import InvalidInput
from app.models import OfferKind, StaffRole, utcnow
from app.services import audiences, campaign_content, campaign_preview, campaigns

# The HTML part shown in the campaign page's frame: its own inline styles, never a script.
PREVIEW_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox"
)

bp = Blueprint("campaigns", __name__, url_prefix="/campaigns")


@bp.get("/")
def index():
    """Every campaign."""
    return render_template("campaigns/index.html", campaigns=campaigns.list_campaigns())


@bp.route("/new", methods=["GET", "POST"])
@role_required(StaffRole.ADMIN)
def new():
    """The campaign form with a live count and sample of the audience its rule reaches.
    "Count the audience" posts the form back to count it, keeping what was typed; a GET with the
    rule's fields in the query string (the page's script) counts too. Only "Create" creates."""
    now = utcnow()
    if request.method == "POST":
        form = CampaignForm()
    else:  # the preview: the fields from the query string, nothing changes, no CSRF needed
        form = CampaignForm(formdata=request.args or None, meta={"csrf": False})
    counting = request.form.get("action") == "count"
    if not counting and form.validate_on_submit():
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
                body=form.body.data,
                reminder_days=form.reminder_days.data,
                **_offer(form),
            )
        except InvalidInput as exc:
            flash(str(exc), "error")
        else:
            flash(f"Campaign created with {queued} invitations queued.", "success")
            return redirect(url_for("staff.campaigns.show", campaign_id=campaign.id))
    preview, problem = _audience_preview(form, now)
    status = 400 if form.is_submitted() and not counting else 200
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


def _offer(form: CampaignForm | CampaignContentForm, *, keep_codes: bool = False) -> dict:
    """The offer the form asks for, as create_campaign's arguments (a file is read here)."""
    kind = OfferKind(form.offer_kind.data or OfferKind.NONE.value)
    if kind == OfferKind.SHARED:
        return {"offer_code": form.offer_code.data or ""}
    if kind == OfferKind.UNIQUE:
        upload = form.offer_codes.data
        if upload and upload.filename:
            return {"offer_codes": campaign_content.parse_offer_codes(upload.read())}
        return {} if keep_codes else {"offer_codes": []}
    return {}


@bp.get("/<int:campaign_id>")
def show(campaign_id: int):
    """A campaign: its audience rule, invitations by status, and its email as a customer sees it."""
    campaign = campaigns.get_campaign(campaign_id)
    return render_template(
        "campaigns/show.html",
        campaign=campaign,
        audience_rule=campaigns.audience_rule(campaign),
        counts=campaigns.status_counts(campaign_id),
        progress=campaigns.send_progress(campaign_id, now=utcnow()),
        failures=campaigns.failed_invitations(campaign_id, after_id=request.args.get("after", type=int)),
        preview=campaign_preview.preview(campaign_id),
        latest_test=campaign_preview.latest_test(campaign_id),
        editable=campaign_content.is_editable(campaign),
        codes=campaign_content.offer_codes_summary(campaign_id),
        form=EmptyForm(),
    )


@bp.get("/<int:campaign_id>/preview.html")
def preview_html(campaign_id: int):
    """The HTML part alone, for the campaign page's sandboxed frame."""
    response = make_response(campaign_preview.preview(campaign_id).html)
    response.headers["Content-Security-Policy"] = PREVIEW_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


@bp.route("/<int:campaign_id>/edit", methods=["GET", "POST"])
@role_required(StaffRole.ADMIN)
def edit(campaign_id: int):
    """Change a draft campaign's subject, body and offer, until it starts sending."""
    campaign = campaigns.get_campaign(campaign_id)
    if not campaign_content.is_editable(campaign):
        flash("This campaign has started sending: its email can no longer change.", "error")
        return redirect(url_for("staff.campaigns.show", campaign_id=campaign_id))
    form = CampaignContentForm()
    if form.validate_on_submit():
        try:
            offer = _offer(form, keep_codes=True)
            campaign_content.update_content(
                campaign_id,
                subject=form.subject.data,
                body=form.body.data,
                offer_kind=OfferKind(form.offer_kind.data),
                offer_code=offer.get("offer_code"),
                offer_codes=offer.get("offer_codes"),
                actor_id=current_user.id,
                now=utcnow(),
            )
        except InvalidInput as exc:
            flash(str(exc), "error")
        else:
            flash("Campaign email saved.", "success")
            return redirect(url_for("staff.campaigns.show", campaign_id=campaign_id))
    elif not form.is_submitted():
        form.subject.data = campaign.subject
        form.body.data = campaign.body or campaign_content.DEFAULT_BODY
        form.offer_kind.data = campaign.offer_kind.value
        form.offer_code.data = campaign.offer_code
    status = 400 if form.is_submitted() else 200
    codes = campaign_content.offer_codes_summary(campaign_id)
    return render_template("campaigns/edit.html", form=form, campaign=campaign, codes=codes), status


@bp.post("/<int:campaign_id>/test")
@role_required(StaffRole.ADMIN)
def send_test(campaign_id: int):
    """Have a worker send the campaign's email to the logged-in staff member alone, marked as a
    test; the campaign page says when it went, or why it did not."""
    to = campaign_preview.queue_test(campaign_id, actor_id=current_user.id, now=utcnow())
    flash(f"A test is on its way to {to}. This page shows when it has gone.", "success")
    return redirect(url_for("staff.campaigns.show", campaign_id=campaign_id))


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
