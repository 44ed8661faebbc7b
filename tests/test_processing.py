"""Processing on a real database: dedupe, ordering, history, joins, quarantine, concurrency."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from builders import (
    DISPLAY,
    PHONE_ID,
    WABA,
    entry,
    envelope,
    messages_status,
    phone_quality,
    template_quality,
    template_status,
)
from conftest import manifest, wait_for, webhook
from waquality.domain import timeline
from waquality.process import worker as worker_module
from waquality.process.interpret import interpret
from waquality.process.worker import BatchResult, Processor
from waquality.reprocess import requeue_quarantined
from waquality.store import inbox, schema, state
from waquality.store.database import Database
from waquality.store.retention import prune_customer_payloads

NOW = datetime(2026, 1, 1, tzinfo=UTC)
T0 = 1_760_000_000  # event times (entry.time) are real Unix seconds


def store(db: Database, *bodies: bytes, at: datetime = NOW) -> None:
    with db.write(priority=True) as conn:
        inbox.insert_bodies(conn, [inbox.Body(body, at) for body in bodies])


def process(db: Database, *bodies: bytes) -> BatchResult:
    store(db, *bodies)
    return Processor(db, clock=lambda: NOW).drain()


def rows(db: Database, table: Any, *where: Any, order: Any = None) -> list[dict[str, Any]]:
    query = select(table).where(*where)
    if order is not None:
        query = query.order_by(*order)
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def count(db: Database, table: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def template(db: Database, template_id: int) -> dict[str, Any]:
    [row] = rows(db, schema.templates, schema.templates.c.id == str(template_id))
    return row


def status_history(db: Database, key: str, field: str = "status") -> list[tuple[Any, ...]]:
    h = schema.history
    return [
        (r["old_value"], r["new_value"])
        for r in rows(
            db, h, h.c.subject_key == key, h.c.field == field, order=[h.c.occurred_at, h.c.id]
        )
    ]


def all_golden() -> list[bytes]:
    return [webhook(case["file"]) for case in manifest()]


def test_every_golden_payload_is_processed(db: Database) -> None:
    result = process(db, *all_golden())
    unique_events = sum(c["management_events"] for c in manifest()) - 1  # one redelivered pair
    assert result.bodies == len(manifest())
    assert result.events == unique_events == count(db, schema.events)
    assert result.quarantined == sum(c["broken_changes"] for c in manifest())
    assert inbox.counts(db)["pending"] == 0
    fields = {r["field"] for r in rows(db, schema.field_counts)}
    assert {"messages", "some_future_field", "phone_number_quality_update"} <= fields


def snapshot(db: Database) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for table in (schema.templates, schema.phone_numbers, schema.wabas, schema.businesses):
        result[table.name] = sorted(
            tuple(sorted((k, str(v)) for k, v in r.items() if k != "updated_at"))
            for r in rows(db, table)
        )
    h = schema.history
    result["history"] = sorted(
        tuple(
            str(r[k])
            for k in (
                "subject_kind",
                "subject_key",
                "field",
                "old_value",
                "new_value",
                "occurred_at",
            )
        )
        for r in rows(db, h)
    )
    result["events"] = count(db, schema.events)
    return result


def test_redelivery_changes_nothing(db: Database) -> None:
    bodies = all_golden()
    process(db, *bodies)
    before = snapshot(db)
    shuffled = bodies * 2
    random.Random(7).shuffle(shuffled)
    second = process(db, *shuffled)
    assert second.events == 0
    assert snapshot(db) == before


def test_late_older_event_goes_into_history_but_not_state(db: Database) -> None:
    process(db, webhook("sequences/out_of_order_1_newer_delivered_first.json"))
    process(db, webhook("sequences/out_of_order_2_older_delivered_second.json"))
    row = template(db, 1689556908129870)
    assert row["status"] == "PAUSED"
    assert status_history(db, "1689556908129870") == [(None, "APPROVED"), ("APPROVED", "PAUSED")]


def _status_timelines(rng: random.Random) -> dict[int, list[str]]:
    return {
        t: [rng.choice(("APPROVED", "REJECTED", "PENDING")) for _ in range(rng.randint(3, 12))]
        for t in (11, 12, 13)
    }


def _deliver(db: Database, rng: random.Random, events: list[dict[str, Any]]) -> None:
    """In POSTs of 1 to 6 changes, each POST processed in a batch of its own."""
    while events:
        size = rng.randint(1, 6)
        store(db, *(envelope(event) for event in events[:size]))
        Processor(db, batch_size=size, clock=lambda: NOW).drain()
        events = events[size:]


def _changes(statuses: list[str]) -> list[tuple[str | None, str]]:
    changes: list[tuple[str | None, str]] = []
    for status in statuses:
        previous = changes[-1][1] if changes else None
        if status != previous:
            changes.append((previous, status))
    return changes


@pytest.fixture(params=[state.REPLAY_FIRST_PAGE, 1, 2], ids=["page", "page-1", "page-2"])
def first_page(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Replays that read a field's facts in pages of the usual size, and of one and two facts
    (the pages then end amid facts of one time, and a replay reads several)."""
    monkeypatch.setattr(state, "REPLAY_FIRST_PAGE", request.param)
    return int(request.param)


@pytest.mark.parametrize("seed", range(4))
def test_newest_first_delivery_gives_the_in_order_history(
    db: Database, seed: int, first_page: int
) -> None:
    """Every fact arrives late, several per batch for one template: history is exact."""
    rng = random.Random(seed)
    timelines = _status_timelines(rng)
    events = [
        template_status(t, status, T0 + 10 * i + t)
        for t, statuses in timelines.items()
        for i, status in enumerate(statuses)
    ]
    events.sort(key=lambda e: -int(e["time"]))
    _deliver(db, rng, events)
    for t, statuses in timelines.items():
        assert status_history(db, str(t)) == _changes(statuses)
        assert template(db, t)["status"] == statuses[-1]


@pytest.mark.parametrize("seed", range(6))
def test_any_delivery_order_gives_the_in_order_history(
    db: Database, seed: int, first_page: int
) -> None:
    rng = random.Random(seed)
    timelines = _status_timelines(rng)
    events = [
        template_status(t, status, T0 + 10 * i + t)
        for t, statuses in timelines.items()
        for i, status in enumerate(statuses)
    ]
    rng.shuffle(events)
    _deliver(db, rng, events)
    for t, statuses in timelines.items():
        assert status_history(db, str(t)) == _changes(statuses)
        assert template(db, t)["status"] == statuses[-1]


LADDER = (
    ("APPROVED", None),
    ("PAUSED", "FIRST_PAUSE"),
    ("APPROVED", "UNPAUSE"),
    ("ARCHIVED", None),
    ("UNARCHIVED", None),
    ("PAUSED", "SECOND_PAUSE"),
    ("APPROVED", "UNPAUSE"),
    ("PAUSED", "RATE_LIMITING_PAUSE"),
    ("APPROVED", None),
)


@pytest.mark.parametrize("seed", range(6))
def test_counters_and_restores_in_any_delivery_order(
    db: Database, seed: int, first_page: int
) -> None:
    rng = random.Random(seed)
    events = [
        template_status(9, event, T0 + 10 * i, title=title)
        for i, (event, title) in enumerate(LADDER)
    ]
    rng.shuffle(events)
    _deliver(db, rng, events)
    assert status_history(db, "9") == [
        (None, "APPROVED"),
        ("APPROVED", "PAUSED"),
        ("PAUSED", "APPROVED"),
        ("APPROVED", "ARCHIVED"),
        ("ARCHIVED", "APPROVED"),  # unarchived: back to what it was
        ("APPROVED", "PAUSED"),
        ("PAUSED", "APPROVED"),
        ("APPROVED", "PAUSED"),
        ("PAUSED", "APPROVED"),
    ]
    assert status_history(db, "9", "pause_count") == [("0", "1"), ("1", "2")]
    assert status_history(db, "9", "rate_limit_pause_count") == [("0", "1")]
    row = template(db, 9)
    assert (row["status"], row["pause_count"], row["rate_limit_pause_count"]) == ("APPROVED", 2, 1)


def test_a_late_fact_leaves_the_history_before_it_alone(db: Database) -> None:
    """A field with a long history costs a late fact no more than a short one: only what
    happened from the late fact's time on is replayed."""
    statuses = ["APPROVED", "REJECTED", "PENDING"] * 20
    for i, status in enumerate(statuses):
        process(db, envelope(template_status(21, status, T0 + 10 * i)))
    h = schema.history
    where = (h.c.subject_key == "21", h.c.field == "status")
    before = {r["id"]: r for r in rows(db, h, *where)}
    late = T0 + 10 * 55 + 5  # between the 56th and 57th
    process(db, envelope(template_status(21, "PAUSED", late)))
    after = rows(db, h, *where, order=[h.c.occurred_at, h.c.id])
    kept = [r for r in after if r["occurred_at"] < datetime.fromtimestamp(late, UTC)]
    assert len(kept) == 56 and all(before[r["id"]] == r for r in kept)
    expected = _changes([*statuses[:56], "PAUSED", *statuses[56:]])
    assert [(r["old_value"], r["new_value"]) for r in after] == expected
    assert template(db, 21)["status"] == statuses[-1]


def test_a_late_fact_reads_a_page_of_the_history_after_it(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A late fact that changes little costs one page of facts, however long the history
    after it; the history comes out as if every fact had come in order."""
    statuses = ["APPROVED", "REJECTED", "PENDING"] * 100
    for start in range(0, len(statuses), 50):
        events = [
            template_status(22, status, T0 + 10 * i)
            for i, status in enumerate(statuses[start : start + 50], start)
        ]
        process(db, *(envelope(event) for event in events))
    read: list[int] = []
    replay = timeline.replay_until_met

    def counted(facts: Sequence[Any], *args: Any) -> Any:
        read.append(len(facts))
        return replay(facts, *args)

    monkeypatch.setattr(state, "replay_until_met", counted)
    late = T0 + 10 * 10 + 5  # between the 11th and 12th: APPROVED → PAUSED → PENDING
    process(db, envelope(template_status(22, "PAUSED", late)))
    # each field the late pause touches (status and its counters) read one page, which ends
    # before its last fact's time
    assert read and all(n == state.REPLAY_FIRST_PAGE - 1 for n in read)
    expected = _changes([*statuses[:11], "PAUSED", *statuses[11:]])
    assert status_history(db, "22") == expected
    assert template(db, 22)["status"] == statuses[-1]


def test_one_batch_replays_more_fields_than_one_statement_reads(db: Database) -> None:
    """Late facts about more fields than one replay statement takes (chunks of them), some
    met at once, some never."""
    count = state.REPLAY_KEYS_PER_QUERY + 30
    templates = range(100, 100 + count)
    process(db, *(envelope(template_status(t, "APPROVED", T0 + 100)) for t in templates))
    late = [template_status(t, "APPROVED" if t % 2 else "REJECTED", T0 + 50) for t in templates]
    store(db, *(envelope(event) for event in late))
    Processor(db, batch_size=count, clock=lambda: NOW).drain()
    for t in templates:
        if t % 2:  # the same value earlier: the history starts there, then nothing changes
            assert status_history(db, str(t)) == [(None, "APPROVED")]
        else:
            assert status_history(db, str(t)) == [(None, "REJECTED"), ("REJECTED", "APPROVED")]
        assert template(db, t)["status"] == "APPROVED"
    h = schema.history
    first = rows(db, h, h.c.field == "status", h.c.old_value.is_(None))
    assert len(first) == count
    assert {r["occurred_at"] for r in first} == {datetime.fromtimestamp(T0 + 50, UTC)}


def test_out_of_order_limits_keep_the_newest(db: Database) -> None:
    process(
        db,
        envelope(
            phone_quality("UPGRADE", T0 + 2000, old_limit="TIER_2K", current_limit="TIER_10K")
        ),
    )
    process(
        db,
        envelope(
            phone_quality("DOWNGRADE", T0 + 1000, old_limit="TIER_10K", current_limit="TIER_2K")
        ),
    )
    [phone] = rows(db, schema.phone_numbers)
    assert phone["messaging_limit"] == "TIER_10K"
    assert status_history(db, str(phone["key"]), "messaging_limit") == [
        (None, "TIER_2K"),
        ("TIER_2K", "TIER_10K"),
    ]


def test_pause_ladder(db: Database) -> None:
    t0 = T0
    first = "Your WhatsApp message template has been paused for 3 hours until ... UTC."
    process(db, envelope(template_status(7, "APPROVED", t0)))
    process(
        db, envelope(template_status(7, "PAUSED", t0 + 10, title="FIRST_PAUSE", description=first))
    )
    row = template(db, 7)
    assert (row["status"], row["pause_count"]) == ("PAUSED", 1)
    assert row["paused_until"] == datetime.fromtimestamp(t0 + 10, UTC) + timedelta(hours=3)
    process(db, envelope(template_status(7, "APPROVED", t0 + 20, title="UNPAUSE")))
    assert template(db, 7)["paused_until"] is None
    process(db, envelope(template_status(7, "PAUSED", t0 + 30, title="SECOND_PAUSE")))
    process(db, envelope(template_status(7, "PAUSED", t0 + 40, title="RATE_LIMITING_PAUSE")))
    row = template(db, 7)
    assert (row["pause_count"], row["rate_limit_pause_count"]) == (2, 1)
    assert row["paused_until"] is None  # a rate-limiting pause does not say for how long
    process(
        db,
        envelope(template_status(7, "DISABLED", t0 + 50, disable_info={"disable_date": t0 + 50})),
    )
    row = template(db, 7)
    assert row["status"] == "DISABLED"
    assert row["disable_date"] == datetime.fromtimestamp(t0 + 50, UTC)
    assert status_history(db, "7", "pause_count") == [("0", "1"), ("1", "2")]


def test_unarchived_restores_the_status_before_archiving(db: Database) -> None:
    process(
        db,
        envelope(
            template_status(8, "REJECTED", T0 + 100), template_status(8, "ARCHIVED", T0 + 200)
        ),
    )
    process(db, envelope(template_status(8, "UNARCHIVED", T0 + 300)))
    assert template(db, 8)["status"] == "REJECTED"


def test_quality_and_category(db: Database) -> None:
    process(
        db,
        envelope(
            template_quality(9, "UNKNOWN", "GREEN", T0 + 100),
            template_quality(9, "GREEN", "YELLOW", T0 + 200),
        ),
    )
    assert template(db, 9)["quality_score"] == "YELLOW"
    assert template(db, 9)["language"] == "en_US"
    process(db, webhook("template_category_update/impending.json"))
    process(db, webhook("template_category_update/completed.json"))
    row = template(db, 278077987957091)
    assert (row["category"], row["pending_category"]) == ("MARKETING", None)


def test_display_number_joins_its_id(db: Database) -> None:
    process(db, envelope(phone_quality("FLAGGED", T0 + 100, current_limit="TIER_10K")))
    [phone] = rows(db, schema.phone_numbers)
    assert (phone["phone_number_id"], phone["status"]) == (None, "FLAGGED")
    process(db, envelope(messages_status()))
    [phone] = rows(db, schema.phone_numbers)
    assert (phone["phone_number_id"], phone["display_phone_number"]) == (PHONE_ID, DISPLAY)
    assert phone["status"] == "FLAGGED"


def test_display_row_merges_into_the_id_row(db: Database) -> None:
    alert = entry(
        "account_alerts",
        {
            "entity_type": "PHONE_NUMBER",
            "entity_id": PHONE_ID,
            "alert_info": {
                "alert_severity": "CRITICAL",
                "alert_status": "ACTIVE",
                "alert_type": "OBA_REJECTED",
            },
        },
        time=T0 + 50,
    )
    process(db, envelope(alert, phone_quality("FLAGGED", T0 + 100, current_limit="TIER_10K")))
    assert count(db, schema.phone_numbers) == 2
    process(db, envelope(messages_status()))
    [phone] = rows(db, schema.phone_numbers)
    assert phone["phone_number_id"] == PHONE_ID and phone["display_phone_number"] == DISPLAY
    assert (phone["status"], phone["last_alert"]) == ("FLAGGED", "CRITICAL OBA_REJECTED")
    assert status_history(db, str(phone["key"])) == [(None, "FLAGGED")]


def test_portfolio_limit_reaches_the_business(db: Database) -> None:
    alert = entry(
        "account_alerts",
        {
            "entity_type": "BUSINESS",
            "entity_id": "506914307656634",
            "alert_info": {
                "alert_severity": "WARNING",
                "alert_status": "ACTIVE",
                "alert_type": "OBA_APPROVED",
            },
        },
        time=T0 + 50,
    )
    capability = entry(
        "business_capability_update",
        {"max_daily_conversations_per_business": 2000, "max_phone_numbers_per_waba": 25},
        time=T0 + 60,
    )
    process(db, envelope(alert, capability))
    [waba] = rows(db, schema.wabas, schema.wabas.c.id == WABA)
    assert (waba["business_id"], waba["messaging_limit"], waba["max_phone_numbers"]) == (
        "506914307656634",
        "TIER_2K",
        25,
    )
    [business] = rows(db, schema.businesses)
    assert business["messaging_limit"] == "TIER_2K"
    assert waba["last_webhook_at"] == NOW


def test_account_updates(db: Database) -> None:
    process(
        db,
        webhook("account_update/account_restriction.json"),
        webhook("account_update/partner_removed_with_disconnection_info.json"),
    )
    wabas = {r["id"]: r for r in rows(db, schema.wabas)}
    restricted = wabas["102290129340398"]
    assert "RESTRICTED_BIZ_INITIATED_MESSAGING" in restricted["restrictions"]
    assert restricted["restricted_until"] is not None
    removed = [w for w in wabas.values() if w["partner_state"] == "REMOVED"]
    assert len(removed) == 1 and removed[0]["business_id"]


def test_quarantine_and_reprocess(db: Database) -> None:
    broken = [c["file"] for c in manifest() if c["broken_changes"]]
    result = process(db, *(webhook(f) for f in broken))
    assert result.quarantined == len(broken)
    assert inbox.counts(db)["quarantined"] == len(broken)
    requeued = requeue_quarantined(db, NOW)
    assert requeued == len(broken)
    assert inbox.counts(db)["quarantined"] == 0
    again = Processor(db, clock=lambda: NOW).drain()
    assert again.bodies == len(broken) and again.events == 0  # nothing applied twice
    assert inbox.counts(db)["quarantined"] == len(broken)  # still broken: quarantined anew
    assert count(db, schema.quarantine) == 2 * len(broken)


def test_a_body_that_breaks_the_code_is_isolated(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = interpret

    def failing(event: Any) -> Any:
        if event.subject_id == "666":
            raise RuntimeError("simulated bug")
        return real(event)

    monkeypatch.setattr(worker_module, "interpret", failing)
    good = [envelope(template_status(i, "APPROVED", 100)) for i in range(1, 6)]
    result = process(db, *good[:2], envelope(template_status(666, "APPROVED", 100)), *good[2:])
    assert result.bodies == 6 and result.quarantined == 1
    assert count(db, schema.templates) == 5
    [item] = rows(db, schema.quarantine)
    assert "simulated bug" in item["error"]
    monkeypatch.setattr(worker_module, "interpret", real)  # "the fix"
    requeue_quarantined(db, NOW)
    Processor(db, clock=lambda: NOW).drain()
    assert template(db, 666)["status"] == "APPROVED"


def drain_at_once(db: Database, workers: int, batch_size: int) -> list[BatchResult]:
    """What each of ``workers`` processors, in threads of their own, drained at once."""
    results: list[BatchResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(Processor(db, batch_size=batch_size, clock=lambda: NOW).drain())
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    return results


def test_concurrent_workers_never_handle_a_body_twice(db: Database) -> None:
    events = []
    for template_id in range(1, 121):
        events += [
            template_status(template_id, "PENDING", T0 + 1000),
            template_status(template_id, "APPROVED", T0 + 2000),
            template_status(template_id, "PAUSED", T0 + 3000, title="FIRST_PAUSE"),
        ]
    random.Random(3).shuffle(events)
    bodies = [envelope(*events[i : i + 3]) for i in range(0, len(events), 3)]
    store(db, *bodies)
    results = drain_at_once(db, workers=4, batch_size=7)
    assert sum(r.bodies for r in results) == len(bodies)
    assert sum(r.events for r in results) == len(events) == count(db, schema.events)
    for template_id in (1, 60, 120):
        assert status_history(db, str(template_id)) == [
            (None, "PENDING"),
            ("PENDING", "APPROVED"),
            ("APPROVED", "PAUSED"),
        ]
    assert {r["pause_count"] for r in rows(db, schema.templates)} == {1}


def test_concurrent_workers_make_one_event_of_a_redelivered_change(db: Database) -> None:
    """Meta redelivers: the same changes in other bodies, taken by other workers at once."""
    events = [template_status(t, "PAUSED", T0 + t, title="FIRST_PAUSE") for t in range(1, 61)]
    bodies = [envelope(*events[i : i + 4]) for i in range(0, len(events), 4)]
    store(db, *bodies, *reversed(bodies), *bodies)
    results = drain_at_once(db, workers=4, batch_size=5)
    assert sum(r.bodies for r in results) == 3 * len(bodies)
    assert sum(r.events for r in results) == len(events) == count(db, schema.events)
    assert sum(r.duplicates for r in results) == 2 * len(events)
    assert [r["pause_count"] for r in rows(db, schema.templates)] == [1] * len(events)


def test_retention_deletes_or_redacts_customer_payloads(db: Database) -> None:
    old = NOW - timedelta(days=40)
    mixed = envelope(messages_status(), template_status(5, "APPROVED", 100))
    bodies: Sequence[bytes] = (
        envelope(messages_status()),
        mixed,
        envelope(template_status(6, "APPROVED", 100)),
    )
    store(db, *bodies, at=old)
    Processor(db, clock=lambda: NOW).drain()
    assert prune_customer_payloads(db, NOW, timedelta(days=30)) == 2
    kept = rows(db, schema.raw_webhooks, order=[schema.raw_webhooks.c.id])
    assert len(kept) == 2
    assert b"statuses" not in kept[0]["body"] and b"message_template_id" in kept[0]["body"]
    assert kept[0]["redacted_at"] == NOW
    assert kept[1]["body"] == bodies[2]
    assert prune_customer_payloads(db, NOW, timedelta(days=30)) == 0


def test_background_worker_defers_while_busy_then_processes(db: Database) -> None:
    store(db, envelope(template_status(11, "APPROVED", T0)))
    busy = threading.Event()
    busy.set()
    worker = worker_module.BackgroundWorker(
        Processor(db, clock=lambda: NOW), idle_poll=0.05, busy=busy.is_set, max_defer=30.0
    )
    worker.start()
    try:
        threading.Event().wait(0.3)  # time in which an idle worker would have processed it
        assert inbox.counts(db)["pending"] == 1  # deferred: the process is busy
        busy.clear()
        wait_until_done(db)
    finally:
        worker.stop()
    assert template(db, 11)["status"] == "APPROVED"


def wait_until_done(db: Database) -> None:
    """Wait until nothing is pending (at most 5 s)."""
    wait_for(lambda: inbox.counts(db)["pending"] == 0, timeout=5)


def run_until_done(db: Database, worker: worker_module.BackgroundWorker) -> None:
    """Run ``worker`` until nothing is pending (at most 5 s)."""
    worker.start()
    try:
        wait_until_done(db)
    finally:
        worker.stop()


def test_background_worker_never_defers_forever(db: Database) -> None:
    store(db, envelope(template_status(12, "APPROVED", T0)))
    worker = worker_module.BackgroundWorker(
        Processor(db, clock=lambda: NOW), idle_poll=0.05, busy=lambda: True, max_defer=0.2
    )
    run_until_done(db, worker)


def test_a_batch_limit_takes_the_oldest_bodies_only(db: Database) -> None:
    store(db, *(envelope(template_status(20 + i, "APPROVED", T0)) for i in range(12)))
    processor = Processor(db, batch_size=8, clock=lambda: NOW)
    assert processor.run_once(limit=3).bodies == 3
    assert processor.run_once(limit=50).bodies == 8  # never more than batch_size
    assert inbox.counts(db)["pending"] == 1
    assert [template(db, 20 + i)["status"] for i in range(11)] == ["APPROVED"] * 11


def test_the_processing_rate_is_measured_on_full_batches_only(db: Database) -> None:
    processor = Processor(db, batch_size=4, clock=lambda: NOW)
    store(db, envelope(template_status(30, "APPROVED", T0)))
    assert processor.run_once().bodies == 1
    assert processor.rate is None  # one body of four says little about throughput
    store(db, *(envelope(template_status(31 + i, "APPROVED", T0)) for i in range(4)))
    assert processor.run_once().bodies == 4
    assert processor.rate is not None and processor.rate > 0


def test_before_its_rate_is_known_queueing_acknowledgements_tell_a_burst(db: Database) -> None:
    crowded, arrivals = False, 0.0
    processor = Processor(db, clock=lambda: NOW)
    worker = worker_module.BackgroundWorker(
        processor, busy=lambda: crowded, arrivals=lambda: arrivals
    )
    worker.finished(0.0, None, 0)  # nothing was pending
    arrivals = 1.0
    store(db, envelope(template_status(59, "APPROVED", T0)))  # then a second's worth of webhooks
    assert processor.rate is None
    assert not worker.in_burst(0.0)  # webhooks come, but nobody waits for the store
    crowded = True
    assert worker.in_burst(1.0)
    processor.rate = 2e9  # measured since: the rates decide, not the crowd
    assert not worker.in_burst(2.0)


def test_a_burst_lasts_its_first_seconds_only(db: Database) -> None:
    arrivals = 0.0
    processor = Processor(db, clock=lambda: NOW)
    processor.rate = 1.0  # bodies/s
    worker = worker_module.BackgroundWorker(processor, arrivals=lambda: arrivals)
    assert not worker.in_burst(0.0)
    worker.finished(99.0, None, 0)  # processing had caught up
    store(db, *(envelope(template_status(56 + i, "APPROVED", T0)) for i in range(2)))
    arrivals = 2.0  # webhooks outrun processing: a burst
    assert worker.in_burst(100.0)
    arrivals = 0.0  # the rate wavers below processing's for a moment: the same burst goes on
    assert not worker.in_burst(101.0)
    arrivals = 2.0
    bursts = [worker.in_burst(102.0 + i / 2) for i in range(30)]  # a batch every 0.5 s
    # a burst for BURST_LIMIT seconds from its start; then an overload
    assert bursts == [True] * 26 + [False] * 4
    # calm for longer than BURST_CALM, but processing has not caught up since: an overload
    arrivals = 0.0
    assert not worker.in_burst(118.0)
    arrivals = 2.0
    assert not worker.in_burst(116.5 + worker_module.BURST_CALM + 0.1)
    # once it has, the next wave is a new burst
    arrivals = 0.0
    worker.finished(121.0, 100, 40)  # a batch that emptied the backlog
    arrivals = 2.0
    assert worker.in_burst(122.0)


def test_a_burst_starts_only_from_a_backlog_emptied_shortly_before(db: Database) -> None:
    arrivals = 0.1
    processor = Processor(db, batch_size=4, clock=lambda: NOW)
    processor.rate = 1.0
    worker = worker_module.BackgroundWorker(processor, arrivals=lambda: arrivals)
    worker.finished(10.0, None, 4)  # a full batch: more was pending
    worker.finished(12.0, 2, 1)  # a short batch: the backlog was emptied
    store(db, *(envelope(template_status(50 + i, "APPROVED", T0)) for i in range(2)))
    arrivals = 2.0  # then a wave
    assert not worker.in_burst(12.0 + worker_module.BURST_FRESH + 0.1)  # too long ago
    arrivals = 0.1
    worker.finished(30.0, None, 3)
    arrivals = 2.0
    assert worker.in_burst(30.0 + worker_module.BURST_FRESH - 0.1)
    worker = worker_module.BackgroundWorker(processor, arrivals=lambda: arrivals)
    worker.finished(40.0, None, 4)  # never emptied
    assert not worker.in_burst(41.0)


def test_a_burst_needs_webhooks_twice_as_fast_as_processing_kept_up_with(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a long transaction held acknowledgements, their rate jumps back: no burst."""
    monkeypatch.setattr(worker_module, "BURST_BACKLOG_SECONDS", 0.0)  # any backlog will do
    arrivals = 1000.0
    processor = Processor(db, clock=lambda: NOW)
    processor.rate = 10.0  # measured on full batches beside the load: below the webhooks' rate
    worker = worker_module.BackgroundWorker(processor, arrivals=lambda: arrivals)
    worker.finished(0.0, None, 3)  # kept up with 1,000/s
    arrivals = 600.0  # acknowledgements held up while processing caught up
    worker.finished(2.0, None, 3)
    arrivals = 1800.0  # and back, with those that waited
    assert not worker.in_burst(3.0)  # under twice the highest rate processing kept up with
    arrivals = 2100.0
    assert worker.in_burst(3.5)
    # that rate fades: long after, a wave from a slower steady rate is a burst sooner
    arrivals = 600.0
    memory = worker_module.KEPT_UP_MEMORY
    worker.finished(10 * memory, None, 3)
    arrivals = 1300.0
    assert worker.in_burst(10 * memory + worker_module.BURST_CALM + 1)


def test_a_burst_starts_only_once_the_backlog_has_grown(db: Database) -> None:
    """Near its capacity, processing's rate wavers around that of the webhooks: a backlog of a
    batch or two is no burst, and small batches would cost the throughput it lacks."""
    arrivals = 0.0  # bodies/s
    processor = Processor(db, clock=lambda: NOW)
    processor.rate = 1.0
    worker = worker_module.BackgroundWorker(processor, arrivals=lambda: arrivals, burst_backlog=3)
    worker.finished(0.0, None, 0)
    arrivals = 2.0
    store(db, *(envelope(template_status(60 + i, "APPROVED", T0)) for i in range(2)))
    assert not worker.in_burst(1.0)  # a second's worth, but not burst_backlog
    store(db, envelope(template_status(62, "APPROVED", T0)))
    arrivals = 4.0
    assert not worker.in_burst(1.5)  # burst_backlog, but not a second's worth any more
    store(db, envelope(template_status(63, "APPROVED", T0)))
    assert worker.in_burst(2.0)


class RecordingProcessor(Processor):
    def __init__(self, db: Database) -> None:
        super().__init__(db, batch_size=10, clock=lambda: NOW)
        self.limits: list[int | None] = []  # of the batches that found bodies
        self.idle = threading.Event()  # set once a batch found none

    def run_once(self, limit: int | None = None) -> BatchResult:
        result = super().run_once(limit)
        if result.bodies:
            self.limits.append(limit)
        else:
            self.idle.set()
        return result


def backlog(db: Database, first: int) -> RecordingProcessor:
    """Twelve pending bodies and a processor that measured 100 bodies/s on full batches."""
    store(db, *(envelope(template_status(first + i, "APPROVED", T0)) for i in range(12)))
    processor = RecordingProcessor(db)
    processor.rate = 100.0
    return processor


@pytest.mark.parametrize("arrivals", [0.0, 1e9])
def test_background_worker_takes_small_batches_while_webhooks_outrun_it(
    db: Database, arrivals: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "BURST_BACKLOG_SECONDS", 0.0)  # any backlog will do
    processor = RecordingProcessor(db)
    processor.rate = 100.0  # bodies/s, measured on full batches
    rate = 0.0
    worker = worker_module.BackgroundWorker(
        processor, idle_poll=0.05, arrivals=lambda: rate, burst_batch=5
    )
    worker.start()
    try:
        assert processor.idle.wait(5)  # nothing pending yet: processing is caught up
        rate = arrivals
        store(db, *(envelope(template_status(40 + i, "APPROVED", T0)) for i in range(12)))
        worker.wake.set()
        wait_until_done(db)
    finally:
        worker.stop()
    if arrivals:  # a burst: the store is held for a few bodies at a time
        assert processor.limits == [5, 5, 5]
    else:  # no burst: batches grow back from the burst's size
        assert processor.limits == [5, 10]


def test_batches_grow_while_full_and_start_small_after_an_idle_moment(db: Database) -> None:
    store(db, *(envelope(template_status(80 + i, "APPROVED", T0)) for i in range(40)))
    processor = RecordingProcessor(db)
    worker = worker_module.BackgroundWorker(
        processor, idle_poll=0.05, arrivals=lambda: 0.0, burst_batch=2
    )
    worker.start()
    try:
        assert processor.idle.wait(5)  # all 40 processed, then nothing pending
        store(db, *(envelope(template_status(120 + i, "APPROVED", T0)) for i in range(3)))
        worker.wake.set()
        wait_for(lambda: len(processor.limits) == 8, timeout=5)
    finally:
        worker.stop()
    # doubling up to the batch size (10) while batches come back full; from 2 again after
    assert processor.limits == [2, 4, 8, 10, 10, 10, 2, 4]
    assert inbox.counts(db)["pending"] == 0


@pytest.mark.parametrize("arrivals", [0.0, 1e9])
def test_full_batches_wait_longer_for_acknowledgements_in_a_burst(
    db: Database, arrivals: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on PostgreSQL: a burst keeps full batches, and more time between them."""
    monkeypatch.setattr(worker_module, "BURST_BACKLOG_SECONDS", 0.0)  # any backlog will do
    processor = backlog(db, 60)
    busy = threading.Event()
    busy.set()  # acknowledgements queue up all along, unless the burst's test clears it
    worker = worker_module.BackgroundWorker(
        processor,
        idle_poll=0.05,
        busy=busy.is_set,
        max_defer=0.0,
        arrivals=lambda: arrivals,
        burst_batch=None,
        burst_defer=30.0,
    )
    worker.finished(time.monotonic(), None, 0)  # processing had just caught up
    worker.start()
    try:
        if arrivals:
            threading.Event().wait(0.3)  # time in which a worker not deferring processes them
            assert inbox.counts(db)["pending"] == 12  # deferred: a burst, and the crowd waits
            busy.clear()
        wait_until_done(db)  # outside a burst, a busy server defers no batch (max_defer=0)
    finally:
        worker.stop()
    assert processor.limits == [None, None]
