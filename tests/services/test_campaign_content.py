"""Campaign email content: placeholders in a sandbox, text and HTML parts from one source, hostile
values kept harmless, templates checked when saved, and offers (shared, or unique codes handed out
once each), down to what a real SMTP server receives."""

from __future__ import annotations

import re
from html import escape

import pytest
import sqlalchemy as sa
from jinja2.exceptions import SecurityError

from app.exceptions import InvalidInput
from app.extensions import db
from app.models import Campaign, CampaignStatus, Invitation, OfferCode, OfferKind, utcnow
from app.services import campaign_content, campaigns
from app.services.campaign_content import Values
from tests.factories import make_customer

LINK = "https://shop.example/s/abc_def._ghi_.xyz"


def parts(message) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text.replace("\r\n", "\n"), html.replace("\r\n", "\n")


def sent_by_address(smtp) -> dict[str, object]:
    return {str(message["To"].addresses[0].addr_spec): message for message in smtp.messages}


# --- rendering ------------------------------------------------------------------------------


def test_placeholders_are_filled_in_the_subject_and_both_parts(app):
    values = Values("Ada", "Test Shop", LINK, "SAVE10")
    body = "Hi {{ first_name }} from {{ business_name }}.\n\nYour code: {{ offer_code }}\n\n{{ link }}"

    subject = campaign_content.render_subject("{{ first_name }}, {{ business_name }} misses you", values)
    text = campaign_content.render_body_text(body, values)
    html = campaign_content.render_body_html(body, values)

    assert subject == "Ada, Test Shop misses you"
    assert text == f"Hi Ada from Test Shop.\n\nYour code: SAVE10\n\n{LINK}\n"
    assert "Hi Ada from Test Shop." in html
    assert "Your code: SAVE10" in html
    # A link alone on its line is a button to the survey, its address untouched by Markdown.
    assert re.search(rf'<a style="[^"]+" href="{re.escape(LINK)}">Tell us what would help</a>', html)


def test_light_markdown_makes_the_html_part_and_stays_as_typed_in_the_text_part(app):
    values = Values("Ada", "Test Shop", LINK)
    body = "**Thank you**, {{ first_name }}.\nSee you soon\n\n[Answer here]({{ link }})"
    assert campaign_content.render_body_text(body, values).startswith("**Thank you**, Ada.\nSee you soon")
    html = campaign_content.render_body_html(body, values)
    assert "<strong>Thank you</strong>, Ada.<br>" in html
    assert f'href="{LINK}">Answer here</a>' in html


def test_the_default_body_asks_the_survey_question_and_mentions_a_code_only_when_there_is_one(app):
    with_code = campaign_content.render_body_text("", Values("Ada", "Test Shop", LINK, "SAVE10"))
    without = campaign_content.render_body_text("", Values("", "Test Shop", LINK, ""))
    for text in (with_code, without):
        assert "We really valued your custom. What would it take to win you back?" in text
        assert LINK in text
    assert with_code.startswith("Hello Ada,\n\n")
    assert without.startswith("Hello,\n\n")
    assert "SAVE10" in with_code
    assert "code" not in without
    assert "\n\n\n" not in with_code + without


@pytest.mark.parametrize(
    "name",
    [
        "<script>alert(1)</script>",
        "<em>Ada</em>",
        "[Click here](https://evil.example)",
        "<https://evil.example>",
        "**Ada** _x_ `y`",
        "# Heading",
        "Ada\r\nBcc: everyone@example.com",
        'Ada" onmouseover="alert(1)',
    ],
)
def test_hostile_names_are_text_in_every_part_and_never_a_header(app, name):
    values = Values(name, "Test Shop", LINK)
    body = 'Hello {{ first_name }}!\n\n[{{ first_name }}]({{ link }} "{{ first_name }}")\n\n{{ link }}'
    html = campaign_content.render_body_html(body, values)
    subject = campaign_content.render_subject("Hi {{ first_name }}", values)

    assert "\r" not in subject
    assert "\n" not in subject
    assert "<script" not in html
    assert "<em>" not in html
    assert "<strong>" not in html
    assert "<h" not in html.replace("<hr", "")
    assert all(href == LINK for href in re.findall(r'href="([^"]*)"', html))
    assert "onmouseover=" not in html.replace("onmouseover=&quot;", "")
    assert escape(f"Hello {name.replace(chr(13) + chr(10), ' ')}!") in html


def test_a_value_cannot_choose_where_a_link_goes(app):
    body = "[Shop now](https://shop.example/discount/{{ offer_code }}) [me]({{ first_name }})\n\n{{ link }}"
    html = campaign_content.render_body_html(body, Values("javascript:alert(1)", "S", LINK, "A B/../x"))
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs == ["https://shop.example/discount/A%20B%2F..%2Fx", "javascript%3Aalert%281%29", LINK]


def test_hostile_markup_in_the_body_is_sanitised(app):
    body = (
        "<script>alert(1)</script><img src=x onerror=alert(1)>"
        '<a href="javascript:alert(1)">x</a> <iframe src="https://evil.example"></iframe>\n\n{{ link }}'
    )
    campaign_content.validate_templates("Hi", body)
    html = campaign_content.render_body_html(body, Values("Ada", "S", LINK))
    for forbidden in ("<script", "alert(1)</script", "onerror", "javascript:", "<iframe", "<img"):
        assert forbidden not in html


# --- checking templates ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("Hello\n\n{{ foo }}\n{{ link }}", "body: unknown placeholder {{ foo }} on line 3"),
        ("{{ link }}\n{{ first_name }\n", "body: syntax error on line 2"),
        ("{{ link }}\n{% if first_name %}\nHi", "body: syntax error on line 3"),
        ("{{ link }}\n{{ customer.email }}", "body: unknown placeholder {{ customer }} on line 2"),
        ("Hi there", "body: must contain {{ link }}"),
        ("{% if first_name %}{{ link }}{% endif %}", "body: {{ link }} must reach every customer"),
    ],
)
def test_template_mistakes_are_refused_naming_the_field_and_line(app, body, message):
    with pytest.raises(InvalidInput) as refused:
        campaign_content.validate_templates("Hello", body)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize(
    "expression",
    [
        "{{ link.__class__ }}",
        "{{ link.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__.__base__ }}",
        "{{ first_name|attr('__class__') }}",
        "{{ link.upper() }}",
        "{{ first_name['__class__'] }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ range(100000) }}",
        "{{ config }}",
        "{{ self }}",
        "{% for x in first_name %}{{ x }}{% endfor %}",
        "{% set link = 'https://evil.example' %}",
        "{% include 'base.html' %}",
        "{% import 'x' as y %}",
        "{{ 'a' * 999999999 }}",
        "{{ first_name|format('%s') }}",
    ],
)
def test_the_sandbox_refuses_attribute_method_and_statement_tricks(app, expression):
    with pytest.raises(InvalidInput, match="on line 1"):
        campaign_content.validate_templates("Hello", f"{expression}\n\n{{{{ link }}}}")
    with pytest.raises(InvalidInput):
        campaign_content.validate_templates(expression, "{{ link }}")


def test_the_environment_is_a_sandbox_of_its_own_even_past_the_checks(app):
    environment = campaign_content._environment("text")
    assert environment is not app.jinja_env
    template = environment.from_string("{{ link.__class__.__mro__ }}")
    with pytest.raises(SecurityError):
        template.render(link="x")


def test_the_subject_is_one_line_of_at_most_200_characters_with_a_long_name(app):
    with pytest.raises(InvalidInput, match="subject: must be a single line"):
        campaign_content.validate_templates("Hi\r\nBcc: x@example.com", "{{ link }}")
    fits = "x" * 170
    assert campaign_content.validate_templates(fits + "{{ first_name }}", "{{ link }}")
    with pytest.raises(InvalidInput, match="at most 200 characters once the placeholders are filled in"):
        campaign_content.validate_templates("x" * 172 + "{{ first_name }}", "{{ link }}")


def test_an_empty_or_unchanged_body_is_stored_as_the_default(app):
    assert campaign_content.validate_templates("", "").body == ""
    typed = campaign_content.DEFAULT_BODY.replace("\n", "\r\n")
    assert campaign_content.validate_templates("", typed).body == ""
    own = campaign_content.validate_templates(" Hi ", "Hello\r\n\r\n{{ link }}\r\n")
    assert own == campaign_content.Content(subject="Hi", body="Hello\n\n{{ link }}")


# --- offer codes ----------------------------------------------------------------------------


def test_codes_are_read_one_per_line_or_from_a_one_column_csv(app):
    assert campaign_content.parse_offer_codes(b"AAA-1\nBBB-2\r\nCCC-3\n\n\n") == ["AAA-1", "BBB-2", "CCC-3"]
    csv_file = '\ufeffCode\n"AAA-1"\n BBB-2 \nCCC-3,\n'.encode()
    assert campaign_content.parse_offer_codes(csv_file) == ["AAA-1", "BBB-2", "CCC-3"]


def test_blank_lines_repeats_and_bad_codes_are_reported_by_line(app):
    data = "AAA\n\nBBB\naaa\nwith space\nx,y\n" + "Z" * 101 + "\nCCC\n"
    with pytest.raises(InvalidInput) as refused:
        campaign_content.parse_offer_codes(data.encode())
    message = str(refused.value)
    assert message.startswith("offer codes: line 2 is blank")
    assert "line 4 repeats aaa from line 1" in message
    assert "line 5: no spaces" in message
    assert "line 6 has more than one column" in message
    assert "line 7: at most 100 characters" in message
    assert "line 8" not in message
    with pytest.raises(InvalidInput, match="not UTF-8"):
        campaign_content.parse_offer_codes(b"\xff\xfe\x00A")
    with pytest.raises(InvalidInput, match="holds no codes"):
        campaign_content.parse_offer_codes(b"code\n\n")
    with pytest.raises(InvalidInput, match="printable"):
        campaign_content.parse_offer_codes("A\u200bB\n".encode())


def codes_of(campaign_id: int) -> dict[int, str]:
    db.session.rollback()
    return dict(
        db.session.execute(
            sa.select(Invitation.id, Invitation.offer_code).where(Invitation.campaign_id == campaign_id)
        ).all()
    )


def test_unique_codes_are_handed_out_once_each_and_agree_with_the_code_list(app):
    for _ in range(40):
        make_customer()
    codes = [f"WB-{number:04d}" for number in range(50)]
    campaign, queued = campaigns.create_campaign(
        name="Codes", lapsed_days=180, now=utcnow(), offer_codes=codes
    )

    handed = codes_of(campaign.id)
    assert queued == 40
    assert campaign.offer_kind == OfferKind.UNIQUE
    assert len(set(handed.values())) == 40
    assert set(handed.values()) <= set(codes)
    rows = db.session.execute(
        sa.select(OfferCode.code, OfferCode.invitation_id).where(OfferCode.campaign_id == campaign.id)
    ).all()
    assert len(rows) == 50
    assert {invitation_id: code for code, invitation_id in rows if invitation_id} == handed
    assert campaign_content.offer_codes_summary(campaign.id) == (50, 40)


def test_each_recipient_gets_their_own_code_in_the_email(app, smtp):
    for number in range(5):
        make_customer(f"c{number}@example.com", first_name=f"Name{number}")
    codes = [f"OWN-{number}" for number in range(5)]
    campaign, _ = campaigns.create_campaign(name="Own", lapsed_days=180, now=utcnow(), offer_codes=codes)
    campaigns.send_campaign(campaign.id)

    db.session.rollback()
    expected = dict(
        db.session.execute(
            sa.select(Invitation.customer_id, Invitation.offer_code).where(
                Invitation.campaign_id == campaign.id
            )
        ).all()
    )
    shown = []
    for message in smtp.messages:
        text, html = parts(message)
        (code,) = re.findall(r"OWN-\d", text)
        assert code in html
        shown.append(code)
    assert sorted(shown) == sorted(expected.values()) == codes


def test_too_few_codes_refuse_the_campaign_and_create_nothing(app):
    for _ in range(3):
        make_customer()
    with pytest.raises(InvalidInput) as refused:
        campaigns.create_campaign(name="Short", lapsed_days=180, now=utcnow(), offer_codes=["A", "B"])
    assert str(refused.value).startswith("offer codes: 2 codes for 3 recipients")
    db.session.rollback()
    for model in (Campaign, Invitation, OfferCode):
        assert db.session.scalar(sa.select(sa.func.count()).select_from(model)) == 0


def test_a_shared_code_reaches_every_recipient(app, smtp):
    make_customer("ada@example.com", first_name="Ada")
    make_customer("grace@example.com", first_name="Grace")
    campaign, _ = campaigns.create_campaign(
        name="Shared", lapsed_days=180, now=utcnow(), offer_code=" COMEBACK15 ", subject="Hi {{ first_name }}"
    )
    assert (campaign.offer_kind, campaign.offer_code) == (OfferKind.SHARED, "COMEBACK15")
    campaigns.send_campaign(campaign.id)

    messages = sent_by_address(smtp)
    assert messages["ada@example.com"]["Subject"] == "Hi Ada"
    assert messages["grace@example.com"]["Subject"] == "Hi Grace"
    for message in messages.values():
        text, html = parts(message)
        assert "the code COMEBACK15 is yours" in text
        assert "the code COMEBACK15 is yours" in html


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"offer_code": "TWO WORDS"}, "offer code: no spaces"),
        ({"offer_code": ""}, "offer code: enter the code"),
        ({"offer_code": "A" * 101}, "offer code: at most 100 characters"),
        ({"offer_code": "A", "offer_codes": ["B"]}, "not both"),
        ({"offer_codes": []}, "holds no codes"),
        ({"body": "{{ nope }}"}, "body: unknown placeholder {{ nope }} on line 1"),
    ],
)
def test_bad_offers_and_bodies_create_nothing(app, options, message):
    make_customer()
    with pytest.raises(InvalidInput, match=re.escape(message)):
        campaigns.create_campaign(name="Bad", lapsed_days=180, now=utcnow(), **options)
    db.session.rollback()
    assert campaigns.list_campaigns() == []


# --- the email as sent ----------------------------------------------------------------------


def test_a_custom_email_arrives_with_the_footer_and_headers_whatever_the_template_says(app, smtp, client):
    make_customer("ada@example.com", first_name="<b>Ada</b>")
    body = "Dear {{ first_name }},\n\n**{{ business_name }}** wants to know.\n\n[Tell us]({{ link }})"
    campaign, _ = campaigns.create_campaign(
        name="Custom", lapsed_days=180, now=utcnow(), subject="A word, {{ first_name }}", body=body
    )
    campaigns.send_campaign(campaign.id)

    (message,) = smtp.messages
    text, html = parts(message)
    assert message["Subject"] == "A word, <b>Ada</b>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"].startswith("<http://localhost/u/")
    assert message["List-Id"]
    assert message["Message-ID"]
    assert text.startswith(
        "Dear <b>Ada</b>,\n\n**Test Shop** wants to know.\n\n[Tell us](http://localhost/s/"
    )
    assert "Dear &lt;b&gt;Ada&lt;/b&gt;," in html
    assert "<strong>Test Shop</strong> wants to know." in html
    for part in (text, html):
        assert "1 Test Street, Testville" in part
        assert "/u/" in part
    link = re.search(r'href="(http://localhost/s/[^"]+)">Tell us</a>', html).group(1)
    assert link in text
    page = client.get(link.removeprefix("http://localhost"))
    assert page.status_code == 200
    assert "What would it take to win you back?" in page.get_data(as_text=True)


def test_a_name_with_line_breaks_is_sent_with_no_extra_header(app, smtp):
    make_customer("ada@example.com", first_name="Ada\r\nBcc: evil@example.com", last_name="\nX-Evil: 1")
    campaign, _ = campaigns.create_campaign(
        name="Lines", lapsed_days=180, now=utcnow(), subject="Hi {{ first_name }}"
    )
    summary = campaigns.send_campaign(campaign.id)

    assert summary.sent == 1
    (envelope,) = smtp.envelopes
    assert envelope.rcpt_tos == ["ada@example.com"]
    (message,) = smtp.messages
    assert message["Subject"] == "Hi Ada Bcc: evil@example.com"
    assert message["Bcc"] is None
    assert message["X-Evil"] is None
    assert message["To"].addresses[0].display_name == "Ada Bcc: evil@example.com X-Evil: 1"


# --- editing a draft ------------------------------------------------------------------------


def test_a_draft_can_change_its_email_and_offer_until_it_sends(app, smtp):
    for _ in range(2):
        make_customer()
    campaign, _ = campaigns.create_campaign(
        name="Draft", lapsed_days=180, now=utcnow(), offer_codes=["A", "B"]
    )
    campaign_id = campaign.id

    campaign_content.update_content(
        campaign_id,
        subject="New {{ first_name }}",
        body="Hi\n\n{{ link }}",
        offer_kind=OfferKind.UNIQUE,
        actor_id=None,
        now=utcnow(),
    )
    assert sorted(codes_of(campaign_id).values()) == ["A", "B"]  # no new file keeps the codes
    campaign_content.update_content(
        campaign_id,
        subject="",
        body="",
        offer_kind=OfferKind.UNIQUE,
        offer_codes=["C", "D", "E"],
        actor_id=None,
        now=utcnow(),
    )
    assert sorted(codes_of(campaign_id).values()) == ["C", "D"]
    assert campaign_content.offer_codes_summary(campaign_id) == (3, 2)
    with pytest.raises(InvalidInput, match="1 codes for 2 recipients"):
        campaign_content.update_content(
            campaign_id,
            subject="",
            body="",
            offer_kind=OfferKind.UNIQUE,
            offer_codes=["F"],
            actor_id=None,
            now=utcnow(),
        )
    assert sorted(codes_of(campaign_id).values()) == ["C", "D"]  # a refused change changes nothing
    campaign_content.update_content(
        campaign_id,
        subject="",
        body="",
        offer_kind=OfferKind.SHARED,
        offer_code="ALL",
        actor_id=None,
        now=utcnow(),
    )
    assert set(codes_of(campaign_id).values()) == {None}
    assert campaign_content.offer_codes_summary(campaign_id) == (0, 0)

    campaigns.send_campaign(campaign_id)
    db.session.rollback()
    assert campaigns.get_campaign(campaign_id).status == CampaignStatus.SENT
    with pytest.raises(InvalidInput, match="has started sending"):
        campaign_content.update_content(
            campaign_id, subject="Late", body="", offer_kind=OfferKind.NONE, actor_id=None, now=utcnow()
        )
