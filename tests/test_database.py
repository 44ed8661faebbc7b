"""The SQLite connection settings that durability and acknowledgement latency depend on."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from waquality.errors import StoreConflict, StoreUnavailable
from waquality.store import database
from waquality.store.database import Database, unavailable_on_error

PAGE = 4096


def _wal_frames(db: Database) -> int:
    """Frames in the WAL (``PRAGMA wal_checkpoint`` reports them, and moves what it can)."""
    with db.engine.connect() as conn:
        _busy, frames, _moved = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    return int(frames)


def _write_pages(db: Database, transactions: int) -> None:
    with db.write() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS filler (body BLOB)"))
    for _ in range(transactions):
        with db.write() as conn:
            conn.execute(text("INSERT INTO filler VALUES (zeroblob(:n))"), {"n": 3 * PAGE})


def test_sqlite_commits_are_durable(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'durable.db'}")
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
    finally:
        db.dispose()


@pytest.mark.parametrize("checkpoints", [True, False])
def test_commits_checkpoint_the_wal_unless_told_not_to(tmp_path: Path, checkpoints: bool) -> None:
    db = Database(f"sqlite:///{tmp_path / 'wal.db'}", checkpoints=checkpoints)
    try:
        _write_pages(db, 400)  # at least 1,200 pages in small commits
        frames = _wal_frames(db)
        if checkpoints:
            assert frames < 1000  # a commit moved the WAL once it passed 1,000 pages
        else:
            assert frames >= 1200  # all of it waited for an explicit checkpoint
            db.checkpoint()
            _write_pages(db, 1)  # the next writer starts the WAL over
            assert _wal_frames(db) < 10
    finally:
        db.dispose()


def test_a_long_wal_starts_over_while_writers_never_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processing a backlog commits back to back: a checkpoint that only moves the WAL while
    others write never finishes before the next write, and the WAL would grow without end."""
    monkeypatch.setattr(database, "WAL_RESTART_PAGES", 200)
    db = Database(f"sqlite:///{tmp_path / 'busy.db'}", checkpoints=False)
    stop = threading.Event()
    written = 0

    def write() -> None:
        nonlocal written
        while not stop.is_set():
            _write_pages(db, 1)
            written += 3

    writer = threading.Thread(target=write)
    writer.start()
    try:
        longest = 0
        while written < 12_000:
            db.checkpoint()
            longest = max(longest, _wal_frames(db))
    finally:
        stop.set()
        writer.join()
        db.dispose()
    assert longest < 1500  # the WAL started over again and again


def _raised_from(error: Exception) -> BaseException:
    with pytest.raises(Exception) as caught, unavailable_on_error():
        raise error
    return caught.value


def test_driver_errors_are_told_apart_like_those_sqlalchemy_wraps() -> None:
    # Some writes (the inbox's, the COPY of acknowledged bodies) use the driver itself.
    full = _raised_from(sqlite3.OperationalError("database or disk is full"))
    assert isinstance(full, StoreUnavailable) and str(full) == "database or disk is full"
    gone = _raised_from(psycopg.OperationalError("connection failed\nDETAIL: more"))
    assert isinstance(gone, StoreUnavailable) and str(gone) == "connection failed"
    assert isinstance(_raised_from(psycopg.errors.SerializationFailure("retry")), StoreConflict)
    assert isinstance(_raised_from(psycopg.errors.DeadlockDetected("retry")), StoreConflict)
    bad = sqlite3.IntegrityError("UNIQUE constraint failed")
    assert _raised_from(bad) is bad  # a bug, not an outage: it goes up as it is
