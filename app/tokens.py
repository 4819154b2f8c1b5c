"""Signed links. One salt per purpose; the payload is an opaque invitation reference (and, for
the survey, a nonce) and nothing else; keys are read at call time so rotation needs no restart
of anything but the config (old keys go in SECRET_KEY_FALLBACKS)."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from flask import current_app
from itsdangerous import (
    BadSignature,
    SignatureExpired,
    TimestampSigner,
    URLSafeSerializer,
    URLSafeTimedSerializer,
)

from app.exceptions import ExpiredLink, InvalidLink

SURVEY_SALT = "winback.survey.v1"
UNSUBSCRIBE_SALT = "winback.unsubscribe.v1"
FORM_SALT = "winback.survey-form.v1"


def _keys() -> tuple[str, ...]:
    """Every accepted key, newest last: itsdangerous signs with the last and verifies with all."""
    config = current_app.config
    return (*(config.get("SECRET_KEY_FALLBACKS") or ()), config["SECRET_KEY"])


@lru_cache(maxsize=32)
def _serializer(keys: tuple[str, ...], salt: str, *, timed: bool = True) -> URLSafeSerializer:
    """One serializer per key set and purpose (they keep no state between calls); a rotated key
    set makes new ones."""
    kind = URLSafeTimedSerializer if timed else URLSafeSerializer
    return kind(list(keys), salt=salt)


def make_survey_token(reference: str, nonce: str) -> str:
    """A link token for the survey of one invitation; it expires (INVITATION_LINK_DAYS)."""
    return _serializer(_keys(), SURVEY_SALT).dumps([reference, nonce])


def read_survey_token(token: str) -> tuple[str, str]:
    """(reference, nonce) from a survey token, or InvalidLink / ExpiredLink."""
    max_age = int(current_app.config["INVITATION_LINK_DAYS"]) * 86400
    serializer = _serializer(_keys(), SURVEY_SALT)
    try:
        payload = serializer.loads(token, max_age=max_age)
    except SignatureExpired as exc:  # also raised for a timestamp in the future
        raise ExpiredLink("survey link expired") from exc
    except BadSignature as exc:
        raise InvalidLink("survey link does not verify") from exc
    return _pair(payload)


def read_expired_survey_token(token: str, *, now_timestamp: float) -> tuple[str, str]:
    """(reference, nonce) from a genuine survey token that is past its lifetime only: a token
    that does not verify, is still valid, or is dated in the future raises InvalidLink."""
    max_age = int(current_app.config["INVITATION_LINK_DAYS"]) * 86400
    serializer = _serializer(_keys(), SURVEY_SALT)
    try:
        serializer.loads(token, max_age=max_age)
    except SignatureExpired as exc:
        signed_at = exc.date_signed.timestamp() if exc.date_signed else None
        if signed_at is None or signed_at > now_timestamp or exc.payload is None:
            raise InvalidLink("survey link dated in the future") from exc
        return _pair(serializer.load_payload(exc.payload))
    except BadSignature as exc:
        raise InvalidLink("survey link does not verify") from exc
    raise InvalidLink("survey link has not expired")


def make_unsubscribe_token(reference: str) -> str:
    """A link token that unsubscribes the invitation's address; it never expires."""
    return _serializer(_keys(), UNSUBSCRIBE_SALT, timed=False).dumps([reference])


def read_unsubscribe_token(token: str) -> str:
    """The invitation reference from an unsubscribe token, or InvalidLink."""
    try:
        payload = _serializer(_keys(), UNSUBSCRIBE_SALT, timed=False).loads(token)
    except BadSignature as exc:
        raise InvalidLink("unsubscribe link does not verify") from exc
    if not (isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], str)):
        raise InvalidLink("unsubscribe link has an unexpected payload")
    return payload[0]


def _pair(payload: object) -> tuple[str, str]:
    if isinstance(payload, list) and len(payload) == 2 and all(isinstance(part, str) for part in payload):
        return payload[0], payload[1]
    raise InvalidLink("survey link has an unexpected payload")


def make_form_token(link: str) -> str:
    """The CSRF token of the forms behind one survey link: a digest of the link, dated and
    signed, so that it is good for that link only (see app/survey/forms.py)."""
    return _form_signer(_keys()).sign(_link_digest(link)).decode()


def check_form_token(value: str, link: str, *, max_age: int) -> None:
    """Raise ExpiredLink for a form token older than `max_age` seconds, InvalidLink for one that
    does not verify or belongs to another link."""
    try:
        digest = _form_signer(_keys()).unsign(value, max_age=max_age)
    except SignatureExpired as exc:
        raise ExpiredLink("form token expired") from exc
    except BadSignature as exc:
        raise InvalidLink("form token does not verify") from exc
    if not hmac.compare_digest(digest, _link_digest(link).encode()):
        raise InvalidLink("form token belongs to another link")


@lru_cache(maxsize=8)
def _form_signer(keys: tuple[str, ...]) -> TimestampSigner:
    return TimestampSigner(list(keys), salt=FORM_SALT)


def _link_digest(link: str) -> str:
    return hashlib.blake2b(link.encode(), digest_size=12).hexdigest()
