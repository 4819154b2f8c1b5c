"""app/database.py: writes committed together (write_together), the writer lock shared by
processes on SQLite, and one-row reads on the driver's cursor (first_row)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from app import database
from app.extensions import db
from app.models import Setting, utcnow
from tests.conftest import make_app, tables_for

HOLD_LOCK = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(descriptor, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


def stored_keys() -> set[str]:
    db.session.rollback()
    return set(db.session.scalars(sa.select(Setting.key)))


def add_setting(key: str, *, fail: bool = False):
    def work(writes: database.Writes) -> str:
        writes.insert(Setting.__table__, {"key": key, "value": "v", "updated_at": utcnow()})
        if fail:
            raise ValueError(f"{key} refused")
        return key

    return work


def write_in_threads(app, works: list) -> list[tuple[str, object]]:
    """Each work in a thread of its own (with its own app context), all at once."""
    outcomes: list[tuple[str, object]] = [("", None)] * len(works)

    def run(index: int, work) -> None:
        with app.app_context():
            try:
                outcomes[index] = ("returned", database.write_together(work))
            except Exception as exc:
                outcomes[index] = ("raised", exc)

    threads = [threading.Thread(target=run, args=(index, work)) for index, work in enumerate(works)]
    for thread in threads:
        thread.start()
    return outcomes, threads


def hold_writer_lock() -> subprocess.Popen:
    """Another process holding the SQLite writer lock of the current app until released."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, f"{db.engine.url.database}-writer"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.fixture
def held_writer_lock(app):
    """Another process holding the SQLite writer lock until the test lets go of it."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("the writer lock is SQLite's")
    holder = hold_writer_lock()
    yield holder
    if holder.poll() is None:
        release(holder)


def release(holder) -> None:
    holder.stdin.close()
    holder.wait(timeout=10)
    holder.stdout.close()


def wait_for_waiting(count: int) -> None:
    group = database._groups[id(db.engine)]
    deadline = time.monotonic() + 10
    while len(group._waiting) < count:
        assert time.monotonic() < deadline, f"only {len(group._waiting)} writes queued"
        time.sleep(0.01)


def test_a_write_commits_and_returns_what_its_work_returns(app):
    assert database.write_together(add_setting("one")) == "one"
    assert stored_keys() == {"one"}


def test_a_failed_write_stores_nothing_and_raises_its_error(app):
    with pytest.raises(ValueError, match="bad refused"):
        database.write_together(add_setting("bad", fail=True))
    assert stored_keys() == set()


def test_a_writer_waits_while_another_process_holds_the_lock(app, held_writer_lock):
    outcomes, threads = write_in_threads(app, [add_setting("late")])
    threads[0].join(timeout=0.5)
    assert threads[0].is_alive()  # waiting for the other process
    assert stored_keys() == set()
    release(held_writer_lock)
    threads[0].join(timeout=10)
    assert outcomes == [("returned", "late")]
    assert stored_keys() == {"late"}


def test_writes_waiting_together_are_committed_in_one_transaction(app, held_writer_lock):
    checkouts = []  # every group takes one connection from the pool

    def count(*_args) -> None:
        checkouts.append(1)

    sa.event.listen(db.engine, "checkout", count)
    try:
        keys = [f"key-{number}" for number in range(6)]
        outcomes, threads = write_in_threads(app, [add_setting(key) for key in keys])
        wait_for_waiting(6)
        release(held_writer_lock)
        for thread in threads:
            thread.join(timeout=10)
    finally:
        sa.event.remove(db.engine, "checkout", count)
    assert sorted(outcomes) == sorted(("returned", key) for key in keys)
    assert len(checkouts) == 1
    assert stored_keys() == set(keys)


def test_one_failing_write_in_a_group_fails_alone(app, held_writer_lock):
    works = [add_setting(f"key-{number}") for number in range(5)] + [add_setting("bad", fail=True)]
    outcomes, threads = write_in_threads(app, works)
    wait_for_waiting(6)
    release(held_writer_lock)
    for thread in threads:
        thread.join(timeout=10)
    assert outcomes[:5] == [("returned", f"key-{number}") for number in range(5)]
    assert outcomes[5][0] == "raised"
    assert str(outcomes[5][1]) == "bad refused"
    assert stored_keys() == {f"key-{number}" for number in range(5)}


def test_many_threads_writing_at_once_lose_nothing(app):
    keys = [f"key-{number}" for number in range(40)]
    outcomes, threads = write_in_threads(app, [add_setting(key) for key in keys])
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == sorted(("returned", key) for key in keys)
    assert stored_keys() == set(keys)


@pytest.fixture
def impatient_app(database, tmp_path, smtp_server):
    """SQLite with a busy timeout of 300 ms."""
    if database["name"] != "sqlite":
        pytest.skip("SQLite's busy timeout")
    with tables_for(
        make_app(database, tmp_path, smtp_server.port, SQLITE_BUSY_TIMEOUT_MS=300), database
    ) as app:
        yield app


def test_a_busy_database_fails_the_whole_group_at_once(impatient_app):
    app = impatient_app
    held_writer_lock = hold_writer_lock()
    import_lock = sqlite3.connect(db.engine.url.database)  # a long import, say
    import_lock.execute("BEGIN IMMEDIATE")
    try:
        outcomes, threads = write_in_threads(app, [add_setting(f"key-{number}") for number in range(4)])
        wait_for_waiting(4)
        started = time.monotonic()
        release(held_writer_lock)
        for thread in threads:
            thread.join(timeout=30)
        took = time.monotonic() - started
    finally:
        import_lock.rollback()
        import_lock.close()
        if held_writer_lock.poll() is None:
            release(held_writer_lock)
    assert all(kind == "raised" and isinstance(error, sa.exc.OperationalError) for kind, error in outcomes)
    # One wait for the lock, not one per answer (4 x 300 ms) on top of it.
    assert took < 1.0
    assert stored_keys() == set()


def test_a_key_written_twice_raises_sqlalchemys_integrity_error_and_keeps_the_first(app):
    database.write_together(add_setting("twice"))
    with pytest.raises(sa.exc.IntegrityError):
        database.write_together(add_setting("twice"))
    assert stored_keys() == {"twice"}


def test_an_update_counts_the_rows_it_touched(app):
    database.write_together(add_setting("counted"))
    statement = (
        sa.update(Setting.__table__)
        .where(Setting.__table__.c.key == sa.bindparam("wanted"))
        .values(value=sa.bindparam("new_value"), updated_at=sa.bindparam("now"))
    )

    def change(values: dict):
        return lambda writes: writes.execute(statement, values)

    assert database.write_together(change({"wanted": "counted", "new_value": "x", "now": utcnow()})) == 1
    assert database.write_together(change({"wanted": "none", "new_value": "x", "now": utcnow()})) == 0
    with pytest.raises(KeyError, match="new_value"):
        database.write_together(change({"wanted": "counted", "now": utcnow()}))
    db.session.rollback()
    assert db.session.get(Setting, "counted").value == "x"


def test_a_column_with_a_python_side_default_must_be_given(app):
    with pytest.raises(KeyError, match="updated_at"):
        database.write_together(lambda writes: writes.insert(Setting.__table__, {"key": "k", "value": "v"}))
    assert stored_keys() == set()


def test_first_row_reads_with_values_bound_in_the_statement_and_by_the_caller(app):
    db.session.add_all([Setting(key="a", value="first"), Setting(key="b", value="second")])
    db.session.commit()
    statement = sa.select(
        Setting.value,
        sa.select(Setting.value).where(Setting.key == "b").scalar_subquery(),
    ).where(Setting.key == sa.bindparam("key"))
    assert tuple(database.first_row(statement, {"key": "a"})) == ("first", "second")
    assert database.first_row(statement, {"key": "missing"}) is None
