"""Benchmark: importing a 1,000,000-row orders CSV with `import_orders`, against the database's
own bulk loader reading the same file into a table of the same shape.

SQLite: our import into a fresh database file, against `sqlite3 … .import --csv`.
PostgreSQL (when BENCH_DATABASE_URL or TEST_DATABASE_URL is set): our import into a throwaway
schema, against `psql -c "\\copy … FROM file CSV HEADER"`.

Ours runs with every check on: addresses validated and normalised, dates and amounts parsed,
customers created, suppressions applied, purchase figures derived from the orders. It runs in a
subprocess of its own, so that its peak RSS is its own. The ratio printed is baseline seconds /
our seconds: 1.0 means as fast as the bulk loader, 0.8 the target.

It also measures the floor: the database storing exactly the customers and orders our import
stored, copied with its own `INSERT … SELECT` from our result, with no file to read and nothing
to check. baseline/floor is the best ratio any import writing those rows could reach.

Knobs: BENCH_ROWS (1,000,000), BENCH_PROFILE=1 (print the time each kind of SQL statement took
in our import, and the rest).
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import ROOT, finish_work_dir, machine, new_work_dir

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
CUSTOMERS = max(1, ROWS // 5)
PROFILE = os.environ.get("BENCH_PROFILE") == "1"
SEED = 20250304

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Niklaus"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton"]
DOMAINS = ["example.com", "example.org", "mail.example.net", "shop.example.co.uk", "example.io"]

# The same shape as the file, with the key our orders table enforces (one row per order id).
SQLITE_TABLE = """CREATE TABLE orders_baseline (
    order_id VARCHAR(100) NOT NULL UNIQUE,
    email VARCHAR(254) NOT NULL,
    placed_at DATETIME NOT NULL,
    total NUMERIC(12, 2) NOT NULL,
    currency VARCHAR(3) NOT NULL,
    first_name VARCHAR(100),
    last_name VARCHAR(100)
)"""
POSTGRES_TABLE = SQLITE_TABLE.replace("DATETIME", "TIMESTAMP WITH TIME ZONE")


def generate(path: Path) -> None:
    """A deterministic orders file: ROWS orders from CUSTOMERS customers over three years."""
    rng = random.Random(SEED)
    start = datetime(2022, 1, 1, tzinfo=UTC)
    span = int(timedelta(days=3 * 365).total_seconds())
    customers = []
    for number in range(CUSTOMERS):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        currency = "GBP" if rng.random() < 0.8 else rng.choice(["EUR", "USD"])
        email = f"{first.lower()}.{last.lower()}{number}@{rng.choice(DOMAINS)}"
        customers.append((email, currency, first, last))
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("order_id,email,placed_at,total,currency,first_name,last_name\n")
        for number in range(ROWS):
            email, currency, first, last = customers[rng.randrange(CUSTOMERS)]
            placed = start + timedelta(seconds=rng.randrange(span))
            total = round(rng.lognormvariate(3.5, 0.8), 2)
            when = f"{placed:%Y-%m-%dT%H:%M:%SZ}"
            handle.write(f"{100000 + number},{email},{when},{total:.2f},{currency},{first},{last}\n")


def run_ours(url: str, path: Path, schema: str | None) -> dict:
    """Our import in a subprocess (this script with --ours); returns what it measured."""
    command = [sys.executable, __file__, "--ours", url, str(path), schema or ""]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"our import failed:\n{done.stdout}\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["profile"] = done.stderr.rstrip()
    return result


def ours(url: str, path: Path, schema: str) -> None:
    """Inside the subprocess: a fresh app and schema, then one timed import_orders."""
    import sqlalchemy as sa

    from app import create_app
    from app.extensions import db
    from app.models import Customer, Order
    from app.services.imports import import_orders
    from config import TestingConfig

    settings: dict = {"SQLALCHEMY_DATABASE_URI": url}
    if schema:
        settings["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {"options": f"-csearch_path={schema}"}}
    app = create_app(TestingConfig, **settings)
    samples: list[int] = []

    def progress(_rows: int) -> None:
        samples.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

    with app.app_context():
        db.create_all()
        db.session.commit()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        spent = _time_statements(db.engine) if PROFILE else None
        began = time.perf_counter()
        with path.open("rb") as stream:
            summary = import_orders(stream, path.name, now=datetime.now(UTC), progress=progress)
        seconds = time.perf_counter() - began
        if spent is not None:
            _print_profile(spent, seconds)
        orders = db.session.scalar(sa.select(sa.func.count()).select_from(Order))
        customers = db.session.scalar(sa.select(sa.func.count()).select_from(Customer))
        counted = db.session.scalar(sa.select(sa.func.sum(Customer.orders_count)))
        reading = _time_reading(path, postgresql=url.startswith("postgresql"))
    quarter = max(1, len(samples) // 4)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "reading_seconds": reading,
                "summary": summary.line(),
                "orders": orders,
                "customers": customers,
                "orders_counted_on_customers": counted,
                "rss_before_kib": before,
                "rss_quarters_kib": samples[quarter - 1 :: quarter][:4],
                "rss_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )


def _time_reading(path: Path, *, postgresql: bool) -> float:
    """Seconds our import spends reading and checking the file alone: the compiled reader's
    batches, every cell checked, nothing written."""
    from app.services import imports, order_batches
    from app.services.csvfiles import column_positions, open_csv

    began = time.perf_counter()
    with path.open("rb") as stream:
        table = open_csv(stream, path.name)
        positions = column_positions(
            table, imports.ORDER_COLUMNS, imports.ORDER_FIELDS, imports.ORDER_REQUIRED, None
        )
        for _batch in order_batches.read(stream, table, positions, sqlite_times=not postgresql):
            pass
    return time.perf_counter() - began


def _time_statements(engine) -> dict[str, list[float]]:
    """Seconds and count per kind of SQL statement, measured around the driver's calls."""
    import sqlalchemy as sa

    spent: dict[str, list[float]] = {}

    @sa.event.listens_for(engine, "before_cursor_execute")
    def before(connection, _cursor, _statement, _parameters, _context, _executemany) -> None:
        connection.info["bench_began"] = time.perf_counter()

    @sa.event.listens_for(engine, "after_cursor_execute")
    def after(connection, _cursor, statement, _parameters, _context, _executemany) -> None:
        words = " ".join(statement.split()[:4])
        entry = spent.setdefault(words, [0.0, 0])
        entry[0] += time.perf_counter() - connection.info.pop("bench_began")
        entry[1] += 1

    return spent


def _print_profile(spent: dict[str, list[float]], seconds: float) -> None:
    """Where our import's time went: each kind of statement, then the rest (Python)."""
    in_sql = sum(entry[0] for entry in spent.values())
    print(f"profile: {seconds:.2f} s in all, {in_sql:.2f} s in SQL statements:", file=sys.stderr)
    for words, (taken, count) in sorted(spent.items(), key=lambda item: -item[1][0])[:10]:
        print(f"  {taken:7.2f} s  {count:5d} x  {words}", file=sys.stderr)
    print(
        f"  {seconds - in_sql:7.2f} s  reading, parsing, validating (Python) and COPY (PostgreSQL)",
        file=sys.stderr,
    )


def timed(command: list[str], env: dict | None = None) -> float:
    """Wall-clock seconds of one command, which must succeed."""
    began = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - began


def sqlite_baseline(work: Path, path: Path) -> float:
    """sqlite3's .import of the file into a same-shape table, with the app's journal settings."""
    database = work / "baseline.db"
    script = work / "baseline.sql"
    script.write_text(
        "PRAGMA journal_mode = WAL;\nPRAGMA synchronous = NORMAL;\n"
        f"{SQLITE_TABLE};\n.import --csv --skip 1 {path} orders_baseline\n"
    )
    seconds = timed(["sqlite3", str(database), f".read {script}"])
    count = subprocess.run(
        ["sqlite3", str(database), "SELECT count(*) FROM orders_baseline"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if int(count) != ROWS:
        raise RuntimeError(f"the baseline loaded {count} rows, not {ROWS}")
    return seconds


def psql_url(url: str) -> str:
    """The URL as psql reads it (no SQLAlchemy driver name)."""
    return url.replace("postgresql+psycopg://", "postgresql://").replace("postgres://", "postgresql://")


def postgres_baseline(url: str, schema: str, path: Path) -> float:
    """psql's \\copy of the file into a same-shape table in the benchmark's schema."""
    env = {**os.environ, "PGOPTIONS": f"-csearch_path={schema}"}
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", POSTGRES_TABLE], check=True, env=env)
    return timed(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", f"\\copy orders_baseline FROM '{path}' CSV HEADER"],
        env=env,
    )


def sqlite_floor(work: Path, ours_db: Path) -> float:
    """What SQLite itself needs to store the rows our import stored: a fresh database with our
    tables, then `INSERT … SELECT` of our import's customers and orders from our database file,
    in C, with no file to read and nothing to check (the customer-date index built after, as our
    import does). No import that writes these rows can take less."""
    database = work / "floor.db"
    schema = subprocess.run(
        ["sqlite3", str(ours_db), ".schema customers", ".schema orders"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    subprocess.run(["sqlite3", str(database)], input=schema, check=True, capture_output=True, text=True)
    script = work / "floor.sql"
    script.write_text(
        "PRAGMA journal_mode = WAL;\nPRAGMA synchronous = NORMAL;\nPRAGMA foreign_keys = OFF;\n"  # noqa: S608
        f"PRAGMA cache_size = -{64 * 1024};\nATTACH '{ours_db}' AS ours;\nBEGIN;\n"
        "INSERT INTO main.customers SELECT * FROM ours.customers;\n"
        "DROP INDEX main.ix_orders_customer_placed;\n"
        "INSERT INTO main.orders SELECT * FROM ours.orders;\n"
        "CREATE INDEX main.ix_orders_customer_placed ON orders (customer_id, placed_at);\nCOMMIT;\n"
    )
    return timed(["sqlite3", str(database), f".read {script}"])


def postgres_floor(url: str, schema: str) -> float:
    """What PostgreSQL itself needs to store the rows our import stored: tables like ours (with
    their indexes, defaults and the orders' foreign key) in a second schema, then `INSERT …
    SELECT` of our import's customers and orders, with no file to read and nothing to check."""
    floor = f"{schema}_floor"
    setup = (
        f"CREATE SCHEMA {floor}; "
        f"CREATE TABLE {floor}.customers (LIKE {schema}.customers INCLUDING ALL); "
        f"CREATE TABLE {floor}.orders (LIKE {schema}.orders INCLUDING ALL); "
        f"ALTER TABLE {floor}.orders ADD FOREIGN KEY (customer_id) REFERENCES {floor}.customers (id) "
        "ON DELETE CASCADE; "
        f"ANALYZE {schema}.customers; ANALYZE {schema}.orders"
    )
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", setup], check=True, capture_output=True)
    try:
        return timed(
            [
                "psql",
                url,
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                f"BEGIN; INSERT INTO {floor}.customers SELECT * FROM {schema}.customers; "  # noqa: S608
                f"INSERT INTO {floor}.orders SELECT * FROM {schema}.orders; COMMIT",
            ]
        )
    finally:
        quiet = {**os.environ, "PGOPTIONS": "-cclient_min_messages=warning"}
        subprocess.run(["psql", url, "-qc", f"DROP SCHEMA {floor} CASCADE"], check=True, env=quiet)


def report_floor(label: str, baseline: float, floor: float, result: dict) -> None:
    """The storage floor beside the baseline and ours, and the best any import could do: read
    and check the file as fast as ours does, then store the rows at the floor."""
    reading = result["reading_seconds"]
    print(
        f"{label}: floor (the database storing the same customers and orders, no file, no checks) "
        f"{floor:.2f} s; baseline/floor {baseline / floor:.2f}; floor/ours {floor / result['seconds']:.2f}"
    )
    print(
        f"{label}: reading and checking the file alone (compiled reader, nothing written) {reading:.2f} s; "
        f"baseline/(reading + floor) {baseline / (reading + floor):.2f} (an import with no other work, "
        "no figures derived and no rescoring)"
    )


def report(label: str, baseline_name: str, baseline: float, result: dict) -> None:
    """One database's figures."""
    seconds = result["seconds"]
    print(f"{label}: ours {seconds:.2f} s ({ROWS / seconds:,.0f} rows/s): {result['summary']}")
    print(f"{label}: {baseline_name} {baseline:.2f} s ({ROWS / baseline:,.0f} rows/s)")
    print(
        f"{label}: peak RSS of our import {result['rss_peak_kib'] / 1024:.0f} MiB "
        f"(before it began {result['rss_before_kib'] / 1024:.0f} MiB; at each quarter of the file "
        f"{', '.join(f'{kib / 1024:.0f}' for kib in result['rss_quarters_kib'])} MiB)"
    )
    print(f"{label}: ratio baseline/ours {baseline / seconds:.2f} (target 0.80)")
    if result["profile"]:
        print(result["profile"])
    if result["orders"] != ROWS or result["orders_counted_on_customers"] != ROWS:
        raise RuntimeError(f"{label}: the import does not add up: {result}")


def main() -> int:
    """Generate the file, then run each database's pair."""
    if shutil.which("sqlite3") is None:
        print("skipped: sqlite3 CLI not found (install the Debian package sqlite3)")
        return 0
    work = new_work_dir("import_orders")
    ok = False
    try:
        print(f"machine: {machine()}")
        path = work / "orders.csv"
        began = time.perf_counter()
        generate(path)
        print(
            f"file: {ROWS:,} orders from {CUSTOMERS:,} customers, {path.stat().st_size / 2**20:.0f} MiB "
            f"(generated in {time.perf_counter() - began:.1f} s)"
        )

        baseline = sqlite_baseline(work, path)
        result = run_ours(f"sqlite:///{work / 'ours.db'}", path, None)
        report("sqlite", "sqlite3 .import", baseline, result)
        report_floor("sqlite", baseline, sqlite_floor(work, work / "ours.db"), result)

        url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
        if url and shutil.which("psql"):
            schema = f"winback_bench_{uuid.uuid4().hex[:10]}"
            subprocess.run(["psql", psql_url(url), "-qc", f"CREATE SCHEMA {schema}"], check=True)
            try:
                baseline = postgres_baseline(psql_url(url), schema, path)
                result = run_ours(database_url(url), path, schema)
                report("postgresql", "psql \\copy", baseline, result)
                report_floor("postgresql", baseline, postgres_floor(psql_url(url), schema), result)
            finally:
                quiet = {**os.environ, "PGOPTIONS": "-cclient_min_messages=warning"}
                subprocess.run(
                    ["psql", psql_url(url), "-qc", f"DROP SCHEMA {schema} CASCADE"], check=True, env=quiet
                )
        elif url:
            print("postgresql: skipped (psql not found)")
        else:
            print("postgresql: skipped (set BENCH_DATABASE_URL or TEST_DATABASE_URL)")
        ok = True
    finally:
        finish_work_dir(work, ok)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from config import database_url

    if len(sys.argv) == 5 and sys.argv[1] == "--ours":
        ours(sys.argv[2], Path(sys.argv[3]), sys.argv[4])
        sys.exit(0)
    sys.exit(main())
