"""Template filters and globals: money, local times, Markdown, labels."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import markdown as markdown_lib
import nh3
from flask import Flask, current_app
from markupsafe import Markup

from app.survey.choices import label_for

ALLOWED_TAGS = {"p", "br", "strong", "em", "ul", "ol", "li", "a", "blockquote", "code", "h3", "h4"}


def render_markdown(text: str) -> Markup:
    """Markdown to HTML, sanitised: staff text may include links and emphasis, never script."""
    html = markdown_lib.markdown(text or "", extensions=[], output_format="html")
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes={"a": {"href", "title"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="nofollow noopener noreferrer",
    )
    return Markup(clean)  # noqa: S704 - sanitised by nh3 above


def format_money(minor_units: int | None, currency: str = "GBP") -> str:
    """Integer minor units as a plain amount with its currency code."""
    if minor_units is None:
        return ""
    return f"{minor_units / 100:,.2f} {currency}"


def format_local(value: datetime | None, fmt: str = "%d %b %Y %H:%M") -> str:
    """A UTC time shown in the configured TIMEZONE."""
    if value is None:
        return ""
    return value.astimezone(ZoneInfo(current_app.config["TIMEZONE"])).strftime(fmt)


def format_date(value: datetime | None) -> str:
    return format_local(value, "%d %b %Y")


def init_app(app: Flask) -> None:
    """Register the filters and globals."""
    app.jinja_env.filters.update(
        markdown=render_markdown,
        money=format_money,
        localtime=format_local,
        date=format_date,
        label=label_for,
    )

    @app.context_processor
    def _business():
        return {
            "business_name": app.config["BUSINESS_NAME"],
            "business_postal_address": app.config["BUSINESS_POSTAL_ADDRESS"],
        }
