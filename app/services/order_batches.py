"""Reading an orders file in compiled batches: pyarrow splits the CSV and checks the usual cells
column by column; every row those quick checks do not accept goes to the per-row parser, which
accepts it or says exactly why not, by line and column.

The quick checks accept only cells whose meaning is beyond doubt (a plain address, a
`2025-03-04T10:15:00Z` time, a `1234.50` total, a three-letter currency, text with nothing to
strip), and give the value the per-row parser would give: the tests hold the two to the same
answers. Rows that belong together (consecutive rows with one order id, as Shopify writes an
order's line items) and anything the compiled reader refuses (a row with too few or too many
cells, bytes that are not UTF-8) leave the quick path, so messages and merging stay exact."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from email_validator import SPECIAL_USE_DOMAIN_NAMES

from app.services.csvfiles import NO_WORDS, PLAIN_AMOUNT_PATTERN, YES_WORDS, CsvRows
from app.services.customers import PLAIN_EMAIL_PATTERN

# Bytes per batch: large enough that the per-batch work is small beside the per-row work, small
# enough that memory does not grow with the file. PostgreSQL joins each batch to customers and
# orders by hashing them whole, so it gets batches twice as large (about as many rows as
# imports.POSTGRESQL_BATCH_SIZE).
BLOCK_BYTES = 4 << 20

# A cell clean_text returns unchanged: no control character (tab, CR and LF are kept), nothing
# str.strip() would take off either end.
_EDGE = r"[^\x00-\x20\x7f\x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
_MIDDLE = r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_CLEAN_TEXT = f"^{_EDGE}(?:{_MIDDLE}*{_EDGE})?$"
# Arrow's regular expressions (RE2) read `\d` as an ASCII digit only: a subset of what Python's
# reads, so whatever these accept the per-row parser accepts too.
_PLAIN_EMAIL = f"^{PLAIN_EMAIL_PATTERN}$"  # on the lower-cased cell, as fast_normalise_email
_SPECIAL_USE_END = r"\.(?:" + "|".join(SPECIAL_USE_DOMAIN_NAMES) + ")$"
# Year 0001-9999, month, day 01-31, hour, minute and second in range.
_UTC_SECONDS = (
    r"^(?:[1-9]\d{3}|0[1-9]\d\d|00[1-9]\d|000[1-9])-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    r"T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\dZ$"
)
_PLAIN_AMOUNT = f"^{PLAIN_AMOUNT_PATTERN}$"
_CURRENCY = r"^[A-Za-z]{3}$"


class Irregular(Exception):
    """The compiled reader cannot read this file row for row as the csv module does (a row with
    too few or too many cells, text that is not UTF-8): the file goes to the per-row reader."""


@dataclass
class QuickRows:
    """Orders the quick checks accepted, column by column, in file order, with the positions of
    the rows they left to the per-row parser (`slow`, with their lines and cells)."""

    order_ids: pa.Array  # text, as clean_text leaves it
    emails: pa.Array  # normalised
    placed_at: pa.Array  # as the database is given it (see read)
    amounts: pa.Array  # minor units
    currencies: pa.Array  # capitals
    first_names: pa.Array
    last_names: pa.Array
    consents: pa.Array | None  # True, False or null (unknown); None without such a column
    accepted: list[bool] | None  # None: every row; else which rows the checks accepted
    slow: dict[int, tuple[int, list[str]]]  # row index -> (line, cells) for the per-row parser

    def orders(self) -> list[tuple[str, str, object, int, str]]:
        """(order id, address, placed, amount, currency) of every order, for a batch the checks
        accepted whole: an order listed twice takes its last row, in the place of its first (as
        a dict keyed by order id keeps them, row by row)."""
        columns = [self.order_ids, self.emails, self.placed_at, self.amounts, self.currencies]
        rows = len(self.order_ids)
        if pc.count_distinct(self.order_ids).as_py() < rows:
            spans = pa.table({"id": self.order_ids, "row": _positions(rows)})
            spans = spans.group_by("id", use_threads=False).aggregate([("row", "min"), ("row", "max")])
            kept = pc.take(spans.column("row_max"), pc.sort_indices(spans.column("row_min")))
            columns = [pc.take(column, kept) for column in columns]
        return list(zip(*(column.to_pylist() for column in columns), strict=True))

    def people(self, staged: dict[str, int], consent_flags: dict[bool | None, int]) -> dict[str, list]:
        """The batch's people to stage, as the per-row loop of imports._write_order_rows finds
        them: each address whose rows add something to what was staged for it (`staged`, flags:
        1 staged, 2 with a name, and consent_flags of an answer), with the name of the first
        such row that has one, and no to marketing when any row says no (else yes when any says
        yes). Returns {address: [first name, last name, consent]}."""
        emails, first_names, last_names = self.emails, self.first_names, self.last_names
        rows = len(emails)
        addresses = pc.unique(emails)
        at = pc.index_in(emails, value_set=addresses)
        flags = pc.take(pa.array([staged.get(email, 0) for email in addresses.to_pylist()], pa.int64()), at)
        named = pc.or_(pc.not_equal(first_names, ""), pc.not_equal(last_names, ""))
        if self.consents is None:
            said_no = said_yes = pa.repeat(False, rows)
        else:
            said_no = pc.fill_null(pc.equal(self.consents, False), False)
            said_yes = pc.fill_null(pc.equal(self.consents, True), False)
        wanted = pc.add(pc.multiply(pc.cast(named, pa.int64()), 2), 1)
        wanted = pc.add(wanted, pc.multiply(pc.cast(said_no, pa.int64()), consent_flags[False]))
        wanted = pc.add(wanted, pc.multiply(pc.cast(said_yes, pa.int64()), consent_flags[True]))
        needed = pc.not_equal(pc.bit_wise_and(wanted, pc.bit_wise_not(flags)), 0)
        if not _any(needed):
            return {}
        unnamed = rows  # beyond every row: no row of this address has a name
        table = pa.table(
            {
                "email": emails,
                "named_row": pc.if_else(named, _positions(rows), unnamed),
                "no": said_no,
                "yes": said_yes,
            }
        ).filter(needed)
        groups = table.group_by("email", use_threads=False).aggregate(
            [("named_row", "min"), ("no", "any"), ("yes", "any")]
        )
        first_row = groups.column("named_row_min")
        has_name = pc.less(first_row, unnamed)
        taken = pc.if_else(has_name, first_row, 0)
        firsts = pc.if_else(has_name, pc.take(first_names, taken), "").to_pylist()
        lasts = pc.if_else(has_name, pc.take(last_names, taken), "").to_pylist()
        if self.consents is None:
            answers = [None] * len(groups)
        else:
            unknown = pa.scalar(None, pa.bool_())
            yes_or_unknown = pc.if_else(groups.column("yes_any"), True, unknown)
            answers = pc.if_else(groups.column("no_any"), False, yes_or_unknown).to_pylist()
        emails_of = groups.column("email").to_pylist()
        return {
            email: [first, last, answer]
            for email, first, last, answer in zip(emails_of, firsts, lasts, answers, strict=True)
        }


@dataclass
class SlowRows:
    """Rows for the per-row parser and its grouping of consecutive rows of one order."""

    rows: list[tuple[int, list[str]]]  # (line, cells)


def usable(stream: IO[bytes], report: IO[str] | None) -> bool:
    """Whether an import can try the compiled reader: it reads the file from its start, and
    starts over with the per-row reader when the file turns out irregular, which needs both the
    file and the error report to go back."""
    try:
        return stream.seekable() and (report is None or report.seekable())
    except (AttributeError, ValueError):
        return False


def read(
    stream: IO[bytes], table: CsvRows, positions: dict[str, int], *, sqlite_times: bool
) -> Iterator[QuickRows | SlowRows]:
    """The file's rows after its header, batch by batch, in order: QuickRows where no two
    consecutive rows share an order id, SlowRows where some do. Each batch waits for the next,
    so that an order's rows are never split between batches. Quick times are
    given as SQLite stores them (sqlite_times) or as written, for PostgreSQL to read.

    Raises Irregular as soon as the compiled reader refuses a row."""
    width = len(table.columns)
    names = [f"c{index}" for index in range(width)]
    stream.seek(0)

    def refuse(_row) -> str:
        return "error"

    try:
        reader = pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(
                skip_rows=table.header_lines,
                column_names=names,
                block_size=BLOCK_BYTES if sqlite_times else 2 * BLOCK_BYTES,
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=table.delimiter,
                newlines_in_values=True,
                ignore_empty_lines=False,
                invalid_row_handler=refuse,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except StopIteration:  # Arrow's answer to a header with nothing after it
        return
    except pa.ArrowInvalid as exc:
        raise Irregular(str(exc)) from exc
    checks = _Checks(positions, sqlite_times)
    key = positions["order_id"]
    last_line = table.header_lines
    held: pa.Table | None = None  # a batch waits for the next, which may go on with its last order
    held_lines: pa.Array | None = None
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as exc:
            raise Irregular(str(exc)) from exc
        if batch.num_rows == 0:
            continue
        lines = _lines(batch, last_line)
        last_line = lines[-1].as_py()
        rows = pa.Table.from_batches([batch])
        if held is not None:
            start = _continued_from(held, rows, key)
            if start < held.num_rows:  # the order goes on in this batch: its rows move there
                rows = pa.concat_tables([held.slice(start), rows]).combine_chunks()
                lines = pa.concat_arrays([held_lines.slice(start), lines])
                held, held_lines = held.slice(0, start), held_lines.slice(0, start)
            if held.num_rows:
                yield checks(held, held_lines)
        held, held_lines = rows, lines
    if held is not None and held.num_rows:
        yield checks(held, held_lines)


def _lines(batch: pa.RecordBatch, last_line: int) -> pa.Array:
    """Each row's line number as the csv module counts it: the line where the row ends."""
    newlines = None
    for column in batch.columns:
        if pc.any(pc.match_substring(column, "\n")).as_py():
            counted = pc.count_substring(column, "\n")
            newlines = counted if newlines is None else pc.add(newlines, counted)
    steps = pa.repeat(1, batch.num_rows) if newlines is None else pc.add(newlines, 1)
    return pc.add(pc.cumulative_sum(pc.cast(steps, pa.int64())), last_line)


def _continued_from(held: pa.Table, rows: pa.Table, key_index: int) -> int:
    """Where the held batch's last order begins if the next batch goes on with it (its first row
    has the same order id), else the held batch's length. Keys compare as the per-row grouping
    compares them (stripped); only the rows at the seam are looked at, in Python."""
    keys = held.column(key_index)
    last = keys[-1].as_py().strip()
    if not last or rows.column(key_index)[0].as_py().strip() != last:
        return held.num_rows
    start = held.num_rows - 1
    while start > 0 and keys[start - 1].as_py().strip() == last:
        start -= 1
    return start


class _Checks:
    """The vectorised checks of one file's columns, made once per import."""

    def __init__(self, positions: dict[str, int], sqlite_times: bool) -> None:
        self.sqlite_times = sqlite_times
        self.order_id = positions["order_id"]
        self.email = positions["email"]
        self.placed_at = positions["placed_at"]
        self.total = positions["total"]
        self.currency = positions["currency"]
        self.first_name = positions.get("first_name")
        self.last_name = positions.get("last_name")
        self.name = positions.get("name")
        self.consent = positions.get("accepts_marketing")

    def __call__(self, rows: pa.Table, lines: pa.Array) -> QuickRows | SlowRows:
        ids = rows.column(self.order_id).combine_chunks()
        following = ids.slice(1)
        repeated = pc.and_(pc.equal(following, ids.slice(0, len(ids) - 1)), pc.not_equal(following, ""))
        if _any(repeated) or not _all(pc.or_(pc.equal(ids, ""), _clean(ids, 100))):
            return SlowRows([row for row in _python_rows(rows, lines, None) if _filled(row)])
        ok = pc.and_(pc.not_equal(ids, ""), _clean(ids, 100))
        emails = rows.column(self.email).combine_chunks()
        ok = pc.and_(ok, _email(emails))
        placed = rows.column(self.placed_at).combine_chunks()
        ok = pc.and_(ok, _utc_seconds(placed))
        totals = rows.column(self.total).combine_chunks()
        ok = pc.and_(ok, pc.match_substring_regex(totals, _PLAIN_AMOUNT))
        currencies = rows.column(self.currency).combine_chunks()
        ok = pc.and_(ok, pc.match_substring_regex(currencies, _CURRENCY))
        empty = pa.repeat("", len(ids))
        first = rows.column(self.first_name).combine_chunks() if self.first_name is not None else empty
        last = rows.column(self.last_name).combine_chunks() if self.last_name is not None else empty
        for names in (first, last):
            ok = pc.and_(ok, pc.or_(pc.equal(names, ""), _clean(names, 100)))
        if self.name is not None:  # a full name is split by the per-row parser
            full = rows.column(self.name).combine_chunks()
            unnamed = pc.and_(pc.equal(first, ""), pc.equal(last, ""))
            ok = pc.and_(ok, pc.invert(pc.and_(unnamed, pc.not_equal(full, ""))))
        consents = None
        if self.consent is not None:
            answers = pc.ascii_lower(rows.column(self.consent).combine_chunks())
            yes = pc.is_in(answers, value_set=_YES)
            no = pc.is_in(answers, value_set=_NO)
            ok = pc.and_(ok, pc.or_(pc.or_(yes, no), pc.equal(answers, "")))
            unknown = pa.scalar(None, pa.bool_())
            consents = pc.if_else(yes, True, pc.if_else(no, False, unknown))
        accepted = None
        slow: dict[int, tuple[int, list[str]]] = {}
        if not _all(ok):
            blank = _blank(rows)
            accepted = pc.and_(ok, pc.invert(blank)).to_pylist()
            refused = pc.indices_nonzero(pc.invert(pc.or_(ok, blank))).to_pylist()
            if refused:
                pairs = zip(refused, _python_rows(rows, lines, refused), strict=True)
                slow = {index: row for index, row in pairs if _filled(row)}
        return QuickRows(
            order_ids=ids,
            emails=pc.ascii_lower(emails),
            placed_at=_sqlite_time(placed) if self.sqlite_times else placed,
            amounts=_minor_units(totals),
            currencies=pc.ascii_upper(currencies),
            first_names=first,
            last_names=last,
            consents=consents,
            accepted=accepted,
            slow=slow,
        )


_YES = pa.array(sorted(YES_WORDS))
_NO = pa.array(sorted(NO_WORDS))


def _positions(rows: int) -> pa.Array:
    """0, 1, 2 … rows - 1."""
    return pc.subtract(pc.cumulative_sum(pa.repeat(1, rows)), 1)


def _any(mask: pa.Array) -> bool:
    return bool(pc.any(mask).as_py())


def _all(mask: pa.Array) -> bool:
    return len(mask) == 0 or bool(pc.all(mask).as_py())


def _clean(cells: pa.Array, limit: int) -> pa.Array:
    """Text that clean_text keeps as it is, within the limit (characters)."""
    return pc.and_(pc.match_substring_regex(cells, _CLEAN_TEXT), pc.less_equal(pc.utf8_length(cells), limit))


def _email(cells: pa.Array) -> pa.Array:
    """Addresses fast_normalise_email accepts by its regular expression."""
    lowered = pc.ascii_lower(cells)
    plain = pc.match_substring_regex(lowered, _PLAIN_EMAIL)
    plain = pc.and_(plain, pc.less_equal(pc.utf8_length(cells), 254))
    odd = pc.or_(
        pc.match_substring_regex(lowered, "@.*--"), pc.match_substring_regex(lowered, _SPECIAL_USE_END)
    )
    return pc.and_(plain, pc.invert(odd))


def _utc_seconds(cells: pa.Array) -> pa.Array:
    """`2025-03-04T10:15:00Z` times that name a real moment (datetime.fromisoformat agrees)."""
    shaped = pc.match_substring_regex(cells, _UTC_SECONDS)
    # Every field is in range by its shape; only the day can still be past the month's end, and
    # Arrow's parser rolls 30 February over to 2 March: the day must come back as written.
    candidates = pc.if_else(shaped, cells, "0001-01-01T00:00:00Z")
    moments = pc.strptime(candidates, format="%Y-%m-%dT%H:%M:%SZ", unit="s", error_is_null=True)
    written = pc.cast(pc.utf8_slice_codeunits(candidates, 8, 10), pa.int64())
    same_day = pc.equal(pc.cast(pc.day(moments), pa.int64()), written)
    return pc.fill_null(pc.and_(shaped, same_day), False)


def _sqlite_time(cells: pa.Array) -> pa.Array:
    """`2025-03-04T10:15:00Z` as SQLite stores it: `2025-03-04 10:15:00.000000`."""
    clock = pc.binary_join_element_wise(pc.utf8_slice_codeunits(cells, 11, 19), ".000000", "")
    return pc.binary_join_element_wise(pc.utf8_slice_codeunits(cells, 0, 10), clock, " ")


def _minor_units(cells: pa.Array) -> pa.Array:
    """`1234`, `1234.5` or `1234.50` as 123450; anything else as 0 (such rows go to the per-row
    parser, which reads them itself). Through a double, which is exact here: below 10**11 with at
    most two decimals, the hundredfold value is within 0.003 of its whole number."""
    plain = pc.match_substring_regex(cells, _PLAIN_AMOUNT)
    values = pc.cast(pc.if_else(plain, cells, "0"), pa.float64())
    return pc.cast(pc.round(pc.multiply(values, 100)), pa.int64())


def _blank(rows: pa.Table) -> pa.Array:
    """Rows whose every cell is empty (the csv module's reader skips them)."""
    blank = None
    for column in rows.columns:
        empty = pc.equal(column.combine_chunks(), "")
        blank = empty if blank is None else pc.and_(blank, empty)
    return blank


def _filled(row: tuple[int, list[str]]) -> bool:
    """Not a blank row: the csv module's reader skips rows whose cells hold only white space."""
    return bool("".join(row[1]).strip())


def _python_rows(rows: pa.Table, lines: pa.Array, indices: list[int] | None) -> list[tuple[int, list[str]]]:
    """Rows as the csv module gives them: (line, list of cells)."""
    if indices is not None:
        rows = rows.take(indices)
        lines = lines.take(indices)
    columns = [column.to_pylist() for column in rows.columns]
    cells = zip(*columns, strict=True)
    return [(line, list(row)) for line, row in zip(lines.to_pylist(), cells, strict=True)]
