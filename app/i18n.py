"""Languages: the survey, its pages, the unsubscribe pages and the emails customers receive speak
English or German.

The customer's stored locale decides on pages opened from their link; otherwise the browser's
Accept-Language does; staff pages are in English. Emails follow the customer's stored locale, or
the default one. Translations live in app/translations (`pybabel compile -d app/translations`
after editing a .po file)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import flask_babel
from babel import Locale
from flask import Flask, g, has_request_context, request
from flask_babel import Babel

SUPPORTED_LOCALES = ("en", "de")
DEFAULT_LOCALE = "en"
# Pages always shown in English, whatever the browser asks for.
ENGLISH_ONLY_BLUEPRINTS = {"staff", "auth", "api", "health"}

babel = Babel()


def supported_locale(value: str | None) -> str | None:
    """A stored or requested locale ("de", "de-DE", "de_AT") as one this app speaks, or None."""
    language = (value or "").strip().replace("_", "-").split("-")[0].lower()
    return language if language in SUPPORTED_LOCALES else None


def N_(message: str) -> str:
    """Mark a string for translation where it is defined (extraction tools know the name N_);
    it is translated where it is used."""
    return message


def customer_locale(stored: str | None, default: str | None = DEFAULT_LOCALE) -> str | None:
    """The language to speak to a customer: their stored locale when it is one we speak, else
    `default` (emails use the default locale; pages pass None and let the browser decide)."""
    return supported_locale(stored) or default


def select_locale() -> Locale:
    """The customer's locale when a page was opened from their link, else the browser's."""
    chosen = g.get("customer_locale")
    if chosen:
        return _LOCALES[chosen]
    if not has_request_context():  # a command or a background task
        return _LOCALES[DEFAULT_LOCALE]
    if (request.blueprint or "").split(".")[0] in ENGLISH_ONLY_BLUEPRINTS:
        return _LOCALES[DEFAULT_LOCALE]
    return _LOCALES[request.accept_languages.best_match(SUPPORTED_LOCALES) or DEFAULT_LOCALE]


# Parsed once: Flask-Babel takes a Locale as it is, where a code would be parsed (and Babel's
# locale data looked up on disk) on every request.
_LOCALES = {code: Locale.parse(code) for code in SUPPORTED_LOCALES}


def use_customer_locale(stored: str | None) -> None:
    """Speak the customer's stored language on this request, when it is one we speak."""
    locale = customer_locale(stored, default=None)
    if locale:
        g.customer_locale = locale
        flask_babel.refresh()


@contextmanager
def customer_language(stored: str | None) -> Iterator[str]:
    """Speak the customer's language (their stored locale, else the default) inside the block,
    whatever the page around it speaks: for rendering the emails they receive."""
    locale = customer_locale(stored)
    with flask_babel.force_locale(locale):
        yield locale


def init_app(app: Flask) -> None:
    """Bind Flask-Babel and give templates the page's language (for <html lang>)."""
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LOCALE)
    babel.init_app(app, locale_selector=select_locale)

    @app.context_processor
    def _language():
        return {"page_language": str(flask_babel.get_locale() or DEFAULT_LOCALE)}
