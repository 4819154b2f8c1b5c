"""Importing customers and orders from CSV files: streamed, validated, and written set-based, a
batch at a time.

Orders files are read by the compiled reader of order_batches where they can be (every row it
does not accept comes back here to the per-row parser); customers and suppression files row by
row. Each batch of valid rows is loaded into a staging table (COPY on PostgreSQL, executemany on
SQLite), and a handful of `INSERT … SELECT` and `UPDATE … FROM` statements move it into the real
tables; on SQLite, orders go straight into their table by executemany, with their customer ids.
One import is one transaction: it commits once at the end, or changes nothing."""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from email_validator import SPECIAL_USE_DOMAIN_NAMES
from flask import current_app
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.visitors import replacement_traverse

from app.database import foreign_keys_unchecked
from app.exceptions import InvalidInput, RowError, UnreadableFile
from app.extensions import db
from app.models import Customer, CustomerStatus, Order, Suppression, SuppressionReason
from app.models.base import UTCDateTime
from app.services import scoring, suppressions
from app.services.csvfiles import (
    CsvRows,
    ErrorReport,
    clean_text,
    column_positions,
    open_csv,
    parse_amount,
    parse_count,
    parse_currency,
    parse_datetime,
    parse_locale,
    parse_yes_no,
)
from app.services.customers import PLAIN_EMAIL_PATTERN, normalise_email
from app.services.sql import upsert

if TYPE_CHECKING:
    from app.services import order_batches

BATCH_SIZE = 10_000  # rows per batch on SQLite, which joins a batch by index lookups
# PostgreSQL joins a batch to customers and orders by hashing them whole: fewer, larger batches.
POSTGRESQL_BATCH_SIZE = 100_000
# SQLite's page cache for the import's connection, in KiB, while an import runs: the indexes of
# customers and orders are written in no particular order, and a cache that holds their hot
# pages avoids most reads. It is a fixed bound, whatever the file's size.
SQLITE_CACHE_KIB = 64 * 1024
ERRORS_KEPT = 100  # the summary keeps the first bad rows; the error report gets every one
CACHE_LIMIT = 1 << 18  # addresses remembered across batches; the cache empties when full
DEFAULT_CURRENCY = "GBP"
IMPORT_LOCK = 0x77696E626B  # PostgreSQL advisory lock key held by a running import

CUSTOMER_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "name",
    "phone",
    "external_id",
    "first_purchase_at",
    "last_purchase_at",
    "orders_count",
    "total_spent",
    "currency",
    "accepts_marketing",
    "locale",
)

# Loose header names (after header_key) -> our field. Shopify's customers export included.
CUSTOMER_COLUMNS = {
    "email": "email",
    "emailaddress": "email",
    "firstname": "first_name",
    "lastname": "last_name",
    "name": "name",
    "fullname": "name",
    "phone": "phone",
    "defaultaddressphone": "phone",
    "externalid": "external_id",
    "customerid": "external_id",
    "id": "external_id",
    "firstpurchaseat": "first_purchase_at",
    "lastpurchaseat": "last_purchase_at",
    "lastorderdate": "last_purchase_at",
    "orderscount": "orders_count",
    "totalorders": "orders_count",
    "totalspent": "total_spent",
    "currency": "currency",
    "acceptsmarketing": "accepts_marketing",
    "acceptsemailmarketing": "accepts_marketing",
    "locale": "locale",
    "language": "locale",
}

ORDER_FIELDS = (
    "order_id",
    "email",
    "placed_at",
    "total",
    "currency",
    "first_name",
    "last_name",
    "name",
    "accepts_marketing",
)
ORDER_REQUIRED = ("order_id", "email", "placed_at", "total", "currency")

ORDER_COLUMNS = {
    "orderid": "order_id",
    "ordernumber": "order_id",
    "orderno": "order_id",
    "order": "order_id",
    "id": "order_id",
    "email": "email",
    "emailaddress": "email",
    "customeremail": "email",
    "placedat": "placed_at",
    "orderdate": "placed_at",
    "orderedat": "placed_at",
    "createdat": "placed_at",
    "purchasedat": "placed_at",
    "date": "placed_at",
    "total": "total",
    "ordertotal": "total",
    "totalprice": "total",
    "amount": "total",
    "currency": "currency",
    "currencycode": "currency",
    "firstname": "first_name",
    "lastname": "last_name",
    "fullname": "name",
    "customername": "name",
    "acceptsmarketing": "accepts_marketing",
    "acceptsemailmarketing": "accepts_marketing",
}

# Shopify's orders export (Orders → Export): one row per line item, "Name" is the order number.
SHOPIFY_ORDERS_SIGNATURE = frozenset({"name", "financialstatus", "createdat", "total", "lineitemname"})
SHOPIFY_ORDER_COLUMNS = {
    "name": "order_id",
    "email": "email",
    "createdat": "placed_at",
    "total": "total",
    "currency": "currency",
    "billingname": "name",
    "acceptsmarketing": "accepts_marketing",
    "acceptsemailmarketing": "accepts_marketing",
}


@dataclass
class ImportSummary:
    """What an import did: every count the summary line reports, and the first refused cells.

    For a customers file the counts are of customers; for an orders file, of orders, with the
    customers the file introduced in `customers_created`."""

    file: str
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    suppressed: int = 0
    errors: list[RowError] = field(default_factory=list)
    committed: bool = False
    customers_created: int = 0

    def line(self) -> str:
        """The one-line summary printed at the end of an import."""
        verdict = "" if self.committed else " (nothing was saved)"
        created = f"; {self.customers_created} new customers" if self.customers_created else ""
        suppressed = f"; {self.suppressed} suppressed (no marketing consent)" if self.suppressed else ""
        return (
            f"{self.file}: {self.imported} imported, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.skipped} skipped{created}{suppressed}{verdict}"
        )


def import_customers(
    stream: IO[bytes],
    name: str,
    *,
    now: datetime,
    strict: bool = False,
    day_first: bool = False,
    mapping: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    error_report: IO[str] | None = None,
) -> ImportSummary:
    """Import a customers CSV: valid rows are upserted by normalised email, bad rows skipped and
    reported by line and column (and to error_report as CSV). With strict, any bad row means
    nothing is saved. `mapping` names the field for a header the file uses ({"Mail": "email"}).

    Raises UnreadableFile when the file cannot be read or has no email column, InvalidInput
    when the mapping names a field that does not exist."""
    table = open_csv(stream, name)
    columns = set(table.columns)
    if not mapping and (columns >= SHOPIFY_ORDERS_SIGNATURE or {"orderid", "ordernumber"} & columns):
        raise UnreadableFile(f"{name}: line 1: this is an orders file; import it as orders")
    positions = column_positions(table, CUSTOMER_COLUMNS, CUSTOMER_FIELDS, ("email",), mapping)
    run = _Run(table, positions, now=now, day_first=day_first, error_report=error_report)
    return run.transaction(strict, lambda: _import_customer_rows(run, progress))


def import_orders(
    stream: IO[bytes],
    name: str,
    *,
    now: datetime,
    strict: bool = False,
    day_first: bool = False,
    mapping: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    error_report: IO[str] | None = None,
    source: str | None = None,
) -> ImportSummary:
    """Import an orders CSV: orders are upserted by (source, order id), customers new to
    Winback are created, and the purchase figures of every customer whose orders changed are
    derived again from their orders. Shopify's orders export is recognised by its headers
    (source "shopify"); rows that follow each other with the same order id are one order.

    Bad rows are skipped and reported as for customers; with strict nothing is saved.
    Raises UnreadableFile when the file cannot be read or lacks a required column, InvalidInput
    for a mapping to a field that does not exist."""
    table = open_csv(stream, name)
    shopify = set(table.columns) >= SHOPIFY_ORDERS_SIGNATURE
    recognised = SHOPIFY_ORDER_COLUMNS if shopify else ORDER_COLUMNS
    positions = column_positions(table, recognised, ORDER_FIELDS, ORDER_REQUIRED, mapping)
    try:
        source = clean_text(source or ("shopify" if shopify else "csv"), 40)
    except ValueError as exc:
        raise InvalidInput(f"source: {exc}") from exc
    if not source:
        raise InvalidInput("the source of the orders cannot be empty")
    # Every order's customer id comes from a join with customers in the import's own write
    # transaction, so SQLite need not look each one up again to check the foreign key.
    with foreign_keys_unchecked():
        run = _Run(table, positions, now=now, day_first=day_first, error_report=error_report)
    run.load_size = _size(stream)
    # Imported here, not with this module: pyarrow adds about 65 MiB and a fifth of a second to
    # every process that loads it, and web and worker processes mostly never import orders.
    from app.services import order_batches

    quick = stream if order_batches.usable(stream, error_report) else None
    return run.transaction(strict, lambda: _import_order_rows(run, source, progress, quick))


def _size(stream: IO[bytes]) -> int | None:
    """The file's size in bytes, when it is a file on disk."""
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        return None


# --- one import's state -------------------------------------------------------------------


class _Run:
    """One import under way: the file, its columns, how values are read, what was refused."""

    def __init__(
        self,
        table: CsvRows,
        positions: dict[str, int],
        *,
        now: datetime,
        day_first: bool,
        error_report: IO[str] | None,
    ) -> None:
        self.table = table
        self.positions = positions
        self.now = now
        self.day_first = day_first
        self.zone = ZoneInfo(current_app.config["TIMEZONE"])
        self.summary = ImportSummary(file=table.name)
        self.report = ErrorReport(error_report) if error_report is not None else None
        self.emails = _Emails()
        self.connection = db.session.connection()
        self.postgresql = self.connection.dialect.name == "postgresql"
        self.batch_size = POSTGRESQL_BATCH_SIZE if self.postgresql else BATCH_SIZE
        self.keys = suppressions.hash_keys()
        self.analysed: dict[str, int] = {}  # table -> rows written when last analysed
        self.written = 0  # orders added or changed so far
        self.customer_ids: dict[str, int] = {}  # SQLite: address -> customer id, for staged addresses
        self.orders_before = 0  # SQLite: the largest order id before the import
        self.load_size: int | None = None  # the file's size in bytes, when known

    def transaction(self, strict: bool, work: Callable[[], None]) -> ImportSummary:
        """Run the work in the session's transaction: commit once, or roll everything back."""
        try:
            cache = self._tune()
            try:
                work()
            finally:
                if cache is not None:  # the connection goes back to the pool as it came
                    with contextlib.suppress(sa.exc.DBAPIError):
                        self.connection.exec_driver_sql(f"PRAGMA cache_size = {int(cache)}")
        except BaseException:
            db.session.rollback()
            raise
        if strict and self.summary.skipped:
            db.session.rollback()
            return self.summary
        db.session.commit()
        self.summary.committed = True
        if self.summary.imported or self.summary.updated:
            # Scores are quintiles over the whole base: any new figure can move anyone's.
            scoring.recompute_scores(now=self.now)
        return self.summary

    def start_over(self, stream: IO[bytes]) -> None:
        """Forget what an attempt with the compiled reader counted and reported (its writes are
        rolled back by the caller) and open the file again from its start, to read row by row."""
        stream.seek(0)
        self.table = open_csv(stream, self.table.name)
        self.summary = ImportSummary(file=self.table.name)
        if self.report is not None:
            self.report.rewind()
        self.analysed = {}
        self.written = 0
        self.customer_ids = {}

    def _tune(self) -> int | None:
        """Settings for this import's connection; returns SQLite's cache size to restore."""
        if self.postgresql:
            # One import at a time, as SQLite's write lock has it: two imports of the same orders
            # would otherwise wait on each other's rows, row by row, and count them twice.
            self.connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({IMPORT_LOCK})")
            # Compiling the batch statements to machine code costs more than running them.
            self.connection.exec_driver_sql("SET LOCAL jit = off")
            return None
        cache = self.connection.exec_driver_sql("PRAGMA cache_size").scalar()
        self.connection.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        return cache

    def reject(self, line: int, index: int, reason: str, value: str | None = None) -> None:
        """Count a bad row and record its first bad cell."""
        summary = self.summary
        error = RowError(
            summary.file,
            line,
            self.table.columns[index],
            value if value is not None else "",
            reason,
        )
        summary.skipped += 1
        if len(summary.errors) < ERRORS_KEPT:
            summary.errors.append(error)
        if self.report is not None:
            self.report.add(error)

    def timestamp(self, value: str):
        """A date cell as the database stores it: text in SQLAlchemy's format on SQLite (so that
        staged and stored values compare as equals), an aware datetime on PostgreSQL."""
        try:  # the usual ISO 8601, without the detours of parse_datetime
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = parse_datetime(value, day_first=self.day_first, timezone=self.zone)
        else:
            if not self.postgresql and _UTC_SECONDS.fullmatch(value):
                # 2025-03-04T10:15:00Z, as most exports write it, is already what SQLite stores.
                return f"{value[:10]} {value[11:19]}.000000"
        try:
            parsed = (parsed if parsed.tzinfo else parsed.replace(tzinfo=self.zone)).astimezone(UTC)
        except OverflowError as exc:  # the first or last day of year 1 or 9999, moved to UTC
            raise ValueError("not a date (out of range)") from exc
        if self.postgresql:
            return parsed
        return parsed.isoformat(" ", "microseconds")[:26]  # UTC, without its "+00:00"

    def hash(self, email: str) -> str:
        """The address's suppression hash under the current key (as suppressions.email_hash)."""
        return suppressions.keyed_hash(self.keys[0], email)

    def suppressed_before(self, emails: list[str]) -> set[str]:
        """Those addresses on the suppression list under a previous SECRET_KEY: their stored
        hash differs from today's, so SQL alone cannot find them."""
        if len(self.keys) == 1 or not emails:
            return set()
        by_hash = {suppressions.keyed_hash(key, email): email for email in emails for key in self.keys[1:]}
        found = set()
        hashes = list(by_hash)
        for start in range(0, len(hashes), 1000):
            found.update(
                db.session.scalars(
                    sa.select(Suppression.email_hash).where(
                        Suppression.email_hash.in_(hashes[start : start + 1000])
                    )
                )
            )
        return {by_hash[hashed] for hashed in found}


_UTC_SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_PLAIN_EMAIL = re.compile(PLAIN_EMAIL_PATTERN)
_SPECIAL_USE = frozenset(SPECIAL_USE_DOMAIN_NAMES)


class _Emails:
    """normalise_email with a memory: an address seen before in the file costs a dict lookup.

    Plain ASCII addresses (letters, digits, `._+-`, an ordinary domain) are checked by one
    regular expression that accepts a subset of what email_validator accepts, with the same
    result; everything else goes to normalise_email. The tests hold the two to the same answers."""

    def __init__(self) -> None:
        self.known: dict[str, str] = {}  # cell -> address; the cell itself when already normal
        self.refused: dict[str, str] = {}  # cell -> why it is not an address

    def normalise(self, raw: str) -> str:
        email = self.known.get(raw)
        if email is not None:
            return email
        reason = self.refused.get(raw)
        if reason is None:
            if len(self.known) + len(self.refused) >= CACHE_LIMIT:
                self.known.clear()
                self.refused.clear()
            try:
                email = fast_normalise_email(raw)
            except InvalidInput as exc:
                reason = self.refused[raw] = str(exc)
            else:
                self.known[raw] = raw if email == raw else email
                return email
        raise InvalidInput(reason)


def fast_normalise_email(raw: str) -> str:
    """normalise_email's answer, quickly for the common plain address."""
    candidate = raw.strip()
    if candidate.isascii() and len(candidate) <= 254:
        lowered = candidate.lower()
        match = _PLAIN_EMAIL.fullmatch(lowered)
        if match and "--" not in match[1] and match[2] not in _SPECIAL_USE:
            return lowered
    return normalise_email(raw)


# --- staging tables -----------------------------------------------------------------------

# Temporary tables, one set per connection; they never reach the app's metadata or migrations.
_staging = sa.MetaData()
_SCORES = ("recency_score", "frequency_score", "monetary_score", "segment", "win_back_priority", "scored_at")
_customer_stage = sa.Table(
    "winback_import_customers",
    _staging,
    sa.Column("email", sa.String(254)),
    sa.Column("email_hash", sa.String(64)),
    sa.Column("first_name", sa.String(100)),
    sa.Column("last_name", sa.String(100)),
    sa.Column("phone", sa.String(40)),
    sa.Column("external_id", sa.String(100)),
    sa.Column("first_purchase_at", UTCDateTime),
    sa.Column("last_purchase_at", UTCDateTime),
    sa.Column("orders_count", sa.Integer),
    sa.Column("total_spent", sa.BigInteger),
    sa.Column("currency", sa.String(3)),
    sa.Column("accepts_marketing", sa.Boolean),
    sa.Column("locale", sa.String(10)),
    # On the suppression list under a previous key (see _Run.suppressed_before).
    sa.Column("suppressed", sa.Boolean),
    # Scores for new customers, worked out in SQL (PostgreSQL orders imports, see _score_newcomers).
    *(sa.Column(name, Customer.__table__.c[name].type, info={"in_sql": True}) for name in _SCORES),
    prefixes=["TEMPORARY"],
)
_order_stage = sa.Table(
    "winback_import_orders",
    _staging,
    sa.Column("external_id", sa.String(100)),
    sa.Column("email", sa.String(254)),
    sa.Column("placed_at", UTCDateTime),
    sa.Column("amount", sa.BigInteger),
    sa.Column("currency", sa.String(3)),
    prefixes=["TEMPORARY"],
)


# PostgreSQL: every person and every order of the file, as read, before anything is written
# (see _write_whole_file): the columns of the customers and orders stages, and `seq`, which keeps
# the file's order: the first name found and the last row of an order id win, as when the
# batches were written one by one.
def _whole_file_stage(name: str, stage: sa.Table, columns: Iterable[str]) -> sa.Table:
    return sa.Table(
        name,
        _staging,
        sa.Column("seq", sa.BigInteger, sa.Identity(), info={"in_sql": True}),
        *(sa.Column(column, stage.c[column].type) for column in columns),
        prefixes=["TEMPORARY"],
    )


_PERSON = ("email", "email_hash", "first_name", "last_name", "accepts_marketing", "suppressed")
_file_people = _whole_file_stage("winback_import_file_people", _customer_stage, _PERSON)
_file_orders = _whole_file_stage("winback_import_file_orders", _order_stage, _order_stage.c.keys())
# Every order this import added or changed: whose it is now, whose it was, and whether it is new.
_changed_orders = sa.Table(
    "winback_import_changes",
    _staging,
    sa.Column("customer_id", sa.Integer),
    sa.Column("old_customer_id", sa.Integer),
    sa.Column("is_new", sa.Boolean),
    # SQLite: the order's id, as its trigger notes each update (see _count_orders).
    sa.Column("order_id", sa.Integer),
    prefixes=["TEMPORARY"],
)


def _create_stages(run: _Run, tables: list[sa.Table]) -> None:
    for table in tables:
        run.connection.execute(sa.schema.DropTable(table, if_exists=True))
        table.create(run.connection)


def _drop_stages(run: _Run, tables: list[sa.Table]) -> None:
    for table in tables:
        table.drop(run.connection)


def _load(run: _Run, table: sa.Table, rows: Collection[tuple], *, analyse: bool = True) -> None:
    """Put rows into an empty staging table: COPY on PostgreSQL, executemany on SQLite. On
    PostgreSQL a table may also be added to (analyse=False). Columns filled in SQL (`in_sql`)
    are left out of the rows."""
    columns = [column for column in table.columns if not column.info.get("in_sql")]
    if run.postgresql:
        names = ", ".join(column.name for column in columns)
        raw = run.connection.connection.driver_connection
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            if analyse:
                # Statistics for the staged rows: the planner then knows how large the batch is.
                cursor.execute(f"ANALYZE {table.name}")
    else:
        # The driver's own executemany over plain tuples: no per-row work in SQLAlchemy.
        statement = str(
            sa.insert(table)
            .values({c.name: sa.bindparam(c.name) for c in columns})
            .compile(dialect=run.connection.dialect)
        )
        run.connection.exec_driver_sql(statement, rows)


def _clear(run: _Run, table: sa.Table) -> None:
    """Empty a staging table for the next batch (on PostgreSQL without leaving dead rows)."""
    if run.postgresql:
        run.connection.exec_driver_sql(f"TRUNCATE {table.name}")
    else:
        run.connection.execute(sa.delete(table))


def _analyse_as_it_grows(run: _Run, table: sa.Table, rows: int) -> None:
    """On PostgreSQL, refresh a table's statistics each time this import has doubled what it
    wrote there: a table filled inside the import's own transaction looks small to the planner,
    which would then join each batch by scanning it whole."""
    if not run.postgresql or rows < max(run.batch_size, 2 * run.analysed.get(table.name, 0)):
        return
    run.connection.exec_driver_sql(f"ANALYZE {table.name}")
    run.analysed[table.name] = rows


def _rows_changed(run: _Run, statement: sa.Executable) -> int:
    """Execute and say how many rows the statement wrote (SQLAlchemy keeps the count of an
    INSERT only when asked)."""
    return run.connection.execute(statement.execution_options(preserve_rowcount=True)).rowcount


# --- customers ----------------------------------------------------------------------------

_customers = Customer.__table__
_orders = Order.__table__
_suppressions = Suppression.__table__
_ACTIVE = CustomerStatus.ACTIVE.value
_SUPPRESSED = CustomerStatus.SUPPRESSED.value
_TEXT_LIMITS = {"first_name": 100, "last_name": 100, "name": 200, "phone": 40, "external_id": 100}
# Fields a customers file sets only for customers without orders: for the others, orders decide.
_FIGURES = ("first_purchase_at", "last_purchase_at", "orders_count", "total_spent", "currency")
_DETAILS = ("first_name", "last_name", "phone", "external_id", "accepts_marketing", "locale")
_NO_DETAILS = (None,) * 7  # an orders file says nothing of phone, external id or figures


def _import_customer_rows(run: _Run, progress: Callable[[int], None] | None) -> None:
    """Parse every row and write the valid ones in batches."""
    _create_stages(run, [_customer_stage])
    batch: dict[str, tuple] = {}
    for line, cells in run.table.values:
        record = _parse_customer(run, line, cells)
        if record is not None:
            batch[record[0]] = record  # a later row for the same address wins
        if len(batch) >= run.batch_size:
            _write_customers(run, batch)
            if progress:
                progress(len(batch))
            batch = {}
    if batch:
        _write_customers(run, batch)
        if progress:
            progress(len(batch))
    _drop_stages(run, [_customer_stage])


def _parse_customer(run: _Run, line: int, cells: list[str]) -> tuple | None:
    """One row as a staging tuple (None where the file gives nothing), or None after recording
    why it was refused."""
    positions = run.positions
    values: dict[str, object] = {}
    current = "email"
    try:
        email = run.emails.normalise(cells[positions["email"]])
        for current, index in positions.items():
            cell = cells[index]
            if current == "email" or not cell.strip():
                continue
            if current in _TEXT_LIMITS:
                text = clean_text(cell, _TEXT_LIMITS[current])
                if text:
                    values[current] = text
            elif current in ("first_purchase_at", "last_purchase_at"):
                values[current] = run.timestamp(cell)
            elif current == "orders_count":
                values[current] = parse_count(cell)
            elif current == "total_spent":
                values[current] = parse_amount(cell)
            elif current == "currency":
                values[current] = parse_currency(cell)
            elif current == "accepts_marketing":
                values[current] = parse_yes_no(cell)
            elif current == "locale":
                values[current] = parse_locale(cell)
    except (InvalidInput, ValueError) as exc:
        index = positions[current]
        run.reject(line, index, str(exc), cells[index])
        return None
    full_name = values.pop("name", None)
    if full_name and not values.get("first_name") and not values.get("last_name"):
        values["first_name"], _, values["last_name"] = str(full_name).partition(" ")
        values["first_name"] = str(values["first_name"])[:100]
        values["last_name"] = str(values["last_name"]).strip()[:100]
    if "external_id" in values:
        # Shopify writes its ids with a leading apostrophe so that spreadsheets keep them as text.
        values["external_id"] = str(values["external_id"]).removeprefix("'") or None
    return (
        email,
        run.hash(email),
        values.get("first_name"),
        values.get("last_name"),
        values.get("phone"),
        values.get("external_id"),
        values.get("first_purchase_at"),
        values.get("last_purchase_at"),
        values.get("orders_count"),
        values.get("total_spent"),
        values.get("currency"),
        values.get("accepts_marketing"),
        values.get("locale"),
        False,
    )


def _write_customers(run: _Run, batch: dict[str, tuple]) -> None:
    """Insert the new customers and update the changed ones, from the staged batch."""
    earlier = run.suppressed_before(list(batch))
    rows = [(*record[:-1], record[0] in earlier) for record in batch.values()] if earlier else batch.values()
    _load(run, _customer_stage, list(rows))
    inserted = _insert_new_customers(run)
    updated = _update_customers(run)
    _analyse_as_it_grows(run, _customers, run.summary.imported + inserted)
    summary = run.summary
    summary.imported += inserted
    summary.updated += updated
    summary.unchanged += len(batch) - inserted - updated
    _apply_suppressions(run)
    _clear(run, _customer_stage)


def _insert_new_customers(run: _Run) -> int:
    """Staged addresses that are not customers yet become customers; returns how many."""
    stage = _customer_stage
    now = sa.literal(run.now, UTCDateTime)
    columns = {
        "email": stage.c.email,
        "email_hash": stage.c.email_hash,
        "first_name": sa.func.coalesce(stage.c.first_name, ""),
        "last_name": sa.func.coalesce(stage.c.last_name, ""),
        "phone": sa.func.coalesce(stage.c.phone, ""),
        "external_id": stage.c.external_id,
        "preferred_contact": sa.literal("email"),
        "accepts_marketing": stage.c.accepts_marketing,
        "locale": stage.c.locale,
        "first_purchase_at": stage.c.first_purchase_at,
        "last_purchase_at": stage.c.last_purchase_at,
        "orders_count": sa.func.coalesce(stage.c.orders_count, 0),
        "total_spent": sa.func.coalesce(stage.c.total_spent, 0),
        "currency": sa.func.coalesce(stage.c.currency, DEFAULT_CURRENCY),
        "status": sa.literal(_ACTIVE),
        **{name: stage.c[name] for name in _SCORES},
        "created_at": now,
        "updated_at": now,
    }
    select = sa.select(*columns.values()).where(~sa.exists().where(_customers.c.email == stage.c.email))
    statement = upsert(_customers).from_select(list(columns), select)
    # A customer added meanwhile by someone else (the staff pages, say) is left as it is.
    return _rows_changed(run, statement.on_conflict_do_nothing(index_elements=["email"]))


def _update_customers(run: _Run) -> int:
    """Known customers take the staged values that differ (an empty cell changes nothing); the
    purchase figures only where the customer has no orders. Returns how many changed."""
    stage, customers = _customer_stage, _customers
    has_orders = sa.exists().where(_orders.c.customer_id == customers.c.id)

    def differs(name: str) -> sa.ColumnElement[bool]:
        return sa.and_(stage.c[name].is_not(None), stage.c[name].is_distinct_from(customers.c[name]))

    values: dict[str, sa.ColumnElement] = {
        name: sa.func.coalesce(stage.c[name], customers.c[name]) for name in _DETAILS
    }
    values |= {
        name: sa.case(
            (has_orders, customers.c[name]), else_=sa.func.coalesce(stage.c[name], customers.c[name])
        )
        for name in _FIGURES
    }
    statement = (
        sa.update(customers)
        .where(
            customers.c.email == stage.c.email,
            sa.or_(
                *(differs(name) for name in _DETAILS),
                sa.and_(sa.or_(*(differs(name) for name in _FIGURES)), ~has_orders),
            ),
        )
        .values(**values, updated_at=sa.literal(run.now, UTCDateTime))
    )
    return _rows_changed(run, statement)


def _apply_suppressions(run: _Run) -> None:
    """An explicit no to marketing puts the address on the suppression list (reason: no
    consent); every staged customer whose address is on the list is suppressed. An import never
    sets a status back to active."""
    stage, customers = _customer_stage, _customers
    now = sa.literal(run.now, UTCDateTime)
    listed = sa.exists().where(_suppressions.c.email_hash == stage.c.email_hash)
    no_consent = sa.select(
        stage.c.email_hash,
        sa.literal(SuppressionReason.NO_CONSENT.value),
        sa.literal(""),
        now,
    ).where(stage.c.accepts_marketing.is_(False), stage.c.suppressed.is_not(True), ~listed)
    statement = upsert(_suppressions).from_select(["email_hash", "reason", "note", "created_at"], no_consent)
    run.summary.suppressed += _rows_changed(
        run, statement.on_conflict_do_nothing(index_elements=["email_hash"])
    )
    run.connection.execute(
        sa.update(customers)
        .where(
            customers.c.email == stage.c.email,
            customers.c.status == _ACTIVE,
            sa.or_(stage.c.suppressed.is_(True), listed),
        )
        .values(status=_SUPPRESSED, updated_at=now)
    )


# --- orders -------------------------------------------------------------------------------


def _import_order_rows(
    run: _Run, source: str, progress: Callable[[int], None] | None, stream: IO[bytes] | None
) -> None:
    """Read the file with the compiled reader when it can go back to the start (`stream`), else
    row by row; a file the compiled reader refuses part-way is read again row by row, from a
    clean slate."""
    from app.services import order_batches  # see import_orders

    if stream is not None:
        savepoint = db.session.begin_nested()
        db.session.connection()  # the SAVEPOINT is sent when the session next hands out the connection
        try:
            _write_order_rows(run, source, progress, _quick_orders(run, stream))
        except order_batches.Irregular:
            savepoint.rollback()
            run.start_over(stream)
        else:
            savepoint.commit()
            return
    _write_order_rows(run, source, progress, _parsed_orders(run, run.table.values))


def _quick_orders(
    run: _Run, stream: IO[bytes]
) -> Iterator[tuple[tuple, str, str, bool | None] | order_batches.QuickRows]:
    """Every valid order of the file, in file order, from the compiled reader: a batch whose
    every row its checks accept as it is; otherwise row by row, the accepted rows as they are
    and the others through the per-row parser."""
    from app.services import order_batches  # see import_orders

    parse = _OrderParser(run)
    batches = order_batches.read(stream, run.table, run.positions, sqlite_times=not run.postgresql)
    for batch in batches:
        if isinstance(batch, order_batches.SlowRows):
            yield from _parsed_orders(run, iter(batch.rows), parse)
            continue
        if batch.accepted is None:
            yield batch
            continue
        columns = (batch.order_ids, batch.emails, batch.placed_at, batch.amounts, batch.currencies)
        orders = zip(*(column.to_pylist() for column in columns), strict=True)
        consents = batch.consents.to_pylist() if batch.consents is not None else [None] * len(batch.emails)
        people = zip(batch.first_names.to_pylist(), batch.last_names.to_pylist(), consents, strict=True)
        slow = batch.slow
        for index, (accepted, order, (first_name, last_name, consent)) in enumerate(
            zip(batch.accepted, orders, people, strict=True)
        ):
            if accepted:
                yield order, first_name, last_name, consent
            elif index in slow:  # (blank rows are in neither, as the csv module skips them)
                parsed = parse(*slow[index], None)
                if parsed is not None:
                    yield parsed


def _parsed_orders(
    run: _Run, rows: Iterator[tuple[int, list[str]]], parse: _OrderParser | None = None
) -> Iterator[tuple[tuple, str, str, bool | None]]:
    """Every valid order of these rows (line, cells), through the per-row parser."""
    parse = parse or _OrderParser(run)
    for group in _order_groups(run, rows):
        parsed = parse(*group)
        if parsed is not None:
            yield parsed


def _write_order_rows(
    run: _Run,
    source: str,
    progress: Callable[[int], None] | None,
    parsed_orders: Iterator[tuple[tuple, str, str, bool | None] | order_batches.QuickRows],
) -> None:
    """Write the parsed orders in batches (a batch the compiled reader accepted whole, as it
    is), then derive the changed customers' figures. PostgreSQL stages the batches and writes
    the whole file after the last one."""
    stages = [_customer_stage, _changed_orders]
    if run.postgresql:  # SQLite writes the orders straight from each batch
        stages += [_order_stage, _file_people, _file_orders]
    _create_stages(run, stages)
    _note_orders_before(run)
    rebuilt = _indexes_to_rebuild(run)
    for index in rebuilt:
        index.drop(run.connection)
    # Addresses already staged in this import, with what was staged: 1 = staged, 2 = with a
    # name, 4 = with an explicit no to marketing, 8 = with a yes. Bounded; a forgotten address
    # is staged again.
    staged: dict[str, int] = {}
    orders: dict[str, tuple] = {}
    people: dict[str, list] = {}
    total = 0
    for parsed in parsed_orders:
        if not isinstance(parsed, tuple):  # a batch the compiled reader accepted whole
            if orders or people:  # what came before is written first: the later row wins
                _write_orders(run, source, orders.values(), people, staged)
                if progress:
                    progress(len(orders))
                orders, people = {}, {}
            _write_orders(run, source, parsed.orders(), parsed.people(staged, _CONSENT_FLAGS), staged)
            total += len(parsed.order_ids)
            if progress:
                progress(len(parsed.order_ids))
            continue
        total += 1
        order, first_name, last_name, consent = parsed
        orders[order[0]] = order  # an order id listed twice: the later row wins
        email = order[1]
        flags = staged.get(email, 0)
        named = bool(first_name or last_name)
        wanted = 1 | (2 if named else 0) | _CONSENT_FLAGS[consent]
        if wanted & ~flags:
            person = people.get(email)
            if person is None:
                people[email] = [first_name, last_name, consent]
            else:
                if named and not (person[0] or person[1]):
                    person[0], person[1] = first_name, last_name
                if consent is False or person[2] is None:
                    person[2] = consent
        if len(orders) >= run.batch_size:
            _write_orders(run, source, orders.values(), people, staged)
            if progress:
                progress(len(orders))
            orders, people = {}, {}
    if orders or people:
        _write_orders(run, source, orders.values(), people, staged)
        if progress:
            progress(len(orders))
    if run.postgresql:
        _write_whole_file(run, source)
    for index in rebuilt:
        index.create(run.connection)
    _count_orders(run, total)
    _derive_figures(run)
    _drop_stages(run, stages)


# PostgreSQL: new customers are created with their scores when they are at least one in this
# many of the customers to score (see _score_newcomers).
NEWCOMERS_WORTH_SCORING = 16

# A row of an orders file takes at least this many bytes (an id, an address, a date, a total
# and a currency): the file's size over it is the most orders it can hold.
MIN_ORDER_ROW_BYTES = 48


def _indexes_to_rebuild(run: _Run) -> list[sa.Index]:
    """On SQLite, the orders indexes this import drops before loading and builds again after,
    inside its transaction: those not needed to find the orders, when the file may hold more
    orders than the table has. Entering a million orders one by one in random customer order
    costs about twice as much as building the index from sorted keys; readers keep using the
    last committed state meanwhile, and a failure rolls the drop back with everything else."""
    if run.postgresql or run.load_size is None:
        return []
    stored = run.connection.execute(sa.select(sa.func.max(_orders.c.id))).scalar() or 0
    if run.load_size // MIN_ORDER_ROW_BYTES < stored:
        return []
    return [index for index in _orders.indexes if not index.unique]


def _order_groups(
    run: _Run, rows: Iterator[tuple[int, list[str]]]
) -> Iterator[tuple[int, list[str], dict[int, int] | None]]:
    """The orders of these rows: rows that follow each other with the same order id are one
    order (as in exports with a row per line item); each field comes from the first of them
    that has it, so an order's total is counted once. Yields (first line, cells, {column: line}
    for cells taken from a later row)."""
    key_index = run.positions["order_id"]
    indexes = sorted(set(run.positions.values()))
    current: list[str] | None = None
    current_line = 0
    current_key = ""
    taken: dict[int, int] | None = None
    for line, cells in rows:
        key = cells[key_index].strip()
        if current is not None and key and key == current_key:
            for index in indexes:
                if not current[index].strip() and cells[index].strip():
                    current[index] = cells[index]
                    if taken is None:
                        taken = {}
                    taken[index] = line
            continue
        if current is not None:
            yield current_line, current, taken
        current, current_line, current_key, taken = cells, line, key, None
    if current is not None:
        yield current_line, current, taken


class _OrderParser:
    """Reads one order's cells into (staging tuple, first name, last name, marketing consent),
    or records why it was refused and returns None. Called once per order: the column lookups
    are done once, here."""

    def __init__(self, run: _Run) -> None:
        positions = run.positions
        self.run = run
        self.order_id, self.email, self.placed_at, self.total, self.currency = (
            positions[name] for name in ORDER_REQUIRED
        )
        self.first_name = positions.get("first_name")
        self.last_name = positions.get("last_name")
        self.name = positions.get("name")
        self.consent = positions.get("accepts_marketing")

    def __call__(
        self, line: int, cells: list[str], taken: dict[int, int] | None
    ) -> tuple[tuple, str, str, bool | None] | None:
        run = self.run
        current = self.order_id
        try:
            order_id = clean_text(cells[current], 100)
            if not order_id:
                raise ValueError("an order id is required")
            current = self.email
            email = run.emails.normalise(cells[current])
            current = self.placed_at
            placed_at = run.timestamp(cells[current])
            current = self.total
            cell = cells[current]
            if not cell.strip():
                raise ValueError("a total is required")
            amount = parse_amount(cell)
            if amount < 0:
                raise ValueError("a negative total (a refund is not an order)")
            current = self.currency
            currency = parse_currency(cells[current])
            first_name = last_name = ""
            if self.first_name is not None:
                current = self.first_name
                first_name = clean_text(cells[current], 100)
            if self.last_name is not None:
                current = self.last_name
                last_name = clean_text(cells[current], 100)
            if self.name is not None and not (first_name or last_name):
                current = self.name
                first_name, _, last_name = clean_text(cells[current], 200).partition(" ")
                first_name, last_name = first_name[:100], last_name.strip()[:100]
            consent = None
            if self.consent is not None:
                current = self.consent
                consent = parse_yes_no(cells[current])
        except (InvalidInput, ValueError) as exc:
            run.reject(taken.get(current, line) if taken else line, current, str(exc), cells[current])
            return None
        return (order_id, email, placed_at, amount, currency), first_name, last_name, consent


_CONSENT_FLAGS = {None: 0, False: 4, True: 8}  # what a row's answer adds to the staged flags


def _write_orders(
    run: _Run,
    source: str,
    orders: Collection[tuple],
    people: dict[str, list],
    staged: dict[str, int],
) -> None:
    """Write one batch, (order id, address, placed, amount, currency) each, with the people of
    its rows: new customers first, then the orders that are new or changed. On PostgreSQL the
    batch is only staged, to be written with the whole file (see _write_whole_file)."""
    if run.postgresql:
        _stage_people(run, people)
        if orders:
            _load(run, _file_orders, orders, analyse=False)
        _remember_staged(run, people, staged, {})
        return
    fresh = _write_people(run, people)
    if orders:
        ids = run.customer_ids
        rows = [
            (source, order_id, ids[email], placed_at, amount, currency)
            for order_id, email, placed_at, amount, currency in orders
        ]
        run.written += _upsert_orders_by_id(run, rows)
    _remember_staged(run, people, staged, fresh)


def _write_people(run: _Run, people: dict[str, list]) -> dict[str, int]:
    """Stage a batch's people (address: [first name, last name, consent]): new ones become
    customers, known ones get what the file adds, suppressions apply. On SQLite, returns the
    customer id of each staged address."""
    fresh: dict[str, int] = {}
    if not people:
        return fresh
    earlier = run.suppressed_before(list(people))
    rows = [
        (email, run.hash(email), first_name, last_name, *_NO_DETAILS, consent, None, email in earlier)
        for email, (first_name, last_name, consent) in people.items()
    ]
    _load(run, _customer_stage, rows)
    _write_staged_people(run)
    if not run.postgresql:
        stage = _customer_stage
        statement = sa.select(stage.c.email, _customers.c.id).join(
            _customers, _customers.c.email == stage.c.email
        )
        fresh = dict(run.connection.execute(statement).all())
        run.customer_ids.update(fresh)
    _clear(run, _customer_stage)
    return fresh


def _write_staged_people(run: _Run) -> None:
    """The staged people: new ones become customers (with the staged figures), known ones get
    what the file adds, suppressions apply."""
    run.summary.customers_created += _insert_new_customers(run)
    _analyse_as_it_grows(run, _customers, run.summary.customers_created)
    _complete_customers(run)
    _apply_suppressions(run)


def _stage_people(run: _Run, people: dict[str, list]) -> None:
    """PostgreSQL: add a batch's people (address: [first name, last name, consent]) to the
    whole file's, with their suppression hash and whether a previous key listed them."""
    if not people:
        return
    earlier = run.suppressed_before(list(people))
    rows = [
        (email, run.hash(email), first_name, last_name, consent, email in earlier)
        for email, (first_name, last_name, consent) in people.items()
    ]
    _load(run, _file_people, rows, analyse=False)


def _remember_staged(
    run: _Run, people: dict[str, list], staged: dict[str, int], fresh: dict[str, int]
) -> None:
    """Note what was staged for each address, so that later batches stage it again only with
    something new; the memory is bounded, and forgets everything when full."""
    if not people:
        return
    if len(staged) + len(people) > CACHE_LIMIT:
        staged.clear()
        run.customer_ids.clear()
        run.customer_ids.update(fresh)
    for email, (first_name, last_name, consent) in people.items():
        named = 2 if first_name or last_name else 0
        staged[email] = staged.get(email, 0) | 1 | named | _CONSENT_FLAGS[consent]


def _write_whole_file(run: _Run, source: str) -> None:
    """PostgreSQL: write what the batches staged, in a few statements over the whole file.

    Each person is merged over the file as the batches would have merged them one after the
    other: the name of the first row that has one, no to marketing when any row says no (else
    yes when any says yes), listed when a previous key listed them. Each order id keeps its last
    row. New customers are then created with the figures of their orders in the file (when they
    paid in one currency), so that deriving the figures afterwards, which decides them, finds
    nothing to rewrite: every rewrite of a row is a new row version with an entry in each of
    the table's indexes. Then the orders that are new or changed are noted and written."""
    connection = run.connection
    people, orders, stage = _file_people, _file_orders, _order_stage
    for table in (people, orders):
        connection.exec_driver_sql(f"ANALYZE {table.name}")
    fields = ["external_id", "email", "placed_at", "amount", "currency"]
    last_rows = (
        sa.select(*(orders.c[name] for name in fields))
        .ext(distinct_on(orders.c.external_id))
        .order_by(orders.c.external_id, orders.c.seq.desc())
    )
    connection.execute(sa.insert(stage).from_select(fields, last_rows))
    connection.exec_driver_sql(f"ANALYZE {stage.name}")
    _stage_merged_people(run)
    _score_newcomers(run)
    _write_staged_people(run)
    changed = _record_changes(run, source)
    if changed:
        _write_staged_orders(run, source)
        run.written += changed
        _analyse_as_it_grows(run, _orders, run.written)


def _score_newcomers(run: _Run) -> None:
    """PostgreSQL: the scores of the staged people who are new to Winback, as the recompute
    after the commit will give them (scoring.provisional_scores), so that they are created with
    them instead of being written again by it."""
    stage = _customer_stage
    new = ~sa.exists().where(_customers.c.email == stage.c.email)
    newcomers = sa.select(stage.c.last_purchase_at, stage.c.orders_count, stage.c.total_spent).where(
        new, stage.c.last_purchase_at.is_not(None)
    )
    count = run.connection.execute(sa.select(sa.func.count()).select_from(newcomers.subquery())).scalar_one()
    stored = run.connection.execute(sa.select(sa.func.count()).where(scoring.scorable())).scalar_one()
    if count * NEWCOMERS_WORTH_SCORING < count + stored:
        # Reading the cut points costs about a sixteenth of rewriting a row, per customer: for
        # a few newcomers among many customers, the recompute is left to score them.
        return
    scores = scoring.provisional_scores(run.connection, newcomers, count + stored, now=run.now)
    run.connection.execute(
        sa.update(stage).where(new).values({name: _on_stage(value) for name, value in scores.items()})
    )


def _on_stage(expression: sa.ColumnElement) -> sa.ColumnElement:
    """A scoring expression over the customers' columns, over the customers stage instead: a
    newcomer is neither erased nor (yet) anything but active."""

    def replace(element, **_):
        if isinstance(element, sa.Column) and element.table is _customers:
            if element.name in _customer_stage.c:
                return _customer_stage.c[element.name]
            if element.name == "status":
                return sa.literal(_ACTIVE)
            if element.name == "erased_at":
                return sa.null()
            raise LookupError(f"scoring reads customers.{element.name}, which the stage lacks")
        return None

    return replacement_traverse(expression, {}, replace)


def _stage_merged_people(run: _Run) -> None:
    """PostgreSQL: one row per address of the file in the customers stage (see
    _write_whole_file), with the figures of its orders when they are in one currency."""
    people, orders, stage = _file_people, _order_stage, _customer_stage
    named = sa.or_(people.c.first_name != "", people.c.last_name != "")

    def first_named(column: sa.Column) -> sa.ColumnElement:
        ordered = sa.func.array_agg(column).aggregate_order_by(people.c.seq).filter(named)
        return sa.func.coalesce(ordered[1], "")

    merged = (
        sa.select(
            people.c.email,
            sa.func.min(people.c.email_hash).label("email_hash"),
            first_named(people.c.first_name).label("first_name"),
            first_named(people.c.last_name).label("last_name"),
            sa.case(
                (sa.func.bool_or(people.c.accepts_marketing.is_(False)), sa.false()),
                (sa.func.bool_or(people.c.accepts_marketing), sa.true()),
                else_=sa.null(),
            ).label("accepts_marketing"),
            sa.func.bool_or(people.c.suppressed).label("suppressed"),
        )
        .group_by(people.c.email)
        .subquery("merged")
    )
    figures = (
        sa.select(
            orders.c.email,
            sa.func.min(orders.c.placed_at).label("first_purchase_at"),
            sa.func.max(orders.c.placed_at).label("last_purchase_at"),
            sa.func.count().label("orders_count"),
            sa.func.sum(orders.c.amount).label("total_spent"),
            sa.func.min(orders.c.currency).label("currency"),
        )
        .group_by(orders.c.email)
        .having(sa.func.min(orders.c.currency) == sa.func.max(orders.c.currency))
        .subquery("figures")
    )
    columns = {
        "email": merged.c.email,
        "email_hash": merged.c.email_hash,
        "first_name": merged.c.first_name,
        "last_name": merged.c.last_name,
        "accepts_marketing": merged.c.accepts_marketing,
        "suppressed": merged.c.suppressed,
        "first_purchase_at": figures.c.first_purchase_at,
        "last_purchase_at": figures.c.last_purchase_at,
        "orders_count": figures.c.orders_count,
        "total_spent": figures.c.total_spent,
        "currency": figures.c.currency,
    }
    rows = sa.select(*columns.values()).select_from(
        merged.outerjoin(figures, figures.c.email == merged.c.email)
    )
    run.connection.execute(sa.insert(stage).from_select(list(columns), rows))
    run.connection.exec_driver_sql(f"ANALYZE {stage.name}")


def _upsert_orders_by_id(run: _Run, rows: list[tuple]) -> int:
    """SQLite: write one batch of orders straight from the file, each (source, order id,
    customer id, placed, amount, currency); returns how many orders were added or changed.

    The batch is first inserted with ON CONFLICT DO NOTHING, which adds the new orders and
    nothing else. Only when some were already stored (a re-import, or an order id the file lists
    again further on) do those go through the upsert, with a trigger that notes each order it
    changes. The trigger is there only for that statement: while SQLite has one on the table it
    costs every row written about three times the insert itself, new orders or not."""
    cursor = run.connection.connection.driver_connection.cursor()
    try:
        (last,) = cursor.execute(_LAST_ORDER_ID).fetchone()
        cursor.executemany(_order_insert_sql(), rows)
        added = cursor.rowcount
        if added == len(rows):
            return added
        if added:  # the new orders are those above the last id (see _CHANGE_TRIGGER)
            new = {external_id for (external_id,) in cursor.execute(_ORDERS_ADDED_SINCE, (last or 0,))}
            rows = [row for row in rows if row[1] not in new]
        cursor.execute(f"CREATE TEMP TRIGGER IF NOT EXISTS {_CHANGE_TRIGGER} {_CHANGE_TRIGGER_BODY}")
        try:
            cursor.executemany(_order_upsert_sql(), rows)
            return added + cursor.rowcount
        finally:
            cursor.execute(f"DROP TRIGGER IF EXISTS temp.{_CHANGE_TRIGGER}")
    finally:
        cursor.close()


_UPSERTED_COLUMNS = ("source", "external_id", "customer_id", "placed_at", "amount", "currency")
_CHANGEABLE = _UPSERTED_COLUMNS[2:]  # what a newer export can change in a stored order
_LAST_ORDER_ID = "SELECT max(id) FROM orders"
_ORDERS_ADDED_SINCE = "SELECT external_id FROM orders WHERE id > ?"


@functools.cache
def _order_insert_sql() -> str:
    """INSERT of one order that adds nothing when the order is already stored, for SQLite's
    driver (positional values in _UPSERTED_COLUMNS order)."""
    statement = sqlite_insert(_orders).values({name: sa.bindparam(name) for name in _UPSERTED_COLUMNS})
    return _positional(statement.on_conflict_do_nothing(index_elements=["source", "external_id"]))


@functools.cache
def _order_upsert_sql() -> str:
    """INSERT … ON CONFLICT DO UPDATE of one order, for SQLite's driver (positional values in
    _UPSERTED_COLUMNS order); the update happens only where something differs."""
    orders = _orders
    statement = sqlite_insert(orders).values({name: sa.bindparam(name) for name in _UPSERTED_COLUMNS})
    new = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=["source", "external_id"],
        set_={name: new[name] for name in _CHANGEABLE},
        where=sa.or_(*(orders.c[name] != new[name] for name in _CHANGEABLE)),
    )
    return _positional(statement)


def _positional(statement: sa.Insert) -> str:
    """The statement's SQL for SQLite's driver, its values in _UPSERTED_COLUMNS order."""
    compiled = statement.compile(dialect=sqlite_dialect())
    if tuple(compiled.positiontup or ()) != _UPSERTED_COLUMNS:
        raise RuntimeError(f"unexpected parameter order {compiled.positiontup}")
    return compiled.string


# SQLite: every order the import changes is noted in the changes table as it is changed. New
# orders are not: they are those with an id above the largest before the import (it holds the
# write lock, and SQLite gives a new row the largest id plus one), which costs nothing per row.
_CHANGE_TRIGGER = "winback_import_order_changed"
_CHANGE_TRIGGER_BODY = (
    "AFTER UPDATE ON main.orders BEGIN INSERT INTO winback_import_changes "
    "(customer_id, old_customer_id, is_new, order_id) "
    "VALUES (NEW.customer_id, OLD.customer_id, 0, NEW.id); END"
)


def _note_orders_before(run: _Run) -> None:
    """SQLite: the largest order id before the import, above which are its new orders."""
    if not run.postgresql:
        run.orders_before = run.connection.execute(sa.select(sa.func.max(_orders.c.id))).scalar() or 0


def _complete_customers(run: _Run) -> None:
    """What an orders file adds to customers Winback knew: a name where theirs is empty, an
    explicit no to marketing, and a yes where theirs is unknown. Names the customer already has
    are kept, and a no stays a no."""
    stage, customers = _customer_stage, _customers
    now = sa.literal(run.now, UTCDateTime)
    connection = run.connection
    connection.execute(
        sa.update(customers)
        .where(
            customers.c.email == stage.c.email,
            customers.c.first_name == "",
            customers.c.last_name == "",
            sa.or_(stage.c.first_name != "", stage.c.last_name != ""),
        )
        .values(first_name=stage.c.first_name, last_name=stage.c.last_name, updated_at=now)
    )
    said_no = sa.and_(stage.c.accepts_marketing.is_(False), customers.c.accepts_marketing.is_not(False))
    said_yes = sa.and_(stage.c.accepts_marketing.is_(True), customers.c.accepts_marketing.is_(None))
    connection.execute(
        sa.update(customers)
        .where(customers.c.email == stage.c.email, sa.or_(said_no, said_yes))
        .values(accepts_marketing=stage.c.accepts_marketing, updated_at=now)
    )


def _record_changes(run: _Run, source: str) -> int:
    """Note each staged order that is new or differs from the stored one; returns how many."""
    stage, customers = _order_stage, _customers
    stored = _orders.alias("stored")
    changes = (
        sa.select(customers.c.id, stored.c.customer_id, stored.c.id.is_(None))
        .select_from(
            stage.join(customers, customers.c.email == stage.c.email).outerjoin(
                stored, sa.and_(stored.c.source == source, stored.c.external_id == stage.c.external_id)
            )
        )
        .where(
            sa.or_(
                stored.c.id.is_(None),
                *(stored.c[name] != value for name, value in _staged_order_values().items()),
            )
        )
    )
    statement = sa.insert(_changed_orders).from_select(["customer_id", "old_customer_id", "is_new"], changes)
    return _rows_changed(run, statement)


def _staged_order_values() -> dict[str, sa.ColumnElement]:
    """PostgreSQL: what can change in a stored order, as the stage joined to customers has it."""
    stage = _order_stage
    return {"customer_id": _customers.c.id, **{name: stage.c[name] for name in _CHANGEABLE[1:]}}


def _write_staged_orders(run: _Run, source: str) -> None:
    """PostgreSQL: update the changed orders, then insert the new ones, each in one statement.

    Only imports write orders, one at a time (IMPORT_LOCK), so the stored orders are still those
    _record_changes compared the stage with: the new orders go in with a plain INSERT, which
    for a million of them costs about a fifth less than INSERT … ON CONFLICT, whose every row
    first probes the unique index for a conflict and then inserts."""
    stage, customers, orders, changes = _order_stage, _customers, _orders, _changed_orders
    any_new, any_updated = run.connection.execute(
        sa.select(sa.func.bool_or(changes.c.is_new), sa.func.bool_or(~changes.c.is_new))
    ).one()
    values = _staged_order_values()
    matching = sa.and_(orders.c.source == source, orders.c.external_id == stage.c.external_id)
    joined = customers.c.email == stage.c.email
    if any_updated:
        differs = sa.or_(*(orders.c[name] != value for name, value in values.items()))
        run.connection.execute(sa.update(orders).where(matching, joined, differs).values(values))
    if any_new:
        rows = (
            sa.select(sa.literal(source), stage.c.external_id, *values.values())
            .select_from(stage.join(customers, joined))
            .where(~sa.exists().where(matching))
        )
        run.connection.execute(sa.insert(orders).from_select(_UPSERTED_COLUMNS, rows))


def _count_orders(run: _Run, total: int) -> None:
    """The summary's counts, from the orders this import added or changed."""
    changes, connection = _changed_orders, run.connection
    if run.postgresql:  # a row per order written, new or changed
        changed, new = connection.execute(
            sa.select(sa.func.count(), sa.func.count().filter(changes.c.is_new))
        ).one()
    else:
        # The changes table holds the updates, an order once however often it changed; an order
        # this import added and a later batch changed again (the file lists it twice) is one new
        # order, as on PostgreSQL, which writes the whole file at once. New orders are the ids
        # above the largest before the import.
        updated = connection.execute(
            sa.select(sa.func.count(sa.distinct(changes.c.order_id))).where(
                changes.c.order_id <= run.orders_before
            )
        ).scalar_one()
        new = connection.execute(
            sa.select(sa.func.count()).where(_orders.c.id > run.orders_before)
        ).scalar_one()
        changed = updated + new
    summary = run.summary
    summary.imported = new
    summary.updated = changed - new
    summary.unchanged = total - changed


def _derive_figures(run: _Run) -> None:
    """First and last purchase, orders count, total spent and currency, from the orders of
    every customer whose orders this import changed: one UPDATE … FROM an aggregate.

    A customer who paid in more than one currency gets the currency of their latest order, and
    the total spent in that currency; the orders count counts every order."""
    changes, orders, customers = _changed_orders, _orders, _customers
    members = [
        sa.select(changes.c.customer_id),
        sa.select(changes.c.old_customer_id).where(changes.c.old_customer_id.is_not(None)),
    ]
    customer_id: sa.ColumnElement[int] = orders.c.customer_id
    whole_table = False
    if not run.postgresql:
        members.append(sa.select(orders.c.customer_id).where(orders.c.id > run.orders_before))
        if run.written * 4 >= run.orders_before + run.written:
            # Most of the table changed: one pass over it and a sort is about twice as fast as
            # walking the customer index and reading each order from it (`+ 0` rules it out).
            # The pass then serves every customer with orders: the figures of those this import
            # did not touch come out as they are stored (they always derive from their orders),
            # and the UPDATE writes only rows that differ; listing the touched ones would cost a
            # union of every changed order.
            customer_id = orders.c.customer_id + 0
            whole_table = True
    touched = sa.union(*members).subquery("touched")
    totals = (
        sa.select(
            customer_id.label("customer_id"),
            sa.func.min(orders.c.placed_at).label("first_purchase_at"),
            sa.func.max(orders.c.placed_at).label("last_purchase_at"),
            sa.func.count().label("orders_count"),
            sa.func.sum(orders.c.amount).label("total_spent"),
            sa.func.min(orders.c.currency).label("currency"),
            sa.func.max(orders.c.currency).label("other_currency"),
        )
        .where(sa.true() if whole_table else customer_id.in_(sa.select(touched.c.customer_id)))
        .group_by(customer_id)
        .subquery("totals")
    )
    # Nearly every customer pays in one currency; only the others need a second look.
    latest = orders.alias("latest")
    latest_currency = (
        sa.select(latest.c.currency)
        .where(latest.c.customer_id == totals.c.customer_id)
        # Two orders placed in the same second: the order id that sorts last (as the file writes
        # it) decides, not the order in which the database happened to store them.
        .order_by(latest.c.placed_at.desc(), latest.c.external_id.desc(), latest.c.id.desc())
        .limit(1)
        .correlate(totals)  # also where it sits inside spent_in_latest
        .scalar_subquery()
    )
    same = orders.alias("same")
    spent_in_latest = (
        sa.select(sa.func.sum(same.c.amount))
        .where(same.c.customer_id == totals.c.customer_id, same.c.currency == latest_currency)
        .correlate(totals)
        .scalar_subquery()
    )
    single = totals.c.currency == totals.c.other_currency
    ranked = sa.select(
        totals.c.customer_id,
        totals.c.first_purchase_at,
        totals.c.last_purchase_at,
        totals.c.orders_count,
        sa.case((single, totals.c.total_spent), else_=spent_in_latest).label("total_spent"),
        sa.case((single, totals.c.currency), else_=latest_currency).label("currency"),
    ).subquery("ranked")
    names = ("first_purchase_at", "last_purchase_at", "orders_count", "total_spent", "currency")
    now = sa.literal(run.now, UTCDateTime)
    run.connection.execute(
        sa.update(customers)
        .where(
            customers.c.id == ranked.c.customer_id,
            sa.or_(*(customers.c[name].is_distinct_from(ranked.c[name]) for name in names)),
        )
        .values({name: ranked.c[name] for name in names} | {"updated_at": now})
    )
    # Customers whose every order moved to another address have no purchases left.
    moved = (
        sa.select(changes.c.customer_id).where(changes.c.old_customer_id != changes.c.customer_id).limit(1)
    )
    if run.connection.execute(moved).first() is None:
        return
    run.connection.execute(
        sa.update(customers)
        .where(
            customers.c.id.in_(sa.select(touched.c.customer_id)),
            ~sa.exists().where(orders.c.customer_id == customers.c.id),
            sa.or_(customers.c.orders_count != 0, customers.c.last_purchase_at.is_not(None)),
        )
        .values(orders_count=0, total_spent=0, first_purchase_at=None, last_purchase_at=None, updated_at=now)
    )
