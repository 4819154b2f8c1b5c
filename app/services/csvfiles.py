"""Reading CSV files the way shops export them: BOM, delimiter, loose headers, dates, amounts."""

from __future__ import annotations

import codecs
import csv
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import IO
from zoneinfo import ZoneInfo

from app.exceptions import UnreadableFile

DELIMITERS = ",;\t"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def header_key(name: str) -> str:
    """Headers match without regard to case, spaces, underscores or hyphens."""
    return re.sub(r"[\s_\-]+", "", name.strip().lstrip("\ufeff")).lower()


@dataclass
class CsvRows:
    """An open CSV file: its header keys and an iterator of (line number, row dict)."""

    name: str
    columns: list[str]
    rows: Iterator[tuple[int, dict[str, str]]]


def open_csv(stream: IO[bytes], name: str) -> CsvRows:
    """Read the header row of a CSV (UTF-8, BOM optional) and detect its delimiter. Rows are
    read as they are consumed: constant memory whatever the file's size."""
    lines = _decoded_lines(stream, name)
    first_line = next(lines, "")
    if not first_line.strip():
        raise UnreadableFile(f"{name}: the file is empty or has no header row")
    delimiter = max(DELIMITERS, key=first_line.count)
    reader = csv.reader(itertools.chain([first_line], lines), delimiter=delimiter)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise UnreadableFile(f"{name}: line 1: {exc}") from exc
    columns = [header_key(column) for column in header]

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise UnreadableFile(f"{name}: line {reader.line_num}: {exc}") from exc
            if not any(value.strip() for value in values):
                continue
            yield reader.line_num, dict(zip(columns, values, strict=False))

    return CsvRows(name=name, columns=columns, rows=rows())


def _decoded_lines(stream: IO[bytes], name: str) -> Iterator[str]:
    """The file's lines as text, decoded one by one so that bad bytes are named by line."""
    for number, raw in enumerate(stream, start=1):
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnreadableFile(
                f"{name}: line {number}: not UTF-8 text ({exc.reason}); save the file as UTF-8"
            ) from exc


def clean_text(value: str, limit: int) -> str:
    """Strip, remove control characters, and refuse what is longer than the column holds."""
    value = _CONTROL.sub("", value).strip()
    if len(value) > limit:
        raise ValueError(f"longer than {limit} characters")
    return value


def parse_datetime(value: str, *, day_first: bool = False, timezone: str = "UTC") -> datetime:
    """ISO 8601 (date or date and time); with day_first, 03/04/2025 is 3 April. Naive times are
    taken in the business's TIMEZONE; the result is UTC."""
    value = value.strip()
    try:
        parsed = datetime.fromisoformat(value.replace(" UTC", "+00:00"))
    except ValueError:
        parsed = _parse_slashed(value, day_first)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(timezone))
    return parsed.astimezone(UTC)


def _parse_slashed(value: str, day_first: bool) -> datetime:
    match = re.fullmatch(r"(\d{1,2})[/.](\d{1,2})[/.](\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?", value)
    if not match:
        raise ValueError("not a date (expected ISO 8601, e.g. 2025-03-04)")
    first, second, year = int(match[1]), int(match[2]), int(match[3])
    day, month = (first, second) if day_first else (second, first)
    clock = time(int(match[4] or 0), int(match[5] or 0), int(match[6] or 0))
    try:
        return datetime.combine(date(year, month, day), clock)
    except ValueError as exc:
        raise ValueError(f"not a date ({exc})") from exc


_AMOUNT_JUNK = re.compile(r"[^\d.,\-]")


def parse_amount(value: str) -> int:
    """An amount with optional currency symbol and thousands separators, in minor units."""
    text = _AMOUNT_JUNK.sub("", value.strip())
    if not text or not re.search(r"\d", text):
        raise ValueError("not an amount")
    last_comma, last_dot = text.rfind(","), text.rfind(".")
    if last_comma > last_dot and len(text) - last_comma - 1 in (1, 2):
        text = text.replace(".", "").replace(",", ".")  # 1.234,56
    else:
        text = text.replace(",", "")  # 1,234.56
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError("not an amount") from exc
    return int((amount * 100).to_integral_value())


def parse_count(value: str) -> int:
    """A whole number of at least zero."""
    text = value.strip().replace(",", "")
    if not text.isdigit():
        raise ValueError("not a whole number")
    return int(text)


_YES = {"yes", "y", "true", "1", "subscribed", "opted_in", "optedin"}
_NO = {"no", "n", "false", "0", "unsubscribed", "not_subscribed", "notsubscribed", "opted_out"}


def parse_yes_no(value: str) -> bool | None:
    """yes/no in the ways exports write it; empty is unknown (None)."""
    text = value.strip().lower().replace(" ", "_")
    if not text:
        return None
    if text in _YES:
        return True
    if text in _NO:
        return False
    raise ValueError("expected yes or no")
