"""Every public page passes an axe-core scan (no serious or critical violations), and hostile text
typed into the survey never runs on any page that shows it."""

from __future__ import annotations

from datetime import timedelta
from unittest.mock import patch

import pytest

from app.extensions import db
from app.models import ImprovementStatus, Outcome, Response, utcnow
from app.services import improvements, triage
from app.tokens import make_survey_token, make_unsubscribe_token
from tests.browser.conftest import axe_violations
from tests.conftest import PASSWORD, make_staff

HOSTILE = '<script>window.__pwned=1;alert("script")</script><img src=x onerror="window.__pwned=1;alert(1)">'


def answer(page, *, stop="Price", again="Maybe", contact="Email", text="", which="") -> None:
    page.get_by_label(stop, exact=True).check()
    if which:
        page.get_by_label("Which?", exact=True).fill(which)
    if text:
        page.get_by_label("We really valued your custom. What would it take to win you back?").fill(text)
    page.get_by_label(again, exact=True).check()
    page.get_by_label(contact, exact=True).check()
    page.get_by_label("You may quote my words, without my name, on your 'You Said, We Did' page.").check()
    page.get_by_role("button", name="Send my answers").click()
    page.get_by_role("heading", name="Thank you, Ada").wait_for()


def response_ids() -> list[int]:
    """Stored responses' ids, read in a transaction that ends at once: a test transaction that
    read and then writes could deadlock with the server's writes on SQLite."""
    db.session.rollback()
    ids = list(db.session.scalars(db.select(Response.id)))
    db.session.rollback()
    return ids


def assert_clean(browser) -> None:
    violations = axe_violations(browser.page)
    assert violations == [], f"{browser.page.url}: {violations}"


def expired(app, invitation) -> str:
    moment = utcnow() - timedelta(days=app.config["INVITATION_LINK_DAYS"], hours=1)
    with patch("itsdangerous.timed.time.time", return_value=moment.timestamp()):
        return make_survey_token(invitation.reference, invitation.nonce)


def test_the_form_and_its_error_state_pass_axe(visit, survey_path):
    browser = visit()
    browser.go(survey_path)
    assert_clean(browser)
    browser.page.get_by_label("Phone", exact=True).check()  # reveals the phone field
    browser.page.get_by_label("I found something better elsewhere", exact=True).check()
    assert_clean(browser)
    browser.page.get_by_label("Phone number").fill("")
    browser.page.get_by_role("button", name="Send my answers").click()
    browser.page.get_by_role("alert").wait_for()
    assert_clean(browser)


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("never", {"again": "No, never"}),
        ("referral", {"stop": "I no longer need it"}),
        ("email", {}),
        ("phone", {"contact": "Phone"}),
        ("none", {"contact": "Please don't contact me"}),
    ],
)
def test_every_thank_you_page_passes_axe(visit, survey_path, kind, fields):
    browser = visit()
    browser.go(survey_path)
    answer(browser.page, **fields)
    assert_clean(browser)
    browser.page.get_by_role("link", name="Change my answers").click()
    assert_clean(browser)


def test_the_read_only_thank_you_page_passes_axe(visit, survey_path):
    browser = visit()
    browser.go(survey_path)
    answer(browser.page)
    response_id = response_ids()[0]
    triage.set_outcome(response_id, Outcome.ACTIONABLE, actor_id=make_staff().id, now=utcnow())
    browser.go(survey_path)
    assert "can no longer be changed" in browser.page.content()
    assert_clean(browser)


def test_invalid_link_and_fresh_link_pages_pass_axe(visit, invitation, app, smtp):
    browser = visit()
    browser.go(f"/s/{expired(app, invitation)}")
    assert_clean(browser)
    browser.page.get_by_role("button", name="Email me a fresh link").click()
    browser.page.get_by_role("heading", name="Check your email").wait_for()
    assert_clean(browser)


def test_unsubscribe_pages_pass_axe(visit, invitation):
    browser = visit()
    browser.go(f"/u/{make_unsubscribe_token(invitation.reference)}")
    assert_clean(browser)
    browser.page.get_by_role("button", name="Unsubscribe").click()
    browser.page.get_by_role("heading", name="You're unsubscribed").wait_for()
    assert_clean(browser)


def test_hostile_text_never_runs_on_the_thank_you_staff_or_public_pages(visit, survey_path, live_server):
    customer = visit()
    customer.go(survey_path)
    answer(customer.page, stop="I found something better elsewhere", which=HOSTILE[:200], text=HOSTILE)
    (response_id,) = response_ids()
    assert db.session.get(Response, response_id).win_back_text == HOSTILE  # stored as typed
    db.session.rollback()
    pages = {"thank-you": customer}

    # The "No, never" follow-up is shown back too.
    never = visit()
    never.go(survey_path)
    never.page.get_by_role("link", name="Change my answers").click()
    never.page.get_by_label("No, never", exact=True).check()
    never.page.get_by_role("button", name="Save my changes").click()
    never.page.get_by_label("Would you tell us what we did to cause this?").fill(HOSTILE)
    never.page.get_by_role("button", name="Send").click()
    never.page.get_by_text("What you told us").wait_for()
    pages["follow-up"] = never

    admin = make_staff("admin@example.com")
    triage.set_outcome(response_id, Outcome.ACTIONABLE, actor_id=admin.id, now=utcnow())
    improvements.create_improvement(
        improvements.ImprovementData(
            you_said=HOSTILE, we_did=HOSTILE, status=ImprovementStatus.DONE, published=True
        ),
        response_ids=[response_id],
        actor_id=admin.id,
        now=utcnow(),
    )
    staff = visit(width=1024)
    staff.go("/staff/login")
    staff.page.get_by_label("Email").fill("admin@example.com")
    staff.page.get_by_label("Password").fill(PASSWORD)
    staff.page.get_by_role("button", name="Log in").click()
    staff.page.wait_for_url(f"{live_server}/staff/**")
    staff.go(f"/staff/triage/{response_id}")
    pages["staff triage"] = staff

    public = visit()
    public.go("/you-said-we-did")
    pages["public"] = public

    for name, browser in pages.items():
        page = browser.page
        page.wait_for_load_state("networkidle")
        assert "<script>window.__pwned=1" in page.inner_text("main"), name  # shown as text
        assert page.evaluate("window.__pwned") is None, name
        assert browser.dialogs == [], name
    assert_clean(public)


def test_the_scan_does_find_violations(visit):
    """The axe scan is not vacuous: a page with an unlabelled image and field fails it."""
    browser = visit()
    browser.page.set_content('<html><body><img src="data:,"><input type="text"></body></html>')
    found = {violation["id"] for violation in axe_violations(browser.page)}
    assert {"image-alt", "label"} <= found
