"""Many rows in few driver calls, for the writes a processing batch makes by the thousand.

Given a list of rows, SQLAlchemy's ``executemany`` binds every value of every row through the
column type's processors and its own parameter machinery; for the message, conversation,
response and aggregate rows of a batch that costs more than the database's own work. Here each
column gets one plain conversion, and the rows go to the driver as they are:

- on SQLite, one ``executemany`` of a statement made once per table and set of columns (SQLite
  runs in this process: a statement per row costs nothing more than the row);
- on PostgreSQL, one statement for the whole batch, its values a column each, as arrays read
  by ``unnest`` (a statement per row would make the server parse, plan and run each one).

::

    bulk.insert(conn, schema.messages, rows, conflict=("wamid",))          # ON CONFLICT DO NOTHING
    bulk.insert(conn, schema.delivery_stats, rows, conflict=keys, add=counters)  # counters add up
    bulk.update(conn, schema.messages, rows, by=("wamid",))  # rows: the key and the new values

Every row of one call has the same columns. Rows of one call must not share a key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    Dialect,
    Float,
    Integer,
    LargeBinary,
    Table,
)
from sqlalchemy.dialects import postgresql

from waquality.store.database import json_dumps
from waquality.store.schema import UTCDateTime

Convert = Callable[[Any], Any]
Rows = Sequence[Mapping[str, Any]]
_PG: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]


def insert(
    conn: Connection,
    table: Table,
    rows: Rows,
    *,
    conflict: Sequence[str] = (),
    add: Sequence[str] = (),
) -> None:
    """Insert ``rows``; with ``conflict`` (a unique key), a row whose key is taken is skipped,
    or, with ``add``, adds those columns to the stored row's."""
    if rows:
        _run(conn, _Shape("insert", table, _columns(rows), tuple(conflict), tuple(add)), rows)


def update(conn: Connection, table: Table, rows: Rows, *, by: Sequence[str]) -> None:
    """Set the other columns of ``rows`` in the stored rows whose ``by`` columns match."""
    if rows:
        _run(conn, _Shape("update", table, _columns(rows), tuple(by), ()), rows)


def _columns(rows: Rows) -> tuple[str, ...]:
    columns = tuple(rows[0])
    if any(len(row) != len(columns) for row in rows):
        raise ValueError("every row must have the same columns")
    return columns


@dataclass(frozen=True, slots=True)
class _Shape:
    verb: str  # insert, update
    table: Table
    columns: tuple[str, ...]
    keys: tuple[str, ...]  # insert: the conflict target; update: the columns that match
    add: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Prepared:
    sql: str
    columns: tuple[str, ...]  # in the statement's order
    converts: tuple[Convert | None, ...]
    arrays: bool  # True: one array per column (PostgreSQL); False: a tuple per row (SQLite)


_PREPARED: dict[tuple[str, _Shape], _Prepared] = {}


def _run(conn: Connection, shape: _Shape, rows: Rows) -> None:
    dialect = conn.dialect
    prepared = _PREPARED.get((dialect.name, shape))
    if prepared is None:
        prepared = _sqlite(dialect, shape) if dialect.name == "sqlite" else _postgresql(shape)
        _PREPARED[(dialect.name, shape)] = prepared
    converts = _once(prepared.converts)
    pairs = tuple(zip(prepared.columns, converts, strict=True))
    if prepared.arrays:
        arrays = {
            f"p{i}": [row[name] for row in rows] if f is None else [f(row[name]) for row in rows]
            for i, (name, f) in enumerate(pairs)
        }
        conn.exec_driver_sql(prepared.sql, arrays)
    else:
        tuples = [tuple(row[n] if f is None else f(row[n]) for n, f in pairs) for row in rows]
        conn.exec_driver_sql(prepared.sql, tuples)


def _check(shape: _Shape) -> None:
    """Statements are made of the schema's own table and column names (quoted), never of
    input: refuse any other name."""
    names = set(shape.table.c.keys())
    unknown = [c for c in (*shape.columns, *shape.keys, *shape.add) if c not in names]
    if unknown:
        raise ValueError(f"{shape.table.name} has no column {unknown[0]!r}")
    defaults = [
        c.key for c in shape.table.c if c.default is not None and c.key not in shape.columns
    ]
    if shape.verb == "insert" and defaults:  # SQLAlchemy would fill it in: here, the rows must
        raise ValueError(f"{shape.table.name}.{defaults[0]} has a default: give it in the rows")
    if shape.verb == "update" and not set(shape.keys) < set(shape.columns):
        raise ValueError("an update's rows hold its key columns and at least one other")


# -- SQLite ----------------------------------------------------------------------------------


def _sqlite(dialect: Dialect, shape: _Shape) -> _Prepared:
    _check(shape)
    q = dialect.identifier_preparer.quote
    table = q(shape.table.name)
    if shape.verb == "insert":
        columns = shape.columns
        sql = (
            f"INSERT INTO {table} ({', '.join(q(c) for c in columns)}) "  # noqa: S608
            f"VALUES ({', '.join('?' for _ in columns)})"
        ) + _on_conflict(q, shape)
    else:
        values = [c for c in shape.columns if c not in shape.keys]
        columns = (*values, *shape.keys)
        sql = (
            f"UPDATE {table} SET {', '.join(f'{q(c)} = ?' for c in values)} "  # noqa: S608
            f"WHERE {' AND '.join(f'{q(c)} = ?' for c in shape.keys)}"
        )
    converts = tuple(_sqlite_convert(dialect, shape.table.c[c].type) for c in columns)
    return _Prepared(sql, columns, converts, arrays=False)


def _on_conflict(q: Callable[[str], str], shape: _Shape) -> str:
    if not shape.keys:
        return ""
    target = f" ON CONFLICT ({', '.join(q(c) for c in shape.keys)}) DO "
    if not shape.add:
        return target + "NOTHING"
    table = q(shape.table.name)
    return (
        target
        + "UPDATE SET "
        + ", ".join(f"{q(c)} = {table}.{q(c)} + excluded.{q(c)}" for c in shape.add)
    )


def _sqlite_convert(dialect: Dialect, kind: Any) -> Convert | None:
    if isinstance(kind, UTCDateTime):
        return _sqlite_time
    processor: Convert | None = kind.dialect_impl(dialect).bind_processor(dialect)
    return processor


def _sqlite_time(value: datetime | None) -> str | None:
    """As SQLAlchemy's SQLite ``DATETIME`` stores it: UTC, no zone, microseconds."""
    value = _utc(value)
    # "2026-01-02 03:04:05.000006+00:00" without its zone
    return None if value is None else value.isoformat(" ", "microseconds")[:26]


# -- PostgreSQL ------------------------------------------------------------------------------


def _postgresql(shape: _Shape) -> _Prepared:
    _check(shape)
    q = _PG.identifier_preparer.quote
    table = q(shape.table.name)
    columns = shape.columns
    kinds = [shape.table.c[c].type for c in columns]
    arrays = ", ".join(f"%(p{i})s::{_array_type(kind)}" for i, kind in enumerate(kinds))
    names = [f"v{i}" for i in range(len(columns))]
    source = f"unnest({arrays}) AS v({', '.join(names)})"
    value = {c: _pg_value(n, kind) for c, n, kind in zip(columns, names, kinds, strict=True)}
    if shape.verb == "insert":
        names_sql = ", ".join(q(c) for c in columns)
        values_sql = ", ".join(value[c] for c in columns)
        sql = f"INSERT INTO {table} ({names_sql}) SELECT {values_sql} FROM {source}"  # noqa: S608
        sql += _on_conflict(q, shape)
    else:
        sets = ", ".join(f"{q(c)} = {value[c]}" for c in columns if c not in shape.keys)
        match = " AND ".join(f"{table}.{q(c)} = {value[c]}" for c in shape.keys)
        sql = f"UPDATE {table} SET {sets} FROM {source} WHERE {match}"  # noqa: S608
    converts = tuple(_pg_convert(kind) for kind in kinds)
    return _Prepared(sql, columns, converts, arrays=True)


def _array_type(kind: Any) -> str:
    if isinstance(kind, JSON):
        return "text[]"  # cast to json in the select list
    return f"{kind.compile(dialect=_PG)}[]"


def _pg_value(name: str, kind: Any) -> str:
    return f"v.{name}::json" if isinstance(kind, JSON) else f"v.{name}"


def _pg_convert(kind: Any) -> Convert | None:
    """One Python type per array (the driver refuses mixed ones, such as ints and floats)."""
    if isinstance(kind, UTCDateTime):
        return _utc
    if isinstance(kind, JSON):
        return json_dumps  # None is JSON null, as SQLAlchemy stores it
    for base, convert in ((Boolean, bool), (Float, float), (Integer, int), (LargeBinary, bytes)):
        if isinstance(kind, base):
            return _or_none(convert)
    return None


def _or_none(convert: Convert) -> Convert:
    def converted(value: Any) -> Any:
        return None if value is None else convert(value)

    return converted


# -- both ------------------------------------------------------------------------------------


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


_TIMES = frozenset({_sqlite_time})


def _once(converts: Sequence[Convert | None]) -> list[Convert | None]:
    """``converts`` for one call, SQLite times converted once each: a batch's times repeat
    (Meta's are whole seconds; one "now" for every row)."""
    seen: dict[Any, Any] = {}

    def once(convert: Convert) -> Convert:
        def converted(value: Any) -> Any:
            try:
                return seen[value]
            except KeyError:
                seen[value] = found = convert(value)
                return found

        return converted

    return [once(f) if f in _TIMES else f for f in converts]
