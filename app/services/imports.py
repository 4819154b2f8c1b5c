"""Importing CSV files into customers: streamed, validated row by row, written in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

import sqlalchemy as sa
from flask import current_app

from app.exceptions import InvalidInput, RowError, UnreadableFile
from app.extensions import db
from app.models import Customer, CustomerStatus, Suppression, SuppressionReason
from app.services import suppressions
from app.services.csvfiles import (
    CsvRows,
    clean_text,
    open_csv,
    parse_amount,
    parse_count,
    parse_datetime,
    parse_yes_no,
)
from app.services.customers import normalise_email

BATCH_SIZE = 1000

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
    "acceptsmarketing": "accepts_marketing",
    "acceptsemailmarketing": "accepts_marketing",
}

# Fields whose imported value replaces the stored one when the file has the column.
UPDATABLE = (
    "first_name",
    "last_name",
    "phone",
    "external_id",
    "first_purchase_at",
    "last_purchase_at",
    "orders_count",
    "total_spent",
    "accepts_marketing",
)


@dataclass
class ImportSummary:
    """What an import did: every count the summary line reports, and each refused cell."""

    file: str
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    suppressed: int = 0
    errors: list[RowError] = field(default_factory=list)
    committed: bool = False

    def line(self) -> str:
        """The one-line summary printed at the end of an import."""
        verdict = "" if self.committed else " (nothing was saved)"
        suppressed = f"; {self.suppressed} suppressed (no marketing consent)" if self.suppressed else ""
        return (
            f"{self.file}: {self.imported} imported, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.skipped} skipped{suppressed}{verdict}"
        )


def import_customers(
    stream: IO[bytes],
    name: str,
    *,
    now: datetime,
    strict: bool = False,
    day_first: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import a customers CSV: valid rows are upserted by normalised email, bad rows skipped and
    reported by line and column. With strict, any bad row means nothing is saved.

    Raises UnreadableFile when the file cannot be read or has no email column."""
    table = open_csv(stream, name)
    summary = _import_rows(table, name, now=now, day_first=day_first, progress=progress)
    if strict and summary.errors:
        db.session.rollback()
        return summary
    db.session.commit()
    summary.committed = True
    return summary


def _import_rows(
    table: CsvRows,
    name: str,
    *,
    now: datetime,
    day_first: bool,
    progress: Callable[[int], None] | None,
) -> ImportSummary:
    """Parse and write every row in batches, inside the caller's transaction."""
    mapping = {column: CUSTOMER_COLUMNS[column] for column in table.columns if column in CUSTOMER_COLUMNS}
    if "email" not in mapping.values():
        raise UnreadableFile(
            f"{name}: line 1: no email column (found: {', '.join(table.columns) or 'nothing'})"
        )
    present = set(mapping.values())
    if "name" in present:
        present |= {"first_name", "last_name"}
    summary = ImportSummary(file=name)
    timezone = current_app.config["TIMEZONE"]
    batch: dict[str, dict] = {}
    try:
        for line, raw in table.rows:
            record = _parse_customer_row(raw, mapping, name, line, day_first, timezone, summary)
            if record is not None:
                batch[record["email"]] = record  # a later row for the same address wins
            if len(batch) >= BATCH_SIZE:
                _write_batch(batch.values(), present, summary, now)
                if progress:
                    progress(len(batch))
                batch = {}
        if batch:
            _write_batch(batch.values(), present, summary, now)
            if progress:
                progress(len(batch))
    except BaseException:
        db.session.rollback()
        raise
    return summary


def _parse_customer_row(
    raw: dict[str, str],
    mapping: dict[str, str],
    file: str,
    line: int,
    day_first: bool,
    timezone: str,
    summary: ImportSummary,
) -> dict | None:
    """One row to a dict of fields, or None after recording why it was refused."""
    values = {field_name: raw.get(column, "") for column, field_name in mapping.items()}
    reverse = {field_name: column for column, field_name in mapping.items()}
    record: dict = {}
    try:
        current = "email"
        record["email"] = normalise_email(values["email"])
        for current, parse in _PARSERS.items():
            if current in values and values[current].strip():
                record[current] = parse(values[current], day_first, timezone)
        if "name" in record and not record.get("first_name") and not record.get("last_name"):
            first, _, last = record.pop("name").partition(" ")
            record["first_name"], record["last_name"] = first, last
        record.pop("name", None)
    except (InvalidInput, ValueError) as exc:
        summary.skipped += 1
        summary.errors.append(
            RowError(file, line, reverse.get(current, current), values.get(current, ""), str(exc))
        )
        return None
    return record


def _text(limit: int):
    return lambda value, _day_first, _tz: clean_text(value, limit)


_PARSERS = {
    "first_name": _text(100),
    "last_name": _text(100),
    "name": _text(200),
    "phone": _text(40),
    "external_id": _text(100),
    "first_purchase_at": lambda v, day_first, tz: parse_datetime(v, day_first=day_first, timezone=tz),
    "last_purchase_at": lambda v, day_first, tz: parse_datetime(v, day_first=day_first, timezone=tz),
    "orders_count": lambda v, _d, _t: parse_count(v),
    "total_spent": lambda v, _d, _t: parse_amount(v),
    "accepts_marketing": lambda v, _d, _t: parse_yes_no(v),
}


def _write_batch(records: Iterable[dict], present: set[str], summary: ImportSummary, now: datetime) -> None:
    """Insert new customers and update changed ones: one SELECT and two bulk statements."""
    records = list(records)
    emails = [record["email"] for record in records]
    existing = {
        row.email: row
        for row in db.session.execute(sa.select(Customer.__table__).where(Customer.email.in_(emails)))
    }
    inserts, updates = [], []
    for record in records:
        row = existing.get(record["email"])
        if row is None:
            inserts.append(
                {
                    "email": record["email"],
                    "email_hash": suppressions.email_hash(record["email"]),
                    "first_name": record.get("first_name", ""),
                    "last_name": record.get("last_name", ""),
                    "phone": record.get("phone", ""),
                    "external_id": record.get("external_id"),
                    "preferred_contact": "email",
                    "locale": None,
                    "accepts_marketing": record.get("accepts_marketing"),
                    "first_purchase_at": record.get("first_purchase_at"),
                    "last_purchase_at": record.get("last_purchase_at"),
                    "orders_count": record.get("orders_count", 0),
                    "total_spent": record.get("total_spent", 0),
                    "currency": "GBP",
                    "status": CustomerStatus.ACTIVE.value,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            continue
        changes = {
            name: record[name]
            for name in UPDATABLE
            if name in present and name in record and getattr(row, name) != record[name]
        }
        if changes:
            updates.append({"id": row.id, **changes, "updated_at": now})
        else:
            summary.unchanged += 1
    if inserts:
        db.session.execute(sa.insert(Customer.__table__), inserts)
        summary.imported += len(inserts)
    for change in updates:  # rows differ in which columns changed
        db.session.execute(
            sa.update(Customer.__table__).where(Customer.__table__.c.id == change.pop("id")).values(change)
        )
    summary.updated += len(updates)
    for record in records:
        explicit_no = record.get("accepts_marketing") is False
        if explicit_no and suppressions.suppress(record["email"], SuppressionReason.NO_CONSENT, now):
            summary.suppressed += 1
    # A suppressed address stays suppressed: an import never sets a status back to active.
    db.session.execute(
        sa.update(Customer.__table__)
        .where(
            Customer.__table__.c.email.in_(emails),
            Customer.__table__.c.status == CustomerStatus.ACTIVE.value,
            Customer.__table__.c.email_hash.in_(_suppressed_hashes(emails)),
        )
        .values(status=CustomerStatus.SUPPRESSED.value)
    )


def _suppressed_hashes(emails: list[str]):
    return sa.select(Suppression.email_hash).where(
        Suppression.email_hash.in_([suppressions.email_hash(email) for email in emails])
    )
