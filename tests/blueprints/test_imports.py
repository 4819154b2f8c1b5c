"""Uploading a CSV on the staff pages: it imports in the background, on a real Celery worker."""

from __future__ import annotations

import io
import time

import sqlalchemy as sa

from app.extensions import db
from app.models import Customer, ImportJob, ImportStatus, Order, StaffRole
from app.services import import_jobs
from tests.conftest import csrf_token, log_in, make_staff

CSV = b"email,first_name,total_spent\nada@example.com,Ada,10\nnot-an-email,Bob,5\n=cmd|' /C calc'!A0,Eve,1\n"


def upload(client, content: bytes, name: str = "customers.csv", **fields):
    page = client.get("/staff/imports/")
    data = {"csrf_token": csrf_token(page.data), "kind": "customers", "file": (io.BytesIO(content), name)}
    data.update(fields)
    return client.post("/staff/imports/", data=data, content_type="multipart/form-data")


def wait_for(app, job_id: int, seconds: float = 30) -> ImportJob:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with app.app_context():
            job = db.session.get(ImportJob, job_id)
            if job.status in (ImportStatus.DONE, ImportStatus.FAILED):
                db.session.expunge(job)
                return job
        time.sleep(0.1)
    raise AssertionError(f"import {job_id} did not finish in {seconds} s")


def test_an_upload_imports_in_the_background_with_a_report_of_bad_rows(worker_app):
    client = worker_app.test_client()
    log_in(client, "admin@example.com")
    reply = upload(client, CSV)
    assert reply.status_code == 302
    job_url = reply.headers["Location"]
    job_id = int(job_url.rstrip("/").rsplit("/", 1)[1])

    job = wait_for(worker_app, job_id)

    assert job.status == ImportStatus.DONE
    assert (job.imported, job.skipped) == (1, 2)
    page = client.get(job_url).get_data(as_text=True)
    assert "Done. 1 imported, 0 updated, 0 unchanged, 2 skipped" in page
    with client.get(f"{job_url}/errors.csv") as report:
        assert report.status_code == 200
        assert report.headers["Content-Disposition"].startswith("attachment")
        lines = report.get_data(as_text=True).splitlines()
    assert lines[0] == "line,column,value,reason"
    assert lines[1].startswith("3,email,not-an-email,")
    assert lines[2].startswith("4,email,'=cmd|")  # a formula is never handed to a spreadsheet
    with worker_app.app_context():
        assert db.session.scalar(sa.select(Customer.email)) == "ada@example.com"


def test_a_file_that_cannot_be_read_fails_with_its_reason_and_changes_nothing(worker_app):
    client = worker_app.test_client()
    log_in(client, "admin@example.com")
    reply = upload(client, b"name,phone\nAda,1\n")
    job = wait_for(worker_app, int(reply.headers["Location"].rsplit("/", 1)[1]))
    assert job.status == ImportStatus.FAILED
    assert "no email column" in job.message
    assert "Nothing was imported" in client.get(reply.headers["Location"]).get_data(as_text=True)
    with worker_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(Customer.id))) == 0


def test_an_upload_reads_unrecognised_headers_through_a_mapping_and_keeps_its_source(worker_app):
    client = worker_app.test_client()
    log_in(client, "admin@example.com")
    content = "Bestellnummer;E-Mail;Datum;Betrag;Währung\nA-1;ada@example.com;2024-01-05;12,50;EUR\n".encode()
    reply = upload(
        client,
        content,
        name="bestellungen.csv",
        kind="orders",
        mapping="Bestellnummer=order_id\r\nE-Mail=email\n\nDatum=placed_at\nBetrag=total\nWährung=currency",
        source="webshop",
    )
    assert reply.status_code == 302
    job = wait_for(worker_app, int(reply.headers["Location"].rsplit("/", 1)[1]))
    assert job.status == ImportStatus.DONE, job.message
    assert job.imported == 1
    with worker_app.app_context():
        order = db.session.scalar(sa.select(Order))
        assert (order.source, order.external_id, order.amount) == ("webshop", "A-1", 1250)


def test_a_wrong_mapping_or_source_is_refused_before_anything_is_kept(staff_client, app):
    bad_line = upload(staff_client, b"E-Mail\nada@example.com\n", mapping="E-Mail=email\nnonsense")
    assert bad_line.status_code == 400
    assert "column names, line 2: &#39;nonsense&#39; is not COLUMN=FIELD" in bad_line.get_data(as_text=True)
    source_for_customers = upload(staff_client, b"email\nada@example.com\n", source="shopify")
    assert source_for_customers.status_code == 400
    assert "source: only orders files have a source" in source_for_customers.get_data(as_text=True)
    bad_source = upload(staff_client, b"email\nada@example.com\n", kind="orders", source="my shop!")
    assert bad_source.status_code == 400
    assert "Letters, digits, dots, dashes and underscores only." in bad_source.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count(ImportJob.id))) == 0


def test_the_progress_page_shows_a_queued_job_and_refreshes(staff_client):
    reply = upload(staff_client, CSV)  # no worker runs in this test: the job stays queued
    page = staff_client.get(reply.headers["Location"]).get_data(as_text=True)
    assert "Waiting for a worker" in page
    assert '<meta http-equiv="refresh"' in page


def test_an_upload_without_a_file_or_with_an_empty_one_is_refused(staff_client):
    page = staff_client.get("/staff/imports/")
    missing = staff_client.post(
        "/staff/imports/",
        data={"csrf_token": csrf_token(page.data), "kind": "customers"},
        content_type="multipart/form-data",
    )
    assert missing.status_code == 400
    assert "Choose a file." in missing.get_data(as_text=True)
    empty = upload(staff_client, b"")
    assert empty.status_code == 400
    assert "the file is empty" in empty.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count(ImportJob.id))) == 0


def test_a_file_over_the_upload_limit_gets_a_clear_413_page(app, staff_client):
    app.config["MAX_CONTENT_LENGTH"] = 1024
    reply = upload(staff_client, b"email\n" + b"a@example.com\n" * 200)
    assert reply.status_code == 413
    assert "That file is too large" in reply.get_data(as_text=True)


def test_only_admins_can_import(client, app):
    make_staff("viewer@example.com", StaffRole.VIEWER)
    log_in(client, "viewer@example.com")
    assert client.get("/staff/imports/").status_code == 403


def test_the_end_of_the_file_is_reported_at_once_and_the_page_says_the_rows_are_being_saved(
    staff_client, app, monkeypatch
):
    monkeypatch.setattr(import_jobs, "PROGRESS_EVERY_SECONDS", 3600)
    reply = upload(staff_client, CSV)  # queued: no worker runs in this test
    job_id = int(reply.headers["Location"].rstrip("/").rsplit("/", 1)[1])
    with app.app_context():
        job = db.session.get(ImportJob, job_id)
        job.status = ImportStatus.RUNNING
        db.session.commit()
        stream = io.BytesIO(CSV)
        progress = import_jobs._Progress(job, stream)
        stream.seek(10)
        progress(1)
        stream.seek(20)
        progress(1)  # within PROGRESS_EVERY_SECONDS of the last report: not reported
        db.session.expire_all()
        assert import_jobs.percent_done(db.session.get(ImportJob, job_id)) == round(100 * 10 / len(CSV))
    page = staff_client.get(f"/staff/imports/{job_id}").get_data(as_text=True)
    assert f"Importing: {round(100 * 10 / len(CSV))}% read." in page

    with app.app_context():
        stream.seek(len(CSV))
        progress(1)  # the end of the file, reported however soon it comes
        db.session.expire_all()
        assert import_jobs.percent_done(db.session.get(ImportJob, job_id)) == 100
    page = staff_client.get(f"/staff/imports/{job_id}").get_data(as_text=True)
    assert "The file is read. Saving the rows" in page
    assert '<meta http-equiv="refresh"' in page
