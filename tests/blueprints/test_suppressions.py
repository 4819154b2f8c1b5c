"""Staff: the suppression list page; admins add and lift, other staff only look."""

from __future__ import annotations

import io

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditEvent, StaffRole, Suppression, SuppressionReason, utcnow
from app.services import privacy, suppressions
from app.services.imports import import_customers
from tests.conftest import csrf_token, log_in, make_staff
from tests.factories import make_customer

INDEX = "/staff/suppressions/"


def suppressed(email: str, reason: SuppressionReason = SuppressionReason.MANUAL, note: str = "") -> int:
    suppressions.suppress(email, reason, utcnow(), note=note)
    db.session.commit()
    return suppressions.suppression_for(email).id


def count() -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(sa.func.count(Suppression.id)))


def logged_in_as(app, role: StaffRole):
    make_staff(f"{role.value}@example.com", role)
    other = app.test_client()
    assert log_in(other, f"{role.value}@example.com").status_code == 302
    return other


def test_anonymous_visitors_are_sent_to_log_in(client):
    reply = client.get(INDEX)
    assert reply.status_code == 302
    assert reply.headers["Location"].startswith("/staff/login")


def test_an_admin_adds_an_address_with_the_form(staff_client):
    make_customer("ada@example.com")
    page = staff_client.get("/staff/suppressions/new")
    reply = staff_client.post(
        "/staff/suppressions/new",
        data={
            "email": " Ada@Example.com",
            "reason": "complaint",
            "note": "Wrote to us",
            "csrf_token": csrf_token(page.data),
        },
    )
    assert reply.status_code == 302
    assert reply.headers["Location"] == INDEX
    db.session.rollback()
    row = suppressions.suppression_for("ada@example.com")
    assert (row.reason, row.note) == (SuppressionReason.COMPLAINT, "Wrote to us")
    listing = staff_client.get(INDEX).get_data(as_text=True)
    assert "Address suppressed" in listing
    assert "ada@example.com" in listing  # a known customer is named
    assert "Complaint" in listing


def test_a_bad_address_is_refused_with_a_message(staff_client):
    page = staff_client.get("/staff/suppressions/new")
    reply = staff_client.post(
        "/staff/suppressions/new",
        data={"email": "not an address", "reason": "manual", "csrf_token": csrf_token(page.data)},
    )
    assert reply.status_code == 400
    assert "not a valid email address" in reply.get_data(as_text=True)
    assert count() == 0


def test_a_post_without_the_csrf_token_is_refused(staff_client):
    row_id = suppressed("ada@example.com")
    added = staff_client.post(
        "/staff/suppressions/new", data={"email": "bob@example.com", "reason": "manual"}
    )
    lifted = staff_client.post(f"/staff/suppressions/{row_id}/lift", data={"reason": "mistake"})
    assert (added.status_code, lifted.status_code) == (400, 400)
    assert count() == 1


def test_an_admin_lifts_a_suppression_with_a_reason(staff_client, admin):
    row_id = suppressed("ada@example.com")
    page = staff_client.get(INDEX)
    assert f'action="/staff/suppressions/{row_id}/lift"' in page.get_data(as_text=True)
    reply = staff_client.post(
        f"/staff/suppressions/{row_id}/lift",
        data={"reason": "Added by mistake", "csrf_token": csrf_token(page.data)},
    )
    assert reply.status_code == 302
    assert count() == 0
    event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "suppression.lift"))
    assert (event.actor_id, event.detail) == (admin.id, "manual: Added by mistake")
    assert "Suppression lifted." in staff_client.get(INDEX).get_data(as_text=True)


def test_lifting_without_a_reason_asks_for_one(staff_client):
    row_id = suppressed("ada@example.com")
    url = f"/staff/suppressions/{row_id}/lift"
    page = staff_client.get(url)
    assert page.status_code == 200
    reply = staff_client.post(url, data={"reason": " ", "csrf_token": csrf_token(page.data)})
    assert reply.status_code == 400
    assert "Say why: the reason is recorded." in reply.get_data(as_text=True)
    assert count() == 1


def test_an_erased_customers_suppression_is_never_lifted_nor_shown_with_an_address(staff_client):
    customer = make_customer("ada@example.com")
    privacy.erase_customer(customer.id, actor_id=None, now=utcnow())
    # The shop's next export brings the address back as a new, suppressed customer.
    import_customers(io.BytesIO(b"email\nada@example.com\n"), "customers.csv", now=utcnow())
    row_id = suppressions.suppression_for("ada@example.com").id
    listing = staff_client.get(INDEX).get_data(as_text=True)
    assert "ada@example.com" not in listing
    assert "Erased" in listing
    assert f"/staff/suppressions/{row_id}/lift" not in listing
    lift_page = staff_client.get(f"/staff/suppressions/{row_id}/lift")
    assert "ada@example.com" not in lift_page.get_data(as_text=True)
    reply = staff_client.post(
        f"/staff/suppressions/{row_id}/lift",
        data={"reason": "asked", "csrf_token": csrf_token(lift_page.data)},
    )
    assert reply.status_code == 400
    assert "can never be lifted" in reply.get_data(as_text=True)
    assert count() == 1


def test_the_list_filters_by_reason_and_pages_by_keyset(staff_client):
    for number in range(51):
        suppressions.suppress(f"p{number}@example.com", SuppressionReason.MANUAL, utcnow())
    suppressions.suppress("bounced@example.com", SuppressionReason.HARD_BOUNCE, utcnow(), note="550 gone")
    db.session.commit()
    first = staff_client.get(INDEX).get_data(as_text=True)
    assert "550 gone" in first
    assert "Older →" in first
    older = staff_client.get(f"{INDEX}?before={suppressions.list_suppressions().next_before}")
    assert older.get_data(as_text=True).count("Added by staff</td>") == 2
    bounces = staff_client.get(f"{INDEX}?reason=hard_bounce").get_data(as_text=True)
    assert "550 gone" in bounces
    assert "Added by staff</td>" not in bounces
    assert "Older →" not in bounces
    assert staff_client.get(f"{INDEX}?reason=bored").status_code == 404


def test_a_viewer_may_look_but_not_add_or_lift(app):
    row_id = suppressed("ada@example.com")
    viewer = logged_in_as(app, StaffRole.VIEWER)
    page = viewer.get(INDEX)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Suppress an address" not in text
    assert "/lift" not in text
    token = csrf_token(page.data)  # the log-out form's
    assert viewer.get("/staff/suppressions/new").status_code == 403
    assert viewer.get(f"/staff/suppressions/{row_id}/lift").status_code == 403
    added = viewer.post("/staff/suppressions/new", data={"email": "bob@example.com", "csrf_token": token})
    lifted = viewer.post(f"/staff/suppressions/{row_id}/lift", data={"reason": "x", "csrf_token": token})
    assert (added.status_code, lifted.status_code) == (403, 403)
    assert count() == 1


def test_a_triager_may_not_lift_either(app):
    row_id = suppressed("ada@example.com")
    triager = logged_in_as(app, StaffRole.TRIAGER)
    token = csrf_token(triager.get(INDEX).data)
    reply = triager.post(f"/staff/suppressions/{row_id}/lift", data={"reason": "x", "csrf_token": token})
    assert reply.status_code == 403
    assert count() == 1


def test_admins_see_the_suppressions_link(staff_client):
    assert f'href="{INDEX}"' in staff_client.get("/staff/").get_data(as_text=True)
