"""The suppression list: addresses never to be emailed again, kept as a keyed hash (HMAC).

Each row holds the hash, a reason, a time and a note, never the address. Imports and staff add
rows; only an admin lifts one, with a recorded reason, and an erased customer's row stays for good.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING

import sqlalchemy as sa
from flask import current_app

from app.exceptions import InvalidInput, NotFound, RowError
from app.extensions import db
from app.models import Customer, CustomerStatus, Suppression, SuppressionReason
from app.services import audit, customers
from app.services.csvfiles import CsvRows, ErrorReport, clean_text, column_positions, header_key, open_csv
from app.services.sql import upsert
from app.survey.choices import label_for

if TYPE_CHECKING:  # app.services.imports imports this module: ImportSummary is imported late
    from app.services.imports import ImportSummary

_LABEL = b"winback.suppression.v1"
BATCH_SIZE = 1000
NOTE_LIMIT = 500
ADDRESS_PLACEHOLDER = "[address]"

# What staff and files may call each reason: its value, or the label the staff pages show
# (defined once, with every other label).
REASON_LABELS = {reason: label_for(reason) for reason in SuppressionReason}

# Loose header names (after header_key) -> our field.
SUPPRESSION_COLUMNS = {
    "email": "email",
    "emailaddress": "email",
    "reason": "reason",
    "suppressionreason": "reason",
    "note": "note",
    "notes": "note",
    "comment": "note",
}
SUPPRESSION_FIELDS = ("email", "reason", "note")


# --- the keyed hash -----------------------------------------------------------------------


def hash_keys() -> list[bytes]:
    """The HMAC keys, current first: derived from SECRET_KEY, then from each fallback key."""
    config = current_app.config
    secrets = [config["SECRET_KEY"], *reversed(config.get("SECRET_KEY_FALLBACKS", []))]
    return [hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest() for secret in secrets]


def email_hash(normalised_email: str) -> str:
    """The keyed hash of a normalised address under the current key."""
    return keyed_hash(hash_keys()[0], normalised_email)


def keyed_hash(key: bytes, normalised_email: str) -> str:
    """The address hashed under one key from hash_keys(): for hashing many addresses at once
    without deriving the keys again for each."""
    return hmac.digest(key, normalised_email.encode(), "sha256").hex()


def _all_hashes(normalised_email: str) -> list[str]:
    """The address hashed under every accepted key, so rotation never lifts a suppression."""
    return [keyed_hash(key, normalised_email) for key in hash_keys()]


def _without_address(text: str, normalised_email: str) -> str:
    """The text with the address taken out: notes and audit details never keep it (a bounce
    reply, for one, usually quotes the address it refused)."""
    return re.sub(re.escape(normalised_email), ADDRESS_PLACEHOLDER, text, flags=re.IGNORECASE)


# --- reading the list ---------------------------------------------------------------------


def is_suppressed(normalised_email: str) -> bool:
    """True when the address is on the suppression list."""
    hashes = _all_hashes(normalised_email)
    found = db.session.execute(
        sa.select(Suppression.id).where(Suppression.email_hash.in_(hashes)).limit(1)
    ).first()
    return found is not None


def suppression_for(normalised_email: str) -> Suppression | None:
    """The suppression of an address under any accepted key, or None."""
    hashes = _all_hashes(normalised_email)
    return db.session.scalar(
        sa.select(Suppression).where(Suppression.email_hash.in_(hashes)).order_by(Suppression.id).limit(1)
    )


def suppression_for_customer(customer: Customer) -> Suppression | None:
    """A customer's suppression. An erased customer's address is gone, so theirs is found by
    the hash their row keeps."""
    if customer.status == CustomerStatus.ERASED:
        return db.session.scalar(sa.select(Suppression).where(Suppression.email_hash == customer.email_hash))
    return suppression_for(customer.email)


@dataclass(frozen=True)
class SuppressionRow:
    """One suppression as the staff page shows it. `email` and `customer_id` name the customer
    with that hash when one exists and is not erased; for an erased suppression, never."""

    id: int
    reason: SuppressionReason
    note: str
    created_at: datetime
    email: str | None
    customer_id: int | None


@dataclass
class SuppressionPage:
    """One page of suppressions, newest first, and the keyset cursor to the next (older) page."""

    rows: list[SuppressionRow]
    next_before: int | None


def _rows_query() -> sa.Select:
    """Suppressions with the address of a known, not erased customer, in one outer join."""
    shown = sa.and_(
        Customer.email_hash == Suppression.email_hash,
        Customer.status != CustomerStatus.ERASED,
        Suppression.reason != SuppressionReason.ERASED,
    )
    return sa.select(
        Suppression.id,
        Suppression.reason,
        Suppression.note,
        Suppression.created_at,
        Customer.email,
        Customer.id.label("customer_id"),
    ).outerjoin(Customer, shown)


def list_suppressions(
    *, reason: SuppressionReason | None = None, before_id: int | None = None, limit: int = 50
) -> SuppressionPage:
    """Suppressions newest first, optionally of one reason, keyset-paginated by id."""
    query = _rows_query().order_by(Suppression.id.desc()).limit(limit + 1)
    if reason is not None:
        query = query.where(Suppression.reason == reason)
    if before_id:
        query = query.where(Suppression.id < before_id)
    rows = [SuppressionRow(**row._asdict()) for row in db.session.execute(query)]
    next_before = rows[limit - 1].id if len(rows) > limit else None
    return SuppressionPage(rows[:limit], next_before)


def get_suppression(suppression_id: int) -> SuppressionRow:
    """One suppression as the staff page shows it, or NotFound."""
    row = db.session.execute(_rows_query().where(Suppression.id == suppression_id)).first()
    if row is None:
        raise NotFound(f"no suppression #{suppression_id}")
    return SuppressionRow(**row._asdict())


# --- adding -------------------------------------------------------------------------------


def suppress(normalised_email: str, reason: SuppressionReason, now: datetime, note: str = "") -> bool:
    """Add the address to the list (the caller commits). True if it was not there before."""
    if "@" not in normalised_email:
        # An erased customer's placeholder (an old unsubscribe link, a late triage): their real
        # address is already suppressed for good, and the placeholder is worth no row.
        return False
    if is_suppressed(normalised_email):
        return False
    hashed = email_hash(normalised_email)
    note = _without_address(note, normalised_email)[:NOTE_LIMIT]
    statement = (
        upsert(Suppression.__table__)
        .values(email_hash=hashed, reason=reason.value, note=note, created_at=now)
        .on_conflict_do_nothing(index_elements=["email_hash"])
    )
    db.session.execute(statement)
    db.session.execute(
        sa.update(Customer)
        .where(Customer.email == normalised_email, Customer.status == CustomerStatus.ACTIVE)
        .values(status=CustomerStatus.SUPPRESSED, updated_at=now)
    )
    return True


def add_suppression(
    email: str,
    reason: SuppressionReason = SuppressionReason.MANUAL,
    *,
    note: str = "",
    actor_id: int | None,
    now: datetime,
) -> Suppression:
    """Suppress an address by hand (admins). The note keeps no copy of the address.

    Raises InvalidInput for a bad address, an address already suppressed, or the reason
    "erased", which only erasing a customer gives."""
    address = customers.normalise_email(email)
    if reason == SuppressionReason.ERASED:
        raise InvalidInput("reason: “Erased” is set by erasing a customer, not by hand")
    try:
        note = clean_text(note or "", NOTE_LIMIT)
    except ValueError as exc:
        raise InvalidInput(f"note: {exc}") from exc
    existing = suppression_for(address)
    if existing is not None:
        raise InvalidInput(
            f"That address is already suppressed ({REASON_LABELS[existing.reason]}, "
            f"since {existing.created_at:%d %b %Y})."
        )
    suppress(address, reason, now, note)
    added = suppression_for(address)
    audit.record("suppression.add", "suppression", added.id, actor_id=actor_id, detail=reason.value, now=now)
    db.session.commit()
    return added


def suppress_erased(normalised_email: str, now: datetime) -> SuppressionReason | None:
    """Make sure the address is suppressed for good, as erased (the caller commits).

    An existing suppression keeps its row and time but becomes "erased", so it can never be
    lifted; its note is replaced, since staff may have written personal details there. The row
    is re-keyed under the current key: this is the last time the address is known.
    Returns the reason it was suppressed for before, or None if it was not."""
    hashes = _all_hashes(normalised_email)
    rows = list(
        db.session.scalars(
            sa.select(Suppression).where(Suppression.email_hash.in_(hashes)).order_by(Suppression.id)
        )
    )
    if not rows:
        db.session.execute(
            upsert(Suppression.__table__)
            .values(email_hash=hashes[0], reason=SuppressionReason.ERASED.value, note="", created_at=now)
            .on_conflict_do_nothing(index_elements=["email_hash"])
        )
        return None
    previous = rows[0].reason
    for row in rows:
        if row.reason != SuppressionReason.ERASED:
            row.note = f"Suppressed as {REASON_LABELS[row.reason].lower()} before the customer was erased."
            row.reason = SuppressionReason.ERASED
    if not any(row.email_hash == hashes[0] for row in rows):
        rows[0].email_hash = hashes[0]
    return previous


# --- lifting ------------------------------------------------------------------------------


def lift_suppression(suppression_id: int, *, reason: str, actor_id: int | None, now: datetime) -> None:
    """Take a suppression off the list (admins), recording why. The matching customer becomes
    active again unless something else still forbids emailing them.

    Refused (InvalidInput) without a reason, for an erased customer's suppression, and while
    the customer's record says they do not accept marketing."""
    try:
        reason = clean_text(reason or "", NOTE_LIMIT)
    except ValueError as exc:
        raise InvalidInput(f"reason: {exc}") from exc
    if not reason:
        raise InvalidInput("reason: say why the suppression is lifted; the reason is recorded")
    suppression = db.session.get(Suppression, suppression_id)
    if suppression is None:
        raise NotFound(f"no suppression #{suppression_id}")
    if suppression.reason == SuppressionReason.ERASED:
        raise InvalidInput("This address belongs to an erased customer: its suppression can never be lifted.")
    customer = db.session.scalar(
        sa.select(Customer).where(
            Customer.email_hash == suppression.email_hash, Customer.status != CustomerStatus.ERASED
        )
    )
    if customer is not None and customer.accepts_marketing is False:
        # Lifting would let a campaign email someone who said no to marketing; the consent
        # recorded on the customer must change first (an import with accepts_marketing = yes).
        raise InvalidInput(
            "This customer does not accept marketing emails (accepts_marketing is no): "
            "import their consent first, then lift the suppression."
        )
    lifted = suppression.reason
    if customer is not None:
        reason = _without_address(reason, customer.email)
    db.session.delete(suppression)
    db.session.flush()
    # A row for the same address under another key still counts.
    if (
        customer is not None
        and customer.status == CustomerStatus.SUPPRESSED
        and not is_suppressed(customer.email)
    ):
        customer.status = CustomerStatus.ACTIVE
        customer.updated_at = now
    audit.record(
        "suppression.lift",
        "suppression",
        suppression_id,
        actor_id=actor_id,
        detail=f"{lifted.value}: {reason}",
        now=now,
    )
    db.session.commit()


# --- importing a list ---------------------------------------------------------------------


def parse_reason(value: str) -> SuppressionReason:
    """A reason as files write it: its value or its label, in any case and spacing; empty is
    manual."""
    key = header_key(value)
    if not key:
        return SuppressionReason.MANUAL
    for reason, label in REASON_LABELS.items():
        if key in (header_key(reason.value), header_key(label)):
            return reason
    expected = ", ".join(reason.value for reason in SuppressionReason)
    raise ValueError(f"not a suppression reason (expected one of: {expected})")


def import_suppressions(
    stream: IO[bytes],
    name: str,
    *,
    now: datetime,
    strict: bool = False,
    day_first: bool = False,
    mapping: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    error_report: IO[str] | None = None,
) -> ImportSummary:
    """Import a list of addresses to suppress: email (required), reason and note (optional).

    New addresses are added; addresses already suppressed are left as they are (an import never
    changes or lifts a suppression) and counted unchanged; customers with a listed address become
    suppressed. Bad rows are skipped and reported by line and column, and written to
    error_report (CSV) when given; with strict, any bad row means nothing is saved. The file has
    no dates: day_first is accepted so that every importer is called alike. `mapping` names the
    file's column for a field ({"Adresse": "email"}) where the headers are not recognised.

    Raises UnreadableFile when the file cannot be read or has no email column."""
    from app.services.imports import ImportSummary  # imports uses this module for its hashes

    table = open_csv(stream, name)
    columns = _columns(table, mapping)
    summary = ImportSummary(file=name)
    report = ErrorReport(error_report) if error_report is not None else None
    batch: dict[str, dict] = {}
    try:
        for line, raw in table.rows:
            record = _parse_row(raw, columns, name, line, summary, report)
            if record is not None:
                batch[record["email"]] = record  # a later row for the same address wins
            if len(batch) >= BATCH_SIZE:
                _write_batch(batch, summary, now)
                if progress:
                    progress(len(batch))
                batch = {}
        if batch:
            _write_batch(batch, summary, now)
            if progress:
                progress(len(batch))
    except BaseException:
        db.session.rollback()
        raise
    if strict and summary.errors:
        db.session.rollback()
        return summary
    audit.record(
        "suppression.import",
        "suppression",
        detail=f"{summary.imported} added, {summary.unchanged} already suppressed, {summary.skipped} skipped",
        now=now,
    )
    db.session.commit()
    summary.committed = True
    return summary


def _columns(table: CsvRows, mapping: dict[str, str] | None) -> dict[str, str]:
    """The file's column for each field, found as for customers and orders."""
    positions = column_positions(table, SUPPRESSION_COLUMNS, SUPPRESSION_FIELDS, ("email",), mapping)
    return {field_name: table.columns[index] for field_name, index in positions.items()}


def _parse_row(
    raw: dict[str, str],
    columns: dict[str, str],
    file: str,
    line: int,
    summary: ImportSummary,
    report: ErrorReport | None,
) -> dict | None:
    """One row to {email, reason, note}, or None after recording why it was refused."""
    values = {field_name: raw.get(column, "") for field_name, column in columns.items()}
    current = "email"
    try:
        email = customers.normalise_email(values["email"])
        current = "reason"
        reason = parse_reason(values.get("reason", ""))
        current = "note"
        note = _without_address(clean_text(values.get("note", ""), NOTE_LIMIT), email)
    except (InvalidInput, ValueError) as exc:
        error = RowError(file, line, columns[current], values.get(current, ""), str(exc))
        summary.skipped += 1
        summary.errors.append(error)
        if report is not None:
            report.add(error)
        return None
    return {"email": email, "reason": reason, "note": note}


def _write_batch(batch: dict[str, dict], summary: ImportSummary, now: datetime) -> None:
    """Add the addresses not yet suppressed and suppress their customers: one SELECT, one
    INSERT and one UPDATE per batch."""
    keys = hash_keys()
    hashes = {email: [keyed_hash(key, email) for key in keys] for email in batch}
    known = set(
        db.session.scalars(
            sa.select(Suppression.email_hash).where(
                Suppression.email_hash.in_([hashed for every in hashes.values() for hashed in every])
            )
        )
    )
    new = [
        {
            "email_hash": hashes[email][0],
            "reason": record["reason"].value,
            "note": record["note"],
            "created_at": now,
        }
        for email, record in batch.items()
        if known.isdisjoint(hashes[email])
    ]
    if new:
        db.session.execute(
            upsert(Suppression.__table__).on_conflict_do_nothing(index_elements=["email_hash"]), new
        )
    summary.imported += len(new)
    summary.unchanged += len(batch) - len(new)
    db.session.execute(
        sa.update(Customer.__table__)
        .where(
            Customer.__table__.c.email.in_(list(batch)),
            Customer.__table__.c.status == CustomerStatus.ACTIVE.value,
        )
        .values(status=CustomerStatus.SUPPRESSED.value, updated_at=now)
    )
