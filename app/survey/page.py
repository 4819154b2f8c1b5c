"""The blank survey form, rendered by its template once per process, language and greeting, then
filled in per request.

Only four things on a blank form differ from one customer to the next: the first name in the
greeting, the phone number we know, the CSRF token and the link in the form's action. The
template is rendered once with a marker in each of those places; each request then joins the
fixed parts with its own values, HTML-escaped exactly as the template escapes them. The bytes are
those the template would give (tests/blueprints/test_survey_page.py compares them). Forms with
answers or errors, and pages with flashed messages, are still rendered by the template."""

from __future__ import annotations

import re
import secrets
from types import SimpleNamespace

import flask_babel
from flask import current_app, render_template, request, session, url_for
from markupsafe import escape

from app.survey.forms import SurveyForm, form_token

# Random per process, so that no business name or translation can contain one by chance.
_MARK = secrets.token_hex(12)
NAME = f"wbname{_MARK}"
PHONE = f"wbphone{_MARK}"
CSRF = f"wbcsrf{_MARK}"
TOKEN = f"wbtoken{_MARK}"
ACTION = f"wbaction{_MARK}"
SLOTS = (NAME, PHONE, CSRF, ACTION)

EXTENSION_KEY = "winback_survey_form_pages"
ACTIONS_KEY = "winback_survey_form_actions"


class FormPage:
    """The form's fixed parts, in order, with the slot that follows each one."""

    def __init__(self, html: str) -> None:
        self.parts: list[str] = []
        self.slots: list[str] = []
        rest = html
        while True:
            found = [(rest.find(slot), slot) for slot in SLOTS if slot in rest]
            if not found:
                break
            index, slot = min(found)
            self.parts.append(rest[:index])
            self.slots.append(slot)
            rest = rest[index + len(slot) :]
        self.parts.append(rest)

    def fill(self, values: dict[str, str]) -> str:
        """The page with each slot replaced by its escaped value."""
        pieces = [self.parts[0]]
        for slot, part in zip(self.slots, self.parts[1:], strict=True):
            pieces.append(values[slot])
            pieces.append(part)
        return "".join(pieces)


def can_serve() -> bool:
    """Whether this request's blank form can come from the cache: no flashed messages wait to be
    shown (the template shows, and so consumes, them)."""
    return "_flashes" not in session


def blank_form(token: str, first_name: str | None, phone: str | None) -> str:
    """The blank survey form for one invitation, in the language chosen for this request."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    locale = str(flask_babel.get_locale())
    greeted = bool(first_name)
    pages: dict[tuple[str, bool], FormPage] = app.extensions.setdefault(EXTENSION_KEY, {})
    page = pages.get((locale, greeted))
    if page is None:
        page = pages[(locale, greeted)] = FormPage(_render_with_slots(greeted))
    return page.fill(
        {
            NAME: str(escape(first_name or "")),
            PHONE: str(escape(phone or "")),
            CSRF: str(escape(form_token(token))),
            ACTION: str(escape(_action(token))),
        }
    )


# What a survey token may hold (itsdangerous's URL-safe alphabet and its separator): such a token
# stands in a URL as it is, with no quoting.
_URL_SAFE = re.compile(r"[A-Za-z0-9_\-.]+")


def _action(token: str) -> str:
    """url_for("survey.submit", token=token), from the URL made once per app and script root
    (the folder the app is served from) with the token put in its place."""
    if not _URL_SAFE.fullmatch(token):
        return url_for("survey.submit", token=token)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    actions: dict[str, tuple[str, str]] = app.extensions.setdefault(ACTIONS_KEY, {})
    parts = actions.get(request.script_root)
    if parts is None:
        before, _, after = url_for("survey.submit", token=TOKEN).partition(TOKEN)
        parts = actions[request.script_root] = (before, after)
    return parts[0] + token + parts[1]


def _render_with_slots(greeted: bool) -> str:
    form = SurveyForm()
    form.csrf_token.current_token = CSRF
    form.phone.data = PHONE
    invitation = SimpleNamespace(customer=SimpleNamespace(first_name=NAME if greeted else ""))
    html = render_template("survey/form.html", form=form, invitation=invitation, token=TOKEN)
    html = html.replace(str(escape(url_for("survey.submit", token=TOKEN))), ACTION)
    if TOKEN in html:
        raise RuntimeError("survey/form.html shows the link token outside the form's action")
    return html
