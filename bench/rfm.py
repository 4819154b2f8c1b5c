"""Benchmark: the RFM recompute (`app.services.scoring.recompute_scores`) over a large customer base.

The script builds a throwaway SQLite database under ``bench/.work/`` with the app's own schema,
bulk-inserts ``BENCH_ROWS`` customers (default 1,000,000) with varied, realistic figures, then
times, in alternating rounds on the same data:

* the baseline: one plain single-pass ``UPDATE customers SET recency_score = CASE ... END`` over
  every row (the physical floor for rewriting the table once), and one ``SELECT NTILE(5) OVER
  (ORDER BY last_purchase_at)`` over the same rows (the floor for ranking them once);
* ``recompute_scores``: three quintile rankings, segment and priority for every scored
  customer, and the indexes on them kept up to date. Round 1 scores the base for the first time;
  each later round is a day later, so nearly every priority moves and is written again. A last
  run at the same time as the round before it finds nothing to change.

While each recompute runs, a second process writes as a web request would (``BEGIN IMMEDIATE``,
one row, ``COMMIT``, every 20 ms, with the app's busy timeout) and reports how many of its writes
failed and the longest it waited. The recompute's own longest write transaction (from its
``BEGIN IMMEDIATE`` to the end of its ``COMMIT``) is reported too.

It prints the median of ``BENCH_RUNS`` rounds (default 2) of each, the ratio of the recompute to
the UPDATE baseline, and whether the recompute meets the 10 s target. Environment knobs:
``BENCH_ROWS``, ``BENCH_RUNS``, ``BENCH_SEED``.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from typing import ClassVar

from common import ROOT, finish_work_dir, machine, new_work_dir

sys.path.insert(0, str(ROOT))

from app import create_app
from app.extensions import db
from app.models import utcnow
from app.services import scoring
from config import TestingConfig

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
RUNS = int(os.environ.get("BENCH_RUNS", "2"))
SEED = int(os.environ.get("BENCH_SEED", "20250101"))
TARGET_SECONDS = 10.0
BATCH = 50_000
# How SQLAlchemy stores a DateTime in SQLite; rows inserted here must read back the same way.
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"

FIRST = ["Amelia", "Oliver", "Isla", "George", "Ava", "Noah", "Mia", "Leo", "Freya", "Arthur"]
LAST = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Evans", "Thomas", "Roberts", "Khan"]


def customer_rows(count: int, now: datetime, rng: random.Random):
    """Customers as tuples for executemany: most bought once, a long tail bought often; spend per
    order varies around 40.00; last purchases spread over five years; a few suppressed, erased or
    never bought."""
    stamp = now.replace(tzinfo=None).strftime(SQLITE_TIME)
    for n in range(count):
        email = f"customer{n}@example.com"
        roll = rng.random()
        status, erased_at = "active", None
        if roll < 0.03:
            status = "suppressed"
        elif roll < 0.035:
            status, erased_at = "erased", stamp
        if rng.random() < 0.02:  # signed up, never bought
            first = last = None
            orders, spent = 0, 0
        else:
            orders = min(1 + int(rng.expovariate(0.45)), 200)
            average = max(100, int(rng.lognormvariate(8.2, 0.6)))  # minor units, median about 36.00
            spent = orders * average + rng.randint(0, 99)
            last_dt = now - timedelta(days=rng.uniform(0, 5 * 365))
            first_dt = last_dt - timedelta(days=0 if orders == 1 else rng.uniform(30, 4 * 365))
            first = first_dt.replace(tzinfo=None).strftime(SQLITE_TIME)
            last = last_dt.replace(tzinfo=None).strftime(SQLITE_TIME)
        yield (
            email,
            f"{n:064x}",
            rng.choice(FIRST),
            rng.choice(LAST),
            "",
            "email",
            first,
            last,
            orders,
            spent,
            "GBP",
            status,
            erased_at,
            stamp,
            stamp,
        )


def insert_customers(count: int, now: datetime) -> float:
    """Bulk-insert the customers with executemany on the raw connection; returns seconds."""
    rng = random.Random(SEED)
    started = time.perf_counter()
    connection = db.engine.raw_connection()
    try:
        cursor = connection.cursor()
        rows = customer_rows(count, now, rng)
        while True:
            batch = [row for _, row in zip(range(BATCH), rows, strict=False)]
            if not batch:
                break
            cursor.execute("BEGIN")
            cursor.executemany(
                "INSERT INTO customers (email, email_hash, first_name, last_name, phone, preferred_contact,"
                " first_purchase_at, last_purchase_at, orders_count, total_spent, currency, status,"
                " erased_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                batch,
            )
            cursor.execute("COMMIT")
        cursor.execute("ANALYZE")
        cursor.close()
    finally:
        connection.close()
    return time.perf_counter() - started


def baseline_update() -> float:
    """One plain single-pass UPDATE over every row: the floor for rewriting the table once."""
    cutoffs = [
        row[0]
        for row in db.session.execute(
            db.text(
                "SELECT last_purchase_at FROM customers WHERE last_purchase_at IS NOT NULL"
                " ORDER BY id LIMIT 4"
            )
        )
    ]
    cutoffs.sort()
    started = time.perf_counter()
    db.session.execute(
        db.text(
            "UPDATE customers SET recency_score = CASE WHEN last_purchase_at > :d THEN 5"
            " WHEN last_purchase_at > :c THEN 4 WHEN last_purchase_at > :b THEN 3"
            " WHEN last_purchase_at > :a THEN 2 ELSE 1 END"
        ),
        dict(zip("abcd", cutoffs, strict=True)),
    )
    db.session.commit()
    return time.perf_counter() - started


def baseline_ntile() -> float:
    """One NTILE(5) ranking of every customer: the floor for sorting the table once."""
    started = time.perf_counter()
    db.session.execute(
        db.text(
            "SELECT count(*), sum(q) FROM (SELECT NTILE(5) OVER (ORDER BY last_purchase_at) AS q"
            " FROM customers WHERE last_purchase_at IS NOT NULL)"
        )
    ).one()
    db.session.rollback()
    return time.perf_counter() - started


class TimedConnection(sqlite3.Connection):
    """The app's SQLite connections, timing each write transaction from its BEGIN IMMEDIATE to
    the end of its COMMIT (which includes the checkpoint SQLite may run after it)."""

    longest = 0.0

    def execute(self, sql, *args):
        if sql == "BEGIN IMMEDIATE":
            self.began = time.perf_counter()
        return super().execute(sql, *args)

    def cursor(self, *args, **kwargs):
        return TimedCursor(self)

    def commit(self) -> None:
        super().commit()
        self.ended()

    def rollback(self) -> None:
        super().rollback()
        self.began = None

    def ended(self) -> None:
        began = getattr(self, "began", None)
        if began is not None:
            TimedConnection.longest = max(TimedConnection.longest, time.perf_counter() - began)
            self.began = None


class TimedCursor(sqlite3.Cursor):
    def execute(self, sql, *args):
        if sql == "BEGIN IMMEDIATE":
            self.connection.began = time.perf_counter()
        return super().execute(sql, *args)


PROBE = """
import json, sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=float(sys.argv[2]))
connection.execute("PRAGMA synchronous = NORMAL")  # as the app's connections
waits, failures = [], 0
while sys.stdin.readline().strip() == "go":
    while True:
        began = time.perf_counter()
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO bench_probe (at) VALUES (?)", (began,))
            connection.execute("COMMIT")
            waits.append(time.perf_counter() - began)
        except sqlite3.OperationalError:
            failures += 1
        if open(sys.argv[3]).read() == "stop":
            break
        time.sleep(0.02)
    seen = {"writes": len(waits), "failures": failures, "longest": max(waits, default=0)}
    print(json.dumps(seen), flush=True)
    waits, failures = [], 0
"""


class Probe:
    """A second process that writes while the recompute runs, as a web request would."""

    def __init__(self, database: str, busy_timeout: float, work) -> None:
        connection = sqlite3.connect(database)
        connection.execute("CREATE TABLE IF NOT EXISTS bench_probe (at REAL)")
        connection.commit()
        connection.close()
        self.flag = work / "probe.flag"
        self.process = subprocess.Popen(
            [sys.executable, "-c", PROBE, database, str(busy_timeout), str(self.flag)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def start(self) -> None:
        self.flag.write_text("")
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        time.sleep(0.2)

    def stop(self) -> dict:
        self.flag.write_text("stop")
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=10)


def recompute(now: datetime, probe: Probe) -> tuple[float, int, float, dict]:
    """One full recompute beside the probe; returns seconds, customers scored, the longest write
    transaction, and what the probe saw."""
    TimedConnection.longest = 0.0
    probe.start()
    started = time.perf_counter()
    scored = scoring.recompute_scores(now=now)
    seconds = time.perf_counter() - started
    return seconds, scored, TimedConnection.longest, probe.stop()


def main() -> int:
    """Build the database, time the baselines and the recompute in alternating rounds, report."""
    work = new_work_dir("rfm")
    instance = work / "instance"
    instance.mkdir()

    class BenchConfig(TestingConfig):
        INSTANCE_PATH = str(instance)
        SQLALCHEMY_DATABASE_URI = f"sqlite:///{work / 'bench.db'}"
        SQLALCHEMY_ENGINE_OPTIONS: ClassVar[dict] = {"connect_args": {"factory": TimedConnection}}

    print(f"machine: {machine()}")
    ok = False
    try:
        app = create_app(BenchConfig)
        with app.app_context():
            db.create_all()
            now = utcnow()
            seconds = insert_customers(ROWS, now)
            print(f"data: {ROWS:,} customers inserted in {seconds:.1f} s ({work / 'bench.db'})")

            probe = Probe(str(work / "bench.db"), app.config["SQLITE_BUSY_TIMEOUT_MS"] / 1000, work)
            updates, ntiles, recomputes, holds, waits, failures = [], [], [], [], [], 0
            scored = 0
            at = now
            for number in range(1, RUNS + 1):
                at = now + timedelta(days=number - 1)
                updates.append(baseline_update())
                ntiles.append(baseline_ntile())
                elapsed, scored, hold, seen = recompute(at, probe)
                recomputes.append(elapsed)
                holds.append(hold)
                waits.append(seen["longest"])
                failures += seen["failures"]
                print(
                    f"round {number}: baseline UPDATE {updates[-1]:.2f} s, NTILE(5) {ntiles[-1]:.2f} s, "
                    f"recompute_scores {recomputes[-1]:.2f} s ({scored:,} scored, "
                    f"{'first scoring' if number == 1 else 'a day later'}); longest write transaction "
                    f"{hold:.2f} s; a writer beside it: {seen['writes']} writes, {seen['failures']} failed, "
                    f"longest wait {seen['longest']:.2f} s"
                )
            # The baseline UPDATE above rewrote the recency scores: put them back, then time a run
            # that finds nothing to change.
            scoring.recompute_scores(now=at)
            unchanged, _, hold, seen = recompute(at, probe)
            probe.close()
            print(
                f"again at the same time (nothing to change): {unchanged:.2f} s; longest write transaction "
                f"{hold:.2f} s; writer: {seen['writes']} writes, {seen['failures']} failed"
            )

            update, ntile, full = (statistics.median(values) for values in (updates, ntiles, recomputes))
            ratio = full / update if update else float("inf")
            met = "met" if full < TARGET_SECONDS else "NOT met"
            print(f"baseline: single-pass UPDATE of every row  {update:6.2f} s (median of {RUNS})")
            print(f"baseline: NTILE(5) over every row          {ntile:6.2f} s (median of {RUNS})")
            print(f"recompute_scores                           {full:6.2f} s (median of {RUNS})")
            print(f"ratio recompute/UPDATE baseline: {ratio:.2f}")
            print(
                f"write lock: longest write transaction of the recompute {max(holds):.2f} s; a writer "
                f"beside it waited at most {max(waits):.2f} s, {failures} of its writes failed"
            )
            print(
                f"summary: recompute_scores scored {scored:,} of {ROWS:,} customers in {full:.2f} s "
                f"on SQLite, {ratio:.2f}x one plain UPDATE pass ({update:.2f} s); "
                f"target under {TARGET_SECONDS:.0f} s: {met}"
            )
            db.session.remove()
            db.engine.dispose()
        ok = True
    finally:
        finish_work_dir(work, ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
