"""Importing customers from CSV: formats, updates in place, bad rows, suppression."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.exceptions import InvalidInput, UnreadableFile
from app.extensions import db
from app.models import Customer, CustomerStatus, SuppressionReason, utcnow
from app.services import suppressions
from app.services.customers import normalise_email
from app.services.imports import import_customers, import_orders

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# Shopify's customers export (Customers → Export), with its real column set.
SHOPIFY_CUSTOMERS = (FIXTURES / "shopify_customers_export.csv").read_text(encoding="utf-8")


def run_import(text: str, name: str = "customers.csv", **options):
    return import_customers(io.BytesIO(text.encode("utf-8")), name, now=utcnow(), **options)


def customers_by_email() -> dict[str, Customer]:
    return {c.email: c for c in db.session.scalars(sa.select(Customer))}


def test_imports_rows_and_reports_counts(app):
    summary = run_import(
        "email,first_name,last_name,last_purchase_at,orders_count,total_spent\n"
        "ada@example.com,Ada,Lovelace,2024-01-15,12,1234.50\n"
        "grace@example.com,Grace,Hopper,2024-02-01T10:30:00+01:00,3,99\n"
    )
    assert summary.line() == "customers.csv: 2 imported, 0 updated, 0 unchanged, 0 skipped"
    rows = customers_by_email()
    assert rows["ada@example.com"].total_spent == 123450
    assert rows["ada@example.com"].orders_count == 12
    assert rows["grace@example.com"].last_purchase_at == datetime(2024, 2, 1, 9, 30, tzinfo=UTC)


def test_reimporting_the_same_file_changes_nothing(app):
    text = "email,first_name\nada@example.com,Ada\n"
    run_import(text)
    before = customers_by_email()["ada@example.com"].updated_at
    summary = run_import(text)
    assert (summary.imported, summary.updated, summary.unchanged) == (0, 0, 1)
    db.session.expire_all()
    assert customers_by_email()["ada@example.com"].updated_at == before


def test_a_newer_export_updates_in_place(app):
    run_import("email,first_name,total_spent\nada@example.com,Ada,10\n")
    summary = run_import("email,first_name,total_spent\nADA@Example.com ,Ada,25.50\n")
    assert (summary.imported, summary.updated) == (0, 1)
    db.session.expire_all()
    rows = customers_by_email()
    assert len(rows) == 1
    assert rows["ada@example.com"].total_spent == 2550


def test_semicolons_tabs_bom_and_loose_headers_are_understood(app):
    run_import("\ufeffE-Mail Address;FIRST NAME;Total_Spent\nada@example.com;Ada;€1.234,50\n")
    run_import("Email\tLast Name\ngrace@example.com\tHopper\n")
    rows = customers_by_email()
    assert rows["ada@example.com"].first_name == "Ada"
    assert rows["ada@example.com"].total_spent == 123450
    assert rows["grace@example.com"].last_name == "Hopper"


def test_day_first_dates(app):
    run_import("email,last_purchase_at\nada@example.com,03/04/2025\n", day_first=True)
    assert customers_by_email()["ada@example.com"].last_purchase_at.date().isoformat() == "2025-04-03"


def test_shopify_customers_export_is_recognised_without_mapping(app):
    summary = run_import(SHOPIFY_CUSTOMERS, "customers_export.csv")
    assert summary.imported == 3
    rows = customers_by_email()
    ada = rows["ada@example.com"]
    assert (ada.first_name, ada.last_name, ada.phone) == ("Ada", "Lovelace", "+44 20 7946 0001")
    assert (ada.total_spent, ada.orders_count) == (123450, 12)
    assert ada.accepts_marketing is True
    # Shopify writes ids with a leading apostrophe so that spreadsheets keep them as text.
    assert ada.external_id == "7000000001"
    grace = rows["grace@example.com"]
    assert (grace.total_spent, grace.orders_count, grace.phone) == (102400, 3, "+1 202-555-0143")
    assert rows["bob@example.com"].last_name == "Byte"


def test_an_explicit_no_to_marketing_means_never_email(app):
    summary = run_import(SHOPIFY_CUSTOMERS)
    assert summary.suppressed == 1
    assert summary.line().endswith("0 skipped; 1 suppressed (no marketing consent)")
    rows = customers_by_email()
    assert rows["bob@example.com"].status == CustomerStatus.SUPPRESSED
    assert suppressions.is_suppressed("bob@example.com")
    assert rows["ada@example.com"].status == CustomerStatus.ACTIVE


def test_bad_rows_are_reported_by_file_line_and_column_and_the_rest_imported(app):
    summary = run_import(
        "email,last_purchase_at,total_spent\n"
        "ada@example.com,2024-01-01,10\n"
        "not-an-email,2024-01-01,10\n"
        "grace@example.com,yesterday,10\n"
        "linus@example.com,2024-01-01,ten pounds\n"
        "ken@example.com,2024-01-01,5\n",
        name="shop.csv",
    )
    assert summary.line() == "shop.csv: 2 imported, 0 updated, 0 unchanged, 3 skipped"
    assert [(e.file, e.line, e.column) for e in summary.errors] == [
        ("shop.csv", 3, "email"),
        ("shop.csv", 4, "lastpurchaseat"),
        ("shop.csv", 5, "totalspent"),
    ]
    assert "not a valid email address" in str(summary.errors[0])
    assert str(summary.errors[1]).startswith("shop.csv:4: column 'lastpurchaseat': not a date")
    assert set(customers_by_email()) == {"ada@example.com", "ken@example.com"}


def test_strict_imports_nothing_when_any_row_is_bad(app):
    summary = run_import("email\nada@example.com\nbroken\n", strict=True)
    assert summary.committed is False
    assert summary.skipped == 1
    assert "nothing was saved" in summary.line()
    assert customers_by_email() == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"name,phone\nAda,123\n", "no email column"),
        (b"email\n\xff\xfe\xfa\n", "not UTF-8"),
    ],
)
def test_a_file_that_cannot_be_read_changes_nothing(app, content, message):
    with pytest.raises(UnreadableFile, match=message):
        import_customers(io.BytesIO(content), "bad.csv", now=utcnow())
    assert customers_by_email() == {}


def test_a_suppressed_address_stays_suppressed_through_reimport(app):
    run_import("email,first_name\nada@example.com,Ada\n")
    suppressions.suppress("ada@example.com", SuppressionReason.UNSUBSCRIBED, utcnow())
    db.session.commit()
    run_import("email,first_name,accepts_marketing\nada@example.com,Ada,yes\n")
    db.session.expire_all()
    assert customers_by_email()["ada@example.com"].status == CustomerStatus.SUPPRESSED
    assert suppressions.is_suppressed("ada@example.com")


def test_a_new_customer_whose_address_was_suppressed_before_arrives_suppressed(app):
    suppressions.suppress("ghost@example.com", SuppressionReason.MANUAL, utcnow())
    db.session.commit()
    run_import("email\nghost@example.com\n")
    assert customers_by_email()["ghost@example.com"].status == CustomerStatus.SUPPRESSED


def test_suppression_keeps_a_keyed_hash_not_the_address(app):
    suppressions.suppress("ada@example.com", SuppressionReason.UNSUBSCRIBED, utcnow())
    db.session.commit()
    stored = db.session.execute(sa.text("SELECT email_hash, note FROM suppressions")).one()
    assert "ada" not in stored.email_hash
    assert len(stored.email_hash) == 64
    import hashlib

    assert stored.email_hash != hashlib.sha256(b"ada@example.com").hexdigest()


def test_suppression_survives_key_rotation(app):
    suppressions.suppress("ada@example.com", SuppressionReason.UNSUBSCRIBED, utcnow())
    db.session.commit()
    old_key = app.config["SECRET_KEY"]
    app.config["SECRET_KEY"] = "a-brand-new-key"
    app.config["SECRET_KEY_FALLBACKS"] = [old_key]
    assert suppressions.is_suppressed("ada@example.com")


@pytest.mark.parametrize(
    ("raw", "normal"), [("A@X.com ", "a@x.com"), (" Ada@Example.COM", "ada@example.com")]
)
def test_emails_are_normalised(raw, normal):
    assert normalise_email(raw) == normal


@pytest.mark.parametrize(
    "raw", ["", "plainaddress", "a@b", "two@@example.com", "a@example.com\r\nBcc: x@y.z"]
)
def test_bad_email_addresses_are_refused_with_a_message(raw):
    with pytest.raises(InvalidInput):
        normalise_email(raw)


def test_a_file_that_breaks_part_way_leaves_nothing_half_imported(app, monkeypatch):
    monkeypatch.setattr("app.services.imports.BATCH_SIZE", 2)
    monkeypatch.setattr("app.services.imports.POSTGRESQL_BATCH_SIZE", 2)
    good = "".join(f"c{number}@example.com\n" for number in range(5)).encode()
    content = b"email\n" + good + b"\xff\xfe broken bytes\n" + b"late@example.com\n"
    with pytest.raises(UnreadableFile, match="line 7: not UTF-8"):
        import_customers(io.BytesIO(content), "broken.csv", now=utcnow())
    assert customers_by_email() == {}


def test_a_customers_file_with_figures_and_no_orders_is_taken_as_it_is(app):
    run_import(
        "email,first_purchase_at,last_purchase_at,orders_count,total_spent,currency\n"
        "ada@example.com,2020-01-01,2024-01-15,12,1234.50,eur\n"
    )
    ada = customers_by_email()["ada@example.com"]
    assert (ada.orders_count, ada.total_spent, ada.currency) == (12, 123450, "EUR")
    assert (ada.first_purchase_at.year, ada.last_purchase_at.year) == (2020, 2024)


def test_figures_in_a_customers_file_do_not_override_those_derived_from_orders(app):
    import_orders(
        io.BytesIO(b"order_id,email,placed_at,total,currency\n1,ada@example.com,2024-01-01,10,GBP\n"),
        "orders.csv",
        now=utcnow(),
    )
    summary = run_import(
        "email,first_name,orders_count,total_spent,last_purchase_at\nada@example.com,Ada,40,9999,2020-01-01\n"
    )
    assert summary.updated == 1  # the name
    db.session.expire_all()
    ada = customers_by_email()["ada@example.com"]
    assert (ada.first_name, ada.orders_count, ada.total_spent) == ("Ada", 1, 1000)
    assert ada.last_purchase_at == datetime(2024, 1, 1, tzinfo=UTC)
    again = run_import("email,first_name,orders_count,total_spent\nada@example.com,Ada,40,9999\n")
    assert (again.updated, again.unchanged) == (0, 1)


def test_an_empty_cell_never_clears_what_is_known(app):
    run_import("email,first_name,phone\nada@example.com,Ada,123\n")
    summary = run_import("email,first_name,phone\nada@example.com,,\x01\n")
    assert (summary.updated, summary.unchanged) == (0, 1)
    ada = customers_by_email()["ada@example.com"]
    assert (ada.first_name, ada.phone) == ("Ada", "123")


def test_a_mapping_names_the_columns_of_any_other_export(app):
    summary = run_import(
        "Adresse,Prénom,Dernier achat\nada@example.com,Ada,2024-02-01\n",
        mapping={"adresse": "email", "Prénom": "First Name", "Dernier achat": "last_purchase_at"},
    )
    assert summary.imported == 1
    ada = customers_by_email()["ada@example.com"]
    assert (ada.first_name, ada.last_purchase_at) == ("Ada", datetime(2024, 2, 1, tzinfo=UTC))


def test_a_mapping_to_an_unknown_field_is_refused(app):
    with pytest.raises(InvalidInput, match="no field 'mail'; the fields are email, first_name"):
        run_import("Adresse\nada@example.com\n", mapping={"Adresse": "mail"})


def test_the_error_report_gets_every_bad_row_with_formulas_neutralised(app):
    report = io.StringIO()
    run_import(
        "email,total_spent\n=cmd|' /C calc'!A0,1\nada@example.com,+ten pounds\n-@x,1\n",
        error_report=report,
    )
    rows = list(csv.reader(io.StringIO(report.getvalue())))
    assert rows[0] == ["line", "column", "value", "reason"]
    assert [row[:3] for row in rows[1:]] == [
        ["2", "email", "'=cmd|' /C calc'!A0"],
        ["3", "totalspent", "'+ten pounds"],
        ["4", "email", "'-@x"],
    ]
    assert all(row[3] for row in rows[1:])


def test_only_the_first_hundred_bad_rows_are_kept_in_the_summary(app):
    summary = run_import("email\n" + "nope\n" * 250)
    assert summary.skipped == 250
    assert len(summary.errors) == 100


@pytest.mark.parametrize(
    ("cell", "reason"),
    [("12x", "not a whole number"), ("99999999999", "too large"), ("٣", "not a whole number")],
)
def test_counts_are_checked(app, cell, reason):
    summary = run_import(f"email,orders_count\nada@example.com,{cell}\n")
    assert reason in summary.errors[0].reason


def test_absurd_amounts_are_refused_not_crashed_on(app):
    summary = run_import("email,total_spent\nada@example.com,99999999999999999999999\n")
    assert summary.skipped == 1
    assert "too large" in summary.errors[0].reason


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_files_are_read_the_same_whatever_the_size_of_the_chunks_read(app, monkeypatch, chunk):
    monkeypatch.setattr("app.services.csvfiles.CHUNK_BYTES", chunk)
    content = (
        "\ufeffemail,first_name,last_name\r\n"
        'zoë@example.com,Zoë,"Brontë\r\nSmith"\r\n'
        "\r\n"
        "ada@example.com,Ada,Łovelace\r\n"
    ).encode()
    summary = import_customers(io.BytesIO(content), "chunks.csv", now=utcnow())
    assert (summary.imported, summary.skipped) == (2, 0)
    rows = customers_by_email()
    assert rows["zoë@example.com"].last_name == "Brontë\r\nSmith"
    assert rows["ada@example.com"].last_name == "Łovelace"


@pytest.mark.parametrize("chunk", [1, 5, 1 << 20])
def test_a_byte_that_is_not_utf8_is_named_by_its_line_whatever_the_chunks(app, monkeypatch, chunk):
    monkeypatch.setattr("app.services.csvfiles.CHUNK_BYTES", chunk)
    content = (
        b"email\n" + b"".join(f"c{n}@example.com\n".encode() for n in range(20)) + b"caf\xe9@example.com\n"
    )
    with pytest.raises(UnreadableFile, match="line 22: not UTF-8"):
        import_customers(io.BytesIO(content), "latin1.csv", now=utcnow())


def test_an_import_reads_the_file_as_it_goes(app, monkeypatch):
    monkeypatch.setattr("app.services.csvfiles.CHUNK_BYTES", 4096)
    monkeypatch.setattr("app.services.imports.BATCH_SIZE", 100)
    monkeypatch.setattr("app.services.imports.POSTGRESQL_BATCH_SIZE", 100)
    content = b"email\n" + b"".join(f"customer{n}@example.com\n".encode() for n in range(2000))
    stream = io.BytesIO(content)
    positions = []
    summary = import_customers(
        stream, "big.csv", now=utcnow(), progress=lambda _rows: positions.append(stream.tell())
    )
    assert summary.imported == 2000
    assert len(positions) == 20
    assert positions[0] < len(content) / 4  # the first batch was written long before the end was read


def test_an_import_rescores_the_customer_base(app):
    run_import(
        "email,last_purchase_at,orders_count,total_spent\n"
        "ada@example.com,2024-01-15,12,1234.50\n"
        "bob@example.com,2020-01-15,1,9.99\n"
    )
    rows = customers_by_email()
    assert rows["ada@example.com"].segment is not None
    assert rows["ada@example.com"].win_back_priority > rows["bob@example.com"].win_back_priority


def test_a_language_column_sets_the_customers_language(app):
    summary = run_import(
        "email,first_name,language\n"
        "ada@example.com,Ada,de_AT\n"
        "grace@example.com,Grace,\n"
        "eve@example.com,Eve,Deutsch\n"
    )
    assert (summary.imported, summary.skipped) == (2, 1)
    (error,) = summary.errors
    assert (error.line, error.column) == (4, "language")
    assert "not a language code (e.g. de or de-AT)" in str(error)
    rows = customers_by_email()
    assert rows["ada@example.com"].locale == "de-AT"
    assert rows["grace@example.com"].locale is None

    again = run_import("email,locale\nada@example.com,en\ngrace@example.com,\n")
    assert (again.updated, again.unchanged) == (1, 1)
    db.session.expire_all()
    assert customers_by_email()["ada@example.com"].locale == "en"
