"""Staff log in and out: the login wall, throttling, sessions and roles."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import (
    Campaign,
    ContactPreference,
    Improvement,
    Invitation,
    Outcome,
    Response,
    StaffRole,
    StopReason,
    WouldReturn,
    utcnow,
)
from app.services import campaigns, survey
from app.services.survey import Answers
from tests.conftest import PASSWORD, csrf_token, log_in, make_staff
from tests.factories import make_customer

REFUSED = "That email and password don&#39;t match an active account."


def answered() -> Response:
    """A customer who answered the survey: response id 1 in an empty database."""
    customer = make_customer()
    campaign, _ = campaigns.create_campaign(name="Auth", lapsed_days=180, now=utcnow())
    invitation = db.session.scalar(
        sa.select(Invitation).where(
            Invitation.campaign_id == campaign.id, Invitation.customer_id == customer.id
        )
    )
    answers = Answers(
        stop_reason=StopReason.PRICE,
        better_elsewhere="",
        win_back_text="Lower prices",
        would_return=WouldReturn.MAYBE,
        contact_via=ContactPreference.EMAIL,
        phone="",
        may_quote=False,
    )
    return survey.submit_response(invitation.id, answers, now=utcnow())


def all_rows() -> dict[str, list[tuple]]:
    """Every row of every table, to show that a request changed nothing."""
    db.session.rollback()  # end the read snapshot: see what the app wrote since
    return {
        table.name: sorted(map(tuple, db.session.execute(sa.select(table))), key=repr)
        for table in db.metadata.sorted_tables
    }


def goes_to_login(reply) -> bool:
    return reply.status_code == 302 and urlsplit(reply.headers["Location"]).path == "/staff/login"


def login_post(client, email: str, password: str, ip: str, url: str = "/staff/login"):
    """One attempt through the real form, from the given address."""
    page = client.get(url, environ_base={"REMOTE_ADDR": ip})
    return client.post(
        url,
        data={"email": email, "password": password, "csrf_token": csrf_token(page.data)},
        environ_base={"REMOTE_ADDR": ip},
    )


# --- the login wall -----------------------------------------------------------------------


def staff_urls(app) -> list[tuple[str, str]]:
    """(method, url) for every staff route but the login page, ints as 1 and strings as "x"."""
    urls = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/staff") or rule.endpoint == "auth.login":
            continue
        url = re.sub(r"<(?:(\w+):)?\w+>", lambda m: "1" if m.group(1) == "int" else "x", rule.rule)
        urls += [(method, url) for method in ("GET", "POST") if method in rule.methods]
    return urls


def test_every_staff_route_sends_an_anonymous_visitor_to_login_and_changes_nothing(app, client):
    make_staff()
    answered()  # customer 1, campaign 1, invitation 1, response 1
    db.session.add(Improvement(you_said="Lower prices"))
    db.session.commit()
    before = all_rows()
    token = csrf_token(client.get("/staff/login").data)  # an anonymous visitor can get one

    urls = staff_urls(app)
    assert len(urls) > 15, urls
    wrong = []
    for method, url in urls:
        if method == "GET":
            reply = client.get(url)
            if not goes_to_login(reply):
                wrong.append((method, url, reply.status_code))
            continue
        without_token = client.post(url)
        if without_token.status_code != 400 and not goes_to_login(without_token):
            wrong.append((method, url, "no CSRF token", without_token.status_code))
        with_token = client.post(url, data={"csrf_token": token, "outcome": "never", "name": "x"})
        if not goes_to_login(with_token):
            wrong.append((method, url, "with CSRF token", with_token.status_code))
    assert wrong == []
    assert all_rows() == before


# --- logging in ---------------------------------------------------------------------------


def test_logging_in_goes_to_the_staff_home(client, admin):
    reply = log_in(client, admin.email)
    assert reply.status_code == 302
    assert reply.headers["Location"] == "/staff/"
    assert client.get("/staff/").status_code == 200


def test_a_wrong_password_and_an_unknown_address_get_the_same_refusal(client, admin):
    wrong_password = log_in(client, admin.email, "not the password")
    unknown_address = log_in(client, "nobody@example.com")
    for reply in (wrong_password, unknown_address):
        assert reply.status_code == 401
        assert REFUSED in reply.get_data(as_text=True)
    assert goes_to_login(client.get("/staff/"))


def test_a_login_without_its_csrf_token_is_refused(client, admin):
    reply = client.post("/staff/login", data={"email": admin.email, "password": PASSWORD})
    assert reply.status_code == 400
    assert goes_to_login(client.get("/staff/"))


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("/staff/customers/", "/staff/customers/"),
        ("https://evil.example/", "/staff/"),
        ("//evil.example", "/staff/"),
        ("/\\evil.example", "/staff/"),
        ("javascript:alert(1)", "/staff/"),
    ],
)
def test_next_is_followed_only_to_a_local_path(client, admin, target, location):
    reply = login_post(client, admin.email, PASSWORD, "127.0.0.1", url=f"/staff/login?next={target}")
    assert reply.status_code == 302
    assert reply.headers["Location"] == location


# --- throttling ---------------------------------------------------------------------------


@pytest.fixture
def low_limit(app):
    app.config["LOGIN_RATE_LIMIT"] = "3 per minute"  # read by the limiter at request time


def assert_throttled(reply):
    assert reply.status_code == 429
    assert int(reply.headers["Retry-After"]) > 0


def test_failed_logins_on_one_account_are_throttled_from_any_address(client, admin, low_limit):
    for n in range(3):
        assert login_post(client, admin.email, "wrong password", f"10.0.1.{n}").status_code == 401
    assert_throttled(login_post(client, admin.email, "wrong password", "10.0.1.50"))
    assert_throttled(login_post(client, admin.email, PASSWORD, "10.0.1.51"))  # even the right one
    assert goes_to_login(client.get("/staff/"))


def test_failed_logins_from_one_address_are_throttled_whatever_account_they_try(client, admin, low_limit):
    for n in range(3):
        assert login_post(client, f"guess{n}@example.com", "wrong password", "10.0.2.1").status_code == 401
    assert_throttled(login_post(client, "guess9@example.com", "wrong password", "10.0.2.1"))
    # Someone else, elsewhere, still gets in.
    assert login_post(client, admin.email, PASSWORD, "10.0.2.2").status_code == 302


# --- sessions -----------------------------------------------------------------------------


def session_cookie(client) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def client_with_cookie(app, value: str):
    other = app.test_client()
    other.set_cookie("session", value)
    return other


def test_logging_in_starts_a_new_session(app, client, admin):
    page = client.get("/staff/login")
    before = session_cookie(client)
    log_in(client, admin.email)
    assert session_cookie(client) != before
    # A copy of the cookie from before the login (a planted one, say) is still anonymous.
    assert goes_to_login(client_with_cookie(app, before).get("/staff/"))
    # And nothing from before survives in the new session: not even the CSRF token.
    assert client.post("/staff/logout", data={"csrf_token": csrf_token(page.data)}).status_code == 400


def test_after_logout_a_copied_session_cookie_no_longer_works(app, staff_client):
    home = staff_client.get("/staff/")
    copied = session_cookie(staff_client)
    assert client_with_cookie(app, copied).get("/staff/").status_code == 200

    reply = staff_client.post("/staff/logout", data={"csrf_token": csrf_token(home.data)})
    assert reply.status_code == 302
    assert reply.headers["Location"] == "/staff/login"
    assert goes_to_login(staff_client.get("/staff/"))
    assert goes_to_login(client_with_cookie(app, copied).get("/staff/"))


def test_a_session_outlives_a_key_rotation_while_the_old_key_is_a_fallback(app, staff_client):
    assert staff_client.get("/staff/").status_code == 200
    old_key = app.config["SECRET_KEY"]
    app.config.update(SECRET_KEY="a brand new key", SECRET_KEY_FALLBACKS=[old_key])
    assert staff_client.get("/staff/").status_code == 200
    app.config["SECRET_KEY_FALLBACKS"] = []  # the cookie's key is gone: logged out
    assert goes_to_login(staff_client.get("/staff/"))


def test_a_deactivated_user_is_logged_out(staff_client, admin):
    assert staff_client.get("/staff/").status_code == 200
    admin.active = False
    db.session.commit()
    assert goes_to_login(staff_client.get("/staff/"))


# --- roles --------------------------------------------------------------------------------


def stored_outcome(response_id: int) -> Outcome | None:
    db.session.rollback()
    return db.session.get(Response, response_id).outcome


def test_a_viewer_can_read_an_answer_but_not_triage_it(client):
    response = answered()
    make_staff("v@example.com", StaffRole.VIEWER)
    log_in(client, "v@example.com")
    page = client.get(f"/staff/triage/{response.id}")
    assert page.status_code == 200
    reply = client.post(
        f"/staff/triage/{response.id}/outcome",
        data={"outcome": "actionable", "csrf_token": csrf_token(page.data)},
    )
    assert reply.status_code == 403
    assert stored_outcome(response.id) is None


def test_a_viewer_cannot_create_a_campaign(client):
    make_customer()
    make_staff("v@example.com", StaffRole.VIEWER)
    log_in(client, "v@example.com")
    assert client.get("/staff/campaigns/new").status_code == 403
    home = client.get("/staff/")
    reply = client.post(
        "/staff/campaigns/new",
        data={"name": "Sneaky", "lapsed_days": "180", "csrf_token": csrf_token(home.data)},
    )
    assert reply.status_code == 403
    db.session.rollback()
    assert db.session.scalars(sa.select(Campaign)).all() == []


def test_a_triager_can_confirm_an_outcome(client):
    response = answered()
    triager = make_staff("t@example.com", StaffRole.TRIAGER)
    log_in(client, "t@example.com")
    page = client.get(f"/staff/triage/{response.id}")
    reply = client.post(
        f"/staff/triage/{response.id}/outcome",
        data={"outcome": "actionable", "csrf_token": csrf_token(page.data)},
    )
    assert reply.status_code == 302
    assert stored_outcome(response.id) == Outcome.ACTIONABLE
    assert db.session.get(Response, response.id).triaged_by_id == triager.id
