"""The survey form a lapsed customer answers from an emailed link."""

from __future__ import annotations

import html
import sqlite3
import threading

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Invitation, Outcome, Response, utcnow
from app.services import campaigns, suppressions
from app.tokens import make_survey_token
from tests.conftest import csrf_token, make_app
from tests.factories import make_customer

LABELS = [
    "What made you stop buying from us?",
    "Price",
    "Quality of the product",
    "Customer service",
    "Delivery or availability",
    "I found something better elsewhere",
    "Which?",
    "I no longer need it",
    "I moved away or closed my business",
    "Something else",
    "We really valued your custom. What would it take to win you back?",
    "Would you consider buying from us again?",
    "Yes",
    "Maybe",
    "No, never",
    "How should we get back to you?",
    "Email",
    "Phone",
    "Please don't contact me",
    "You may quote my words, without my name, on your 'You Said, We Did' page.",
]


@pytest.fixture
def invitation(app):
    make_customer("ada@example.com", first_name="Ada", phone="+44 20 0000 0001")
    campaign, _ = campaigns.create_campaign(name="Survey", lapsed_days=180, now=utcnow())
    return db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))


@pytest.fixture
def survey_url(invitation):
    return f"/s/{make_survey_token(invitation.reference, invitation.nonce)}"


def answers(page: bytes, **overrides) -> dict:
    data = {
        "csrf_token": csrf_token(page),
        "stop_reason": "price",
        "win_back_text": "A loyalty discount.",
        "would_return": "maybe",
        "contact_via": "email",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def stored_responses() -> list[Response]:
    db.session.rollback()  # end the read snapshot: see what the app wrote since
    return list(db.session.scalars(sa.select(Response)))


def test_the_form_shows_the_five_questions_with_their_exact_labels(client, survey_url):
    page = client.get(survey_url)
    assert page.status_code == 200
    body = html.unescape(page.get_data(as_text=True))
    for label in LABELS:
        assert label in body, label
    assert "Hello Ada," in body
    assert 'value="+44 20 0000 0001"' in body  # the phone number we know is pre-filled


def test_submitting_stores_one_response_and_thanks_them(client, survey_url, invitation):
    page = client.get(survey_url)
    reply = client.post(survey_url, data=answers(page.data, may_quote="y"))
    assert reply.status_code == 303
    assert reply.headers["Location"] == survey_url
    thanks = client.get(survey_url)
    assert "Thank you, Ada" in thanks.get_data(as_text=True)
    (response,) = stored_responses()
    assert response.win_back_text == "A loyalty discount."
    assert response.may_quote is True
    assert response.outcome is None
    assert response.suggested_outcome == Outcome.ACTIONABLE
    db.session.rollback()
    db.session.refresh(invitation)
    assert invitation.answered_at is not None


def test_a_second_submission_does_not_store_another_response(client, survey_url):
    page = client.get(survey_url)
    client.post(survey_url, data=answers(page.data))
    client.post(survey_url, data=answers(page.data, win_back_text="changed my mind"))
    (response,) = stored_responses()
    assert response.win_back_text == "A loyalty discount."


def test_no_never_suppresses_the_address_and_promises_no_more_contact(client, survey_url):
    page = client.get(survey_url)
    client.post(survey_url, data=answers(page.data, would_return="never"))
    thanks = client.get(survey_url).get_data(as_text=True)
    assert "We won't contact you again" in thanks
    (response,) = stored_responses()
    assert response.suggested_outcome == Outcome.NEVER
    assert suppressions.is_suppressed("ada@example.com")


def test_missing_answers_are_refused_with_messages_and_nothing_stored(client, survey_url):
    page = client.get(survey_url)
    reply = client.post(survey_url, data=answers(page.data, stop_reason=None, contact_via="phone"))
    assert reply.status_code == 400
    body = reply.get_data(as_text=True)
    assert "Please choose what made you stop." in body
    assert 'role="alert"' in body
    assert stored_responses() == []


def test_free_text_over_2000_characters_is_refused(client, survey_url):
    page = client.get(survey_url)
    reply = client.post(survey_url, data=answers(page.data, win_back_text="x" * 2001))
    assert reply.status_code == 400
    assert stored_responses() == []


def test_control_characters_are_removed_and_the_rest_stored_as_typed(client, survey_url):
    page = client.get(survey_url)
    client.post(survey_url, data=answers(page.data, win_back_text="Line one\x00\x07\nLine <two>"))
    (response,) = stored_responses()
    assert response.win_back_text == "Line one\nLine <two>"


def test_a_post_without_the_csrf_token_gets_400(client, survey_url):
    data = {"stop_reason": "price", "would_return": "yes", "contact_via": "email"}
    reply = client.post(survey_url, data=data)
    assert reply.status_code == 400
    assert stored_responses() == []


def test_opening_the_link_records_opened_once_and_nothing_else(client, survey_url, invitation):
    client.get(survey_url)
    db.session.rollback()
    db.session.refresh(invitation)
    first_opened = invitation.opened_at
    assert first_opened is not None
    client.get(survey_url)
    db.session.rollback()
    db.session.refresh(invitation)
    assert invitation.opened_at == first_opened
    assert stored_responses() == []
    assert not suppressions.is_suppressed("ada@example.com")


def test_a_tampered_link_gets_the_friendly_404_page(client, survey_url):
    reply = client.get(survey_url[:-2] + ("AA" if not survey_url.endswith("AA") else "BB"))
    assert reply.status_code == 404
    assert "This link doesn't work" in reply.get_data(as_text=True)


def test_simultaneous_submissions_store_exactly_one_response(app, database, tmp_path, survey_url):
    """Real threads, each with its own client, post the same link at once."""
    pages = []
    clients = []
    for _ in range(4):
        client = app.test_client()
        pages.append(client.get(survey_url).data)
        clients.append(client)
    db.session.rollback()  # no transaction of ours may hold SQLite's write lock
    statuses = []
    barrier = threading.Barrier(len(clients))

    def submit(client, page, number):
        barrier.wait()
        reply = client.post(survey_url, data=answers(page, win_back_text=f"answer {number}"))
        statuses.append(reply.status_code)

    threads = [
        threading.Thread(target=submit, args=(client, page, number))
        for number, (client, page) in enumerate(zip(clients, pages, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert statuses == [303] * len(clients)
    assert len(stored_responses()) == 1


def test_answers_sent_while_the_database_is_busy_come_back_to_be_sent_again(database, tmp_path, smtp_server):
    """A long import holds SQLite's write lock past the busy timeout: the answer is not lost in
    an error page, the form comes back with it, and sending again stores it."""
    if database["name"] != "sqlite":
        pytest.skip("SQLite's single write lock")
    app = make_app(database, tmp_path, smtp_server.port, SQLITE_BUSY_TIMEOUT_MS=200)
    with app.app_context():
        db.create_all()
        make_customer("ada@example.com", first_name="Ada")
        campaign, _ = campaigns.create_campaign(name="Busy", lapsed_days=180, now=utcnow())
        invitation = db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))
        url = f"/s/{make_survey_token(invitation.reference, invitation.nonce)}"
        db.session.commit()
    client = app.test_client()
    page = client.get(url).data
    typed = answers(page, win_back_text="Free delivery, please.")
    importer = sqlite3.connect(tmp_path / "test.db", isolation_level=None)
    importer.execute("BEGIN IMMEDIATE")  # another process's long write transaction
    try:
        reply = client.post(url, data=typed)
    finally:
        importer.execute("ROLLBACK")
        importer.close()

    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "5"
    text = reply.get_data(as_text=True)
    assert "We could not save your answers just now" in text
    assert "Free delivery, please." in text
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Response)) == 0

    again = client.post(url, data=answers(reply.data, win_back_text="Free delivery, please."))
    assert again.status_code == 303
    with app.app_context():
        (stored,) = db.session.scalars(sa.select(Response))
        assert stored.win_back_text == "Free delivery, please."
        db.engine.dispose()
