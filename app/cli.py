"""`flask` commands: thin wrappers over the services, with progress and a one-line summary."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup

from app.exceptions import InvalidInput, NotFound, UnreadableFile
from app.models import CustomerStatus, StaffRole, utcnow
from app.services import (
    campaign_content,
    campaigns,
    csvfiles,
    demo,
    exports,
    imports,
    scoring,
    staff,
    suppressions,
)
from app.services.customers import CustomerFilters

MAX_ERRORS_SHOWN = 50


def init_app(app: Flask) -> None:
    """Register the command groups."""
    for group in (staff_cli, customers_cli, orders_cli, campaigns_cli, demo_cli, suppressions_cli):
        app.cli.add_command(group)
    app.cli.add_command(worker)


staff_cli = AppGroup("staff", help="Staff accounts.")
customers_cli = AppGroup("customers", help="Customer data.")
orders_cli = AppGroup("orders", help="Order history.")
campaigns_cli = AppGroup("campaigns", help="Win-back campaigns.")
demo_cli = AppGroup("demo", help="Demonstration data.")
suppressions_cli = AppGroup("suppressions", help="The suppression list: addresses never to email.")


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@staff_cli.command("create")
@click.argument("email")
@click.option(
    "--role", type=click.Choice([role.value for role in StaffRole]), default="admin", show_default=True
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def staff_create(email: str, role: str, password_stdin: bool) -> None:
    """Create a staff account. Without --password-stdin a password is generated and printed."""
    import secrets

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        generated = False
    else:
        password, generated = secrets.token_urlsafe(12), True
    try:
        user = staff.create_staff(email, StaffRole(role), password, now=utcnow())
    except InvalidInput as exc:
        _fail(str(exc), 1)
    click.echo(f"Created {user.role.value} {user.email} (id {user.id})")
    if generated:
        click.echo(f"Password: {password}")


def _mapping(_context: click.Context, _parameter: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """The --map options, each `COLUMN=FIELD`, as {column: field}."""
    try:
        return csvfiles.parse_mapping(values)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc).partition(": ")[2]) from exc


def _import_file(importer, file: Path, *, strict: bool, **options) -> None:
    """Run one import service on a file with a progress bar by bytes read, list the first bad
    rows on stderr and print the summary. Exit 1 with --strict and bad rows; 2 when the file
    cannot be read or recognised, or a --map is wrong."""
    try:
        handle = file.open("rb")
        size = file.stat().st_size
    except OSError as exc:
        _fail(f"{file}: cannot be read ({exc.strerror})")
    with handle, click.progressbar(length=size, label=f"Importing {file.name}", file=sys.stderr) as bar:
        last = 0

        def progress(_rows: int) -> None:
            nonlocal last
            position = handle.tell()
            bar.update(position - last)
            last = position

        try:
            summary = importer(handle, str(file), now=utcnow(), strict=strict, progress=progress, **options)
        except (UnreadableFile, InvalidInput) as exc:
            _fail(f"{exc} (nothing was imported)")
    shown = summary.errors[:MAX_ERRORS_SHOWN]
    for error in shown:
        click.echo(str(error), err=True)
    if summary.skipped > len(shown):
        click.echo(f"... and {summary.skipped - len(shown)} more bad rows", err=True)
    click.echo(summary.line())
    if strict and summary.skipped:
        sys.exit(1)


_MAP_HELP = 'Read a column as one of our fields, e.g. --map "E-Mail=email" (repeatable).'


@customers_cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--strict", is_flag=True, help="Import nothing if any row is bad (exit 1).")
@click.option("--day-first", is_flag=True, help="Read 03/04/2025 as 3 April 2025.")
@click.option("--map", "mapping", multiple=True, callback=_mapping, metavar="COLUMN=FIELD", help=_MAP_HELP)
def customers_import(file: Path, strict: bool, day_first: bool, mapping: dict[str, str]) -> None:
    """Import a customers CSV (see docs/csv-formats.md)."""
    _import_file(imports.import_customers, file, strict=strict, day_first=day_first, mapping=mapping)


@orders_cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--strict", is_flag=True, help="Import nothing if any row is bad (exit 1).")
@click.option("--day-first", is_flag=True, help="Read 03/04/2025 as 3 April 2025.")
@click.option("--map", "mapping", multiple=True, callback=_mapping, metavar="COLUMN=FIELD", help=_MAP_HELP)
@click.option("--source", default=None, help='Where the orders come from (default "csv", or "shopify").')
def orders_import(
    file: Path, strict: bool, day_first: bool, mapping: dict[str, str], source: str | None
) -> None:
    """Import an orders CSV; customers' purchase figures follow from their orders."""
    _import_file(
        imports.import_orders, file, strict=strict, day_first=day_first, mapping=mapping, source=source
    )


@customers_cli.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--lapsed", is_flag=True, help="Only lapsed customers (LAPSE_AFTER_DAYS).")
@click.option("--segment", default=None, help='Only this segment, e.g. "At risk".')
@click.option("--status", type=click.Choice([status.value for status in CustomerStatus]), default=None)
@click.option("--search", default="", help="Only customers whose email or name contains this.")
def customers_export(file: Path, lapsed: bool, segment: str | None, status: str | None, search: str) -> None:
    """Write customers to a CSV file: purchase figures, RFM scores, segment and win-back priority."""

    if segment is not None and segment not in set(scoring.Segment):
        _fail(f"--segment: not a segment: {segment!r} (one of: {', '.join(scoring.Segment)})", 1)
    filters = CustomerFilters(
        search=search,
        status=CustomerStatus(status) if status else None,
        segment=segment,
        lapsed_only=lapsed,
    )
    try:
        written = exports.export_to_file(file, filters, now=utcnow())
    except OSError as exc:
        _fail(f"{file}: cannot be written ({exc.strerror})")
    click.echo(f"{file}: {written} customers exported")


@customers_cli.command("rescore")
def customers_rescore() -> None:
    """Recompute every customer's RFM scores, segment and win-back priority (imports do this too)."""
    import time

    started = time.perf_counter()
    scored = scoring.recompute_scores(now=utcnow())
    click.echo(f"{scored} customers scored in {time.perf_counter() - started:.1f} s")


@campaigns_cli.command("list")
def campaigns_list() -> None:
    """Every campaign with its invitation counts."""
    rows = campaigns.list_campaigns()
    if not rows:
        click.echo("No campaigns yet.")
    for campaign in rows:
        counts = campaigns.status_counts(campaign.id)
        shown = ", ".join(f"{count} {status.value}" for status, count in counts.items() if count)
        paused = f"\tpaused: {campaign.pause_reason}" if campaign.pause_reason else ""
        click.echo(
            f"{campaign.id}\t{campaign.status.value}\t{campaign.name}\t{shown or 'no invitations'}{paused}"
        )


@campaigns_cli.command("create")
@click.option("--name", required=True, help="A name staff will recognise.")
@click.option("--lapsed-days", type=click.IntRange(min=1), default=None, help="Default: LAPSE_AFTER_DAYS.")
@click.option(
    "--segment",
    "segments",
    multiple=True,
    metavar="NAME",
    help='Only customers in this RFM segment (repeatable), e.g. "At risk". Default: every segment.',
)
@click.option("--min-spent", default=None, metavar="AMOUNT", help="Only customers who spent at least this.")
@click.option(
    "--cooldown-days",
    type=click.IntRange(min=0),
    default=None,
    help="Leave out anyone emailed in this many days. Default: CONTACT_COOLDOWN_DAYS; 0: no cooldown.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="At most this many customers, best win-back priority first.",
)
@click.option("--subject", default=None, help="The email subject.")
@click.option(
    "--reminder-days",
    default=None,
    metavar="DAYS",
    help='Remind those who have not answered this many days after the first send, e.g. "4,10"; '
    '"" for none. Default: REMINDER_DAYS.',
)
@click.option(
    "--body-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The email body (a template with placeholders, UTF-8). Default: the standard body.",
)
@click.option("--offer-code", default=None, help="One offer code for everyone ({{ offer_code }}).")
@click.option(
    "--offer-codes-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Unique offer codes, one per line or a one-column CSV: one for each recipient.",
)
def campaigns_create(
    name: str,
    lapsed_days: int | None,
    segments: tuple[str, ...],
    min_spent: str | None,
    cooldown_days: int | None,
    limit: int | None,
    subject: str | None,
    reminder_days: str | None,
    body_file: Path | None,
    offer_code: str | None,
    offer_codes_file: Path | None,
) -> None:
    """Create a campaign for lapsed customers; prints its id first."""
    if offer_code is not None and offer_codes_file is not None:
        raise click.UsageError("--offer-code and --offer-codes-file cannot be used together")
    body = _read_text(body_file, "body file") if body_file else None
    try:
        offer_codes = (
            campaign_content.parse_offer_codes(_read_text(offer_codes_file, "offer codes file"))
            if offer_codes_file
            else None
        )
        campaign, queued = campaigns.create_campaign(
            name=name,
            lapsed_days=lapsed_days,
            segments=segments,
            min_spent=min_spent,
            cooldown_days=cooldown_days,
            limit=limit,
            subject=subject,
            reminder_days=reminder_days,
            now=utcnow(),
            body=body,
            offer_code=offer_code,
            offer_codes=offer_codes,
        )
    except InvalidInput as exc:
        _fail(str(exc), 1)
    click.echo(f"{campaign.id} created: {campaign.name!r}, {queued} invitations queued")
    click.echo(f"audience: {campaigns.audience_rule(campaign).describe()}")
    if offer_codes:
        click.echo(f"{queued} offer codes handed out, {len(offer_codes) - queued} left over")


def _read_text(path: Path, what: str) -> str:
    """A UTF-8 text file, or exit 2 (nothing changed)."""
    try:
        return _read_file(path, what).decode("utf-8-sig")
    except UnicodeDecodeError:
        _fail(f"{what} {path} is not UTF-8 text; nothing was created", 2)


def _read_file(path: Path, what: str) -> bytes:
    """A file's bytes, or exit 2 (nothing changed) when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        _fail(f"{what} {path} cannot be read: {exc.strerror or exc}; nothing was created", 2)


@campaigns_cli.command("send")
@click.argument("campaign_id", type=int)
def campaigns_send(campaign_id: int) -> None:
    """Send a campaign's queued invitations in the foreground. Safe to run twice."""
    import smtplib

    try:
        queued = campaigns.count_queued(campaign_id)
        campaigns.get_campaign(campaign_id)
    except NotFound as exc:
        _fail(str(exc), 1)
    with click.progressbar(length=queued, label=f"Sending campaign {campaign_id}", file=sys.stderr) as bar:
        try:
            summary = campaigns.send_campaign(campaign_id, progress=bar.update)
        except InvalidInput as exc:
            _fail(str(exc), 1)
        except (smtplib.SMTPException, OSError) as exc:
            _fail(f"the mail server failed: {exc}. Unsent invitations stay queued; run again to retry.", 1)
    click.echo(summary.line(campaign_id))
    if summary.paused_reason:
        sys.exit(1)


@campaigns_cli.command("tick")
@click.option("--background", is_flag=True, help="Hand due reminders and retries to the background workers.")
def campaigns_tick(background: bool) -> None:
    """Periodic upkeep, safe to run from cron every few minutes and from several machines:
    claims whose sender died go back to the queue, due reminders are sent, and invitations
    whose retry time has come are tried again."""
    import smtplib

    try:
        summary = campaigns.tick(enqueue=background)
    except (smtplib.SMTPException, OSError) as exc:
        _fail(f"the mail server failed: {exc}. Unsent messages stay due; the next tick tries again.", 1)
    click.echo(summary.line())
    if summary.reminders and summary.reminders.paused_reason:
        sys.exit(1)


@suppressions_cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--strict", is_flag=True, help="Import nothing if any row is bad (exit 1).")
@click.option("--map", "mapping", multiple=True, callback=_mapping, metavar="COLUMN=FIELD", help=_MAP_HELP)
def suppressions_import(file: Path, strict: bool, mapping: dict[str, str]) -> None:
    """Import a list of addresses never to email: email, and optional reason and note."""
    _import_file(suppressions.import_suppressions, file, strict=strict, mapping=mapping)


@demo_cli.command("load")
def demo_load() -> None:
    """Load demonstration data into an empty database (does nothing otherwise)."""
    result = demo.load_demo(now=utcnow())
    if result is None:
        click.echo(
            "The database already has data: demo not loaded. "
            f"(The demo's staff login is {demo.DEMO_EMAIL} / {demo.DEMO_PASSWORD}.)"
        )
        return
    click.echo(result.line())


@click.command("worker")
@click.option("--concurrency", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--loglevel", default="INFO", show_default=True)
def worker(concurrency: int, loglevel: str) -> None:
    """Run a background worker (Celery): uploaded imports, and more, run here."""
    from flask import current_app

    celery = current_app.extensions["celery"]
    celery.worker_main(
        ["worker", "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", loglevel]
    )
