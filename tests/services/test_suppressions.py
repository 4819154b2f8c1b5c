"""The suppression list: keyed hashes, importing a list, adding and lifting by hand, listing."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.exceptions import InvalidInput, NotFound, UnreadableFile
from app.extensions import db
from app.models import AuditEvent, Customer, CustomerStatus, Suppression, SuppressionReason, utcnow
from app.services import suppressions
from app.services.imports import import_customers
from app.services.suppressions import (
    add_suppression,
    import_suppressions,
    lift_suppression,
    list_suppressions,
    suppression_for,
)
from tests.factories import make_customer


def run_import(text: str, name: str = "list.csv", **options):
    return import_suppressions(io.BytesIO(text.encode("utf-8")), name, now=utcnow(), **options)


def customer(email: str) -> Customer:
    db.session.expire_all()
    return db.session.scalar(sa.select(Customer).where(Customer.email == email))


def audit_details() -> list[str]:
    return list(db.session.scalars(sa.select(AuditEvent.detail)))


def reason_of(email: str) -> SuppressionReason | None:
    row = suppression_for(email)
    return row.reason if row else None


# --- the keyed hash -----------------------------------------------------------------------


def test_the_list_keeps_a_keyed_hash_not_the_address(app):
    suppressions.suppress("ada@example.com", SuppressionReason.MANUAL, utcnow())
    db.session.commit()
    stored = db.session.scalar(sa.select(Suppression.email_hash))
    assert stored == suppressions.email_hash("ada@example.com")
    assert stored != hashlib.sha256(b"ada@example.com").hexdigest()
    app.config["SECRET_KEY"] = "another key altogether"
    assert suppressions.email_hash("ada@example.com") != stored


def test_a_suppression_made_under_an_old_key_still_counts_after_rotation(app):
    old_key = app.config["SECRET_KEY"]
    suppressions.suppress("ada@example.com", SuppressionReason.COMPLAINT, utcnow())
    db.session.commit()
    app.config.update(SECRET_KEY="a brand new key", SECRET_KEY_FALLBACKS=[old_key])
    assert suppressions.is_suppressed("ada@example.com")
    assert reason_of("ada@example.com") == SuppressionReason.COMPLAINT
    # Importing the same address again adds no second row under the new key.
    summary = run_import("email\nada@example.com\n")
    assert (summary.imported, summary.unchanged) == (0, 1)
    assert db.session.scalar(sa.select(sa.func.count(Suppression.id))) == 1


def test_suppression_for_is_none_for_an_address_not_on_the_list(app):
    assert suppression_for("nobody@example.com") is None


def test_a_bounce_note_keeps_no_copy_of_the_address(app):
    suppressions.suppress(
        "ada@example.com", SuppressionReason.HARD_BOUNCE, utcnow(), note="550 5.1.1 <Ada@Example.com> unknown"
    )
    db.session.commit()
    assert suppression_for("ada@example.com").note == "550 5.1.1 <[address]> unknown"


# --- importing a list ---------------------------------------------------------------------


def test_import_adds_addresses_with_reasons_by_value_or_label_and_suppresses_customers(app):
    make_customer("ada@example.com")
    summary = run_import(
        "Email;Reason;Note\n"
        "Ada@Example.com ;Hard bounce;bounced in 2023\n"
        "bob@example.com;no_consent;\n"
        "cy@example.com;;\n"
        "di@example.com;SAID NEVER;phone call\n"
    )
    assert summary.line() == "list.csv: 4 imported, 0 updated, 0 unchanged, 0 skipped"
    assert summary.committed
    assert reason_of("ada@example.com") == SuppressionReason.HARD_BOUNCE
    assert reason_of("bob@example.com") == SuppressionReason.NO_CONSENT
    assert reason_of("cy@example.com") == SuppressionReason.MANUAL
    assert reason_of("di@example.com") == SuppressionReason.NEVER
    assert suppression_for("ada@example.com").note == "bounced in 2023"
    assert customer("ada@example.com").status == CustomerStatus.SUPPRESSED


def test_import_skips_bad_rows_and_names_line_and_column(app):
    summary = run_import(
        "email,reason,note\n"
        "ada@example.com,complaint,\n"
        "not-an-address,manual,\n"
        "bob@example.com,bored,\n"
        f"cy@example.com,manual,{'x' * 501}\n"
    )
    assert (summary.imported, summary.skipped) == (1, 3)
    shown = [str(error) for error in summary.errors]
    assert shown[0].startswith("list.csv:3: column 'email': not a valid email address")
    assert shown[1].startswith("list.csv:4: column 'reason': not a suppression reason (expected one of:")
    assert shown[2].startswith("list.csv:5: column 'note': longer than 500 characters")
    assert suppressions.is_suppressed("ada@example.com")
    assert not suppressions.is_suppressed("bob@example.com")


def test_strict_import_with_a_bad_row_saves_nothing_and_reports_it(app):
    report = io.StringIO()
    summary = run_import(
        "email\nada@example.com\n=HYPERLINK(1)\n", strict=True, error_report=report, name="strict.csv"
    )
    assert not summary.committed
    assert summary.line().endswith("(nothing was saved)")
    assert not suppressions.is_suppressed("ada@example.com")
    assert db.session.scalar(sa.select(sa.func.count(Suppression.id))) == 0
    lines = report.getvalue().splitlines()
    assert lines[0] == "line,column,value,reason"
    assert lines[1].startswith("3,email,'=HYPERLINK(1),")


def test_reimporting_changes_nothing_and_never_changes_a_reason(app):
    run_import("email,reason\nada@example.com,complaint\n")
    summary = run_import("email,reason\nada@example.com,manual\nada@example.com,manual\n")
    assert (summary.imported, summary.unchanged, summary.skipped) == (0, 1, 0)
    assert reason_of("ada@example.com") == SuppressionReason.COMPLAINT


def test_a_suppressed_address_stays_suppressed_when_customers_are_imported_again(app):
    run_import("email\nada@example.com\n")
    import_customers(
        io.BytesIO(b"email,accepts_marketing\nada@example.com,yes\n"), "customers.csv", now=utcnow()
    )
    assert customer("ada@example.com").status == CustomerStatus.SUPPRESSED


def test_a_file_without_an_email_column_is_refused_whole(app):
    with pytest.raises(UnreadableFile, match="no email column"):
        run_import("name,reason\nAda,manual\n")
    assert db.session.scalar(sa.select(sa.func.count(Suppression.id))) == 0


def test_a_mapping_names_columns_the_importer_does_not_recognise(app):
    summary = run_import(
        "Adresse,Grund,Reason\nada@example.com,complaint,ignored\n",
        mapping={"Adresse": "email", "Grund": "Reason"},
    )
    assert summary.imported == 1
    assert reason_of("ada@example.com") == SuppressionReason.COMPLAINT
    with pytest.raises(UnreadableFile, match="no column 'Missing'"):
        run_import("Adresse\nbob@example.com\n", mapping={"Missing": "email"})
    with pytest.raises(InvalidInput, match="there is no field 'address'"):
        run_import("Adresse\nbob@example.com\n", mapping={"Adresse": "address"})


def test_an_import_is_audited_without_addresses(app):
    run_import("email\nada@example.com\n")
    event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "suppression.import"))
    assert event.detail == "1 added, 0 already suppressed, 0 skipped"
    assert not any("ada@" in detail for detail in audit_details())


def test_import_reports_progress_per_batch(app, monkeypatch):
    monkeypatch.setattr(suppressions, "BATCH_SIZE", 2)
    seen = []
    rows = "".join(f"p{number}@example.com\n" for number in range(5))
    summary = run_import("email\n" + rows, progress=seen.append)
    assert summary.imported == 5
    assert seen == [2, 2, 1]


# --- adding by hand -----------------------------------------------------------------------


def test_add_normalises_the_address_and_records_an_audit_event_without_it(app, admin):
    make_customer("ada@example.com")
    added = add_suppression(
        "  Ada@Example.COM ",
        SuppressionReason.COMPLAINT,
        note="Phoned: ada@example.com wants no more",
        actor_id=admin.id,
        now=utcnow(),
    )
    assert suppression_for("ada@example.com").id == added.id
    assert added.note == "Phoned: [address] wants no more"
    assert customer("ada@example.com").status == CustomerStatus.SUPPRESSED
    event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "suppression.add"))
    assert (event.actor_id, event.target_id, event.detail) == (admin.id, added.id, "complaint")
    assert not any("ada@" in detail.lower() for detail in audit_details())


def test_add_refuses_a_bad_address_a_known_one_and_the_erased_reason(app, admin):
    with pytest.raises(InvalidInput, match="not a valid email address"):
        add_suppression("nope", note="", actor_id=admin.id, now=utcnow())
    add_suppression("ada@example.com", note="", actor_id=admin.id, now=utcnow())
    with pytest.raises(InvalidInput, match="already suppressed"):
        add_suppression("ADA@example.com", note="", actor_id=admin.id, now=utcnow())
    with pytest.raises(InvalidInput, match="erasing a customer"):
        add_suppression("bob@example.com", SuppressionReason.ERASED, note="", actor_id=admin.id, now=utcnow())
    assert db.session.scalar(sa.select(sa.func.count(Suppression.id))) == 1


# --- lifting ------------------------------------------------------------------------------


def test_lifting_deletes_the_row_reactivates_the_customer_and_records_the_reason(app, admin):
    make_customer("ada@example.com")
    row = add_suppression("ada@example.com", note="", actor_id=admin.id, now=utcnow())
    lift_suppression(
        row.id, reason="Added by mistake, not ada@example.com's wish", actor_id=admin.id, now=utcnow()
    )
    assert not suppressions.is_suppressed("ada@example.com")
    assert customer("ada@example.com").status == CustomerStatus.ACTIVE
    event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "suppression.lift"))
    assert event.actor_id == admin.id
    assert event.detail == "manual: Added by mistake, not [address]'s wish"
    assert not any("ada@" in detail for detail in audit_details())


def test_lifting_needs_a_reason(app, admin):
    row = add_suppression("ada@example.com", note="", actor_id=admin.id, now=utcnow())
    with pytest.raises(InvalidInput, match="say why"):
        lift_suppression(row.id, reason="   ", actor_id=admin.id, now=utcnow())
    assert suppressions.is_suppressed("ada@example.com")


def test_an_erased_customers_suppression_can_never_be_lifted(app, admin):
    suppressions.suppress("ada@example.com", SuppressionReason.ERASED, utcnow())
    db.session.commit()
    row = suppression_for("ada@example.com")
    with pytest.raises(InvalidInput, match="can never be lifted"):
        lift_suppression(row.id, reason="they asked", actor_id=admin.id, now=utcnow())
    assert suppressions.is_suppressed("ada@example.com")


def test_no_consent_cannot_be_lifted_until_the_customer_consents(app, admin):
    def import_consent(value: str) -> None:
        text = f"email,accepts_marketing\nada@example.com,{value}\n"
        import_customers(io.BytesIO(text.encode()), "customers.csv", now=utcnow())

    import_consent("no")
    row = suppression_for("ada@example.com")
    assert row.reason == SuppressionReason.NO_CONSENT
    with pytest.raises(InvalidInput, match="does not accept marketing"):
        lift_suppression(row.id, reason="they rang", actor_id=admin.id, now=utcnow())
    assert customer("ada@example.com").status == CustomerStatus.SUPPRESSED
    import_consent("yes")
    assert customer("ada@example.com").status == CustomerStatus.SUPPRESSED  # imports never lift
    lift_suppression(row.id, reason="opted in again at the till", actor_id=admin.id, now=utcnow())
    assert customer("ada@example.com").status == CustomerStatus.ACTIVE


def test_a_customer_stays_suppressed_while_another_key_still_lists_them(app, admin):
    old_key = app.config["SECRET_KEY"]
    make_customer("ada@example.com")
    suppressions.suppress("ada@example.com", SuppressionReason.COMPLAINT, utcnow())
    db.session.commit()
    app.config.update(SECRET_KEY="a brand new key", SECRET_KEY_FALLBACKS=[old_key])
    db.session.add(
        Suppression(
            email_hash=suppressions.email_hash("ada@example.com"),
            reason=SuppressionReason.MANUAL,
            created_at=utcnow(),
        )
    )
    db.session.commit()
    newer = db.session.scalar(sa.select(Suppression).order_by(Suppression.id.desc()))
    lift_suppression(newer.id, reason="duplicate", actor_id=admin.id, now=utcnow())
    assert suppressions.is_suppressed("ada@example.com")
    assert customer("ada@example.com").status == CustomerStatus.SUPPRESSED


def test_lifting_an_unknown_suppression_is_not_found(app, admin):
    with pytest.raises(NotFound):
        lift_suppression(999, reason="why not", actor_id=admin.id, now=utcnow())


# --- listing ------------------------------------------------------------------------------


def test_the_list_is_newest_first_by_keyset_and_filters_by_reason(app):
    start = utcnow()
    for number in range(5):
        reason = SuppressionReason.COMPLAINT if number % 2 else SuppressionReason.MANUAL
        suppressions.suppress(f"p{number}@example.com", reason, start + timedelta(minutes=number))
    db.session.commit()
    first = list_suppressions(limit=2)
    second = list_suppressions(limit=2, before_id=first.next_before)
    third = list_suppressions(limit=2, before_id=second.next_before)
    ids = [row.id for page in (first, second, third) for row in page.rows]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 5
    assert third.next_before is None
    complaints = list_suppressions(reason=SuppressionReason.COMPLAINT)
    assert [row.reason for row in complaints.rows] == [SuppressionReason.COMPLAINT] * 2


def test_the_list_names_a_known_customer_but_never_an_erased_one(app):
    known = make_customer("ada@example.com")
    suppressions.suppress("ada@example.com", SuppressionReason.MANUAL, utcnow())
    suppressions.suppress("stranger@example.com", SuppressionReason.MANUAL, utcnow())
    make_customer("gone@example.com")
    suppressions.suppress("gone@example.com", SuppressionReason.ERASED, utcnow())
    db.session.commit()
    # Even with a live customer of that address on file again, an erased row names nobody.
    rows = {row.email: row for row in list_suppressions().rows}
    assert set(rows) == {"ada@example.com", None}
    assert rows["ada@example.com"].customer_id == known.id
    assert rows["ada@example.com"].note == ""
    assert len(list_suppressions().rows) == 3


# --- the command line ---------------------------------------------------------------------


def test_the_command_imports_reports_bad_rows_and_ends_with_a_summary(runner, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("email,reason\nada@example.com,complaint\nnope,manual\n")
    result = runner.invoke(args=["suppressions", "import", str(path)])
    assert result.exit_code == 0
    assert f"{path}:3: column 'email': not a valid email address" in result.output
    assert result.stdout.strip().splitlines()[-1] == f"{path}: 1 imported, 0 updated, 0 unchanged, 1 skipped"
    assert suppressions.is_suppressed("ada@example.com")


def test_the_command_with_strict_exits_1_and_saves_nothing(runner, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("email\nada@example.com\nnope\n")
    result = runner.invoke(args=["suppressions", "import", "--strict", str(path)])
    assert result.exit_code == 1
    assert "nothing was saved" in result.output
    assert db.session.scalar(sa.select(sa.func.count(Suppression.id))) == 0


def test_the_command_exits_2_for_a_file_it_cannot_read_or_recognise(runner, tmp_path):
    missing = runner.invoke(args=["suppressions", "import", str(tmp_path / "missing.csv")])
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("name\nAda\n")
    unrecognised = runner.invoke(args=["suppressions", "import", str(wrong)])
    assert missing.exit_code == 2
    assert "cannot be read" in missing.output
    assert unrecognised.exit_code == 2
    assert "no email column" in unrecognised.output
    assert "nothing was imported" in unrecognised.output
