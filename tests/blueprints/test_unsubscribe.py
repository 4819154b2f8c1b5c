"""Unsubscribe links: a confirm page on GET, RFC 8058 one-click on POST."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Customer, CustomerStatus, Invitation, InvitationStatus, utcnow
from app.services import campaigns, suppressions
from app.tokens import make_unsubscribe_token
from tests.factories import make_customer


@pytest.fixture
def invitation(app):
    make_customer("ada@example.com")
    campaign, _ = campaigns.create_campaign(name="Unsub", lapsed_days=180, now=utcnow())
    return db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))


@pytest.fixture
def unsubscribe_url(invitation):
    return f"/u/{make_unsubscribe_token(invitation.reference)}"


def suppressed() -> bool:
    db.session.rollback()
    return suppressions.is_suppressed("ada@example.com")


def test_get_shows_a_confirm_button_and_unsubscribes_nobody(client, unsubscribe_url):
    page = client.get(unsubscribe_url)
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "<button" in body
    assert "Unsubscribe" in body
    assert not suppressed()


def test_a_cookieless_one_click_post_answers_200_without_redirect(app, unsubscribe_url):
    client = app.test_client(use_cookies=False)
    reply = client.post(unsubscribe_url, data={"List-Unsubscribe": "One-Click"})
    assert reply.status_code == 200
    assert "Location" not in reply.headers
    assert "You're unsubscribed" in reply.get_data(as_text=True)
    assert suppressed()
    db.session.rollback()
    customer = db.session.scalar(sa.select(Customer))
    assert customer.status == CustomerStatus.SUPPRESSED


def test_one_click_accepts_multipart_and_is_idempotent(app, unsubscribe_url):
    client = app.test_client(use_cookies=False)
    for _ in range(2):
        reply = client.post(
            unsubscribe_url,
            data={"List-Unsubscribe": "One-Click"},
            content_type="multipart/form-data",
        )
        assert reply.status_code == 200
    assert suppressed()


def test_the_confirm_button_works_from_the_page(client, unsubscribe_url):
    page = client.get(unsubscribe_url)
    assert f'action="{unsubscribe_url}"' in page.get_data(as_text=True)
    assert client.post(unsubscribe_url).status_code == 200
    assert suppressed()


def test_a_bad_unsubscribe_link_gets_the_friendly_404(client, unsubscribe_url):
    reply = client.post(unsubscribe_url + "x")
    assert reply.status_code == 404
    assert "This link doesn't work" in reply.get_data(as_text=True)
    assert not suppressed()


def test_the_link_survives_key_rotation(app, client, unsubscribe_url):
    app.config["SECRET_KEY_FALLBACKS"] = [app.config["SECRET_KEY"]]
    app.config["SECRET_KEY"] = "rotated-key"
    assert client.post(unsubscribe_url).status_code == 200
    assert suppressed()


def test_an_unsubscribed_address_is_never_emailed_again(app, client, smtp, invitation, unsubscribe_url):
    client.post(unsubscribe_url)
    db.session.rollback()
    summary = campaigns.send_campaign(invitation.campaign_id)
    assert summary.sent == 0
    assert smtp.messages == []
    db.session.rollback()
    assert db.session.get(Invitation, invitation.id).status == InvitationStatus.SUPPRESSED
    _, queued = campaigns.create_campaign(name="Again", lapsed_days=180, now=utcnow())
    assert queued == 0
