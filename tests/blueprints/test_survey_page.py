"""A blank form opened again is served from its fixed parts (app/survey/page.py): the very bytes
the template gives, in every language, for every name and phone number."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from flask import render_template, url_for

from app import i18n
from app.extensions import db
from app.models import Invitation, utcnow
from app.services import campaigns
from app.survey import page
from app.survey.forms import SurveyForm
from app.tokens import make_survey_token
from tests.blueprints.test_survey import answers
from tests.factories import make_customer

CSRF_VALUE = re.compile(rb'(name="csrf_token" type="hidden" value=")[^"]+"')
HOSTILE = "<script>alert('x')</script> & \"Ada\""


def make_invitation(first_name: str = "Ada", phone: str = "", locale: str | None = None) -> Invitation:
    customer = make_customer("ada@example.com", first_name=first_name, phone=phone)
    customer.locale = locale
    db.session.commit()
    campaign, _ = campaigns.create_campaign(name="Survey", lapsed_days=180, now=utcnow())
    return db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))


def survey_url(invitation: Invitation) -> str:
    return f"/s/{make_survey_token(invitation.reference, invitation.nonce)}"


def without_csrf(body: bytes) -> bytes:
    return CSRF_VALUE.sub(rb'\1-"', body)


@pytest.mark.parametrize(
    ("first_name", "phone", "locale"),
    [("Ada", "+44 20 0000 0001", None), ("", "", None), (HOSTILE, "<01> & 2", "de"), ("Jörg", "", "de")],
)
def test_a_form_opened_again_is_the_same_page_as_the_first_time(client, first_name, phone, locale):
    url = survey_url(make_invitation(first_name, phone, locale))
    first = client.get(url)  # records the opening: the whole template
    again = client.get(url)  # from the fixed parts
    assert first.status_code == again.status_code == 200
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert again.headers["Cache-Control"] == "no-store"
    assert without_csrf(again.data) == without_csrf(first.data)
    assert b"<script>alert" not in again.data


@pytest.mark.parametrize("locale", ["en", "de"])
@pytest.mark.parametrize(("first_name", "phone"), [("Ada", "+44 1"), ("", ""), (HOSTILE, HOSTILE)])
def test_the_filled_in_parts_match_the_template_exactly(app, first_name, phone, locale):
    token = "abc.DEF-123_x"
    invitation = make_invitation(first_name, phone)
    with app.test_request_context(f"/s/{token}"):
        i18n.use_customer_locale(locale)
        form = SurveyForm()
        form.phone.data = phone
        expected = render_template("survey/form.html", form=form, invitation=invitation, token=token)
        assert page.blank_form(token, first_name, phone) == expected
        assert page.blank_form(token, first_name, phone) == expected  # from the cache


def test_the_cached_form_still_posts_with_its_csrf_token(client):
    url = survey_url(make_invitation())
    client.get(url)
    again = client.get(url)
    reply = client.post(url, data=answers(again.data))
    assert reply.status_code == 303


def test_flashed_messages_are_still_shown_by_the_template(client, app):
    url = survey_url(make_invitation())
    client.get(url)
    with client.session_transaction() as session:
        session["_flashes"] = [("info", "A message for you")]
    assert b"A message for you" in client.get(url).data
    assert b"A message for you" not in client.get(url).data


@pytest.mark.parametrize("script_root", ["", "/shop", "/winback/app"])
@pytest.mark.parametrize("token", ["abc.DEF-123_x", "with space", "caf\u00e9"])
def test_the_form_action_is_the_url_flask_builds(app, script_root, token):
    for _ in range(2):  # made, then from the parts kept for this script root
        with app.test_request_context(f"/s/{token}", environ_base={"SCRIPT_NAME": script_root}):
            assert page._action(token) == url_for("survey.submit", token=token)
