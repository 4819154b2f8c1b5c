"""Security headers, email links from PUBLIC_BASE_URL only, tokens kept out of logs, hostile text
shown as text."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import ContactPreference, Invitation, StopReason, WouldReturn, utcnow
from app.security import RedactTokensFilter, redact_tokens
from app.services import campaigns, survey
from app.services.survey import Answers
from app.tokens import make_survey_token, make_unsubscribe_token
from app.urls import public_url
from tests.factories import make_customer

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"
CSP_PARTS = ["script-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'"]


@pytest.fixture
def invitation(app) -> Invitation:
    make_customer()
    campaign, _ = campaigns.create_campaign(name="Security", lapsed_days=180, now=utcnow())
    return db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))


@pytest.fixture
def public_pages(invitation) -> dict[str, str]:
    """Pages anyone can reach, each by the path a visitor would request."""
    return {
        "you said, we did": "/you-said-we-did",
        "survey": f"/s/{make_survey_token(invitation.reference, invitation.nonce)}",
        "unsubscribe": f"/u/{make_unsubscribe_token(invitation.reference)}",
        "broken link": "/s/not-a-token",
        "staff login": "/staff/login",
    }


STAFF_PAGES = ["/staff/", "/staff/triage/", "/staff/customers/", "/staff/campaigns/", "/staff/improvements/"]


def hostile_answer(invitation: Invitation):
    """A response whose free text is an attack on whoever reads it."""
    answers = Answers(
        stop_reason=StopReason.BETTER_ELSEWHERE,
        better_elsewhere=HOSTILE,
        win_back_text=HOSTILE,
        would_return=WouldReturn.MAYBE,
        contact_via=ContactPreference.EMAIL,
        phone="",
        may_quote=True,
    )
    return survey.submit_response(invitation.id, answers, now=utcnow())


# --- headers ------------------------------------------------------------------------------


def assert_security_headers(reply):
    policy = reply.headers["Content-Security-Policy"]
    for part in CSP_PARTS:
        assert part in policy
    assert "unsafe-inline" not in policy
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["Referrer-Policy"] == "same-origin"


def test_public_pages_send_the_security_headers(app, public_pages):
    client = app.test_client()
    for name, path in public_pages.items():
        reply = client.get(path)
        assert reply.status_code in (200, 404), name
        assert_security_headers(reply)


def test_staff_pages_send_the_security_headers(staff_client):
    for path in STAFF_PAGES:
        reply = staff_client.get(path)
        assert reply.status_code == 200, path
        assert_security_headers(reply)


def test_survey_unsubscribe_and_staff_pages_are_never_stored(app, public_pages, staff_client):
    anonymous = app.test_client()
    for name in ("survey", "unsubscribe", "broken link", "staff login"):
        assert anonymous.get(public_pages[name]).headers.get("Cache-Control") == "no-store", name
    for path in STAFF_PAGES:
        assert staff_client.get(path).headers.get("Cache-Control") == "no-store", path


def test_the_public_you_said_we_did_page_may_be_cached(client):
    reply = client.get("/you-said-we-did")
    assert reply.status_code == 200
    assert "no-store" not in reply.headers.get("Cache-Control", "")


# --- links --------------------------------------------------------------------------------


def test_links_for_emails_come_from_public_base_url_not_the_request_host(app):
    app.config["PUBLIC_BASE_URL"] = "https://shop.example.com/winback"
    with app.test_request_context("/staff/", base_url="http://127.0.0.1:5000"):
        assert public_url("survey.show_form", token="t") == "https://shop.example.com/winback/s/t"
        assert public_url("unsubscribe.one_click", token="t").startswith(app.config["PUBLIC_BASE_URL"])


# --- logs ---------------------------------------------------------------------------------


def test_tokens_in_survey_and_unsubscribe_paths_are_redacted():
    assert redact_tokens("/s/abc.def-ghi") == "/s/[token]"
    assert redact_tokens("GET /u/eyJh_b.c-d HTTP/1.1") == "GET /u/[token] HTTP/1.1"
    assert redact_tokens("GET /staff/triage/ HTTP/1.1") == "GET /staff/triage/ HTTP/1.1"


def test_the_redaction_filter_removes_a_token_from_a_werkzeug_request_line():
    record = logging.LogRecord(
        "werkzeug",
        logging.INFO,
        __file__,
        0,
        '%s - - [%s] "%s" %s %s',
        ("127.0.0.1", "01/Jan/2025 12:00:00", "GET /s/abc.def-ghi HTTP/1.1", "200", "-"),
        None,
    )
    assert RedactTokensFilter().filter(record) is True
    line = record.getMessage()
    assert "abc.def-ghi" not in line
    assert '"GET /s/[token] HTTP/1.1" 200 -' in line


def test_the_request_log_never_shows_a_full_token(app, invitation, caplog, monkeypatch):
    token = make_survey_token(invitation.reference, invitation.nonce)
    werkzeug_log = logging.getLogger("werkzeug")
    # Alembic's fileConfig (tests/test_migrations.py) disables every existing logger in this process.
    monkeypatch.setattr(werkzeug_log, "disabled", False)
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        # What the development server logs for a request, through the logger the app configured.
        werkzeug_log.info('%s - - [%s] "%s" %s %s', "127.0.0.1", "-", f"GET /s/{token} HTTP/1.1", "200", "-")
    assert caplog.records
    assert token not in caplog.text
    for part in filter(None, token.split(".")):  # a compressed payload starts with "."
        assert part not in caplog.text
    assert "/s/[token]" in caplog.text


# --- hostile text -------------------------------------------------------------------------


def test_hostile_answer_text_is_shown_as_text_on_the_staff_pages(staff_client, invitation):
    response = hostile_answer(invitation)
    for path in (
        "/staff/triage/",
        f"/staff/triage/{response.id}",
        f"/staff/improvements/new?response={response.id}",
    ):
        reply = staff_client.get(path)
        assert reply.status_code == 200, path
        body = reply.get_data(as_text=True)
        assert "<script" not in body, path
        assert "<img" not in body, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body, path


@pytest.mark.parametrize("path", ["/you-said-we-did", "/staff/login", "/s/x", "/healthz"])
def test_a_forged_host_header_gets_400(client, path):
    reply = client.get(path, headers={"Host": "evil.example"})
    assert reply.status_code == 400
    assert "evil.example" not in reply.get_data(as_text=True)


def test_gunicorn_access_log_lines_are_redacted_and_still_formatted():
    record = logging.LogRecord(
        "gunicorn.access", logging.INFO, __file__, 1, '%(h)s "%(r)s" %(s)s %(f)s', None, None
    )
    record.args = {
        "h": "127.0.0.1",
        "r": "GET /s/abc.def-ghi HTTP/1.1",
        "s": "200",
        "f": "https://x/u/tok.en",
    }
    assert RedactTokensFilter().filter(record)
    assert record.getMessage() == '127.0.0.1 "GET /s/[token] HTTP/1.1" 200 https://x/u/[token]'
