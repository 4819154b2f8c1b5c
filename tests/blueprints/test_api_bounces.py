"""The bounce webhook, POST /api/v1/bounces, over HTTP: API keys, input checks and the rules."""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import (
    AuditEvent,
    Customer,
    CustomerStatus,
    Invitation,
    InvitationStatus,
    SuppressionReason,
    utcnow,
)
from app.services import campaigns, imports, suppressions
from tests.factories import make_customer

URL = "/api/v1/bounces"
KEY = {"Authorization": "Bearer test-api-key"}


def bounce(client, address="ada@example.com", kind="hard", reason="550 5.1.1 no such user", **kwargs):
    """POST one bounce with the test API key."""
    headers = kwargs.pop("headers", KEY)
    return client.post(URL, json={"address": address, "type": kind, "reason": reason}, headers=headers)


def suppression(address="ada@example.com"):
    """The suppression row of an address, as the request left it."""
    db.session.rollback()
    return suppressions.suppression_for(address)


def customer_row(address="ada@example.com") -> Customer:
    db.session.rollback()
    return db.session.scalar(sa.select(Customer).where(Customer.email == address))


@pytest.fixture
def sent_invitation(app):
    """Ada, lapsed, with one invitation that was sent."""
    make_customer("ada@example.com")
    campaign, _ = campaigns.create_campaign(name="Bounces", lapsed_days=180, now=utcnow())
    invitation = db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))
    invitation.status = InvitationStatus.SENT
    invitation.sent_at = utcnow()
    db.session.commit()
    return invitation


# --- authentication and input ---------------------------------------------------------------


def test_no_key_gets_401_json_with_a_bearer_challenge(client):
    reply = bounce(client, headers={})
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert reply.json["error"] == "Unauthorized"
    assert "API key" in reply.json["detail"]
    assert suppression() is None


def test_a_wrong_key_gets_401(client):
    for headers in (
        {"Authorization": "Bearer nope"},
        {"X-API-Key": "nope"},
        {"Authorization": "test-api-key"},
    ):
        assert bounce(client, headers=headers).status_code == 401
    assert suppression() is None


def test_the_key_may_come_in_x_api_key(client):
    assert bounce(client, headers={"X-API-Key": "test-api-key"}).status_code == 200


def test_with_no_keys_configured_every_call_gets_401(app, client):
    app.config["API_KEYS"] = []
    assert bounce(client).status_code == 401
    assert bounce(client, headers={"Authorization": "Bearer "}).status_code == 401


def test_form_data_gets_415(client):
    reply = client.post(URL, data={"address": "ada@example.com", "type": "hard"}, headers=KEY)
    assert reply.status_code == 415
    assert "JSON" in reply.json["detail"]
    assert suppression() is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{not json", "body"),
        ("[1, 2]", "body"),
        ('{"type": "hard"}', "address"),
        ('{"address": 12, "type": "hard"}', "address"),
        ('{"address": "ada@example.com", "type": "bounced"}', "type"),
        ('{"address": "ada@example.com"}', "type"),
        ('{"address": "not an address", "type": "hard"}', "address"),
        ('{"address": "ada@example.com", "type": "hard", "reason": 5}', "reason"),
        ('{"address": "ada@example.com", "type": "hard", "reason": "' + "x" * 501 + '"}', "reason"),
    ],
)
def test_bad_input_gets_400_naming_the_field(client, body, field):
    reply = client.post(URL, data=body, content_type="application/json", headers=KEY)
    assert reply.status_code == 400
    assert reply.json["detail"].startswith(f"{field}:")
    assert suppression() is None


def test_a_body_over_the_size_limit_gets_413_json(app, client):
    app.config["MAX_CONTENT_LENGTH"] = 50
    reply = bounce(client, reason="x" * 100)
    assert reply.status_code == 413
    assert reply.is_json
    assert suppression() is None


def test_no_csrf_token_is_needed_and_nothing_is_cached(client):
    reply = bounce(client)
    assert reply.status_code == 200
    assert reply.headers["Cache-Control"] == "no-store"


# --- the rules ------------------------------------------------------------------------------


def test_a_hard_bounce_suppresses_and_marks_the_latest_sent_invitation_bounced(client, sent_invitation):
    reply = bounce(client, address=" Ada@Example.com", reason="550 5.1.1 <ada@example.com>: no such user")
    assert reply.status_code == 200
    assert reply.json == {"address_suppressed": True, "already_suppressed": False, "soft_bounces": None}
    assert "ada@example.com" not in reply.get_data(as_text=True).lower()
    row = suppression()
    assert row.reason == SuppressionReason.HARD_BOUNCE
    assert row.note == "550 5.1.1 <[address]>: no such user"
    assert db.session.get(Invitation, sent_invitation.id).status == InvitationStatus.BOUNCED
    assert customer_row().status == CustomerStatus.SUPPRESSED
    event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "bounce.hard"))
    assert event.target_id == customer_row().id
    assert "ada@" not in event.detail


def test_a_repeated_hard_bounce_is_already_suppressed_and_changes_nothing_more(client, sent_invitation):
    assert bounce(client).status_code == 200
    reply = bounce(client)
    assert reply.status_code == 200
    assert reply.json["already_suppressed"] is True
    assert reply.json["address_suppressed"] is True
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Invitation)) == 1
    assert db.session.get(Invitation, sent_invitation.id).status == InvitationStatus.BOUNCED


def test_a_complaint_suppresses(client, sent_invitation):
    reply = bounce(client, kind="complaint", reason="abuse\x00 report\x1b\n")
    assert reply.status_code == 200
    assert reply.json["address_suppressed"] is True
    assert suppression().reason == SuppressionReason.COMPLAINT
    assert suppression().note == "abuse report"
    # A complaint is not a delivery failure: the invitation stays sent.
    assert db.session.get(Invitation, sent_invitation.id).status == InvitationStatus.SENT


def test_two_soft_bounces_do_not_suppress_the_third_does(client, app):
    make_customer("ada@example.com")
    for count in (1, 2):
        reply = bounce(client, kind="soft", reason="452 mailbox full")
        assert reply.status_code == 200
        assert reply.json == {"address_suppressed": False, "already_suppressed": False, "soft_bounces": count}
        assert suppression() is None
        assert customer_row().soft_bounce_count == count
    reply = bounce(client, kind="soft", reason="452 mailbox full")
    assert reply.json == {"address_suppressed": True, "already_suppressed": False, "soft_bounces": 3}
    row = suppression()
    assert row.reason == SuppressionReason.HARD_BOUNCE
    assert row.note == "3 soft bounces"
    assert customer_row().status == CustomerStatus.SUPPRESSED


def test_a_soft_bounce_for_an_unknown_address_is_ignored(client):
    reply = bounce(client, address="nobody@example.com", kind="soft")
    assert reply.status_code == 200
    assert reply.json == {"address_suppressed": False, "already_suppressed": False, "soft_bounces": None}
    assert suppression("nobody@example.com") is None


def test_an_unknown_address_hard_bounce_suppresses_a_later_import(client, app):
    reply = bounce(client, address="x@example.com")
    assert reply.status_code == 200
    assert reply.json["address_suppressed"] is True
    assert suppression("x@example.com").reason == SuppressionReason.HARD_BOUNCE
    imports.import_customers(io.BytesIO(b"email\nx@example.com\n"), "customers.csv", now=utcnow())
    assert customer_row("x@example.com").status == CustomerStatus.SUPPRESSED
