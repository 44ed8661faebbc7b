"""Connections to SQLite or PostgreSQL, with durable commits on both.

SQLite runs in WAL mode with ``synchronous=FULL`` (a commit survives a power cut) and its writes
are serialised deliberately: every write transaction passes through :class:`WriteGate`, where
webhook acknowledgements go before background processing. PostgreSQL commits with
``synchronous_commit=on`` and needs no gate: row locks and ``SKIP LOCKED`` do that work.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.context import BaseContext
from typing import Any, NamedTuple

import orjson
import psycopg
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import Connection, Engine, Table, create_engine, event, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError

from waquality.errors import ConfigError, StoreConflict, StoreUnavailable
from waquality.sync import SharedCondition

_CONFLICT_STATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
# A WAL this long (in pages) is moved into the database file even if writers must wait
# briefly; once it starts over, its file is cut back to 64 MiB (journal_size_limit).
WAL_RESTART_PAGES = 16_384
WAL_TAIL_PAGES = 1_024  # at most this much is moved while writers wait
WAL_CATCH_UP_PASSES = 4  # moves without the gate before giving up until the next checkpoint
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA journal_size_limit=67108864",
)


class _Cell:
    """A mutable number, shaped like ``multiprocessing.Value`` (``.value``)."""

    def __init__(self) -> None:
        self.value = 0


class _Shared(NamedTuple):
    cond: Any  # guards the two numbers below
    busy: Any  # 1 while a writer holds the gate
    waiting: Any  # priority writers waiting


GATE_POLL = 0.5  # seconds: how often a waiter looks again whether the gate was reset


class WriteGate:
    """One writer at a time; the ``priority`` side (acknowledgements) goes first.

    Made with a multiprocessing context, the gate is shared with a child process (passed to it
    at spawn), so SQLite's single writer is coordinated across processes by us, promptly, and
    not by SQLite's busy handler, which sleeps in steps of up to 100 ms. If that process dies
    while it holds the gate, :meth:`reset` (before a new child is spawned) forgets its hold:
    waiters move to the new gate within ``GATE_POLL`` seconds. SQLite's own locking still
    protects the file if a dying writer and a new one overlap.
    """

    def __init__(self, context: BaseContext | None = None) -> None:
        self._context = context
        self._shared = self._make()

    def _make(self) -> _Shared:
        context = self._context
        if context is None:
            return _Shared(threading.Condition(), _Cell(), _Cell())
        return _Shared(
            SharedCondition(context),
            context.Value("b", 0, lock=False),
            context.Value("i", 0, lock=False),
        )

    def __getstate__(self) -> dict[str, Any]:
        return {"_context": None, "_shared": self._shared}  # a child never resets

    def reset(self) -> None:
        """Forget every hold and wait: the process that held the gate died."""
        self._shared = self._make()

    @contextmanager
    def priority(self, deadline: float | None = None) -> Iterator[None]:
        """``deadline`` (``time.monotonic()``): give up then with :class:`StoreUnavailable`."""
        shared = self._enter(priority=True, deadline=deadline)
        try:
            yield
        finally:
            self._release(shared)

    @contextmanager
    def background(self) -> Iterator[None]:
        shared = self._enter(priority=False, deadline=None)
        try:
            yield
        finally:
            self._release(shared)

    def _enter(self, *, priority: bool, deadline: float | None) -> _Shared:
        while True:
            shared = self._shared
            if not shared.cond.acquire(True, self._pause(deadline)):
                continue
            try:
                if priority:
                    shared.waiting.value += 1
                try:
                    while shared.busy.value or (not priority and shared.waiting.value):
                        if self._shared is not shared:
                            break  # reset: try the new gate
                        shared.cond.wait(self._pause(deadline))
                    else:
                        shared.busy.value = 1
                        return shared
                finally:
                    if priority:
                        shared.waiting.value -= 1
            finally:
                shared.cond.release()

    @staticmethod
    def _pause(deadline: float | None) -> float:
        if deadline is None:
            return GATE_POLL
        left = deadline - time.monotonic()
        if left <= 0:
            raise StoreUnavailable("write timeout: another writer holds the database")
        return min(GATE_POLL, left)

    @staticmethod
    def _release(shared: _Shared) -> None:
        with shared.cond:
            shared.busy.value = 0
            shared.cond.notify_all()


class _NoGate(WriteGate):
    @contextmanager
    def priority(self, deadline: float | None = None) -> Iterator[None]:
        yield

    @contextmanager
    def background(self) -> Iterator[None]:
        yield


class Database:
    """The engine plus the rules for writing to it."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 8,
        write_timeout: float = 10.0,
        gate: WriteGate | None = None,
        checkpoints: bool = True,
    ) -> None:
        """``checkpoints=False`` (SQLite): commits never move the WAL into the database file,
        so that no commit holds the write gate longer than its own writes take; something else
        must then call :meth:`checkpoint` regularly (``serve``'s housekeeping does)."""
        try:
            parsed = make_url(url)
        except Exception as exc:
            raise ConfigError(f"database URL cannot be parsed: {type(exc).__name__}") from None
        self.url = parsed
        self.dialect = parsed.get_backend_name()
        self.write_timeout = write_timeout
        self._ack_conn: Connection | None = None
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(url, pool_size, int(write_timeout * 1000), checkpoints)
            self.gate: WriteGate = gate or WriteGate()
        elif self.dialect == "postgresql":
            self.engine = _postgresql_engine(url, pool_size, write_timeout)
            self.gate = _NoGate()
        else:
            raise ConfigError(
                f"unsupported database {self.dialect!r}: use sqlite:///PATH or "
                "postgresql+psycopg://USER@HOST/DB"
            )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def insert(self, table: Table) -> sqlite.Insert | postgresql.Insert:
        """An INSERT that knows ON CONFLICT on this database."""
        if self.is_sqlite:
            return sqlite.insert(table)
        return postgresql.insert(table)

    @contextmanager
    def write(self, *, priority: bool = False) -> Iterator[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on exit.

        ``priority`` writes (webhook acknowledgements, from one thread) use one dedicated
        connection that never runs SQLite's WAL checkpoints: those happen on other connections
        (processing commits, :meth:`checkpoint`), off the acknowledgement path. They wait at
        most ``write_timeout`` in all, for the gate and SQLite's lock together, then raise
        :class:`StoreUnavailable`: a webhook is answered 503 in time, not after two timeouts.
        """
        if not priority:
            with self.gate.background(), unavailable_on_error(), self.engine.connect() as conn:
                conn = conn.execution_options(write=True)
                with conn.begin():
                    yield conn
            return
        deadline = time.monotonic() + self.write_timeout
        with self.gate.priority(deadline), unavailable_on_error():
            conn = self._ack_connection()
            if self.is_sqlite:  # the file's lock gets what is left after the gate
                left = max(0, int((deadline - time.monotonic()) * 1000))
                driver = conn.connection.driver_connection
                assert driver is not None
                driver.execute(f"PRAGMA busy_timeout={left}")
            try:
                with conn.begin():
                    yield conn
            except BaseException:
                if conn.invalidated or conn.closed:
                    self._ack_conn = None
                raise

    def _ack_connection(self) -> Connection:
        if self._ack_conn is None or self._ack_conn.closed or self._ack_conn.invalidated:
            conn = self.engine.connect().execution_options(write=True)
            if self.is_sqlite:
                conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
                conn.commit()
            self._ack_conn = conn
        return self._ack_conn

    def checkpoint(self) -> None:
        """Move SQLite's WAL into the database file (no-op otherwise).

        Most of it moves without blocking anyone. The WAL starts over only once all of it has
        moved before the next write: with writers that never pause, as when processing works
        through a backlog, that never happens, and the WAL grows without end (gigabytes within
        minutes), every read slower as it grows. So once it is ``WAL_RESTART_PAGES`` long, what
        was written meanwhile is moved again, until that is at most ``WAL_TAIL_PAGES``, and
        then once more while this holds the write gate (a few milliseconds' work)."""
        if not self.is_sqlite:
            return
        with unavailable_on_error(), self.engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            pages = _checkpoint(driver)
            if pages < WAL_RESTART_PAGES:
                return
            for _ in range(WAL_CATCH_UP_PASSES):
                newer = _checkpoint(driver)
                if newer < pages:
                    return  # it started over
                if newer - pages <= WAL_TAIL_PAGES:
                    with self.gate.priority():  # ahead of processing, which may never pause
                        _checkpoint(driver)
                    return
                pages = newer

    def create_missing(self, conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
        """Insert rows that do not exist yet, without holding their locks in ``conn``.

        On PostgreSQL the insert commits on its own connection, so that the caller's
        transaction only ever locks rows with ``SELECT ... FOR UPDATE`` in one sorted order
        (and concurrent workers cannot deadlock on half-created rows). SQLite has one writer:
        the caller's connection does it.
        """
        statement = self.insert(table).on_conflict_do_nothing()
        if self.is_sqlite:
            conn.execute(statement, rows)
            return
        with unavailable_on_error(), self.engine.connect() as own, own.begin():
            own.execute(statement, rows)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with unavailable_on_error(), self.engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        if self._ack_conn is not None:
            self._ack_conn.close()
            self._ack_conn = None
        self.engine.dispose()


@contextmanager
def unavailable_on_error() -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        _raise_for(exc.orig, unavailable=isinstance(exc, OperationalError))
        if exc.connection_invalidated:
            raise StoreUnavailable(_describe(exc.orig or exc)) from exc
        raise
    except (sqlite3.Error, psycopg.Error) as exc:  # from writes that use the driver itself
        _raise_for(
            exc, unavailable=isinstance(exc, sqlite3.OperationalError | psycopg.OperationalError)
        )
        raise


def _raise_for(error: BaseException | None, *, unavailable: bool) -> None:
    if getattr(error, "sqlstate", None) in _CONFLICT_STATES:
        raise StoreConflict(_describe(error)) from error
    if unavailable:
        raise StoreUnavailable(_describe(error)) from error


def _describe(error: BaseException | None) -> str:
    text = str(error).strip().splitlines()[0] if error else ""
    return (text or type(error).__name__)[:200]


def json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _postgresql_engine(url: str, pool_size: int, write_timeout: float) -> Engine:
    engine = create_engine(
        url,
        json_serializer=json_dumps,
        json_deserializer=orjson.loads,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={
            "options": f"-c synchronous_commit=on -c lock_timeout={int(write_timeout * 1000)}",
            "connect_timeout": 10,
        },
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Lists (the arrays of bulk writes and key lookups) in the binary format: the text
        # format quotes and escapes every element in Python, which took longer than the
        # database's own work on the rows.
        dbapi_connection.adapters.register_dumper(list, ListBinaryDumper)

    return engine


def _checkpoint(driver: Any) -> int:
    """One passive checkpoint; returns the WAL's length in pages."""
    [(_, pages, _)] = driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    return int(pages)


def _sqlite_engine(url: str, pool_size: int, busy_timeout_ms: int, checkpoints: bool) -> Engine:
    engine = create_engine(
        url,
        json_serializer=json_dumps,
        json_deserializer=orjson.loads,
        hide_parameters=True,  # errors and logs never show values (customer data, tokens)
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" below decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (*SQLITE_PRAGMAS, f"PRAGMA busy_timeout={busy_timeout_ms}"):
            cursor.execute(pragma)
        if not checkpoints:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
