"""Email: one send path (SMTP through Flask-Mail, or the development outbox) and one composer
per message, rendered from templates/emails/<name>.txt and .html in the customer's language."""

from __future__ import annotations

import binascii
import re
import secrets
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.generator import BytesGenerator
from email.header import Header
from email.message import Message as EmailMessage
from email.parser import BytesParser
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from functools import lru_cache
from io import BytesIO
from pathlib import Path

import flask_babel
from babel import Locale
from flask import current_app, render_template
from flask_babel import gettext
from flask_mail import BadHeaderError, Connection, Message, sanitize_address, sanitize_addresses
from markupsafe import Markup, escape

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
    """A message checked and serialised, ready to send as it is: its bytes and its envelope."""

    data: bytes
    sender: str
    recipients: list[str]
    message_id: str
    mail_options: list[str] = field(default_factory=list)
    rcpt_options: list[str] = field(default_factory=list)


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
    return Prepared(
        data=buffer.getvalue(),
        sender=sanitize_address(message.sender),
        recipients=list(sanitize_addresses(message.send_to)),
        message_id=message.msgId,
        mail_options=list(message.mail_options),
        rcpt_options=list(message.rcpt_options),
    )


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

    def send_prepared(
        self,
        prepared: Prepared,
        *,
        after_data_command: Callable[[], object] | None = None,
        before_data: Callable[[], bool] | None = None,
        after_data: Callable[[], object] | None = None,
    ) -> bool:
        """Send a prepared message as it is: smtplib's sendmail, command by command, with the
        same replies raised as the same errors. The hooks let the caller do its own work while
        the server works on a command, before that command's reply is read: `before_data` once
        RCPT TO has gone, and its answer decides whether the message goes (False resets the
        transaction and returns False: nothing delivered); `after_data_command` once DATA has
        gone, before the server's go-ahead (nothing of the message has gone yet);
        `after_data` once the message has gone, before the server's verdict on it."""
        host = self.host
        host.ehlo_or_helo_if_needed()
        options = list(prepared.mail_options)
        if host.does_esmtp and host.has_extn("size"):
            options.insert(0, f"size={len(prepared.data)}")
        host.putcmd("mail", f"FROM:{_quoted(prepared.sender)}{_options(host, options)}")
        code, reply = host.getreply()
        if code != 250:
            self._end_transaction(code)
            raise smtplib.SMTPSenderRefused(code, reply, prepared.sender)
        refused = {}
        allowed = True
        for number, recipient in enumerate(prepared.recipients, 1):
            host.putcmd("rcpt", f"TO:{_quoted(recipient)}{_options(host, prepared.rcpt_options)}")
            if before_data is not None and number == len(prepared.recipients):
                allowed = before_data()
            code, reply = host.getreply()
            if code not in (250, 251):
                refused[recipient] = (code, reply)
            if code == 421:
                host.close()
                raise smtplib.SMTPRecipientsRefused(refused)
        if len(refused) == len(prepared.recipients):
            host._rset()
            raise smtplib.SMTPRecipientsRefused(refused)
        if not allowed:
            host.rset()
            return False
        host.putcmd("data")
        if after_data_command is not None:
            after_data_command()
        code, reply = host.getreply()
        if code != 354:
            self._end_transaction(code)
            raise smtplib.SMTPDataError(code, reply)
        data = _LINE_START_DOT.sub(b"..", prepared.data)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        host.send(data + b".\r\n")
        if after_data is not None:
            after_data()
        code, reply = host.getreply()
        if code != 250:
            self._end_transaction(code)
            raise smtplib.SMTPDataError(code, reply)
        return True

    def _end_transaction(self, code: int) -> None:
        if code == 421:
            self.host.close()
        else:
            self.host._rset()


_LINE_START_DOT = re.compile(rb"(?m)^\.")


# An address that smtplib.quoteaddr would give back as it is, in angle brackets, without
# parsing it (its parser costs a sizeable part of a message's time in a bulk send).
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]+@[A-Za-z0-9.\-]+")


def _quoted(address: str) -> str:
    """An address for MAIL FROM or RCPT TO, as smtplib.quoteaddr gives it."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _options(host: smtplib.SMTP, options: list[str]) -> str:
    return " " + " ".join(options) if options and host.does_esmtp else ""


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

    def send_prepared(
        self,
        prepared: Prepared,
        *,
        after_data_command: Callable[[], object] | None = None,
        before_data: Callable[[], bool] | None = None,
        after_data: Callable[[], object] | None = None,
    ) -> bool:
        """Write the message to the outbox, with the same hooks as an SMTP connection's."""
        if before_data is not None and not before_data():
            return False
        if after_data_command is not None:
            after_data_command()
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
        safe_id = re.sub(r"[^A-Za-z0-9]+", "-", prepared.message_id).strip("-")[:60]
        (self.folder / f"{stamp}-{safe_id}.eml").write_bytes(prepared.data)
        if after_data is not None:
            after_data()
        return True


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
    context = _layout_context(
        subject=subject,
        body_text=campaign_content.render_body_text(campaign.body, values),
        body_html=campaign_content.render_body_html(campaign.body, values),
        unsubscribe_url=unsubscribe_url,
        test_notice=gettext(TEST_NOTICE, campaign=campaign.name) if test else "",
    )
    domain = _sender_domain()
    message = Message(
        subject=subject,
        recipients=[recipient],
        body=render_template("emails/invitation.txt", **context),
        html=render_template("emails/invitation.html", **context),
        extra_headers={
            "List-Unsubscribe": _list_unsubscribe(unsubscribe_url),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": _list_id(campaign.id, domain),
        },
    )
    message.msgId = make_msgid(domain=domain)
    return message


def _layout_context(
    *, subject: str, body_text: str, body_html: str, unsubscribe_url: str, test_notice: str
) -> dict[str, str]:
    """What the layout templates (emails/invitation.txt and .html) are rendered with."""
    config = current_app.config
    return {
        "subject": subject,
        "body_text": body_text,
        "body_html": body_html,
        "test_notice": test_notice,
        "unsubscribe_url": unsubscribe_url,
        "business_name": config["BUSINESS_NAME"],
        "business_postal_address": config["BUSINESS_POSTAL_ADDRESS"],
    }


def _list_unsubscribe(unsubscribe_url: str) -> str:
    """The List-Unsubscribe header: the one-click link, and a mailto where one is configured."""
    value = f"<{unsubscribe_url}>"
    address = current_app.config.get("MAIL_UNSUBSCRIBE_ADDRESS")
    if address:
        value += f", <mailto:{address}?subject=unsubscribe>"
    return value


def _list_id(campaign_id: int, domain: str) -> str:
    return f"{_header_safe(current_app.config['BUSINESS_NAME'])} <campaign-{campaign_id}.{domain}>"


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


# --- campaign emails in bulk ----------------------------------------------------------------
# A campaign's send composes the same email thousands of times, differing in a few values. The
# layout (both templates), the headers that do not change and the MIME structure are rendered
# once per locale and settings into a skeleton of literal text with named slots; each email then
# renders only its own subject and body (campaign_content, as the full composer does) and its two
# signed links, and fills the slots, each value escaped for where it goes: HTML-escaped in the
# HTML part, RFC 2047-encoded in a header when it is not ASCII. Each part is sent as it is (7bit)
# when it is ASCII with lines of at most 998 bytes, else quoted-printable.

_SLOT_KEY = secrets.token_hex(4)
_SLOT = re.compile(rf"wb{_SLOT_KEY}s([a-z_]+)z")
_TOKEN_MARK = f"wb{_SLOT_KEY}t"
_HTML_ESCAPED_SLOTS = frozenset({"subject", "unsubscribe_url"})
_MAX_LINE = 998  # bytes a line of a message may hold, CRLF excluded (RFC 5322)
_LAYOUTS_KEY = "winback.email_layouts"


@dataclass(frozen=True)
class _Layout:
    """One locale's and one configuration's skeleton of campaign emails."""

    text: tuple[str, ...]  # literal text and slot names, alternating (split on the slots)
    html: tuple[str, ...]
    survey_url: tuple[str, str]  # the URL around its token
    unsubscribe_url: tuple[str, str]
    list_unsubscribe: tuple[str, str]  # the header's value around the unsubscribe URL
    from_header: bytes
    envelope_sender: str
    domain: str
    business_name: str


def _slot(name: str) -> str:
    return f"wb{_SLOT_KEY}s{name}z"


def _header_lines(pairs: list[tuple[str, str]]) -> bytes:
    """Headers as the message writer writes them (compat32, CRLF): for the fixed ones."""
    message = EmailMessage()
    for name, value in pairs:
        message[name] = value
    buffer = BytesIO()
    _Generator(buffer, policy=_SMTP_COMPAT32).flatten(message)
    return buffer.getvalue().split(b"\r\n\r\n", 1)[0] + b"\r\n"


def _layout(locale: str) -> _Layout | None:
    """The skeleton for this locale and the current settings, built on first use (one per app);
    None when a setting is not plain ASCII where the skeleton needs it (then the full composer)."""
    config = current_app.config
    mail = current_app.extensions["mail"]
    key = (
        locale,
        config["BUSINESS_NAME"],
        config["BUSINESS_POSTAL_ADDRESS"],
        config["PUBLIC_BASE_URL"],
        config["MAIL_DEFAULT_SENDER"],
        config.get("MAIL_UNSUBSCRIBE_ADDRESS"),
        str(mail.default_sender),
    )
    layouts = current_app.extensions.setdefault(_LAYOUTS_KEY, {})
    if key not in layouts:
        with flask_babel.force_locale(_babel_locale(locale)):
            layouts[key] = _build_layout()
    return layouts[key]


def _build_layout() -> _Layout | None:
    context = _layout_context(
        subject=_slot("subject"),
        body_text=_slot("body_text"),
        body_html=Markup(_slot("body_html")),  # noqa: S704 - a marker, replaced when filled
        unsubscribe_url=_slot("unsubscribe_url"),
        test_notice="",
    )
    text = tuple(_SLOT.split(render_template("emails/invitation.txt", **context)))
    html = tuple(_SLOT.split(render_template("emails/invitation.html", **context)))
    survey_url = public_url("survey.show_form", token=_TOKEN_MARK)
    unsubscribe_url = public_url("unsubscribe.confirm", token=_TOKEN_MARK)
    list_unsubscribe = _list_unsubscribe(_TOKEN_MARK)
    if not (survey_url + unsubscribe_url + list_unsubscribe).isascii():
        return None
    sender = current_app.extensions["mail"].default_sender
    return _Layout(
        text=text,
        html=html,
        survey_url=tuple(survey_url.split(_TOKEN_MARK)),
        unsubscribe_url=tuple(unsubscribe_url.split(_TOKEN_MARK)),
        list_unsubscribe=tuple(list_unsubscribe.split(_TOKEN_MARK)),
        from_header=_header_lines([("From", sanitize_address(sender))]),
        envelope_sender=sanitize_address(sender),
        domain=_sender_domain(),
        business_name=current_app.config["BUSINESS_NAME"],
    )


def _fill(pieces: tuple[str, ...], values: dict[str, str]) -> str:
    filled = list(pieces)
    filled[1::2] = [values[name] for name in pieces[1::2]]
    return "".join(filled)


def _part(content_type: bytes, text: str) -> bytes:
    """One text part: its headers and its body, 7bit when it can go as it is, else
    quoted-printable (any line length, any character)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    data = text.replace("\n", "\r\n").encode()
    if data.isascii() and max(map(len, data.split(b"\r\n"))) <= _MAX_LINE:
        encoding = b"7bit"
    else:
        data, encoding = binascii.b2a_qp(data, istext=True), b"quoted-printable"
    return (
        b"Content-Type: " + content_type + b'; charset="utf-8"\r\nMIME-Version: 1.0\r\n'
        b"Content-Transfer-Encoding: " + encoding + b"\r\n\r\n" + data
    )


def _encoded_header(text: str) -> str:
    """A header value as Flask-Mail encodes a subject: as it is when ASCII, else RFC 2047."""
    return text if text.isascii() else Header(text, "utf-8").encode(linesep="\r\n")


# A display name that needs neither quoting nor encoding; any other goes through Header as
# Flask-Mail's does (which also encodes an ASCII name that looks like an encoded word).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 '\-]{0,60}")


_dates: dict[int, str] = {}


def _date_header(now: float) -> str:
    """The Date header for this second (formatted once a second)."""
    second = int(now)
    date = _dates.get(second)
    if date is None:
        _dates.clear()
        date = _dates[second] = formatdate(second, localtime=True)
    return date


def compose_campaign_message(
    campaign: Campaign,
    customer: Customer,
    *,
    reference: str,
    nonce: str,
    offer_code: str,
    reminder: bool = False,
) -> Prepared:
    """The email compose_campaign_email gives, prepared for sending, composed from the skeleton
    for the customer's locale: what a campaign's send calls once per message. A reminder's
    subject line starts with the translated REMINDER_PREFIX, as on a composed message.

    An address that is not plain ASCII, or settings the skeleton does not cover, get the full
    composer."""
    email = customer.email
    locale = i18n.supported_locale(customer.locale) or i18n.DEFAULT_LOCALE
    # Nothing below needs the customer's language in force: the skeleton was built in it, and
    # the fixed texts come from campaign_content.localized, which looks them up in it.
    layout = _layout(locale) if email.isascii() and not _UNSAFE_ADDRESS.search(email) else None
    if layout is None:
        return _prepare_full(campaign, customer, reference, nonce, offer_code, reminder)
    subject_prefix = campaign_content.localized(REMINDER_PREFIX, locale) if reminder else ""
    survey_url = make_survey_token(reference, nonce).join(layout.survey_url)
    unsubscribe_url = make_unsubscribe_token(reference).join(layout.unsubscribe_url)
    values = campaign_content.Values(
        first_name=customer.first_name,
        business_name=layout.business_name,
        link=survey_url,
        offer_code=offer_code,
    )
    subject = campaign_content.render_subject(campaign.subject, values, locale)
    if subject_prefix:
        subject = subject_prefix + subject
    body_text = campaign_content.render_body_text(campaign.body, values, locale)
    body_html = campaign_content.render_body_html(campaign.body, values, locale)
    text = _fill(
        layout.text,
        {
            "subject": subject,
            "body_text": body_text,
            "body_html": body_html,
            "unsubscribe_url": unsubscribe_url,
        },
    )
    html = _fill(
        layout.html,
        {
            "subject": str(escape(subject)),
            "body_text": str(escape(body_text)),
            "body_html": str(body_html),
            "unsubscribe_url": str(escape(unsubscribe_url)),
        },
    )
    name = campaign_content.clean_value(customer.name)
    if not name:
        to = email
    elif _PLAIN_NAME.fullmatch(name):
        to = f"{name} <{email}>"
    else:
        to = formataddr((Header(name, "utf-8").encode(linesep="\r\n"), email))
    message_id = make_msgid(domain=layout.domain)
    mixed, alternative = _Generator._make_boundary(), _Generator._make_boundary()
    subject_line = f"Subject: {_encoded_header(subject)}\r\n" if subject else ""
    head = (
        f'Content-Type: multipart/mixed; boundary="{mixed}"\r\nMIME-Version: 1.0\r\n{subject_line}'
    ).encode() + layout.from_header
    head += (
        f"To: {to}\r\nDate: {_date_header(time.time())}\r\nMessage-ID: {message_id}\r\n"
        f"List-Unsubscribe: {unsubscribe_url.join(layout.list_unsubscribe)}\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    ).encode()
    list_id = _list_id(campaign.id, layout.domain)
    head += f"List-Id: {list_id}\r\n".encode() if list_id.isascii() else _header_lines([("List-Id", list_id)])
    data = b"".join(
        (
            head,
            f'\r\n--{mixed}\r\nContent-Type: multipart/alternative; boundary="{alternative}"\r\n'
            f"MIME-Version: 1.0\r\n\r\n--{alternative}\r\n".encode(),
            _part(b"text/plain", text),
            f"\r\n--{alternative}\r\n".encode(),
            _part(b"text/html", html),
            f"\r\n--{alternative}--\r\n\r\n--{mixed}--\r\n".encode(),
        )
    )
    return Prepared(data=data, sender=layout.envelope_sender, recipients=[email], message_id=message_id)


@lru_cache(maxsize=16)
def _babel_locale(locale: str) -> Locale:
    """A parsed locale, kept (parsing looks for its data file on disk each time)."""
    return Locale.parse(locale)


_UNSAFE_ADDRESS = re.compile(r"[\s<>\",;()\[\]\\]")


def _prepare_full(
    campaign: Campaign, customer: Customer, reference: str, nonce: str, offer_code: str, reminder: bool
) -> Prepared:
    message = compose_campaign_email(
        campaign,
        customer,
        reference=reference,
        nonce=nonce,
        offer_code=offer_code,
        recipient=_recipient(customer),
        reminder=reminder,
    )
    return prepare(message)
