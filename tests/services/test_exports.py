"""The customers CSV: exact columns, formulas neutralised, RFC 4180 quoting, the CLI and the
admin-only download."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Customer, Invitation, StaffRole, utcnow
from app.services import campaigns, exports, scoring
from app.services.csvfiles import safe_cell
from app.services.customers import CustomerFilters
from tests.conftest import log_in, make_staff
from tests.factories import make_customer

HEADER = (
    "email,name,first_purchase,last_purchase,orders,total_spent,recency_days,r,f,m,segment,priority,status"
)


def export_text(filters: CustomerFilters | None = None) -> str:
    return "".join(exports.CustomerCsv(filters or CustomerFilters(), now=utcnow()))


def export_rows(filters: CustomerFilters | None = None) -> list[list[str]]:
    return list(csv.reader(io.StringIO(export_text(filters), newline="")))


def test_the_columns_are_exactly_the_documented_ones(app):
    assert export_text().splitlines()[0] == HEADER
    assert export_rows() == [HEADER.split(",")]


def test_money_is_in_major_units_dates_in_iso_8601_and_scores_included(app):
    now = utcnow()
    ada = make_customer("ada@example.com", first_name="Ada", last_name="Lovelace", total_spent=123_450)
    ada.orders_count = 7
    ada.last_purchase_at = now - timedelta(days=200, hours=1)
    ada.first_purchase_at = ada.last_purchase_at - timedelta(days=500)
    db.session.commit()
    scoring.recompute_scores(now=now)
    db.session.expire_all()
    ada = db.session.get(Customer, ada.id)
    (row,) = export_rows()[1:]
    record = dict(zip(HEADER.split(","), row, strict=True))
    assert record["email"] == "ada@example.com"
    assert record["name"] == "Ada Lovelace"
    assert record["total_spent"] == "1234.50"
    assert record["orders"] == "7"
    assert record["recency_days"] == "200"
    assert record["last_purchase"] == ada.last_purchase_at.isoformat(timespec="seconds")
    assert record["last_purchase"].endswith("+00:00")
    assert record["first_purchase"] == ada.first_purchase_at.isoformat(timespec="seconds")
    assert (record["r"], record["f"], record["m"]) == (
        str(ada.recency_score),
        str(ada.frequency_score),
        str(ada.monetary_score),
    )
    assert record["segment"] == ada.segment
    assert record["priority"] == f"{ada.win_back_priority // 100}.{ada.win_back_priority % 100:02d}"
    assert record["status"] == "active"


def test_unscored_and_never_purchased_customers_have_empty_cells(app):
    make_customer("browser@example.com", days_since_purchase=None, orders_count=0, total_spent=0)
    (row,) = export_rows()[1:]
    record = dict(zip(HEADER.split(","), row, strict=True))
    assert record["first_purchase"] == record["last_purchase"] == record["recency_days"] == ""
    assert record["r"] == record["segment"] == record["priority"] == ""
    assert record["total_spent"] == "0.00"


@pytest.mark.parametrize(
    "hostile",
    ['=HYPERLINK("http://evil")', "+1+1", "-2+3", "@SUM(A1)", "\tTab", "\rReturn"],
)
def test_cells_a_spreadsheet_would_run_as_formulas_get_a_leading_apostrophe(app, hostile):
    make_customer("x@example.com", first_name=hostile, last_name="")
    (row,) = export_rows()[1:]
    assert row[1] == "'" + hostile


def test_header_cells_are_neutralised_too(app, monkeypatch):
    monkeypatch.setattr(exports, "COLUMNS", ("=email", *exports.COLUMNS[1:]))
    assert export_rows()[0][0] == "'=email"


def test_neutralise_leaves_ordinary_text_alone():
    assert safe_cell("Ada") == "Ada"
    assert safe_cell("a=b") == "a=b"
    assert safe_cell("") == ""
    assert safe_cell("-5") == "'-5"


def test_commas_quotes_and_line_breaks_are_quoted_per_rfc_4180(app):
    make_customer("x@example.com", first_name='Smith, "Jo"', last_name="the\nSecond")
    text = export_text()
    assert '"Smith, ""Jo"" the\nSecond"' in text
    assert text.endswith("\r\n")
    assert text.count("\r\n") == 2  # header and one record; the quoted newline is not a line end
    assert export_rows()[1][1] == 'Smith, "Jo" the\nSecond'


def test_exports_carry_no_tokens_or_link_references(app):
    make_customer("ada@example.com")
    campaign, _ = campaigns.create_campaign(name="Spring", lapsed_days=180, now=utcnow())
    invitation = db.session.scalar(sa.select(Invitation).where(Invitation.campaign_id == campaign.id))
    text = export_text()
    assert invitation.reference not in text
    assert invitation.nonce not in text


def test_the_filters_apply_to_the_export(app):
    make_customer("lapsed@example.com", days_since_purchase=400)
    make_customer("recent@example.com", days_since_purchase=10)
    emails = [row[0] for row in export_rows(CustomerFilters(lapsed_only=True))[1:]]
    assert emails == ["lapsed@example.com"]


def test_the_cli_writes_the_file_and_says_how_many(runner, tmp_path):
    for n in range(3):
        make_customer(f"c{n}@example.com", first_name="=cmd|' /C calc'!A0")
    path = tmp_path / "customers.csv"
    result = runner.invoke(args=["customers", "export", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{path}: 3 customers exported"
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    assert rows[0] == HEADER.split(",")
    assert len(rows) == 4
    assert all(row[1].startswith("'=cmd") for row in rows[1:])
    assert path.read_bytes().count(b"\r\n") == 4


def test_the_cli_takes_the_page_filters(runner, tmp_path):
    make_customer("lapsed@example.com", days_since_purchase=400)
    make_customer("recent@example.com", days_since_purchase=10)
    path = tmp_path / "lapsed.csv"
    result = runner.invoke(args=["customers", "export", str(path), "--lapsed"])
    assert result.exit_code == 0, result.output
    assert "1 customers exported" in result.output
    assert "recent@example.com" not in path.read_text()
    bad = runner.invoke(args=["customers", "export", str(path), "--segment", "Nope"])
    assert bad.exit_code == 1
    assert "not a segment" in bad.output


def test_the_cli_reports_a_file_it_cannot_write(runner, tmp_path):
    result = runner.invoke(args=["customers", "export", str(tmp_path / "missing" / "x.csv")])
    assert result.exit_code == 2
    assert "cannot be written" in result.output


def test_admins_download_the_csv_streamed_with_the_page_filters(staff_client):
    make_customer("lapsed@example.com", days_since_purchase=400)
    make_customer("recent@example.com", days_since_purchase=10)
    # Read the body inside the request's own context: the test client runs each request in a
    # fresh one, and a streamed body is produced while it is read.
    response = staff_client.get("/staff/customers/export.csv?lapsed=1", buffered=True)
    assert response.status_code == 200
    assert "Content-Length" not in response.headers  # streamed: sent as it is read, length unknown
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="customers-')
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True), newline="")))
    assert rows[0] == HEADER.split(",")
    assert [row[0] for row in rows[1:]] == ["lapsed@example.com"]


@pytest.mark.parametrize("role", [StaffRole.VIEWER, StaffRole.TRIAGER])
def test_only_admins_may_download(client, app, role):
    make_customer("ada@example.com")
    make_staff("staff@example.com", role)
    assert log_in(client, "staff@example.com").status_code == 302
    response = client.get("/staff/customers/export.csv")
    assert response.status_code == 403
    assert "ada@example.com" not in response.get_data(as_text=True)


def test_a_large_export_arrives_in_several_chunks(app):
    for n in range(300):
        make_customer(f"customer-with-a-longish-address-{n}@example.com", first_name="A" * 90)
    chunks = list(exports.CustomerCsv(CustomerFilters(), now=utcnow()))
    assert len(chunks) > 1
    assert len(list(csv.reader(io.StringIO("".join(chunks), newline="")))) == 301
