"""A 10,000-customer campaign, end to end, from the staff pages and the command line: created,
sent by the background worker, paused and resumed from its page, then reminded by the tick,
each customer's email arriving once at a real SMTP server."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import (
    CampaignStatus,
    ContactPreference,
    Customer,
    Invitation,
    InvitationStatus,
    StopReason,
    WouldReturn,
    utcnow,
)
from app.services import campaigns, survey
from app.services.survey import Answers
from tests.conftest import csrf_token, log_in

CUSTOMERS = 10_000
ANSWERED = 40
UNSUBSCRIBED = 30


def add_customers(count: int) -> None:
    """Lapsed customers, inserted in bulk as an import would."""
    now = utcnow()
    rows = [
        {
            "email": f"c{n:05}@example.com",
            "email_hash": f"{n:064x}",
            "first_name": f"Name{n}",
            "last_name": "",
            "phone": "",
            "preferred_contact": "email",
            "first_purchase_at": now - timedelta(days=700),
            "last_purchase_at": now - timedelta(days=200 + n % 300),
            "orders_count": 1 + n % 7,
            "total_spent": 1_000 + n,
            "currency": "GBP",
            "status": "active",
            "soft_bounce_count": 0,
            "created_at": now,
            "updated_at": now,
        }
        for n in range(count)
    ]
    db.session.execute(sa.insert(Customer), rows)
    db.session.commit()


def counts(app, campaign_id: int) -> dict[InvitationStatus, int]:
    with app.app_context():
        return campaigns.status_counts(campaign_id)


def campaign_status(app, campaign_id: int) -> CampaignStatus:
    with app.app_context():
        return campaigns.get_campaign(campaign_id).status


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_10000_customer_campaign_sends_pauses_resumes_and_reminds(worker_app, smtp, database, request):
    if database["name"] != "sqlite" or "filesystem" not in request.node.callspec.id:
        pytest.skip("once is enough: on SQLite with the worker `make run` starts")
    with worker_app.app_context():
        add_customers(CUSTOMERS)
    runner = worker_app.test_cli_runner()
    created = runner.invoke(args=["campaigns", "create", "--name", "Ten thousand", "--cooldown-days", "0"])
    assert created.exit_code == 0, created.output
    campaign_id = int(re.search(r"\d+", created.output.splitlines()[0]).group())
    assert f"{CUSTOMERS} invitations queued" in created.output

    client = worker_app.test_client()
    log_in(client, "admin@example.com")
    page = client.get(f"/staff/campaigns/{campaign_id}")
    token = csrf_token(page.data)
    assert client.post(f"/staff/campaigns/{campaign_id}/send", data={"csrf_token": token}).status_code == 302

    # Pause from the page part-way: the worker stops before its next batch.
    wait_until(lambda: counts(worker_app, campaign_id)[InvitationStatus.SENT] >= 1_000, 120, "1,000 sent")
    assert client.post(f"/staff/campaigns/{campaign_id}/pause", data={"csrf_token": token}).status_code == 302
    time.sleep(1.0)
    at_pause = counts(worker_app, campaign_id)[InvitationStatus.SENT]
    time.sleep(1.5)
    assert counts(worker_app, campaign_id)[InvitationStatus.SENT] == at_pause < CUSTOMERS
    paused_page = client.get(f"/staff/campaigns/{campaign_id}").get_data(as_text=True)
    assert "Paused" in paused_page
    refused = runner.invoke(args=["campaigns", "send", str(campaign_id)])
    assert refused.exit_code == 1
    assert "is paused" in refused.output

    # Resume from the page: the rest go, each once.
    assert (
        client.post(f"/staff/campaigns/{campaign_id}/resume", data={"csrf_token": token}).status_code == 302
    )
    wait_until(lambda: counts(worker_app, campaign_id)[InvitationStatus.SENT] == CUSTOMERS, 300, "all sent")
    # The run marks the campaign sent in its own commit, just after the last invitation's.
    wait_until(lambda: campaign_status(worker_app, campaign_id) == CampaignStatus.SENT, 30, "marked sent")
    first_round = [envelope.rcpt_tos[0] for envelope in smtp.envelopes]
    assert len(first_round) == len(set(first_round)) == CUSTOMERS

    # Some answer, some unsubscribe with the one-click link from their email.
    messages = smtp.messages
    unsubscribed = set()
    for message in messages[:UNSUBSCRIBED]:
        link = re.search(r"<https?://[^/]+(/u/[^>]+)>", message["List-Unsubscribe"]).group(1)
        assert client.post(link, data={"List-Unsubscribe": "One-Click"}).status_code == 200
        unsubscribed.add(message["To"].addresses[0].addr_spec)
    answers = Answers(
        StopReason.PRICE, "", "Lower prices", WouldReturn.MAYBE, ContactPreference.EMAIL, "", False
    )
    answered = set()
    with worker_app.app_context():
        rows = db.session.execute(
            sa.select(Invitation.id, Customer.email)
            .join(Customer, Customer.id == Invitation.customer_id)
            .where(Invitation.campaign_id == campaign_id, Customer.email.not_in(unsubscribed))
            .order_by(Invitation.id.desc())
            .limit(ANSWERED)
        ).all()
        for invitation_id, email in rows:
            survey.submit_response(invitation_id, answers, now=utcnow())
            answered.add(email)
        # Four days pass: the first reminder falls due.
        db.session.execute(
            sa.update(Invitation)
            .where(Invitation.campaign_id == campaign_id, Invitation.next_reminder_at.is_not(None))
            .values(next_reminder_at=utcnow() - timedelta(minutes=1))
        )
        db.session.commit()
    smtp.clear()

    ticked = runner.invoke(args=["campaigns", "tick"])
    assert ticked.exit_code == 0, ticked.output
    reminded = CUSTOMERS - ANSWERED - UNSUBSCRIBED
    assert f"{reminded} reminders sent" in ticked.output
    reminders = smtp.messages
    recipients = [message["To"].addresses[0].addr_spec for message in reminders]
    assert len(recipients) == len(set(recipients)) == reminded
    assert not (set(recipients) & (answered | unsubscribed))
    assert all(message["Subject"].startswith("Reminder: ") for message in reminders)

    # A second tick straight away sends nothing more: the next reminder is days away.
    again = runner.invoke(args=["campaigns", "tick"])
    assert "0 reminders sent" in again.output
    assert len(smtp.envelopes) == reminded
