"""Engine settings per database: SQLite gets WAL, a busy timeout, foreign keys and
transactions that take the write lock when they begin; PostgreSQL runs through psycopg 3."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import sqlalchemy as sa
from flask import Flask, request

from app.extensions import db

# Whether transactions on this thread may write. Commands, tasks and POSTs: yes. A GET only
# reads, so on SQLite it need not queue behind writers for the write lock (WAL readers never
# block); a GET that must record something writes first, before reading.
_may_write: ContextVar[bool] = ContextVar("winback_may_write", default=True)
READ_ONLY_METHODS = {"GET", "HEAD", "OPTIONS"}
# Whether SQLite transactions begun on this thread enforce foreign keys (the default). A bulk
# load whose every key comes from a join with the parent table in the same transaction may turn
# the per-row check off (see foreign_keys_unchecked).
_check_foreign_keys: ContextVar[bool] = ContextVar("winback_check_foreign_keys", default=True)
_FOREIGN_KEYS_OFF = "winback_foreign_keys_off"  # in a pooled connection's info while they are off


def init_app(app: Flask) -> None:
    """Attach the SQLite connection settings to the app's engine."""
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        return
    busy_timeout = int(app.config["SQLITE_BUSY_TIMEOUT_MS"])
    with app.app_context():
        engine = db.engine

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_timeout}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "memory":
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # Foreign keys can only be switched between transactions; every transaction sets them as
        # its thread asks, so a connection that had them off never lends that to the next user.
        info = connection.connection.info
        unchecked = not _check_foreign_keys.get()
        if unchecked != info.get(_FOREIGN_KEYS_OFF, False):
            connection.exec_driver_sql(f"PRAGMA foreign_keys = {'OFF' if unchecked else 'ON'}")
            info[_FOREIGN_KEYS_OFF] = unchecked
        # IMMEDIATE takes the write lock up front: two writers wait on busy_timeout instead of
        # failing with "database is locked" when a read transaction tries to upgrade.
        connection.exec_driver_sql("BEGIN IMMEDIATE" if _may_write.get() else "BEGIN")

    @app.before_request
    def _mark_read_only_requests() -> None:
        _may_write.set(request.method not in READ_ONLY_METHODS)

    @app.teardown_request
    def _reset(_error: BaseException | None) -> None:
        _may_write.set(True)


def set_write_intent(may_write: bool) -> None:
    """Say whether this thread's next SQLite transactions take the write lock when they begin
    (the default). Tests that read between requests turn it off so they never block the app."""
    _may_write.set(may_write)


@contextmanager
def write_intent(may_write: bool) -> Iterator[None]:
    """Within the block, SQLite transactions on this thread begin as `may_write` says: a long
    read that must not hold the write lock begins deferred, a short write begins IMMEDIATE."""
    token = _may_write.set(may_write)
    try:
        yield
    finally:
        _may_write.reset(token)


@contextmanager
def reading() -> Iterator[sa.Connection]:
    """A connection of its own, outside the ORM session, for reads: on SQLite its transaction
    never takes the write lock, even in a POST, so readers do not queue behind writers."""
    token = _may_write.set(False)
    try:
        with db.engine.connect() as connection:
            yield connection
    finally:
        _may_write.reset(token)


@contextmanager
def foreign_keys_unchecked() -> Iterator[None]:
    """SQLite transactions that begin within the block do not check foreign keys row by row.

    Only for a bulk load whose every key is taken from a join with the parent table in the same
    write transaction, so that no row can break a key; a transaction already under way keeps
    its checks. PostgreSQL is not affected."""
    token = _check_foreign_keys.set(False)
    try:
        yield
    finally:
        _check_foreign_keys.reset(token)


# One writing transaction at a time per process on SQLite (see writing()).
_writer = threading.Lock()


@contextmanager
def writing() -> Iterator[None]:
    """Around a short write transaction that commits or rolls back inside it. On SQLite, the
    threads of one process queue here for the write lock: a lock that wakes the next one at once,
    where SQLite's busy handler would sleep 1, 2, 5, 10 ms... between tries. Other processes
    still wait on busy_timeout. On PostgreSQL it does nothing: writers do not block each other."""
    if db.engine.dialect.name != "sqlite":
        yield
        return
    with _writer:
        yield
