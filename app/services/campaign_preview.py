"""A campaign's email as one customer will see it, and a test of it sent to a staff member.

Both use links to an invitation that does not exist, so neither can answer a real customer's
survey or unsubscribe anyone."""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from flask import current_app

from app import emails
from app.exceptions import MailNotSent, NotFound
from app.extensions import db
from app.models import AuditEvent, Campaign, Customer, Invitation, OfferCode, OfferKind, StaffUser
from app.services import audit, campaign_content
from app.tasks import SEND_TEST

# No real reference has a colon (they are hex or URL-safe base64): this one is never found.
TEST_REFERENCE = "test:no-such-invitation"
TEST_NONCE = "test"
SAMPLE_FIRST_NAME = "Ada"
SAMPLE_LAST_NAME = "Lovelace"
SAMPLE_OFFER_CODE = "EXAMPLE-CODE"


@dataclass
class Preview:
    """The rendered email: whom it was rendered for, its subject and both parts."""

    shown_for: str
    subject: str
    text: str
    html: str


def _campaign(campaign_id: int) -> Campaign:
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound(f"no campaign #{campaign_id}")
    return campaign


def _sample(campaign: Campaign) -> tuple[Customer, str, str]:
    """The customer of the campaign's first invitation with their offer code, or a sample
    customer when there is none; and how to describe them."""
    row = db.session.execute(
        sa.select(Invitation.customer_id, Invitation.offer_code)
        .where(Invitation.campaign_id == campaign.id)
        .order_by(Invitation.id)
        .limit(1)
    ).first()
    if row is not None:
        customer = db.session.get(Customer, row.customer_id)
        shown_for = f"{customer.name or customer.email}, the first customer of this campaign"
        return customer, campaign_content.offer_code_for(campaign, row.offer_code), shown_for
    code = ""
    if campaign.offer_kind == OfferKind.UNIQUE:
        code = db.session.scalar(
            sa.select(OfferCode.code)
            .where(OfferCode.campaign_id == campaign.id)
            .order_by(OfferCode.id)
            .limit(1)
        )
    sample = Customer(first_name=SAMPLE_FIRST_NAME, last_name=SAMPLE_LAST_NAME, email="ada@example.com")
    offer_code = campaign_content.offer_code_for(campaign, code or SAMPLE_OFFER_CODE)
    return sample, offer_code, f"{SAMPLE_FIRST_NAME} {SAMPLE_LAST_NAME}, a sample customer"


def _compose(campaign: Campaign, customer: Customer, offer_code: str, recipient: str, *, test: bool):
    return emails.compose_campaign_email(
        campaign,
        customer,
        reference=TEST_REFERENCE,
        nonce=TEST_NONCE,
        offer_code=offer_code,
        recipient=recipient,
        test=test,
    )


def preview(campaign_id: int) -> Preview:
    """The campaign's email rendered for one customer of its audience (links lead nowhere)."""
    campaign = _campaign(campaign_id)
    customer, offer_code, shown_for = _sample(campaign)
    message = _compose(campaign, customer, offer_code, customer.email, test=False)
    return Preview(shown_for=shown_for, subject=message.subject, text=message.body, html=message.html)


def send_test(campaign_id: int, *, to: str, actor_id: int | None, now: datetime) -> None:
    """Send the campaign's email, as its first customer would get it, to `to` alone: subject
    marked "[Test] ", a notice at the top, links that answer for no customer. The real send
    path carries it. A refusal or a server that cannot be reached raises MailNotSent."""
    campaign = _campaign(campaign_id)
    customer, offer_code, _ = _sample(campaign)
    message = _compose(campaign, customer, offer_code, to, test=True)
    db.session.commit()  # end the transaction: none is held while the mail server answers
    try:
        with emails.connect() as connection:
            connection.send(message)
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = next(iter(exc.recipients.values()))
        raise MailNotSent(f"the mail server refused {to}: {code} {_text(reply)}") from None
    except smtplib.SMTPResponseException as exc:
        raise MailNotSent(f"the mail server answered {exc.smtp_code} {_text(exc.smtp_error)}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise MailNotSent(f"the mail server could not be reached ({exc})") from None
    audit.record(TEST_SENT, "campaign", campaign_id, actor_id=actor_id, now=now, detail=to)
    db.session.commit()


def queue_test(campaign_id: int, *, actor_id: int, now: datetime) -> str:
    """Hand a test of the campaign's email, to the staff member `actor_id` alone, to a background
    worker: a staff request never waits on the mail server. Returns the address it goes to; the
    campaign page shows how it went (latest_test)."""
    _campaign(campaign_id)
    staff = db.session.get(StaffUser, actor_id)
    if staff is None:
        raise NotFound(f"no staff member #{actor_id}")
    audit.record(TEST_QUEUED, "campaign", campaign_id, actor_id=actor_id, now=now, detail=staff.email)
    db.session.commit()
    current_app.extensions["celery"].send_task(SEND_TEST, args=[campaign_id, actor_id])
    return staff.email


def run_test(campaign_id: int, actor_id: int, *, now: datetime) -> None:
    """In the worker: send the queued test to the staff member's address as it is now, and record
    the outcome (a refusal or an unreachable server too) for the campaign page."""
    staff = db.session.get(StaffUser, actor_id)
    if staff is None or not staff.active:
        return
    try:
        send_test(campaign_id, to=staff.email, actor_id=actor_id, now=now)
    except MailNotSent as exc:
        db.session.rollback()
        audit.record(TEST_FAILED, "campaign", campaign_id, actor_id=actor_id, now=now, detail=str(exc))
        db.session.commit()


TEST_QUEUED = "campaign.test_queued"
TEST_SENT = "campaign.test_send"
TEST_FAILED = "campaign.test_failed"


@dataclass
class TestOutcome:
    """The latest test of a campaign's email: queued (waiting for a worker), sent, or failed."""

    state: str  # "queued", "sent" or "failed"
    detail: str
    at: datetime


def latest_test(campaign_id: int) -> TestOutcome | None:
    """How the latest test of the campaign's email went, from the audit log."""
    event = db.session.scalar(
        sa.select(AuditEvent)
        .where(
            AuditEvent.target_type == "campaign",
            AuditEvent.target_id == campaign_id,
            AuditEvent.action.in_([TEST_QUEUED, TEST_SENT, TEST_FAILED]),
        )
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    if event is None:
        return None
    state = {TEST_QUEUED: "queued", TEST_SENT: "sent", TEST_FAILED: "failed"}[event.action]
    return TestOutcome(state=state, detail=event.detail, at=event.created_at)


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
