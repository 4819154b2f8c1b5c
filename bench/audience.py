"""Benchmark: a campaign audience of 100,000 taken from 1,000,000 customers into queued invitations.

`campaigns.create_campaign` with an audience rule (lapsed for 180 days, not contacted in the
cooldown, at most ``BENCH_AUDIENCE`` customers by win-back priority), against the physical floor
measured in the same run on the same data: one plain ``INSERT INTO … SELECT`` of the same number of
customers, best priority first, into a table of the invitations' shape with the same indexes, with
no audience rule (no lapse, suppression or cooldown check).

PostgreSQL (``BENCH_DATABASE_URL`` or ``TEST_DATABASE_URL``; a throwaway schema, dropped at the end)
is the figure with a target (under 5 s); SQLite is measured too. The customer base has 3 % suppressed
addresses and invitations from an earlier campaign to a fifth of them, a quarter of those sent within the
cooldown.

Knobs: ``BENCH_ROWS`` (1,000,000 customers), ``BENCH_AUDIENCE`` (100,000), ``BENCH_RUNS`` (3).
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
import uuid
from datetime import timedelta

from common import ROOT, finish_work_dir, machine, new_work_dir

sys.path.insert(0, str(ROOT))

import sqlalchemy as sa

from app import create_app
from app.extensions import db
from app.models import Campaign, Customer, Invitation, Suppression, utcnow
from app.services import campaigns
from app.services.scoring import Segment
from config import TestingConfig, database_url

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
AUDIENCE = int(os.environ.get("BENCH_AUDIENCE", "100000"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
TARGET_SECONDS = 5.0
BATCH = 50_000
SEGMENTS = [segment.value for segment in Segment]


def fill(now) -> None:
    """1M customers (70 % lapsed), 3 % suppressed, and an earlier campaign of 200,000 invitations,
    inserted with the driver's executemany in batches."""
    rng = random.Random(20261124)
    customers = Customer.__table__
    for start in range(0, ROWS, BATCH):
        rows = []
        for n in range(start, min(start + BATCH, ROWS)):
            last = now - timedelta(days=rng.uniform(0, 600))
            rows.append(
                {
                    "email": f"customer{n}@example.com",
                    "email_hash": f"{n:064x}",
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "phone": "",
                    "preferred_contact": "email",
                    "first_purchase_at": last - timedelta(days=300),
                    "last_purchase_at": last,
                    "orders_count": 3,
                    "total_spent": rng.randint(500, 500_000),
                    "currency": "GBP",
                    "status": "active",
                    "segment": rng.choice(SEGMENTS),
                    "win_back_priority": rng.randint(0, 10**7),
                    "soft_bounce_count": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        db.session.execute(customers.insert(), rows)
        db.session.commit()
    suppressed = [
        {"email_hash": f"{n:064x}", "reason": "unsubscribed", "created_at": now, "note": ""}
        for n in range(0, ROWS, 33)
    ]
    db.session.execute(Suppression.__table__.insert(), suppressed)
    earlier = Campaign(
        name="Earlier", lapsed_days=180, subject="Earlier", created_at=now - timedelta(days=400)
    )
    db.session.add(earlier)
    db.session.flush()
    earlier_ids = range(1, ROWS + 1, 5)  # a fifth of the customers
    for start in range(0, len(earlier_ids), BATCH):
        rows = [
            {
                "campaign_id": earlier.id,
                "customer_id": customer_id,
                "reference": uuid.uuid4().hex,
                "nonce": uuid.uuid4().hex,
                "status": "sent",
                "attempts": 1,
                "last_smtp_reply": "250 accepted",
                "revoked": False,
                "reminders_sent": 0,
                "created_at": now,
                # one in four within the last 90 days: inside the cooldown
                "last_sent_at": now - timedelta(days=30 if customer_id % 4 == 0 else 200),
            }
            for customer_id in earlier_ids[start : start + BATCH]
        ]
        db.session.execute(Invitation.__table__.insert(), rows)
    db.session.commit()
    db.session.execute(sa.text("ANALYZE"))
    db.session.commit()


def baseline(now) -> float:
    """INSERT … SELECT of the best AUDIENCE customers into a same-shape table, no rule at all."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(
            sa.text("CREATE TABLE IF NOT EXISTS floor_invitations (LIKE invitations INCLUDING ALL)")
        )
    else:
        db.session.execute(sa.text("DROP TABLE IF EXISTS floor_invitations"))
        ddl = db.session.scalar(sa.text("SELECT sql FROM sqlite_master WHERE name = 'invitations'"))
        db.session.execute(sa.text(ddl.replace("invitations", "floor_invitations", 1)))
        for (index_sql,) in db.session.execute(
            sa.text(
                "SELECT sql FROM sqlite_master"
                " WHERE type = 'index' AND tbl_name = 'invitations' AND sql IS NOT NULL"
            )
        ):
            db.session.execute(
                sa.text(
                    index_sql.replace(" ON invitations", " ON floor_invitations").replace("ix_", "floor_ix_")
                )
            )
    db.session.execute(sa.text("DELETE FROM floor_invitations"))
    db.session.commit()
    random_hex = (
        "md5(random()::text)" if db.engine.dialect.name == "postgresql" else "lower(hex(randomblob(16)))"
    )
    started = time.perf_counter()
    db.session.execute(
        sa.text(
            "INSERT INTO floor_invitations (campaign_id, customer_id, reference, nonce, status, attempts,"  # noqa: S608
            " last_smtp_reply, revoked, reminders_sent, created_at)"
            f" SELECT 1, id, {random_hex}, {random_hex}, 'queued', 0, '', false, 0, :now"
            " FROM customers ORDER BY win_back_priority DESC LIMIT :limit"
        ),
        {
            "now": now if db.engine.dialect.name == "postgresql" else now.replace(tzinfo=None),
            "limit": AUDIENCE,
        },
    )
    db.session.commit()
    return time.perf_counter() - started


def ours(now) -> tuple[float, int]:
    """One create_campaign with the rule; the campaign is deleted afterwards (outside the timing)."""
    started = time.perf_counter()
    campaign, queued = campaigns.create_campaign(name="Bench", lapsed_days=180, limit=AUDIENCE, now=now)
    elapsed = time.perf_counter() - started
    db.session.execute(sa.delete(Invitation).where(Invitation.campaign_id == campaign.id))
    db.session.execute(sa.delete(Campaign).where(Campaign.id == campaign.id))
    db.session.commit()
    return elapsed, queued


def measure(label: str, instance: str, settings: dict) -> None:
    """Fill one database, then time the floor and create_campaign in alternating rounds."""

    class BenchConfig(TestingConfig):
        INSTANCE_PATH = instance

    app = create_app(BenchConfig, **settings)
    with app.app_context():
        db.create_all()
        now = utcnow()
        started = time.perf_counter()
        fill(now)
        print(
            f"{label}: {ROWS:,} customers and {ROWS // 5:,} earlier invitations made "
            f"in {time.perf_counter() - started:.0f} s"
        )
        floors, times, queued = [], [], 0
        for number in range(1, RUNS + 1):
            floors.append(baseline(now))
            elapsed, queued = ours(now)
            times.append(elapsed)
            print(
                f"{label} round {number}: floor {floors[-1]:.2f} s, "
                f"create_campaign {elapsed:.2f} s ({queued:,} queued)"
            )
        floor, mine = statistics.median(floors), statistics.median(times)
        target = f"; target under {TARGET_SECONDS:.0f} s: {'met' if mine < TARGET_SECONDS else 'NOT met'}"
        print(
            f"summary {label}: {queued:,} invitations from {ROWS:,} customers in {mine:.2f} s "
            f"(median of {RUNS}); floor INSERT … SELECT {floor:.2f} s; ratio floor/ours {floor / mine:.2f}"
            f"{target if label == 'postgresql' else ''}"
        )
        db.session.remove()
        db.engine.dispose()


def main() -> int:
    print(f"machine: {machine()}")
    work = new_work_dir("audience")
    ok = False
    try:
        (work / "instance").mkdir()
        instance = str(work / "instance")
        measure("sqlite", instance, {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{work / 'bench.db'}"})
        url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
        if url:
            schema = f"winback_bench_{uuid.uuid4().hex[:10]}"
            engine = sa.create_engine(database_url(url))
            with engine.begin() as connection:
                connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
            try:
                measure(
                    "postgresql",
                    instance,
                    {
                        "SQLALCHEMY_DATABASE_URI": database_url(url),
                        "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"options": f"-csearch_path={schema}"}},
                    },
                )
            finally:
                with engine.begin() as connection:
                    connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
                engine.dispose()
        else:
            print("postgresql: skipped (set BENCH_DATABASE_URL or TEST_DATABASE_URL)")
        ok = True
    finally:
        finish_work_dir(work, ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
