"""A campaign's email content: the subject and body templates with their placeholders, rendered
in a sandbox into the text and HTML parts, and the campaign's offer (one shared code, or a file of
unique codes handed out one per recipient).

Templates are Jinja, in a sandboxed environment of their own (never the app's), and are checked
when saved: only the placeholders below, `{% if %}` and a few text filters are allowed. The body
is plain text with light Markdown: the text part is the rendered body as it is; the HTML part is
the same body through the project's Markdown and sanitiser, with every placeholder's value
escaped, so a customer's name can never become markup, a link or a header.

The default subject and body, and the survey button's label, are in the customer's language: they
are rendered in the language of the block around them (app/i18n.customer_language). A subject or
body that staff wrote is sent as written."""

from __future__ import annotations

import csv
import html
import re
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from urllib.parse import quote

import sqlalchemy as sa
from flask import current_app
from flask_babel import force_locale, gettext
from jinja2 import Template, TemplateError, TemplateSyntaxError, nodes, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from app.exceptions import InvalidInput, NotFound
from app.extensions import db
from app.i18n import N_
from app.markup import render_markdown
from app.models import Campaign, CampaignStatus, Invitation, InvitationStatus, OfferCode, OfferKind
from app.services import audit
from app.services.csvfiles import header_key

PLACEHOLDERS = ("first_name", "business_name", "link", "offer_code")
DEFAULT_SUBJECT = N_("We miss you at {{ business_name }}: what would it take to win you back?")
# The default body: today's invitation wording, with the survey's own question (DESIGN §5).
# Its translations are templates too, with the same placeholders and tags.
DEFAULT_BODY = N_("""\
Hello{% if first_name %} {{ first_name }}{% endif %},

We've missed you at {{ business_name }}.

We really valued your custom. What would it take to win you back? Tell us in one minute:

{{ link }}

There's nothing to buy. We read every answer.

{% if offer_code %}
If you do come back, the code {{ offer_code }} is yours to use on your next order.

{% endif %}
Thank you,
{{ business_name }}
""")
SUBJECT_MAX_CHARS = 200
BODY_MAX_CHARS = 20_000
OFFER_CODE_MAX_CHARS = 100
CODES_BATCH = 10_000
# Subjects are measured with a long name, so that a long real one still fits.
SAMPLE_LONG_FIRST_NAME = "Maximiliana-Konstantina-Louise"
SAMPLE_OFFER_CODE = "WELCOME-BACK-15"
# The label of the button that a link alone on its line becomes in the HTML part.
BUTTON_LABEL = N_("Tell us what would help")
ALLOWED_FILTERS = frozenset({"default", "d", "upper", "lower", "title", "capitalize", "trim"})
ALLOWED_TESTS = frozenset({"defined", "undefined", "none"})
ERRORS_SHOWN = 10  # problems listed in one offer codes message
# A header line that a one-column CSV of codes may start with (compared by header_key).
CODE_HEADERS = frozenset(
    {"code", "codes", "offercode", "offercodes", "discountcode", "coupon", "couponcode", "vouchercode"}
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Values reach the HTML part as markers that Markdown leaves alone, and are put in place, escaped,
# after it. The key differs per process, so no template can guess a marker.
_KEY = secrets.token_hex(4)
_MARKER = re.compile(rf"https://m{_KEY}l(\d+)z\.invalid/|m{_KEY}v(\d+)z")
_HREF = re.compile(r'href="([^"]*)"')
_LINK_PARAGRAPH = re.compile(rf'<p><a href="(https://m{_KEY}l\d+z\.invalid/)"[^>]*>(.*?)</a></p>', re.DOTALL)
_MARKERS_KEY = "wb-markers"  # not a name a template can use: holds the values of one render
_STYLES = {
    "<p>": '<p style="font-size:17px;line-height:1.5;margin:0 0 16px;">',
    "<a href=": '<a style="color:#1f5f4a;" href=',
    "<ul>": '<ul style="font-size:17px;line-height:1.5;">',
    "<ol>": '<ol style="font-size:17px;line-height:1.5;">',
}
_BUTTON = (
    '<p style="margin:28px 0;"><a style="background:#1f5f4a;color:#ffffff;padding:14px 22px;'
    'border-radius:6px;text-decoration:none;font-size:17px;display:inline-block;" href="{href}">'
    "{label}</a></p>"
)


class Link(str):
    """The survey link: in the HTML part it becomes a link (or a button, alone on its line)."""

    __slots__ = ()


@dataclass(frozen=True)
class Values:
    """What the placeholders stand for in one email."""

    first_name: str
    business_name: str
    link: str
    offer_code: str = ""

    def context(self) -> dict[str, str]:
        return {
            "first_name": clean_value(self.first_name),
            "business_name": clean_value(self.business_name),
            "link": Link(clean_value(self.link)),
            "offer_code": clean_value(self.offer_code),
        }


def clean_value(value: object) -> str:
    """A placeholder's value as one line of text: control characters (CR, LF, tab, NUL...) become
    spaces, so no value can start a header, a new line or a Markdown block."""
    if value is None:
        return ""
    return " ".join(_CONTROL.sub(" ", str(value)).split())


# --- rendering ------------------------------------------------------------------------------


def _text_finalize(value: object) -> str:
    return clean_value(value)


@pass_context
def _html_finalize(context: Context, value: object) -> str:
    """Every `{{ ... }}` of the HTML part becomes a marker; its value is kept for later."""
    markers: list[str] = context.get(_MARKERS_KEY)
    number = len(markers)
    markers.append(clean_value(value))
    if isinstance(value, Link):
        return f"<https://m{_KEY}l{number}z.invalid/>"
    return f"m{_KEY}v{number}z"


@lru_cache(maxsize=2)
def _environment(kind: str) -> ImmutableSandboxedEnvironment:
    """The sandbox for campaign templates: its own environment, not the app's."""
    return ImmutableSandboxedEnvironment(
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_html_finalize if kind == "html" else _text_finalize,
    )


@lru_cache(maxsize=128)
def _template(kind: str, field: str, source: str) -> Template:
    """A checked, compiled template (the same source compiles once per process)."""
    environment = _environment(kind)
    return environment.from_string(check_template(field, source))


# Translations of the fixed texts by (locale, English text), for a bulk send that names its
# locale: one dictionary look-up per email instead of Flask-Babel's per-call context look-ups.
_LOCALIZED: dict[tuple[str, str], str] = {}


def localized(message: str, locale: str | None) -> str:
    """The translation of `message` into `locale`, remembered for the next email; without a
    locale, into the language spoken (gettext)."""
    if locale is None:
        return gettext(message)
    key = (locale, message)
    text = _LOCALIZED.get(key)
    if text is None:
        with force_locale(locale):
            text = _LOCALIZED[key] = gettext(message)
    return text


def subject_source(source: str, locale: str | None = None) -> str:
    """The subject template to render: the default subject in the language spoken (stored as the
    English default), or the one staff wrote, as written."""
    if not source or source == DEFAULT_SUBJECT:
        return localized(DEFAULT_SUBJECT, locale)
    return source


def body_source(source: str, locale: str | None = None) -> str:
    """The body template to render: the default body in the language spoken (stored empty), or
    the one staff wrote, as written."""
    if not source or source.strip() == DEFAULT_BODY.strip():
        return localized(DEFAULT_BODY, locale)
    return source


def render_subject(source: str, values: Values, locale: str | None = None) -> str:
    """The subject line for one email: one line, whatever the values hold. `locale`: the
    language spoken, when the caller knows it (see localized)."""
    rendered = _template("text", "subject", subject_source(source, locale)).render(values.context())
    return " ".join(rendered.split())


def render_body_text(source: str, values: Values, locale: str | None = None) -> str:
    """The text part's body: the rendered template as it is (an empty body is the default)."""
    return _template("text", "body", body_source(source, locale)).render(values.context()).strip() + "\n"


def render_body_html(source: str, values: Values, locale: str | None = None) -> Markup:
    """The HTML part's body: the same template through Markdown and the sanitiser, with every
    value escaped after that, so no value can add markup, a link or Markdown."""
    markers: list[str] = []
    marked = _template("html", "body", body_source(source, locale)).render(
        {**values.context(), _MARKERS_KEY: markers}
    )
    skeleton = _skeleton(marked, html.escape(localized(BUTTON_LABEL, locale)))
    return Markup(_fill(skeleton, markers))  # noqa: S704 - sanitised, values escaped


@lru_cache(maxsize=256)
def _skeleton(marked: str, button_label: str) -> str:
    """Markdown to sanitised HTML with markers where the values go, styled for email clients.
    Every customer whose `{% if %}`s come out alike, in one language, shares one, so it is
    converted once. `button_label` is HTML: the label of a bare survey link's button."""
    converted = str(render_markdown(marked, hard_breaks=True))

    def button(match: re.Match) -> str:
        href, label = match.groups()
        return _BUTTON.format(href=href, label=button_label if label == href else label)

    converted = _LINK_PARAGRAPH.sub(button, converted)
    for plain, styled in _STYLES.items():
        converted = converted.replace(plain, styled)
    return converted


def _fill(skeleton: str, markers: list[str]) -> str:
    """Put the values in place of the markers: escaped as text, and percent-encoded inside a
    link's address so that no value can choose where a link goes (the survey link excepted)."""

    def in_href(match: re.Match) -> str:
        def value(marker: re.Match) -> str:
            link, other = marker.groups()
            if link is not None:
                return html.escape(markers[int(link)])
            return html.escape(quote(markers[int(other)], safe=""))

        return f'href="{_MARKER.sub(value, match.group(1))}"'

    def as_text(marker: re.Match) -> str:
        link, other = marker.groups()
        return html.escape(markers[int(link if link is not None else other)])

    return _MARKER.sub(as_text, _HREF.sub(in_href, skeleton))


def offer_code_for(campaign: Campaign, invitation_code: str | None) -> str:
    """The offer code one recipient sees: the shared code, their own unique code, or none."""
    if campaign.offer_kind == OfferKind.SHARED:
        return campaign.offer_code
    if campaign.offer_kind == OfferKind.UNIQUE:
        return invitation_code or ""
    return ""


# --- checking templates ---------------------------------------------------------------------


def check_template(field: str, source: str) -> str:
    """Refuse a template that does not parse or uses anything but the placeholders, `{% if %}`
    and a few text filters; the message names the field and the line. Returns the source."""
    try:
        tree = _environment("text").parse(source)
    except TemplateSyntaxError as exc:
        raise InvalidInput(f"{field}: syntax error on line {exc.lineno}: {exc.message}") from None
    for node in tree.iter_child_nodes():
        _check_node(field, node)
    return source


_STATEMENT_NAMES = {
    nodes.For: "for",
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.FilterBlock: "filter",
    nodes.With: "with",
    nodes.Block: "block",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from",
    nodes.Extends: "extends",
    nodes.Assign: "set",
    nodes.AssignBlock: "set",
    nodes.ExprStmt: "do",
}
_ALLOWED_NODES = (
    nodes.Output,
    nodes.TemplateData,
    nodes.If,
    nodes.Name,
    nodes.Const,
    nodes.Filter,
    nodes.Test,
    nodes.Not,
    nodes.And,
    nodes.Or,
    nodes.Compare,
    nodes.Operand,
    nodes.CondExpr,
    nodes.Concat,
    nodes.Keyword,
)


def _check_node(field: str, node: nodes.Node) -> None:
    line = getattr(node, "lineno", "?")
    allowed = ", ".join(f"{{{{ {name} }}}}" for name in PLACEHOLDERS)
    if isinstance(node, nodes.Name):
        if node.ctx != "load" or node.name not in PLACEHOLDERS:
            raise InvalidInput(
                f"{field}: unknown placeholder {{{{ {node.name} }}}} on line {line} (use {allowed})"
            )
        return
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        _check_node(field, node.node)  # an unknown name first: the likelier mistake
        shown = f".{node.attr}" if isinstance(node, nodes.Getattr) else "[...]"
        raise InvalidInput(
            f"{field}: {shown} on line {line} is not allowed: placeholders are plain text, "
            "with no attributes or methods"
        )
    if isinstance(node, nodes.Call):
        raise InvalidInput(f"{field}: calling a function on line {line} is not allowed")
    if isinstance(node, nodes.Filter) and node.name not in ALLOWED_FILTERS:
        raise InvalidInput(
            f"{field}: the filter |{node.name} on line {line} is not allowed "
            f"(allowed: {', '.join(sorted(ALLOWED_FILTERS))})"
        )
    if isinstance(node, nodes.Test) and node.name not in ALLOWED_TESTS:
        raise InvalidInput(f"{field}: the test \u201cis {node.name}\u201d on line {line} is not allowed")
    statement = next((name for kind, name in _STATEMENT_NAMES.items() if isinstance(node, kind)), None)
    if statement:
        raise InvalidInput(
            f"{field}: {{% {statement} %}} on line {line} is not allowed: use the placeholders "
            "and {% if %} \u2026 {% else %} \u2026 {% endif %}"
        )
    if not isinstance(node, _ALLOWED_NODES):
        arithmetic = isinstance(node, nodes.BinExpr | nodes.UnaryExpr)
        what = "arithmetic" if arithmetic else type(node).__name__.lower()
        raise InvalidInput(
            f"{field}: {what} on line {line} is not allowed: "
            "use the placeholders, {% if %} and text filters"
        )
    for child in node.iter_child_nodes():
        _check_node(field, child)


@dataclass(frozen=True)
class Content:
    """A checked subject and body, as they are stored (an empty body means the default)."""

    subject: str
    body: str


def validate_templates(subject: str | None, body: str | None, *, offer_code: str = "") -> Content:
    """Check the subject and body as staff wrote them; raise InvalidInput naming the field and
    line. Returns them as they are stored: the body's line ends made plain, the default as ""."""
    subject = (subject or "").strip() or DEFAULT_SUBJECT
    if "\r" in subject or "\n" in subject:
        raise InvalidInput("subject: must be a single line")
    if len(subject) > SUBJECT_MAX_CHARS:
        raise InvalidInput(f"subject: at most {SUBJECT_MAX_CHARS} characters")
    body = (body or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if len(body) > BODY_MAX_CHARS:
        raise InvalidInput(f"body: at most {BODY_MAX_CHARS} characters")
    if body == DEFAULT_BODY.strip():
        body = ""
    check_template("subject", subject)
    check_template("body", body)
    link = "https://winback.example/s/" + "x" * 120
    long_values = Values(SAMPLE_LONG_FIRST_NAME, _business_name(), link, offer_code or SAMPLE_OFFER_CODE)
    short_values = Values("", _business_name(), link, "")
    try:
        rendered_subject = render_subject(subject, long_values)
        texts = [render_body_text(body, values) for values in (long_values, short_values)]
        render_body_html(body, long_values)
    except (TemplateError, TypeError, ValueError) as exc:
        raise InvalidInput(f"template: {exc}") from None
    if len(rendered_subject) > SUBJECT_MAX_CHARS:
        raise InvalidInput(
            f"subject: at most {SUBJECT_MAX_CHARS} characters once the placeholders are filled in "
            f"(with a {len(SAMPLE_LONG_FIRST_NAME)}-character first name it has {len(rendered_subject)})"
        )
    if not any(node.name == "link" for node in _parse(body).find_all(nodes.Name)):
        raise InvalidInput("body: must contain {{ link }}, the customer's personal survey link")
    if not all(link in text for text in texts):
        raise InvalidInput("body: {{ link }} must reach every customer, not only inside an {% if %}")
    return Content(subject=subject, body=body)


def _parse(source: str) -> nodes.Template:
    return _environment("text").parse(body_source(source))


def _business_name() -> str:
    return current_app.config["BUSINESS_NAME"]


# --- offers ---------------------------------------------------------------------------------


def check_offer_code(code: str | None, field: str = "offer code") -> str:
    """One offer code: printable, no spaces, at most 100 characters. Returns it stripped."""
    code = (code or "").strip()
    if not code:
        raise InvalidInput(f"{field}: enter the code")
    problem = _code_problem(code)
    if problem:
        raise InvalidInput(f"{field}: {problem}")
    return code


def _code_problem(code: str) -> str:
    if len(code) > OFFER_CODE_MAX_CHARS:
        return f"at most {OFFER_CODE_MAX_CHARS} characters"
    if any(character.isspace() for character in code):
        return "no spaces"
    if not code.isprintable() or any(unicodedata.category(c).startswith("C") for c in code):
        return "printable characters only"
    return ""


def parse_offer_codes(data: bytes | str) -> list[str]:
    """Unique codes from a file: one code per line, or a one-column CSV (an optional header such
    as "code" is skipped). Blank lines between codes, repeated codes (whatever their case) and bad
    codes are reported by line; the file is refused whole if any line is bad."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput("offer codes: the file is not UTF-8 text") from None
    lines = data.lstrip("\ufeff").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # blank lines at the end are an editor's, not a missing code
    codes: list[str] = []
    seen: dict[str, int] = {}
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        cells = [cell.strip() for cell in next(csv.reader([line]), [])]
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            problems.append(f"line {number} is blank")
            continue
        if len(cells) > 1:
            problems.append(f"line {number} has more than one column")
            continue
        code = cells[0]
        if number == 1 and header_key(code) in CODE_HEADERS:
            continue
        problem = _code_problem(code)
        if problem:
            problems.append(f"line {number}: {problem} ({code[:40]!r})")
            continue
        key = code.casefold()
        if key in seen:
            problems.append(f"line {number} repeats {code} from line {seen[key]}")
            continue
        seen[key] = number
        codes.append(code)
    if problems:
        more = len(problems) - ERRORS_SHOWN
        shown = "; ".join(problems[:ERRORS_SHOWN]) + (f"; and {more} more" if more > 0 else "")
        raise InvalidInput(f"offer codes: {shown}. Nothing was saved.")
    if not codes:
        raise InvalidInput("offer codes: the file holds no codes")
    return codes


@dataclass(frozen=True)
class Offer:
    """A checked offer: its kind, the shared code, and the unique codes to hand out."""

    kind: OfferKind
    code: str = ""
    codes: tuple[str, ...] = ()


def resolve_offer(offer_code: str | None, offer_codes: Iterable[str] | None) -> Offer:
    """The offer from what staff gave: a shared code, a list of unique codes, or neither."""
    if offer_code is not None and offer_codes is not None:
        raise InvalidInput("offer: give one shared code or a file of unique codes, not both")
    if offer_code is not None:
        return Offer(OfferKind.SHARED, code=check_offer_code(offer_code))
    if offer_codes is not None:
        codes = tuple(offer_codes)
        if not codes:
            raise InvalidInput("offer codes: the file holds no codes")
        seen: set[str] = set()
        for code in codes:
            check_offer_code(code, "offer codes")
            if code.casefold() in seen:
                raise InvalidInput(f"offer codes: {code} is there twice")
            seen.add(code.casefold())
        return Offer(OfferKind.UNIQUE, codes=codes)
    return Offer(OfferKind.NONE)


def hand_out_offer_codes(campaign_id: int, codes: Iterable[str]) -> int:
    """Store a campaign's unique codes and give one to each of its invitations, set-based:
    codes and invitations are paired by row number in SQL. Too few codes for the recipients
    rolls everything back and says how many of each. Returns how many were handed out.

    The caller commits."""
    codes = list(codes)
    recipients = db.session.scalar(sa.select(sa.func.count()).where(Invitation.campaign_id == campaign_id))
    if len(codes) < recipients:
        db.session.rollback()
        raise InvalidInput(
            f"offer codes: {len(codes)} codes for {recipients} recipients; every recipient needs a "
            f"code of their own: add {recipients - len(codes)} more codes, or lower the limit"
        )
    connection = db.session.connection()
    connection.execute(sa.schema.DropTable(_code_stage, if_exists=True))
    _code_stage.create(connection)
    _stage_codes(connection, codes)
    invitations, offer_codes = Invitation.__table__, OfferCode.__table__
    numbered = (
        sa.select(invitations.c.id, sa.func.row_number().over(order_by=invitations.c.id).label("n"))
        .where(invitations.c.campaign_id == campaign_id)
        .subquery()
    )
    # The first codes go to the invitations, paired by row number; the rest stay unassigned.
    connection.execute(
        sa.insert(offer_codes).from_select(
            ["campaign_id", "code", "invitation_id"],
            sa.select(sa.literal(campaign_id), _code_stage.c.code, numbered.c.id)
            .select_from(numbered)
            .join(_code_stage, _code_stage.c.position == numbered.c.n),
        )
    )
    connection.execute(
        sa.insert(offer_codes).from_select(
            ["campaign_id", "code"],
            sa.select(sa.literal(campaign_id), _code_stage.c.code).where(_code_stage.c.position > recipients),
        )
    )
    connection.execute(
        sa.update(invitations)
        .where(offer_codes.c.campaign_id == campaign_id, offer_codes.c.invitation_id == invitations.c.id)
        .values(offer_code=offer_codes.c.code)
    )
    _code_stage.drop(connection)
    return recipients


def _stage_codes(connection: sa.Connection, codes: list[str]) -> None:
    """Load the codes with their place in the file: COPY on PostgreSQL, executemany on SQLite."""
    if connection.dialect.name == "postgresql":
        raw = connection.connection.driver_connection
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY {_code_stage.name} (position, code) FROM STDIN") as copy:
                for row in enumerate(codes, 1):
                    copy.write_row(row)
            cursor.execute(f"ANALYZE {_code_stage.name}")
        return
    statement = str(sa.insert(_code_stage).compile(dialect=connection.dialect))
    for start in range(0, len(codes), CODES_BATCH):
        batch = codes[start : start + CODES_BATCH]
        connection.exec_driver_sql(statement, list(enumerate(batch, start + 1)))


# The codes of one hand-out with their place in the file: a temporary table, never in migrations.
_code_stage = sa.Table(
    "winback_offer_code_stage",
    sa.MetaData(),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("code", sa.String(OFFER_CODE_MAX_CHARS)),
    prefixes=["TEMPORARY"],
)


def _drop_offer_codes(campaign_id: int) -> None:
    """Forget a campaign's unique codes and who had them (only before anything is sent)."""
    db.session.execute(sa.delete(OfferCode).where(OfferCode.campaign_id == campaign_id))
    db.session.execute(
        sa.update(Invitation.__table__)
        .where(Invitation.__table__.c.campaign_id == campaign_id)
        .values(offer_code=None)
    )


def offer_codes_summary(campaign_id: int) -> tuple[int, int]:
    """How many unique codes the campaign holds, and how many are handed out."""
    total, handed_out = db.session.execute(
        sa.select(sa.func.count(), sa.func.count(OfferCode.invitation_id)).where(
            OfferCode.campaign_id == campaign_id
        )
    ).one()
    return total, handed_out


# --- editing a draft ------------------------------------------------------------------------


def is_editable(campaign: Campaign) -> bool:
    """A draft with nothing sent yet: its email and offer can still change."""
    if campaign.status != CampaignStatus.DRAFT:
        return False
    started = db.session.scalar(
        sa.select(
            sa.exists().where(
                Invitation.campaign_id == campaign.id, Invitation.status != InvitationStatus.QUEUED
            )
        )
    )
    return not started


def update_content(
    campaign_id: int,
    *,
    subject: str | None,
    body: str | None,
    offer_kind: OfferKind,
    offer_code: str | None = None,
    offer_codes: Iterable[str] | None = None,
    actor_id: int | None,
    now: datetime,
) -> Campaign:
    """Change a draft campaign's subject, body and offer. For unique codes, a new list replaces
    the old one; no list keeps the codes already handed out."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound(f"no campaign #{campaign_id}")
    if not is_editable(campaign):
        raise InvalidInput(f"campaign {campaign_id} has started sending: its email can no longer change")
    keep_codes = offer_kind == campaign.offer_kind == OfferKind.UNIQUE and offer_codes is None
    if offer_kind == OfferKind.SHARED:
        offer = resolve_offer(offer_code or "", None)
    elif offer_kind == OfferKind.UNIQUE and not keep_codes:
        offer = resolve_offer(None, offer_codes if offer_codes is not None else [])
    else:
        offer = Offer(offer_kind)
    content = validate_templates(subject, body, offer_code=offer.code)
    campaign.subject = content.subject
    campaign.body = content.body
    if not keep_codes:
        _drop_offer_codes(campaign_id)
    campaign.offer_kind = offer.kind
    campaign.offer_code = offer.code
    detail = f"offer {offer.kind.value}"
    if offer.codes:
        db.session.flush()
        hand_out_offer_codes(campaign_id, offer.codes)
        detail += f", {len(offer.codes)} codes"
    audit.record("campaign.edit", "campaign", campaign_id, actor_id=actor_id, now=now, detail=detail)
    db.session.commit()
    return campaign
