"""Security headers on every answer, and tokens kept out of the request logs."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

from flask import Flask, Response, request


def content_security_policy(logo_url: str = "") -> str:
    """The policy: this site only; the one exception is the origin of an https logo
    (BUSINESS_LOGO_URL), allowed to serve images."""
    images = "img-src 'self' data:"
    parts = urlsplit(logo_url or "")
    if parts.scheme == "https" and parts.netloc:
        images += f" https://{parts.netloc}"
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            images,
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ]
    )


CONTENT_SECURITY_POLICY = content_security_policy()

# Pages that show personal data or a form: never stored by a browser or a proxy.
PRIVATE_BLUEPRINTS = {"survey", "unsubscribe", "auth", "staff"}

_TOKEN_IN_PATH = re.compile(r"(/[su]/)[A-Za-z0-9_\-.]+")


def redact_tokens(text: str) -> str:
    """Replace the token in any /s/<token> or /u/<token> path with a placeholder."""
    return _TOKEN_IN_PATH.sub(r"\1[token]", text)


class RedactTokensFilter(logging.Filter):
    """A logging filter that keeps signed link tokens out of log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        # gunicorn's access log passes one dict of values; werkzeug passes a tuple.
        if isinstance(record.args, dict):
            record.args = {key: _redacted(value) for key, value in record.args.items()}
        elif record.args:
            record.args = tuple(_redacted(arg) for arg in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_tokens(record.msg)
        return True


def _redacted(value: object) -> object:
    return redact_tokens(value) if isinstance(value, str) else value


# One shared filter: adding the same instance again is a no-op, however many apps are made.
REDACT_TOKENS = RedactTokensFilter()


def init_app(app: Flask) -> None:
    """Add the headers and the log filter."""
    logging.getLogger("werkzeug").addFilter(REDACT_TOKENS)
    logging.getLogger("gunicorn.access").addFilter(REDACT_TOKENS)
    app.logger.addFilter(REDACT_TOKENS)  # "Exception on /s/<token> [GET]" on unexpected errors
    production = app.config.get("ENV_NAME") == "production"
    policy = content_security_policy(app.config.get("BUSINESS_LOGO_URL") or "")

    fixed = [
        ("Content-Security-Policy", policy),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "same-origin"),
        ("X-Frame-Options", "DENY"),
    ]
    if production:
        fixed.append(("Strict-Transport-Security", "max-age=31536000; includeSubDomains"))
    fixed_names = {name.lower() for name, _ in fixed}

    @app.after_request
    def _security_headers(response: Response) -> Response:
        headers = response.headers
        # A view may set its own (the brand stylesheet's policy, say): those are kept.
        present = {name.lower() for name, _ in headers.items()} & fixed_names
        headers.extend(fixed if not present else [pair for pair in fixed if pair[0].lower() not in present])
        blueprint = (request.blueprint or "").split(".")[0]
        if blueprint in PRIVATE_BLUEPRINTS:
            headers["Cache-Control"] = "no-store"
        return response
