"""Email: one send path (SMTP through Flask-Mail, or the development outbox) and one composer
per message, rendered from templates/emails/<name>.txt and .html in the customer's language."""

from __future__ import annotations

import re
import secrets
import smtplib
import time
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.generator import BytesGenerator
from email.parser import BytesParser
from email.utils import make_msgid, parseaddr
from io import BytesIO
from pathlib import Path

from flask import current_app, render_template
from flask_babel import gettext
from flask_mail import BadHeaderError, Connection, Message, sanitize_address, sanitize_addresses

from app import i18n
from app.i18n import N_
from app.models import Campaign, Customer, Invitation, utcnow
from app.services import campaign_content
from app.tokens import make_survey_token, make_unsubscribe_token
from app.urls import public_url

TEST_SUBJECT_PREFIX = "[Test] "
TEST_NOTICE = N_(
    "This is a test of the campaign \u201c%(campaign)s\u201d, sent to you alone. Its links are for "
    "trying out: they lead to no customer's survey and unsubscribe nobody."
)
REMINDER_PREFIX = N_("Reminder: ")


@dataclass
class Prepared:
    """A message checked and serialised, ready to send as it is."""

    message: Message
    data: bytes


# Flask-Mail serialises under the SMTP policy, which parses every header of every part again
# (half the time of composing a campaign email). Its headers are already encoded strings:
# compat32 writes them as they are, with CRLF line ends, and unfolded (well under the 998
# characters a line may hold), so that no reader sees a header's value start with a space.
_SMTP_COMPAT32 = policy.compat32.clone(linesep="\r\n", max_line_length=0)


class _Generator(BytesGenerator):
    """The standard generator, but its multipart boundaries need no search of the text for a
    clash (a regular expression compiled per message): Flask-Mail's parts are base64, which
    never holds "_", so a random boundary with "=_" cannot occur in them."""

    @classmethod
    def _make_boundary(cls, text: str | None = None) -> str:
        return "=_" + secrets.token_hex(16)


def prepare(message: Message) -> Prepared:
    """Check a message's headers and serialise it once, dated now (Flask-Mail's checks)."""
    if message.has_bad_headers():
        raise BadHeaderError
    if message.date is None:
        message.date = time.time()
    buffer = BytesIO()
    _Generator(buffer, policy=_SMTP_COMPAT32).flatten(message._message())
    return Prepared(message, buffer.getvalue())


class TimeoutConnection(Connection):
    """Flask-Mail's SMTP connection with a socket timeout (it sets none): a server that stops
    answering fails the send instead of hanging the worker."""

    def configure_host(self) -> smtplib.SMTP:
        config = current_app.config
        timeout = config["MAIL_TIMEOUT_SECONDS"]
        smtp_class = smtplib.SMTP_SSL if self.mail.use_ssl else smtplib.SMTP
        host = smtp_class(self.mail.server, self.mail.port, timeout=timeout)
        try:
            if self.mail.use_tls:
                host.starttls()
            if self.mail.username and self.mail.password:
                host.login(self.mail.username, self.mail.password)
        except BaseException:
            host.close()  # a refused login must not leave the connection open
            raise
        return host

    def send_prepared(self, prepared: Prepared) -> None:
        """Send a prepared message as it is."""
        message = prepared.message
        self.host.sendmail(
            sanitize_address(message.sender),
            list(sanitize_addresses(message.send_to)),
            prepared.data,
            message.mail_options,
            message.rcpt_options,
        )


class OutboxConnection:
    """Development backend: each message is written to instance/outbox/ instead of sent."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> OutboxConnection:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *_exc) -> None:
        return None

    def send(self, message: Message) -> None:
        self.send_prepared(prepare(message))

    def send_prepared(self, prepared: Prepared) -> None:
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
        safe_id = re.sub(r"[^A-Za-z0-9]+", "-", prepared.message.msgId).strip("-")[:60]
        (self.folder / f"{stamp}-{safe_id}.eml").write_bytes(prepared.data)


def outbox_folder() -> Path:
    return Path(current_app.instance_path) / "outbox"


def connect() -> TimeoutConnection | OutboxConnection:
    """One connection for a batch of messages: reuse it for every message in the batch."""
    if current_app.config["MAIL_BACKEND"] == "outbox":
        return OutboxConnection(outbox_folder())
    return TimeoutConnection(current_app.extensions["mail"])


def _sender_domain() -> str:
    address = parseaddr(current_app.config["MAIL_DEFAULT_SENDER"])[1]
    return address.rpartition("@")[2] or "localhost"


def compose_invitation(
    invitation: Invitation, customer: Customer, campaign: Campaign, *, reminder: bool = False
) -> Message:
    """The invitation email: the campaign's subject and body for this customer, with a personal
    survey link, an unsubscribe link and RFC 8058 headers. A reminder is the same email under a
    prefixed subject."""
    return compose_campaign_email(
        campaign,
        customer,
        reference=invitation.reference,
        nonce=invitation.nonce,
        offer_code=campaign_content.offer_code_for(campaign, invitation.offer_code),
        recipient=_recipient(customer),
        reminder=reminder,
    )


def _recipient(customer: Customer) -> str | tuple[str, str]:
    """The To address, with the customer's name made one line of text (no header injection)."""
    name = campaign_content.clean_value(customer.name)
    return (name, customer.email) if name else customer.email


def compose_campaign_email(
    campaign: Campaign,
    customer: Customer,
    *,
    reference: str,
    nonce: str,
    offer_code: str,
    recipient: str | tuple[str, str],
    test: bool = False,
    reminder: bool = False,
) -> Message:
    """A campaign's email for one customer, whose links name the invitation `reference`, in the
    customer's language (app/i18n.customer_language).

    The subject and body come from the campaign's templates; the footer (business name, postal
    address, unsubscribe link) and the headers are always these, whatever the templates say.
    A test is marked as one in its subject and at the top of both parts."""
    with i18n.customer_language(customer.locale):
        return _compose_campaign_email(
            campaign,
            customer,
            reference=reference,
            nonce=nonce,
            offer_code=offer_code,
            recipient=recipient,
            test=test,
            reminder=reminder,
        )


def _compose_campaign_email(
    campaign: Campaign,
    customer: Customer,
    *,
    reference: str,
    nonce: str,
    offer_code: str,
    recipient: str | tuple[str, str],
    test: bool,
    reminder: bool,
) -> Message:
    config = current_app.config
    survey_url = public_url("survey.show_form", token=make_survey_token(reference, nonce))
    unsubscribe_url = public_url("unsubscribe.confirm", token=make_unsubscribe_token(reference))
    values = campaign_content.Values(
        first_name=customer.first_name,
        business_name=config["BUSINESS_NAME"],
        link=survey_url,
        offer_code=offer_code,
    )
    subject = campaign_content.render_subject(campaign.subject, values)
    if reminder:
        subject = gettext(REMINDER_PREFIX) + subject
    if test:
        subject = TEST_SUBJECT_PREFIX + subject
    context = {
        "subject": subject,
        "body_text": campaign_content.render_body_text(campaign.body, values),
        "body_html": campaign_content.render_body_html(campaign.body, values),
        "test_notice": gettext(TEST_NOTICE, campaign=campaign.name) if test else "",
        "unsubscribe_url": unsubscribe_url,
        "business_name": config["BUSINESS_NAME"],
        "business_postal_address": config["BUSINESS_POSTAL_ADDRESS"],
    }
    list_unsubscribe = f"<{unsubscribe_url}>"
    if config.get("MAIL_UNSUBSCRIBE_ADDRESS"):
        list_unsubscribe += f", <mailto:{config['MAIL_UNSUBSCRIBE_ADDRESS']}?subject=unsubscribe>"
    domain = _sender_domain()
    message = Message(
        subject=subject,
        recipients=[recipient],
        body=render_template("emails/invitation.txt", **context),
        html=render_template("emails/invitation.html", **context),
        extra_headers={
            "List-Unsubscribe": list_unsubscribe,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": f"{_header_safe(config['BUSINESS_NAME'])} <campaign-{campaign.id}.{domain}>",
        },
    )
    message.msgId = make_msgid(domain=domain)
    return message


def _header_safe(text: str) -> str:
    return re.sub(r'[\r\n"<>]', "", text)


@dataclass
class OutboxEntry:
    """One message kept by the outbox backend."""

    name: str
    subject: str
    to: str
    sent_at: datetime
    text: str
    html: str
    headers: list[tuple[str, str]]


def outbox_entries(limit: int = 100) -> list[OutboxEntry]:
    """The newest messages in the outbox."""
    folder = outbox_folder()
    if not folder.exists():
        return []
    names = sorted((path.name for path in folder.glob("*.eml")), reverse=True)[:limit]
    return [read_outbox_entry(name) for name in names]


def read_outbox_entry(name: str) -> OutboxEntry:
    """One outbox message by file name (names from outbox_entries only)."""
    if not re.fullmatch(r"[A-Za-z0-9\-]+\.eml", name):
        raise FileNotFoundError(name)
    path = outbox_folder() / name
    parsed = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    text_part = parsed.get_body(preferencelist=("plain",))
    html_part = parsed.get_body(preferencelist=("html",))
    return OutboxEntry(
        name=name,
        subject=str(parsed["Subject"] or ""),
        to=str(parsed["To"] or ""),
        sent_at=datetime.fromtimestamp(path.stat().st_mtime).astimezone(),
        text=text_part.get_content() if text_part else "",
        html=html_part.get_content() if html_part else "",
        headers=[(key, str(value)) for key, value in parsed.items()],
    )
