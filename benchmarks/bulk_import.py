"""Bulk import of a :class:`message_set.MessageSet` straight into the ``messages`` table, rows as
the tracker stores them (see :func:`waquality.domain.messages.merge`), in arrival order.

SQLite: ``executemany`` in transactions of :data:`CHUNK` rows, on a connection of its own with
a large page cache and ``synchronous=OFF``. PostgreSQL: text ``COPY``. On both the table's
secondary indexes (and PostgreSQL's primary key) are dropped first and built again from their
own definitions at the end, as any bulk load does; the table ends exactly as the migrations
made it. Nothing else is written: conversations, responses and aggregates come from a rebuild.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

import message_set as ms
from waquality.store import schema

CHUNK = 200_000
COLUMNS = (
    "wamid",
    "phone_number_id",
    "customer",
    "inbound",
    "kind",
    "at",
    "status",
    "sent_at",
    "delivered_at",
    "read_at",
    "failed_at",
    "error_code",
    "category",
    "sender_kind",
    "replies_to",
    "updated_at",
    "logged_at",
    "template",
    "experiments",
    "origin",
    "reply_id",
    "body",
)
_TIMES = ("at", "sent_at", "delivered_at", "read_at", "failed_at", "updated_at", "logged_at")


@dataclass(frozen=True, slots=True)
class Imported:
    rows: int
    seconds: float  # rows written
    index_seconds: float  # indexes built again (and, on PostgreSQL, ANALYZE)

    @property
    def rows_per_second(self) -> float:
        total = self.seconds + self.index_seconds
        return self.rows / total if total else 0.0


def check_columns() -> None:
    """Fail early when the table no longer has the columns this import writes."""
    missing = set(COLUMNS) - set(schema.messages.c.keys())
    if missing:
        raise RuntimeError(f"messages has no column {', '.join(sorted(missing))}")


Chunk = dict[str, list[Any]]


@dataclass(frozen=True, slots=True)
class Flavour:
    """How values are written: Python values for ``executemany``, or COPY's text."""

    null: Any
    true: Any
    false: Any
    integer: Callable[[int], Any]
    stamps: Callable[[np.ndarray[Any, Any]], list[Any]]


def chunks(found: ms.MessageSet, flavour: Flavour) -> Iterator[Chunk]:
    """Columns of :data:`CHUNK` rows at a time."""
    null = flavour.null
    for start in range(0, len(found), CHUNK):
        stop = min(len(found), start + CHUNK)
        part = slice(start, stop)
        kind = found.kind[part]
        category = found.category[part]
        buttons = (kind == 1) | (kind == 2)
        replies_to = found.replies_to[part]
        targets = iter(found.wamids_of(replies_to[replies_to >= 0]))
        rows: Chunk = {
            "wamid": found.wamids(start, stop),
            "phone_number_id": found.phone_of(start, stop),
            "customer": found.customer_of(start, stop),
            "inbound": [flavour.true if v else flavour.false for v in found.inbound[part].tolist()],
            "kind": _labels(kind, ms.KINDS, null),
            "status": _labels(found.status[part], ms.STATUSES, null),
            "error_code": [
                flavour.integer(c) if c else null for c in found.error_code[part].tolist()
            ],
            "category": _labels(category, ms.CATEGORIES, null),
            "sender_kind": [ms.SENDERS[s] for s in found.sender[part].tolist()],
            "replies_to": [next(targets) if r >= 0 else null for r in replies_to.tolist()],
            "template": _labels(found.template[part], ms.TEMPLATES, null),
            "experiments": ["null"] * (stop - start),  # JSON null, as the tracker stores None
            "origin": _labels(category, ms.CATEGORIES, null),
            "reply_id": _labels(found.reply_id[part], ms.BUTTONS, null),
            "body": _labels(np.where(buttons, -1, found.body[part]), ms.PHRASES, null),
        }
        titles = _labels(np.where(buttons, found.body[part], -1), ms.BUTTONS, null)
        rows["body"] = [
            t if t is not null else b for b, t in zip(rows["body"], titles, strict=True)
        ]
        rows["updated_at"] = flavour.stamps(found.updated_at[part])
        for name in _TIMES:
            if name != "updated_at":
                rows[name] = flavour.stamps(getattr(found, name)[part])
        yield rows


def _labels(codes: np.ndarray[Any, Any], names: tuple[str, ...], null: Any) -> list[Any]:
    return [names[c] if c >= 0 else null for c in codes.tolist()]


def _stamps(seconds: np.ndarray[Any, Any], suffix: bytes, null: Any) -> list[Any]:
    """``YYYY-MM-DD HH:MM:SS`` + ``suffix`` for each Unix time (-1: ``null``)."""
    present = seconds >= 0
    first = int(seconds[present].min()) // 86_400 if present.any() else 0
    days, clock = np.divmod(np.where(present, seconds, first * 86_400), 86_400)
    span = np.arange(first, int(days.max()) + 1 if len(days) else first + 1) * 86_400
    calendar = np.datetime_as_string(span.astype("datetime64[s]"), unit="D").astype("S10")
    width = 19 + len(suffix)
    grid = np.empty((len(seconds), width), dtype=np.uint8)
    grid[:, :10] = calendar.view(np.uint8).reshape(-1, 10)[days - first]
    grid[:, 10] = ord(" ")
    grid[:, 11:19] = _CLOCK[clock]
    grid[:, 19:] = np.frombuffer(suffix, dtype=np.uint8)
    values = as_strings(grid)
    for index in np.flatnonzero(~present).tolist():
        values[index] = null
    return values


def as_strings(grid: np.ndarray[Any, Any]) -> list[Any]:
    """The rows of an ASCII byte grid as str."""
    width = grid.shape[1]
    text = np.ascontiguousarray(grid).tobytes().decode("ascii")
    return [text[i : i + width] for i in range(0, len(text), width)]


def _clock() -> np.ndarray[Any, Any]:
    times = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86_400)]
    return np.frombuffer("".join(times).encode(), dtype=np.uint8).reshape(-1, 8)


_CLOCK = _clock()


# SQLAlchemy's text for a UTC time on SQLite: naive, microseconds always written
SQLITE = Flavour(None, True, False, int, lambda s: _stamps(s, b".000000", None))
POSTGRES = Flavour("\\N", "t", "f", str, lambda s: _stamps(s, b"+00", "\\N"))


def to_sqlite(path: str, found: ms.MessageSet, progress: Callable[[int], None]) -> Imported:
    check_columns()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-1000000")  # KiB: a gigabyte
        conn.execute("PRAGMA temp_store=MEMORY")
        indexes = [
            (name, sql)
            for name, sql in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'messages' AND sql IS NOT NULL"
            )
        ]
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        names, marks = ", ".join(COLUMNS), ", ".join("?" * len(COLUMNS))
        statement = f"INSERT INTO messages ({names}) VALUES ({marks})"  # noqa: S608 - constants
        began = time.perf_counter()
        done = 0
        for rows in chunks(found, SQLITE):
            conn.execute("BEGIN")
            conn.executemany(statement, zip(*(rows[c] for c in COLUMNS), strict=True))
            conn.execute("COMMIT")
            done += len(rows["wamid"])
            progress(done)
        loaded = time.perf_counter() - began
        began = time.perf_counter()
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return Imported(done, loaded, time.perf_counter() - began)
    finally:
        conn.close()


def to_postgres(conninfo: str, found: ms.MessageSet, progress: Callable[[int], None]) -> Imported:
    check_columns()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '1GB'")
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'messages'::regclass AND contype = 'p'"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'messages' "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint "
            "WHERE conrelid = 'messages'::regclass)"
        ).fetchall()
        for name, _ in constraints:
            conn.execute(f'ALTER TABLE messages DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        began = time.perf_counter()
        done = 0
        for rows in chunks(found, POSTGRES):
            lines = zip(*(rows[c] for c in COLUMNS), strict=True)
            data = "".join("\t".join(row) + "\n" for row in lines)
            with (
                conn.transaction(),
                conn.cursor() as cursor,
                cursor.copy(f"COPY messages ({', '.join(COLUMNS)}) FROM STDIN") as copy,
            ):
                copy.write(data.encode())
            done += len(rows["wamid"])
            progress(done)
        loaded = time.perf_counter() - began
        began = time.perf_counter()
        for name, definition in constraints:
            conn.execute(f'ALTER TABLE messages ADD CONSTRAINT "{name}" {definition}')
        for _, definition in indexes:
            conn.execute(definition)
        conn.execute("VACUUM ANALYZE messages")
        return Imported(done, loaded, time.perf_counter() - began)
