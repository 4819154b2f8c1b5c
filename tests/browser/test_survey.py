"""The survey in a real browser: a phone-sized screen, with and without JavaScript, errors a
screen reader hears, every state of the link, and pages that stay light and first-party."""

from __future__ import annotations

from datetime import timedelta
from unittest.mock import patch
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from app.extensions import db
from app.models import Outcome, Response, utcnow
from app.services import triage
from app.tokens import make_survey_token
from tests.conftest import make_staff

PAGE_WEIGHT_LIMIT = 50 * 1024


def stored() -> list[Response]:
    db.session.rollback()
    return list(db.session.scalars(db.select(Response)))


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def fill_required(page, *, stop="Price", again="Maybe", contact="Email") -> None:
    page.get_by_label(stop, exact=True).check()
    page.get_by_label(again, exact=True).check()
    page.get_by_label(contact, exact=True).check()


def test_a_customer_answers_on_a_360px_phone(visit, survey_path, live_server):
    browser = visit(width=360)
    browser.go(survey_path)
    page = browser.page
    assert page.get_by_role("heading", name="Hello Ada,").is_visible()
    assert no_horizontal_scroll(page)

    page.get_by_label("I found something better elsewhere", exact=True).check()
    page.get_by_label("Which?", exact=True).fill("The market stall")
    page.get_by_label("We really valued your custom. What would it take to win you back?").fill(
        "Bring back the blue mugs."
    )
    page.get_by_label("Yes", exact=True).check()
    page.get_by_label("Phone", exact=True).check()
    assert page.get_by_label("Phone number").input_value() == "+44 20 0000 0001"
    page.get_by_label("You may quote my words, without my name, on your 'You Said, We Did' page.").check()
    assert no_horizontal_scroll(page)
    page.get_by_role("button", name="Send my answers").click()

    page.get_by_role("heading", name="Thank you, Ada").wait_for()
    assert "will phone you on +44 20 0000 0001" in page.content()
    assert no_horizontal_scroll(page)
    (response,) = stored()
    assert response.better_elsewhere == "The market stall"
    assert response.win_back_text == "Bring back the blue mugs."
    assert response.phone == "+44 20 0000 0001"
    assert response.may_quote is True
    assert browser.errors == []
    # Nothing but this site was asked for anything.
    assert {urlsplit(request.url).netloc for request in browser.requests} == {urlsplit(live_server).netloc}


def test_the_form_weighs_under_50_kb_and_asks_nothing_of_other_sites(visit, survey_path, live_server):
    browser = visit()
    browser.go(survey_path)
    browser.page.wait_for_load_state("networkidle")
    total = 0
    for request in browser.requests:
        assert request.url.startswith(live_server), request.url
        response = request.response()
        total += len(response.body()) + len(str(response.headers))
    assert total < PAGE_WEIGHT_LIMIT, total


@pytest.mark.parametrize("javascript", [True, False], ids=["with-js", "without-js"])
def test_follow_up_fields_appear_with_their_answer(visit, survey_path, javascript):
    browser = visit(javascript=javascript)
    browser.go(survey_path)
    page = browser.page
    which = page.get_by_label("Which?", exact=True)
    phone = page.get_by_label("Phone number")
    assert not which.is_visible()
    assert not phone.is_visible()
    page.get_by_label("I found something better elsewhere", exact=True).check()
    assert which.is_visible()
    page.get_by_label("Price", exact=True).check()
    assert not which.is_visible()
    page.get_by_label("Phone", exact=True).check()
    assert phone.is_visible()
    assert phone.input_value() == "+44 20 0000 0001"
    # And the form is sent and stored the same way.
    page.get_by_label("I found something better elsewhere", exact=True).check()
    which.fill("Elsewhere Ltd")
    page.get_by_label("Maybe", exact=True).check()
    page.get_by_role("button", name="Send my answers").click()
    page.get_by_role("heading", name="Thank you, Ada").wait_for()
    (response,) = stored()
    assert response.better_elsewhere == "Elsewhere Ltd"
    assert response.contact_via.value == "phone"


def test_errors_are_announced_and_linked_to_their_fields(visit, survey_path):
    browser = visit()
    browser.go(survey_path)
    page = browser.page
    page.get_by_label("Phone", exact=True).check()
    page.get_by_label("Phone number").fill("")
    page.get_by_role("button", name="Send my answers").click()
    summary = page.get_by_role("alert")
    summary.wait_for()
    assert "Please check your answers" in summary.inner_text()
    # The summary has focus, so a screen reader starts there.
    assert page.evaluate("document.activeElement.classList.contains('error-summary')")
    first_option = page.get_by_label("Price", exact=True)
    assert first_option.get_attribute("aria-invalid") == "true"
    group = page.locator("fieldset#stop_reason")
    assert page.locator(f"#{group.get_attribute('aria-describedby')}").inner_text() == (
        "Please choose what made you stop."
    )
    phone = page.get_by_label("Phone number")
    assert phone.get_attribute("aria-invalid") == "true"
    assert "phone-error" in phone.get_attribute("aria-describedby")
    # Each message in the summary leads to its field.
    page.get_by_role("link", name="Please choose what made you stop.").click()
    assert page.evaluate("document.activeElement.id") == "stop_reason-0"
    assert stored() == []


def test_the_free_text_counter_counts_down_politely(visit, survey_path):
    browser = visit()
    browser.go(survey_path)
    page = browser.page
    counter = page.locator("#win_back_text-counter")
    assert counter.get_attribute("aria-live") == "polite"
    assert counter.inner_text() == "2000 of 2,000 characters left"
    page.get_by_label("We really valued your custom. What would it take to win you back?").fill("x" * 150)
    expect(counter).to_have_text("1850 of 2,000 characters left")


def test_answers_can_be_changed_until_triage_then_read_only(visit, survey_path, app):
    browser = visit()
    browser.go(survey_path)
    page = browser.page
    fill_required(page)
    page.get_by_role("button", name="Send my answers").click()
    page.get_by_role("link", name="Change my answers").click()
    assert page.get_by_label("Maybe", exact=True).is_checked()
    page.get_by_label("Yes", exact=True).check()
    page.get_by_role("button", name="Save my changes").click()
    page.get_by_role("heading", name="Thank you, Ada").wait_for()
    (response,) = stored()
    assert response.would_return.value == "yes"
    response_id = response.id
    db.session.rollback()  # read, then write, in one SQLite transaction could deadlock with the server

    staff_user = make_staff()
    triage.set_outcome(response_id, Outcome.ACTIONABLE, actor_id=staff_user.id, now=utcnow())
    browser.go(survey_path)
    assert page.get_by_role("link", name="Change my answers").count() == 0
    assert "can no longer be changed" in page.content()


def test_no_never_thanks_and_takes_the_optional_follow_up(visit, survey_path):
    browser = visit()
    browser.go(survey_path)
    page = browser.page
    fill_required(page, again="No, never")
    page.get_by_role("button", name="Send my answers").click()
    assert "We won't contact you again." in page.content()
    page.get_by_label("Would you tell us what we did to cause this?").fill("Late deliveries.")
    page.get_by_role("button", name="Send").click()
    page.get_by_text("What you told us").wait_for()
    (response,) = stored()
    assert response.follow_up_text == "Late deliveries."


def test_moving_away_thanks_and_offers_a_share_link(visit, survey_path, live_server):
    browser = visit()
    browser.go(survey_path)
    page = browser.page
    fill_required(page, stop="I moved away or closed my business")
    page.get_by_role("button", name="Send my answers").click()
    page.get_by_role("heading", name="Know someone who might like us?").wait_for()
    assert page.get_by_role("link", name=f"{live_server}/you-said-we-did").is_visible()


def test_an_expired_link_offers_a_fresh_one(visit, invitation, app, smtp):
    moment = utcnow() - timedelta(days=app.config["INVITATION_LINK_DAYS"], hours=1)
    with patch("itsdangerous.timed.time.time", return_value=moment.timestamp()):
        expired = make_survey_token(invitation.reference, invitation.nonce)
    browser = visit()
    browser.go(f"/s/{expired}")
    page = browser.page
    assert page.get_by_role("heading", name="This link doesn't work").is_visible()
    page.get_by_role("button", name="Email me a fresh link").click()
    page.get_by_role("heading", name="Check your email").wait_for()
    (message,) = smtp.messages
    assert message["To"].addresses[0].addr_spec == "ada@example.com"


def test_a_german_customer_answers_in_german(visit, invitation):
    from tests.browser.conftest import axe_violations

    invitation.customer.locale = "de"
    db.session.commit()
    path = f"/s/{make_survey_token(invitation.reference, invitation.nonce)}"
    db.session.rollback()
    browser = visit(width=360)
    browser.go(path)
    page = browser.page
    assert page.get_attribute("html", "lang") == "de"
    assert page.get_by_role("heading", name="Hallo Ada,").is_visible()
    page.get_by_label("Ich habe woanders etwas Besseres gefunden", exact=True).check()
    page.get_by_label("Welches?", exact=True).fill("Der Laden um die Ecke")
    expect(page.locator("#win_back_text-counter")).to_have_text("Noch 2000 von 2.000 Zeichen")
    page.get_by_label("Vielleicht", exact=True).check()
    page.get_by_label("E-Mail", exact=True).check()
    assert no_horizontal_scroll(page)
    assert axe_violations(page) == []
    page.get_by_role("button", name="Antworten senden").click()
    page.get_by_role("heading", name="Vielen Dank, Ada").wait_for()
    (response,) = stored()
    assert response.better_elsewhere == "Der Laden um die Ecke"


def test_a_form_left_open_too_long_comes_back_with_the_answers_kept(visit, survey_path, app):
    app.config["WTF_CSRF_TIME_LIMIT"] = 1
    browser = visit()
    browser.go(survey_path)
    page = browser.page
    fill_required(page, stop="Delivery or availability")
    free_text = page.get_by_label("We really valued your custom. What would it take to win you back?")
    free_text.fill("Faster post.")
    page.wait_for_timeout(2100)
    page.get_by_role("button", name="Send my answers").click()
    page.get_by_text("This page was open for a long time, so please send it again.").wait_for()
    assert page.get_by_label("Delivery or availability", exact=True).is_checked()
    assert free_text.input_value() == "Faster post."
    assert stored() == []
    app.config["WTF_CSRF_TIME_LIMIT"] = 3600
    page.get_by_role("button", name="Send my answers").click()
    page.get_by_role("heading", name="Thank you, Ada").wait_for()
    (response,) = stored()
    assert response.win_back_text == "Faster post."


def test_keyboard_focus_is_visible(visit, survey_path):
    browser = visit()
    browser.go(survey_path)
    page = browser.page
    page.keyboard.press("Tab")  # the skip link
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # the first answer
    focused = page.evaluate(
        "(() => { const style = getComputedStyle(document.activeElement);"
        " return [document.activeElement.id, style.outlineStyle, parseFloat(style.outlineWidth)]; })()"
    )
    assert focused[0] == "stop_reason-0"
    assert focused[1] != "none"
    assert focused[2] >= 2
