"""Many keys as one bound parameter: a table to join against, in a statement that never changes.

Looking up a few hundred rows by key with an ``OR`` of conditions (or a row-value ``IN``
list) makes a new statement for every batch — costly to build — and may make SQLite scan.
Here the keys travel as one JSON array (SQLite's ``json_each``) or one array per column
(PostgreSQL's ``unnest``), so the statement is built and compiled once, and both databases
search the index once per key::

    keys = KeyTable(conn.dialect.name, (String(), String(), UTCDateTime()))
    phone, customer, since = keys.columns
    query = select(c).select_from(keys.table).join(c, and_(c.c.phone == phone, ...))
    conn.execute(query, keys.params(rows))  # or params(dialect, width, rows)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, FromClause, bindparam, func, literal_column, type_coerce
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeEngine

from waquality.store.schema import sqlite_time

PARAMETER = "keys"
_PATHS = ("'$[0]'", "'$[1]'", "'$[2]'", "'$[3]'", "'$[4]'")
_NAMES = ("k0", "k1", "k2", "k3", "k4")


class KeyTable:
    def __init__(self, dialect: str, types: Sequence[TypeEngine[Any]]) -> None:
        if not 0 < len(types) <= len(_PATHS):
            raise ValueError(f"between 1 and {len(_PATHS)} key columns")
        self.sqlite = dialect == "sqlite"
        self.width = len(types)
        if self.sqlite:
            self.table: FromClause = (
                func.json_each(bindparam(PARAMETER)).table_valued("value").alias("k")
            )
            value = self.table.c.value
            self.columns: tuple[ColumnElement[Any], ...] = tuple(
                type_coerce(func.json_extract(value, literal_column(path)), kind)
                for path, kind in zip(_PATHS, types, strict=False)
            )
        else:
            arrays = [
                bindparam(name, type_=ARRAY(kind))
                for name, kind in zip(_NAMES, types, strict=False)
            ]
            names = _NAMES[: self.width]
            self.table = func.unnest(*arrays).table_valued(*names).render_derived(name="k")
            self.columns = tuple(self.table.c[name] for name in _NAMES[: self.width])

    def params(self, rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
        return params("sqlite" if self.sqlite else "postgresql", self.width, rows)


def params(dialect: str, width: int, rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """The parameters that carry ``rows`` (of ``width`` keys each) to a :class:`KeyTable`."""
    rows = list(rows)
    if dialect == "sqlite":
        plain = [[_sqlite_value(v) for v in row] for row in rows]
        return {PARAMETER: orjson.dumps(plain).decode()}
    return {name: [row[i] for row in rows] for i, name in enumerate(_NAMES[:width])}


def _sqlite_value(value: Any) -> Any:
    """A key as SQLite stores it: UTC datetimes in SQLAlchemy's text form."""
    return sqlite_time(value) if isinstance(value, datetime) else value
