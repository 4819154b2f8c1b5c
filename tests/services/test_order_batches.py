"""The compiled reader of orders files (app/services/order_batches.py) against the per-row
reader it stands in for: the same orders, customers, figures, counts and messages, line for
line, whatever the file holds."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.exceptions import UnreadableFile
from app.extensions import db
from app.models import Customer, Order, Suppression, utcnow
from app.services import imports, order_batches
from app.services.csvfiles import parse_amount
from app.services.imports import import_orders

HEADER = "order_id,email,placed_at,total,currency,first_name,last_name,accepts_marketing\n"


class OneWay(io.RawIOBase):
    """A file that can only be read forwards (a pipe, say): the importer reads it row by row."""

    def __init__(self, content: bytes) -> None:
        self._inner = io.BytesIO(content)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def state() -> dict:
    """Everything an orders import writes, in a form two imports can be compared by."""
    db.session.expire_all()
    customer_rows = db.session.execute(
        sa.select(
            Customer.email,
            Customer.first_name,
            Customer.last_name,
            Customer.accepts_marketing,
            Customer.status,
            Customer.orders_count,
            Customer.total_spent,
            Customer.currency,
            Customer.first_purchase_at,
            Customer.last_purchase_at,
        ).order_by(Customer.email)
    ).all()
    order_rows = db.session.execute(
        sa.select(
            Order.source, Order.external_id, Customer.email, Order.placed_at, Order.amount, Order.currency
        )
        .join(Customer)
        .order_by(Order.external_id)
    ).all()
    listed = db.session.scalars(sa.select(Suppression.reason).order_by(Suppression.reason)).all()
    return {"customers": customer_rows, "orders": order_rows, "suppressions": listed}


def clear() -> None:
    db.session.rollback()
    for model in (Order, Customer, Suppression):
        db.session.execute(sa.delete(model))
    db.session.commit()


def both_ways(content: bytes, **options) -> tuple[tuple, tuple]:
    """Import the file once with each reader into empty tables; (summary line, errors, report,
    tables) of each."""
    results = []
    for stream in (io.BytesIO(content), OneWay(content)):
        clear()
        report = io.StringIO()
        summary = import_orders(stream, "orders.csv", now=utcnow(), error_report=report, **options)
        results.append((summary.line(), [str(error) for error in summary.errors], report.getvalue(), state()))
    clear()
    return results[0], results[1]


def test_the_one_way_file_is_read_row_by_row_and_a_file_on_disk_by_the_compiled_reader():
    assert order_batches.usable(io.BytesIO(b""), io.StringIO())
    assert not order_batches.usable(OneWay(b""), None)


cells = {
    "order_id": st.sampled_from(["1", "2", "3", "A-7", " 4", "", "x" * 101, "5\x01", "#1001"]),
    "email": st.sampled_from(
        [
            "ada@example.com",
            "ADA@Example.com",
            " grace@example.org ",
            "bad@",
            "a--b@ex--ample.com",
            "ann@mail.test",
            "zoë@example.de",
            "",
            "x@example.com\x00",
        ]
    ),
    "placed_at": st.sampled_from(
        [
            "2024-01-15T10:30:00Z",
            "2024-02-30T10:30:00Z",
            "2024-01-15T24:00:00Z",
            "0000-01-01T00:00:00Z",
            "2024-01-15",
            "2024-01-15 10:30:00 +0100",
            "15/01/2024",
            "",
            "yesterday",
        ]
    ),
    "total": st.sampled_from(
        ["10", "10.5", "10.50", "£1,020.10", "-5", "", "abc", "1.234,50", "99999999999.99"]
    ),
    "currency": st.sampled_from(["GBP", "gbp", " EUR ", "EURO", "", "€€€"]),
    "first_name": st.sampled_from(["", "Ada", " Ada", "Zoë", "Ada\x07", "A" * 101, "Ann Marie"]),
    "last_name": st.sampled_from(["", "Lovelace", "Lovelace\t", "O'Brien"]),
    "accepts_marketing": st.sampled_from(["", "yes", "No", "FALSE", "opted out", "maybe", "0"]),
}


def csv_cell(text: str) -> str:
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n') else text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.fixed_dictionaries(cells), min_size=1, max_size=12))
def test_any_file_imports_as_the_per_row_reader_imports_it(app, rows):
    text = HEADER + "".join(",".join(csv_cell(row[name]) for name in cells) + "\n" for row in rows)
    quick, per_row = both_ways(text.encode())
    assert quick == per_row


def test_a_clean_file_is_read_by_the_compiled_reader_alone(app, monkeypatch):
    calls = []
    original = order_batches._python_rows
    monkeypatch.setattr(order_batches, "_python_rows", lambda *args: calls.append(args) or original(*args))
    text = HEADER + "".join(
        f"{n},c{n % 7}@example.com,2024-01-{n % 28 + 1:02d}T10:00:00Z,{n}.5,GBP,Ann,Lee,yes\n"
        for n in range(500)
    )
    quick, per_row = both_ways(text.encode())
    assert quick == per_row
    assert quick[0] == "orders.csv: 500 imported, 0 updated, 0 unchanged, 0 skipped; 7 new customers"
    assert calls == []  # no row needed the per-row parser


def test_line_numbers_count_the_line_breaks_inside_quoted_cells(app):
    text = (
        HEADER
        + '1,ada@example.com,2024-01-15T10:30:00Z,10,GBP,"Ada\nAugusta",Lovelace,\n'
        + "2,bad@,2024-01-15T10:30:00Z,10,GBP,,,\n"
        + '3,"grace@example.com",2024-01-15T10:30:00Z,10,GBP,Grace,"Hop\n\nper",\n'
        + "4,ann@example.com,never,10,GBP,,,\n"
    )
    quick, per_row = both_ways(text.encode())
    assert quick == per_row
    assert [error.split(": column")[0] for error in quick[1]] == ["orders.csv:4", "orders.csv:8"]


def test_blank_lines_are_skipped_and_counted_as_lines(app):
    text = (
        HEADER
        + "\n1,ada@example.com,2024-01-15T10:30:00Z,10,GBP,,,\n,,,,,,,\n\n"
        + "2,bad@,2024-01-15T10:30:00Z,1,GBP,,,\n\n"
    )
    quick, per_row = both_ways(text.encode())
    assert quick == per_row
    assert quick[1][0].startswith("orders.csv:6: column 'email'")


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of a few rows each, so that orders and files cross batch boundaries; gives the
    list of batches the compiled reader checked (a block smaller than the header row would send
    the whole file to the per-row reader)."""
    monkeypatch.setattr(order_batches, "BLOCK_BYTES", 128)
    monkeypatch.setattr("app.services.imports.BATCH_SIZE", 3)
    monkeypatch.setattr("app.services.imports.POSTGRESQL_BATCH_SIZE", 3)
    checked = []
    original = order_batches._Checks.__call__
    monkeypatch.setattr(
        order_batches._Checks, "__call__", lambda checks, *args: checked.append(1) or original(checks, *args)
    )
    return checked


def test_an_order_whose_rows_cross_a_batch_boundary_is_one_order(app, small_batches):
    line_items = "".join("1001,,,,,,,\n" for _ in range(9))
    text = (
        HEADER
        + "1000,ann@example.com,2024-01-15T10:30:00Z,5,GBP,Ann,,\n"
        + "1001,ada@example.com,2024-01-15T10:30:00Z,59.90,GBP,,,\n"
        + line_items
        + "1001,,,,,Ada,Lovelace,no\n"
        + "1002,grace@example.com,2024-02-01T00:00:00Z,12,GBP,,,\n"
    )
    quick, per_row = both_ways(text.encode())
    assert quick == per_row
    assert len(small_batches) >= 2  # the compiled reader held the batch until the order ended
    assert quick[0].startswith("orders.csv: 3 imported, 0 updated, 0 unchanged, 0 skipped")
    ada = next(row for row in quick[3]["customers"] if row.email == "ada@example.com")
    assert (ada.first_name, ada.orders_count, ada.total_spent, ada.accepts_marketing) == (
        "Ada",
        1,
        5990,
        False,
    )


def test_many_batches_with_repeats_and_bad_rows_import_as_row_by_row(app, small_batches):
    rows = []
    for n in range(60):
        email = f"C{n % 9}@Example.com" if n % 5 else f" c{n % 9}@example.com"
        total = "oops" if n % 17 == 0 else f"{n}.25"
        rows.append(f"{n % 40},{email},2024-03-{n % 28 + 1:02d}T08:00:00Z,{total},eur,,,\n")
    quick, per_row = both_ways((HEADER + "".join(rows)).encode())
    assert quick == per_row
    assert len(small_batches) > 4
    assert ", 4 skipped" in quick[0]
    assert quick[2].count("\n") == 1 + 4  # the header and the 4 bad rows


def test_a_row_the_compiled_reader_refuses_late_in_the_file_starts_the_import_over(
    app, small_batches, monkeypatch
):
    written_before_restart = []
    original = imports._Run.start_over
    staged = []  # PostgreSQL stages the whole file before it writes customers and orders
    load = imports._load

    def counting_load(run, table, rows, **options):
        if table is imports._file_orders:
            staged.append(len(rows))
        return load(run, table, rows, **options)

    monkeypatch.setattr(imports, "_load", counting_load)

    def stored(run) -> int:
        return sum(staged) if run.postgresql else run.written

    monkeypatch.setattr(
        imports._Run,
        "start_over",
        lambda run, stream: written_before_restart.append(stored(run)) or original(run, stream),
    )
    good = "".join(
        f"{n},c{n % 4}@example.com,2024-01-{n % 28 + 1:02d}T10:00:00Z,1,GBP,,,\n" for n in range(300)
    )
    late_bad = "300,bad@,2024-01-01T00:00:00Z,1,GBP,,,\n"
    ragged = "301,c1@example.com,2024-01-01T00:00:00Z,2,GBP\n"  # too few cells: padded, as csv does
    text = HEADER + good + late_bad + ragged + "302,c2@example.com,2024-01-01T00:00:00Z,3,GBP,,,,extra\n"
    quick, per_row = both_ways(text.encode())
    assert quick == per_row
    assert quick[0].startswith("orders.csv: 302 imported, 0 updated, 0 unchanged, 1 skipped")
    assert quick[2].count("bad@") == 1  # the report was written once, not once per attempt
    # The compiled reader had written orders when it met the ragged row; they were rolled back.
    assert len(written_before_restart) == 1
    assert written_before_restart[0] > 0
    assert len(small_batches) > 4


def test_text_that_is_not_utf8_late_in_the_file_changes_nothing(app, small_batches):
    good = "".join(f"{n},c{n}@example.com,2024-01-01T00:00:00Z,1,GBP,,,\n" for n in range(30)).encode()
    content = HEADER.encode() + good + b"99,\xff@example.com,2024-01-01T00:00:00Z,1,GBP,,,\n"
    with pytest.raises(UnreadableFile, match="line 32: not UTF-8"):
        import_orders(io.BytesIO(content), "broken.csv", now=utcnow())
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Order)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Customer)) == 0


def test_reimporting_and_a_newer_export_count_alike_with_both_readers(app, small_batches):
    first = HEADER + "".join(
        f"{n},c{n % 3}@example.com,2024-01-0{n % 9 + 1}T00:00:00Z,{n},GBP,,,\n" for n in range(12)
    )
    newer = first.replace("c1@example.com", "moved@example.com").replace(",5,GBP", ",500,GBP")
    lines = []
    for stream_of in (io.BytesIO, OneWay):
        clear()
        for text in (first, first, newer):
            lines.append(import_orders(stream_of(text.encode()), "orders.csv", now=utcnow()).line())
        lines.append(state())
    half = len(lines) // 2
    assert lines[:half] == lines[half:]
    assert len(small_batches) > 4
    assert lines[1] == "orders.csv: 0 imported, 0 updated, 12 unchanged, 0 skipped"
    assert lines[2].startswith("orders.csv: 0 imported, 5 updated, 7 unchanged, 0 skipped; 1 new customers")


clean_cells = {
    "order_id": st.sampled_from(["1", "2", "3", "4", "5", "6"]),
    "email": st.sampled_from(["ada@example.com", "ADA@example.com", "bo@example.org", "cy@example.net"]),
    "placed_at": st.sampled_from(["2024-01-15T10:30:00Z", "2023-12-31T23:59:59Z", "2024-02-29T00:00:00Z"]),
    "total": st.sampled_from(["10", "10.5", "3.25", "0"]),
    "currency": st.sampled_from(["GBP", "eur"]),
    "first_name": st.sampled_from(["", "Ada", "Zoë"]),
    "last_name": st.sampled_from(["", "Lee"]),
    "accepts_marketing": st.sampled_from(["", "yes", "no", "0", "TRUE"]),
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.lists(
        st.lists(st.fixed_dictionaries(clean_cells), min_size=1, max_size=10), min_size=1, max_size=2
    ),
    block=st.sampled_from([128, 200, 1 << 20]),  # the header row fits in each
)
def test_clean_batches_written_column_by_column_match_the_per_row_writer(app, monkeypatch, files, block):
    monkeypatch.setattr(order_batches, "BLOCK_BYTES", block)
    if block < 1 << 20:
        # An order id that comes back later in the file is counted once per batch it is in, by
        # either reader, and with small batches the readers cut them in different places: then
        # only the rows of one order repeat its id.
        for rows in files:
            previous, number = None, 0
            for row in rows:
                if row["order_id"] != previous:
                    previous, number = row["order_id"], number + 1
                row["order_id"] = str(number)
    texts = [
        HEADER + "".join(",".join(row[name] for name in clean_cells) + "\n" for row in rows) for rows in files
    ]
    outcomes = []
    for stream_of in (io.BytesIO, OneWay):
        clear()
        lines = [import_orders(stream_of(text.encode()), "orders.csv", now=utcnow()).line() for text in texts]
        outcomes.append((lines, state()))
    clear()
    assert outcomes[0] == outcomes[1]


def test_an_order_id_repeated_within_a_clean_batch_is_one_order_and_the_later_row_wins(app):
    text = (
        HEADER
        + "1,ada@example.com,2024-01-01T00:00:00Z,10,GBP,,,\n"
        + "2,bo@example.com,2024-01-02T00:00:00Z,20,GBP,Bo,,yes\n"
        + "1,ada@example.com,2024-01-03T00:00:00Z,15,GBP,Ada,,no\n"
    )
    quick, per_row = both_ways(text.encode())
    assert quick == per_row
    assert quick[0] == (
        "orders.csv: 2 imported, 0 updated, 1 unchanged, 0 skipped; 2 new customers; "
        "1 suppressed (no marketing consent)"
    )
    assert [(row.external_id, row.amount) for row in quick[3]["orders"]] == [("1", 1500), ("2", 2000)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.from_regex(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z", fullmatch=True)
        | st.datetimes().map(lambda moment: f"{moment:%Y-%m-%dT%H:%M:%S}Z"),
        min_size=1,
        max_size=30,
    )
)
def test_quick_utc_times_are_exactly_those_fromisoformat_reads(cells):
    accepted = order_batches._utc_seconds(pa.array(cells, pa.string())).to_pylist()
    for cell, quick in zip(cells, accepted, strict=True):
        try:
            moment = datetime.fromisoformat(cell)
        except ValueError:
            moment = None
        if quick:  # accepted: a real moment, stored as the text the full parser stores
            assert moment is not None
            stored = order_batches._sqlite_time(pa.array([cell])).to_pylist()[0]
            assert stored == moment.astimezone(UTC).isoformat(" ", "microseconds")[:26]
        elif cell.isascii() and moment is not None:
            pytest.fail(f"{cell!r} is a real moment the quick check refused")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.from_regex(r"\A\d{1,11}(\.\d{1,2})?\Z", fullmatch=True) | st.text(max_size=8),
        min_size=1,
        max_size=30,
    )
)
def test_quick_amounts_are_exactly_what_parse_amount_reads(cells):
    plain = pc.match_substring_regex(pa.array(cells, pa.string()), order_batches._PLAIN_AMOUNT).to_pylist()
    amounts = order_batches._minor_units(pa.array(cells, pa.string())).to_pylist()
    for cell, is_plain, amount in zip(cells, plain, amounts, strict=True):
        if is_plain:
            assert amount == parse_amount(cell)


def test_what_rows_far_apart_say_of_one_customer_adds_up_as_in_one_batch(app, small_batches):
    # One address's rows spread over many batches: the first name found, a no to marketing
    # anywhere, a yes for a known customer with no answer, an order id given again later under
    # another address, and a customer whose latest order is in another currency than the first.
    import_orders(
        io.BytesIO((HEADER + "100,cy@example.com,2023-01-01T00:00:00Z,1,GBP,,,\n").encode()),
        "before.csv",
        now=utcnow(),
    )
    db.session.commit()
    rows = [
        "1,ada@example.com,2024-01-01T00:00:00Z,10,GBP,,,",
        "2,bea@example.com,2024-01-02T00:00:00Z,20,EUR,,,",
        "7,ada@example.com,2024-01-03T00:00:00Z,70,GBP,,,",
        "3,cy@example.com,2024-01-04T00:00:00Z,5,GBP,Cy,,yes",
        "4,ada@example.com,2024-01-05T00:00:00Z,11,GBP,Ada,Lovelace,yes",
        "5,bea@example.com,2024-01-06T00:00:00Z,30,GBP,Bea,,",
        "6,ada@example.com,2024-01-07T00:00:00Z,12,GBP,Other,Name,no",
        "7,bea@example.com,2024-01-08T00:00:00Z,40,GBP,,,",
    ]
    for stream in (
        io.BytesIO((HEADER + "\n".join(rows) + "\n").encode()),
        OneWay((HEADER + "\n".join(rows) + "\n").encode()),
    ):
        summary = import_orders(stream, "orders.csv", now=utcnow())
        db.session.commit()
        assert summary.line() == (
            "orders.csv: 7 imported, 0 updated, 1 unchanged, 0 skipped; 2 new customers; "
            "1 suppressed (no marketing consent)"
        )
        db.session.expire_all()
        found = {
            customer.email: (
                customer.first_name,
                customer.last_name,
                customer.accepts_marketing,
                customer.status.value,
                customer.orders_count,
                customer.total_spent,
                customer.currency,
                customer.first_purchase_at,
                customer.last_purchase_at,
            )
            for customer in db.session.scalars(sa.select(Customer))
        }
        day = lambda text: datetime.fromisoformat(text).replace(tzinfo=UTC)  # noqa: E731
        assert found == {
            "ada@example.com": (
                "Ada",
                "Lovelace",
                False,
                "suppressed",
                3,
                3300,
                "GBP",
                day("2024-01-01"),
                day("2024-01-07"),
            ),
            "bea@example.com": (
                "Bea",
                "",
                None,
                "active",
                3,
                7000,
                "GBP",
                day("2024-01-02"),
                day("2024-01-08"),
            ),
            "cy@example.com": ("Cy", "", True, "active", 2, 600, "GBP", day("2023-01-01"), day("2024-01-04")),
        }
        assert db.session.scalar(sa.select(Customer.email).join(Order).where(Order.external_id == "7")) == (
            "bea@example.com"
        )
        # Back to the state before this file, for the other reader.
        db.session.execute(sa.delete(Order).where(Order.external_id != "100"))
        db.session.execute(sa.delete(Customer).where(Customer.email != "cy@example.com"))
        db.session.execute(sa.delete(Suppression))
        db.session.execute(
            sa.update(Customer).values(
                first_name="",
                accepts_marketing=None,
                orders_count=1,
                total_spent=100,
                last_purchase_at=day("2023-01-01"),
            )
        )
        db.session.commit()
    assert len(small_batches) > 2


def test_order_ids_with_commas_quotes_and_backslashes_arrive_as_written(app):
    # A batch the compiled reader accepts whole and the per-row reader's rows store every
    # character alike (COPY's text format gives the backslash a meaning of its own).
    ids = ["A,1", 'B"2', "C\\3", "D\\N", "E 'five'", "F;6"]
    rows = "".join(
        f'"{order_id.replace(chr(34), chr(34) * 2)}",c{n}@example.com,2024-01-0{n + 1}T10:00:00Z,1,GBP,,,\n'
        for n, order_id in enumerate(ids)
    )
    quick, per_row = both_ways((HEADER + rows).encode())
    assert quick == per_row
    assert quick[0].startswith("orders.csv: 6 imported")
    assert sorted(order[1] for order in quick[3]["orders"]) == sorted(ids)
