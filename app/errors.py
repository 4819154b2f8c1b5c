"""Error pages: domain errors become friendly 4xx pages; a 500 rolls the session back."""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, SecurityError

from app.exceptions import InvalidLink, NotFound
from app.extensions import db

TITLES = {
    400: "That request could not be understood",
    403: "You don't have access to this page",
    404: "We couldn't find that page",
    405: "That action isn't allowed here",
    413: "That file is too large",
    429: "Too many attempts",
    500: "Something went wrong on our side",
}


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def render_error(status: int, message: str | None = None, template: str = "errors/error.html"):
    """One error page (or JSON under /api) for a status code."""
    title = TITLES.get(status, "Error")
    if _wants_json():
        return jsonify(error=title, detail=message or ""), status
    return render_template(template, status=status, title=title, message=message), status


def init_app(app: Flask) -> None:
    """Register the handlers."""

    @app.errorhandler(SecurityError)
    def _untrusted_host(_error: SecurityError):
        # A Host outside TRUSTED_HOSTS: no URL can be built for this request, so no page either.
        return "Bad request: this host name is not served here.\n", 400, {"Content-Type": "text/plain"}

    @app.errorhandler(InvalidLink)
    def _invalid_link(_error: InvalidLink):
        # Tampered, unknown, revoked and expired links all get this same page. Its "Email me a
        # fresh link" button posts back to the same URL: every such request gets the same reply
        # (the survey's own view sends a fresh link for a genuine expired one).
        if request.method == "POST" and "fresh_link" in request.form:
            return render_template("errors/fresh_link_sent.html")
        return render_template("errors/invalid_link.html"), 404

    @app.errorhandler(NotFound)
    def _not_found(error: NotFound):
        return render_error(404, str(error) or None)

    @app.errorhandler(CSRFError)
    def _csrf_error(error: CSRFError):
        return render_error(400, f"{error.description} Go back, reload the page and try again.")

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        code = error.code or 500
        message = error.description if code in (400, 413, 429) else None
        return render_error(code, message)

    @app.errorhandler(500)
    def _server_error(_error):
        db.session.rollback()
        return render_error(500)
