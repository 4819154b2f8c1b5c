"""Erasure and data export: what goes, what stays, and that the address stays suppressed."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.exceptions import InvalidInput, NotFound
from app.extensions import db
from app.models import (
    AuditEvent,
    ContactPreference,
    Customer,
    CustomerStatus,
    Invitation,
    InvitationStatus,
    Order,
    Response,
    StopReason,
    Suppression,
    SuppressionReason,
    WouldReturn,
    utcnow,
)
from app.services import campaigns, privacy, suppressions, survey
from app.services.customers import normalise_email
from app.services.imports import import_customers
from app.services.survey import Answers
from tests.factories import make_customer

ADDRESS = "ada@example.com"


def answered_customer(
    email: str = ADDRESS, *, text: str = "Free delivery over £20", may_quote: bool = True
) -> tuple[Customer, Invitation, Response]:
    """A lapsed customer with an order, invited by a campaign, who answered the survey."""
    customer = make_customer(email, first_name="Ada", last_name="Lovelace", phone="+44 20 0000 0001")
    customer.external_id = "C-1001"
    customer.locale = "en-GB"
    db.session.add(
        Order(
            external_id=f"order-{customer.id}",
            customer_id=customer.id,
            placed_at=utcnow() - timedelta(days=400),
            amount=4250,
        )
    )
    db.session.commit()
    campaign, _ = campaigns.create_campaign(name="Autumn win-back", lapsed_days=180, now=utcnow())
    invitation = db.session.scalar(
        sa.select(Invitation).where(
            Invitation.campaign_id == campaign.id, Invitation.customer_id == customer.id
        )
    )
    response = survey.submit_response(
        invitation.id,
        Answers(
            stop_reason=StopReason.BETTER_ELSEWHERE,
            better_elsewhere="ShopCo",
            win_back_text=text,
            would_return=WouldReturn.MAYBE,
            contact_via=ContactPreference.PHONE,
            phone="+44 7700 900123",
            may_quote=may_quote,
        ),
        now=utcnow(),
    )
    return customer, invitation, response


def erase(customer_id: int) -> privacy.Erasure:
    return privacy.erase_customer(customer_id, actor_id=None, now=utcnow())


def lapsed_import(email: str = ADDRESS) -> None:
    """The shop's customers export, with the address again."""
    last = (utcnow() - timedelta(days=400)).date().isoformat()
    text = f"email,first_name,last_purchase_at,total_spent\n{email},Ada,{last},99\n"
    import_customers(io.BytesIO(text.encode()), "customers.csv", now=utcnow())


# --- erasure ------------------------------------------------------------------------------


def test_erasure_removes_personal_data_and_keeps_the_hash_and_the_figures(app):
    customer, _, response = answered_customer()
    hashed = customer.email_hash
    result = erase(customer.id)
    assert not result.already_erased
    assert (result.responses, result.invitations) == (1, 1)
    db.session.expire_all()
    erased = db.session.get(Customer, customer.id)
    assert erased.email == f"erased:{customer.id}"
    with pytest.raises(InvalidInput):
        normalise_email(erased.email)  # the placeholder can never pass for an address
    assert (erased.first_name, erased.last_name, erased.phone) == ("", "", "")
    assert erased.external_id is None
    assert erased.locale is None
    assert erased.status == CustomerStatus.ERASED
    assert erased.erased_at is not None
    assert erased.email_hash == hashed
    assert (erased.orders_count, erased.total_spent) == (3, 10_000)
    assert db.session.scalar(sa.select(Order.amount).where(Order.customer_id == customer.id)) == 4250
    answer = db.session.get(Response, response.id)
    assert (answer.phone, answer.may_quote) == ("", False)
    assert answer.win_back_text == "Free delivery over £20"
    assert answer.better_elsewhere == "ShopCo"
    assert answer.would_return == WouldReturn.MAYBE


def test_erasure_suppresses_the_address_for_good_and_is_audited_without_personal_data(app, admin):
    customer, _, _ = answered_customer()
    privacy.erase_customer(customer.id, actor_id=admin.id, now=utcnow())
    row = suppressions.suppression_for(ADDRESS)
    assert row.reason == SuppressionReason.ERASED
    event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "customer.erase"))
    assert (event.actor_id, event.target_type, event.target_id) == (admin.id, "customer", customer.id)
    assert event.detail == "1 answers anonymised, 1 invitations revoked, suppression added"
    for detail in db.session.scalars(sa.select(AuditEvent.detail)):
        assert "ada" not in detail.lower()
        assert "7700" not in detail


def test_erasing_an_already_suppressed_address_keeps_its_row_as_erased(app):
    customer = make_customer(ADDRESS)
    since = utcnow() - timedelta(days=30)
    suppressions.suppress(ADDRESS, SuppressionReason.UNSUBSCRIBED, since, note="Rang: Ada at 14 Elm Road")
    db.session.commit()
    before = suppressions.suppression_for(ADDRESS)
    erase(customer.id)
    db.session.expire_all()
    after = suppressions.suppression_for(ADDRESS)
    assert after.id == before.id
    assert after.reason == SuppressionReason.ERASED
    assert after.created_at == since
    assert "Elm Road" not in after.note
    assert db.session.scalar(sa.select(sa.func.count(Suppression.id))) == 1
    event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "customer.erase"))
    assert event.detail.endswith("suppression kept (was unsubscribed)")


def test_erasing_twice_changes_nothing(app):
    customer, _, _ = answered_customer()
    erase(customer.id)
    again = erase(customer.id)
    assert again.already_erased
    assert "already erased" in again.message()
    actions = list(
        db.session.scalars(sa.select(AuditEvent.action).where(AuditEvent.action == "customer.erase"))
    )
    assert actions == ["customer.erase"]


def test_erasing_an_unknown_customer_is_not_found(app):
    with pytest.raises(NotFound):
        erase(404)


def test_erasure_revokes_links_so_the_old_survey_link_is_not_found(app, client):
    from app.tokens import make_survey_token

    customer, invitation, _ = answered_customer()
    link = f"/s/{make_survey_token(invitation.reference, invitation.nonce)}"
    assert client.get(link).status_code == 200
    erase(customer.id)
    assert client.get(link).status_code == 404


def test_erasure_withdraws_unsent_invitations_so_nothing_is_sent(app, smtp):
    customer = make_customer(ADDRESS)
    campaign, queued = campaigns.create_campaign(name="Autumn", lapsed_days=180, now=utcnow())
    assert queued == 1
    erase(customer.id)
    summary = campaigns.send_campaign(campaign.id)
    assert summary.sent == 0
    assert smtp.messages == []
    statuses = set(db.session.scalars(sa.select(Invitation.status)))
    assert statuses == {InvitationStatus.SUPPRESSED}


def test_a_suppressed_address_survives_reimport_erasure_and_a_new_campaign(app):
    customer, _, _ = answered_customer()
    erase(customer.id)
    lapsed_import()
    rows = {row.email: row for row in db.session.scalars(sa.select(Customer))}
    assert set(rows) == {ADDRESS, f"erased:{customer.id}"}
    returned = rows[ADDRESS]
    assert returned.id != customer.id
    assert returned.status == CustomerStatus.SUPPRESSED
    assert rows[f"erased:{customer.id}"].status == CustomerStatus.ERASED
    # A suppression list naming the address again changes nothing either.
    listed = suppressions.import_suppressions(
        io.BytesIO(f"email\n{ADDRESS}\n".encode()), "list.csv", now=utcnow()
    )
    assert (listed.imported, listed.unchanged) == (0, 1)
    _campaign, queued = campaigns.create_campaign(name="Winter", lapsed_days=180, now=utcnow())
    assert queued == 0
    assert suppressions.is_suppressed(ADDRESS)
    # And erasing the returned row too leaves one erased suppression, still in force.
    erase(returned.id)
    assert suppressions.suppression_for(ADDRESS).reason == SuppressionReason.ERASED
    assert db.session.scalar(sa.select(sa.func.count(Suppression.id))) == 1


def test_erasure_rekeys_an_old_key_suppression_so_imports_still_see_it(app):
    old_key = app.config["SECRET_KEY"]
    customer = make_customer(ADDRESS)
    suppressions.suppress(ADDRESS, SuppressionReason.COMPLAINT, utcnow())
    db.session.commit()
    app.config.update(SECRET_KEY="a brand new key", SECRET_KEY_FALLBACKS=[old_key])
    erase(customer.id)
    row = db.session.scalar(sa.select(Suppression))
    assert row.email_hash == suppressions.email_hash(ADDRESS)
    assert db.session.get(Customer, customer.id).email_hash == row.email_hash
    lapsed_import()
    assert db.session.scalar(sa.select(Customer.status).where(Customer.email == ADDRESS)) == (
        CustomerStatus.SUPPRESSED
    )


# --- export -------------------------------------------------------------------------------


def test_the_export_holds_profile_orders_invitations_answers_and_suppression(app):
    customer, invitation, _ = answered_customer()
    data = privacy.export_customer(customer.id)
    assert data["customer"]["email"] == ADDRESS
    assert data["customer"]["phone"] == "+44 20 0000 0001"
    assert data["customer"]["external_id"] == "C-1001"
    assert [order["amount"] for order in data["orders"]] == [4250]
    assert data["invitations"][0]["campaign_id"] == invitation.campaign_id
    assert data["invitations"][0]["status"] == "queued"
    assert data["responses"][0]["win_back_text"] == "Free delivery over £20"
    assert data["responses"][0]["phone"] == "+44 7700 900123"
    assert data["responses"][0]["follow_up_text"] == ""
    assert data["suppression"] == {"suppressed": False, "reason": None, "since": None}
    text = json.dumps(data)  # JSON-ready as it is
    assert invitation.reference not in text
    assert invitation.nonce not in text
    assert customer.email_hash not in text
    assert not {"reference", "nonce", "message_id"} & set(data["invitations"][0])


def test_the_export_of_an_erased_customer_shows_what_is_left(app):
    customer, _, _ = answered_customer()
    erase(customer.id)
    data = privacy.export_customer(customer.id)
    assert data["customer"]["email"] == f"erased:{customer.id}"
    assert data["customer"]["first_name"] == ""
    assert data["responses"][0]["phone"] == ""
    assert data["invitations"][0]["revoked"] is True
    assert data["suppression"]["reason"] == "erased"


def test_the_export_of_an_unknown_customer_is_not_found(app):
    with pytest.raises(NotFound):
        privacy.export_customer(404)


def test_an_old_unsubscribe_link_after_erasure_still_answers_and_adds_nothing(app, client):
    from app.tokens import make_unsubscribe_token

    customer, invitation, _ = answered_customer()
    erase(customer.id)
    link = f"/u/{make_unsubscribe_token(invitation.reference)}"
    assert client.post(link).status_code == 200
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(Suppression.id))) == 1
    assert suppressions.suppression_for(ADDRESS).reason == SuppressionReason.ERASED
