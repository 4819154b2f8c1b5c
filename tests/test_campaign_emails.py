"""The bulk composer of campaign emails (emails.compose_campaign_message) gives the same email
as the full composer (compose_campaign_email, serialised by emails.prepare): same headers, same
text and HTML, whatever the names, codes and templates hold."""

from __future__ import annotations

import re
import smtplib
from email import policy
from email.parser import BytesParser
from email.utils import parsedate_to_datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import emails
from app.models import Campaign, Customer, OfferKind
from app.services import campaign_content
from app.tokens import read_survey_token

# A survey link's token carries the second it was made: two composers a second apart differ there.
SURVEY_TOKEN = re.compile(r"/s/[A-Za-z0-9_.\-]+")
IGNORED = {"Content-Type", "Message-ID", "Date"}

# Names are at most 100 characters (the column's length, which imports keep to).
names = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=60, max_size=100),
    st.sampled_from(
        [
            "",
            "Zoë",
            "O'Brien",
            '"Ada", <ada@evil.example>',
            "=?utf-8?q?Bcc:_x@evil.example?=",
            "Ada\r\nBcc: x@evil.example",
            "<script>alert(1)</script> & co",
            "李小龍",
            "\u202eevil\u2028line",
            ". leading dot",
            "x" * 100,
            "é" * 100,
        ]
    ),
)
SUBJECTS = [
    "",
    "Hi {{ first_name }}, {{ offer_code }} is yours",
    "{{ first_name|upper }} \u2013 wir vermissen dich bei {{ business_name }}",
    "{% if first_name %}{{ first_name }}, {% endif %}come back",
]
BODIES = [
    "",
    "Hello {{ first_name }} & friends,\n\n**{{ offer_code }}** ✓\n\n{{ link }}\n\n. a dot line",
    "One long paragraph " + "word " * 400 + "{{ first_name }} {{ link }}",
    "Grüße, {{ first_name|title }}!\n\n- {{ offer_code|default('none') }}\n- two\n\n[Go]({{ link }})",
]


def parsed(data: bytes):
    return BytesParser(policy=policy.default).parsebytes(data)


def content(message, kind: str) -> str:
    text = message.get_body(preferencelist=(kind,)).get_content()
    return SURVEY_TOKEN.sub("/s/TOKEN", text.replace("\r\n", "\n"))


def assert_same_email(full: bytes, fast: bytes) -> None:
    expected, got = parsed(full), parsed(fast)
    assert got.defects == []
    assert all(not part.defects for part in got.walk())
    assert sorted(got.keys()) == sorted(expected.keys())
    for key in set(expected.keys()) - IGNORED:
        if key == "To":
            assert [(a.display_name, a.addr_spec) for a in got[key].addresses] == [
                (a.display_name, a.addr_spec) for a in expected[key].addresses
            ]
        else:
            assert str(got[key]) == str(expected[key]), key
    assert (
        abs((parsedate_to_datetime(got["Date"]) - parsedate_to_datetime(expected["Date"])).total_seconds())
        < 3
    )
    assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", got["Message-ID"])
    assert [part.get_content_type() for part in got.walk()] == [
        part.get_content_type() for part in expected.walk()
    ]
    assert content(got, "plain") == content(expected, "plain")
    assert content(got, "html") == content(expected, "html")
    for line in fast.split(b"\r\n"):
        assert len(line) <= 998
    assert b"\n" not in fast.replace(b"\r\n", b"")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first_name=names,
    last_name=names,
    offer_code=st.one_of(st.just(""), st.text(max_size=30), st.just("CODE-ÄÖÜ-15")),
    subject=st.sampled_from(SUBJECTS),
    body=st.sampled_from(BODIES),
    reminder=st.booleans(),
    locale=st.sampled_from([None, "en", "de", "fr"]),
)
def test_the_bulk_composer_gives_the_full_composers_email(
    app, first_name, last_name, offer_code, subject, body, reminder, locale
):
    campaign = Campaign(
        id=7, name="Spring", subject=subject, body=body, offer_kind=OfferKind.SHARED, offer_code=offer_code
    )
    customer = Customer(
        email="ada.lovelace+x@example.com", first_name=first_name, last_name=last_name, locale=locale
    )
    code = campaign_content.offer_code_for(campaign, None)
    message = emails.compose_campaign_email(
        campaign,
        customer,
        reference="ref-1",
        nonce="nonce-1",
        offer_code=code,
        recipient=emails._recipient(customer),
        reminder=reminder,
    )
    full = emails.prepare(message)
    fast = emails.compose_campaign_message(
        campaign, customer, reference="ref-1", nonce="nonce-1", offer_code=code, reminder=reminder
    )
    assert_same_email(full.data, fast.data)
    assert (fast.sender, fast.recipients) == (full.sender, ["ada.lovelace+x@example.com"])
    token = SURVEY_TOKEN.search(parsed(fast.data).get_body(preferencelist=("plain",)).get_content()).group()
    assert read_survey_token(token[3:]) == ("ref-1", "nonce-1")


def test_settings_that_are_not_ascii_and_a_mailto_unsubscribe_come_out_alike(app):
    app.config.update(
        BUSINESS_NAME="Café Müller",
        BUSINESS_POSTAL_ADDRESS="Königstraße 1, Köln",
        MAIL_UNSUBSCRIBE_ADDRESS="unsubscribe@example.com",
    )
    campaign = Campaign(id=3, name="C", subject="", body="", offer_kind=OfferKind.NONE, offer_code="")
    customer = Customer(email="jo@example.com", first_name="Jo", last_name="Ö", locale="de")
    message = emails.compose_campaign_email(
        campaign, customer, reference="r", nonce="n", offer_code="", recipient=emails._recipient(customer)
    )
    fast = emails.compose_campaign_message(campaign, customer, reference="r", nonce="n", offer_code="")
    assert_same_email(emails.prepare(message).data, fast.data)
    assert "mailto:unsubscribe@example.com" in parsed(fast.data)["List-Unsubscribe"]


def test_an_address_that_is_not_ascii_goes_through_the_full_composer(app):
    campaign = Campaign(id=3, name="C", subject="", body="", offer_kind=OfferKind.NONE, offer_code="")
    customer = Customer(email="jurgen@bücher.example", first_name="Jürgen", last_name="", locale=None)
    fast = emails.compose_campaign_message(campaign, customer, reference="r", nonce="n", offer_code="")
    message = emails.compose_campaign_email(
        campaign, customer, reference="r", nonce="n", offer_code="", recipient=emails._recipient(customer)
    )
    assert_same_email(emails.prepare(message).data, fast.data)
    assert fast.recipients == emails.prepare(message).recipients


@given(
    address=st.one_of(
        st.emails(),
        st.text(max_size=30),
        st.sampled_from(["Ada <ada@example.com>", '"a b"@example.com', "a@b", "<a@b>", "a@b (x)"]),
    )
)
def test_envelope_addresses_are_quoted_as_smtplib_quotes_them(address):
    assert emails._quoted(address) == smtplib.quoteaddr(address)
