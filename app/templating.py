"""Template filters and globals: money, local times, Markdown, labels."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Flask, current_app

from app.markup import render_markdown
from app.survey.choices import label_for


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
