"""A redelivery storm: the same 10,000 changes delivered five times, shuffled and re-batched into
bodies of 1 to 50 changes, leave exactly the state, history and events of one in-order delivery.

The two deliveries run one after the other on the test's database, every table emptied in
between, so the test is the same on SQLite and PostgreSQL. Small out-of-order cases follow, each
compared with its in-order delivery the same way.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import delete, func, select

from builders import envelope, phone_quality, template_quality, template_status
from waquality.process.worker import Processor
from waquality.store import inbox, schema
from waquality.store.database import Database

NOW = datetime(2026, 1, 1, tzinfo=UTC)  # the processing clock and every body's arrival time
T0 = 1_760_000_000
SEED = 20_260_101
CHANGES = 10_000
COPIES = 5
WABAS = ("102290129340398", "104996122399160", "109387562118934", "113155271826409")
TEMPLATES = 320
PHONES = 48
SHOWN = 30  # differences listed in a failure message

Entry = dict[str, Any]
Row = dict[str, Any]


# -- the changes ------------------------------------------------------------------------------


@dataclass
class _Template:
    template_id: int
    waba: str
    category: str
    status: str | None = None
    before_archive: str | None = None
    quality: str = "UNKNOWN"
    pauses: int = 0
    locked: bool = False


@dataclass
class _Phone:
    display: str
    waba: str
    legacy: bool  # still reported in the pre-2025-10 shape (FLAGGED/UNFLAGGED, current_limit)
    tier: int = 1
    flagged: bool = False
    onboarded: bool = False


@dataclass
class _World:
    rng: random.Random
    templates: list[_Template]
    phones: list[_Phone]
    portfolio: dict[str, int] = field(default_factory=dict)  # WABA → index in CURRENT_TIERS


LEGACY_TIERS = ("TIER_50", "TIER_250", "TIER_1K", "TIER_10K", "TIER_100K", "TIER_UNLIMITED")
CURRENT_TIERS = ("TIER_250", "TIER_2K", "TIER_10K", "TIER_100K", "TIER_UNLIMITED")
QUALITIES = ("GREEN", "YELLOW", "RED", "UNKNOWN")
REASONS = ("INVALID_FORMAT", "PROMOTIONAL", "INCORRECT_CATEGORY", "TAG_CONTENT_MISMATCH")
FIRST = (
    "Your WhatsApp message template has been paused for 3 hours until ... because it had issues."
)
SECOND = "Your WhatsApp message template has been paused for 6 hours until ... to have issues."


def _weighted(rng: random.Random, options: Iterable[tuple[str, float]]) -> str:
    pairs = list(options)
    return rng.choices([name for name, _ in pairs], [weight for _, weight in pairs])[0]


def _next_status(world: _World, t: _Template, at: int) -> Entry:
    """The template's next status webhook, following the lifecycle Meta reports."""
    rng = world.rng
    extra: dict[str, Any] = {"message_template_category": t.category}
    title: str | None = None
    description: str | None = None
    match t.status:
        case None:
            event = "PENDING"
        case "PENDING":
            event = _weighted(rng, [("APPROVED", 7), ("REJECTED", 2), ("PENDING", 1)])
        case "REJECTED":
            event = _weighted(rng, [("PENDING", 5), ("IN_APPEAL", 3), ("ARCHIVED", 1)])
        case "IN_APPEAL":
            event = _weighted(rng, [("APPROVED", 2), ("REJECTED", 1), ("REINSTATED", 1)])
        case "APPROVED":
            event = _weighted(
                rng,
                [
                    ("PAUSED", 4),
                    ("RATE_LIMITING_PAUSE", 1),
                    ("FLAGGED", 2),
                    ("PENDING", 1),
                    ("APPROVED", 1),
                    ("LOCKED" if not t.locked else "UNLOCKED", 1),
                    ("ARCHIVED", 1),
                ],
            )
        case "PAUSED":
            event = _weighted(rng, [("UNPAUSE", 6), ("DISABLED", 1), ("PAUSED", 1)])
        case "FLAGGED":
            event = _weighted(rng, [("REINSTATED", 3), ("DISABLED", 1), ("APPROVED", 1)])
        case "DISABLED":
            event = _weighted(rng, [("IN_APPEAL", 3), ("PENDING_DELETION", 1)])
        case "ARCHIVED":
            event = "UNARCHIVED"
        case "PENDING_DELETION":
            event = "PENDING"  # recreated under the same id
        case _:
            raise AssertionError(t.status)
    status: str | None = t.status
    if event == "PAUSED":
        t.pauses += 1
        if t.pauses > 2:
            event, title = "DISABLED", "DISABLED"
        else:
            title = "FIRST_PAUSE" if t.pauses == 1 else "SECOND_PAUSE"
            description = FIRST if t.pauses == 1 else SECOND
            status = "PAUSED"
    elif event == "RATE_LIMITING_PAUSE":
        event, title, status = "PAUSED", "RATE_LIMITING_PAUSE", "PAUSED"
    elif event == "UNPAUSE":
        event, title, status = "APPROVED", "UNPAUSE", "APPROVED"
    elif event in ("LOCKED", "UNLOCKED"):
        t.locked = event == "LOCKED"
    elif event == "ARCHIVED":
        t.before_archive, status = t.status, "ARCHIVED"
    elif event == "UNARCHIVED":
        status = t.before_archive
    elif event == "REJECTED":
        extra["reason"] = rng.choice(REASONS)
        status = "REJECTED"
    elif event == "FLAGGED":
        if rng.random() < 0.5:  # "scheduled for disabling on ..."
            extra["disable_info"] = {"disable_date": at + 7 * 86_400}
        status = "FLAGGED"
    else:
        status = "APPROVED" if event == "REINSTATED" else event
    if event == "DISABLED":
        extra["disable_info"] = {"disable_date": at}
        status, title = "DISABLED", title or "DISABLED"
        description = "Your WhatsApp message template has been disabled."
    t.status = status
    return template_status(
        t.template_id, event, at, title=title, description=description, waba=t.waba, **extra
    )


def _next_quality(world: _World, t: _Template, at: int) -> Entry:
    new = world.rng.choice([q for q in QUALITIES if q != t.quality] + [t.quality])
    item = {**template_quality(t.template_id, t.quality, new, at), "id": t.waba}
    t.quality = new
    return item


def _next_phone(world: _World, p: _Phone, at: int) -> Entry:
    """Legacy numbers: FLAGGED/UNFLAGGED and tier moves in ``current_limit``/``old_limit``.
    Current numbers: onboarding, throughput and portfolio limits in
    ``max_daily_conversations_per_business`` (sometimes without the deprecated fields)."""
    rng = world.rng
    limits: dict[str, Any]
    tiers: tuple[str, ...]
    if p.legacy:
        tiers = LEGACY_TIERS
        if rng.random() < 0.4:
            p.flagged = not p.flagged
            event = "FLAGGED" if p.flagged else "UNFLAGGED"
            limits = {"current_limit": tiers[p.tier]}
        else:
            up = p.tier == 0 or (p.tier < len(tiers) - 2 and rng.random() < 0.6)
            old, p.tier = p.tier, p.tier + (1 if up else -1)
            event = "UPGRADE" if up else "DOWNGRADE"
            limits = {"old_limit": tiers[old], "current_limit": tiers[p.tier]}
    else:
        tiers = CURRENT_TIERS
        tier = world.portfolio.setdefault(p.waba, 0)
        if not p.onboarded:
            p.onboarded, event = True, "ONBOARDING"
            limits = {"max_daily_conversations_per_business": tiers[tier]}
        elif rng.random() < 0.1:
            event = "THROUGHPUT_UPGRADE"
            limits = {"max_daily_conversations_per_business": "TIER_UNLIMITED"}
        else:
            up = tier == 0 or (tier < len(tiers) - 2 and rng.random() < 0.6)
            world.portfolio[p.waba] = new = tier + (1 if up else -1)
            event = "UPGRADE" if up else "DOWNGRADE"
            limits = {"max_daily_conversations_per_business": tiers[new]}
            if rng.random() < 0.7:
                limits |= {"old_limit": tiers[tier], "current_limit": tiers[new]}
    return {**phone_quality(event, at, display=p.display, **limits), "id": p.waba}


def build_changes(seed: int = SEED, n: int = CHANGES) -> list[Entry]:
    """``n`` distinct changes (one entry each), oldest first: strictly increasing times, so no
    two facts about the same field tie and "in order" is unambiguous."""
    rng = random.Random(seed)
    templates = [
        _Template(
            1_300_000_000_000_000 + 7919 * i,
            rng.choice(WABAS),
            rng.choice(("MARKETING", "UTILITY", "AUTHENTICATION")),
        )
        for i in range(TEMPLATES)
    ]
    phones = [
        _Phone(f"1555{rng.randrange(10**7):07d}", rng.choice(WABAS), legacy=i % 3 == 0)
        for i in range(PHONES)
    ]
    assert len({p.display for p in phones}) == PHONES
    world = _World(rng, templates, phones)
    makers: list[tuple[Callable[[_World, Any, int], Entry], list[Any], float]] = [
        (_next_status, templates, 0.55),
        (_next_quality, templates, 0.20),
        (_next_phone, phones, 0.25),
    ]
    changes: list[Entry] = []
    at = T0
    for _ in range(n):
        at += rng.randint(1, 60)
        make, subjects, _ = rng.choices(makers, [w for *_, w in makers])[0]
        subject = rng.choice(subjects)
        if make is _next_quality and subject.status is None:
            make = _next_status  # a template is created before it has a quality score
        changes.append(make(world, subject, at))
    return changes


def storm(changes: list[Entry], rng: random.Random) -> list[bytes]:
    """Every change ``COPIES`` times, shuffled, in bodies of 1 to 50 changes (several WABAs and
    fields per body; a body may even carry the same change twice)."""
    copies = [c for c in changes for _ in range(COPIES)]
    rng.shuffle(copies)
    bodies = []
    while copies:
        size = rng.randint(1, 50)
        bodies.append(envelope(*copies[:size]))
        copies = copies[size:]
    return bodies


# -- delivering -------------------------------------------------------------------------------


def store(db: Database, bodies: list[bytes]) -> None:
    with db.write(priority=True) as conn:
        inbox.insert_bodies(conn, [inbox.Body(body, NOW) for body in bodies])


def deliver_in_order(db: Database, changes: list[Entry]) -> None:
    store(db, [envelope(change) for change in changes])
    Processor(db, clock=lambda: NOW).drain()


def deliver_storm(db: Database, bodies: list[bytes], rng: random.Random) -> None:
    """Bodies arrive in waves while the worker drains them, in batches of varying size."""
    while bodies:
        wave = rng.randint(50, 400)
        store(db, bodies[:wave])
        bodies = bodies[wave:]
        Processor(db, batch_size=rng.choice((1, 10, 50, 200)), clock=lambda: NOW).drain()


def empty(db: Database) -> None:
    with db.write() as conn:
        for table in reversed(schema.metadata.sorted_tables):
            conn.execute(delete(table))


# -- comparing --------------------------------------------------------------------------------


@dataclass
class Snapshot:
    state: dict[str, dict[Any, Row]]  # table → identity → row
    history: Counter[tuple[Any, ...]]
    events: set[tuple[Any, ...]]
    event_count: int


HISTORY_COLUMNS = (
    "subject_kind",
    "subject_key",
    "field",
    "old_value",
    "new_value",
    "occurred_at",
    "source",
)
EVENT_COLUMNS = (
    "dedupe_key",
    "source",
    "field",
    "kind",
    "waba_id",
    "subject_kind",
    "subject_id",
    "occurred_at",
    "received_at",
    "value",
)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return value


def _rows(db: Database, table: Any) -> list[Row]:
    with db.read() as conn:
        return [{k: _plain(v) for k, v in r._mapping.items()} for r in conn.execute(select(table))]


def snapshot(db: Database) -> Snapshot:
    """Everything the two deliveries must agree on.

    State rows are compared whole. Every column is a function of the set of facts (newest wins
    per field; counters depend on the distinct events only), of the arrival time
    (``last_webhook_at``: the same for every body here) or of the processing clock
    (``updated_at``: fixed here), and ``as_of`` holds the time of the newest fact per field, so
    none may differ. The one exception is ``phone_numbers.key``, a surrogate numbered in order
    of first sight: rows are matched by display number instead, and phone history is keyed by
    display number too.

    History is compared as a multiset without ``id``, ``recorded_at`` (the clock) and
    ``event_id`` (which copy of a redelivered change was first is a matter of arrival), events
    by their content without ``id`` and ``raw_id`` (the body that happened to carry them).
    """
    phones = _rows(db, schema.phone_numbers)
    display = {str(p["key"]): p["display_phone_number"] for p in phones}
    state: dict[str, dict[Any, Row]] = {
        "phone_numbers": {
            p["display_phone_number"]: {k: v for k, v in p.items() if k != "key"} for p in phones
        }
    }
    for table in (schema.templates, schema.wabas, schema.businesses):
        state[table.name] = {r["id"]: r for r in _rows(db, table)}
    history: Counter[tuple[Any, ...]] = Counter()
    for r in _rows(db, schema.history):
        if r["subject_kind"] == "phone_number":
            r["subject_key"] = display[r["subject_key"]]
        history[tuple(r[c] for c in HISTORY_COLUMNS)] += 1
    events = {tuple(r[c] for c in EVENT_COLUMNS) for r in _rows(db, schema.events)}
    with db.read() as conn:
        count = conn.execute(select(func.count()).select_from(schema.events)).scalar_one()
    return Snapshot(state, history, events, int(count))


Difference = tuple[str, str]  # (what differs: table and column, or history and field; detail)


def differences(expected: Snapshot, actual: Snapshot) -> list[Difference]:
    found: list[Difference] = []
    for table, rows in expected.state.items():
        others = actual.state[table]
        for key in sorted(rows.keys() | others.keys(), key=str):
            a, b = rows.get(key), others.get(key)
            if a is None or b is None:
                found.append((table, f"{key} only in {'storm' if a is None else 'in-order'}"))
                continue
            for column in sorted(a.keys() | b.keys()):
                if a.get(column) != b.get(column):
                    detail = f"{key}: in-order {a.get(column)!r}, storm {b.get(column)!r}"
                    found.append((f"{table}.{column}", detail))
    for side, history in (
        ("in-order", expected.history - actual.history),
        ("storm", actual.history - expected.history),
    ):
        for row, n in sorted(history.items(), key=str):
            found.append((f"history {row[0]}.{row[2]}", f"only {side}: {row} x{n}"))
    for side, items in (
        ("in-order", expected.events - actual.events),
        ("storm", actual.events - expected.events),
    ):
        found += [("events", f"only {side}: {item[:4]}") for item in sorted(items)]
    return found


def report(found: list[Difference]) -> str:
    """How many differences of each kind, then the first few."""
    kinds = Counter(kind for kind, _ in found)
    summary = "\n".join(f"  {kind}: {n}" for kind, n in sorted(kinds.items()))
    shown = "\n".join(f"  {kind} {detail}" for kind, detail in found[:SHOWN])
    return f"{len(found)} differences:\n{summary}\nfirst {SHOWN}:\n{shown}"


# -- the test ---------------------------------------------------------------------------------


def test_a_redelivery_storm_equals_one_in_order_delivery(db: Database) -> None:
    changes = build_changes()
    fields = Counter(c["changes"][0]["field"] for c in changes)
    assert min(fields.values()) > 1000, fields  # a real mix
    times = [c["time"] for c in changes]
    assert times == sorted(set(times))  # strictly increasing: no ties, one "in order"

    deliver_in_order(db, changes)
    assert inbox.counts(db)["pending"] == inbox.counts(db)["quarantined"] == 0
    expected = snapshot(db)
    assert expected.event_count == len(expected.events) == CHANGES
    assert len(expected.state["templates"]) == TEMPLATES
    assert len(expected.state["phone_numbers"]) == PHONES
    assert set(expected.state["wabas"]) == set(WABAS)
    moves = Counter(row[:3] for row in expected.history.elements())  # per subject and field
    assert sum(n >= 3 for n in moves.values()) > TEMPLATES  # many objects change several times

    empty(db)
    rng = random.Random(SEED + 1)
    bodies = storm(changes, rng)
    deliver_storm(db, bodies, rng)
    assert inbox.counts(db)["pending"] == inbox.counts(db)["quarantined"] == 0
    with db.read() as conn:
        seen = conn.execute(select(func.sum(schema.field_counts.c.changes))).scalar_one()
    assert seen == COPIES * CHANGES  # every copy was read
    actual = snapshot(db)

    assert actual.event_count == CHANGES
    if found := differences(expected, actual):
        pytest.fail(report(found))


# -- small cases ------------------------------------------------------------------------------


def _status(event: str, at: int, **extra: Any) -> Entry:
    return template_status(7, event, T0 + at, **extra)


def _quality(previous: str, new: str, at: int) -> Entry:
    return template_quality(7, previous, new, T0 + at)


def _flag(event: str, at: int) -> Entry:
    return phone_quality(event, T0 + at, current_limit="TIER_10K")


# Small orders of arrival, one change per body and batch, which must leave what the in-order
# delivery leaves: the facts in time order, then the order (indexes) in which they arrive.
SMALL_CASES = {
    "a value that comes back (template quality)": (
        [
            _quality("UNKNOWN", "GREEN", 10),
            _quality("GREEN", "YELLOW", 20),
            _quality("YELLOW", "GREEN", 30),
            _quality("GREEN", "RED", 40),
        ],
        [0, 2, 3, 1],
    ),
    "a value that comes back (phone status)": (
        [
            _flag("FLAGGED", 10),
            _flag("UNFLAGGED", 20),
            _flag("FLAGGED", 30),
            _flag("UNFLAGGED", 40),
        ],
        [0, 2, 3, 1],
    ),
    "pause ladder": (
        [
            _status("PAUSED", 10, title="FIRST_PAUSE", description=FIRST),
            _status("APPROVED", 20, title="UNPAUSE"),
            _status("PAUSED", 30, title="SECOND_PAUSE", description=SECOND),
        ],
        [2, 0, 1],
    ),
    "rate-limiting pauses": (
        [
            _status("PAUSED", 10, title="RATE_LIMITING_PAUSE"),
            _status("APPROVED", 20, title="UNPAUSE"),
            _status("PAUSED", 30, title="RATE_LIMITING_PAUSE"),
        ],
        [2, 0, 1],
    ),
    "unarchived before archived": (
        [
            _status("REJECTED", 10, reason="PROMOTIONAL"),
            _status("ARCHIVED", 20),
            _status("UNARCHIVED", 30),
        ],
        [0, 2, 1],
    ),
    "an older status after unarchived": (
        [
            _status("FLAGGED", 10),
            _status("APPROVED", 20),
            _status("ARCHIVED", 30),
            _status("UNARCHIVED", 40),
        ],
        [0, 2, 3, 1],
    ),
}


def deliver_one_by_one(db: Database, entries: list[Entry]) -> None:
    for item in entries:
        store(db, [envelope(item)])
        Processor(db, clock=lambda: NOW).drain()


@pytest.mark.parametrize("case", SMALL_CASES)
def test_small_out_of_order_cases_equal_in_order(db: Database, case: str) -> None:
    facts, order = SMALL_CASES[case]
    deliver_one_by_one(db, facts)
    expected = snapshot(db)
    empty(db)
    deliver_one_by_one(db, [facts[i] for i in order])
    actual = snapshot(db)
    assert actual.event_count == expected.event_count == len(facts)
    if found := differences(expected, actual):
        pytest.fail(report(found))
