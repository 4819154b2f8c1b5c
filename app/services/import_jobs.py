"""Imports uploaded on the staff pages: the file is kept, a job row is queued, and a worker
runs the same import the command line runs, reporting progress as it reads."""

from __future__ import annotations

import json
import logging
import math
import secrets
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO

import sqlalchemy as sa
from flask import current_app

from app.exceptions import InvalidInput, NotFound, UnreadableFile
from app.extensions import db
from app.models import ImportJob, ImportKind, ImportStatus, utcnow
from app.services import audit, imports, suppressions
from app.services.imports import ImportSummary
from app.services.sql import dialect_name
from app.tasks import RUN_IMPORT

log = logging.getLogger("winback.imports")
PROGRESS_EVERY_SECONDS = 0.5
MAX_OPTIONS_LENGTH = 1000  # the job's options column


def _importer(kind: ImportKind) -> Callable[..., ImportSummary]:
    """The import service for a kind of file: the same one `flask ... import` calls."""
    return {
        ImportKind.CUSTOMERS: lambda: imports.import_customers,
        ImportKind.ORDERS: lambda: imports.import_orders,
        ImportKind.SUPPRESSIONS: lambda: suppressions.import_suppressions,
    }[kind]()


def upload_folder() -> Path:
    folder = Path(current_app.instance_path) / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start_import(
    kind: ImportKind,
    filename: str,
    stream: IO[bytes],
    *,
    day_first: bool,
    strict: bool,
    actor_id: int | None,
    now: datetime,
    mapping: dict[str, str] | None = None,
    source: str | None = None,
) -> ImportJob:
    """Keep the uploaded file, queue a job for it and hand it to a worker. `mapping` and
    `source` are the command line's --map and --source (source for orders only)."""
    if source and kind != ImportKind.ORDERS:
        raise InvalidInput("source: only orders files have a source")
    options = json.dumps({"day_first": day_first, "strict": strict, "map": mapping or {}, "source": source})
    if len(options) > MAX_OPTIONS_LENGTH:
        raise InvalidInput("column names: too many or too long; map only the columns that need it")
    safe_name = Path(filename or "upload.csv").name[:255] or "upload.csv"
    stored = upload_folder() / f"{secrets.token_hex(8)}.csv"
    with stored.open("wb") as target:
        shutil.copyfileobj(stream, target, length=1024 * 1024)
    size = stored.stat().st_size
    if size == 0:
        stored.unlink()
        raise InvalidInput(f"{safe_name}: the file is empty")
    job = ImportJob(
        kind=kind,
        filename=safe_name,
        stored_path=str(stored),
        options=options,
        bytes_total=size,
        created_by_id=actor_id,
        created_at=now,
    )
    db.session.add(job)
    db.session.flush()
    audit.record("import.start", "import_job", job.id, actor_id=actor_id, now=now, detail=kind.value)
    db.session.commit()
    current_app.extensions["celery"].send_task(RUN_IMPORT, args=[job.id])
    return job


class _Progress:
    """Reports how far the worker has read. PostgreSQL: on the job row, through a connection of
    its own (the import's transaction commits only at the end). SQLite allows one writer at a
    time, so there it goes to a small file beside the upload, read by the progress page."""

    def __init__(self, job: ImportJob, stream: IO[bytes]) -> None:
        self.job_id = job.id
        self.stream = stream
        self.total = job.bytes_total
        self.last = -math.inf  # the first call reports
        self.reported = 0
        self.on_postgresql = dialect_name() == "postgresql"
        self.file = progress_file(job)

    def __call__(self, _rows: int) -> None:
        now = time.monotonic()
        position = self.stream.tell()
        # The end of the file is always reported: the page then says the rows are being saved,
        # which on a large file can take longer than the reading did.
        at_end = position >= self.total > self.reported
        if now - self.last < PROGRESS_EVERY_SECONDS and not at_end:
            return
        self.last = now
        self.reported = position
        if self.on_postgresql:
            with db.engine.begin() as connection:
                connection.execute(
                    sa.update(ImportJob).where(ImportJob.id == self.job_id).values(bytes_done=position)
                )
        else:
            temporary = self.file.with_suffix(".tmp")
            temporary.write_text(str(position))
            temporary.replace(self.file)


def progress_file(job: ImportJob) -> Path:
    return Path(job.stored_path).with_suffix(".progress")


def error_report_file(job: ImportJob) -> Path:
    return Path(job.stored_path).with_suffix(".errors.csv")


def run_import_job(job_id: int, *, now: datetime) -> ImportJob:
    """Run a queued import to the end and record what it did. Running it again after it finished
    changes nothing; after a worker died mid-way it starts over (imports are all or nothing)."""
    job = get_job(job_id)
    if job.status in (ImportStatus.DONE, ImportStatus.FAILED):
        return job
    job.status = ImportStatus.RUNNING
    job.started_at = now
    db.session.commit()
    options = json.loads(job.options)
    extra = {"source": options["source"]} if options.get("source") else {}
    report_path = error_report_file(job)
    try:
        with open(job.stored_path, "rb") as stream, report_path.open("w", newline="") as report:
            summary = _importer(job.kind)(
                stream,
                job.filename,
                now=now,
                strict=bool(options.get("strict")),
                day_first=bool(options.get("day_first")),
                mapping=options.get("map") or None,
                progress=_Progress(job, stream),
                error_report=report,
                **extra,
            )
    except (UnreadableFile, InvalidInput) as exc:
        return _finish(job, ImportStatus.FAILED, message=f"{exc} Nothing was imported.")
    except Exception:
        log.exception("import job %s failed", job_id)
        _finish(
            job,
            ImportStatus.FAILED,
            message="The import stopped on an unexpected error. Nothing was imported.",
        )
        raise
    if not summary.skipped:
        report_path.unlink(missing_ok=True)
    counts = {
        name: getattr(summary, name) for name in ("imported", "updated", "unchanged", "skipped", "suppressed")
    }
    return _finish(
        job,
        ImportStatus.DONE if summary.committed else ImportStatus.FAILED,
        message=summary.line(),
        bytes_done=job.bytes_total,
        error_report_path=str(report_path) if summary.skipped else None,
        **counts,
    )


def _finish(job: ImportJob, status: ImportStatus, *, message: str, **values) -> ImportJob:
    """Record how a job ended, in a transaction of its own."""
    db.session.rollback()  # whatever a failed import left behind is not ours to keep
    job = get_job(job.id)
    job.status = status
    job.message = message[:1000]
    job.finished_at = utcnow()
    for name, value in values.items():
        setattr(job, name, value)
    db.session.commit()
    progress_file(job).unlink(missing_ok=True)
    return job


def get_job(job_id: int) -> ImportJob:
    """One import job, or NotFound."""
    job = db.session.get(ImportJob, job_id)
    if job is None:
        raise NotFound(f"no import #{job_id}")
    return job


def percent_done(job: ImportJob) -> int:
    """How far a job has read its file, in percent, wherever its progress is kept."""
    if job.status == ImportStatus.DONE:
        return 100
    done = job.bytes_done
    if job.status == ImportStatus.RUNNING and done == 0:
        try:
            done = int(progress_file(job).read_text() or 0)
        except (FileNotFoundError, ValueError):
            done = 0
    return min(100, round(100 * done / job.bytes_total)) if job.bytes_total else 0


def list_jobs(limit: int = 20) -> list[ImportJob]:
    """The latest imports, newest first."""
    return list(db.session.scalars(sa.select(ImportJob).order_by(ImportJob.id.desc()).limit(limit)))
