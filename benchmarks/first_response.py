"""The first-response computation as one SQL query, for DuckDB and as plain window functions on
SQLite and PostgreSQL, with the definitions of :mod:`waquality.domain.responses` (gap 24 h,
every sender counts, failed messages are no reply):

- a pair's messages, failed ones left out, in time order with a customer's message before a
  business message of the same second;
- a conversation starts at a pair's first message and wherever more than the gap separates
  two messages;
- its first response is its first business message at or after its first customer message
  (the first run's reply, whoever sent it), timed from that customer message.

The query returns how many first responses there are and the sum of their seconds, which must
equal what the tracker stored.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
from sqlalchemy import Connection, func, select, text

import message_set as ms
from waquality.store import schema

GAP_SECONDS = 24 * 3600
FIRST_RESPONSES = """
WITH base AS (
    SELECT phone_number_id AS p, customer AS c, {epoch} AS t, inbound AS i
    FROM messages
    WHERE "at" IS NOT NULL AND phone_number_id IS NOT NULL AND customer IS NOT NULL
      AND (status IS NULL OR status <> 'failed')
), marked AS (
    SELECT p, c, t, i, CASE WHEN t - lag(t) OVER w <= {gap} THEN 0 ELSE 1 END AS s
    FROM base
    WINDOW w AS (PARTITION BY p, c ORDER BY t, i DESC)
), numbered AS (
    SELECT p, c, t, i,
           sum(s) OVER (PARTITION BY p, c ORDER BY t, i DESC ROWS UNBOUNDED PRECEDING) AS k
    FROM marked
), asked AS (
    SELECT p, c, k, t, i, min(CASE WHEN i THEN t END) OVER (PARTITION BY p, c, k) AS a
    FROM numbered
)
SELECT count(*), sum(r) FROM (
    SELECT min(t) - min(a) AS r FROM asked WHERE NOT i AND t >= a GROUP BY p, c, k
) AS firsts
"""
EPOCH = {
    "duckdb": 'epoch("at")',
    "sqlite": 'unixepoch("at")',  # whole seconds, as webhook times are
    "postgresql": 'extract(epoch FROM "at")',
}


@dataclass(frozen=True, slots=True)
class Firsts:
    count: int
    seconds: float

    def agrees(self, other: Firsts) -> bool:
        return self.count == other.count and abs(self.seconds - other.seconds) <= 1e-6 * max(
            1.0, abs(self.seconds)
        )


@dataclass(frozen=True, slots=True)
class Timed:
    firsts: Firsts
    runs: list[float]  # seconds of each run

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


def query(dialect: str) -> str:
    return FIRST_RESPONSES.format(epoch=EPOCH[dialect], gap=GAP_SECONDS)


def _firsts(row: Any) -> Firsts:
    count, total = row
    return Firsts(int(count or 0), float(total or 0.0))


def stored(conn: Connection) -> tuple[Firsts, Firsts]:
    """The tracker's first responses: from ``responses`` and from ``conversations``."""
    r, c = schema.responses, schema.conversations
    from_responses = conn.execute(
        select(func.count(), func.sum(r.c.seconds)).where(r.c.first.is_(True))
    ).one()
    from_conversations = conn.execute(
        select(func.count(c.c.first_response_seconds), func.sum(c.c.first_response_seconds))
    ).one()
    return _firsts(from_responses), _firsts(from_conversations)


def window_sql(conn: Connection, runs: int) -> Timed:
    """The plain SQL version on the database itself."""
    sql = text(query(conn.dialect.name))
    times: list[float] = []
    found = Firsts(0, 0.0)
    for _ in range(runs):
        began = time.perf_counter()
        found = _firsts(conn.execute(sql).one())
        times.append(time.perf_counter() - began)
    return Timed(found, times)


def duckdb_connection(found: ms.MessageSet) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding the set's messages with the columns the query reads (phone
    number, customer, time, direction, status), loaded from arrays: nothing is downloaded."""
    conn = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    pairs = {
        "pair": np.arange(len(found.customers), dtype=np.int64),
        "phone_number_id": np.array([found.phones[p] for p in found.pair_phone.tolist()], object),
        "customer": np.array(found.customers, dtype=object),
    }
    rows = {
        "pair": found.pair,
        "inbound": found.inbound,
        "at": found.at.astype("datetime64[s]"),
        "status": found.status,
    }
    conn.register("pairs_source", pairs)
    conn.register("rows_source", rows)
    conn.execute(
        "CREATE TABLE messages AS SELECT p.phone_number_id, p.customer, r.inbound, "
        'CAST(r."at" AS TIMESTAMP) AS "at", '
        "list_extract(['sent', 'delivered', 'read', 'failed'], r.status + 1) AS status "
        'FROM rows_source r JOIN pairs_source p USING (pair) ORDER BY r."at"'
    )
    conn.unregister("pairs_source")
    conn.unregister("rows_source")
    return conn


def in_duckdb(conn: duckdb.DuckDBPyConnection, runs: int) -> Timed:
    sql = query("duckdb")
    times: list[float] = []
    found = Firsts(0, 0.0)
    for _ in range(runs):
        began = time.perf_counter()
        row = conn.execute(sql).fetchone()
        times.append(time.perf_counter() - began)
        found = _firsts(row)
    return Timed(found, times)


def duckdb_threads(conn: duckdb.DuckDBPyConnection) -> int:
    row = conn.execute("SELECT current_setting('threads')").fetchone()
    return int(row[0]) if row else 0
