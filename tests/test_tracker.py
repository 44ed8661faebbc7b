"""The tracker's store: messages → conversations, responses and per-hour aggregates, kept up to
date incrementally, equal to a rebuild from the stored messages whatever the arrival order."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from waquality.domain import sketch
from waquality.domain.enums import MessageStatus, PreferenceValue, SenderKind
from waquality.domain.messages import Inbound, Item, Outbound, Status
from waquality.domain.tags import Tags, encode
from waquality.store import schema
from waquality.store.conversations import Rules
from waquality.store.database import Database
from waquality.store.rebuild import rebuild
from waquality.store.tracker import Preference, Tracker, TrackerConfig

PHONE = "106540352242922"
OTHER_PHONE = "106540352242923"
T = datetime(2026, 3, 2, 9, tzinfo=UTC)  # a Monday
NOW = T + timedelta(days=5)


def inbound(wamid: str, customer: str, at: datetime, phone: str = PHONE) -> Inbound:
    return Inbound(wamid, phone, customer, at, "text", None, None, text="hello")


def status(
    wamid: str,
    customer: str,
    kind: str,
    at: datetime,
    *codes: int,
    callback: str | None = None,
    phone: str = PHONE,
) -> Status:
    return Status(wamid, phone, customer, MessageStatus(kind), at, tuple(codes), callback=callback)


def apply(db: Database, tracker: Tracker, items: list[Item], now: datetime = NOW) -> None:
    with db.write() as conn:
        tracker.apply(conn, items, now)


def snapshot(db: Database) -> dict[str, Any]:
    """Everything the tracker derives, comparable across runs (ids left out, sketches read)."""
    found: dict[str, Any] = {}
    with db.read() as conn:
        for table in (schema.conversations, schema.responses):
            rows = conn.execute(select(table)).mappings().all()
            found[table.name] = sorted(
                (tuple(sorted((k, v) for k, v in r.items() if k != "id")) for r in rows),
                key=repr,
            )
        for table in (
            schema.conversation_stats,
            schema.delivery_stats,
            schema.delivery_errors,
            schema.response_stats,
        ):
            rows = conn.execute(select(table)).mappings().all()
            values = []
            for r in rows:
                row = dict(r)
                if "bins" in row:
                    row["bins"] = dict(sketch.unpack(row["bins"]))
                    row["total_seconds"] = round(row["total_seconds"], 6)
                counters = [v for k, v in row.items() if isinstance(v, int) and k != "code"]
                if counters and not any(counters):
                    continue  # a row taken back to zero is the same as no row
                values.append(tuple(sorted(row.items())))
            found[table.name] = sorted(values, key=repr)
    return found


def test_a_reply_by_webhook_alone_is_a_first_response(db: Database) -> None:
    tracker = Tracker(db)
    apply(
        db,
        tracker,
        [
            inbound("wamid.in1", "16505551234", T),
            inbound("wamid.in2", "16505551234", T + timedelta(seconds=10)),
            status("wamid.out1", "16505551234", "sent", T + timedelta(seconds=42)),
            status("wamid.out1", "16505551234", "delivered", T + timedelta(seconds=43)),
        ],
        now=T + timedelta(minutes=5),
    )
    with db.read() as conn:
        [response] = conn.execute(select(schema.responses)).mappings().all()
        [conversation] = conn.execute(select(schema.conversations)).mappings().all()
        stats = {
            (r.phone_number_id, r.sender_kind, r.kind): r
            for r in conn.execute(select(schema.response_stats))
        }
        [counters] = conn.execute(
            select(schema.conversation_stats).where(
                schema.conversation_stats.c.phone_number_id == PHONE
            )
        ).mappings()
    # the reply answers the run from its first message
    assert (response["seconds"], response["first"], response["sender_kind"]) == (
        42.0,
        True,
        "unknown",
    )
    assert conversation["first_response_seconds"] == 42.0
    assert conversation["messages"] == 3 and conversation["ended"] is False
    assert set(stats) == {
        (p, s, k) for p in (PHONE, "*") for s in ("unknown", "*") for k in ("first", "all")
    }
    row = stats[("*", "*", "first")]
    assert (row._mapping["count"], row.total_seconds, row.max_seconds) == (1, 42.0, 42.0)
    assert sketch.unpack(row.bins) == {sketch.bin_of(42.0): 1}
    assert row.bucket_start == T
    assert dict(counters) | {} == {
        "phone_number_id": PHONE,
        "bucket_start": T,
        "conversations": 1,
        "by_customer": 1,
        "answered": 1,
        "unanswered": 0,
        "unanswered_runs": 0,
    }


def test_a_late_customer_message_moves_the_response_and_the_aggregates(db: Database) -> None:
    tracker = Tracker(db)
    customer = "16505550001"
    apply(
        db,
        tracker,
        [
            inbound("wamid.a", customer, T + timedelta(minutes=10)),
            status("wamid.r", customer, "sent", T + timedelta(minutes=11)),
        ],
    )
    before = snapshot(db)
    assert [dict(r)["seconds"] for r in before["responses"]] == [60.0]
    # an earlier message of the same run arrives late: the response is now 11 minutes long
    apply(db, tracker, [inbound("wamid.early", customer, T)])
    after = snapshot(db)
    assert [dict(r)["seconds"] for r in after["responses"]] == [660.0]
    rebuild(db, tracker.config, NOW)
    assert snapshot(db) == after


def test_idle_conversations_end_and_count_as_unanswered(db: Database) -> None:
    tracker = Tracker(db)
    apply(
        db,
        tracker,
        [
            inbound("wamid.x", "16505550002", T),  # never answered
            inbound("wamid.y", "16505550003", T),
            status("wamid.y1", "16505550003", "sent", T + timedelta(minutes=1)),
            inbound("wamid.y2", "16505550003", T + timedelta(minutes=2)),  # left waiting
        ],
        now=T + timedelta(hours=1),
    )

    def counters() -> dict[str, int]:
        with db.read() as conn:
            row = conn.execute(
                select(schema.conversation_stats).where(
                    schema.conversation_stats.c.phone_number_id == "*"
                )
            ).one()
        return {k: v for k, v in row._mapping.items() if isinstance(v, int)}

    assert counters() == {
        "conversations": 2,
        "by_customer": 2,
        "answered": 1,
        "unanswered": 0,
        "unanswered_runs": 0,
    }
    assert tracker.end_idle(T + timedelta(hours=23)) == 0
    assert tracker.end_idle(T + timedelta(hours=25)) == 2
    assert counters() == {
        "conversations": 2,
        "by_customer": 2,
        "answered": 1,
        "unanswered": 1,
        "unanswered_runs": 1,
    }
    ended = snapshot(db)
    rebuild(db, tracker.config, T + timedelta(hours=25))
    assert snapshot(db) == ended


def test_delivery_counters_per_template_and_number(db: Database) -> None:
    tracker = Tracker(db)
    promo = encode(Tags(SenderKind.CAMPAIGN, template="spring_sale"))
    items: list[Item] = []
    for i in range(4):
        wamid = f"wamid.p{i}"
        items.append(status(wamid, f"1650555100{i}", "sent", T, callback=promo))
    items += [
        status("wamid.p0", "16505551000", "read", T + timedelta(minutes=3)),  # read, no delivered
        status("wamid.p1", "16505551001", "delivered", T + timedelta(minutes=1)),
        status("wamid.p2", "16505551002", "failed", T + timedelta(minutes=1), 131049),
    ]
    refused = Outbound(
        "refused-1", PHONE, "16505551009", T, "template", "spring_sale", error_code=132015
    )
    with db.write() as conn:
        tracker.apply(
            conn,
            [*items, refused],
            NOW,
            [Preference(PHONE, T + timedelta(minutes=5), PreferenceValue.STOP)],
        )
    with db.read() as conn:
        d = schema.delivery_stats
        rows = {
            (r.phone_number_id, r.template): r._mapping
            for r in conn.execute(select(d).where(d.c.bucket_start == T))
        }
        errors = {
            (r["phone_number_id"], r["template"], r["code"]): r["count"]
            for r in conn.execute(select(schema.delivery_errors)).mappings()
        }
    counted = ("outbound", "sent", "delivered", "read", "failed", "refused", "opt_outs")
    assert [rows[(PHONE, "spring_sale")][c] for c in counted] == [5, 4, 2, 1, 1, 1, 0]
    assert [rows[("*", "*")][c] for c in counted] == [5, 4, 2, 1, 1, 1, 1]
    assert errors[("*", "spring_sale", 131049)] == 1
    assert errors[(PHONE, "spring_sale", 132015)] == 1
    with db.write() as conn:  # a redelivery changes nothing
        assert tracker.apply(conn, [*items, refused], NOW) == 0


def _workload(rng: random.Random) -> list[Item]:
    """Conversations of several pairs on two numbers: runs, replies by webhook and by log,
    tagged senders, failures, gaps that split conversations."""
    items: list[Item] = []
    for c in range(12):
        customer = f"1650555{c:04d}"
        phone = PHONE if c % 3 else OTHER_PHONE
        at = T + timedelta(minutes=rng.randrange(0, 600))
        for n in range(rng.randrange(3, 14)):
            at += timedelta(seconds=rng.choice((5, 40, 40, 300, 300, 3600, 30 * 3600)))
            if rng.random() < 0.5:
                items.append(inbound(f"wamid.{c}.{n}.in", customer, at, phone))
                continue
            wamid = f"wamid.{c}.{n}.out"
            sender = rng.choice(list(SenderKind))
            callback = encode(Tags(sender)) if rng.random() < 0.5 else None
            if rng.random() < 0.3:
                items.append(Outbound(wamid, phone, customer, at, tags=Tags(sender)))
            sent = at + timedelta(seconds=rng.choice((0, 1, 2)))
            items.append(status(wamid, customer, "sent", sent, callback=callback, phone=phone))
            if rng.random() < 0.15:
                items.append(
                    status(
                        wamid, customer, "failed", sent + timedelta(seconds=1), 131026, phone=phone
                    )
                )
            else:
                items.append(
                    status(wamid, customer, "delivered", sent + timedelta(seconds=2), phone=phone)
                )
    return items


def test_any_arrival_order_gives_what_a_rebuild_gives(db: Database) -> None:
    rng = random.Random(7)
    items = _workload(rng)
    rules = Rules(senders=frozenset({SenderKind.AGENT, SenderKind.UNKNOWN, SenderKind.BOT}))
    tracker = Tracker(db, TrackerConfig(rules=rules, zone="Asia/Kolkata"))
    apply(db, tracker, items)
    in_order = snapshot(db)
    assert in_order["responses"] and in_order["response_stats"]
    for attempt in range(3):
        _clear(db)
        shuffled = items + rng.sample(items, len(items) // 3)  # some redelivered
        rng.shuffle(shuffled)
        start = 0
        while start < len(shuffled):
            size = rng.randrange(1, 12)
            apply(db, tracker, shuffled[start : start + size])
            start += size
        assert snapshot(db) == in_order, f"attempt {attempt}"
    rebuild(db, tracker.config, NOW)
    assert snapshot(db) == in_order


def _clear(db: Database) -> None:
    with db.write() as conn:
        for table in (
            schema.messages,
            schema.conversations,
            schema.responses,
            schema.response_stats,
            schema.conversation_stats,
            schema.delivery_stats,
            schema.delivery_errors,
        ):
            conn.execute(table.delete())


def test_messages_arriving_one_by_one_in_time_order_take_the_short_way(db: Database) -> None:
    """Each new, later message extends its conversation without reading the pair's messages;
    the result is still what a rebuild gives (now passing the gap midway)."""
    items = sorted(_workload(random.Random(5)), key=lambda item: item.at)
    tracker = Tracker(db)
    for item in items:
        apply(db, tracker, [item], now=item.at)
    tracker.end_idle(NOW)
    stepwise = snapshot(db)
    assert stepwise["responses"]
    rebuild(db, tracker.config, NOW)
    assert snapshot(db) == stepwise


def test_response_times_match_an_independent_count(db: Database) -> None:
    """A plain reference: per customer, every reply answers the customer messages since the
    previous reply (the gap never passes here; every sender counts; no failures)."""
    rng = random.Random(11)
    items: list[Item] = []
    expected: list[float] = []
    for c in range(20):
        customer = f"1650556{c:04d}"
        at = T + timedelta(seconds=rng.randrange(0, 3600))
        waiting: datetime | None = None
        for n in range(rng.randrange(2, 10)):
            at += timedelta(seconds=rng.randrange(1, 900))
            if rng.random() < 0.55:
                items.append(inbound(f"wamid.{c}.{n}", customer, at))
                waiting = waiting or at
            else:
                items.append(status(f"wamid.{c}.{n}.o", customer, "sent", at))
                if waiting is not None:
                    expected.append((at - waiting).total_seconds())
                    waiting = None
    rng.shuffle(items)
    tracker = Tracker(db)
    for start in range(0, len(items), 7):
        apply(db, tracker, items[start : start + 7])
    with db.read() as conn:
        found = sorted(conn.execute(select(schema.responses.c.seconds)).scalars())
        row = conn.execute(
            select(schema.response_stats).where(
                schema.response_stats.c.phone_number_id == "*",
                schema.response_stats.c.sender_kind == "*",
                schema.response_stats.c.kind == "all",
            )
        ).all()
    assert found == sorted(expected)
    assert sum(r._mapping["count"] for r in row) == len(expected)
    assert abs(sum(r.total_seconds for r in row) - sum(expected)) < 1e-6
    assert max(r.max_seconds for r in row) == max(expected)


def test_privacy_settings_apply_before_anything_is_stored(db: Database) -> None:
    tracker = Tracker(db, TrackerConfig(customer_key=b"k" * 32, keep_bodies=False))
    apply(db, tracker, [inbound("wamid.p", "16505557777", T)])
    with db.read() as conn:
        row = conn.execute(select(schema.messages)).mappings().one()
    assert row["customer"].startswith("h:") and "16505557777" not in row["customer"]
    assert row["body"] is None
