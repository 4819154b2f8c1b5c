"""Staff send a campaign from its page: a background worker does the sending."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from app.exceptions import InvalidInput
from app.extensions import db
from app.models import CampaignStatus, Invitation, InvitationStatus, StaffRole, utcnow
from app.services import campaigns
from tests.conftest import csrf_token, log_in, make_staff
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


def test_staff_pause_a_sending_campaign_and_resume_it(staff_client, app):
    make_customer("ada@example.com")
    campaign_id = campaigns.create_campaign(name="Pausable", lapsed_days=180, now=utcnow())[0].id
    with app.app_context():
        campaign = campaigns.get_campaign(campaign_id)
        campaign.status = CampaignStatus.SENDING
        db.session.commit()
    page = staff_client.get(f"/staff/campaigns/{campaign_id}")
    assert (
        staff_client.post(
            f"/staff/campaigns/{campaign_id}/pause", data={"csrf_token": csrf_token(page.data)}
        ).status_code
        == 302
    )

    page = staff_client.get(f"/staff/campaigns/{campaign_id}")
    body = page.get_data(as_text=True)
    assert "Paused" in body
    assert "Paused by admin@example.com." in body
    assert ">Resume</button>" in body
    with pytest.raises(InvalidInput):
        campaigns.send_campaign(campaign_id)

    reply = staff_client.post(
        f"/staff/campaigns/{campaign_id}/resume",
        data={"csrf_token": csrf_token(page.data)},
        follow_redirects=True,
    )
    assert "Campaign resumed: sending 1 invitations in the background." in reply.get_data(as_text=True)
    db.session.rollback()
    assert campaigns.get_campaign(campaign_id).status == CampaignStatus.SENDING


def test_viewers_cannot_pause_or_resume(client, app):
    make_staff("viewer@example.com", StaffRole.VIEWER)
    log_in(client, "viewer@example.com")
    campaign_id = campaigns.create_campaign(name="Locked", lapsed_days=180, now=utcnow())[0].id
    page = client.get(f"/staff/campaigns/{campaign_id}")
    for action in ("pause", "resume"):
        reply = client.post(
            f"/staff/campaigns/{campaign_id}/{action}", data={"csrf_token": csrf_token(page.data)}
        )
        assert reply.status_code == 403


def test_the_campaign_page_lists_refusals_and_retries_the_failed_not_the_bounced(staff_client, app, smtp):
    smtp.refuse.extend(
        [("policy@", "550 5.7.1 Message refused by policy"), ("gone@", "550 5.1.1 No such user")]
    )
    for email in ("policy@example.com", "gone@example.com", "fine@example.com"):
        make_customer(email)
    campaign_id = campaigns.create_campaign(name="Refusals", lapsed_days=180, now=utcnow())[0].id
    campaigns.send_campaign(campaign_id)

    page = staff_client.get(f"/staff/campaigns/{campaign_id}")
    body = page.get_data(as_text=True)
    assert "550 5.7.1 Message refused by policy" in body
    assert "550 5.1.1 No such user" in body
    assert "Retry 1 failed invitations" in body

    reply = staff_client.post(
        f"/staff/campaigns/{campaign_id}/retry-failed",
        data={"csrf_token": csrf_token(page.data)},
        follow_redirects=True,
    )
    assert "Retrying 1 failed invitations in the background." in reply.get_data(as_text=True)
    assert sorted(statuses(app, campaign_id)) == sorted(
        [InvitationStatus.QUEUED, InvitationStatus.BOUNCED, InvitationStatus.SENT]
    )


def test_the_new_campaign_page_counts_and_samples_the_audience_as_the_rule_changes(staff_client, app):
    for email, segment, spent in [
        ("risk@example.com", "At risk", 80_000),
        ("lost@example.com", "Lost", 5_000),
        ("lost-big@example.com", "Lost", 70_000),
    ]:
        make_customer(email, total_spent=spent).segment = segment
    db.session.commit()

    page = staff_client.get("/staff/campaigns/new").get_data(as_text=True)
    assert "<strong>3</strong> customers: not bought for 180 days; not contacted in the last 90 days." in page
    assert 'value="90"' in page  # the cooldown field starts at CONTACT_COOLDOWN_DAYS

    narrowed = staff_client.get(
        "/staff/campaigns/new", query_string={"lapsed_days": "180", "segments": "Lost", "min_spent": "£100"}
    ).get_data(as_text=True)
    assert "<strong>1</strong> customer: not bought for 180 days; in Lost; spent at least 100.00" in narrowed
    assert "lost-big@example.com" in narrowed
    assert "risk@example.com" not in narrowed

    wrong = staff_client.get("/staff/campaigns/new", query_string={"min_spent": "lots"})
    assert wrong.status_code == 200
    assert "minimum spent: &#39;lots&#39; is not an amount" in wrong.get_data(as_text=True)
    assert campaigns.list_campaigns() == []  # a preview creates nothing


def test_creating_a_campaign_from_the_page_queues_its_audience(staff_client, app):
    for email, segment in [("risk@example.com", "At risk"), ("lost@example.com", "Lost")]:
        make_customer(email).segment = segment
    db.session.commit()
    page = staff_client.get("/staff/campaigns/new")
    reply = staff_client.post(
        "/staff/campaigns/new",
        data={
            "csrf_token": csrf_token(page.data),
            "name": "At risk only",
            "lapsed_days": "180",
            "segments": ["At risk"],
            "min_spent": "",
            "cooldown_days": "30",
            "limit": "",
            "subject": "",
        },
    )
    assert reply.status_code == 302
    campaign = campaigns.list_campaigns()[0]
    assert (campaign.segments, campaign.cooldown_days) == (["At risk"], 30)
    shown = staff_client.get(reply.headers["Location"]).get_data(as_text=True)
    assert "in At risk; not contacted in the last 30 days" in shown
    assert "<strong>1</strong> queued" in shown


def test_a_bad_rule_on_the_page_creates_nothing_and_says_why(staff_client, app):
    page = staff_client.get("/staff/campaigns/new")
    reply = staff_client.post(
        "/staff/campaigns/new",
        data={
            "csrf_token": csrf_token(page.data),
            "name": "Bad",
            "lapsed_days": "180",
            "cooldown_days": "-3",
        },
    )
    assert reply.status_code == 400
    assert "Number must be between 0 and 36500." in reply.get_data(as_text=True)
    assert campaigns.list_campaigns() == []


def test_counting_on_the_page_keeps_what_was_typed_and_creates_nothing(staff_client, app):
    make_customer("lost@example.com").segment = "Lost"
    make_customer("risk@example.com").segment = "At risk"
    db.session.commit()
    page = staff_client.get("/staff/campaigns/new")
    reply = staff_client.post(
        "/staff/campaigns/new",
        data={
            "csrf_token": csrf_token(page.data),
            "action": "count",
            "name": "Kept name",
            "lapsed_days": "180",
            "segments": ["Lost"],
            "cooldown_days": "90",
            "subject": "Kept subject {{ first_name }}",
            "body": "Kept body {{ link }}",
            "offer_kind": "none",
        },
        content_type="multipart/form-data",
    )
    text = reply.get_data(as_text=True)
    assert reply.status_code == 200
    assert "<strong>1</strong> customer: not bought for 180 days; in Lost" in text
    assert 'value="Kept name"' in text
    assert "Kept body {{ link }}" in text
    assert campaigns.list_campaigns() == []
