"""The campaign page while sending: progress, the current rate, reminders and retries."""

from __future__ import annotations

import re

from app.models import utcnow
from app.services import campaigns
from tests.factories import make_customer


def test_the_page_shows_progress_rate_reminders_and_waiting_retries(staff_client, app, smtp):
    smtp.refuse.append(("temp@", "451 4.3.0 Try again later"))
    for email in ("ada@example.com", "temp@example.com", "zed@example.com"):
        make_customer(email)
    campaign_id = campaigns.create_campaign(
        name="Progress", lapsed_days=180, now=utcnow(), reminder_days=[4, 10]
    )[0].id
    campaigns.send_campaign(campaign_id)

    body = staff_client.get(f"/staff/campaigns/{campaign_id}").get_data(as_text=True)

    assert re.search(r'<progress id="send-progress" max="3" value="2"[^>]*>66%</progress>', body)
    assert "2 of 3 invitations done" in body
    assert "2 emails in the last minute" in body
    assert "0 sent, 0 due now, 2 planned: 4 and 10 days after the first email" in body
    assert "<dt>Retries waiting</dt><dd>1: refused for now" in body
    retry = re.search(
        r"<tr><td>temp@example.com</td><td>1</td><td>451 4.3.0 Try again later</td><td>[^<]+</td>", body
    )
    assert retry, body
    # Only a retry a minute away is left: nothing moves, so the page does not refresh itself.
    assert 'http-equiv="refresh"' not in body


def test_the_page_refreshes_itself_while_invitations_go_out(staff_client, app):
    make_customer("ada@example.com")
    campaign_id = campaigns.create_campaign(name="Live", lapsed_days=180, now=utcnow(), reminder_days=[])[
        0
    ].id
    campaigns.pause_campaign(campaign_id, reason="test", actor_id=None, now=utcnow())
    campaigns.resume_campaign(campaign_id, actor_id=None, now=utcnow(), enqueue=False)  # sending, 1 queued

    body = staff_client.get(f"/staff/campaigns/{campaign_id}").get_data(as_text=True)

    assert '<meta http-equiv="refresh" content="3">' in body
    assert "0 of 1 invitations done" in body
    assert "<dt>Reminders</dt>\n  <dd>none planned</dd>" in body


def create_from_the_page(staff_client, **fields):
    from tests.conftest import csrf_token

    page = staff_client.get("/staff/campaigns/new")
    data = {"csrf_token": csrf_token(page.data), "name": "Reminded", "lapsed_days": "180", **fields}
    return page, staff_client.post("/staff/campaigns/new", data=data)


def test_the_new_campaign_form_plans_reminders(staff_client, app):
    make_customer("ada@example.com")
    page, reply = create_from_the_page(staff_client, reminder_days="3, 9")

    assert 'name="reminder_days" type="text" value="4, 10"' in page.get_data(as_text=True)
    assert reply.status_code == 302
    assert campaigns.list_campaigns()[0].reminder_days == [3, 9]


def test_an_empty_reminder_field_plans_none_and_a_bad_one_creates_nothing(staff_client, app):
    _, reply = create_from_the_page(staff_client, reminder_days="")
    assert reply.status_code == 302
    assert campaigns.list_campaigns()[0].reminder_days == []

    _, reply = create_from_the_page(staff_client, reminder_days="10, 4")
    assert reply.status_code == 400
    assert "reminder days: each from 1 to 365 days, increasing" in reply.get_data(as_text=True)
    assert len(campaigns.list_campaigns()) == 1
