"""Temporary refusals (4xx) retried with exponential backoff and capped attempts, and the send
pace (SEND_RATE_PER_MINUTE) kept across senders, against real SMTP servers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from app.extensions import db
from app.models import CampaignStatus, Invitation, InvitationStatus, SendSlot, utcnow
from app.services import campaigns, pacing
from tests.conftest import free_port
from tests.factories import make_customer


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


def invitations(campaign_id: int) -> dict[str, Invitation]:
    db.session.rollback()  # end the read snapshot: see what the app wrote since
    rows = db.session.scalars(sa.select(Invitation).where(Invitation.campaign_id == campaign_id))
    return {row.customer.email: row for row in rows}


def test_a_temporary_refusal_waits_its_backoff_then_is_sent_and_the_rest_go_at_once(app, smtp):
    make_customer("ada@example.com")
    make_customer("temp@example.com")
    make_customer("zed@example.com")
    smtp.refuse.append(("temp@", "451 4.3.0 Try again later"))
    campaign, _ = campaigns.create_campaign(name="Temp", lapsed_days=180, now=utcnow())
    clock = Clock()
    began = clock.now

    summary = campaigns.send_campaign(campaign.id, clock=clock)

    assert (summary.sent, summary.deferred) == (2, 1)
    temp = invitations(campaign.id)["temp@example.com"]
    assert temp.status == InvitationStatus.QUEUED
    assert temp.attempts == 1
    assert temp.last_smtp_reply == "451 4.3.0 Try again later"
    assert temp.next_attempt_at == began + timedelta(seconds=60)
    # Still to send: the campaign keeps sending until the retry is done.
    assert campaigns.get_campaign(campaign.id).status == CampaignStatus.SENDING

    clock.advance(seconds=59)
    assert campaigns.send_campaign(campaign.id, clock=clock).sent == 0  # not due yet

    # Refused again: the wait doubles.
    clock.advance(seconds=1)
    assert campaigns.send_campaign(campaign.id, clock=clock).deferred == 1
    temp = invitations(campaign.id)["temp@example.com"]
    assert (temp.attempts, temp.next_attempt_at) == (2, clock.now + timedelta(seconds=120))

    smtp.refuse.clear()
    clock.advance(seconds=120)
    assert campaigns.send_campaign(campaign.id, clock=clock).sent == 1
    temp = invitations(campaign.id)["temp@example.com"]
    assert (temp.status, temp.attempts, temp.next_attempt_at) == (InvitationStatus.SENT, 3, None)
    assert temp.last_smtp_reply == "250 accepted"
    assert sorted(str(message["To"].addresses[0].addr_spec) for message in smtp.messages) == [
        "ada@example.com",
        "temp@example.com",
        "zed@example.com",
    ]
    db.session.rollback()
    assert campaigns.get_campaign(campaign.id).status == CampaignStatus.SENT


def test_a_recipient_refused_for_now_every_time_fails_after_the_last_attempt_with_its_reply(app, smtp):
    app.config["SEND_MAX_ATTEMPTS"] = 5
    make_customer("full@example.com")
    smtp.refuse.append(("full@", "452 4.2.2 Mailbox full"))
    campaign, _ = campaigns.create_campaign(name="Full", lapsed_days=180, now=utcnow())
    clock = Clock()

    waits = []
    for _ in range(4):
        assert campaigns.send_campaign(campaign.id, clock=clock).deferred == 1
        row = invitations(campaign.id)["full@example.com"]
        assert row.status == InvitationStatus.QUEUED
        waits.append((row.next_attempt_at - clock.now).total_seconds())
        clock.now = row.next_attempt_at
    summary = campaigns.send_campaign(campaign.id, clock=clock)

    assert waits == [60, 120, 240, 480]
    assert (summary.failed, summary.deferred) == (1, 0)
    row = invitations(campaign.id)["full@example.com"]
    assert row.status == InvitationStatus.FAILED
    assert row.attempts == 5
    assert row.last_smtp_reply == "452 4.2.2 Mailbox full"
    assert row.next_attempt_at is None
    assert smtp.messages == []
    assert [failure.reply for failure in campaigns.failed_invitations(campaign.id)] == [
        "452 4.2.2 Mailbox full"
    ]
    # Nothing is left to send: the campaign is done.
    assert campaigns.get_campaign(campaign.id).status == CampaignStatus.SENT


def test_the_backoff_doubles_up_to_an_hour(app):
    app.config["SEND_RETRY_BASE_SECONDS"] = 1000
    assert [campaigns.retry_delay(tries).total_seconds() for tries in range(1, 6)] == [
        1000,
        2000,
        3600,
        3600,
        3600,
    ]


def test_retrying_failed_invitations_gives_them_a_fresh_set_of_attempts(app, smtp):
    app.config["SEND_MAX_ATTEMPTS"] = 1
    make_customer("full@example.com")
    smtp.refuse.append(("full@", "452 4.2.2 Mailbox full"))
    campaign, _ = campaigns.create_campaign(name="Again", lapsed_days=180, now=utcnow())
    assert campaigns.send_campaign(campaign.id).failed == 1
    smtp.refuse.clear()
    campaigns.retry_failed(campaign.id, actor_id=None, now=utcnow())  # the worker is not running

    assert campaigns.send_campaign(campaign.id).sent == 1
    row = invitations(campaign.id)["full@example.com"]
    assert (row.status, row.attempts) == (InvitationStatus.SENT, 1)


def test_the_tick_sends_retries_whose_time_has_come(app, smtp, runner):
    make_customer("temp@example.com")
    smtp.refuse.append(("temp@", "451 4.3.0 Try again later"))
    campaign, _ = campaigns.create_campaign(name="Tick", lapsed_days=180, now=utcnow())
    campaigns.send_campaign(campaign.id)
    smtp.refuse.clear()

    assert campaigns.tick().retries_due == 0  # the minute has not passed
    summary = campaigns.tick(clock=lambda: utcnow() + timedelta(seconds=61))

    assert (summary.retries_due, summary.retries_sent) == (1, 1)
    assert summary.line() == "0 stale claims requeued, 0 reminders sent, 1 retries due (1 sent)"
    assert invitations(campaign.id)["temp@example.com"].status == InvitationStatus.SENT
    assert len(smtp.messages) == 1


# --- the send pace ------------------------------------------------------------------------


class TimingSink:
    """An SMTP server that accepts everything and records when each message arrived."""

    def __init__(self) -> None:
        self.arrived: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.arrived.append((time.monotonic(), envelope.rcpt_tos[0]))
        return "250 Message accepted for delivery"


@pytest.fixture
def timing_sink(app):
    sink = TimingSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    app.extensions["mail"].port = port
    yield sink
    controller.stop()


# Scheduling jitter allowed on the total time (threads, the GIL, the sink's event loop, a busy
# machine).
JITTER = 0.05


def test_two_senders_sharing_a_rate_never_exceed_it(app, timing_sink):
    """600 a minute is 10 a second: no one-second window holds more than 10 arrivals, allowing
    one more for an arrival on the window's closing boundary (a message sent a little late for
    its slot next to one sent on time)."""
    app.config["SEND_RATE_PER_MINUTE"] = 600
    count = 30
    for number in range(count):
        make_customer(f"c{number:02d}@example.com")
    campaign_id = campaigns.create_campaign(name="Paced", lapsed_days=180, now=utcnow())[0].id
    errors: list[BaseException] = []
    sent_by: list[int] = []
    barrier = threading.Barrier(2)

    def sender() -> None:
        with app.app_context():
            try:
                barrier.wait()
                sent_by.append(campaigns.send_campaign(campaign_id).sent)
            except BaseException as exc:  # reported below, with the test's own assertion
                errors.append(exc)

    # Small batches, so both senders take turns on the one campaign.
    original = campaigns.CLAIM_BATCH
    campaigns.CLAIM_BATCH = 5
    try:
        threads = [threading.Thread(target=sender) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        campaigns.CLAIM_BATCH = original

    assert errors == []
    assert min(sent_by) > 0  # both senders sent
    assert sum(sent_by) == count
    times = sorted(moment for moment, _ in timing_sink.arrived)
    assert len(times) == count
    assert len({address for _, address in timing_sink.arrived}) == count
    # 12 arrivals in a row span more than one second (eleven gaps of 100 ms).
    spans = [times[index + 11] - times[index] for index in range(count - 11)]
    assert min(spans) > 1.0, spans
    # The pace, not the server, set the total time: 29 gaps of 100 ms.
    assert times[-1] - times[0] >= 2.9 - JITTER


def test_without_a_rate_messages_go_as_fast_as_the_server_takes_them(app, timing_sink):
    for number in range(20):
        make_customer(f"c{number:02d}@example.com")
    campaign, _ = campaigns.create_campaign(name="Fast", lapsed_days=180, now=utcnow())

    campaigns.send_campaign(campaign.id)

    times = sorted(moment for moment, _ in timing_sink.arrived)
    assert len(times) == 20
    assert times[-1] - times[0] < 1.9  # faster than 600 a minute would allow
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SendSlot)) == 0


def test_slots_are_handed_out_one_interval_apart_and_never_in_the_past(app):
    gap = timedelta(seconds=2)
    clock = Clock()
    first, wait_first = pacing.reserve_slot(gap, clock=clock)
    second, wait_second = pacing.reserve_slot(gap, clock=clock)
    clock.advance(seconds=10)  # idle for a while: the next slot is now, not in the past
    third, wait_third = pacing.reserve_slot(gap, clock=clock)

    if db.engine.dialect.name == "sqlite":  # the process's clock; PostgreSQL uses its own
        assert (first, second, third) == (clock.now - timedelta(seconds=10), first + gap, clock.now)
        assert (wait_first, wait_second, wait_third) == (0, 2, 0)
    else:
        assert second == first + gap
        assert 1.5 < wait_second <= 2
    assert db.session.scalar(sa.select(SendSlot.next_at)) == third + gap


def test_a_slow_pace_keeps_the_claims_of_the_batch_alive(app, timing_sink):
    """At one message every half second, a one-second lease would run out mid-batch and let
    another sender take the rest: the sender keeps them claimed as it goes."""
    app.config["SEND_RATE_PER_MINUTE"] = 120
    app.config["SEND_LEASE_SECONDS"] = 1
    for number in range(5):
        make_customer(f"c{number}@example.com")
    campaign, _ = campaigns.create_campaign(name="Slow", lapsed_days=180, now=utcnow())
    expired: list[int] = []

    def check_leases(_done: int) -> None:
        now = utcnow()
        rows = db.session.execute(
            sa.select(Invitation.id, Invitation.lease_expires_at).where(
                Invitation.campaign_id == campaign.id, Invitation.status == InvitationStatus.SENDING
            )
        ).all()
        db.session.commit()
        expired.extend(row.id for row in rows if row.lease_expires_at <= now)

    summary = campaigns.send_campaign(campaign.id, progress=check_leases)

    assert summary.sent == 5
    assert expired == []
    assert len(timing_sink.arrived) == 5


class RefuseDataOnce:
    """An SMTP server that answers the first message's DATA with 451, then accepts."""

    def __init__(self) -> None:
        self.accepted: list[str] = []
        self.refused = 0

    async def handle_DATA(self, server, session, envelope):
        if not self.refused:
            self.refused += 1
            return "451 4.7.1 Greylisted, come back later"
        self.accepted.extend(envelope.rcpt_tos)
        return "250 Message accepted for delivery"


def test_a_message_refused_for_now_after_data_is_retried_and_the_run_goes_on(app):
    sink = RefuseDataOnce()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        app.extensions["mail"].port = port
        make_customer("a@example.com")
        make_customer("b@example.com")
        campaign, _ = campaigns.create_campaign(name="Grey", lapsed_days=180, now=utcnow())
        clock = Clock()

        first = campaigns.send_campaign(campaign.id, clock=clock)
        row = invitations(campaign.id)["a@example.com"]
        assert (first.sent, first.deferred) == (1, 1)
        assert (row.status, row.last_smtp_reply) == (
            InvitationStatus.QUEUED,
            "451 4.7.1 Greylisted, come back later",
        )

        clock.advance(seconds=60)
        assert campaigns.send_campaign(campaign.id, clock=clock).sent == 1
    finally:
        controller.stop()
    assert sorted(sink.accepted) == ["a@example.com", "b@example.com"]
