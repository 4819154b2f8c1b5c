"""Fixtures: the app on SQLite (and on PostgreSQL when TEST_DATABASE_URL is set), its client and
CLI runner, logged-in staff, and a real SMTP server on loopback."""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from celery.contrib.testing.worker import start_worker
from flask import has_app_context
from flask.testing import FlaskClient, FlaskCliRunner

from app import create_app
from app.database import set_write_intent
from app.extensions import db
from app.models import StaffRole, utcnow
from app.services import staff
from config import TestingConfig, database_url

DATABASES = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])
PASSWORD = "correct horse battery"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- a real SMTP server -------------------------------------------------------------------


@dataclass
class SmtpSink:
    """What a loopback aiosmtpd server received, and how it should answer."""

    port: int = 0
    envelopes: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # (recipient substring, SMTP reply) pairs: RCPT TO for a matching address gets that reply.
    refuse: list[tuple[str, str]] = field(default_factory=list)
    # A reply to MAIL FROM instead of 250, e.g. "553 5.1.8 Sender address rejected".
    refuse_sender: str | None = None

    @property
    def messages(self) -> list[EmailMessage]:
        with self.lock:
            contents = [envelope.content for envelope in self.envelopes]
        return [BytesParser(policy=policy.default).parsebytes(content) for content in contents]

    def clear(self) -> None:
        with self.lock:
            self.envelopes.clear()
        self.refuse.clear()
        self.refuse_sender = None

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.refuse_sender:
            return self.refuse_sender
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        for needle, reply in self.refuse:
            if needle in address:
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture(scope="session")
def smtp_server():
    sink = SmtpSink(port=free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    yield sink
    controller.stop()


@pytest.fixture
def smtp(smtp_server):
    """The loopback SMTP server, emptied for this test."""
    smtp_server.clear()
    yield smtp_server
    smtp_server.clear()


# --- databases ----------------------------------------------------------------------------


@pytest.fixture(scope="session", params=DATABASES)
def database(request):
    """Which database this pass of the suite runs on: "sqlite", then "postgresql" if configured.

    PostgreSQL tests run in a schema of their own, dropped at the end."""
    if request.param == "sqlite":
        yield {"name": "sqlite", "schema": None}
        return
    url = database_url(os.environ["TEST_DATABASE_URL"])
    schema = f"winback_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    yield {"name": "postgresql", "schema": schema, "url": url}
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    engine.dispose()


def database_settings(database: dict, tmp_path) -> dict:
    """App settings that point at this test's database."""
    if database["name"] == "sqlite":
        return {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'test.db'}"}
    return {
        "SQLALCHEMY_DATABASE_URI": database["url"],
        "SQLALCHEMY_ENGINE_OPTIONS": {
            "pool_pre_ping": True,
            "connect_args": {"options": f"-csearch_path={database['schema']}"},
        },
    }


def end_test_transaction() -> None:
    """Commit what the test wrote and end its read snapshot, so that the app can write and the
    test then sees what the app did (SQLite readers keep the snapshot their transaction began)."""
    if has_app_context():
        db.session.commit()


class IsolatedClient(FlaskClient):
    """A test client whose requests run as in production: each in a fresh application context
    (its own `g`, database session and logged-in user), not in the test's pushed one."""

    def open(self, *args, **kwargs):
        end_test_transaction()
        response = contextvars.Context().run(super().open, *args, **kwargs)
        end_test_transaction()
        return response


class IsolatedCliRunner(FlaskCliRunner):
    """A CLI runner whose commands run in their own application context, as `flask` does."""

    def invoke(self, *args, **kwargs):
        end_test_transaction()
        result = contextvars.Context().run(super().invoke, *args, **kwargs)
        end_test_transaction()
        return result


def make_app(database: dict, tmp_path, smtp_port: int, **overrides):
    """A testing app on the given database, with its own instance folder."""
    instance = tmp_path / "instance"
    instance.mkdir(exist_ok=True)

    class Config(TestingConfig):
        INSTANCE_PATH = str(instance)

    settings = {**database_settings(database, tmp_path), "MAIL_PORT": smtp_port, **overrides}
    app = create_app(Config, **settings)
    app.test_client_class = IsolatedClient
    app.test_cli_runner_class = IsolatedCliRunner
    return app


def empty_tables() -> None:
    """Remove every row (PostgreSQL) so the next test starts clean."""
    table_names = ", ".join(table.name for table in db.metadata.sorted_tables)
    db.session.execute(sa.text(f"TRUNCATE {table_names} RESTART IDENTITY CASCADE"))
    db.session.commit()


@contextlib.contextmanager
def tables_for(app, database: dict):
    """The app's tables made, and an application context pushed, for one test; emptied after."""
    with app.app_context():
        db.create_all()
        # The test's own reads must not hold SQLite's write lock while the app handles requests.
        set_write_intent(False)
        yield app
        set_write_intent(True)
        db.session.remove()
        if database["name"] == "postgresql":
            empty_tables()
            db.session.remove()
        db.engine.dispose()


@pytest.fixture
def app(database, tmp_path, smtp_server):
    """The app with empty tables; an application context is pushed for the test."""
    with tables_for(make_app(database, tmp_path, smtp_server.port), database) as app:
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


# --- staff --------------------------------------------------------------------------------


def csrf_token(html: bytes | str) -> str:
    """The CSRF token from a rendered form."""
    text = html.decode() if isinstance(html, bytes) else html
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', text)
    assert match, "no CSRF token in the page"
    return match.group(1)


def log_in(client, email: str, password: str = PASSWORD):
    """Log in through the real form; returns the response."""
    page = client.get("/staff/login")
    return client.post(
        "/staff/login",
        data={"email": email, "password": password, "csrf_token": csrf_token(page.data)},
    )


def make_staff(email: str = "admin@example.com", role: StaffRole = StaffRole.ADMIN):
    return staff.create_staff(email, role, PASSWORD, now=utcnow())


@pytest.fixture
def admin(app):
    return make_staff()


@pytest.fixture
def staff_client(client, admin):
    """A client logged in as an admin."""
    response = log_in(client, admin.email)
    assert response.status_code == 302
    return client


# --- a real background worker -------------------------------------------------------------

BROKERS = ["filesystem"] + (["redis"] if os.environ.get("TEST_REDIS_URL") else [])


@pytest.fixture(params=BROKERS)
def worker_app(request, database, tmp_path, smtp_server):
    """An app whose background work goes through a real broker (the instance folder, and Redis
    when TEST_REDIS_URL is set) to a real Celery worker running beside it. An admin
    (admin@example.com) exists. No application context is pushed: push one to use the database."""
    overrides = {}
    if request.param == "redis":
        overrides["CELERY_BROKER_URL"] = os.environ["TEST_REDIS_URL"]
    app = make_app(database, tmp_path, smtp_server.port, **overrides)
    with app.app_context():
        db.create_all()
        make_staff()
    with start_worker(app.extensions["celery"], pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield app
    with app.app_context():
        if database["name"] == "postgresql":
            empty_tables()
        db.session.remove()
        db.engine.dispose()
