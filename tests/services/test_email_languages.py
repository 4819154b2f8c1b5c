"""The emails a customer receives speak their stored language (English or German; anything else,
or nothing, is the default, English): the default subject and body, the footer, the button, the
reminder prefix, the fresh-link email and a test's notice, down to what a real SMTP server
receives. A subject or body that staff wrote is sent as written; the headers are the same in every
language."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from unittest.mock import patch

import pytest
import sqlalchemy as sa
from flask_babel import force_locale, gettext

from app.extensions import db
from app.models import Customer, Invitation, utcnow
from app.services import campaign_content, campaign_preview, campaigns
from app.tokens import make_survey_token
from tests.factories import make_customer

GERMAN_SUBJECT = "Sie fehlen uns bei Test Shop: Was müssten wir tun, um Sie zurückzugewinnen?"
ENGLISH_SUBJECT = "We miss you at Test Shop: what would it take to win you back?"
GERMAN_FOOTER = "Sie erhalten diese E-Mail, weil Sie bei uns gekauft haben."
ENGLISH_FOOTER = "You received this because you bought from us."


def customer(email: str, locale: str | None, first_name: str = "Ada") -> Customer:
    made = make_customer(email, first_name=first_name)
    made.locale = locale
    db.session.commit()
    return made


def parts(message) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text.replace("\r\n", "\n"), html.replace("\r\n", "\n")


def by_address(smtp) -> dict[str, object]:
    return {str(message["To"].addresses[0].addr_spec): message for message in smtp.messages}


def sent(smtp, **options) -> dict[str, object]:
    """Create a campaign of every lapsed customer with these options, send it, return what the
    SMTP server received by address."""
    campaign, _ = campaigns.create_campaign(name="Languages", lapsed_days=180, now=utcnow(), **options)
    campaigns.send_campaign(campaign.id)
    return by_address(smtp)


def test_a_german_customer_gets_the_default_email_in_german_and_an_english_one_in_english(app, smtp):
    customer("anna@example.com", "de_DE", first_name="Anna")
    customer("ada@example.com", "en")
    received = sent(smtp)

    german, english = received["anna@example.com"], received["ada@example.com"]
    assert german["Subject"] == GERMAN_SUBJECT
    assert english["Subject"] == ENGLISH_SUBJECT
    german_text, german_html = parts(german)
    english_text, english_html = parts(english)

    assert german_text.startswith("Hallo Anna,\n\nSie haben uns bei Test Shop gefehlt.\n")
    assert "Was müssten wir tun, um Sie zurückzugewinnen? Sagen Sie es uns in einer Minute:" in german_text
    assert "Herzliche Grüße\nTest Shop\n" in german_text
    assert english_text.startswith("Hello Ada,\n\nWe've missed you at Test Shop.\n")
    for text, html, footer, unsubscribe in (
        (german_text, german_html, GERMAN_FOOTER, "Abmelden"),
        (english_text, english_html, ENGLISH_FOOTER, "Unsubscribe"),
    ):
        assert f"Test Shop, 1 Test Street, Testville\n{footer} {unsubscribe}: http://localhost/u/" in text
        assert footer in html
        assert re.search(rf'<a href="http://localhost/u/[^"]+" style="color:#555;">{unsubscribe}</a>', html)
    assert "Sie haben uns bei Test Shop gefehlt." in german_html
    assert re.search(r'href="http://localhost/s/[^"]+">Sagen Sie uns, was helfen würde</a>', german_html)
    assert re.search(r'href="http://localhost/s/[^"]+">Tell us what would help</a>', english_html)
    assert '<html lang="de">' in german_html
    assert '<html lang="en">' in english_html
    # Nothing of one language leaks into the other.
    for english_words in ("We've missed you", "Tell us what would help", ENGLISH_FOOTER, "Unsubscribe"):
        assert english_words not in german_text + german_html
    for german_words in ("gefehlt", "Sagen Sie uns", GERMAN_FOOTER, "Abmelden"):
        assert german_words not in english_text + english_html


def test_the_headers_are_the_same_in_every_language(app, smtp):
    app.config["MAIL_UNSUBSCRIBE_ADDRESS"] = "unsubscribe@example.com"
    customer("anna@example.com", "de")
    customer("ada@example.com", "en")
    received = sent(smtp)

    german, english = received["anna@example.com"], received["ada@example.com"]
    for message in (german, english):
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        https_link, mailto = re.findall(r"<([^>]+)>", message["List-Unsubscribe"])
        assert https_link.startswith("http://localhost/u/")
        assert https_link in parts(message)[0]  # the footer's link is the header's
        assert mailto == "mailto:unsubscribe@example.com?subject=unsubscribe"
        assert re.fullmatch(r"<[^@>]+@example\.com>", message["Message-ID"])
    assert german["List-Id"] == english["List-Id"]
    assert re.fullmatch(r"Test Shop <campaign-\d+\.example\.com>", german["List-Id"])
    assert german["Message-ID"] != english["Message-ID"]
    assert sorted(german.keys()) == sorted(english.keys())


@pytest.mark.parametrize("stored", [None, "", "fr", "pt-BR", "xx_unknown"])
def test_an_unknown_or_empty_locale_gets_the_default_language(app, smtp, stored):
    customer("ada@example.com", stored)
    message = sent(smtp)["ada@example.com"]
    text, html = parts(message)
    assert message["Subject"] == ENGLISH_SUBJECT
    assert text.startswith("Hello Ada,\n\nWe've missed you at Test Shop.\n")
    assert ENGLISH_FOOTER in text
    assert '<html lang="en">' in html


def test_a_staff_written_subject_and_body_are_sent_as_written(app, smtp):
    customer("anna@example.com", "de", first_name="Anna")
    customer("ada@example.com", "en")
    body = (
        "Hi {{ first_name }}, we have news from {{ business_name }}.\n\n"
        "We've missed you. Thank you,\n\n{{ link }}"
    )
    received = sent(smtp, subject="A word from {{ business_name }}", body=body)

    german_text, german_html = parts(received["anna@example.com"])
    english_text, english_html = parts(received["ada@example.com"])
    assert received["anna@example.com"]["Subject"] == "A word from Test Shop"
    written = "Hi Anna, we have news from Test Shop.\n\nWe've missed you. Thank you,\n\nhttp://localhost/s/"
    assert german_text.startswith(written)
    assert english_text.startswith(written.replace("Anna", "Ada"))
    assert "Hi Anna, we have news from Test Shop." in german_html
    # The parts Winback adds are still in the customer's language.
    assert GERMAN_FOOTER in german_text
    assert re.search(r'href="http://localhost/s/[^"]+">Sagen Sie uns, was helfen würde</a>', german_html)
    # The same body makes the same HTML skeleton for both: the button's label is not shared.
    assert re.search(r'href="http://localhost/s/[^"]+">Tell us what would help</a>', english_html)


def test_a_body_in_german_written_by_staff_is_not_translated_back_for_an_english_customer(app, smtp):
    customer("ada@example.com", "en")
    body = "Hallo {{ first_name }}, was würde Sie zurückbringen?\n\n[Hier antworten]({{ link }})"
    message = sent(smtp, subject="Wir vermissen Sie", body=body)["ada@example.com"]
    text, html = parts(message)
    assert message["Subject"] == "Wir vermissen Sie"
    assert text.startswith("Hallo Ada, was würde Sie zurückbringen?\n\n[Hier antworten](http://localhost/s/")
    assert ">Hier antworten</a>" in html
    assert ENGLISH_FOOTER in text


def test_the_default_body_with_an_offer_is_in_german_too(app, smtp):
    customer("anna@example.com", "de", first_name="Anna")
    text, html = parts(sent(smtp, offer_code="WIEDER-10")["anna@example.com"])
    sentence = "Falls Sie wiederkommen, können Sie den Code WIEDER-10 bei Ihrer nächsten Bestellung einlösen."
    assert sentence in text
    assert sentence in html


def test_a_customer_without_a_first_name_is_greeted_in_their_language(app, smtp):
    customer("anna@example.com", "de", first_name="")
    text, _ = parts(sent(smtp)["anna@example.com"])
    assert text.startswith("Hallo,\n\n")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now=None) -> None:
        self.now = now or utcnow()

    def __call__(self):
        return self.now


def test_the_reminder_prefix_is_in_the_customers_language(app, smtp):
    start = Clock()
    customer("anna@example.com", "de")
    customer("ada@example.com", "en")
    campaign, _ = campaigns.create_campaign(
        name="Reminded", lapsed_days=180, now=start.now, reminder_days=[4]
    )
    assert campaigns.send_campaign(campaign.id, clock=start).sent == 2
    first = by_address(smtp)
    smtp.clear()

    assert campaigns.send_due_reminders(clock=Clock(start.now + timedelta(days=4))).sent == 2
    reminders = by_address(smtp)
    assert reminders["anna@example.com"]["Subject"] == "Erinnerung: " + GERMAN_SUBJECT
    assert reminders["ada@example.com"]["Subject"] == "Reminder: " + ENGLISH_SUBJECT
    assert first["anna@example.com"]["Subject"] == GERMAN_SUBJECT
    german_text, german_html = parts(reminders["anna@example.com"])
    assert german_text.startswith("Hallo Ada,\n\nSie haben uns bei Test Shop gefehlt.")
    assert GERMAN_FOOTER in german_text
    assert f"<title>Erinnerung: {GERMAN_SUBJECT}</title>" in german_html
    for address in ("anna@example.com", "ada@example.com"):
        assert reminders[address]["List-Unsubscribe"] == first[address]["List-Unsubscribe"]
        assert reminders[address]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_reminder_of_a_staff_written_subject_keeps_it_after_the_prefix(app, smtp):
    start = Clock()
    customer("anna@example.com", "de")
    campaign, _ = campaigns.create_campaign(
        name="Reminded", lapsed_days=180, subject="Neues von uns", now=start.now, reminder_days=[4]
    )
    campaigns.send_campaign(campaign.id, clock=start)
    smtp.clear()
    campaigns.send_due_reminders(clock=Clock(start.now + timedelta(days=4)))
    (reminder,) = smtp.messages
    assert reminder["Subject"] == "Erinnerung: Neues von uns"


def test_the_fresh_link_email_is_in_the_customers_language(app, client, smtp):
    customer("anna@example.com", "de", first_name="Anna")
    campaign, _ = campaigns.create_campaign(name="Survey", lapsed_days=180, now=utcnow())
    invitation = db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))
    expired_at = utcnow() - timedelta(days=app.config["INVITATION_LINK_DAYS"], hours=1)
    with patch("itsdangerous.timed.time.time", return_value=expired_at.timestamp()):
        token = make_survey_token(invitation.reference, invitation.nonce)

    reply = client.post(f"/s/{token}", data={"fresh_link": "1"}, headers={"Accept-Language": "en"})
    assert reply.status_code == 200
    (message,) = smtp.messages
    text, html = parts(message)
    assert message["Subject"] == GERMAN_SUBJECT
    assert text.startswith("Hallo Anna,\n\nSie haben uns bei Test Shop gefehlt.")
    assert GERMAN_FOOTER in text
    assert "Sagen Sie uns, was helfen würde" in html
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_the_preview_and_the_test_email_show_the_first_customers_language(app, smtp):
    customer("anna@example.com", "de", first_name="Anna")
    campaign, _ = campaigns.create_campaign(name="Herbst", lapsed_days=180, now=utcnow())

    preview = campaign_preview.preview(campaign.id)
    assert preview.subject == GERMAN_SUBJECT
    assert preview.text.startswith("Hallo Anna,")

    campaign_preview.send_test(campaign.id, to="staff@example.com", actor_id=None, now=utcnow())
    (message,) = smtp.messages
    text, html = parts(message)
    assert message["Subject"] == "[Test] " + GERMAN_SUBJECT
    notice = "Dies ist ein Test der Kampagne „Herbst“, nur an Sie gesendet."
    assert text.startswith(notice)
    assert notice in html


def test_the_test_notice_is_in_english_for_an_english_audience(app, smtp):
    customer("ada@example.com", None)
    campaign, _ = campaigns.create_campaign(name="Autumn", lapsed_days=180, now=utcnow())
    campaign_preview.send_test(campaign.id, to="staff@example.com", actor_id=None, now=utcnow())
    (message,) = smtp.messages
    assert parts(message)[0].startswith("This is a test of the campaign “Autumn”, sent to you alone.")


@pytest.mark.parametrize("locale", ["en", "de"])
def test_every_languages_default_subject_and_body_pass_the_template_checks(app, locale):
    with app.test_request_context(), force_locale(locale):
        subject = gettext(campaign_content.DEFAULT_SUBJECT)
        body = gettext(campaign_content.DEFAULT_BODY)
    if locale != "en":
        assert (subject, body) != (campaign_content.DEFAULT_SUBJECT, campaign_content.DEFAULT_BODY)
    # The checks staff templates pass: placeholders only, a link that reaches every customer,
    # a subject that fits with a long name.
    checked = campaign_content.validate_templates(subject, body, offer_code="CODE")
    assert checked.subject == subject


def test_a_background_worker_sends_the_german_customer_a_german_reminder(worker_app, smtp):
    with worker_app.app_context():
        start = Clock()
        customer("anna@example.com", "de")
        campaign, _ = campaigns.create_campaign(
            name="Reminded", lapsed_days=180, now=start.now, reminder_days=[4]
        )
        campaigns.send_campaign(campaign.id, clock=start)
        smtp.clear()
        invitation = db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))
        invitation.next_reminder_at = utcnow() - timedelta(seconds=1)  # four days went by
        db.session.commit()

        campaigns.tick(enqueue=True)

        deadline = time.monotonic() + 30
        while not smtp.messages:
            assert time.monotonic() < deadline, "the worker sent no reminder"
            time.sleep(0.1)
        (reminder,) = smtp.messages
        assert reminder["Subject"] == "Erinnerung: " + GERMAN_SUBJECT
        assert GERMAN_FOOTER in parts(reminder)[0]
