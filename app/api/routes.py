"""The JSON API under /api/v1: API-key authentication and the bounce webhook."""

from __future__ import annotations

import hmac
from http import HTTPStatus

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import BadRequest

from app.errors import TITLES
from app.exceptions import InvalidInput
from app.extensions import csrf
from app.models import utcnow
from app.services import bounces

bp = Blueprint("api", __name__, url_prefix="/api/v1")
# Callers authenticate with a key, not a session cookie: there is no cross-site form to forge.
csrf.exempt(bp)

BOUNCE_KINDS = ", ".join(kind.value for kind in bounces.BounceKind)


def error(status: int, detail: str, headers: dict[str, str] | None = None):
    """A JSON error answer: {"error": title, "detail": what was wrong}."""
    title = TITLES.get(status) or HTTPStatus(status).phrase
    return jsonify(error=title, detail=detail), status, headers or {}


def _presented_key() -> str | None:
    """The key from `Authorization: Bearer <key>` or, failing that, `X-API-Key: <key>`."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("X-API-Key", "").strip() or None


def _key_is_valid(presented: str) -> bool:
    """Compare with every configured key in constant time (no early exit on the first match)."""
    given = presented.encode()
    matches = [hmac.compare_digest(given, key.encode()) for key in current_app.config["API_KEYS"]]
    return any(matches)


@bp.before_request
def require_api_key():
    """Every API call needs a configured key; with API_KEYS empty the API answers 401 to all."""
    presented = _presented_key()
    if presented is None or not _key_is_valid(presented):
        detail = "a valid API key is required (Authorization: Bearer <key>)"
        return error(401, detail, {"WWW-Authenticate": 'Bearer realm="winback"'})
    return None


@bp.after_request
def no_store(response: Response) -> Response:
    """API answers are never cached."""
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/bounces")
def record_bounce():
    """Record a bounce or complaint: {"address", "type": hard|soft|complaint, "reason"?}."""
    if not request.is_json:
        return error(415, "the body must be JSON (Content-Type: application/json)")
    try:
        body = request.get_json()
    except BadRequest:
        return error(400, "body: not valid JSON")
    if not isinstance(body, dict):
        return error(400, "body: must be a JSON object")
    address, kind, reason = body.get("address"), body.get("type"), body.get("reason")
    if not isinstance(address, str) or not address.strip():
        return error(400, "address: required, a string")
    try:
        kind = bounces.BounceKind(kind.strip().lower() if isinstance(kind, str) else kind)
    except ValueError:
        return error(400, f"type: must be one of {BOUNCE_KINDS}")
    if reason is not None and not isinstance(reason, str):
        return error(400, "reason: must be a string")
    try:
        result = bounces.record_bounce(address, kind, reason or "", now=utcnow())
    except InvalidInput as exc:
        return error(400, str(exc))
    return jsonify(
        address_suppressed=result.address_suppressed,
        already_suppressed=result.already_suppressed,
        soft_bounces=result.soft_bounces,
    )
