"""Campaigns: build an audience of lapsed customers into invitations, and send them."""

from __future__ import annotations

import logging
import smtplib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import sqlalchemy as sa
from flask import current_app

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
    Response,
    Suppression,
    SuppressionReason,
    utcnow,
)
from app.services import audiences, audit, campaign_content, pacing, suppressions, unsubscribe
from app.services.sql import random_hex_32
from app.tasks import SEND_CAMPAIGN, SEND_REMINDERS

log = logging.getLogger("winback.send")

CLAIM_BATCH = 50
MAX_RETRY_DELAY = timedelta(hours=1)


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
    reminder_days: list[int] | str | None = None,
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
    reminder_days = parse_reminder_days(reminder_days)
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
        reminder_days=reminder_days,
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


def parse_reminder_days(days: list[int] | str | None) -> list[int]:
    """Reminder days as given ("4,10", a list, or None for REMINDER_DAYS); an empty list or
    string means no reminders. Raises InvalidInput unless whole days, increasing, 1 to 365."""
    if days is None:
        return list(current_app.config["REMINDER_DAYS"])
    if isinstance(days, str):
        try:
            days = [int(day) for day in days.split(",") if day.strip()]
        except ValueError:
            raise InvalidInput("reminder days: whole days separated by commas, e.g. 4,10") from None
    days = [int(day) for day in days]
    if any(day < 1 or day > 365 for day in days) or days != sorted(set(days)):
        raise InvalidInput("reminder days: each from 1 to 365 days, increasing, e.g. 4,10")
    return days


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
    """What one send run did (invitations or reminders)."""

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
    """Invitations still to send: queued (including those waiting to retry) or being sent."""
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
    """Send every queued invitation of a campaign that is due, over one SMTP connection.

    Safe to run twice and beside another sender: invitations are claimed before sending
    (SKIP LOCKED on PostgreSQL), and only queued ones whose retry time has come, or claims whose
    lease ran out, are sent. Those refused for now wait for their retry time (see the tick)."""
    campaign = get_campaign(campaign_id)
    if campaign.status == CampaignStatus.PAUSED:
        raise InvalidInput(f"campaign {campaign_id} is paused: resume it before sending")
    unsubscribe.apply_pending(now=clock())  # any kept while the database was busy, before sending
    _set_status(campaign_id, CampaignStatus.SENDING)
    summary = SendSummary()
    stopped = _send_batches(lambda now: _claim_batch(campaign_id, now), summary, clock, progress, campaign_id)
    if not stopped and count_queued(campaign_id) == 0 and not _is_paused(campaign_id):
        _set_status(campaign_id, CampaignStatus.SENT)
    return summary


def send_due_reminders(
    *, clock: Callable[[], datetime] = utcnow, progress: Callable[[int], None] | None = None
) -> SendSummary:
    """Send every reminder that is due, across campaigns, over one SMTP connection.

    Invitations that may no longer be reminded (answered, unsubscribed, suppressed, bounced, or
    the customer bought since the first send) stop for good first. The rest are claimed by
    moving their next reminder a lease ahead (SKIP LOCKED on PostgreSQL), so each reminder goes
    once whatever the number of workers; one whose sender died is due again after the lease."""
    stop_reminders(now=clock())
    summary = SendSummary()
    _send_batches(_claim_reminders, summary, clock, progress, None)
    return summary


def _send_batches(
    claim: Callable[[datetime], list[_Job]],
    summary: SendSummary,
    clock: Callable[[], datetime],
    progress: Callable[[int], None] | None,
    campaign_id: int | None,
) -> bool:
    """The send loop shared by invitations and reminders: claim a batch, send each message over
    one connection, record each outcome as it comes. Returns True if the run paused a campaign.

    An error that stops the run gives the batch's unsent messages back at once."""
    limit = current_app.config["SEND_MAX_CONSECUTIVE_FAILURES"]
    gap = pacing.interval()
    keys = suppressions.hash_keys()
    current: _Job | None = None

    def next_batch() -> list[_Job]:
        return [] if campaign_id and _is_paused(campaign_id) else claim(clock())

    # Nothing due: no connection to the mail server at all.
    if not (batch := next_batch()):
        return False
    try:
        with _Interleave() as interleave:
            ahead: list[_Job] = []  # the next batch, claimed during the last message's data
            try:
                with emails.connect() as connection:
                    while batch:
                        for number, current in enumerate(batch):
                            if number + 1 < len(batch):
                                following = batch[number + 1]
                                meanwhile = partial(interleave.compose_ahead, following)
                            else:
                                meanwhile = partial(_claim_ahead, next_batch, ahead, interleave)
                            _send_one(
                                connection, current, summary, clock, gap, keys, batch, interleave, meanwhile
                            )
                            if progress:
                                interleave.record()  # the callback may use the database
                                progress(1)
                            if summary.failed_in_a_row >= limit:
                                raise _StopSending(_too_many_failures(summary))
                        if ahead:
                            batch, ahead = ahead, []
                        else:
                            interleave.record()
                            batch = []
                            batch = next_batch()
                    interleave.record()
            except BaseException:
                interleave.settle()
                _release_unsent(batch + ahead, clock())
                raise
    except smtplib.SMTPAuthenticationError as exc:
        reason = (
            f"The mail server refused Winback's login ({exc.smtp_code} {_text(exc.smtp_error)}). "
            "Check MAIL_USERNAME and MAIL_PASSWORD, then resume."
        )
        summary.paused_reason = reason
    except _StopSending as stop:
        summary.paused_reason = str(stop)
    if not summary.paused_reason:
        return False
    # Pause the campaign that was being sent (for reminders: the one whose message failed last).
    paused_id = campaign_id or (current.campaign.id if current else None)
    if paused_id:
        pause_campaign(paused_id, reason=summary.paused_reason, actor_id=None, now=clock())
    return True


class _Interleave:
    """The database work of each message, done while the mail server works on a command
    instead of after its reply: this address is checked while the server takes the recipient,
    the previous message's 250 is committed while it answers this message's DATA command, and
    the next message is composed while it takes this one's data. One thread; the replies wait
    in the socket meanwhile.

    So the previous outcome is committed before this message's data goes (at most one message
    sent and not recorded, as when each outcome is written at once) and the check is as late as
    before, right before the data. The two statements of every message run on a connection of
    their own, on the driver directly; the session is used only once that has committed."""

    def __init__(self) -> None:
        self.driver: _Driver | None = None if _in_memory_database() else _Driver(db.engine.connect())
        self.unrecorded: tuple | None = None  # the last 250's job, tries, message id and time
        self.ahead: tuple[_Job, emails.Prepared] | None = None

    def __enter__(self) -> _Interleave:
        return self

    def __exit__(self, *_exc) -> None:
        try:
            self.settle()
        finally:
            if self.driver is not None:
                self.driver.core.close()

    def record_later(self, job: _Job, tries: int, message_id: str, now: datetime) -> None:
        """A 250 to commit before the next message's data (or before any other database work)."""
        self.record()
        self.unrecorded = (job, tries, message_id, now)

    def record(self) -> None:
        """Commit the 250 that waits, if any."""
        if self.unrecorded is not None:
            job, tries, message_id, now = self.unrecorded
            self.unrecorded = None
            with self._rolled_back_on_error():
                _record_sent(job, tries, message_id, now, connection=self.driver)

    def settle(self) -> None:
        """Commit what waits, logging (not raising) a failure: for a run that is stopping."""
        try:
            self.record()
        except Exception:
            log.exception("recording a sent message failed while the send was stopping")

    def may_send(self, job: _Job, keys: list[bytes]) -> bool:
        with self._rolled_back_on_error():
            return _may_send(job, keys, connection=self.driver)

    @contextmanager
    def _rolled_back_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            if self.driver is not None:
                self.driver.rollback()
            raise

    def compose_ahead(self, job: _Job | None) -> None:
        """Compose the next message now; one that fails is composed again in its turn (and
        fails there, for that message)."""
        self.ahead = None
        if job is not None:
            try:
                self.ahead = (job, _compose(job))
            except Exception:
                self.ahead = None

    def composed(self, job: _Job) -> emails.Prepared:
        if self.ahead is not None and self.ahead[0] is job:
            return self.ahead[1]
        return _compose(job)


class _DriverStatement:
    """A statement compiled once for a dialect and run on the driver's cursor: for the two
    statements of every message (the check and the 250), whose Core execution costs several
    times the database's own work. Parameters go through their types' bind processors, as
    Core would send them."""

    def __init__(self, statement: sa.Executable, dialect: sa.Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.order = list(compiled.positiontup) if compiled.positional else None
        self.processors: dict[str, Callable] = {}
        self.fixed: dict[str, object] = {}  # the statement's own values (not the caller's)
        for bind, name in compiled.bind_names.items():
            processor = bind.type.bind_processor(dialect)
            if bind.required:
                if processor is not None:
                    self.processors[name] = processor
            else:
                value = bind.effective_value
                self.fixed[name] = processor(value) if processor is not None else value

    def execute(self, cursor, values: dict) -> None:
        parameters = self.fixed | values
        for name, processor in self.processors.items():
            parameters[name] = processor(parameters[name])
        if self.order is not None:
            parameters = [parameters[name] for name in self.order]
        cursor.execute(self.sql, parameters)


class _Driver:
    """The sender's second connection: the driver's own for the statements of every message,
    and Core's (`core`) for the rarer ones. Each use commits before the next."""

    def __init__(self, core: sa.Connection) -> None:
        self.core = core
        self.raw = core.connection.driver_connection
        self.statements: dict[tuple, _DriverStatement] = {}

    def run(self, key: tuple, values: dict):
        """Execute the statement named by `key` (see _driver_statement); returns the cursor."""
        statement = self.statements.get(key)
        if statement is None:
            statement = self.statements[key] = _DriverStatement(_driver_statement(key), self.core.dialect)
        cursor = self.raw.cursor()
        statement.execute(cursor, values)
        return cursor

    def commit(self) -> None:
        self.raw.commit()

    def rollback(self) -> None:
        self.raw.rollback()
        self.core.rollback()


def _driver_statement(key: tuple) -> sa.Executable:
    if key[0] == "may_send":
        return _may_send_query(key[1], key[2])
    return _FIRST_SENT


def _in_memory_database() -> bool:
    url = db.engine.url
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _claim_ahead(next_batch: Callable[[], list[_Job]], ahead: list[_Job], interleave: _Interleave) -> None:
    """Claim the next batch into `ahead` and compose its first message, while the server takes
    the last message of this one. A failure here is left for the claim in its turn to meet."""
    try:
        ahead[:] = next_batch()
    except Exception:
        db.session.rollback()
        ahead.clear()
        return
    interleave.compose_ahead(ahead[0] if ahead else None)


def _set_status(campaign_id: int, status: CampaignStatus) -> None:
    db.session.execute(sa.update(Campaign).where(Campaign.id == campaign_id).values(status=status))
    db.session.commit()


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
        .values(status=InvitationStatus.QUEUED.value, lease_expires_at=None, attempts=0, next_attempt_at=None)
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
    """Give back to the queue every invitation whose sender's claim ran out (a worker died).
    Safe to run at any time, from cron too."""
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


def retry_delay(tries: int) -> timedelta:
    """How long a message refused for now (4xx) waits after its `tries`-th try: SEND_RETRY_BASE_SECONDS,
    doubled after each further try, at most MAX_RETRY_DELAY."""
    base = current_app.config["SEND_RETRY_BASE_SECONDS"]
    return min(timedelta(seconds=base * 2 ** min(max(tries - 1, 0), 20)), MAX_RETRY_DELAY)


def _due(now: datetime) -> sa.ColumnElement[bool]:
    """Not waiting for a retry, or its retry time has come."""
    return sa.or_(Invitation.next_attempt_at.is_(None), Invitation.next_attempt_at <= now)


@dataclass(slots=True)
class _Invitation:
    """What sending reads of a claimed invitation: plain values, outside any session."""

    id: int
    reference: str
    nonce: str
    offer_code: str | None
    attempts: int
    next_attempt_at: datetime | None
    reminders_sent: int
    sent_at: datetime | None


@dataclass(slots=True)
class _Customer:
    """What sending reads of a recipient."""

    email: str
    first_name: str
    last_name: str
    locale: str | None

    name = property(Customer.name.fget)


@dataclass
class _Job:
    """One message to send: a claimed invitation and its customer (plain values, so that
    commits expire nothing), its campaign (a copy outside the session), and whether it is a
    reminder."""

    invitation: _Invitation
    customer: _Customer
    campaign: Campaign
    reminder: bool
    lease_until: datetime
    recorded: bool = False


def _claim_batch(campaign_id: int, now: datetime) -> list[_Job]:
    """Take up to CLAIM_BATCH invitations that are queued and due, or whose claim expired."""
    lease = timedelta(seconds=current_app.config["SEND_LEASE_SECONDS"])
    claimable = sa.or_(
        sa.and_(Invitation.status == InvitationStatus.QUEUED, _due(now)),
        sa.and_(Invitation.status == InvitationStatus.SENDING, Invitation.lease_expires_at < now),
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
    if ids:
        db.session.execute(
            sa.update(Invitation)
            .where(Invitation.id.in_(ids))
            .values(status=InvitationStatus.SENDING, lease_expires_at=now + lease)
        )
    db.session.commit()
    return _load_jobs(ids, reminder=False, lease_until=now + lease)


def _reminder_allowed() -> sa.ColumnElement[bool]:
    """An invitation may still get reminders: sent and not bounced, not answered, its customer
    active and not suppressed, and no purchase since the first send. (Needs customers joined.)"""
    invitation, customer = Invitation.__table__.c, Customer.__table__.c
    responses, suppressed = Response.__table__, Suppression.__table__
    return sa.and_(
        invitation.status == InvitationStatus.SENT,
        invitation.revoked.is_(False),
        invitation.answered_at.is_(None),
        ~sa.exists().where(responses.c.invitation_id == invitation.id).correlate_except(responses),
        customer.status == CustomerStatus.ACTIVE,
        ~sa.exists().where(suppressed.c.email_hash == customer.email_hash).correlate_except(suppressed),
        sa.or_(
            customer.last_purchase_at.is_(None),
            invitation.sent_at.is_(None),
            customer.last_purchase_at <= invitation.sent_at,
        ),
    )


def stop_reminders(*, now: datetime) -> int:
    """Set-based: due reminders of invitations that may no longer be reminded are dropped for
    good (next_reminder_at = NULL). Returns how many stopped."""
    allowed = (
        sa.select(Customer.id).where(Customer.id == Invitation.customer_id, _reminder_allowed()).exists()
    )
    result = db.session.execute(
        sa.update(Invitation)
        .where(Invitation.next_reminder_at <= now, ~allowed)
        .values(next_reminder_at=None)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount


def _claim_reminders(now: datetime) -> list[_Job]:
    """Take up to CLAIM_BATCH due reminders of campaigns that are not paused. The claim moves
    the next reminder a lease ahead: another worker skips it, and if this one dies it is due
    again after the lease."""
    lease = timedelta(seconds=current_app.config["SEND_LEASE_SECONDS"])
    ids = list(
        db.session.scalars(
            sa.select(Invitation.id)
            .join(Customer, Customer.id == Invitation.customer_id)
            .join(Campaign, Campaign.id == Invitation.campaign_id)
            .where(
                Invitation.next_reminder_at <= now,
                Campaign.status != CampaignStatus.PAUSED,
                _reminder_allowed(),
            )
            .order_by(Invitation.next_reminder_at, Invitation.id)
            .limit(CLAIM_BATCH)
            .with_for_update(skip_locked=True, of=Invitation)
        )
    )
    if ids:
        db.session.execute(
            sa.update(Invitation)
            .where(Invitation.id.in_(ids))
            .values(next_reminder_at=now + lease)
            .execution_options(synchronize_session=False)
        )
    db.session.commit()
    return _load_jobs(ids, reminder=True, lease_until=now + lease)


def _load_jobs(ids: list[int], *, reminder: bool, lease_until: datetime) -> list[_Job]:
    """The claimed invitations with their customers and campaigns, as copies outside the
    session: the commit after each message then reloads nothing."""
    if not ids:
        return []
    invitation, customer = Invitation.__table__.c, Customer.__table__.c
    invitation_columns = [getattr(invitation, name) for name in _Invitation.__slots__]
    customer_columns = [getattr(customer, name) for name in _Customer.__slots__]
    rows = db.session.execute(
        sa.select(invitation.campaign_id, *invitation_columns, *customer_columns)
        .join_from(Invitation.__table__, Customer.__table__, customer.id == invitation.customer_id)
        .where(invitation.id.in_(ids))
        .order_by(invitation.id)
    ).all()
    campaigns = {
        campaign.id: _copy(campaign)
        for campaign in db.session.scalars(
            sa.select(Campaign).where(Campaign.id.in_({row[0] for row in rows}))
        )
    }
    split = 1 + len(invitation_columns)
    jobs = [
        _Job(
            _Invitation(*row[1:split]),
            _Customer(*row[split:]),
            campaigns[row[0]],
            reminder,
            lease_until,
        )
        for row in rows
    ]
    db.session.commit()
    return jobs


def _copy(instance):
    """A copy of a loaded row's columns that belongs to no session."""
    mapper = sa.inspect(instance).mapper
    return mapper.class_(**{column.key: getattr(instance, column.key) for column in mapper.column_attrs})


def _compose(job: _Job) -> emails.Prepared:
    """The message of one job, checked and serialised: a reminder is the same email under a
    prefixed subject."""
    invitation, campaign = job.invitation, job.campaign
    return emails.compose_campaign_message(
        campaign,
        job.customer,
        reference=invitation.reference,
        nonce=invitation.nonce,
        offer_code=campaign_content.offer_code_for(campaign, invitation.offer_code),
        reminder=job.reminder,
    )


def _send_one(
    connection,
    job: _Job,
    summary: SendSummary,
    clock: Callable[[], datetime],
    gap: timedelta | None,
    keys: list[bytes],
    batch: list[_Job],
    interleave: _Interleave,
    meanwhile: Callable[[], None],
) -> None:
    """Send one claimed message and record its outcome. The pace is kept (a slot is reserved
    first), and the address is checked against the suppression list right before the message's
    data goes. A 250 is committed while the server answers the next message's DATA command (see
    _Interleave); any other outcome at once. `meanwhile` runs while the server takes the
    message's data (the next message composed, or the next batch claimed). Raises after
    recording when the connection, not this recipient, is at fault."""
    if gap is not None:
        interleave.record()
        slot, wait = pacing.reserve_slot(gap, clock=clock)
        _extend_leases(batch, slot)
        time.sleep(wait)
    invitation = job.invitation
    prepared = interleave.composed(job)
    tries = invitation.attempts + 1 if not job.reminder or invitation.next_attempt_at else 1
    try:
        try:
            sent = connection.send_prepared(
                prepared,
                after_data_command=interleave.record,
                before_data=lambda: interleave.may_send(job, keys),
                after_data=meanwhile,
            )
        finally:
            interleave.record()  # a failure is recorded below, after the previous 250
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = next(iter(exc.recipients.values()))
        if code >= 500:
            _record_failed(job, tries, code, reply, summary, bad_address=_text(reply).startswith("5.1."))
            return
        _record_temporary(job, tries, code, reply, clock(), summary)
        if code == 421:  # the server closed the connection: stop the run
            raise smtplib.SMTPServerDisconnected(f"{code} {_text(reply)}") from exc
        return
    except smtplib.SMTPSenderRefused as exc:
        if exc.smtp_code == 421:
            _record_temporary(job, tries, exc.smtp_code, exc.smtp_error, clock(), summary)
            raise
        # The server refuses our sender address: a setting to fix, not a fault of the customer's.
        _record_released(job, f"{exc.smtp_code} {_text(exc.smtp_error)} (sender {exc.sender})", clock())
        raise
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code >= 500:
            _record_failed(job, tries, exc.smtp_code, exc.smtp_error, summary)
            return
        if isinstance(exc, smtplib.SMTPDataError) or exc.smtp_code == 421:
            _record_temporary(job, tries, exc.smtp_code, exc.smtp_error, clock(), summary)
            if exc.smtp_code == 421:
                raise
            return
        _record_released(job, f"{exc.smtp_code} {_text(exc.smtp_error)}", clock())
        raise
    except (smtplib.SMTPException, OSError) as exc:
        _record_released(job, str(exc), clock())
        raise
    if not sent:
        _record_stopped(job, summary)
        return
    interleave.record_later(job, tries, prepared.message_id, clock())
    summary.sent += 1
    summary.failed_in_a_row = 0


def _may_send_query(reminder: bool, key_count: int | None = None) -> sa.Select:
    """The check made right before each message, as plain SQL (it runs once a message): with
    the address's hashes as one expanding parameter, or as `key_count` parameters hash_0...
    (for a statement compiled once)."""
    invitation, customer = Invitation.__table__, Customer.__table__
    if key_count is None:
        hashes = sa.bindparam("hashes", expanding=True)
    else:
        hashes = [sa.bindparam(f"hash_{number}") for number in range(key_count)]
    query = (
        sa.select(invitation.c.id)
        .select_from(invitation.join(customer, customer.c.id == invitation.c.customer_id))
        .where(
            invitation.c.id == sa.bindparam("invitation_id"),
            customer.c.status == CustomerStatus.ACTIVE,
            ~sa.exists().where(Suppression.__table__.c.email_hash.in_(hashes)),
        )
    )
    if reminder:
        query = query.where(_reminder_allowed(), invitation.c.next_reminder_at.is_not(None))
    return query


_MAY_SEND = {False: _may_send_query(False), True: _may_send_query(True)}


def _may_send(job: _Job, keys: list[bytes], *, connection: _Driver | None = None) -> bool:
    """Checked right before each message: the customer is active and the address is not on the
    suppression list (under any key); a reminder's invitation may also still be reminded.
    On `connection` when given (see _Interleave), else on the session."""
    email = job.customer.email
    hashes = [suppressions.keyed_hash(key, email) for key in keys]
    if isinstance(connection, _Driver):
        values = {"invitation_id": job.invitation.id} | {f"hash_{n}": value for n, value in enumerate(hashes)}
        cursor = connection.run(("may_send", job.reminder, len(hashes)), values)
        found = cursor.fetchone()
        cursor.close()
        connection.commit()
        return found is not None
    run = connection or db.session
    found = run.execute(
        _MAY_SEND[job.reminder], {"invitation_id": job.invitation.id, "hashes": hashes}
    ).first()
    # End the read before talking to the mail server: on SQLite no lock is held while it answers.
    run.commit()
    return found is not None


def _still_claimed(ids: list[int], *, reminder: bool) -> sa.Update:
    """An UPDATE of those of these invitations a sender still holds: for a reminder, one still
    due; for a first send, one still being sent (nothing else changed them meanwhile)."""
    held = (
        Invitation.next_reminder_at.is_not(None)
        if reminder
        else Invitation.status == InvitationStatus.SENDING
    )
    return sa.update(Invitation).where(Invitation.id.in_(ids), held)


def _extend_leases(batch: list[_Job], slot: datetime) -> None:
    """A slow pace can outlast the claim: before a slot comes within half a lease of the end of
    the batch's claims, the unsent ones are kept a lease beyond that slot."""
    lease = timedelta(seconds=current_app.config["SEND_LEASE_SECONDS"])
    waiting = [job for job in batch if not job.recorded]
    if not waiting or slot + lease / 2 < min(job.lease_until for job in waiting):
        return
    until = slot + lease
    ids = [job.invitation.id for job in waiting]
    if batch[0].reminder:
        statement = _still_claimed(ids, reminder=True).values(next_reminder_at=until)
    else:
        statement = _still_claimed(ids, reminder=False).values(lease_expires_at=until)
    db.session.execute(statement.execution_options(synchronize_session=False))
    db.session.commit()
    for job in waiting:
        job.lease_until = until


def _update(job: _Job, *, connection: sa.Connection | None = None, **values) -> None:
    """Write one message's outcome and commit it (the 250 is never recorded before it came)."""
    run = connection or db.session
    table = Invitation.__table__
    run.execute(sa.update(table).where(table.c.id == job.invitation.id).values(**values))
    run.commit()
    job.recorded = True


def _keep_unless_stopped(value: datetime | None) -> sa.ColumnElement:
    """The next reminder time, unless it was cleared meanwhile (an answer, an unsubscribe)."""
    column = Invitation.__table__.c.next_reminder_at
    return sa.case((column.is_(None), sa.null()), else_=sa.literal(value, column.type))


def next_reminder_after(
    sent_at: datetime, days: list[int], reminders_sent: int, now: datetime
) -> datetime | None:
    """When the next reminder is due, after `reminders_sent` of them: `days[reminders_sent]` days
    after the first send, and never sooner than a day after the previous email. None: no more."""
    if reminders_sent >= len(days):
        return None
    return max(
        sent_at + timedelta(days=days[reminders_sent]), now + timedelta(days=1) if reminders_sent else now
    )


def _first_sent_statement() -> sa.Update:
    """The outcome of a first email accepted: the most frequent write, built once."""
    table = Invitation.__table__
    now = sa.bindparam("job_now", type_=table.c.sent_at.type)
    return (
        sa.update(table)
        .where(table.c.id == sa.bindparam("job_id"))
        .values(
            status=InvitationStatus.SENT,
            attempts=sa.bindparam("job_tries"),
            last_smtp_reply="250 accepted",
            sent_at=now,
            last_sent_at=now,
            message_id=sa.bindparam("job_message_id"),
            lease_expires_at=None,
            next_attempt_at=None,
            next_reminder_at=sa.bindparam("job_next_reminder_at", type_=table.c.next_reminder_at.type),
        )
    )


_FIRST_SENT = _first_sent_statement()


def _record_sent(
    job: _Job, tries: int, message_id: str, now: datetime, *, connection: _Driver | None = None
) -> None:
    """Accepted (250): a first email makes the invitation sent and plans its first reminder; a
    reminder counts, and plans the next one unless the reminders were stopped meanwhile."""
    invitation, days = job.invitation, list(job.campaign.reminder_days or [])
    common = {
        "attempts": tries,
        "last_smtp_reply": "250 accepted",
        "last_sent_at": now,
        "next_attempt_at": None,
    }
    if not job.reminder:
        parameters = {
            "job_id": invitation.id,
            "job_tries": tries,
            "job_now": now,
            "job_message_id": message_id,
            "job_next_reminder_at": next_reminder_after(now, days, 0, now),
        }
        if connection is None:
            db.session.execute(_FIRST_SENT, parameters)
            db.session.commit()
        else:
            connection.run(("first_sent",), parameters).close()
            connection.commit()
        job.recorded = True
        return
    sent = invitation.reminders_sent + 1
    following = next_reminder_after(invitation.sent_at or now, days, sent, now)
    _update(
        job,
        connection=connection.core if connection else None,
        reminders_sent=Invitation.__table__.c.reminders_sent + 1,
        next_reminder_at=_keep_unless_stopped(following),
        **common,
    )


def _record_temporary(
    job: _Job, tries: int, code: int, reply: bytes | str, now: datetime, summary: SendSummary
) -> None:
    """A temporary refusal (4xx): try again after retry_delay(tries); after SEND_MAX_ATTEMPTS
    tries an invitation fails with the last reply, and a reminder is given up."""
    text = f"{code} {_text(reply)}"[:500]
    if tries >= current_app.config["SEND_MAX_ATTEMPTS"]:
        _record_failed(job, tries, code, reply, summary)
        return
    retry_at = now + retry_delay(tries)
    common = {"attempts": tries, "last_smtp_reply": text, "next_attempt_at": retry_at}
    if job.reminder:
        _update(job, next_reminder_at=_keep_unless_stopped(retry_at), **common)
    else:
        _update(job, status=InvitationStatus.QUEUED, lease_expires_at=None, **common)
    summary.deferred += 1
    log.info("invitation %s refused for now (%s): next try at %s", job.invitation.id, text, retry_at)


def _record_failed(
    job: _Job, tries: int, code: int, reply: bytes | str, summary: SendSummary, *, bad_address: bool = False
) -> None:
    """A permanent refusal (5xx), or a temporary one tried SEND_MAX_ATTEMPTS times. A recipient
    refused as a bad address (enhanced status 5.1.x) is a hard bounce and is suppressed: it is
    never tried again, in any campaign. A refused reminder ends the reminders; the invitation
    it follows stays sent."""
    text = f"{code} {_text(reply)}"[:500]
    values = {"attempts": tries, "last_smtp_reply": text, "next_attempt_at": None, "next_reminder_at": None}
    if not job.reminder:
        values.update(status=InvitationStatus.FAILED, lease_expires_at=None)
    if bad_address:
        values["status"] = InvitationStatus.BOUNCED
        suppressions.suppress(job.customer.email, SuppressionReason.HARD_BOUNCE, utcnow(), note=text)
    _update(job, **values)
    summary.failed += 1
    summary.failed_in_a_row += 1
    summary.last_failure = text[:200]


def _record_stopped(job: _Job, summary: SendSummary) -> None:
    """Suppressed (or, for a reminder, no longer to be reminded) by the time its turn came."""
    if job.reminder:
        _update(job, next_reminder_at=None)
    else:
        _update(
            job,
            status=InvitationStatus.SUPPRESSED,
            lease_expires_at=None,
            next_attempt_at=None,
            next_reminder_at=None,
        )
    summary.suppressed += 1


def _record_released(job: _Job, reply: str, now: datetime) -> None:
    """Give a claimed message back at once after a failure of the connection, not the recipient."""
    if job.reminder:
        _update(job, last_smtp_reply=reply[:500], next_reminder_at=_keep_unless_stopped(now))
    else:
        _update(job, status=InvitationStatus.QUEUED, last_smtp_reply=reply[:500], lease_expires_at=None)
    log.warning("invitation %s given back: %s", job.invitation.id, reply)


def _release_unsent(batch: list[_Job], now: datetime) -> None:
    """Return the messages of an interrupted batch that were not sent to the queue at once."""
    db.session.rollback()
    unsent = [job.invitation.id for job in batch if not job.recorded]
    if not unsent:
        return
    if batch[0].reminder:
        statement = _still_claimed(unsent, reminder=True).values(next_reminder_at=now)
    else:
        statement = _still_claimed(unsent, reminder=False).values(
            status=InvitationStatus.QUEUED, lease_expires_at=None
        )
    db.session.execute(statement.execution_options(synchronize_session=False))
    db.session.commit()


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


@dataclass
class TickSummary:
    """What one tick did."""

    requeued: int = 0
    reminders: SendSummary | None = None
    retries_due: int = 0
    retries_sent: int = 0
    enqueued: bool = False

    def line(self) -> str:
        if self.enqueued:
            return (
                f"{self.requeued} stale claims requeued, due reminders handed to the worker, "
                f"{self.retries_due} retries due (handed to the worker)"
            )
        reminders = self.reminders or SendSummary()
        paused = f"; stopped: {reminders.paused_reason}" if reminders.paused_reason else ""
        return (
            f"{self.requeued} stale claims requeued, {reminders.sent} reminders sent, "
            f"{self.retries_due} retries due ({self.retries_sent} sent){paused}"
        )


def campaigns_with_due_retries(now: datetime) -> dict[int, int]:
    """Sending campaigns with invitations whose retry time has come: {campaign id: how many}."""
    rows = db.session.execute(
        sa.select(Invitation.campaign_id, sa.func.count())
        .join(Campaign, Campaign.id == Invitation.campaign_id)
        .where(
            Campaign.status == CampaignStatus.SENDING,
            Invitation.status == InvitationStatus.QUEUED,
            Invitation.next_attempt_at <= now,
        )
        .group_by(Invitation.campaign_id)
    ).all()
    db.session.commit()
    return dict(rows)  # type: ignore[arg-type]


def tick(*, clock: Callable[[], datetime] = utcnow, enqueue: bool = False) -> TickSummary:
    """Periodic upkeep, safe to run at any time and from several machines: stale claims go back
    to the queue, due reminders are sent, and campaigns with retries due send them. With
    `enqueue`, the sending is handed to background workers instead of done here."""
    now = clock()
    unsubscribe.apply_pending(now=now)  # kept while the database was busy: before any reminder
    summary = TickSummary(requeued=requeue_expired_claims(now=now))
    due = campaigns_with_due_retries(now)
    summary.retries_due = sum(due.values())
    if enqueue:
        celery = current_app.extensions["celery"]
        celery.send_task(SEND_REMINDERS)
        for campaign_id in due:
            celery.send_task(SEND_CAMPAIGN, args=[campaign_id])
        summary.enqueued = True
        return summary
    summary.reminders = send_due_reminders(clock=clock)
    for campaign_id in due:
        try:
            summary.retries_sent += send_campaign(campaign_id, clock=clock).sent
        except InvalidInput:  # paused meanwhile
            continue
    return summary


@dataclass
class WaitingRetry:
    """An invitation refused for now, waiting for its next try."""

    id: int
    email: str
    attempts: int
    reply: str
    next_attempt_at: datetime


@dataclass
class SendProgress:
    """How far a campaign's sending got, for its page."""

    total: int
    done: int
    sent_last_minute: int
    reminders_sent: int
    reminders_due: int
    reminders_planned: int
    retries: list[WaitingRetry]
    retries_waiting: int
    sending_now: int

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0


def send_progress(campaign_id: int, *, now: datetime, retries_shown: int = 20) -> SendProgress:
    """Progress of a campaign: invitations done (sent, failed, bounced or suppressed) of all,
    messages in the last minute (first sends and reminders), reminders sent, due and planned,
    and the invitations waiting to retry with their next try (soonest first)."""
    counts = status_counts(campaign_id)
    finished = (
        InvitationStatus.SENT,
        InvitationStatus.FAILED,
        InvitationStatus.BOUNCED,
        InvitationStatus.SUPPRESSED,
    )
    of_campaign = Invitation.campaign_id == campaign_id
    row = db.session.execute(
        sa.select(
            sa.func.count().filter(Invitation.last_sent_at >= now - timedelta(minutes=1)),
            sa.func.coalesce(sa.func.sum(Invitation.reminders_sent), 0),
            sa.func.count().filter(Invitation.next_reminder_at <= now),
            sa.func.count().filter(Invitation.next_reminder_at > now),
            sa.func.count().filter(
                Invitation.status == InvitationStatus.QUEUED, Invitation.next_attempt_at.is_not(None)
            ),
            sa.func.count().filter(
                Invitation.status == InvitationStatus.QUEUED, Invitation.next_attempt_at > now
            ),
        ).where(of_campaign)
    ).one()
    retries = [
        WaitingRetry(*retry)
        for retry in db.session.execute(
            sa.select(
                Invitation.id,
                Customer.email,
                Invitation.attempts,
                Invitation.last_smtp_reply,
                Invitation.next_attempt_at,
            )
            .join(Customer, Customer.id == Invitation.customer_id)
            .where(
                of_campaign,
                Invitation.status == InvitationStatus.QUEUED,
                Invitation.next_attempt_at.is_not(None),
            )
            .order_by(Invitation.next_attempt_at, Invitation.id)
            .limit(retries_shown)
        )
    ]
    return SendProgress(
        total=sum(counts.values()),
        done=sum(counts[status] for status in finished),
        sent_last_minute=row[0],
        reminders_sent=row[1],
        reminders_due=row[2],
        reminders_planned=row[3],
        retries=retries,
        retries_waiting=row[4],
        # Being sent, or queued with no wait ahead: what a refreshing page would see move.
        sending_now=counts[InvitationStatus.SENDING] + counts[InvitationStatus.QUEUED] - row[5],
    )
