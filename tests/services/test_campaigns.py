"""Campaigns: the audience, invitations queued set-based, and sending over real SMTP."""

from __future__ import annotations

import asyncio
import re
import smtplib
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.exceptions import InvalidInput
from app.extensions import db
from app.models import CampaignStatus, Invitation, InvitationStatus, SuppressionReason, utcnow
from app.services import campaigns, suppressions
from tests.conftest import free_port
from tests.factories import make_customer


def invitations(campaign_id: int) -> dict[str, Invitation]:
    db.session.rollback()  # end the read snapshot: see what the app wrote since
    rows = db.session.scalars(sa.select(Invitation).where(Invitation.campaign_id == campaign_id))
    return {row.customer.email: row for row in rows}


def test_the_audience_is_lapsed_unsuppressed_customers_only(app):
    make_customer("lapsed@example.com", days_since_purchase=200)
    make_customer("recent@example.com", days_since_purchase=30)
    make_customer("never-bought@example.com", days_since_purchase=None)
    make_customer("gone@example.com", days_since_purchase=400)
    suppressions.suppress("gone@example.com", SuppressionReason.UNSUBSCRIBED, utcnow())
    db.session.commit()

    campaign, queued = campaigns.create_campaign(name="Spring", lapsed_days=180, now=utcnow())
    assert queued == 1
    assert set(invitations(campaign.id)) == {"lapsed@example.com"}
    assert campaign.status == CampaignStatus.DRAFT


def test_limit_takes_the_biggest_spenders_first(app):
    make_customer("small@example.com", total_spent=1_000)
    make_customer("big@example.com", total_spent=90_000)
    make_customer("medium@example.com", total_spent=20_000)
    campaign, queued = campaigns.create_campaign(name="Top", lapsed_days=180, limit=2, now=utcnow())
    assert queued == 2
    assert set(invitations(campaign.id)) == {"big@example.com", "medium@example.com"}


def test_each_invitation_has_its_own_opaque_reference_and_nonce(app):
    for _ in range(3):
        make_customer()
    campaign, _ = campaigns.create_campaign(name="Refs", lapsed_days=180, now=utcnow())
    rows = list(invitations(campaign.id).values())
    assert len({row.reference for row in rows}) == 3
    assert len({row.nonce for row in rows}) == 3
    assert all(re.fullmatch(r"[0-9a-f]{32}", row.reference) for row in rows)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": " "}, "needs a name"),
        ({"lapsed_days": 0}, "at least 1"),
        ({"subject": "Hello\r\nBcc: everyone@example.com"}, "single line"),
        ({"limit": 0}, "at least 1"),
    ],
)
def test_bad_campaign_input_is_refused_with_a_message(app, options, message):
    arguments = {"name": "Ok", "lapsed_days": 180, "now": utcnow(), **options}
    with pytest.raises(InvalidInput, match=message):
        campaigns.create_campaign(**arguments)
    assert campaigns.list_campaigns() == []


def test_sending_delivers_one_message_each_and_a_second_run_sends_nothing(app, smtp):
    make_customer("ada@example.com", first_name="Ada")
    make_customer("grace@example.com", first_name="Grace")
    campaign, _ = campaigns.create_campaign(name="Send", lapsed_days=180, now=utcnow())

    first = campaigns.send_campaign(campaign.id)
    second = campaigns.send_campaign(campaign.id)

    assert (first.sent, second.sent) == (2, 0)
    assert len(smtp.messages) == 2
    rows = invitations(campaign.id)
    assert {row.status for row in rows.values()} == {InvitationStatus.SENT}
    assert all(row.message_id and row.sent_at for row in rows.values())
    assert campaigns.get_campaign(campaign.id).status == CampaignStatus.SENT


def test_the_email_has_both_parts_the_unsubscribe_headers_and_the_footer(app, smtp):
    app.config["MAIL_UNSUBSCRIBE_ADDRESS"] = "unsubscribe@example.com"
    make_customer("ada@example.com", first_name="Ada")
    campaign, _ = campaigns.create_campaign(
        name="Headers", lapsed_days=180, subject="We miss you", now=utcnow()
    )
    campaigns.send_campaign(campaign.id)
    (message,) = smtp.messages
    assert message["Subject"] == "We miss you"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https_link, mailto = re.findall(r"<([^>]+)>", message["List-Unsubscribe"])
    assert https_link.startswith("http://localhost/u/")
    assert mailto == "mailto:unsubscribe@example.com?subject=unsubscribe"
    assert re.fullmatch(r".+ <campaign-\d+\.example\.com>", message["List-Id"])
    assert message["Message-ID"] == invitations(campaign.id)["ada@example.com"].message_id
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    for part in (text, html):
        assert "Test Shop" in part
        assert "1 Test Street, Testville" in part
        assert "/u/" in part
        assert "/s/" in part
    assert "ada@example.com" not in re.search(r"/s/(\S+)", text).group(1)


def test_an_address_suppressed_after_queueing_is_not_sent(app, smtp):
    make_customer("ada@example.com")
    make_customer("grace@example.com")
    campaign, _ = campaigns.create_campaign(name="Late", lapsed_days=180, now=utcnow())
    suppressions.suppress("grace@example.com", SuppressionReason.UNSUBSCRIBED, utcnow())
    db.session.commit()

    summary = campaigns.send_campaign(campaign.id)

    assert (summary.sent, summary.suppressed) == (1, 1)
    assert [str(m["To"]) for m in smtp.messages] == ["Ada Lovelace <ada@example.com>"]
    assert invitations(campaign.id)["grace@example.com"].status == InvitationStatus.SUPPRESSED


def test_a_hard_bounce_fails_that_invitation_suppresses_the_address_and_the_rest_are_sent(app, smtp):
    smtp.refuse.append(("bad@", "550 5.1.1 No such user"))
    make_customer("bad@example.com")
    make_customer("good@example.com")
    campaign, _ = campaigns.create_campaign(name="Bounce", lapsed_days=180, now=utcnow())

    summary = campaigns.send_campaign(campaign.id)

    assert (summary.sent, summary.failed) == (1, 1)
    rows = invitations(campaign.id)
    assert rows["bad@example.com"].status == InvitationStatus.BOUNCED
    assert rows["bad@example.com"].last_smtp_reply == "550 5.1.1 No such user"
    assert rows["good@example.com"].status == InvitationStatus.SENT
    assert suppressions.is_suppressed("bad@example.com")
    assert not suppressions.is_suppressed("good@example.com")


def test_a_permanent_refusal_that_is_not_a_bad_address_fails_without_suppressing(app, smtp):
    smtp.refuse.append(("policy@", "550 5.7.1 Message rejected by policy"))
    make_customer("policy@example.com")
    campaign, _ = campaigns.create_campaign(name="Policy", lapsed_days=180, now=utcnow())

    summary = campaigns.send_campaign(campaign.id)

    assert summary.failed == 1
    row = invitations(campaign.id)["policy@example.com"]
    assert row.status == InvitationStatus.FAILED
    assert row.attempts == 1
    assert not suppressions.is_suppressed("policy@example.com")


def test_when_the_mail_server_is_down_nothing_is_lost(app):
    app.extensions["mail"].port = free_port()  # nothing listens there
    make_customer("ada@example.com")
    make_customer("grace@example.com")
    campaign, _ = campaigns.create_campaign(name="Down", lapsed_days=180, now=utcnow())

    with pytest.raises(ConnectionRefusedError):
        campaigns.send_campaign(campaign.id)

    assert {row.status for row in invitations(campaign.id).values()} == {InvitationStatus.QUEUED}
    assert campaigns.count_queued(campaign.id) == 2


def test_a_server_that_closes_the_connection_stops_the_run_and_loses_nothing(app, smtp):
    for number in range(3):
        make_customer(f"c{number}@example.com")
    campaign, _ = campaigns.create_campaign(name="Drop", lapsed_days=180, now=utcnow())
    smtp.refuse.append(("c1@", "421 4.7.0 Closing connection"))

    with pytest.raises(smtplib.SMTPServerDisconnected):
        campaigns.send_campaign(campaign.id)

    rows = invitations(campaign.id)
    assert rows["c0@example.com"].status == InvitationStatus.SENT
    # The 421 counts as a temporary refusal of the invitation being sent: it waits to retry.
    assert rows["c1@example.com"].status == InvitationStatus.QUEUED
    assert rows["c1@example.com"].last_smtp_reply.startswith("421")
    assert rows["c1@example.com"].attempts == 1
    assert rows["c1@example.com"].next_attempt_at is not None
    assert rows["c2@example.com"].status == InvitationStatus.QUEUED
    assert rows["c2@example.com"].next_attempt_at is None
    assert campaigns.count_queued(campaign.id) == 2


def test_a_refused_sender_address_stops_the_run_and_suppresses_no_customer(app, smtp):
    smtp.refuse_sender = "553 5.1.8 Sender address rejected"
    make_customer("ada@example.com")
    make_customer("grace@example.com")
    campaign, _ = campaigns.create_campaign(name="Sender", lapsed_days=180, now=utcnow())

    with pytest.raises(smtplib.SMTPSenderRefused):
        campaigns.send_campaign(campaign.id)

    rows = invitations(campaign.id)
    assert {row.status for row in rows.values()} == {InvitationStatus.QUEUED}
    assert "5.1.8" in rows["ada@example.com"].last_smtp_reply
    assert not suppressions.is_suppressed("ada@example.com")
    assert not suppressions.is_suppressed("grace@example.com")


def test_too_many_refusals_in_a_row_pause_the_campaign_with_the_reason(app, smtp):
    app.config["SEND_MAX_CONSECUTIVE_FAILURES"] = 2
    smtp.refuse.append(("@example.com", "550 5.7.1 Relaying denied"))
    for number in range(4):
        make_customer(f"c{number}@example.com")
    campaign, _ = campaigns.create_campaign(name="Refused", lapsed_days=180, now=utcnow())

    summary = campaigns.send_campaign(campaign.id)

    assert summary.failed == 2
    assert "2 invitations in a row were refused" in summary.paused_reason
    assert "550 5.7.1 Relaying denied" in summary.paused_reason
    paused = campaigns.get_campaign(campaign.id)
    db.session.refresh(paused)
    assert paused.status == CampaignStatus.PAUSED
    assert campaigns.count_queued(campaign.id) == 2
    with pytest.raises(InvalidInput, match="is paused"):
        campaigns.send_campaign(campaign.id)


def test_a_refused_login_pauses_the_campaign_and_sends_nothing(app, smtp):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from tests.conftest import free_port

    port = free_port()
    strict = Controller(
        smtp,
        hostname="127.0.0.1",
        port=port,
        auth_require_tls=False,
        authenticator=lambda *args: AuthResult(success=False, handled=False),
    )
    strict.start()
    try:
        mail = app.extensions["mail"]
        mail.port, mail.username, mail.password = port, "shop", "wrong password"
        make_customer("ada@example.com")
        campaign, _ = campaigns.create_campaign(name="Login", lapsed_days=180, now=utcnow())

        summary = campaigns.send_campaign(campaign.id)
    finally:
        strict.stop()

    assert summary.sent == 0
    assert "refused Winback's login (535" in summary.paused_reason
    assert smtp.messages == []
    db.session.rollback()
    assert campaigns.get_campaign(campaign.id).status == CampaignStatus.PAUSED
    assert campaigns.count_queued(campaign.id) == 1


def test_resuming_lets_the_campaign_send_again(app, smtp):
    make_customer("ada@example.com")
    campaign, _ = campaigns.create_campaign(name="Resume", lapsed_days=180, now=utcnow())
    campaigns.pause_campaign(campaign.id, reason="Paused by staff.", actor_id=None, now=utcnow())
    with pytest.raises(InvalidInput, match="is paused"):
        campaigns.send_campaign(campaign.id)

    waiting = campaigns.resume_campaign(campaign.id, actor_id=None, now=utcnow(), enqueue=False)

    assert waiting == 1
    assert campaigns.send_campaign(campaign.id).sent == 1
    assert len(smtp.messages) == 1


def test_tick_requeues_claims_whose_lease_ran_out_and_nothing_else(app, smtp):
    for number in range(3):
        make_customer(f"c{number}@example.com")
    campaign, _ = campaigns.create_campaign(name="Tick", lapsed_days=180, now=utcnow())
    rows = list(invitations(campaign.id).values())
    now = utcnow()
    rows[0].status, rows[0].lease_expires_at = InvitationStatus.SENDING, now - timedelta(seconds=1)
    rows[1].status, rows[1].lease_expires_at = InvitationStatus.SENDING, now + timedelta(minutes=5)
    db.session.commit()

    assert campaigns.requeue_expired_claims(now=now) == 1

    statuses = sorted(row.status for row in invitations(campaign.id).values())
    assert statuses == [InvitationStatus.QUEUED, InvitationStatus.QUEUED, InvitationStatus.SENDING]


class _FaultySink:
    """An SMTP server that stalls, or drops the connection after DATA, instead of answering."""

    def __init__(self, fault: str) -> None:
        self.fault = fault

    async def handle_DATA(self, server, session, envelope):
        if self.fault == "stall":
            await asyncio.sleep(5)
        else:
            server.transport.abort()
        return "250 Message accepted for delivery"


@pytest.mark.parametrize("fault", ["stall", "drop-after-data"])
def test_a_server_that_stalls_or_drops_after_data_stops_the_run_and_loses_nothing(app, fault):
    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(_FaultySink(fault), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        app.extensions["mail"].port = port
        app.config["MAIL_TIMEOUT_SECONDS"] = 1
        make_customer("ada@example.com")
        make_customer("grace@example.com")
        campaign, _ = campaigns.create_campaign(name=fault, lapsed_days=180, now=utcnow())
        started = time.monotonic()
        with pytest.raises((smtplib.SMTPException, OSError)):
            campaigns.send_campaign(campaign.id)
        assert time.monotonic() - started < 4  # the socket timeout ended the wait
    finally:
        controller.stop()
    # No 250 came back: nothing counts as sent, and everything waits in the queue for a retry.
    assert {row.status for row in invitations(campaign.id).values()} == {InvitationStatus.QUEUED}
