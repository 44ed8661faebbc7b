"""Bulk writes through the driver store exactly what SQLAlchemy's own executemany stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import bindparam, select, update

from waquality.store import bulk, schema
from waquality.store.database import Database

m = schema.messages
T = datetime(2026, 3, 1, 12, 30, 15, 250_000, tzinfo=UTC)
PLUS_FIVE = timezone(timedelta(hours=5))


def message(wamid: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c.key: None for c in m.c}
    row.update(wamid=wamid, inbound=False, sender_kind="unknown", updated_at=T)
    row.update(values)
    return row


ROWS = [
    message("w.1", at=T, sent_at=T, status="sent", experiments=[["cta", "b"]], body="héllo 👋"),
    message("w.2", inbound=True, at=T.astimezone(PLUS_FIVE), error_code=131049),
    message("w.3", at=datetime(2026, 1, 1, tzinfo=UTC), read_at=T + timedelta(microseconds=1)),
    message("w.4", at=T, sent_at=T, delivered_at=T, updated_at=T),  # times repeat
]


def stored(db: Database) -> dict[str, dict[str, Any]]:
    with db.read() as conn:
        found = conn.execute(select(m).order_by(m.c.wamid)).mappings().all()
    return {row["wamid"]: dict(row) for row in found}


def test_rows_come_back_as_sqlalchemy_stores_them(db: Database) -> None:
    with db.write() as conn:
        conn.execute(m.insert(), [{**row, "wamid": "sa" + row["wamid"]} for row in ROWS])
        bulk.execute(conn, "test.insert", m.insert, ROWS)
    found = stored(db)
    for row in ROWS:
        mine, theirs = found[row["wamid"]], found["sa" + row["wamid"]]
        assert {**mine, "wamid": None} == {**theirs, "wamid": None}
        assert mine["at"] == row["at"]  # the same instant, whatever zone it was given in
        assert mine["at"].tzinfo is UTC
    assert found["w.1"]["experiments"] == [["cta", "b"]]
    assert found["w.1"]["body"] == "héllo 👋"
    assert found["w.2"]["inbound"] is True
    assert found["w.3"]["read_at"] == T + timedelta(microseconds=1)


def test_an_update_binds_by_name(db: Database) -> None:
    with db.write() as conn:
        bulk.execute(conn, "test.insert", m.insert, ROWS)
        bulk.execute(
            conn,
            "test.update",
            lambda: update(m)
            .where(m.c.wamid == bindparam("_wamid"))
            .values(status=bindparam("_status"), read_at=bindparam("_read_at")),
            [
                {"_wamid": "w.1", "_status": "read", "_read_at": T + timedelta(hours=1)},
                {"_wamid": "w.4", "_status": "failed", "_read_at": None},
            ],
        )
    found = stored(db)
    assert (found["w.1"]["status"], found["w.1"]["read_at"]) == ("read", T + timedelta(hours=1))
    assert (found["w.4"]["status"], found["w.4"]["read_at"]) == ("failed", None)
    assert found["w.2"]["status"] is None


def test_rows_of_different_shapes_are_refused(db: Database) -> None:
    short = {k: v for k, v in message("w.9").items() if k != "body"}
    with pytest.raises(ValueError, match="same columns"), db.write() as conn:
        bulk.execute(conn, "test.insert", m.insert, [message("w.8"), short])
    with pytest.raises(KeyError), db.write() as conn:
        bulk.execute(conn, "test.insert", m.insert, [message("w.8"), {**short, "other": 1}])
    assert stored(db) == {}


def test_a_statement_that_binds_more_than_the_rows_is_refused(db: Database) -> None:
    # facts.recorded_at-like defaults are not filled in: the rows must say everything
    statement = update(m).where(m.c.wamid == bindparam("_wamid")).values(status=bindparam("_s"))
    with pytest.raises(ValueError, match="do not have"), db.write() as conn:
        bulk.execute(conn, "test.partial", lambda: statement, [{"_wamid": "w.1"}])


def test_a_naive_time_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="naive"), db.write() as conn:
        bulk.execute(conn, "test.insert", m.insert, [message("w.1", at=datetime(2026, 1, 1))])
