"""Several senders on one campaign: every invitation is sent exactly once (RELIABILITY 30)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa
from aiosmtpd.controller import Controller

from app.extensions import db
from app.models import Customer, Invitation, InvitationStatus, SuppressionReason, utcnow
from app.services import campaigns, suppressions
from tests.conftest import free_port

INVITATIONS = 1000


def make_audience(count: int) -> int:
    """`count` lapsed customers, inserted in one statement, and a campaign for them all."""
    now = utcnow()
    rows = []
    for number in range(count):
        email = f"c{number:04d}@example.com"
        rows.append(
            {
                "email": email,
                "email_hash": suppressions.email_hash(email),
                "first_name": "C",
                "last_name": str(number),
                "phone": "",
                "preferred_contact": "email",
                "orders_count": 1,
                "total_spent": 1000,
                "currency": "GBP",
                "status": "active",
                "last_purchase_at": now.replace(year=now.year - 2),
                "created_at": now,
                "updated_at": now,
                "soft_bounce_count": 0,
            }
        )
    db.session.execute(sa.insert(Customer.__table__), rows)
    db.session.commit()
    campaign, queued = campaigns.create_campaign(name="Race", lapsed_days=180, now=now)
    assert queued == count
    return campaign.id


def test_two_senders_on_one_campaign_send_each_invitation_exactly_once(app, smtp):
    campaign_id = make_audience(INVITATIONS)
    db.session.commit()
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

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert errors == []
    assert len(sent_by) == 2
    assert min(sent_by) > 0  # both senders really took part
    assert sum(sent_by) == INVITATIONS
    arrived = Counter(str(message["To"].addresses[0].addr_spec) for message in smtp.messages)
    assert len(arrived) == INVITATIONS
    assert set(arrived.values()) == {1}
    db.session.rollback()
    statuses = db.session.execute(
        sa.select(Invitation.status, sa.func.count())
        .where(Invitation.campaign_id == campaign_id)
        .group_by(Invitation.status)
    ).all()
    assert statuses == [(InvitationStatus.SENT, INVITATIONS)]


class SlowSink:
    """An SMTP server that takes its time over each message, so a sender can be killed mid-batch."""

    def __init__(self) -> None:
        self.arrived: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.03)
        self.arrived.extend(envelope.rcpt_tos)
        return "250 Message accepted for delivery"


def test_a_sender_killed_mid_batch_loses_nothing(app, database, tmp_path):
    """SIGKILL a `flask campaigns send` process mid-batch; once its lease runs out, the next run
    sends the rest. At most the message in flight is sent twice; none is lost."""
    count = 150
    campaign_id = make_audience(count)
    sink = SlowSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    if database["name"] == "postgresql":
        url = f"{database['url']}?options=-csearch_path%3D{database['schema']}"
    else:
        url = app.config["SQLALCHEMY_DATABASE_URI"]
    env = {
        **os.environ,
        "WINBACK_ENV": "development",
        "WINBACK_INSTANCE_PATH": str(tmp_path / "sender"),
        "DATABASE_URL": url,
        "SECRET_KEY": app.config["SECRET_KEY"],
        "MAIL_BACKEND": "smtp",
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(port),
        "SEND_LEASE_SECONDS": "2",
    }
    root = Path(__file__).resolve().parents[2]
    try:
        sender = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "campaigns", "send", str(campaign_id)],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while len(sink.arrived) < 30:
            assert time.monotonic() < deadline, "the sender never got going"
            assert sender.poll() is None, "the sender finished before it could be killed"
            time.sleep(0.01)
        sender.send_signal(signal.SIGKILL)
        sender.wait(timeout=10)
        killed_at = len(sink.arrived)
        assert killed_at < count

        time.sleep(2.5)  # the dead sender's lease runs out
        app.extensions["mail"].port = port
        db.session.rollback()
        campaigns.send_campaign(campaign_id)
    finally:
        controller.stop()

    arrived = Counter(sink.arrived)
    assert set(arrived) == {f"c{number:04d}@example.com" for number in range(count)}  # none lost
    assert sum(arrived.values()) - count <= 1  # at most the one in flight, twice
    db.session.rollback()
    assert campaigns.count_queued(campaign_id) == 0


class WatchingSink:
    """An SMTP server that runs `watch(number, recipient)` (in its own thread, with its own app
    context) when the data of its `number`-th message has arrived, before it answers."""

    def __init__(self, app, watch) -> None:
        self.app = app
        self.watch = watch
        self.arrived: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        with self.app.app_context():
            try:
                self.watch(len(self.arrived) + 1, envelope.rcpt_tos[0])
            finally:
                db.session.remove()
        self.arrived.extend(envelope.rcpt_tos)
        return "250 Message accepted for delivery"


def send_with(app, sink, campaign_id: int) -> campaigns.SendSummary:
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    app.extensions["mail"].port = port
    try:
        return campaigns.send_campaign(campaign_id)
    finally:
        controller.stop()


def test_each_250_is_committed_before_the_next_message_goes(app):
    """At most one message is sent and not recorded at any time (RELIABILITY 30): when the data
    of message n arrives, the n - 1 before it are already recorded as sent."""
    campaign_id = make_audience(120)  # more than two claimed batches
    seen: list[tuple[int, int]] = []

    def count_sent(number: int, _recipient: str) -> None:
        sent = db.session.scalar(
            sa.select(sa.func.count()).where(
                Invitation.campaign_id == campaign_id, Invitation.status == InvitationStatus.SENT
            )
        )
        seen.append((number, sent))

    summary = send_with(app, WatchingSink(app, count_sent), campaign_id)

    assert summary.sent == 120
    assert seen == [(number, number - 1) for number in range(1, 121)]


def test_an_unsubscribe_during_the_previous_message_stops_the_next(app):
    """The next message is composed while the server takes this one; an unsubscribe that lands
    meanwhile still stops it (RELIABILITY 25)."""
    campaign_id = make_audience(60)

    def unsubscribe_the_next(_number: int, recipient: str) -> None:
        following = {"c0009@example.com": "c0010@example.com", "c0049@example.com": "c0050@example.com"}
        if recipient in following:  # within a batch, and the first of the next batch
            suppressions.suppress(following[recipient], SuppressionReason.UNSUBSCRIBED, utcnow())
            db.session.commit()

    sink = WatchingSink(app, unsubscribe_the_next)
    summary = send_with(app, sink, campaign_id)

    assert "c0010@example.com" not in sink.arrived
    assert "c0050@example.com" not in sink.arrived
    assert (summary.sent, summary.suppressed) == (58, 2)
    assert len(set(sink.arrived)) == 58
