"""Template filters and globals: money, local times, Markdown, labels."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Flask, Response, current_app

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


_HEX_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}){1,2}")


def _channel(value: int) -> float:
    value_srgb = value / 255
    return value_srgb / 12.92 if value_srgb <= 0.03928 else ((value_srgb + 0.055) / 1.055) ** 2.4


def relative_luminance(colour: str) -> float:
    """WCAG relative luminance of a #rgb or #rrggbb colour."""
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(char * 2 for char in digits)
    red, green, blue = (int(digits[index : index + 2], 16) for index in (0, 2, 4))
    return 0.2126 * _channel(red) + 0.7152 * _channel(green) + 0.0722 * _channel(blue)


def contrast_ratio(first: str, second: str) -> float:
    """WCAG contrast ratio between two colours (1 to 21)."""
    light, dark = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def text_colour_on(background: str) -> str:
    """Black or white, whichever contrasts more with the background."""
    white, near_black = "#ffffff", "#111111"
    if contrast_ratio(background, white) >= contrast_ratio(background, near_black):
        return white
    return near_black


def brand_colour(app: Flask) -> str:
    """BRAND_COLOUR, checked: #rgb or #rrggbb."""
    colour = str(app.config.get("BRAND_COLOUR") or "#1d4ed8").strip()
    if not _HEX_COLOUR.fullmatch(colour):
        raise RuntimeError(f"BRAND_COLOUR must be a colour written #rgb or #rrggbb, not {colour!r}.")
    return colour.lower()


def brand_css(colour: str) -> str:
    """The stylesheet that carries the brand colour (CSP forbids inline styles)."""
    return f":root{{--brand:{colour};--on-brand:{text_colour_on(colour)}}}\n"


def init_app(app: Flask) -> None:
    """Register the filters and globals."""
    stylesheet = brand_css(brand_colour(app))

    @app.get("/brand.css")
    def brand_stylesheet():
        """The business's colour as CSS custom properties."""
        response = Response(stylesheet, mimetype="text/css")
        response.cache_control.public = True
        response.cache_control.max_age = 3600
        return response

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
            "business_logo_url": app.config.get("BUSINESS_LOGO_URL") or "",
        }
