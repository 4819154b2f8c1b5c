"""Reading CSV files the way shops export them: BOM, delimiter, loose headers, dates, amounts."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal, InvalidOperation
from typing import IO
from zoneinfo import ZoneInfo

from app.exceptions import InvalidInput, RowError, UnreadableFile

DELIMITERS = ",;\t"
# Read this much at a time: large enough that decoding and splitting stay in C, small enough
# that memory does not grow with the file.
CHUNK_BYTES = 1 << 20
# A line longer than this is not a CSV row; refusing it keeps memory bounded.
MAX_LINE_BYTES = 16 << 20
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def header_key(name: str) -> str:
    """Headers match without regard to case, spaces, underscores or hyphens."""
    return re.sub(r"[\s_\-]+", "", name.strip().lstrip("\ufeff")).lower()


class CsvRows:
    """An open CSV file: its header keys and its rows, read as they are consumed.

    `values` yields (line number, list of cells) with the list as long as the header;
    `rows` yields (line number, {header key: cell}). Either can be read, once."""

    def __init__(
        self,
        name: str,
        columns: list[str],
        values: Iterator[tuple[int, list[str]]],
        *,
        delimiter: str = ",",
        header_lines: int = 1,
    ) -> None:
        self.name = name
        self.columns = columns
        self.values = values
        self.delimiter = delimiter
        self.header_lines = header_lines  # lines the header row takes (a quoted line break adds one)

    @property
    def rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        columns = self.columns
        return ((line, dict(zip(columns, cells, strict=False))) for line, cells in self.values)


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
    width = len(columns)
    padding = [""] * width

    def values() -> Iterator[tuple[int, list[str]]]:
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise UnreadableFile(f"{name}: line {reader.line_num}: {exc}") from exc
            if not "".join(cells).strip():
                continue  # an empty line
            if len(cells) < width:
                cells += padding[len(cells) :]
            yield reader.line_num, cells

    return CsvRows(
        name=name, columns=columns, values=values(), delimiter=delimiter, header_lines=reader.line_num
    )


def _decoded_lines(stream: IO[bytes], name: str) -> Iterator[str]:
    """The file's lines as text, each with its line ending. The bytes are read and decoded a
    chunk at a time; a byte that is not UTF-8 is named by its line."""
    lines_before = 0  # complete lines already handed out
    pending = b""
    first = True
    while True:
        chunk = stream.read(CHUNK_BYTES)
        data = pending + chunk
        if first:
            if chunk and len(data) < len(codecs.BOM_UTF8):
                pending = data
                continue
            data = data.removeprefix(codecs.BOM_UTF8)
            first = False
        end = data.rfind(b"\n") + 1 if chunk else len(data)
        if end == 0 and chunk:
            if len(data) > MAX_LINE_BYTES:
                raise UnreadableFile(f"{name}: line {lines_before + 1}: longer than {MAX_LINE_BYTES} bytes")
            pending = data
            continue
        piece, pending = data[:end], data[end:]
        try:
            text = piece.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = lines_before + piece.count(b"\n", 0, exc.start) + 1
            raise UnreadableFile(
                f"{name}: line {line}: not UTF-8 text ({exc.reason}); save the file as UTF-8"
            ) from exc
        lines_before += piece.count(b"\n")
        # newline="\n": lines end at LF only, as the csv module expects; a CR before it stays
        # for the csv module to strip.
        yield from io.StringIO(text, newline="\n")
        if not chunk:
            return


def clean_text(value: str, limit: int) -> str:
    """Strip, remove control characters, and refuse what is longer than the column holds."""
    # Most cells are printable: checking that is cheaper than the substitution.
    value = value.strip() if value.isprintable() else _CONTROL.sub("", value).strip()
    if len(value) > limit:
        raise ValueError(f"longer than {limit} characters")
    return value


_ZONE_SUFFIX = re.compile(r"\s*(?:UTC|GMT|Z)$|\s+(?=[+-]\d\d:?\d\d$)", re.IGNORECASE)


def parse_datetime(value: str, *, day_first: bool = False, timezone: str | tzinfo = "UTC") -> datetime:
    """ISO 8601 (date or date and time, with or without a zone: `Z`, `+01:00`, ` +0100`,
    ` UTC`); with day_first, 03/04/2025 is 3 April. Naive times are taken in the business's
    TIMEZONE; the result is UTC."""
    value = value.strip()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = _parse_other(value, day_first)
    if parsed.tzinfo is None:
        zone = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
        parsed = parsed.replace(tzinfo=zone)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # the first or last day of year 1 or 9999, moved to UTC
        raise ValueError("not a date (out of range)") from exc


def _parse_other(value: str, day_first: bool) -> datetime:
    """Dates that fromisoformat refuses: a zone written apart (` +0000`, ` UTC`, as Shopify
    writes them) or slashed dates with a four-digit year."""
    if not value:
        raise ValueError("a date is required")
    joined, found = _ZONE_SUFFIX.subn(lambda match: "+00:00" if match.group().strip() else "", value)
    if found:
        try:
            return datetime.fromisoformat(joined)
        except ValueError:
            pass
    match = re.fullmatch(r"(\d{1,2})[/.](\d{1,2})[/.](\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?", value)
    if not match:
        raise ValueError("not a date (expected ISO 8601, e.g. 2025-03-04)")
    first, second, year = int(match[1]), int(match[2]), int(match[3])
    day, month = (first, second) if day_first else (second, first)
    try:
        clock = time(int(match[4] or 0), int(match[5] or 0), int(match[6] or 0))
        return datetime.combine(date(year, month, day), clock)
    except ValueError as exc:
        raise ValueError(f"not a date ({exc})") from exc


_AMOUNT_JUNK = re.compile(r"[^\d.,\-]")
# The usual `1234.50`; order_batches checks whole columns against the same pattern.
PLAIN_AMOUNT_PATTERN = r"(\d{1,11})(?:\.(\d\d?))?"
_PLAIN_AMOUNT = re.compile(PLAIN_AMOUNT_PATTERN)
# Larger amounts are refused: no real order comes near, and sums of them must fit 64 bits.
MAX_AMOUNT = 10**13  # minor units: 100,000,000,000.00
MAX_COUNT = 10**9


def parse_amount(value: str) -> int:
    """An amount with optional currency symbol and thousands separators, in minor units."""
    plain = _PLAIN_AMOUNT.fullmatch(value)
    if plain:  # the usual `1234.50`, without the cost of Decimal
        whole, fraction = plain.groups()
        return int(whole) * 100 + (int(fraction.ljust(2, "0")) if fraction else 0)
    text = _AMOUNT_JUNK.sub("", value.strip())
    if not text or not re.search(r"\d", text):
        raise ValueError("not an amount")
    last_comma, last_dot = text.rfind(","), text.rfind(".")
    if last_comma > last_dot and len(text) - last_comma - 1 in (1, 2):
        text = text.replace(".", "").replace(",", ".")  # 1.234,50
    else:
        text = text.replace(",", "")  # 1,234.50
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError("not an amount") from exc
    if not amount.is_finite() or abs(amount) * 100 >= MAX_AMOUNT:
        raise ValueError("not an amount (too large)")
    return int((amount * 100).to_integral_value())


def parse_count(value: str) -> int:
    """A whole number of at least zero."""
    text = value.strip().replace(",", "")
    if not text.isascii() or not text.isdigit():
        raise ValueError("not a whole number")
    if len(text) > 10 or int(text) > MAX_COUNT:
        raise ValueError("not a whole number (too large)")
    return int(text)


_CURRENCY = re.compile(r"[A-Z]{3}")


def parse_currency(value: str) -> str:
    """An ISO 4217 currency code such as GBP or EUR, in capitals."""
    code = value.strip().upper()
    if not code:
        raise ValueError("a currency code is required")
    if not _CURRENCY.fullmatch(code):
        raise ValueError("not a currency code (three letters, e.g. GBP)")
    return code


YES_WORDS = frozenset({"yes", "y", "true", "1", "subscribed", "opted_in", "optedin"})
NO_WORDS = frozenset(
    {"no", "n", "false", "0", "unsubscribed", "not_subscribed", "notsubscribed", "opted_out"}
)


def parse_yes_no(value: str) -> bool | None:
    """yes/no in the ways exports write it; empty is unknown (None)."""
    text = value.strip().lower().replace(" ", "_")
    if not text:
        return None
    if text in YES_WORDS:
        return True
    if text in NO_WORDS:
        return False
    raise ValueError("expected yes or no")


_LANGUAGE_TAG = re.compile(r"([A-Za-z]{2,3})(?:[-_]([A-Za-z]{4}))?(?:[-_]([A-Za-z]{2}|\d{3}))?")


def parse_locale(value: str) -> str:
    """A language as shops export it (`de`, `de_AT`, `de-at`, `zh-Hant-TW`), as a language tag
    (`de`, `de-AT`, `zh-Hant-TW`) of at most 10 characters."""
    match = _LANGUAGE_TAG.fullmatch(value.strip())
    if not match:
        raise ValueError("not a language code (e.g. de or de-AT)")
    language, script, region = match.groups()
    tag = "-".join(
        part for part in (language.lower(), script and script.title(), region and region.upper()) if part
    )
    if len(tag) > 10:
        raise ValueError("not a language code (e.g. de or de-AT)")
    return tag


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(text: str) -> str:
    """A cell a spreadsheet will show as text: one that could start a formula gets a leading '."""
    return f"'{text}" if text.startswith(_FORMULA_START) else text


class ErrorReport:
    """Bad rows written as CSV (line, column, value, reason) as they are found, quoted per RFC
    4180 and safe to open in a spreadsheet."""

    HEADER = ("line", "column", "value", "reason")

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._writer = csv.writer(stream)
        self._writer.writerow(self.HEADER)
        self._start = stream.tell() if stream.seekable() else None

    def rewind(self) -> None:
        """Forget every row written so far (the import is starting over); needs a seekable stream."""
        self._stream.seek(self._start)
        self._stream.truncate()

    def add(self, error: RowError) -> None:
        self._writer.writerow(
            [error.line, safe_cell(error.column), safe_cell(error.value), safe_cell(error.reason)]
        )


def column_positions(
    table: CsvRows,
    recognised: dict[str, str],
    fields: tuple[str, ...],
    required: tuple[str, ...],
    mapping: dict[str, str] | None,
) -> dict[str, int]:
    """Each field's column index: recognised headers (the rightmost wins), then the mapping's
    choices, which replace whatever was recognised for that field or in that column."""
    positions = {}
    for index, column in enumerate(table.columns):
        if column in recognised:
            positions[recognised[column]] = index
    by_key = {header_key(name): name for name in fields}
    for header, wanted in (mapping or {}).items():
        field_name = by_key.get(header_key(wanted))
        if field_name is None:
            raise InvalidInput(
                f"mapping {header!r} to {wanted!r}: there is no field {wanted!r}; "
                f"the fields are {', '.join(fields)}"
            )
        key = header_key(header)
        if key not in table.columns:
            raise UnreadableFile(
                f"{table.name}: line 1: no column {header!r} to map to {field_name} "
                f"(found: {', '.join(table.columns) or 'nothing'})"
            )
        index = len(table.columns) - 1 - table.columns[::-1].index(key)
        positions = {name: at for name, at in positions.items() if at != index}
        positions[field_name] = index
    missing = [name for name in required if name not in positions]
    if missing:
        names = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} or {missing[-1]}"
        raise UnreadableFile(
            f"{table.name}: line 1: no {names} column (found: {', '.join(table.columns) or 'nothing'})"
        )
    return positions


def parse_mapping(entries: Iterable[str]) -> dict[str, str]:
    """Column mappings as staff write them, one `COLUMN=FIELD` each ("E-Mail=email"), as
    {column: field}. Blank entries are ignored; anything else without both sides is refused."""
    mapping = {}
    for number, entry in enumerate(entries, start=1):
        if not entry.strip():
            continue
        column, equals, field_name = entry.rpartition("=")
        if not equals or not column.strip() or not field_name.strip():
            raise InvalidInput(
                f"column names, line {number}: {entry.strip()!r} is not COLUMN=FIELD, "
                'e.g. "Order Number=order_id"'
            )
        mapping[column.strip()] = field_name.strip()
    return mapping
