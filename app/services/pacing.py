"""Send pacing: SEND_RATE_PER_MINUTE holds across every sending process and machine.

One row (send_slots, id 1) holds the next moment any sender may send. Before each message a
sender reserves a slot in a short transaction of its own: slot = max(next_at, now), and next_at
moves on to slot + 60 / rate. It commits, sleeps until its slot, then sends. Two senders never
get the same slot, so no minute ever holds more than the rate.

The row is created on first use with INSERT … ON CONFLICT, which also takes its lock: the row
lock on PostgreSQL, the database's write lock on SQLite. The time comes from the database on
PostgreSQL (senders on several machines share one clock), from this process on SQLite (one
machine)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from app.extensions import db
from app.models import SendSlot, utcnow
from app.services.sql import dialect_name, upsert

SLOT_ID = 1


def interval() -> timedelta | None:
    """The time between two messages at SEND_RATE_PER_MINUTE; None when no rate is set."""
    rate = current_app.config.get("SEND_RATE_PER_MINUTE")
    if not rate:
        return None
    return timedelta(seconds=60 / rate)


def reserve_slot(gap: timedelta, *, clock: Callable[[], datetime] = utcnow) -> tuple[datetime, float]:
    """Reserve the next send slot and commit. Returns the slot and how many seconds from now it
    is (0 when it is now). Call with no transaction of the session's open: this commits it."""
    db.session.commit()
    table = SendSlot.__table__
    if dialect_name() == "postgresql":
        now_expression = sa.func.clock_timestamp(type_=table.c.next_at.type)
    else:
        now_expression = sa.literal(clock(), table.c.next_at.type)
    # Insert the row or touch it: either way it is locked until the commit below.
    statement = (
        upsert(table)
        .values(id=SLOT_ID, next_at=now_expression)
        .on_conflict_do_update(index_elements=["id"], set_={"next_at": table.c.next_at})
        .returning(table.c.next_at, now_expression)
    )
    try:
        next_at, now = db.session.execute(statement).one()
        slot = max(next_at, now)
        db.session.execute(sa.update(table).where(table.c.id == SLOT_ID).values(next_at=slot + gap))
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return slot, max(0.0, (slot - now).total_seconds())


def wait_for_slot(gap: timedelta | None, *, clock: Callable[[], datetime] = utcnow) -> datetime | None:
    """With a rate set, reserve the next slot and sleep until it; returns the slot (None: no rate)."""
    if gap is None:
        return None
    slot, wait = reserve_slot(gap, clock=clock)
    if wait > 0:
        time.sleep(wait)
    return slot
