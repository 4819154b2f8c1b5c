"""Audit trail: one call records who did what to which record."""

from __future__ import annotations

import logging
from datetime import datetime

from app.extensions import db
from app.models import AuditEvent, utcnow

log = logging.getLogger("winback.audit")


def record(
    action: str,
    target_type: str,
    target_id: int | None = None,
    *,
    actor_id: int | None = None,
    detail: str = "",
    now: datetime | None = None,
) -> AuditEvent:
    """Add an audit event to the current transaction (the caller commits) and log it."""
    event = AuditEvent(
        action=action,
        target_type=target_type,
        target_id=target_id,
        actor_id=actor_id,
        detail=detail[:500],
        created_at=now or utcnow(),
    )
    db.session.add(event)
    log.debug("%s %s#%s by staff#%s %s", action, target_type, target_id, actor_id, detail)
    return event
