"""The suppression list: addresses never to be emailed again, kept as a keyed hash (HMAC)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

import sqlalchemy as sa
from flask import current_app

from app.extensions import db
from app.models import Customer, CustomerStatus, Suppression, SuppressionReason
from app.services.sql import upsert

_LABEL = b"winback.suppression.v1"


def _hash_keys() -> list[bytes]:
    """The HMAC keys, current first: derived from SECRET_KEY, then from each fallback key."""
    config = current_app.config
    secrets = [config["SECRET_KEY"], *reversed(config.get("SECRET_KEY_FALLBACKS", []))]
    return [hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest() for secret in secrets]


def email_hash(normalised_email: str) -> str:
    """The keyed hash of a normalised address under the current key."""
    return _digest(_hash_keys()[0], normalised_email)


def _digest(key: bytes, normalised_email: str) -> str:
    return hmac.new(key, normalised_email.encode(), hashlib.sha256).hexdigest()


def _all_hashes(normalised_email: str) -> list[str]:
    """The address hashed under every accepted key, so rotation never lifts a suppression."""
    return [_digest(key, normalised_email) for key in _hash_keys()]


def is_suppressed(normalised_email: str) -> bool:
    """True when the address is on the suppression list."""
    hashes = _all_hashes(normalised_email)
    found = db.session.execute(
        sa.select(Suppression.id).where(Suppression.email_hash.in_(hashes)).limit(1)
    ).first()
    return found is not None


def suppress(normalised_email: str, reason: SuppressionReason, now: datetime, note: str = "") -> bool:
    """Add the address to the list (the caller commits). True if it was not there before."""
    if is_suppressed(normalised_email):
        return False
    hashed = email_hash(normalised_email)
    statement = (
        upsert(Suppression.__table__)
        .values(email_hash=hashed, reason=reason.value, note=note[:500], created_at=now)
        .on_conflict_do_nothing(index_elements=["email_hash"])
    )
    db.session.execute(statement)
    db.session.execute(
        sa.update(Customer)
        .where(Customer.email == normalised_email, Customer.status == CustomerStatus.ACTIVE)
        .values(status=CustomerStatus.SUPPRESSED, updated_at=now)
    )
    return True
