"""Staff write a campaign's email and offer, preview it for a customer, edit a draft, and send
themselves a test through the real mail path."""

from __future__ import annotations

import io
import re
import time
from html import unescape

import sqlalchemy as sa

from app.extensions import db
from app.models import Campaign, Invitation, OfferKind, StaffRole, utcnow
from app.services import campaign_content, campaign_preview, campaigns
from tests.conftest import csrf_token, free_port, log_in, make_staff
from tests.factories import make_customer


def new_campaign_form(staff_client, **fields) -> dict:
    page = staff_client.get("/staff/campaigns/new")
    data = {
        "csrf_token": csrf_token(page.data),
        "name": "Spring",
        "lapsed_days": "180",
        "subject": "Hello {{ first_name }}",
        "body": "",
        "offer_kind": "none",
        "offer_code": "",
    }
    data.update(fields)
    return data


def only_campaign() -> Campaign:
    db.session.rollback()
    (campaign,) = campaigns.list_campaigns()
    return campaign


def test_the_new_campaign_form_is_filled_with_the_default_email(staff_client):
    body = staff_client.get("/staff/campaigns/new").get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in body
    textarea = re.search(r'<textarea[^>]*name="body"[^>]*>(.*?)</textarea>', body, re.DOTALL).group(1)
    assert unescape(textarea).strip() == campaign_content.DEFAULT_BODY.strip()
    assert "{{ offer_code }}" in body
    assert re.search(r'<input checked[^>]*name="offer_kind" type="radio" value="none">', body)


def test_a_campaign_with_a_body_and_a_shared_code_is_created_from_the_form(staff_client, app):
    make_customer("ada@example.com")
    data = new_campaign_form(
        staff_client, body="Hi {{ first_name }}\n\n{{ link }}", offer_kind="shared", offer_code="SPRING10"
    )
    reply = staff_client.post("/staff/campaigns/new", data=data, follow_redirects=True)
    assert "Campaign created with 1 invitations queued." in reply.get_data(as_text=True)
    campaign = only_campaign()
    assert (campaign.body, campaign.offer_kind, campaign.offer_code) == (
        "Hi {{ first_name }}\n\n{{ link }}",
        OfferKind.SHARED,
        "SPRING10",
    )


def test_a_template_mistake_is_shown_with_its_line_and_nothing_is_created(staff_client, app):
    make_customer()
    data = new_campaign_form(staff_client, body="Hello\n\n{{ link }}\n{{ customer_email }}")
    reply = staff_client.post("/staff/campaigns/new", data=data)
    assert reply.status_code == 400
    assert "body: unknown placeholder {{ customer_email }} on line 4" in reply.get_data(as_text=True)
    db.session.rollback()
    assert campaigns.list_campaigns() == []


def test_unique_codes_are_uploaded_and_too_few_are_refused_with_both_counts(staff_client, app):
    for _ in range(3):
        make_customer()
    short = new_campaign_form(
        staff_client, offer_kind="unique", offer_codes=(io.BytesIO(b"A\nB\n"), "codes.txt")
    )
    reply = staff_client.post("/staff/campaigns/new", data=short, content_type="multipart/form-data")
    assert reply.status_code == 400
    assert "offer codes: 2 codes for 3 recipients" in reply.get_data(as_text=True)
    db.session.rollback()
    assert campaigns.list_campaigns() == []

    repeated = new_campaign_form(
        staff_client, offer_kind="unique", offer_codes=(io.BytesIO(b"code\nA\nB\nA\n"), "codes.csv")
    )
    reply = staff_client.post("/staff/campaigns/new", data=repeated, content_type="multipart/form-data")
    assert "offer codes: line 4 repeats A from line 2" in reply.get_data(as_text=True)

    enough = new_campaign_form(
        staff_client, offer_kind="unique", offer_codes=(io.BytesIO(b"code\nA\nB\nC\nD\n"), "codes.csv")
    )
    reply = staff_client.post(
        "/staff/campaigns/new", data=enough, content_type="multipart/form-data", follow_redirects=True
    )
    assert "Campaign created with 3 invitations queued." in reply.get_data(as_text=True)
    assert "3 of 4 codes handed out" in reply.get_data(as_text=True)
    codes = db.session.scalars(
        sa.select(Invitation.offer_code).where(Invitation.campaign_id == only_campaign().id)
    )
    assert sorted(codes) == ["A", "B", "C"]


def test_the_campaign_page_previews_the_email_for_its_first_customer(staff_client, app):
    make_customer("ada@example.com", first_name="<b>Ada</b>", total_spent=90_000)
    make_customer("grace@example.com", first_name="Grace", total_spent=1_000)
    campaign_id = campaigns.create_campaign(
        name="Preview",
        lapsed_days=180,
        now=utcnow(),
        subject="{{ first_name }}, a word from {{ business_name }}",
        body="Dear {{ first_name }},\n\n**Thanks**\n\n{{ link }}",
        offer_code="HELLO5",
    )[0].id

    page = staff_client.get(f"/staff/campaigns/{campaign_id}").get_data(as_text=True)
    assert "the first customer of this campaign" in page
    assert '<dd id="preview-subject">&lt;b&gt;Ada&lt;/b&gt;, a word from Test Shop</dd>' in page
    text = unescape(re.search(r'<pre class="email" id="preview-text">(.*?)</pre>', page, re.DOTALL).group(1))
    assert text.startswith("Dear <b>Ada</b>,\n\n**Thanks**\n\nhttp://localhost/s/")
    assert "1 Test Street, Testville" in text
    assert "one code for everyone: HELLO5" in page
    assert f'src="/staff/campaigns/{campaign_id}/preview.html"' in page

    frame = staff_client.get(f"/staff/campaigns/{campaign_id}/preview.html")
    html = frame.get_data(as_text=True)
    assert frame.status_code == 200
    assert "script-src" not in frame.headers["Content-Security-Policy"]
    assert "sandbox" in frame.headers["Content-Security-Policy"]
    assert frame.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "Dear &lt;b&gt;Ada&lt;/b&gt;," in html
    assert "<strong>Thanks</strong>" in html

    # The preview's link answers for no customer: it is not the first invitation's own.
    link = re.search(r"http://localhost(/s/\S+)", text).group(1)
    assert staff_client.get(link).status_code == 404
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).where(Invitation.opened_at.is_not(None))) == 0


def test_a_campaign_with_no_invitations_is_previewed_for_a_sample_customer(staff_client, app):
    campaign_id = campaigns.create_campaign(name="Nobody", lapsed_days=180, now=utcnow())[0].id
    page = staff_client.get(f"/staff/campaigns/{campaign_id}").get_data(as_text=True)
    assert "Ada Lovelace, a sample customer" in page
    assert "Hello Ada," in page
    assert "We miss you at Test Shop: what would it take to win you back?" in page


def test_a_draft_is_edited_and_a_sent_campaign_is_not(staff_client, app, smtp):
    make_customer("ada@example.com")
    campaign_id = campaigns.create_campaign(name="Editable", lapsed_days=180, now=utcnow())[0].id
    show = staff_client.get(f"/staff/campaigns/{campaign_id}").get_data(as_text=True)
    assert f'href="/staff/campaigns/{campaign_id}/edit"' in show

    page = staff_client.get(f"/staff/campaigns/{campaign_id}/edit")
    assert "We really valued your custom." in page.get_data(as_text=True)
    bad = staff_client.post(
        f"/staff/campaigns/{campaign_id}/edit",
        data={
            "csrf_token": csrf_token(page.data),
            "subject": "Hi",
            "body": "Hello\n{{ link.__class__ }}",
            "offer_kind": "none",
        },
    )
    assert bad.status_code == 400
    assert "body: .__class__ on line 2 is not allowed" in bad.get_data(as_text=True)
    saved = staff_client.post(
        f"/staff/campaigns/{campaign_id}/edit",
        data={
            "csrf_token": csrf_token(page.data),
            "subject": "New subject for {{ first_name }}",
            "body": "New words\r\n\r\n{{ link }}",
            "offer_kind": "shared",
            "offer_code": "AGAIN",
        },
        follow_redirects=True,
    )
    assert "Campaign email saved." in saved.get_data(as_text=True)
    campaign = only_campaign()
    assert (campaign.subject, campaign.body, campaign.offer_code) == (
        "New subject for {{ first_name }}",
        "New words\n\n{{ link }}",
        "AGAIN",
    )

    campaigns.send_campaign(campaign_id)
    assert smtp.messages[0]["Subject"] == "New subject for Ada"
    reply = staff_client.get(f"/staff/campaigns/{campaign_id}/edit", follow_redirects=True)
    assert "its email can no longer change" in reply.get_data(as_text=True)
    assert f'href="/staff/campaigns/{campaign_id}/edit"' not in reply.get_data(as_text=True)


def wait_for_test(app, client, campaign_id: int, state: str, detail: str = "") -> str:
    """The campaign page once the worker has recorded the test's outcome."""
    deadline = time.monotonic() + 30
    while True:
        with app.app_context():
            latest = campaign_preview.latest_test(campaign_id)
        if latest and latest.state == state and detail in latest.detail:
            return client.get(f"/staff/campaigns/{campaign_id}").get_data(as_text=True)
        assert time.monotonic() < deadline, latest
        time.sleep(0.1)


def test_send_me_a_test_reaches_the_staff_member_alone_marked_as_a_test(worker_app, smtp):
    with worker_app.app_context():
        make_customer("ada@example.com", first_name="Ada")
        make_customer("grace@example.com", first_name="Grace")
        worker_app.config["MAIL_UNSUBSCRIBE_ADDRESS"] = "unsubscribe@example.com"
        campaign_id = campaigns.create_campaign(
            name="Tested", lapsed_days=180, now=utcnow(), subject="Hi {{ first_name }}", offer_code="T10"
        )[0].id
    staff_client = worker_app.test_client()
    log_in(staff_client, "admin@example.com")
    page = staff_client.get(f"/staff/campaigns/{campaign_id}")

    reply = staff_client.post(
        f"/staff/campaigns/{campaign_id}/test",
        data={"csrf_token": csrf_token(page.data)},
        follow_redirects=True,
    )

    assert "A test is on its way to admin@example.com." in reply.get_data(as_text=True)
    shown = wait_for_test(worker_app, staff_client, campaign_id, "sent")
    assert "The latest test went to admin@example.com" in shown
    (envelope,) = smtp.envelopes
    assert envelope.rcpt_tos == ["admin@example.com"]
    (message,) = smtp.messages
    assert message["To"].addresses[0].addr_spec == "admin@example.com"
    assert message["Subject"].startswith("[Test] Hi ")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"].startswith("<http://localhost/u/")
    assert "mailto:unsubscribe@example.com" in message["List-Unsubscribe"]
    assert message["List-Id"].endswith(f"<campaign-{campaign_id}.example.com>")
    assert message["Message-ID"]
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    for part in (text, html):
        assert "This is a test of the campaign" in part
        assert "T10" in part
        assert "1 Test Street, Testville" in part
    # Neither link can answer a survey or unsubscribe anyone.
    survey = re.search(r"http://localhost(/s/\S+)", text).group(1)
    unsubscribe = re.search(r"http://localhost(/u/\S+)", text).group(1)
    assert staff_client.get(survey).status_code == 404
    assert staff_client.get(unsubscribe).status_code == 404
    with worker_app.app_context():
        assert (
            db.session.scalar(
                sa.select(sa.func.count()).select_from(Invitation).where(Invitation.attempts > 0)
            )
            == 0
        )


def test_a_refused_or_unreachable_mail_server_is_shown_on_the_campaign_page(worker_app, smtp):
    with worker_app.app_context():
        campaign_id = campaigns.create_campaign(name="Faulty", lapsed_days=180, now=utcnow())[0].id
    staff_client = worker_app.test_client()
    log_in(staff_client, "admin@example.com")
    page = staff_client.get(f"/staff/campaigns/{campaign_id}")
    smtp.refuse.append(("admin@", "550 5.1.1 No such user"))
    reply = staff_client.post(
        f"/staff/campaigns/{campaign_id}/test", data={"csrf_token": csrf_token(page.data)}
    )
    assert reply.status_code == 302
    shown = wait_for_test(worker_app, staff_client, campaign_id, "failed")
    assert "The latest test was not sent" in shown
    assert "the mail server refused admin@example.com: 550 5.1.1 No such user" in shown

    worker_app.config["MAIL_PORT"] = free_port()
    worker_app.extensions["mail"].port = worker_app.config["MAIL_PORT"]
    staff_client.post(f"/staff/campaigns/{campaign_id}/test", data={"csrf_token": csrf_token(page.data)})
    shown = wait_for_test(worker_app, staff_client, campaign_id, "failed", "could not be reached")
    assert "the mail server could not be reached" in shown


def test_a_test_waiting_for_the_worker_says_so(staff_client, app, smtp):
    campaign_id = campaigns.create_campaign(name="Waiting", lapsed_days=180, now=utcnow())[0].id
    page = staff_client.get(f"/staff/campaigns/{campaign_id}")
    staff_client.post(f"/staff/campaigns/{campaign_id}/test", data={"csrf_token": csrf_token(page.data)})
    shown = staff_client.get(f"/staff/campaigns/{campaign_id}").get_data(as_text=True)
    assert "A test for admin@example.com is waiting for the background worker" in shown
    assert smtp.messages == []  # no worker runs in this test: the request itself sent nothing


def test_only_admins_edit_or_send_tests_and_a_post_needs_its_csrf_token(client, app, smtp):
    make_staff("viewer@example.com", StaffRole.VIEWER)
    log_in(client, "viewer@example.com")
    campaign_id = campaigns.create_campaign(name="Locked", lapsed_days=180, now=utcnow())[0].id
    page = client.get(f"/staff/campaigns/{campaign_id}")
    assert page.status_code == 200
    assert "Send me a test" not in page.get_data(as_text=True)
    assert client.get(f"/staff/campaigns/{campaign_id}/edit").status_code == 403
    token = csrf_token(page.data)
    assert client.post(f"/staff/campaigns/{campaign_id}/test", data={"csrf_token": token}).status_code == 403
    assert client.post(f"/staff/campaigns/{campaign_id}/test").status_code == 400
    assert smtp.messages == []
