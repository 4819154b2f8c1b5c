"""The survey after the first answer: changing it until triage, the thank-you page that follows
the answer, a stale form, fresh links for expired ones, and the suggested outcome."""

from __future__ import annotations

import time
from datetime import timedelta
from unittest.mock import patch

import pytest
import sqlalchemy as sa

from app import create_app
from app.extensions import db
from app.models import Invitation, Outcome, Response, StaffRole, SuppressionReason, utcnow
from app.services import campaigns, settings, suppressions, triage
from app.tokens import make_survey_token
from config import TestingConfig
from tests.blueprints.test_survey import answers, stored_responses
from tests.conftest import csrf_token, log_in, make_staff
from tests.factories import make_customer


@pytest.fixture
def invitation(app):
    make_customer("ada@example.com", first_name="Ada", phone="+44 20 0000 0001")
    campaign, _ = campaigns.create_campaign(name="Survey", lapsed_days=180, now=utcnow())
    return db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))


@pytest.fixture
def token(invitation):
    return make_survey_token(invitation.reference, invitation.nonce)


@pytest.fixture
def survey_url(token):
    return f"/s/{token}"


def answer(client, survey_url, **overrides):
    page = client.get(survey_url)
    reply = client.post(survey_url, data=answers(page.data, **overrides))
    assert reply.status_code == 303, reply.get_data(as_text=True)
    return client.get(survey_url).get_data(as_text=True)


def expired_token(app, invitation) -> str:
    days = app.config["INVITATION_LINK_DAYS"]
    moment = utcnow() - timedelta(days=days, hours=1)
    with patch("itsdangerous.timed.time.time", return_value=moment.timestamp()):
        return make_survey_token(invitation.reference, invitation.nonce)


# --- changing the answers until staff triage them -------------------------------------------


def test_the_same_link_shows_the_answers_and_lets_them_be_changed(client, survey_url):
    thanks = answer(client, survey_url, win_back_text="A loyalty <b>discount</b>.")
    assert "Your answers" in thanks
    assert "A loyalty &lt;b&gt;discount&lt;/b&gt;." in thanks
    assert "Change my answers" in thanks
    edit_page = client.get(survey_url + "?edit=1")
    body = edit_page.get_data(as_text=True)
    assert '<input id="edit" name="edit" type="hidden" value="1">' in body
    assert "A loyalty &lt;b&gt;discount&lt;/b&gt;." in body  # the stored text, in the textarea
    reply = client.post(
        survey_url, data=answers(edit_page.data, win_back_text="Free delivery.", would_return="yes", edit="1")
    )
    assert reply.status_code == 303
    (response,) = stored_responses()
    assert response.win_back_text == "Free delivery."
    assert response.would_return.value == "yes"


def test_after_triage_the_answers_are_read_only(client, survey_url, invitation):
    answer(client, survey_url)
    edit_page = client.get(survey_url + "?edit=1")  # still editable: the form
    (response,) = stored_responses()
    staff_user = make_staff()
    triage.set_outcome(response.id, Outcome.ACTIONABLE, actor_id=staff_user.id, now=utcnow())
    thanks = client.get(survey_url).get_data(as_text=True)
    assert "Change my answers" not in thanks
    assert "can no longer be changed" in thanks
    assert "Send my answers" not in client.get(survey_url + "?edit=1").get_data(as_text=True)
    # A form opened before triage and sent after it changes nothing.
    client.post(survey_url, data=answers(edit_page.data, win_back_text="Too late.", edit="1"))
    (response,) = stored_responses()
    assert response.win_back_text == "A loyalty discount."
    assert response.outcome == Outcome.ACTIONABLE


def test_changing_to_no_never_suppresses_the_address(client, survey_url):
    answer(client, survey_url)
    assert not suppressions.is_suppressed("ada@example.com")
    edit_page = client.get(survey_url + "?edit=1")
    client.post(survey_url, data=answers(edit_page.data, would_return="never", edit="1"))
    (response,) = stored_responses()
    assert response.suggested_outcome == Outcome.NEVER
    assert suppressions.suppression_for("ada@example.com").reason == SuppressionReason.NEVER


# --- a stale form -------------------------------------------------------------------------


def test_an_expired_form_shows_the_answers_again_with_a_plain_message(app, client, survey_url):
    app.config["WTF_CSRF_TIME_LIMIT"] = 1
    page = client.get(survey_url)
    time.sleep(2.1)
    reply = client.post(
        survey_url, data=answers(page.data, win_back_text="Kept <as typed>", stop_reason="quality")
    )
    assert reply.status_code == 400
    body = reply.get_data(as_text=True)
    assert "This page was open for a long time, so please send it again." in body
    assert "Kept &lt;as typed&gt;" in body
    assert 'checked id="stop_reason-1" name="stop_reason" required type="radio" value="quality"' in body
    assert "We couldn" not in body
    assert "could not be understood" not in body
    assert stored_responses() == []
    # Sent again from the page it got back, it is stored.
    app.config["WTF_CSRF_TIME_LIMIT"] = 3600
    again = client.post(survey_url, data=answers(reply.data, win_back_text="Kept <as typed>"))
    assert again.status_code == 303
    (response,) = stored_responses()
    assert response.win_back_text == "Kept <as typed>"


# --- the thank-you page follows the answer ---------------------------------------------------


def test_no_never_thanks_promises_no_contact_and_asks_one_optional_question(client, survey_url):
    thanks = answer(client, survey_url, would_return="never")
    assert "We won't contact you again" in thanks
    assert "Would you tell us what we did to cause this?" in thanks
    assert suppressions.suppression_for("ada@example.com").reason == SuppressionReason.NEVER
    reply = client.post(
        f"{survey_url}/follow-up",
        data={"csrf_token": csrf_token(thanks), "follow_up_text": "Rude\x07 on the phone."},
    )
    assert reply.status_code == 303
    (response,) = stored_responses()
    assert response.follow_up_text == "Rude on the phone."
    assert "Rude on the phone." in client.get(survey_url).get_data(as_text=True)


@pytest.mark.parametrize("reason", ["moved_or_closed", "no_longer_needed"])
def test_moved_or_no_longer_needed_thanks_and_offers_a_referral_link(client, survey_url, reason):
    thanks = answer(client, survey_url, stop_reason=reason)
    assert "Know someone who might like us?" in thanks
    assert 'href="http://localhost/you-said-we-did"' in thanks
    assert "what we did to cause this" not in thanks


def test_otherwise_thanks_says_what_happens_next_in_the_chosen_channel(client, survey_url):
    thanks = answer(client, survey_url, contact_via="phone", phone="+44 7700 900123")
    assert "will phone you on +44 7700 900123" in thanks
    assert "Know someone" not in thanks


def test_email_is_the_channel_when_chosen(client, survey_url):
    assert "will email you" in answer(client, survey_url)


def test_please_dont_contact_me_is_respected_from_then_on(client, survey_url):
    assert "As you asked, we won't contact you again." in answer(client, survey_url, contact_via="none")
    suppression = suppressions.suppression_for("ada@example.com")
    assert suppression.reason == SuppressionReason.UNSUBSCRIBED
    assert "please don't contact me" in suppression.note
    # So no later campaign invites them.
    campaign, _ = campaigns.create_campaign(name="Later", lapsed_days=180, now=utcnow())
    assert db.session.scalar(sa.select(sa.func.count()).where(Invitation.campaign_id == campaign.id)) == 0


def test_a_missing_phone_number_is_refused_when_phone_is_chosen(client, survey_url):
    page = client.get(survey_url)
    reply = client.post(survey_url, data=answers(page.data, contact_via="phone", phone="  "))
    assert reply.status_code == 400
    assert "Please give a phone number, or choose another way to reach you." in reply.get_data(as_text=True)
    assert stored_responses() == []


# --- suggested outcome ------------------------------------------------------------------------


def test_a_request_on_the_cannot_offer_list_is_suggested_unfeasible(client, survey_url):
    settings.save_unfeasible_list("Free delivery\nshop in  Manchester\n", now=utcnow())
    answer(client, survey_url, win_back_text="Open a SHOP IN MANCHESTER please")
    (response,) = stored_responses()
    assert response.suggested_outcome == Outcome.UNFEASIBLE
    assert "shop in Manchester" in response.suggested_reason
    assert response.outcome is None  # the staff decision stays apart


def test_a_phrase_matches_whole_words_only(app):
    assert settings.matching_phrase("free deliveryman", ["free delivery"]) is None
    assert settings.matching_phrase("Free\ndelivery!", ["free delivery"]) == "free delivery"


def test_no_never_wins_over_the_list_and_anything_else_is_actionable(client, survey_url):
    settings.save_unfeasible_list("discount", now=utcnow())
    answer(client, survey_url, win_back_text="A discount", would_return="never")
    (response,) = stored_responses()
    assert response.suggested_outcome == Outcome.NEVER


def test_admins_edit_the_cannot_offer_list(staff_client):
    page = staff_client.get("/staff/settings/")
    assert page.status_code == 200
    reply = staff_client.post(
        "/staff/settings/",
        data={
            "csrf_token": csrf_token(page.data),
            "unfeasible_list": "Free delivery\n\nfree DELIVERY\nVegan",
        },
    )
    assert reply.status_code == 303
    assert settings.unfeasible_phrases() == ["Free delivery", "Vegan"]
    assert "Free delivery\nVegan" in staff_client.get("/staff/settings/").get_data(as_text=True)


def test_triagers_cannot_open_the_settings(client, app):
    user = make_staff("triager@example.com", StaffRole.TRIAGER)
    log_in(client, user.email)
    assert client.get("/staff/settings/").status_code == 403


# --- the form's CSRF token, bound to its link ---------------------------------------------


def second_link() -> str:
    make_customer("grace@example.com", first_name="Grace")
    campaign, _ = campaigns.create_campaign(name="Second", lapsed_days=180, now=utcnow())
    other = db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))
    return f"/s/{make_survey_token(other.reference, other.nonce)}"


def test_opening_the_form_sets_no_cookie(client, survey_url):
    first, again = client.get(survey_url), client.get(survey_url)  # the template, then the fixed parts
    assert first.status_code == again.status_code == 200
    assert "Set-Cookie" not in first.headers
    assert "Set-Cookie" not in again.headers


def test_a_form_token_is_good_for_its_own_link_only(app, client, survey_url):
    other_url = second_link()
    other_page = client.get(other_url)
    reply = client.post(survey_url, data=answers(other_page.data, win_back_text="Kept"))
    assert reply.status_code == 400
    assert "This page was open for a long time, so please send it again." in reply.get_data(as_text=True)
    assert stored_responses() == []
    assert client.post(other_url, data=answers(other_page.data)).status_code == 303


def test_a_form_without_its_token_or_with_a_forged_one_stores_nothing(client, survey_url):
    page = client.get(survey_url)
    forged = csrf_token(page.data)[:-4] + ("AAAA" if not csrf_token(page.data).endswith("AAAA") else "BBBB")
    for token in (None, "", forged):
        reply = client.post(survey_url, data=answers(page.data, csrf_token=token))
        assert reply.status_code == 400
    assert stored_responses() == []


def test_a_form_served_before_a_key_rotation_still_posts(app, client, survey_url):
    page = client.get(survey_url)
    app.config["SECRET_KEY_FALLBACKS"] = [app.config["SECRET_KEY"]]
    app.config["SECRET_KEY"] = "a brand new key"
    assert client.post(survey_url, data=answers(page.data)).status_code == 303
    assert len(stored_responses()) == 1


def test_a_form_signed_with_a_retired_key_is_refused(app, client, invitation):
    page_url = f"/s/{make_survey_token(invitation.reference, invitation.nonce)}"
    page = client.get(page_url)
    app.config["SECRET_KEY"] = "a brand new key"
    app.config["SECRET_KEY_FALLBACKS"] = []
    new_url = f"/s/{make_survey_token(invitation.reference, invitation.nonce)}"
    assert client.post(new_url, data=answers(page.data)).status_code == 400
    assert stored_responses() == []


# --- fresh links for expired ones ------------------------------------------------------------


def test_an_expired_link_offers_a_fresh_one_sent_to_the_address_on_file(app, client, invitation, smtp):
    token = expired_token(app, invitation)
    page = client.get(f"/s/{token}")
    assert page.status_code == 404
    assert "Email me a fresh link" in page.get_data(as_text=True)
    reply = client.post(f"/s/{token}", data={"fresh_link": "1", "email": "attacker@example.com"})
    assert reply.status_code == 200
    assert "Check your email" in reply.get_data(as_text=True)
    (message,) = smtp.messages
    assert message["To"].addresses[0].addr_spec == "ada@example.com"
    body = message.get_body(("plain",)).get_content()
    fresh = body.split("/s/", 1)[1].split()[0]
    assert fresh != token
    assert client.get(f"/s/{fresh}").status_code == 200


def test_the_fresh_link_reply_is_the_same_whatever_the_link(app, client, invitation, smtp, token):
    expired = expired_token(app, invitation)
    tampered = expired[:-3] + ("AAA" if not expired.endswith("AAA") else "BBB")
    replies = [
        client.post(f"/s/{link}", data={"fresh_link": "1"}) for link in (expired, tampered, "nonsense", token)
    ]
    replies.append(client.post("/u/nonsense", data={"fresh_link": "1"}))
    assert {reply.status_code for reply in replies} == {200}
    assert len({reply.data for reply in replies}) == 1
    assert len(smtp.messages) == 1  # only for the genuine expired link
    assert stored_responses() == []


def test_no_fresh_link_for_a_suppressed_address_or_a_revoked_invitation(app, client, invitation, smtp):
    expired = expired_token(app, invitation)
    suppressions.suppress("ada@example.com", SuppressionReason.UNSUBSCRIBED, utcnow())
    client.post(f"/s/{expired}", data={"fresh_link": "1"})
    assert smtp.messages == []


def test_fresh_links_are_rate_limited_per_visitor(app, client, invitation, smtp):
    statuses = [client.post(f"/s/link{n}", data={"fresh_link": "1"}).status_code for n in range(6)]
    assert statuses == [200] * 5 + [429]
    # The limit is on the button only: answering the survey is not counted.
    token = make_survey_token(invitation.reference, invitation.nonce)
    page = client.get(f"/s/{token}")
    assert client.post(f"/s/{token}", data=answers(page.data)).status_code == 303


def test_fresh_links_are_rate_limited_per_link(app, client, invitation, smtp):
    expired = expired_token(app, invitation)
    statuses = []
    for number in range(4):  # from four different visitors
        reply = client.post(
            f"/s/{expired}", data={"fresh_link": "1"}, environ_base={"REMOTE_ADDR": f"192.0.2.{number}"}
        )
        statuses.append(reply.status_code)
    assert statuses == [200] * 3 + [429]
    assert len(smtp.messages) == 3
    # The limit is on the button only: answering the survey is not counted.
    token = make_survey_token(invitation.reference, invitation.nonce)
    page = client.get(f"/s/{token}")
    assert client.post(f"/s/{token}", data=answers(page.data)).status_code == 303


def test_invalid_link_pages_are_identical_for_expired_and_tampered_links(app, client, invitation):
    expired = expired_token(app, invitation)
    tampered = expired[:-3] + ("AAA" if not expired.endswith("AAA") else "BBB")
    first, second = client.get(f"/s/{expired}"), client.get(f"/s/{tampered}")
    assert first.status_code == second.status_code == 404
    assert first.data == second.data


# --- branding ---------------------------------------------------------------------------------


def test_the_brand_colour_is_served_with_a_readable_text_colour(app, client):
    app_dark = client.get("/brand.css").get_data(as_text=True)
    assert "--brand:#1d4ed8" in app_dark
    assert "--on-brand:#ffffff" in app_dark


@pytest.mark.parametrize(("colour", "text"), [("#ffeb3b", "#111111"), ("#000", "#ffffff")])
def test_light_brand_colours_get_dark_text(database, tmp_path, colour, text):
    from tests.conftest import make_app

    light = make_app(database, tmp_path, 25, BRAND_COLOUR=colour)
    assert f"--on-brand:{text}" in light.test_client().get("/brand.css").get_data(as_text=True)


def test_a_brand_colour_that_is_not_a_colour_refuses_to_start():
    with pytest.raises(RuntimeError, match="BRAND_COLOUR"):
        create_app(TestingConfig, BRAND_COLOUR="red; } body { display:none")


def test_an_https_logo_is_shown_and_allowed_by_the_policy(database, tmp_path):
    from tests.conftest import make_app

    branded = make_app(database, tmp_path, 25, BUSINESS_LOGO_URL="https://cdn.example.com/logo.png")
    page = branded.test_client().get("/s/not-a-link")
    assert '<img class="logo" src="https://cdn.example.com/logo.png" alt="Test Shop">' in page.get_data(
        as_text=True
    )
    assert "img-src 'self' data: https://cdn.example.com;" in page.headers["Content-Security-Policy"]


def test_responses_table_has_the_follow_up_column(app):
    assert "follow_up_text" in Response.__table__.columns


@pytest.mark.parametrize("locale", ["en", "de"])
def test_a_hostile_first_name_is_shown_as_text_in_either_language(client, invitation, survey_url, locale):
    invitation.customer.first_name = '<img src=x onerror="alert(1)">'
    invitation.customer.locale = locale
    db.session.commit()
    body = client.get(survey_url).get_data(as_text=True)
    assert '<img src=x onerror="alert(1)">' not in body
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in body
