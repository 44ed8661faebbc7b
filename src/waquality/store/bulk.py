"""Many rows in one driver call, for the writes a processing batch makes by the thousand.

Given a list of rows, SQLAlchemy's ``executemany`` binds every value of every row through the
column type's processors and its own parameter machinery; for the message, conversation,
response and aggregate rows of a batch that costs more than the database's own work. Here a
statement is compiled once per database kind and set of columns, each column gets one plain
conversion (UTC datetimes straight to what the driver takes, any other type through its own
SQLAlchemy processor), and the rows go to the driver as they are::

    bulk.execute(conn, ("messages", "insert"), lambda: table.insert(), rows)

The statement's values come from the rows' keys: an ``INSERT`` names the columns of the first
row (every row must have the same keys), an ``UPDATE`` uses its ``bindparam`` names.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from waquality.store.schema import UTCDateTime

Convert = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Prepared:
    sql: str
    names: tuple[str, ...]  # parameter names, in the driver's order
    converts: tuple[Convert | None, ...]
    positional: bool

    def parameters(self, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        # a batch's times repeat (Meta's are whole seconds; one "now" for every row): convert
        # each once
        seen: dict[Any, Any] = {}

        def once(convert: Convert) -> Convert:
            def converted(value: Any) -> Any:
                try:
                    return seen[value]
                except KeyError:
                    seen[value] = found = convert(value)
                    return found

            return converted

        converts = [once(f) if f in _TIMES else f for f in self.converts]
        pairs = tuple(zip(self.names, converts, strict=True))
        if self.positional:
            return [tuple(row[n] if f is None else f(row[n]) for n, f in pairs) for row in rows]
        return [{n: row[n] if f is None else f(row[n]) for n, f in pairs} for row in rows]


_PREPARED: dict[tuple[str, Hashable, tuple[str, ...]], _Prepared] = {}


def execute(
    conn: Connection,
    key: Hashable,
    build: Callable[[], ClauseElement],
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Run the statement ``build`` makes (cached under ``key``) once for each of ``rows``."""
    if not rows:
        return
    dialect = conn.dialect
    columns = tuple(rows[0])
    cache_key = (dialect.name, key, columns)
    prepared = _PREPARED.get(cache_key)
    if prepared is None:
        prepared = _PREPARED[cache_key] = _prepare(dialect, build(), columns)
    if any(len(row) != len(columns) for row in rows):
        raise ValueError(f"{key}: every row must have the same columns")
    conn.exec_driver_sql(prepared.sql, prepared.parameters(rows))


def _prepare(dialect: Dialect, statement: ClauseElement, columns: tuple[str, ...]) -> _Prepared:
    compiled = statement.compile(dialect=dialect, column_keys=list(columns))
    assert isinstance(compiled, SQLCompiler)
    if compiled.positiontup is not None:
        names, positional = tuple(compiled.positiontup), True
    else:
        names, positional = tuple(compiled.bind_names.values()), False
    unknown = set(names) - set(columns)
    if unknown:  # a column default or a literal: this path binds nothing but the rows' values
        raise ValueError(f"statement binds values the rows do not have: {sorted(unknown)}")
    binds = {bind.key: bind for bind in compiled.binds.values()}
    converts = tuple(_convert(dialect, binds[name].type) for name in names)
    return _Prepared(compiled.string, names, converts, positional)


def _convert(dialect: Dialect, kind: Any) -> Convert | None:
    if isinstance(kind, UTCDateTime):
        return _sqlite_time if dialect.name == "sqlite" else _utc
    processor: Convert | None = kind.dialect_impl(dialect).bind_processor(dialect)
    return processor


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _sqlite_time(value: datetime | None) -> str | None:
    """As SQLAlchemy's SQLite ``DATETIME`` stores it: UTC, no zone, microseconds."""
    value = _utc(value)
    # "2026-01-02 03:04:05.000006+00:00" without its zone
    return None if value is None else value.isoformat(" ", "microseconds")[:26]


_TIMES = frozenset({_sqlite_time})
