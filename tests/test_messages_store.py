"""Messages stored one row per wamid: statuses in any order, redelivered, give one lifecycle."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from waquality.domain.enums import MessageStatus
from waquality.domain.messages import Inbound, Status
from waquality.store import messages, schema
from waquality.store.database import Database

T = datetime(2026, 3, 1, 12, tzinfo=UTC)
NOW = datetime(2026, 3, 2, tzinfo=UTC)


def status(wamid: str, kind: str, seconds: int, *codes: int) -> Status:
    return Status(
        wamid,
        "106540352242922",
        "16505551234",
        MessageStatus(kind),
        T + timedelta(seconds=seconds),
        tuple(codes),
        "marketing" if kind == "sent" else None,
    )


def rows(db: Database) -> dict[str, dict[str, Any]]:
    with db.read() as conn:
        found = conn.execute(select(schema.messages)).mappings().all()
    return {r["wamid"]: {k: v for k, v in r.items() if k != "updated_at"} for r in found}


def test_a_lifecycle_in_any_order_and_redelivered_is_one_row(db: Database) -> None:
    items: list[Inbound | Status] = [
        status("wamid.a", "sent", 0),
        status("wamid.a", "delivered", 2),
        status("wamid.a", "read", 30),
        status("wamid.b", "sent", 5),
        status("wamid.b", "failed", 6, 131049),
        status("wamid.b", "delivered", 7),  # late, and after the failure: failed stays
        Inbound("wamid.c", "106540352242922", "16505551234", T, "text", "wamid.a", None),
    ]
    with db.write() as conn:
        assert messages.record(conn, items, NOW) == 3
    expected = rows(db)
    a, b, c = expected["wamid.a"], expected["wamid.b"], expected["wamid.c"]
    assert (a["status"], a["at"], a["read_at"], a["category"]) == (
        "read",
        T,
        T + timedelta(seconds=30),
        "marketing",
    )
    assert (b["status"], b["error_code"], b["failed_at"]) == (
        "failed",
        131049,
        T + timedelta(seconds=6),
    )
    assert (c["inbound"], c["replies_to"], c["kind"], c["status"]) == (
        True,
        "wamid.a",
        "text",
        None,
    )
    rng = random.Random(4)
    for _ in range(5):  # the same items re-delivered and shuffled, into an empty table
        with db.write() as conn:
            conn.execute(schema.messages.delete())
        shuffled = items * 3
        rng.shuffle(shuffled)
        for start in range(0, len(shuffled), 4):
            with db.write() as conn:
                messages.record(conn, shuffled[start : start + 4], NOW)
        assert rows(db) == expected
    with db.write() as conn:  # a redelivery changes nothing
        assert messages.record(conn, items, NOW) == 0


def test_without_a_sent_status_the_earliest_status_dates_the_message(db: Database) -> None:
    with db.write() as conn:
        items: list[Inbound | Status] = [
            status("wamid.d", "read", 40),
            status("wamid.d", "delivered", 9),
        ]
        messages.record(conn, items, NOW)
    assert rows(db)["wamid.d"]["at"] == T + timedelta(seconds=9)
    with db.write() as conn:
        sent: list[Inbound | Status] = [status("wamid.d", "sent", 3)]
        messages.record(conn, sent, NOW)
    assert rows(db)["wamid.d"]["at"] == T + timedelta(seconds=3)
