"""Staff (admins): erase a customer after confirming, and download one customer's data."""

from __future__ import annotations

import json

import sqlalchemy as sa

from app.extensions import db
from app.models import Customer, CustomerStatus, ImprovementStatus, Outcome, StaffRole, utcnow
from app.services import improvements, triage
from app.services.improvements import ImprovementData
from tests.conftest import csrf_token, log_in, make_staff
from tests.services.test_privacy import ADDRESS, answered_customer


def erase_via_confirmation(client, customer_id: int):
    """Open the confirmation page and press its button."""
    url = f"/staff/customers/{customer_id}/erase"
    page = client.get(url)
    return client.post(url, data={"csrf_token": csrf_token(page.data), "confirm": "erase"})


def status_of(customer_id: int) -> CustomerStatus:
    db.session.rollback()
    return db.session.scalar(sa.select(Customer.status).where(Customer.id == customer_id))


def test_an_admin_confirms_then_erases_a_customer(staff_client):
    customer, _, _ = answered_customer()
    url = f"/staff/customers/{customer.id}/erase"
    page = staff_client.get(url)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Ada Lovelace" in text
    assert "This cannot be undone" in text
    assert status_of(customer.id) == CustomerStatus.ACTIVE  # looking changes nothing
    assert 'name="confirm"' in text
    reply = staff_client.post(url, data={"csrf_token": csrf_token(page.data), "confirm": "erase"})
    assert reply.status_code == 302
    assert reply.headers["Location"] == f"/staff/customers/{customer.id}"
    assert status_of(customer.id) == CustomerStatus.ERASED
    shown = staff_client.get(reply.headers["Location"]).get_data(as_text=True)
    assert f"Customer #{customer.id} erased" in shown
    assert ADDRESS not in shown
    assert "Lovelace" not in shown


def test_erasing_again_says_there_is_nothing_left_to_do(staff_client):
    customer, _, _ = answered_customer()
    erase_via_confirmation(staff_client, customer.id)
    url = f"/staff/customers/{customer.id}/erase"
    page = staff_client.get(url)
    assert "There is nothing left to erase" in page.get_data(as_text=True)
    reply = staff_client.post(
        url, data={"csrf_token": csrf_token(page.data), "confirm": "erase"}, follow_redirects=True
    )
    assert "was already erased: nothing changed" in reply.get_data(as_text=True)


def test_a_bare_erase_button_elsewhere_leads_to_the_confirmation_first(staff_client):
    customer, _, _ = answered_customer()
    token = csrf_token(staff_client.get(f"/staff/customers/{customer.id}").data)
    reply = staff_client.post(f"/staff/customers/{customer.id}/erase", data={"csrf_token": token})
    assert reply.status_code == 303
    assert reply.headers["Location"] == f"/staff/customers/{customer.id}/erase"
    assert status_of(customer.id) == CustomerStatus.ACTIVE


def test_erasing_without_the_csrf_token_is_refused(staff_client):
    customer, _, _ = answered_customer()
    reply = staff_client.post(f"/staff/customers/{customer.id}/erase", data={"confirm": "erase"})
    assert reply.status_code == 400
    assert status_of(customer.id) == CustomerStatus.ACTIVE


def test_erasing_an_unknown_customer_is_not_found(staff_client):
    assert staff_client.get("/staff/customers/404/erase").status_code == 404
    token = csrf_token(staff_client.get("/staff/").data)
    reply = staff_client.post("/staff/customers/404/erase", data={"csrf_token": token, "confirm": "erase"})
    assert reply.status_code == 404
    assert staff_client.get("/staff/customers/404/data.json").status_code == 404


def test_erasure_takes_their_words_off_the_public_page_at_once(staff_client, admin):
    customer, _, response = answered_customer(text="Bring back the blue mugs")
    triage.set_outcome(response.id, Outcome.ACTIONABLE, actor_id=admin.id, now=utcnow())
    improvements.create_improvement(
        ImprovementData(
            you_said="Blue mugs", we_did="They are back.", status=ImprovementStatus.DONE, published=True
        ),
        response_ids=[response.id],
        actor_id=admin.id,
        now=utcnow(),
    )
    assert "Bring back the blue mugs" in staff_client.get("/you-said-we-did").get_data(as_text=True)
    erase_via_confirmation(staff_client, customer.id)
    public = staff_client.get("/you-said-we-did").get_data(as_text=True)
    assert "Blue mugs" in public  # the improvement stays
    assert "Bring back the blue mugs" not in public


def test_an_admin_downloads_one_customers_data_as_json(staff_client):
    customer, invitation, _ = answered_customer()
    reply = staff_client.get(f"/staff/customers/{customer.id}/data.json")
    assert reply.status_code == 200
    assert reply.mimetype == "application/json"
    assert reply.headers["Content-Disposition"] == f'attachment; filename="customer-{customer.id}.json"'
    assert reply.headers["Cache-Control"] == "no-store"
    data = json.loads(reply.get_data(as_text=True))
    assert data["customer"]["email"] == ADDRESS
    assert data["responses"][0]["win_back_text"] == "Free delivery over £20"
    body = reply.get_data(as_text=True)
    assert invitation.reference not in body
    assert invitation.nonce not in body


def test_other_staff_can_neither_erase_nor_export(app):
    customer, _, _ = answered_customer()
    for role in (StaffRole.VIEWER, StaffRole.TRIAGER):
        make_staff(f"{role.value}@example.com", role)
        other = app.test_client()
        log_in(other, f"{role.value}@example.com")
        token = csrf_token(other.get("/staff/").data)
        assert other.get(f"/staff/customers/{customer.id}/erase").status_code == 403
        reply = other.post(
            f"/staff/customers/{customer.id}/erase", data={"csrf_token": token, "confirm": "erase"}
        )
        assert reply.status_code == 403
        assert other.get(f"/staff/customers/{customer.id}/data.json").status_code == 403
    assert status_of(customer.id) == CustomerStatus.ACTIVE


def test_anonymous_visitors_are_sent_to_log_in(client):
    for url in ("/staff/customers/1/erase", "/staff/customers/1/data.json"):
        reply = client.get(url)
        assert reply.status_code == 302
        assert reply.headers["Location"].startswith("/staff/login")
