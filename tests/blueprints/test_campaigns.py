"""Staff send a campaign from its page: a background worker does the sending."""

from __future__ import annotations

import time

import sqlalchemy as sa

from app.extensions import db
from app.models import Invitation, InvitationStatus, utcnow
from app.services import campaigns
from tests.conftest import csrf_token, log_in
from tests.factories import make_customer


def statuses(app, campaign_id: int) -> list[InvitationStatus]:
    with app.app_context():
        return list(
            db.session.scalars(sa.select(Invitation.status).where(Invitation.campaign_id == campaign_id))
        )


def test_the_send_button_hands_the_campaign_to_the_worker(worker_app, smtp):
    with worker_app.app_context():
        for number in range(3):
            make_customer(f"c{number}@example.com")
        campaign_id = campaigns.create_campaign(name="Button", lapsed_days=180, now=utcnow())[0].id
    client = worker_app.test_client()
    log_in(client, "admin@example.com")
    page = client.get(f"/staff/campaigns/{campaign_id}")
    assert "Send 3 queued invitations" in page.get_data(as_text=True)

    reply = client.post(f"/staff/campaigns/{campaign_id}/send", data={"csrf_token": csrf_token(page.data)})

    assert reply.status_code == 302
    deadline = time.monotonic() + 30
    while statuses(worker_app, campaign_id) != [InvitationStatus.SENT] * 3:
        assert time.monotonic() < deadline, statuses(worker_app, campaign_id)
        time.sleep(0.1)
    assert sorted(str(m["To"].addresses[0].addr_spec) for m in smtp.messages) == [
        "c0@example.com",
        "c1@example.com",
        "c2@example.com",
    ]
    assert "<strong>3</strong> sent" in client.get(f"/staff/campaigns/{campaign_id}").get_data(as_text=True)


def test_sending_a_campaign_with_nothing_queued_says_so(staff_client, app):
    campaign_id = campaigns.create_campaign(name="Empty", lapsed_days=180, now=utcnow())[0].id
    page = staff_client.get(f"/staff/campaigns/{campaign_id}")
    reply = staff_client.post(
        f"/staff/campaigns/{campaign_id}/send",
        data={"csrf_token": csrf_token(page.data)},
        follow_redirects=True,
    )
    assert "has no invitations waiting to be sent" in reply.get_data(as_text=True)
