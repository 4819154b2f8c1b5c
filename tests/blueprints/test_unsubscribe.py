"""Unsubscribe links: a confirm page on GET, RFC 8058 one-click on POST."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Customer, CustomerStatus, Invitation, InvitationStatus, utcnow
from app.services import campaigns, suppressions, unsubscribe
from app.tokens import make_unsubscribe_token
from tests.conftest import make_app
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


def test_a_one_click_unsubscribe_while_the_database_is_busy_is_kept_and_applied_by_the_tick(
    database, tmp_path, smtp_server
):
    """A long import holds SQLite's write lock past the busy timeout: the unsubscribe still
    answers 200, is kept on disk, and the next tick applies it. It is never lost."""
    if database["name"] != "sqlite":
        pytest.skip("SQLite's single write lock")
    app = make_app(database, tmp_path, smtp_server.port, SQLITE_BUSY_TIMEOUT_MS=200)
    with app.app_context():
        db.create_all()
        make_customer("ada@example.com")
        campaign, _ = campaigns.create_campaign(name="Busy", lapsed_days=180, now=utcnow())
        invitation = db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))
        reference = invitation.reference
        url = f"/u/{make_unsubscribe_token(reference)}"
        db.session.commit()
    client = app.test_client()
    importer = sqlite3.connect(tmp_path / "test.db", isolation_level=None)
    importer.execute("BEGIN IMMEDIATE")  # another process's long write transaction
    try:
        reply = client.post(url, data={"List-Unsubscribe": "One-Click"})
        tampered = client.post(url[:-3] + "xyz", data={"List-Unsubscribe": "One-Click"})
    finally:
        importer.execute("ROLLBACK")
        importer.close()

    assert reply.status_code == 200
    assert tampered.status_code == 404  # a bad link is refused, busy or not
    pending = tmp_path / "instance" / unsubscribe.PENDING_FILE
    assert pending.read_text() == f"{reference}\n"  # the reference, never the token
    with app.app_context():
        assert not suppressions.is_suppressed("ada@example.com")
    ticked = app.test_cli_runner().invoke(args=["campaigns", "tick"])
    assert ticked.exit_code == 0, ticked.output
    with app.app_context():
        assert suppressions.is_suppressed("ada@example.com")
        assert unsubscribe.apply_pending(now=utcnow()) == 0  # applied once, then gone
        db.engine.dispose()
    assert not list((tmp_path / "instance").glob("pending-unsubscribes*"))
