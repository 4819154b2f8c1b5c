"""Unsubscribing from an emailed link: idempotent, and it never expires."""

from __future__ import annotations

import logging
import os
import uuid
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import joinedload

from app.exceptions import InvalidLink
from app.extensions import db
from app.models import Invitation, SuppressionReason
from app.services import suppressions
from app.tokens import read_unsubscribe_token

log = logging.getLogger("winback.unsubscribe")
PENDING_FILE = "pending-unsubscribes.txt"


def invitation_for(token: str) -> Invitation:
    """The invitation an unsubscribe link was sent with, or InvalidLink."""
    reference = read_unsubscribe_token(token)
    invitation = db.session.scalar(
        sa.select(Invitation)
        .options(joinedload(Invitation.customer))
        .where(Invitation.reference == reference)
    )
    if invitation is None:
        raise InvalidLink("unknown invitation")
    return invitation


def unsubscribe(token: str, *, now: datetime) -> None:
    """Suppress the address the link was sent to. Running it again changes nothing."""
    _suppress(invitation_for(token), now)


def _suppress(invitation: Invitation, now: datetime) -> None:
    suppressions.suppress(invitation.customer.email, SuppressionReason.UNSUBSCRIBED, now)
    # No more reminders to this customer, from any campaign.
    db.session.execute(
        sa.update(Invitation)
        .where(Invitation.customer_id == invitation.customer_id)
        .values(next_reminder_at=None)
    )
    db.session.commit()


def unsubscribe_later(token: str) -> None:
    """Keep an unsubscribe that the database cannot take just now (busy past its timeout, or out
    of reach): the link's invitation reference is appended, flushed to disk, to a file in the
    instance folder that apply_pending (the tick) applies. A bad token raises InvalidLink here."""
    reference = read_unsubscribe_token(token)
    folder = Path(current_app.instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / PENDING_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(descriptor, f"{reference}\n".encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    log.warning("unsubscribe kept to apply later: the database was busy")


def apply_pending(*, now: datetime) -> int:
    """Apply the unsubscribes unsubscribe_later kept; returns how many. Safe to run at any time:
    the file is moved aside first, and one that fails stays to be applied next time."""
    folder = Path(current_app.instance_path)
    pending = folder / PENDING_FILE
    if pending.exists():
        pending.replace(folder / f"{PENDING_FILE}.{uuid.uuid4().hex}.applying")
    applied = 0
    for batch in sorted(folder.glob(f"{PENDING_FILE}.*.applying")):
        references = {line.strip() for line in batch.read_text().splitlines() if line.strip()}
        for reference in sorted(references):
            invitation = db.session.scalar(
                sa.select(Invitation)
                .options(joinedload(Invitation.customer))
                .where(Invitation.reference == reference)
            )
            if invitation is not None:
                _suppress(invitation, now)
                applied += 1
        batch.unlink()
    return applied
