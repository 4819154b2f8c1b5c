"""Campaigns: build an audience of lapsed customers into invitations, and send them."""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import joinedload

from app import emails
from app.exceptions import InvalidInput, NotFound
from app.extensions import db
from app.models import (
    Campaign,
    CampaignStatus,
    Customer,
    CustomerStatus,
    Invitation,
    InvitationStatus,
    SuppressionReason,
    utcnow,
)
from app.services import audiences, audit, campaign_content, suppressions
from app.services.sql import random_hex_32
from app.tasks import SEND_CAMPAIGN

log = logging.getLogger("winback.send")

CLAIM_BATCH = 50


def create_campaign(
    *,
    name: str,
    now: datetime,
    lapsed_days: int | None = None,
    segments: list[str] | tuple[str, ...] | None = None,
    min_spent: int | str | None = None,
    cooldown_days: int | None = None,
    limit: int | None = None,
    subject: str | None = None,
    actor_id: int | None = None,
    body: str | None = None,
    offer_code: str | None = None,
    offer_codes: list[str] | None = None,
) -> tuple[Campaign, int]:
    """Create a campaign and queue one invitation per customer of its audience, set-based
    (see audiences.make_rule for the rule and its defaults).

    The email is `subject` and `body` (templates; see campaign_content). An offer is one shared
    `offer_code`, or `offer_codes` handed out one per recipient (too few refuses the campaign).
    Returns the campaign and the number of invitations queued."""
    name = (name or "").strip()
    if not name:
        raise InvalidInput("name: a campaign needs a name")
    if len(name) > 200:
        raise InvalidInput("name: at most 200 characters")
    rule = audiences.make_rule(
        lapsed_days=lapsed_days,
        segments=segments,
        min_spent=min_spent,
        cooldown_days=cooldown_days,
        limit=limit,
    )
    subject = (subject or "").strip() or campaign_content.DEFAULT_SUBJECT
    if "\r" in subject or "\n" in subject:
        raise InvalidInput("subject: must be a single line")
    if len(subject) > 200:
        raise InvalidInput("subject: at most 200 characters")
    offer = campaign_content.resolve_offer(offer_code, offer_codes)
    content = campaign_content.validate_templates(subject, body, offer_code=offer.code)

    campaign = Campaign(
        name=name,
        lapsed_days=rule.lapsed_days,
        segments=[segment.value for segment in rule.segments],
        min_spent=rule.min_spent,
        cooldown_days=rule.cooldown_days,
        audience_limit=rule.limit,
        subject=subject,
        created_at=now,
        created_by_id=actor_id,
    )
    campaign.subject, campaign.body = content.subject, content.body
    campaign.offer_kind, campaign.offer_code = offer.kind, offer.code
    db.session.add(campaign)
    db.session.flush()
    audience = audiences.audience_select(
        rule,
        now,
        sa.literal(campaign.id),
        Customer.id,
        random_hex_32(),
        random_hex_32(),
        sa.literal(InvitationStatus.QUEUED.value),
        sa.literal(0),
        sa.literal(""),
        sa.false(),
        sa.literal(now, Invitation.created_at.type),
    )
    db.session.execute(
        sa.insert(Invitation.__table__).from_select(
            [
                "campaign_id",
                "customer_id",
                "reference",
                "nonce",
                "status",
                "attempts",
                "last_smtp_reply",
                "revoked",
                "created_at",
            ],
            audience,
        )
    )
    # Counted rather than taken from rowcount, which INSERT ... SELECT does not report everywhere.
    queued = db.session.scalar(sa.select(sa.func.count()).where(Invitation.campaign_id == campaign.id))
    if offer.codes:
        campaign_content.hand_out_offer_codes(campaign.id, offer.codes)
    audit.record(
        "campaign.create",
        "campaign",
        campaign.id,
        actor_id=actor_id,
        now=now,
        detail=f"{queued} invitations: {rule.describe()}",
    )
    db.session.commit()
    return campaign, queued


def audience_rule(campaign: Campaign) -> audiences.AudienceRule:
    """The rule a campaign's audience was taken by."""
    return audiences.AudienceRule(
        lapsed_days=campaign.lapsed_days,
        segments=audiences.parse_segments(campaign.segments),
        min_spent=campaign.min_spent,
        cooldown_days=campaign.cooldown_days or 0,
        limit=campaign.audience_limit,
    )


def get_campaign(campaign_id: int) -> Campaign:
    """One campaign, or NotFound."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound(f"no campaign #{campaign_id}")
    return campaign


def list_campaigns() -> list[Campaign]:
    """Every campaign, newest first."""
    return list(db.session.scalars(sa.select(Campaign).order_by(Campaign.id.desc())))


def status_counts(campaign_id: int) -> dict[InvitationStatus, int]:
    """How many of the campaign's invitations are in each status."""
    rows = db.session.execute(
        sa.select(Invitation.status, sa.func.count())
        .where(Invitation.campaign_id == campaign_id)
        .group_by(Invitation.status)
    )
    counts = dict.fromkeys(InvitationStatus, 0)
    counts.update({status: number for status, number in rows})  # noqa: C416 - rows, not pairs
    return counts


def queue_send(campaign_id: int, *, actor_id: int | None, now: datetime) -> int:
    """Hand a campaign's queued invitations to a background worker; returns how many wait.
    A web request never waits on the mail server."""
    campaign = get_campaign(campaign_id)
    if campaign.status == CampaignStatus.PAUSED:
        raise InvalidInput(f"campaign {campaign_id} is paused: resume it before sending")
    waiting = count_queued(campaign_id)
    if not waiting:
        raise InvalidInput(f"campaign {campaign_id} has no invitations waiting to be sent")
    campaign.status = CampaignStatus.SENDING
    audit.record(
        "campaign.send", "campaign", campaign_id, actor_id=actor_id, now=now, detail=f"{waiting} queued"
    )
    db.session.commit()
    current_app.extensions["celery"].send_task(SEND_CAMPAIGN, args=[campaign_id])
    return waiting


@dataclass
class SendSummary:
    """What one send run did."""

    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    deferred: int = 0
    failed_in_a_row: int = 0
    last_failure: str = ""
    paused_reason: str = ""

    def line(self, campaign_id: int) -> str:
        deferred = f", {self.deferred} deferred to retry" if self.deferred else ""
        paused = f"; paused: {self.paused_reason}" if self.paused_reason else ""
        return (
            f"campaign {campaign_id}: {self.sent} sent, {self.failed} failed, "
            f"{self.suppressed} skipped as suppressed{deferred}{paused}"
        )


def count_queued(campaign_id: int) -> int:
    return db.session.scalar(
        sa.select(sa.func.count()).where(
            Invitation.campaign_id == campaign_id,
            Invitation.status.in_([InvitationStatus.QUEUED, InvitationStatus.SENDING]),
        )
    )


def send_campaign(
    campaign_id: int,
    *,
    clock: Callable[[], datetime] = utcnow,
    progress: Callable[[int], None] | None = None,
) -> SendSummary:
    """Send every queued invitation of a campaign over one SMTP connection per batch.

    Safe to run twice and beside another sender: invitations are claimed before sending
    (SKIP LOCKED on PostgreSQL), and only queued ones, or claims whose lease ran out, are sent."""
    campaign = get_campaign(campaign_id)
    if campaign.status == CampaignStatus.PAUSED:
        raise InvalidInput(f"campaign {campaign_id} is paused: resume it before sending")
    campaign.status = CampaignStatus.SENDING
    db.session.commit()
    summary = SendSummary()
    limit = current_app.config["SEND_MAX_CONSECUTIVE_FAILURES"]
    try:
        with emails.connect() as connection:
            while not _is_paused(campaign_id) and (batch := _claim_batch(campaign_id, clock())):
                try:
                    for invitation in batch:
                        _send_one(connection, invitation, campaign, summary, clock)
                        if progress:
                            progress(1)
                        if summary.failed_in_a_row >= limit:
                            raise _StopSending(_too_many_failures(summary))
                except BaseException:
                    _release_unsent([invitation.id for invitation in batch])
                    raise
    except smtplib.SMTPAuthenticationError as exc:
        reason = (
            f"The mail server refused Winback's login ({exc.smtp_code} {_text(exc.smtp_error)}). "
            "Check MAIL_USERNAME and MAIL_PASSWORD, then resume."
        )
        pause_campaign(campaign_id, reason=reason, actor_id=None, now=clock())
        summary.paused_reason = reason
        return summary
    except _StopSending as stop:
        pause_campaign(campaign_id, reason=str(stop), actor_id=None, now=clock())
        summary.paused_reason = str(stop)
        return summary
    if count_queued(campaign_id) == 0 and not _is_paused(campaign_id):
        campaign.status = CampaignStatus.SENT
        db.session.commit()
    return summary


def _too_many_failures(summary: SendSummary) -> str:
    return (
        f"{summary.failed_in_a_row} invitations in a row were refused; the last reply was "
        f"\u201c{summary.last_failure}\u201d. Check the mail server, then resume."
    )


class _StopSending(Exception):
    """Too many failures in a row: the campaign pauses itself with this reason."""


def _is_paused(campaign_id: int) -> bool:
    status = db.session.scalar(sa.select(Campaign.status).where(Campaign.id == campaign_id))
    db.session.commit()  # end the read: on SQLite no snapshot or lock is held between batches
    return status == CampaignStatus.PAUSED


def pause_campaign(campaign_id: int, *, reason: str, actor_id: int | None, now: datetime) -> Campaign:
    """Stop a campaign's sending: a sender checks before each batch and stops there."""
    campaign = get_campaign(campaign_id)
    campaign.status = CampaignStatus.PAUSED
    campaign.pause_reason = reason[:500]
    campaign.paused_at = now
    audit.record("campaign.pause", "campaign", campaign_id, actor_id=actor_id, now=now, detail=reason)
    db.session.commit()
    log.warning("campaign %s paused: %s", campaign_id, reason)
    return campaign


def resume_campaign(campaign_id: int, *, actor_id: int | None, now: datetime, enqueue: bool = True) -> int:
    """Allow a paused campaign to send again and, unless told not to, hand what is still queued
    to a background worker. Returns how many invitations wait."""
    campaign = get_campaign(campaign_id)
    if campaign.status != CampaignStatus.PAUSED:
        raise InvalidInput(f"campaign {campaign_id} is not paused")
    waiting = count_queued(campaign_id)
    campaign.status = CampaignStatus.SENDING if waiting else CampaignStatus.SENT
    campaign.pause_reason = ""
    campaign.paused_at = None
    audit.record("campaign.resume", "campaign", campaign_id, actor_id=actor_id, now=now)
    db.session.commit()
    if waiting and enqueue:
        current_app.extensions["celery"].send_task(SEND_CAMPAIGN, args=[campaign_id])
    return waiting


@dataclass
class FailedInvitation:
    """One invitation the mail server refused, for the campaign page."""

    id: int
    email: str
    status: InvitationStatus
    attempts: int
    reply: str


def failed_invitations(
    campaign_id: int, *, after_id: int | None = None, limit: int = 50
) -> list[FailedInvitation]:
    """Refused and bounced invitations of a campaign with the server's reply, by id (keyset)."""
    query = (
        sa.select(
            Invitation.id, Customer.email, Invitation.status, Invitation.attempts, Invitation.last_smtp_reply
        )
        .join(Customer, Customer.id == Invitation.customer_id)
        .where(
            Invitation.campaign_id == campaign_id,
            Invitation.status.in_([InvitationStatus.FAILED, InvitationStatus.BOUNCED]),
        )
        .order_by(Invitation.id)
        .limit(limit)
    )
    if after_id:
        query = query.where(Invitation.id > after_id)
    return [FailedInvitation(*row) for row in db.session.execute(query)]


def retry_failed(campaign_id: int, *, actor_id: int | None, now: datetime) -> int:
    """Queue the campaign's failed invitations again (never the bounced: their addresses are
    suppressed) and hand them to a worker. Returns how many were queued."""
    campaign = get_campaign(campaign_id)
    if campaign.status == CampaignStatus.PAUSED:
        raise InvalidInput(f"campaign {campaign_id} is paused: resume it first")
    result = db.session.execute(
        sa.update(Invitation.__table__)
        .where(
            Invitation.__table__.c.campaign_id == campaign_id,
            Invitation.__table__.c.status == InvitationStatus.FAILED.value,
        )
        .values(status=InvitationStatus.QUEUED.value, lease_expires_at=None)
    )
    retried = result.rowcount
    if not retried:
        db.session.rollback()
        raise InvalidInput(f"campaign {campaign_id} has no failed invitations to retry")
    campaign.status = CampaignStatus.SENDING
    audit.record(
        "campaign.retry_failed", "campaign", campaign_id, actor_id=actor_id, now=now, detail=f"{retried}"
    )
    db.session.commit()
    current_app.extensions["celery"].send_task(SEND_CAMPAIGN, args=[campaign_id])
    return retried


def requeue_expired_claims(*, now: datetime) -> int:
    """Give back to the queue every invitation whose sender's claim ran out (a worker died, or
    a temporary refusal waited out its lease). Safe to run at any time, from cron too."""
    result = db.session.execute(
        sa.update(Invitation.__table__)
        .where(
            Invitation.__table__.c.status == InvitationStatus.SENDING.value,
            Invitation.__table__.c.lease_expires_at < now,
        )
        .values(status=InvitationStatus.QUEUED.value, lease_expires_at=None)
    )
    db.session.commit()
    return result.rowcount


def _claim_batch(campaign_id: int, now: datetime) -> list[Invitation]:
    """Take up to CLAIM_BATCH invitations that are queued or whose claim expired."""
    lease = timedelta(seconds=current_app.config["SEND_LEASE_SECONDS"])
    claimable = sa.or_(
        Invitation.status == InvitationStatus.QUEUED,
        sa.and_(
            Invitation.status == InvitationStatus.SENDING,
            Invitation.lease_expires_at < now,
        ),
    )
    ids = list(
        db.session.scalars(
            sa.select(Invitation.id)
            .where(Invitation.campaign_id == campaign_id, claimable)
            .order_by(Invitation.id)
            .limit(CLAIM_BATCH)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        db.session.commit()
        return []
    db.session.execute(
        sa.update(Invitation)
        .where(Invitation.id.in_(ids))
        .values(status=InvitationStatus.SENDING, lease_expires_at=now + lease)
    )
    db.session.commit()
    return list(
        db.session.scalars(
            sa.select(Invitation)
            .options(joinedload(Invitation.customer))
            .where(Invitation.id.in_(ids))
            .order_by(Invitation.id)
        )
    )


def _send_one(connection, invitation: Invitation, campaign: Campaign, summary: SendSummary, clock) -> None:
    """Send one claimed invitation and record the outcome; suppression is checked right before."""
    customer = invitation.customer
    invitation.attempts = Invitation.attempts + 1
    if customer.status != CustomerStatus.ACTIVE or suppressions.is_suppressed(customer.email):
        invitation.status = InvitationStatus.SUPPRESSED
        invitation.lease_expires_at = None
        summary.suppressed += 1
        db.session.commit()
        return
    message = emails.compose_invitation(invitation, customer, campaign)
    # End the read before talking to the mail server: on SQLite no lock is held while it answers.
    db.session.commit()
    try:
        connection.send(message)
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = next(iter(exc.recipients.values()))
        if code >= 500:
            _fail(invitation, code, reply, summary, bad_address=_text(reply).startswith("5.1."))
        else:
            _retry_later(invitation, code, reply, clock(), summary)
        return
    except smtplib.SMTPSenderRefused as exc:
        # The server refuses our sender address: a setting to fix, not a fault of the customer's.
        _release(invitation, f"{exc.smtp_code} {_text(exc.smtp_error)} (sender {exc.sender})")
        raise
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code >= 500:
            _fail(invitation, exc.smtp_code, exc.smtp_error, summary)
            return
        _release(invitation, f"{exc.smtp_code} {_text(exc.smtp_error)}")
        raise
    except (smtplib.SMTPException, OSError) as exc:
        _release(invitation, str(exc))
        raise
    invitation.status = InvitationStatus.SENT
    invitation.sent_at = clock()
    invitation.message_id = message.msgId
    invitation.last_smtp_reply = "250 accepted"
    invitation.lease_expires_at = None
    db.session.commit()
    summary.sent += 1
    summary.failed_in_a_row = 0


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def _fail(
    invitation: Invitation, code: int, reply: bytes | str, summary: SendSummary, *, bad_address: bool = False
) -> None:
    """A permanent refusal (5xx). A recipient refused as a bad address (enhanced status 5.1.x) is a
    hard bounce and is suppressed: it is never tried again, in any campaign."""
    text = _text(reply)
    invitation.status = InvitationStatus.FAILED
    invitation.last_smtp_reply = f"{code} {text}"[:500]
    invitation.lease_expires_at = None
    if bad_address:
        invitation.status = InvitationStatus.BOUNCED
        suppressions.suppress(
            invitation.customer.email, SuppressionReason.HARD_BOUNCE, utcnow(), note=f"{code} {text}"
        )
    db.session.commit()
    summary.failed += 1
    summary.failed_in_a_row += 1
    summary.last_failure = f"{code} {text}"[:200]


def _retry_later(
    invitation: Invitation, code: int, reply: bytes | str, now: datetime, summary: SendSummary
) -> None:
    """A temporary refusal of this recipient (4xx): keep the claim until the lease runs out, so the
    next run after that tries again and this run moves on."""
    invitation.last_smtp_reply = f"{code} {_text(reply)}"[:500]
    invitation.lease_expires_at = now + timedelta(seconds=current_app.config["SEND_LEASE_SECONDS"])
    db.session.commit()
    summary.deferred += 1


def _release_unsent(ids: list[int]) -> None:
    """Return the claimed invitations of an interrupted batch to the queue at once."""
    db.session.rollback()
    db.session.execute(
        sa.update(Invitation)
        .where(Invitation.id.in_(ids), Invitation.status == InvitationStatus.SENDING)
        .values(status=InvitationStatus.QUEUED, lease_expires_at=None)
    )
    db.session.commit()


def _release(invitation: Invitation, reply: str) -> None:
    """Give a claimed invitation back to the queue after a temporary failure."""
    invitation.status = InvitationStatus.QUEUED
    invitation.last_smtp_reply = reply[:500]
    invitation.lease_expires_at = None
    db.session.commit()
    log.warning("invitation %s requeued: %s", invitation.id, reply)
