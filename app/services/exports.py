"""The customers CSV: one writer for the staff download and `flask customers export FILE`.

Cells that a spreadsheet would run as a formula are neutralised, quoting follows RFC 4180 (the
csv module's defaults: CRLF line ends, fields with commas, quotes or line breaks quoted), money is
in decimal major units and times in ISO 8601 (UTC). Exports carry no tokens or link references."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from app.models import Customer
from app.services.csvfiles import safe_cell
from app.services.customers import CustomerFilters, stream_customers

COLUMNS = (
    "email",
    "name",
    "first_purchase",
    "last_purchase",
    "orders",
    "total_spent",
    "recency_days",
    "r",
    "f",
    "m",
    "segment",
    "priority",
    "status",
)
CHUNK_CHARS = 64 * 1024

_SELECTED = [
    Customer.email,
    Customer.first_name,
    Customer.last_name,
    Customer.first_purchase_at,
    Customer.last_purchase_at,
    Customer.orders_count,
    Customer.total_spent,
    Customer.recency_score,
    Customer.frequency_score,
    Customer.monetary_score,
    Customer.segment,
    Customer.win_back_priority,
    Customer.status,
]


def _money(minor_units: int | None) -> str:
    return "" if minor_units is None else f"{Decimal(minor_units).scaleb(-2):.2f}"


def _time(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(timespec="seconds")


def _number(value: int | None) -> str:
    return "" if value is None else str(value)


def _cells(row: sa.Row, now: datetime) -> list[str]:
    name = " ".join(part for part in (row.first_name, row.last_name) if part)
    recency = None if row.last_purchase_at is None else max((now - row.last_purchase_at).days, 0)
    return [
        row.email,
        name,
        _time(row.first_purchase_at),
        _time(row.last_purchase_at),
        str(row.orders_count),
        _money(row.total_spent),
        _number(recency),
        _number(row.recency_score),
        _number(row.frequency_score),
        _number(row.monetary_score),
        row.segment or "",
        _money(row.win_back_priority),
        row.status.value,
    ]


class CustomerCsv:
    """The customers CSV for some filters, produced in chunks of text as it is read from the
    database; `rows` counts the customers written so far."""

    def __init__(self, filters: CustomerFilters, *, now: datetime) -> None:
        self.filters = filters
        self.now = now
        self.rows = 0

    def __iter__(self) -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([safe_cell(column) for column in COLUMNS])
        for row in stream_customers(self.filters, _SELECTED, now=self.now):
            writer.writerow([safe_cell(cell) for cell in _cells(row, self.now)])
            self.rows += 1
            if buffer.tell() >= CHUNK_CHARS:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()


def export_to_file(path: Path, filters: CustomerFilters, *, now: datetime) -> int:
    """Write the customers CSV to a file (UTF-8); returns how many customers it holds."""
    export = CustomerCsv(filters, now=now)
    with path.open("w", encoding="utf-8", newline="") as handle:
        for chunk in export:
            handle.write(chunk)
    return export.rows
