"""The whole win-back loop once, end to end: CSV import, campaign, real SMTP, the emailed link
followed over real HTTP, the form submitted, triage, an improvement, the public page."""

from __future__ import annotations

import html
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import pytest
from werkzeug.serving import make_server

from app.extensions import db
from app.models import Customer, CustomerStatus, Invitation, InvitationStatus, Response
from tests.conftest import PASSWORD, csrf_token, free_port, make_staff

CUSTOMERS_CSV = """\ufeffEmail;First Name;Last Name;Last Purchase At;Orders Count;Total Spent
ada@example.com;Ada;Lovelace;2024-01-15;12;£1,234.50
grace@example.com;Grace;Hopper;2024-02-01;3;£99.00
fresh@example.com;Recent;Buyer;{recent};5;£50.00
"""


def count(model) -> int:
    """Rows of a model, read in a transaction that ends at once (so the server can write)."""
    number = db.session.query(model).count()
    db.session.rollback()
    return number


class Browser:
    """A cookie-keeping HTTP client that does not follow redirects (http URLs on loopback only)."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(CookieJar()), self._NoRedirect
        )

    def request(self, path: str, data: dict | None = None) -> tuple[int, dict, str]:
        url = path if path.startswith("http") else self.base + path
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        try:
            with self.opener.open(urllib.request.Request(url, data=body), timeout=10) as reply:
                return reply.status, dict(reply.headers), reply.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()


@pytest.fixture
def live_server(app):
    """The app served over real HTTP on loopback; links in emails point at it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app.config["PUBLIC_BASE_URL"] = base
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base
    server.shutdown()
    thread.join(timeout=5)


def test_the_whole_loop_over_http_and_real_smtp(app, runner, smtp, live_server, tmp_path):
    from datetime import timedelta

    from app.models import utcnow

    # 1. Import customers from a shop's CSV (BOM, semicolons, loose headers, £ amounts).
    recent = (utcnow() - timedelta(days=10)).date().isoformat()
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text(CUSTOMERS_CSV.format(recent=recent), encoding="utf-8")
    result = runner.invoke(args=["customers", "import", str(csv_file)])
    assert result.exit_code == 0, result.output
    assert "3 imported, 0 updated, 0 unchanged, 0 skipped" in result.output

    # 2. A campaign for those lapsed 180 days: the recent buyer is not in it.
    result = runner.invoke(args=["campaigns", "create", "--name", "Spring win-back", "--lapsed-days", "180"])
    assert result.exit_code == 0, result.output
    campaign_id = int(re.search(r"\d+", result.output.splitlines()[0]).group())
    assert "2 invitations queued" in result.output

    # 3. Send over real SMTP; running it again sends nothing new.
    result = runner.invoke(args=["campaigns", "send", str(campaign_id)])
    assert result.exit_code == 0, result.output
    assert "2 sent, 0 failed" in result.output
    result = runner.invoke(args=["campaigns", "send", str(campaign_id)])
    assert "0 sent" in result.output
    messages = smtp.messages
    assert sorted(m["To"].addresses[0].addr_spec for m in messages) == [
        "ada@example.com",
        "grace@example.com",
    ]
    message = next(m for m in messages if "ada@" in str(m["To"]))
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"]
    assert message["List-Id"]
    text = message.get_body(preferencelist=("plain",)).get_content()
    html_part = message.get_body(preferencelist=("html",)).get_content()
    assert "Hello Ada" in text
    assert "Test Shop" in text
    assert "1 Test Street, Testville" in text
    survey_url = re.search(rf"{re.escape(live_server)}/s/\S+", text).group()
    unsubscribe_url = re.search(r"<([^>]+)>", message["List-Unsubscribe"]).group(1)
    assert unsubscribe_url.startswith(f"{live_server}/u/")
    assert html.escape(survey_url) in html_part or survey_url in html_part

    # 4. The customer follows the link over HTTP, sees the form and answers.
    customer = Browser(live_server)
    status, headers, page = customer.request(survey_url)
    assert status == 200
    assert "We really valued your custom. What would it take to win you back?" in page
    assert headers["Cache-Control"] == "no-store"
    status, _, bad = customer.request(survey_url[:-3] + "xyz")
    assert status == 404
    assert "This link doesn't work" in bad
    answers = {
        "csrf_token": csrf_token(page),
        "stop_reason": "delivery",
        "win_back_text": "Deliver within two days <script>alert(1)</script>",
        "would_return": "yes",
        "contact_via": "email",
        "may_quote": "y",
    }
    status, headers, _ = customer.request(survey_url, answers)
    assert status == 303
    status, _, thanks = customer.request(headers["Location"])
    assert status == 200
    assert "Thank you, Ada" in thanks
    assert count(Response) == 1

    # 5. Grace unsubscribes with a cookieless one-click POST (RFC 8058).
    grace_message = next(m for m in messages if "grace@" in str(m["To"]))
    grace_unsubscribe = re.search(r"<([^>]+)>", grace_message["List-Unsubscribe"]).group(1)
    status, headers, _ = Browser(live_server).request(grace_unsubscribe, {"List-Unsubscribe": "One-Click"})
    assert status == 200
    assert "Location" not in headers
    grace = db.session.query(Customer).filter_by(email="grace@example.com").one()
    assert grace.status == CustomerStatus.SUPPRESSED
    db.session.rollback()  # end the read: SQLite write transactions wait for it

    # 6. Staff log in and triage the answer as actionable.
    make_staff("triage@example.com")
    staff = Browser(live_server)
    status, _, login_page = staff.request("/staff/login")
    status, headers, _ = staff.request(
        "/staff/login",
        {"email": "triage@example.com", "password": PASSWORD, "csrf_token": csrf_token(login_page)},
    )
    assert status == 302
    status, _, inbox = staff.request("/staff/triage/")
    assert status == 200
    assert "Deliver within two days &lt;script&gt;" in inbox
    assert "<script>alert(1)</script>" not in inbox
    response_id = db.session.query(Response.id).scalar()
    db.session.rollback()
    status, _, _ = staff.request(
        f"/staff/triage/{response_id}/outcome", {"outcome": "actionable", "csrf_token": csrf_token(inbox)}
    )
    assert status == 302

    # 7. The answer starts an improvement, which is done and published.
    status, _, form_page = staff.request(f"/staff/improvements/new?response={response_id}")
    assert status == 200
    status, headers, _ = staff.request(
        f"/staff/improvements/new?response={response_id}",
        {
            "csrf_token": csrf_token(form_page),
            "you_said": "Deliveries were too slow.",
            "we_did": "Next-day delivery on **every** order.",
            "status": "done",
            "published": "y",
        },
    )
    assert status == 302

    # 8. The public page shows it, with the quote the customer allowed, and no names.
    status, _, public = Browser(live_server).request("/you-said-we-did")
    assert status == 200
    assert "Deliveries were too slow." in public
    assert "Next-day delivery on <strong>every</strong> order." in public
    assert "Ada" not in public
    assert "ada@example.com" not in public

    # Grace is never emailed again: a new campaign leaves her out.
    result = runner.invoke(args=["campaigns", "create", "--name", "Second try", "--lapsed-days", "180"])
    second_id = int(re.search(r"\d+", result.output).group())
    invited = {
        invitation.customer.email
        for invitation in db.session.query(Invitation).filter_by(campaign_id=second_id)
    }
    assert "grace@example.com" not in invited
    assert all(
        invitation.status == InvitationStatus.SENT
        for invitation in db.session.query(Invitation).filter_by(campaign_id=campaign_id)
    )
    status, _, _ = Browser(live_server).request("/healthz")
    assert status == 200
