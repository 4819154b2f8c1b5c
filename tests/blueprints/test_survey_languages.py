"""The survey speaks the customer's language (English or German): their stored locale first,
then the browser's; staff pages stay in English. The German catalogue is complete: every string
marked for translation, in the survey, its pages and the emails, has a German translation."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
import sqlalchemy as sa
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from app import emails
from app.extensions import db
from app.i18n import supported_locale
from app.models import Invitation, utcnow
from app.services import campaign_content, campaigns
from app.survey import choices
from app.survey.forms import PHONE_NEEDED
from app.tokens import make_survey_token, make_unsubscribe_token
from tests.blueprints.test_survey import answers
from tests.factories import make_customer

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "app" / "translations" / "de" / "LC_MESSAGES"
GERMAN = {"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}


def make_invitation(locale: str | None) -> Invitation:
    customer = make_customer("ada@example.com", first_name="Ada")
    customer.locale = locale
    db.session.commit()
    campaign, _ = campaigns.create_campaign(name="Survey", lapsed_days=180, now=utcnow())
    return db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))


def survey_url(invitation: Invitation) -> str:
    return f"/s/{make_survey_token(invitation.reference, invitation.nonce)}"


def text(reply) -> str:
    return html.unescape(reply.get_data(as_text=True))


def test_a_german_customer_gets_the_form_in_german(client, app):
    page = client.get(survey_url(make_invitation("de_DE")))
    body = text(page)
    assert '<html lang="de">' in body
    assert "Hallo Ada," in body
    assert "Warum haben Sie aufgehört, bei uns zu kaufen?" in body
    assert "Nein, niemals" in body
    assert "Antworten senden" in body
    assert "What made you stop buying from us?" not in body


def test_the_stored_locale_wins_over_the_browser(client, app):
    page = client.get(survey_url(make_invitation("en")), headers=GERMAN)
    assert "What made you stop buying from us?" in text(page)


def test_without_a_stored_locale_the_browser_decides(client, app):
    url = survey_url(make_invitation(None))
    assert "Warum haben Sie aufgehört" in text(client.get(url, headers=GERMAN))
    assert "What made you stop" in text(client.get(url, headers={"Accept-Language": "fr, en;q=0.5"}))


def test_errors_and_thanks_are_in_german_too(client, app):
    url = survey_url(make_invitation("de"))
    page = client.get(url)
    reply = client.post(url, data=answers(page.data, stop_reason=None, contact_via="phone", phone=""))
    body = text(reply)
    assert "Bitte prüfen Sie Ihre Antworten" in body
    assert "Bitte wählen Sie, warum Sie aufgehört haben." in body
    assert "Bitte geben Sie eine Telefonnummer an" in body
    client.post(url, data=answers(page.data, would_return="never"))
    thanks = text(client.get(url))
    assert "Wir werden Sie nicht wieder kontaktieren." in thanks
    assert "Würden Sie uns sagen, was wir falsch gemacht haben?" in thanks


def test_the_invalid_link_page_follows_the_browser_and_stays_identical_for_every_bad_link(client, app):
    first = client.get("/s/nonsense", headers=GERMAN)
    second = client.get(f"/s/{make_survey_token('unknown', 'unknown')}", headers=GERMAN)
    assert first.status_code == second.status_code == 404
    assert first.data == second.data
    assert "Dieser Link funktioniert nicht" in text(first)


def test_the_unsubscribe_page_speaks_the_customers_language(client, app):
    invitation = make_invitation("de")
    page = client.get(f"/u/{make_unsubscribe_token(invitation.reference)}")
    assert "Keine E-Mails mehr von Test Shop?" in text(page)


def test_staff_pages_stay_in_english(client, app):
    page = client.get("/staff/login", headers=GERMAN)
    assert '<html lang="en">' in text(page)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [("de", "de"), ("de-AT", "de"), ("DE_de", "de"), ("en_GB", "en"), ("fr", None), ("", None)],
)
def test_stored_locales_are_read_loosely(stored, expected):
    assert supported_locale(stored) == expected


def test_every_survey_label_and_message_has_a_german_translation():
    with (CATALOGUE / "messages.po").open("rb") as handle:
        catalogue = read_po(handle, locale="de")
    wanted = [
        choices.QUESTION_STOP_REASON,
        choices.QUESTION_WIN_BACK,
        choices.QUESTION_WOULD_RETURN,
        choices.QUESTION_CONTACT,
        choices.QUESTION_MAY_QUOTE,
        choices.QUESTION_FOLLOW_UP,
        choices.QUESTION_REFERRAL,
        choices.LABEL_BETTER_ELSEWHERE,
        choices.LABEL_PHONE,
        PHONE_NEEDED,
        *choices.STOP_REASON_LABELS.values(),
        *choices.WOULD_RETURN_LABELS.values(),
        *choices.CONTACT_LABELS.values(),
        campaign_content.DEFAULT_SUBJECT,
        campaign_content.DEFAULT_BODY,
        campaign_content.BUTTON_LABEL,
        emails.TEST_NOTICE,
        emails.REMINDER_PREFIX,
    ]
    missing = [msgid for msgid in wanted if not (catalogue.get(msgid) and catalogue.get(msgid).string)]
    assert missing == []
    untranslated = [message.id for message in catalogue if message.id and not message.string]
    assert untranslated == []


def marked_for_translation() -> dict[str, str]:
    """Every string marked for translation in app/ (gettext, _, N_...) and templates/ (_ and
    trans blocks), with the first place it is marked."""
    found: dict[str, str] = {}
    for folder, method_map in (
        ("app", [("**.py", "python")]),
        ("templates", [("**.html", "jinja2"), ("**.txt", "jinja2")]),
    ):
        for filename, line, message, _comments, _context in extract_from_dir(ROOT / folder, method_map):
            msgid = message if isinstance(message, str) else message[0]
            found.setdefault(msgid, f"{folder}/{filename}:{line}")
    return found


def test_every_string_marked_for_translation_has_a_german_translation():
    with (CATALOGUE / "messages.po").open("rb") as handle:
        catalogue = read_po(handle, locale="de")
    marked = marked_for_translation()
    assert "You received this because you bought from us." in marked  # the email templates
    assert campaign_content.DEFAULT_BODY in marked  # N_ in the code
    missing = [f"{where}: {msgid!r}" for msgid, where in marked.items() if not catalogue.get(msgid)]
    assert missing == [], "add these to messages.po, translated, then compile it"


def test_the_compiled_catalogue_matches_its_source():
    with (CATALOGUE / "messages.po").open("rb") as handle:
        source = {message.id: message.string for message in read_po(handle) if message.id}
    with (CATALOGUE / "messages.mo").open("rb") as handle:
        compiled = {message.id: message.string for message in read_mo(handle) if message.id}
    assert compiled == source, "run: pybabel compile -d app/translations"
