"""Many rows in few driver calls, for the writes a processing batch makes by the thousand.

Given a list of rows, SQLAlchemy's ``executemany`` binds every value of every row through the
column type's processors and its own parameter machinery; for the message, conversation,
response and aggregate rows of a batch that costs more than the database's own work. Here each
column gets one plain conversion, and the rows go to the driver as they are:

- on SQLite, one ``executemany`` of a statement made once per table and set of columns (SQLite
  runs in this process: a statement per row costs nothing more than the row);
- on PostgreSQL, one statement for the whole batch, its values a column each, as arrays read
  by ``unnest`` (a statement per row would make the server parse, plan and run each one).

The statements are SQLAlchemy's, made from the table and compiled once per shape of call.

::

    bulk.insert(conn, schema.messages, rows, conflict=("wamid",))          # ON CONFLICT DO NOTHING
    bulk.insert(conn, schema.delivery_stats, rows, conflict=keys, add=counters)  # counters add up
    bulk.update(conn, schema.messages, rows, by=("wamid",))  # rows: the key and the new values
    bulk.insert_new(conn, schema.events, rows, key="dedupe_key", returning=("id", "dedupe_key"))

Every row of one call has the same columns. Rows of one call must not share a key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
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
    Text,
    and_,
    bindparam,
    cast,
    func,
    select,
)
from sqlalchemy import update as sql_update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY

from waquality.store.database import json_dumps
from waquality.store.schema import UTCDateTime, sqlite_time, utc

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


def insert_new(
    conn: Connection, table: Table, rows: Rows, *, key: str, returning: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Insert the rows whose ``key`` (a unique column) is not taken; returns the ``returning``
    columns of the rows inserted, in no set order. A row that another writer inserted first
    under the same key is neither inserted nor returned."""
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        shape = _Shape("insert", table, _columns(rows), (key,), (), tuple(returning))
        return [tuple(row) for row in _run(conn, shape, rows)]
    # SQLite: the transaction holds the one write lock (BEGIN IMMEDIATE) from its start, so no
    # other writer can take a key between the look and the insert.
    column = table.c[key]
    taken = {found for (found,) in _where_in(conn, [column], column, [row[key] for row in rows])}
    fresh = [row for row in rows if row[key] not in taken]
    insert(conn, table, fresh)
    found = _where_in(conn, [table.c[c] for c in returning], column, [row[key] for row in fresh])
    return [tuple(row) for row in found]


def _where_in(conn: Connection, columns: list[Any], column: Any, values: list[Any]) -> list[Any]:
    """``columns`` of the rows whose ``column`` is one of ``values``."""
    found: list[Any] = []
    for start in range(0, len(values), _IN_CHUNK):
        query = select(*columns).where(column.in_(values[start : start + _IN_CHUNK]))
        found += conn.execute(query).all()
    return found


_IN_CHUNK = 10_000  # values bound in one IN (SQLite takes 32,766 parameters)


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
    returning: tuple[str, ...] = ()  # PostgreSQL's inserts only


@dataclass(frozen=True, slots=True)
class _Prepared:
    sql: str
    columns: tuple[str, ...]  # in the statement's order
    converts: tuple[Convert | None, ...]
    by_value: tuple[bool, ...]  # False: every value converted (JSON's)
    arrays: bool  # True: one array per column (PostgreSQL); False: a tuple per row (SQLite)


_PREPARED: dict[tuple[str, _Shape], _Prepared] = {}


def _run(conn: Connection, shape: _Shape, rows: Rows) -> Sequence[Any]:
    """Runs the statement; returns the rows it returns (PostgreSQL's with ``RETURNING``)."""
    dialect = conn.dialect
    prepared = _PREPARED.get((dialect.name, shape))
    if prepared is None:
        prepared = _sqlite(dialect, shape) if dialect.name == "sqlite" else _postgresql(shape)
        _PREPARED[(dialect.name, shape)] = prepared
    columns = _converted(prepared, rows)
    if not prepared.arrays:
        conn.exec_driver_sql(prepared.sql, list(zip(*columns, strict=True)))
        return []
    params = {f"p{i}": column for i, column in enumerate(columns)}
    result = conn.exec_driver_sql(prepared.sql, params)
    return result.all() if shape.returning else []


def _converted(prepared: _Prepared, rows: Rows) -> list[list[Any]]:
    """Each column's values as the driver takes them. A distinct value is converted once per
    call, across the columns converted alike: a batch's values repeat (Meta's times are whole
    seconds, a message's time is its sent time, one "now" for every row). Not JSON's: 1 == True
    in Python, yet "1" != "true"."""
    memos: dict[Convert, dict[Any, Any]] = {}
    columns = []
    for name, convert, by_value in zip(
        prepared.columns, prepared.converts, prepared.by_value, strict=True
    ):
        values = list(map(itemgetter(name), rows))
        if convert is None:
            columns.append(values)
        elif not by_value:
            columns.append(list(map(convert, values)))
        else:
            memo = memos.setdefault(convert, {})
            for value in set(values).difference(memo):
                memo[value] = convert(value)
            columns.append(list(map(memo.__getitem__, values)))
    return columns


def _check(shape: _Shape) -> None:
    names = set(shape.table.c.keys())
    named = (*shape.columns, *shape.keys, *shape.add, *shape.returning)
    unknown = [c for c in named if c not in names]
    if unknown:
        raise ValueError(f"{shape.table.name} has no column {unknown[0]!r}")
    defaults = [
        c.key for c in shape.table.c if c.default is not None and c.key not in shape.columns
    ]
    if shape.verb == "insert" and defaults:  # SQLAlchemy would fill it in: here, the rows must
        raise ValueError(f"{shape.table.name}.{defaults[0]} has a default: give it in the rows")
    if shape.verb == "update" and not set(shape.keys) < set(shape.columns):
        raise ValueError("an update's rows hold its key columns and at least one other")


def _on_conflict(statement: Any, shape: _Shape) -> Any:
    """``statement`` (a dialect's INSERT) with the shape's ``ON CONFLICT``."""
    if not shape.keys:
        return statement
    if not shape.add:
        return statement.on_conflict_do_nothing(index_elements=list(shape.keys))
    table = shape.table
    return statement.on_conflict_do_update(
        index_elements=list(shape.keys),
        set_={c: table.c[c] + statement.excluded[c] for c in shape.add},
    )


# -- SQLite ----------------------------------------------------------------------------------


def _sqlite(dialect: Dialect, shape: _Shape) -> _Prepared:
    _check(shape)
    table = shape.table
    if shape.verb == "insert":
        statement = _on_conflict(sqlite.insert(table), shape)
        compiled = statement.compile(dialect=dialect, column_keys=list(shape.columns))
        columns = tuple(compiled.positiontup or ())
    else:
        match = [table.c[k] == bindparam(f"k_{k}") for k in shape.keys]
        values: dict[str, Any] = {
            c: bindparam(f"v_{c}") for c in shape.columns if c not in shape.keys
        }
        compiled = sql_update(table).where(and_(*match)).values(values).compile(dialect=dialect)
        # the names without their k_ or v_
        columns = tuple(name[2:] for name in compiled.positiontup or ())
    if sorted(columns) != sorted(shape.columns):
        raise ValueError(f"{table.name}: the statement binds {columns}, the rows hold others")
    kinds = [table.c[c].type for c in columns]
    converts = tuple(_sqlite_convert(dialect, kind) for kind in kinds)
    return _Prepared(compiled.string, columns, converts, _by_value(kinds), arrays=False)


def _by_value(kinds: list[Any]) -> tuple[bool, ...]:
    return tuple(not isinstance(kind, JSON) for kind in kinds)


def _sqlite_convert(dialect: Dialect, kind: Any) -> Convert | None:
    if isinstance(kind, UTCDateTime):
        return sqlite_time
    processor: Convert | None = kind.dialect_impl(dialect).bind_processor(dialect)
    return processor


# -- PostgreSQL ------------------------------------------------------------------------------


def _postgresql(shape: _Shape) -> _Prepared:
    _check(shape)
    table, columns = shape.table, shape.columns
    kinds = [table.c[c].type for c in columns]
    arrays = [
        cast(bindparam(f"p{i}"), ARRAY(Text() if isinstance(kind, JSON) else kind))
        for i, kind in enumerate(kinds)
    ]
    names = [f"v{i}" for i in range(len(columns))]
    source = func.unnest(*arrays).table_valued(*names).render_derived(name="v")
    value = {
        c: cast(source.c[n], JSON) if isinstance(kind, JSON) else source.c[n]
        for c, n, kind in zip(columns, names, kinds, strict=True)
    }
    if shape.verb == "insert":
        rows = select(*(value[c] for c in columns)).select_from(source)
        statement = _on_conflict(postgresql.insert(table).from_select(list(columns), rows), shape)
        if shape.returning:
            statement = statement.returning(*(table.c[c] for c in shape.returning))
    else:
        match = [table.c[k] == value[k] for k in shape.keys]
        values = {c: value[c] for c in columns if c not in shape.keys}
        statement = sql_update(table).where(and_(*match)).values(values)
    compiled = statement.compile(dialect=_PG)
    converts = tuple(_pg_convert(kind) for kind in kinds)
    return _Prepared(compiled.string, columns, converts, _by_value(kinds), arrays=True)


def _pg_convert(kind: Any) -> Convert | None:
    """One Python type per array (the driver refuses mixed ones, such as ints and floats)."""
    if isinstance(kind, UTCDateTime):
        return utc
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
