"""The inbox: acknowledged bodies are stored exactly as they came, in the order they came."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from waquality.store import inbox, schema
from waquality.store.database import Database

START = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _bodies(n: int) -> list[inbox.Body]:
    return [
        inbox.Body(
            # bytes a text column would mangle: NUL, invalid UTF-8, quotes
            f"{i}:".encode() + b"\x00\xff'\"" + bytes([i % 256]) * (i % 7),
            START + timedelta(microseconds=i * 1001),
            quiet=i % 3 == 0,
        )
        for i in range(n)
    ]


def _stored(db: Database) -> list[tuple[bytes, datetime, bool, str]]:
    raw = schema.raw_webhooks
    query = select(raw.c.body, raw.c.received_at, raw.c.quiet, raw.c.status).order_by(raw.c.id)
    with db.read() as conn:
        return [(bytes(r.body), r.received_at, r.quiet, r.status) for r in conn.execute(query)]


def test_bodies_are_stored_as_given_in_their_order(db: Database) -> None:
    # more than one statement's worth of rows on SQLite, and a part-filled last one
    given = _bodies(300)
    with db.write(priority=True) as conn:
        inbox.insert_bodies(conn, given)
    with db.write(priority=True) as conn:
        inbox.insert_bodies(conn, given[:1])

    expected = [(b.body, b.received_at, b.quiet, "pending") for b in [*given, given[0]]]
    assert _stored(db) == expected


def test_a_failed_transaction_stores_none_of_its_bodies(db: Database) -> None:
    class Boom(Exception):
        pass

    try:
        with db.write(priority=True) as conn:
            inbox.insert_bodies(conn, _bodies(200))
            raise Boom
    except Boom:
        pass
    assert _stored(db) == []
