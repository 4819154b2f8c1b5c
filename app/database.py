"""Engine settings per database: SQLite gets WAL, a busy timeout, foreign keys and
transactions that take the write lock when they begin; PostgreSQL runs through psycopg 3."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

import sqlalchemy as sa
from flask import Flask, request

from app.extensions import db

T = TypeVar("T")

try:
    import fcntl
except ImportError:  # not on Windows: there, processes meet on SQLite's busy_timeout
    fcntl = None  # type: ignore[assignment]

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


def engine_options(app: Flask) -> None:
    """Before the engine is made: a SQLite file is never dropped by a server, so its pooled
    connections need no ping before each use (PostgreSQL's keep theirs: a restarted server or a
    proxy's timeout ends them)."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        options["pool_pre_ping"] = False
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options


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


# Statements compiled for a dialect: (statement, column keys, dialect name, driver) -> _Compiled.
_compiled: dict[tuple, _Compiled] = {}


class _Compiled:
    """A statement's SQL for one dialect, the values bound in the statement itself, the names the
    caller must give, the order of the parameters (for positional drivers) and the driver
    conversions of the values (dates, enums, booleans)."""

    def __init__(self, statement: sa.Executable, dialect: sa.Dialect, column_keys: tuple[str, ...]) -> None:
        done = statement.compile(dialect=dialect, column_keys=list(column_keys) or None)
        self.sql = done.string
        self.order = tuple(done.positiontup) if done.positional and done.positiontup else None
        self.processors = dict(done._bind_processors)
        # Values the caller must give: the statement's own bind parameters, and the columns whose
        # default SQLAlchemy would compute in Python (not run here; leaving them out would store
        # NULL).
        prefetch = [column.key for column in (*done.insert_prefetch, *done.update_prefetch)]
        self.required = frozenset([*(name for name, bind in done.binds.items() if bind.required), *prefetch])
        self.fixed = {name: value for name, value in done.params.items() if name not in self.required}

    def parameters(self, values: dict[str, object]) -> tuple | dict:
        missing = self.required - values.keys()
        if missing:
            raise KeyError(f"no value for {', '.join(sorted(missing))}")
        merged = {**self.fixed, **values}
        for name, process in self.processors.items():
            if name in merged:
                merged[name] = process(merged[name])
        return tuple(merged[name] for name in self.order) if self.order is not None else merged


def _compile(statement: sa.Executable, column_keys: tuple[str, ...] = ()) -> _Compiled:
    dialect = db.engine.dialect
    key = (statement, column_keys, dialect.name, dialect.driver)
    compiled = _compiled.get(key)
    if compiled is None:
        compiled = _compiled[key] = _Compiled(statement, dialect, column_keys)
    return compiled


def first_row(statement: sa.Select, values: dict[str, object]) -> tuple | None:
    """The first row of a Core SELECT, run on the driver's own cursor: for the few reads on the
    hot path of a page (a survey link's state), where SQLAlchemy's execution around a one-row
    SELECT costs several times the query. The statement is compiled once per dialect; the values
    go to the driver as bound parameters, and the row comes back as the driver gives it (no
    type conversion: select plain columns and comparisons). On SQLite the SELECT runs on its
    own, which is its own read transaction, and never takes the write lock."""
    compiled = _compile(statement)
    connection = db.engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(compiled.sql, compiled.parameters(values))
            return cursor.fetchone()
        finally:
            cursor.close()
    finally:
        connection.close()  # back to the pool, which ends any transaction the driver began


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


# The lock file that orders writers across processes, opened once per process (pid, descriptor).
_writer_file: dict[str, tuple[int, int]] = {}


class _Write:
    """One caller's work waiting for a shared transaction: its result or error once committed,
    or `lead` when its thread is to write the next group itself."""

    __slots__ = ("done", "error", "lead", "result", "work")

    def __init__(self, work: Callable[[Writes], object]) -> None:
        self.work = work
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None
        self.lead = False


class _GroupCommit:
    """Short writes from the threads of one process, committed together (see write_together)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiting: list[_Write] = []
        self._leading = False

    def run(self, work: Callable[[Writes], T]) -> T:
        write = _Write(work)
        with self._mutex:
            self._waiting.append(write)
            lead = not self._leading
            self._leading = True
        if not lead:
            write.done.wait()
        if lead or write.lead:
            try:
                self._write_group()
            finally:
                self._hand_over()
        if write.error is not None:
            raise write.error
        return write.result  # type: ignore[return-value]

    def _take(self) -> list[_Write]:
        with self._mutex:
            group, self._waiting = self._waiting, []
        return group

    def _write_group(self) -> None:
        """Take the process lock, then every write waiting by then, and commit them. Whatever
        stops the group as a whole (the lock, a lost connection) is each of its callers' error."""
        group: list[_Write] = []
        try:
            with _process_lock():
                group = self._take()
                _commit_group(group)
        except BaseException as exc:
            group = group or self._take()
            for write in group:
                write.error = write.error or exc
        finally:
            for write in group:
                write.lead = False
                write.done.set()

    def _hand_over(self) -> None:
        """The next caller that arrived meanwhile writes the next group; or nobody is leading."""
        with self._mutex:
            if self._waiting:
                following = self._waiting[0]
                following.lead = True
                following.done.set()
            else:
                self._leading = False


_inserts: dict[sa.Table, sa.Insert] = {}  # one INSERT per table, so that its compilations are kept


class Writes:
    """What a write_together work is given: statements run on the driver's cursor, inside the
    transaction the work shares with the rest of its group."""

    def __init__(self, cursor) -> None:
        self._cursor = cursor

    def execute(self, statement: sa.Executable, values: dict[str, object]) -> int:
        """Run a Core UPDATE or DELETE with these values; the number of rows it touched."""
        return self._run(_compile(statement), values)

    def insert(self, table: sa.Table, values: dict[str, object]) -> int:
        """Insert one row of `table` with these column values (and no Python-side defaults)."""
        statement = _inserts.get(table)
        if statement is None:
            statement = _inserts.setdefault(table, sa.insert(table))
        return self._run(_compile(statement, tuple(values)), values)

    def _run(self, compiled: _Compiled, values: dict[str, object]) -> int:
        self._cursor.execute(compiled.sql, compiled.parameters(values))
        return self._cursor.rowcount


def _commit_group(group: list[_Write]) -> None:
    """Every write of the group in one transaction. If a write fails, each is written again in a
    transaction of its own, so that one caller's error (an answer sent twice) is theirs alone;
    if the database itself fails (busy past its timeout, gone), every caller hears of it at once
    rather than each waiting out the timeout again."""
    connection = db.engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            failure = _group_transaction(connection, cursor, group)
            if failure is None:
                return
            if len(group) == 1 or isinstance(failure, sa.exc.OperationalError):
                for write in group:
                    write.error = failure
                return
            for write in group:
                write.error = _group_transaction(connection, cursor, [write])
        finally:
            cursor.close()
    finally:
        connection.close()  # back to the pool


def _group_transaction(connection, cursor, group: list[_Write]) -> Exception | None:
    """The group's works in one transaction, committed; or what stopped it (all rolled back)."""
    dialect = db.engine.dialect
    writes = Writes(cursor)
    try:
        try:
            if dialect.name == "sqlite":
                if connection.info.get(_FOREIGN_KEYS_OFF):  # lent to a bulk load before
                    cursor.execute("PRAGMA foreign_keys = ON")
                    connection.info[_FOREIGN_KEYS_OFF] = False
                cursor.execute("BEGIN IMMEDIATE")
            for write in group:
                write.result = write.work(writes)
            connection.commit()
        except dialect.loaded_dbapi.Error as exc:
            # As SQLAlchemy would raise it (IntegrityError, OperationalError...), for the callers.
            raise sa.exc.DBAPIError.instance(None, None, exc, dialect.loaded_dbapi.Error) from exc
        return None
    except Exception as exc:
        connection.rollback()
        return exc


_groups: dict[int, _GroupCommit] = {}
_groups_lock = threading.Lock()


def write_together(work: Callable[[Writes], T]) -> T:
    """Run `work`, which writes through the Writes it is given, and commit it; return what it
    returns, or raise what it raised (nothing of it is then stored).

    On SQLite the writes of concurrent requests in this process are committed together: the
    first caller writes, and callers that arrive meanwhile wait and go in the next group, written
    by the first of them. One write lock and one commit then serve several answers, where each
    answer taking the lock in turn spent most of its time waiting for Python's interpreter lock
    between its statements while other threads ran. Processes (gunicorn's workers) take turns
    on an advisory lock on a file beside the database, which hands over at once; SQLite's own
    busy handler would sleep 1, 2, 5, 10 ms... between tries. Writers that do not come through
    here (imports, commands) still meet on busy_timeout. The statements run on the driver's
    cursor, outside the ORM session, which this leaves alone. On PostgreSQL, where writers do
    not block each other, each work runs in a transaction of its own."""
    engine = db.engine
    if engine.dialect.name != "sqlite":
        write = _Write(work)
        _commit_group([write])
        if write.error is not None:
            raise write.error
        return write.result  # type: ignore[return-value]
    group = _groups.get(id(engine))
    if group is None:
        with _groups_lock:
            group = _groups.setdefault(id(engine), _GroupCommit())
    return group.run(work)


@contextmanager
def _process_lock() -> Iterator[None]:
    """The cross-process writer lock of this app's SQLite file (none for an in-memory one)."""
    descriptor = _lock_file(db.engine.url.database or "")
    if descriptor is None:
        yield
        return
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)


def _lock_file(database: str) -> int | None:
    """This process's descriptor of `<database>-writer`, or None for an in-memory database or
    where advisory file locks do not exist. Called by the one thread writing a group."""
    if fcntl is None or not database or database == ":memory:" or database.startswith("file:"):
        return None
    opened = _writer_file.get(database)
    if opened is not None and opened[0] == os.getpid():
        return opened[1]
    # A forked worker gets its own descriptor: flock is held per open file, not per process.
    descriptor = os.open(f"{database}-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    _writer_file[database] = (os.getpid(), descriptor)
    return descriptor
