"""Staff triage answers; actionable ones become improvements; done ones go public."""

from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import (
    AuditEvent,
    ContactPreference,
    Improvement,
    ImprovementStatus,
    Invitation,
    Outcome,
    Response,
    StopReason,
    WouldReturn,
    utcnow,
)
from app.services import campaigns, suppressions, survey
from app.services.survey import Answers
from tests.conftest import csrf_token
from tests.factories import make_customer


def answer(email: str, text: str = "Faster delivery", may_quote: bool = True) -> Response:
    customer = make_customer(email, first_name="Secret", last_name="Name")
    campaign, _ = campaigns.create_campaign(name=f"For {email}", lapsed_days=180, now=utcnow())
    invitation = db.session.scalar(
        sa.select(Invitation).where(
            Invitation.campaign_id == campaign.id, Invitation.customer_id == customer.id
        )
    )
    return survey.submit_response(
        invitation.id,
        Answers(
            stop_reason=StopReason.DELIVERY,
            better_elsewhere="",
            win_back_text=text,
            would_return=WouldReturn.MAYBE,
            contact_via=ContactPreference.EMAIL,
            phone="",
            may_quote=may_quote,
        ),
        now=utcnow(),
    )


def set_outcome(client, response_id: int, outcome: str):
    page = client.get(f"/staff/triage/{response_id}")
    return client.post(
        f"/staff/triage/{response_id}/outcome",
        data={"outcome": outcome, "csrf_token": csrf_token(page.data)},
    )


def submit_form(client, url: str, **fields):
    """Open a staff form page and post it with its CSRF token and these fields."""
    page = client.get(url)
    return client.post(url, data={"csrf_token": csrf_token(page.data), **fields})


def test_the_inbox_lists_untriaged_answers_with_their_suggestion(staff_client):
    answer("ada@example.com", "Free returns please")
    page = staff_client.get("/staff/triage/").get_data(as_text=True)
    assert "Free returns please" in page
    assert "Suggested: <strong>Actionable</strong>" in page


def test_marking_an_outcome_records_who_and_when_and_leaves_the_untriaged_list(staff_client, admin):
    response = answer("ada@example.com")
    reply = set_outcome(staff_client, response.id, "actionable")
    assert reply.status_code == 302
    db.session.rollback()
    stored = db.session.get(Response, response.id)
    assert stored.outcome == Outcome.ACTIONABLE
    assert stored.triaged_by_id == admin.id
    assert stored.triaged_at is not None
    assert "Faster delivery" not in staff_client.get("/staff/triage/").get_data(as_text=True)
    event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "response.triage"))
    assert (event.actor_id, event.target_id, event.detail) == (admin.id, response.id, "actionable")


def test_never_and_unfeasible_stop_all_contact(staff_client):
    never = answer("never@example.com")
    unfeasible = answer("unfeasible@example.com")
    set_outcome(staff_client, never.id, "never")
    set_outcome(staff_client, unfeasible.id, "unfeasible")
    db.session.rollback()
    assert suppressions.is_suppressed("never@example.com")
    assert suppressions.is_suppressed("unfeasible@example.com")


def test_an_unknown_outcome_is_refused(staff_client):
    response = answer("ada@example.com")
    assert set_outcome(staff_client, response.id, "maybe-later").status_code == 400
    db.session.rollback()
    assert db.session.get(Response, response.id).outcome is None


def test_an_actionable_answer_starts_an_improvement_that_goes_public_when_done(staff_client, client):
    response = answer("ada@example.com", "Deliver on Saturdays")
    set_outcome(staff_client, response.id, "actionable")
    new_url = f"/staff/improvements/new?response={response.id}"
    assert "Deliver on Saturdays" in staff_client.get(new_url).get_data(as_text=True)
    reply = submit_form(
        staff_client, new_url, you_said="Weekend deliveries", we_did="", status="planned", published="y"
    )
    assert reply.status_code == 302
    improvement_url = reply.headers["Location"]
    assert "Weekend deliveries" not in client.get("/you-said-we-did").get_data(as_text=True)

    submit_form(
        staff_client,
        improvement_url,
        you_said="Weekend deliveries",
        we_did="We now deliver on **Saturdays**. <script>alert(1)</script>",
        status="done",
        published="y",
    )
    public = client.get("/you-said-we-did").get_data(as_text=True)
    assert "Weekend deliveries" in public
    assert "We now deliver on <strong>Saturdays</strong>." in public
    assert "<script>alert(1)</script>" not in public
    assert "Deliver on Saturdays" in public  # they allowed quoting
    assert "Secret" not in public
    assert "ada@example.com" not in public
    db.session.rollback()
    improvement = db.session.scalar(sa.select(Improvement))
    assert improvement.status == ImprovementStatus.DONE
    assert improvement.done_at is not None


def test_words_not_allowed_to_be_quoted_never_reach_the_public_page(staff_client, client):
    response = answer("ada@example.com", "Keep this private", may_quote=False)
    set_outcome(staff_client, response.id, "actionable")
    submit_form(
        staff_client,
        f"/staff/improvements/new?response={response.id}",
        you_said="Something",
        we_did="Done it",
        status="done",
        published="y",
    )
    public = client.get("/you-said-we-did").get_data(as_text=True)
    assert "Done it" in public
    assert "Keep this private" not in public


def test_an_untriaged_answer_cannot_start_an_improvement(staff_client):
    response = answer("ada@example.com")
    reply = submit_form(
        staff_client,
        f"/staff/improvements/new?response={response.id}",
        you_said="X",
        we_did="",
        status="planned",
    )
    assert reply.status_code == 400
    assert "only responses triaged as actionable" in reply.get_data(as_text=True)
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(Improvement.id))) == 0


def test_publishing_a_done_improvement_needs_what_we_did(staff_client):
    response = answer("ada@example.com")
    set_outcome(staff_client, response.id, "actionable")
    reply = submit_form(
        staff_client,
        f"/staff/improvements/new?response={response.id}",
        you_said="X",
        we_did=" ",
        status="done",
        published="y",
    )
    assert reply.status_code == 400
    assert "say what changed" in reply.get_data(as_text=True)


def test_the_cached_public_page_shows_a_change_at_once(staff_client, client):
    response = answer("ada@example.com", "Open on Sundays")
    set_outcome(staff_client, response.id, "actionable")
    assert "Sunday opening" not in client.get("/you-said-we-did").get_data(as_text=True)
    submit_form(
        staff_client,
        f"/staff/improvements/new?response={response.id}",
        you_said="Sunday opening",
        we_did="Open 10 to 4 on Sundays.",
        status="done",
        published="y",
    )
    assert "Sunday opening" in client.get("/you-said-we-did").get_data(as_text=True)
