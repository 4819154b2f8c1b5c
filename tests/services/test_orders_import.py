"""Importing orders from CSV: Shopify's export, figures derived from orders, re-imports, bad rows,
suppression, and the `flask orders import` command."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.exceptions import InvalidInput, UnreadableFile
from app.extensions import db
from app.models import Customer, CustomerStatus, Order, Suppression, SuppressionReason, utcnow
from app.services import imports, scoring, suppressions
from app.services.customers import normalise_email
from app.services.imports import fast_normalise_email, import_customers, import_orders

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HEADER = "order_id,email,placed_at,total,currency,first_name,last_name\n"


def run_import(text: str, name: str = "orders.csv", **options):
    return import_orders(io.BytesIO(text.encode("utf-8")), name, now=utcnow(), **options)


def run_fixture(name: str, **options):
    with (FIXTURES / name).open("rb") as stream:
        return import_orders(stream, name, now=utcnow(), **options)


def customers() -> dict[str, Customer]:
    db.session.expire_all()
    return {customer.email: customer for customer in db.session.scalars(sa.select(Customer))}


def orders() -> dict[str, Order]:
    return {order.external_id: order for order in db.session.scalars(sa.select(Order))}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- a plain orders file ------------------------------------------------------------------


def test_a_plain_orders_file_creates_orders_and_customers_with_figures_from_the_orders(app):
    summary = run_import(
        HEADER + "1001,ada@example.com,2024-01-15T10:30:00Z,59.90,GBP,Ada,Lovelace\n"
        "1002,grace@example.com,2024-02-01,12.00,GBP,Grace,Hopper\n"
        '1003,ADA@example.com ,2024-06-01 09:00,"£1,020.10",GBP,,\n'
    )

    assert summary.line() == "orders.csv: 3 imported, 0 updated, 0 unchanged, 0 skipped; 2 new customers"
    assert summary.committed
    stored = orders()
    assert {order.source for order in stored.values()} == {"csv"}
    assert stored["1003"].amount == 102010
    assert stored["1001"].placed_at == at("2024-01-15 10:30:00")
    ada = customers()["ada@example.com"]
    assert (ada.first_name, ada.last_name) == ("Ada", "Lovelace")
    assert (ada.orders_count, ada.total_spent, ada.currency) == (2, 5990 + 102010, "GBP")
    assert ada.first_purchase_at == at("2024-01-15 10:30:00")
    assert ada.last_purchase_at == at("2024-06-01 09:00:00")
    assert ada.status == CustomerStatus.ACTIVE
    assert stored["1001"].customer_id == stored["1003"].customer_id == ada.id


def test_the_figures_of_a_customer_already_known_are_derived_from_all_their_orders(app):
    import_customers(
        io.BytesIO(
            b"email,first_name,orders_count,total_spent,last_purchase_at\nada@example.com,Ada,40,9999,2020-01-01\n"
        ),
        "customers.csv",
        now=utcnow(),
    )
    run_import(HEADER + "1,ada@example.com,2024-01-01,10,GBP,,\n")
    run_import(HEADER + "2,ada@example.com,2023-01-01,5.50,GBP,Someone,Else\n")

    ada = customers()["ada@example.com"]
    assert (ada.orders_count, ada.total_spent) == (2, 1550)
    assert (ada.first_purchase_at, ada.last_purchase_at) == (at("2023-01-01 00:00"), at("2024-01-01 00:00"))
    assert ada.first_name == "Ada"  # an orders file never renames a customer


def test_a_customer_gets_the_currency_of_their_latest_order_and_the_total_in_it(app):
    run_import(
        HEADER + "1,ada@example.com,2023-01-01,100,EUR,,\n"
        "2,ada@example.com,2024-01-01,10,GBP,,\n"
        "3,ada@example.com,2024-02-01,5,GBP,,\n"
        "4,bob@example.com,2024-02-01,7,USD,,\n"
        "5,bob@example.com,2024-03-01,1,EUR,,\n"
        "6,bob@example.com,2022-03-01,2,EUR,,\n"
        "7,eve@example.com,2022-03-01,3,EUR,,\n"
    )
    people = customers()
    ada, bob, eve = people["ada@example.com"], people["bob@example.com"], people["eve@example.com"]
    assert (ada.currency, ada.total_spent, ada.orders_count) == ("GBP", 1500, 3)
    assert (bob.currency, bob.total_spent, bob.orders_count) == ("EUR", 300, 3)
    assert (eve.currency, eve.total_spent, eve.orders_count) == ("EUR", 300, 1)


def test_of_two_orders_in_the_same_second_the_order_id_that_sorts_last_gives_the_currency(app):
    rows = [
        "A-1,ada@example.com,2024-01-01T10:00:00Z,10,GBP,,\n",
        "A-2,ada@example.com,2024-01-01T10:00:00Z,20,EUR,,\n",
    ]
    for listed in (rows, rows[::-1]):  # stored in either order, the same answer
        db.session.execute(sa.delete(Order))
        db.session.execute(sa.delete(Customer))
        db.session.commit()
        run_import(HEADER + "".join(listed))
        ada = customers()["ada@example.com"]
        assert (ada.currency, ada.total_spent) == ("EUR", 2000)


def test_a_yes_to_marketing_fills_an_unknown_consent_and_a_no_stays(app):
    import_customers(
        io.BytesIO(b"email,accepts_marketing\nada@example.com,\nbob@example.com,no\n"),
        "customers.csv",
        now=utcnow(),
    )
    header = "order_id,email,placed_at,total,currency,accepts_marketing\n"
    run_import(header + "1,ada@example.com,2024-01-01,10,GBP,yes\n2,bob@example.com,2024-01-01,10,GBP,yes\n")
    people = customers()
    assert people["ada@example.com"].accepts_marketing is True
    assert people["bob@example.com"].accepts_marketing is False
    assert people["bob@example.com"].status == CustomerStatus.SUPPRESSED


def test_semicolons_bom_loose_headers_and_day_first_dates(app):
    summary = run_import(
        "\ufeffOrder ID;E-Mail;Placed At;TOTAL;Currency\n1;ada@example.com;03/04/2025;1.234,50 €;eur\n",
        day_first=True,
    )
    assert summary.imported == 1
    order = orders()["1"]
    assert (order.placed_at, order.amount, order.currency) == (at("2025-04-03 00:00"), 123450, "EUR")


def test_a_source_keeps_orders_from_two_shops_apart(app):
    run_import(HEADER + "1001,ada@example.com,2024-01-01,10,GBP,,\n")
    summary = run_import(HEADER + "1001,ada@example.com,2024-02-01,20,GBP,,\n", source="pos")
    assert summary.imported == 1
    assert sorted(order.source for order in db.session.scalars(sa.select(Order))) == ["csv", "pos"]
    assert customers()["ada@example.com"].orders_count == 2


# --- Shopify's orders export --------------------------------------------------------------


def test_shopifys_orders_export_is_recognised_and_each_order_counted_once(app):
    summary = run_fixture("shopify_orders_export.csv")

    assert summary.line() == (
        "shopify_orders_export.csv: 4 imported, 0 updated, 0 unchanged, 0 skipped; 3 new customers; "
        "1 suppressed (no marketing consent)"
    )
    stored = orders()
    assert set(stored) == {"#1001", "#1002", "#1003", "#1004"}
    assert {order.source for order in stored.values()} == {"shopify"}
    # #1001 and #1003 have a row per line item; their totals are on the first row only.
    assert (stored["#1001"].amount, stored["#1003"].amount) == (5990, 2000)
    assert stored["#1002"].amount == 123450
    # Shopify writes times with their offset apart: "2024-03-02 18:05:11 +0100".
    assert stored["#1002"].placed_at == at("2024-03-02 17:05:11")
    assert stored["#1004"].placed_at == at("2023-11-21 04:59:59")
    people = customers()
    ada = people["ada@example.com"]
    assert (ada.first_name, ada.last_name) == ("Ada", "Lovelace")
    assert (ada.orders_count, ada.total_spent, ada.currency) == (2, 7990, "GBP")
    assert (ada.first_purchase_at, ada.last_purchase_at) == (
        at("2024-01-15 10:30:00"),
        at("2024-06-01 08:00:00"),
    )
    assert (people["grace@example.com"].currency, people["grace@example.com"].total_spent) == ("USD", 7500)


def test_accepts_marketing_no_in_shopifys_export_means_never_email(app):
    run_fixture("shopify_orders_export.csv")
    people = customers()
    bob = people["bob@example.com"]
    assert bob.status == CustomerStatus.SUPPRESSED
    assert bob.accepts_marketing is False
    assert suppressions.is_suppressed("bob@example.com")
    reason = db.session.scalar(
        sa.select(Suppression.reason).where(
            Suppression.email_hash == suppressions.email_hash("bob@example.com")
        )
    )
    assert reason == SuppressionReason.NO_CONSENT
    assert people["ada@example.com"].status == CustomerStatus.ACTIVE


def test_reimporting_shopifys_export_changes_nothing(app):
    run_fixture("shopify_orders_export.csv")
    before = {email: customer.updated_at for email, customer in customers().items()}

    summary = run_fixture("shopify_orders_export.csv")

    assert summary.line() == "shopify_orders_export.csv: 0 imported, 0 updated, 4 unchanged, 0 skipped"
    assert {email: customer.updated_at for email, customer in customers().items()} == before
    assert db.session.scalar(sa.select(sa.func.count(Order.id))) == 4


# --- re-imports ---------------------------------------------------------------------------


def test_reimporting_the_same_file_changes_nothing(app):
    text = HEADER + "1,ada@example.com,2024-01-01,10,GBP,Ada,\n2,bob@example.com,2024-01-02,20,GBP,,\n"
    run_import(text)
    before = {email: customer.updated_at for email, customer in customers().items()}

    summary = run_import(text)

    assert (summary.imported, summary.updated, summary.unchanged, summary.customers_created) == (0, 0, 2, 0)
    assert {email: customer.updated_at for email, customer in customers().items()} == before


def test_a_newer_export_updates_orders_in_place(app):
    run_import(HEADER + "1,ada@example.com,2024-01-01,10,GBP,,\n2,ada@example.com,2024-01-02,20,GBP,,\n")

    summary = run_import(
        HEADER + "1,ada@example.com,2024-01-01,10,GBP,,\n"
        "2,ada@example.com,2024-03-02,25,GBP,,\n"
        "3,ada@example.com,2024-04-01,5,GBP,,\n"
    )

    assert (summary.imported, summary.updated, summary.unchanged) == (1, 1, 1)
    assert db.session.scalar(sa.select(sa.func.count(Order.id))) == 3
    ada = customers()["ada@example.com"]
    assert (ada.orders_count, ada.total_spent, ada.last_purchase_at) == (3, 4000, at("2024-04-01 00:00"))


def test_an_order_that_moves_to_another_address_moves_its_figures(app):
    run_import(HEADER + "1,ada@example.com,2024-01-01,10,GBP,,\n2,ada@example.com,2024-02-01,30,GBP,,\n")
    summary = run_import(HEADER + "2,grace@example.com,2024-02-01,30,GBP,,\n")

    assert summary.updated == 1
    people = customers()
    assert (people["ada@example.com"].orders_count, people["ada@example.com"].total_spent) == (1, 1000)
    assert people["ada@example.com"].last_purchase_at == at("2024-01-01 00:00")
    assert (people["grace@example.com"].orders_count, people["grace@example.com"].total_spent) == (1, 3000)


def test_an_import_that_changes_most_orders_rewrites_only_the_figures_it_changes(app):
    # Two new orders and a moved one against three stored: on SQLite the figures then come from
    # one pass over every order, and a customer none of it concerns is left untouched.
    run_import(
        HEADER + "1,ada@example.com,2024-01-01,10,GBP,,\n2,ada@example.com,2024-02-01,30,GBP,,\n"
        "3,kay@example.com,2024-01-05,7,GBP,,\n"
    )
    kay_before = customers()["kay@example.com"].updated_at

    summary = run_import(
        HEADER + "2,grace@example.com,2024-02-01,30,GBP,,\n4,bob@example.com,2024-03-01,5,GBP,,\n"
        "5,bob@example.com,2024-04-01,6,GBP,,\n"
    )

    assert (summary.imported, summary.updated) == (2, 1)
    people = customers()
    figures = {email: (person.orders_count, person.total_spent) for email, person in people.items()}
    assert figures == {
        "ada@example.com": (1, 1000),
        "grace@example.com": (1, 3000),
        "bob@example.com": (2, 1100),
        "kay@example.com": (1, 700),
    }
    assert people["ada@example.com"].last_purchase_at == at("2024-01-01 00:00")
    assert people["kay@example.com"].updated_at == kay_before


def test_an_order_listed_twice_is_one_order_and_the_later_row_wins(app):
    summary = run_import(
        HEADER + "1,ada@example.com,2024-01-01,10,GBP,,\n2,ada@example.com,2024-01-02,20,GBP,,\n"
        "1,ada@example.com,2024-01-01,15,GBP,,\n"
    )
    assert summary.skipped == 0
    assert orders()["1"].amount == 1500
    assert customers()["ada@example.com"].total_spent == 3500


def test_batches_write_the_same_result_as_one(app, monkeypatch):
    monkeypatch.setattr("app.services.imports.BATCH_SIZE", 2)
    monkeypatch.setattr("app.services.imports.POSTGRESQL_BATCH_SIZE", 2)
    lines = "".join(f"{n},c{n % 3}@example.com,2024-01-{n:02d},{n},GBP,,\n" for n in range(1, 11))
    summary = run_import(HEADER + lines)
    assert (summary.imported, summary.customers_created) == (10, 3)
    assert customers()["c1@example.com"].total_spent == (1 + 4 + 7 + 10) * 100
    assert run_import(HEADER + lines).unchanged == 10


def test_an_order_listed_again_in_a_later_batch_under_another_address_moves_there(app, monkeypatch):
    # The later batch holds one new order and one the first batch stored: the later row wins,
    # the figures of all three customers follow, and the order is counted once, as new, as when
    # both rows are in one batch.
    monkeypatch.setattr("app.services.imports.BATCH_SIZE", 2)
    monkeypatch.setattr("app.services.imports.POSTGRESQL_BATCH_SIZE", 2)
    summary = run_import(
        HEADER + "1,ada@example.com,2024-01-01,10,GBP,,\n2,ada@example.com,2024-01-02,20,GBP,,\n"
        "3,bob@example.com,2024-01-03,5,GBP,,\n1,grace@example.com,2024-01-04,15,GBP,,\n"
    )

    assert (summary.imported, summary.updated, summary.unchanged, summary.skipped) == (3, 0, 1, 0)
    assert db.session.scalar(sa.select(sa.func.count(Order.id))) == 3
    people = customers()
    figures = {
        email: (person.orders_count, person.total_spent, person.last_purchase_at)
        for email, person in people.items()
    }
    assert figures == {
        "ada@example.com": (1, 2000, at("2024-01-02 00:00")),
        "bob@example.com": (1, 500, at("2024-01-03 00:00")),
        "grace@example.com": (1, 1500, at("2024-01-04 00:00")),
    }


# --- mapping ------------------------------------------------------------------------------


def test_a_mapping_names_the_columns_of_any_other_export(app):
    text = (
        "Order Number,Customer E-Mail,Ordered On,Grand Total,Money\n7,ada@example.com,2024-05-05,9.99,GBP\n"
    )
    mapping = {
        "Order Number": "order_id",
        "customer e-mail": "email",
        "Ordered On": "placed_at",
        "Grand Total": "total",
        "Money": "currency",
    }
    summary = run_import(text, mapping=mapping)
    assert summary.imported == 1
    assert orders()["7"].amount == 999


def test_a_mapping_wins_over_a_recognised_column(app):
    text = "id,order_ref,email,date,total,currency\n1,A-1,ada@example.com,2024-01-01,1,GBP\n"
    run_import(text, mapping={"order_ref": "order_id"})
    assert set(orders()) == {"A-1"}


def test_a_mapping_to_an_unknown_field_is_refused_with_the_fields_named(app):
    with pytest.raises(InvalidInput, match=r"no field 'price'.*order_id, email, placed_at, total, currency"):
        run_import(HEADER + "1,ada@example.com,2024-01-01,1,GBP,,\n", mapping={"total": "price"})


def test_a_mapping_of_a_column_the_file_lacks_changes_nothing(app):
    with pytest.raises(UnreadableFile, match="no column 'Grand Total'"):
        run_import(HEADER + "1,ada@example.com,2024-01-01,1,GBP,,\n", mapping={"Grand Total": "total"})
    assert customers() == {}


# --- bad input ----------------------------------------------------------------------------


def test_bad_rows_are_reported_by_line_and_column_and_skipped(app):
    summary = run_import(
        HEADER + "1,ada@example.com,2024-01-01,10,GBP,,\n"
        "2,not-an-email,2024-01-01,10,GBP,,\n"
        "3,bob@example.com,yesterday,10,GBP,,\n"
        "4,bob@example.com,2024-01-01,ten pounds,GBP,,\n"
        "5,bob@example.com,2024-01-01,10,pounds,,\n"
        ",bob@example.com,2024-01-01,10,GBP,,\n"
        "7,bob@example.com,2024-01-01,-10,GBP,,\n"
        "8,bob@example.com,2024-01-01,,GBP,,\n"
        "9,bob@example.com,2024-01-01,3,GBP,,\n",
        name="shop.csv",
    )

    assert summary.line() == "shop.csv: 2 imported, 0 updated, 0 unchanged, 7 skipped; 2 new customers"
    assert [(error.line, error.column) for error in summary.errors] == [
        (3, "email"),
        (4, "placedat"),
        (5, "total"),
        (6, "currency"),
        (7, "orderid"),
        (8, "total"),
        (9, "total"),
    ]
    assert "not a valid email address" in str(summary.errors[0])
    assert str(summary.errors[1]).startswith("shop.csv:4: column 'placedat': not a date")
    assert str(summary.errors[2]) == "shop.csv:5: column 'total': not an amount (value: 'ten pounds')"
    assert "not a currency code" in summary.errors[3].reason
    assert summary.errors[4].reason == "an order id is required"
    assert set(orders()) == {"1", "9"}


@pytest.mark.parametrize(
    ("row", "column", "reason"),
    [
        ("1,ada@example.com,0001-01-01T00:00:00+01:00,1,GBP", "placedat", "not a date (out of range)"),
        ("1,ada@example.com,9999-12-31T23:30:00-01:00,1,GBP", "placedat", "not a date (out of range)"),
        ("1,ada@example.com,2024-02-30,1,GBP", "placedat", "not a date"),
        ("1,ada@example.com,2024-01-01,123456789012345678901234567890,GBP", "total", "too large"),
        (f"{'9' * 101},ada@example.com,2024-01-01,1,GBP", "orderid", "longer than 100 characters"),
        ("\x00\x01,ada@example.com,2024-01-01,1,GBP", "orderid", "an order id is required"),
        ("1,ada\x00@example.com,2024-01-01,1,GBP", "email", "not a valid email address"),
    ],
)
def test_hostile_values_are_refused_by_line_and_column_never_crashed_on(app, row, column, reason):
    summary = run_import("order_id,email,placed_at,total,currency\n" + row + "\n")
    assert (summary.skipped, summary.imported) == (1, 0)
    assert (summary.errors[0].line, summary.errors[0].column) == (2, column)
    assert reason in summary.errors[0].reason


def test_a_source_that_is_too_long_is_refused(app):
    with pytest.raises(InvalidInput, match="source: longer than 40 characters"):
        run_import(HEADER + "1,ada@example.com,2024-01-01,1,GBP,,\n", source="x" * 41)


def test_a_bad_value_on_a_later_line_of_an_order_is_reported_on_that_line(app):
    summary = run_import(
        "Name,Email,Financial Status,Created at,Total,Currency,Lineitem name\n"
        "#1,ada@example.com,paid,,,,Shirt\n"
        "#1,ada@example.com,,2024-01-01 10:00:00 +0000,lots,GBP,Socks\n"
    )
    assert [(error.line, error.column, error.value) for error in summary.errors] == [(3, "total", "lots")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"order_id,email,total,currency\n1,ada@example.com,1,GBP\n", "line 1: no placed_at column"),
        (b"email,first_name\nada@example.com,Ada\n", "no order_id, placed_at, total or currency column"),
        (HEADER.encode() + b"1,ada@example.com,2024-01-01,1,GBP,\xff\xfeAda,\n", "line 2: not UTF-8"),
        (
            HEADER.encode()
            + b"1,ada@example.com,2024-01-01,1,GBP,,\n" * 2
            + b'2,"'
            + b"x" * 200_000
            + b'"\n',
            "line 4",
        ),
    ],
)
def test_a_file_that_cannot_be_read_or_recognised_changes_nothing(app, content, message):
    with pytest.raises(UnreadableFile, match=message):
        import_orders(io.BytesIO(content), "bad.csv", now=utcnow())
    assert customers() == {}
    assert orders() == {}


def test_a_file_that_breaks_part_way_leaves_nothing_half_imported(app, monkeypatch):
    monkeypatch.setattr("app.services.imports.BATCH_SIZE", 2)
    monkeypatch.setattr("app.services.imports.POSTGRESQL_BATCH_SIZE", 2)
    good = "".join(f"{n},c{n}@example.com,2024-01-01,1,GBP,,\n" for n in range(6)).encode()
    content = HEADER.encode() + good + b"99,\xff@example.com,2024-01-01,1,GBP,,\n"
    with pytest.raises(UnreadableFile, match="line 8: not UTF-8"):
        import_orders(io.BytesIO(content), "broken.csv", now=utcnow())
    assert customers() == {}
    assert orders() == {}


def test_a_failure_after_customers_and_orders_were_written_leaves_nothing(app, monkeypatch):
    # RELIABILITY 29. The database fails once the import has written customers and orders (on
    # SQLite in the second batch, on PostgreSQL in the statement that writes the file's orders).
    monkeypatch.setattr("app.services.imports.BATCH_SIZE", 2)
    calls = []

    def failing(original):
        def write(run, *args):
            result = original(run, *args)
            calls.append(1)
            if run.postgresql or len(calls) == 2:
                raise sa.exc.OperationalError("INSERT INTO orders", {}, Exception("disk full"))
            return result

        return write

    for name in ("_write_staged_orders", "_upsert_orders_by_id"):
        monkeypatch.setattr(f"app.services.imports.{name}", failing(getattr(imports, name)))
    good = "".join(f"{n},c{n}@example.com,2024-01-01,1,GBP,,\n" for n in range(6))
    with pytest.raises(sa.exc.OperationalError, match="disk full"):
        run_import(HEADER + good)
    assert calls
    assert customers() == {}
    assert orders() == {}


def order_indexes() -> set[str]:
    db.session.commit()
    return {index["name"] for index in sa.inspect(db.engine).get_indexes("orders")}


def import_file(tmp_path, text: str, **options):
    path = tmp_path / "orders.csv"
    path.write_text(text)
    with path.open("rb") as stream:
        return import_orders(stream, path.name, now=utcnow(), **options)


def test_a_file_larger_than_the_table_is_loaded_with_its_index_built_after(app, tmp_path, monkeypatch):
    monkeypatch.setattr("app.services.imports.BATCH_SIZE", 3)
    monkeypatch.setattr("app.services.imports.POSTGRESQL_BATCH_SIZE", 3)
    indexes = order_indexes()
    assert "ix_orders_customer_placed" in indexes
    rows = "".join(f"{n},c{n % 4}@example.com,2024-01-{1 + n:02},{n}.50,GBP,,\n" for n in range(10))
    summary = import_file(tmp_path, HEADER + rows)
    assert summary.line() == "orders.csv: 10 imported, 0 updated, 0 unchanged, 0 skipped; 4 new customers"
    assert order_indexes() == indexes
    figures = customers()["c1@example.com"]
    assert (figures.orders_count, figures.total_spent) == (3, 150 + 550 + 950)
    assert figures.last_purchase_at == at("2024-01-10T00:00:00")
    # Nothing half done: a strict import that saves nothing leaves the index as it was.
    summary = import_file(
        tmp_path, HEADER + "20,ada@example.com,2024-01-01,1,GBP,,\n21,nope,2024,1,GBP,,\n", strict=True
    )
    assert summary.committed is False
    assert order_indexes() == indexes


def test_foreign_keys_are_checked_again_after_an_orders_import(app, tmp_path):
    import_file(tmp_path, HEADER + "1,ada@example.com,2024-01-01,10,GBP,,\n")
    # The import did not check each order's customer (each came from a join with customers);
    # the connection it used checks them again for whoever uses it next.
    for _ in range(3):
        with pytest.raises(sa.exc.IntegrityError):
            db.session.execute(
                sa.insert(Order).values(
                    source="csv", external_id="x", customer_id=999_999, placed_at=utcnow(), amount=1
                )
            )
        db.session.rollback()


def test_strict_imports_nothing_when_any_row_is_bad(app):
    summary = run_import(
        HEADER + "1,ada@example.com,2024-01-01,10,GBP,,\n2,nope,2024-01-01,1,GBP,,\n", strict=True
    )
    assert summary.committed is False
    assert summary.line().endswith(
        "1 imported, 0 updated, 0 unchanged, 1 skipped; 1 new customers (nothing was saved)"
    )
    assert customers() == {}
    assert orders() == {}


def test_the_error_report_lists_every_bad_row_as_csv_safe_for_spreadsheets(app):
    report = io.StringIO()
    rows = "".join(f"{n},bad{n},2024-01-01,1,GBP,,\n" for n in range(150))
    summary = run_import(
        HEADER
        + '1,"=HYPERLINK(""http://x"")",2024-01-01,1,GBP,,\n'
        + rows
        + "2,ada@example.com,@SUM(1),1,GBP,,\n",
        error_report=report,
    )

    assert summary.skipped == 152
    assert len(summary.errors) == 100  # the summary keeps the first; the report has every one
    lines = list(csv.reader(io.StringIO(report.getvalue())))
    assert lines[0] == ["line", "column", "value", "reason"]
    assert len(lines) == 153
    assert lines[1][:3] == ["2", "email", '\'=HYPERLINK("http://x")']
    assert lines[-1][:3] == ["153", "placedat", "'@SUM(1)"]
    assert 'HYPERLINK(""http://x"")' in report.getvalue().splitlines()[1]  # quoted per RFC 4180


def test_an_orders_file_given_as_customers_is_refused(app):
    content = (FIXTURES / "shopify_orders_export.csv").read_bytes()
    with pytest.raises(UnreadableFile, match="orders file"):
        import_customers(io.BytesIO(content), "orders.csv", now=utcnow())


# --- suppression --------------------------------------------------------------------------


def test_a_suppressed_address_survives_reimport(app):
    run_import(HEADER + "1,ada@example.com,2024-01-01,10,GBP,Ada,\n")
    suppressions.suppress("ada@example.com", SuppressionReason.UNSUBSCRIBED, utcnow())
    db.session.commit()

    run_import(
        "order_id,email,placed_at,total,currency,accepts_marketing\n1,ada@example.com,2024-01-01,10,GBP,yes\n"
    )
    run_import(HEADER + "2,ada@example.com,2024-05-01,10,GBP,Ada,\n")

    ada = customers()["ada@example.com"]
    assert ada.status == CustomerStatus.SUPPRESSED
    assert ada.orders_count == 2
    assert suppressions.is_suppressed("ada@example.com")


def test_a_new_customer_whose_address_was_suppressed_arrives_suppressed(app):
    suppressions.suppress("ghost@example.com", SuppressionReason.MANUAL, utcnow())
    db.session.commit()
    run_import(HEADER + "1,ghost@example.com,2024-01-01,10,GBP,,\n")
    assert customers()["ghost@example.com"].status == CustomerStatus.SUPPRESSED


def test_an_address_suppressed_under_a_previous_key_arrives_suppressed(app):
    suppressions.suppress("ghost@example.com", SuppressionReason.MANUAL, utcnow())
    db.session.commit()
    old_key = app.config["SECRET_KEY"]
    app.config["SECRET_KEY"] = "a-brand-new-key"
    app.config["SECRET_KEY_FALLBACKS"] = [old_key]

    summary = run_import(
        "order_id,email,placed_at,total,currency,accepts_marketing\n1,ghost@example.com,2024-01-01,10,GBP,no\n"
    )

    assert summary.suppressed == 0  # already on the list: not listed twice
    assert customers()["ghost@example.com"].status == CustomerStatus.SUPPRESSED
    assert db.session.scalar(sa.select(sa.func.count(Suppression.id))) == 1


# --- the command line ---------------------------------------------------------------------


def test_orders_import_command_exits_0_and_reports_bad_rows(runner, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + "1,ada@example.com,2024-01-01,10,GBP,,\n2,nope,2024-01-01,1,GBP,,\n")
    result = runner.invoke(args=["orders", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{path}:3: column 'email': not a valid email address" in result.output
    assert result.output.strip().splitlines()[-1] == (
        f"{path}: 1 imported, 0 updated, 0 unchanged, 1 skipped; 1 new customers"
    )
    assert db.session.scalar(sa.select(sa.func.count(Order.id))) == 1


def test_orders_import_command_recognises_shopify_and_takes_a_mapping(runner, tmp_path):
    shopify = runner.invoke(args=["orders", "import", str(FIXTURES / "shopify_orders_export.csv")])
    assert shopify.exit_code == 0, shopify.output
    assert "4 imported" in shopify.output
    path = tmp_path / "other.csv"
    path.write_text("Ref,Mail,When,Sum,Cur\nX1,ada@example.com,2024-07-01,5,GBP\n")
    mapped = runner.invoke(
        args=["orders", "import", str(path), "--source", "till"]
        + [
            arg
            for pair in ("Ref=order_id", "Mail=email", "When=placed_at", "Sum=total", "Cur=currency")
            for arg in ("--map", pair)
        ]
    )
    assert mapped.exit_code == 0, mapped.output
    assert db.session.scalar(sa.select(Order.source).where(Order.external_id == "X1")) == "till"


def test_orders_import_command_strict_exits_1_and_saves_nothing(runner, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + "1,ada@example.com,2024-01-01,10,GBP,,\n2,ada@example.com,never,1,GBP,,\n")
    result = runner.invoke(args=["orders", "import", "--strict", str(path)])
    assert result.exit_code == 1
    assert "nothing was saved" in result.output
    assert db.session.scalar(sa.select(sa.func.count(Order.id))) == 0


def test_orders_import_command_exits_2_for_a_file_it_cannot_use(runner, tmp_path):
    missing = runner.invoke(args=["orders", "import", str(tmp_path / "missing.csv")])
    customers_file = tmp_path / "customers.csv"
    customers_file.write_text("email,first_name\nada@example.com,Ada\n")
    unrecognised = runner.invoke(args=["orders", "import", str(customers_file)])
    bad_map = runner.invoke(args=["orders", "import", str(customers_file), "--map", "email=price"])
    malformed_map = runner.invoke(args=["orders", "import", str(customers_file), "--map", "email"])

    assert missing.exit_code == 2
    assert "cannot be read" in missing.output
    assert unrecognised.exit_code == 2
    assert "no order_id, placed_at, total or currency column" in unrecognised.output
    assert "nothing was imported" in unrecognised.output
    assert bad_map.exit_code == 2
    assert "no field 'price'" in bad_map.output
    assert malformed_map.exit_code == 2
    assert "COLUMN=FIELD" in malformed_map.output
    assert db.session.scalar(sa.select(sa.func.count(Customer.id))) == 0


# --- the quick path for addresses ---------------------------------------------------------


def answer(function, raw: str) -> str | None:
    try:
        return function(raw)
    except InvalidInput:
        return None


@settings(max_examples=2000, deadline=None)
@given(
    st.text(alphabet="aZ09._+-@!#'xn", max_size=30).map(lambda local: local + "@ex-ample.co.uk")
    | st.text(alphabet="aZ09.-@_", max_size=40)
    | st.from_regex(r"[a-z0-9._+-]{1,20}@[a-z0-9.-]{1,30}\.(com|test|local|xn--p1ai|c0m|io)", fullmatch=True)
    | st.emails()
)
def test_the_quick_path_for_addresses_answers_as_normalise_email_does(raw):
    assert answer(fast_normalise_email, raw) == answer(normalise_email, raw)


@pytest.mark.parametrize(
    "raw",
    [
        " Ada@Example.COM ",
        "a@b.test",
        "a@localhost.local",
        "ab--c@x--y.com",
        "a..b@example.com",
        "é@example.com",
    ],
)
def test_the_quick_path_agrees_on_edge_cases(raw):
    assert answer(fast_normalise_email, raw) == answer(normalise_email, raw)


# --- the quick path for dates -------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
        lambda moment: moment.replace(microsecond=0)
    )
)
def test_a_utc_time_written_with_z_is_stored_as_the_full_parser_stores_it(app, moment):
    written = moment.strftime("%Y-%m-%dT%H:%M:%SZ").rjust(20, "0")
    # The same moment with an explicit offset takes the full path: both must store one value.
    spelled = moment.replace(tzinfo=UTC).isoformat()
    db.session.execute(sa.delete(Order))
    db.session.commit()
    run_import(HEADER + f"1,ada@example.com,{written},1,GBP,,\n2,ada@example.com,{spelled},1,GBP,,\n")
    db.session.expire_all()
    stored = {order.external_id: order.placed_at for order in db.session.scalars(sa.select(Order))}
    assert stored == {"1": moment.replace(tzinfo=UTC), "2": moment.replace(tzinfo=UTC)}


def test_customers_an_orders_import_creates_have_the_scores_the_recompute_gives_them(app, monkeypatch):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite creates customers batch by batch, before their figures are known")
    now = datetime(2025, 6, 1, tzinfo=UTC)
    known = "".join(
        f"{n},known{n % 5}@example.com,2024-{n % 12 + 1:02d}-01,{n * 7 % 90 + 1},GBP,,\n"
        for n in range(1, 16)
    )
    import_orders(io.BytesIO((HEADER + known).encode()), "known.csv", now=now)
    monkeypatch.setattr(scoring, "recompute_scores", lambda **_: 0)  # the recompute after the commit
    newcomers = "".join(
        f"{n},new{n % 6}@example.com,20{22 + n % 3}-{n % 12 + 1:02d}-0{n % 9 + 1},{n * 13 % 70 + 2},GBP,,\n"
        for n in range(100, 121)
    )
    import_orders(io.BytesIO((HEADER + newcomers).encode()), "new.csv", now=now)
    columns = (Customer.email, Customer.recency_score, Customer.frequency_score, Customer.monetary_score)
    columns += (Customer.segment, Customer.win_back_priority, Customer.scored_at)

    def scores() -> dict:
        db.session.expire_all()
        return {row[0]: row[1:] for row in db.session.execute(sa.select(*columns).order_by(Customer.email))}

    created = scores()
    monkeypatch.undo()
    scoring.recompute_scores(now=now)

    # The known customers' scores move with the newcomers (the recompute's work); the
    # newcomers' are already what it gives them.
    newcomer_emails = [f"new{n}@example.com" for n in range(6)]
    recomputed = scores()
    assert [recomputed[email] for email in newcomer_emails] == [created[email] for email in newcomer_emails]
    assert all(created[email][0] is not None for email in newcomer_emails)
    assert len({created[email][:3] for email in newcomer_emails}) > 2  # not one score for everyone
