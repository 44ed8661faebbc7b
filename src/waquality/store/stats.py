"""Per-hour aggregates of the tracker, changed by deltas in the caller's transaction.

A change to a message, a conversation or a response adds its new contribution and takes back
its old one, so the aggregates always equal what a rebuild from the stored rows gives, in
whatever order the rows changed. Every contribution also goes to the ``*`` rows (every number,
every sender, every template), so a summary reads one row per hour whatever it filters on.
Hours are those of the configured time zone. Counters are added in SQL; duration sketches are
read, merged and written back (rows locked in key order, so concurrent writers never deadlock).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, String, and_, func, select, true

from waquality.domain import delivery, sketch
from waquality.domain.responses import Bucket, bucket_start
from waquality.store import bulk, schema
from waquality.store.keys import KeyTable
from waquality.store.keys import params as key_params

ALL = "*"  # the rollup: every number, sender or template
HOUR = timedelta(hours=1)
CHUNK = 400  # rows per statement
KEYS_PER_QUERY = 200  # rows one statement looks up by key
QUARTER_HOUR = 900  # seconds

ResponseKey = tuple[str, str, datetime, str]  # phone number, sender kind, hour, first/all
CounterKey = tuple[str, datetime]  # phone number, hour
DeliveryKey = tuple[str, str, datetime]  # phone number, template, hour
ErrorKey = tuple[str, str, datetime, int]  # phone number, template, hour, error code

CONVERSATION_COUNTERS = (
    "conversations",
    "by_customer",
    "answered",
    "unanswered",
    "unanswered_runs",
)
DELIVERY_COUNTERS = delivery.COUNTERS


@dataclass(slots=True)
class Durations:
    """A change to one sketch row: counts per bin, the sum, the largest value added, and
    whether a value as large as the row's maximum may have been taken back."""

    bins: Counter[int] = field(default_factory=Counter)
    count: int = 0
    total: float = 0.0
    largest: float = 0.0
    retracted: float = 0.0  # the largest value taken back

    def add(self, seconds: float, sign: int) -> None:
        self.bins[sketch.bin_of(seconds)] += sign
        self.count += sign
        self.total += sign * seconds
        if sign > 0:
            self.largest = max(self.largest, seconds)
        else:
            self.retracted = max(self.retracted, seconds)

    def merge(self, other: Durations) -> None:
        self.bins.update(other.bins)
        self.count += other.count
        self.total += other.total
        self.largest = max(self.largest, other.largest)
        self.retracted = max(self.retracted, other.retracted)


@dataclass(slots=True)
class Deltas:
    """What one transaction changes in the aggregates, by number, sender or template and hour;
    :func:`write` adds each change to the ``*`` rows too."""

    zone: str = "UTC"
    # (number, sender, hour, first?) → durations added and taken back
    responses: dict[tuple[str, str, datetime, bool], Durations] = field(default_factory=dict)
    # (number, hour) → CONVERSATION_COUNTERS
    conversations: dict[CounterKey, list[int]] = field(default_factory=dict)
    # (number, template, hour) → DELIVERY_COUNTERS
    delivery: dict[DeliveryKey, list[int]] = field(default_factory=dict)
    errors: Counter[ErrorKey] = field(default_factory=Counter)
    _hours: dict[int, datetime] = field(default_factory=dict)  # quarter hour → its hour

    def hour(self, moment: datetime) -> datetime:
        """The start of the zone's hour holding ``moment`` (remembered per quarter hour since
        the epoch: every zone's hours start on a quarter hour of UTC)."""
        quarter = int(moment.timestamp() // QUARTER_HOUR)
        found = self._hours.get(quarter)
        if found is None:
            start = datetime.fromtimestamp(quarter * QUARTER_HOUR, UTC)
            found = self._hours[quarter] = bucket_start(start, Bucket.HOUR, self.zone)
        return found

    def response(
        self, phone: str, sender: str, asked_at: datetime, seconds: float, first: bool, sign: int
    ) -> None:
        key = (phone, sender, self.hour(asked_at), first)
        found = self.responses.get(key)
        if found is None:
            found = self.responses[key] = Durations()
        found.add(seconds, sign)

    def conversation(self, phone: str, started_at: datetime, counts: Sequence[int]) -> None:
        _add(self.conversations, (phone, self.hour(started_at)), counts)

    def deliveries(
        self,
        phone: str,
        template: str,
        at: datetime,
        counts: Sequence[int],
        code: int | None = None,
        sign: int = 1,
    ) -> None:
        """``counts`` in the order of :data:`DELIVERY_COUNTERS`, each times ``sign``."""
        hour = self.hour(at)
        _add(self.delivery, (phone, template, hour), counts, sign)
        if code is not None:
            self.errors[(phone, template, hour, code)] += sign

    def __bool__(self) -> bool:
        return bool(self.responses or self.conversations or self.delivery or self.errors)

    def rolled_up(
        self,
    ) -> tuple[
        dict[ResponseKey, Durations],
        dict[CounterKey, list[int]],
        dict[DeliveryKey, list[int]],
        Counter[ErrorKey],
    ]:
        """Every change, also under ``*`` for every number, sender and template."""
        responses: dict[ResponseKey, Durations] = {}
        for (phone, sender, hour, first), change in self.responses.items():
            for p in (phone, ALL):
                for s in (sender, ALL):
                    for kind in ("first", "all") if first else ("all",):
                        target = responses.get((p, s, hour, kind))
                        if target is None:
                            target = responses[(p, s, hour, kind)] = Durations()
                        target.merge(change)
        conversations: dict[CounterKey, list[int]] = {}
        for (phone, hour), counts in self.conversations.items():
            for p in (phone, ALL):
                _add(conversations, (p, hour), counts)
        delivery: dict[DeliveryKey, list[int]] = {}
        for (phone, template, hour), counts in self.delivery.items():
            for key in _rollups(phone, template, hour):
                _add(delivery, key, counts)
        errors: Counter[ErrorKey] = Counter()
        for (phone, template, hour, code), n in self.errors.items():
            for p, t, h in _rollups(phone, template, hour):
                errors[(p, t, h, code)] += n
        return responses, conversations, delivery, errors


def _rollups(phone: str, template: str, hour: datetime) -> list[DeliveryKey]:
    keys = [(phone, template, hour), (ALL, template, hour)]
    if template != ALL:
        keys += [(phone, ALL, hour), (ALL, ALL, hour)]
    return keys


def _add(into: dict[Any, list[int]], key: Any, counts: Sequence[int], sign: int = 1) -> None:
    found = into.get(key)
    if found is None:
        into[key] = [sign * n for n in counts]
    else:
        for i, n in enumerate(counts):
            found[i] += sign * n


def write(conn: Connection, deltas: Deltas) -> None:
    """Apply ``deltas`` to the aggregate tables."""
    responses, conversations, delivery, errors = deltas.rolled_up()
    _add_counters(
        conn,
        schema.conversation_stats,
        ("phone_number_id", "bucket_start"),
        CONVERSATION_COUNTERS,
        conversations,
    )
    _add_counters(
        conn,
        schema.delivery_stats,
        ("phone_number_id", "template", "bucket_start"),
        DELIVERY_COUNTERS,
        delivery,
    )
    _add_counters(
        conn,
        schema.delivery_errors,
        ("phone_number_id", "template", "bucket_start", "code"),
        ("count",),
        {key: [n] for key, n in errors.items()},
    )
    _merge_sketches(conn, responses)


def _add_counters(
    conn: Connection,
    table: Any,
    keys: tuple[str, ...],
    counters: tuple[str, ...],
    changes: Mapping[Any, list[int]],
) -> None:
    rows = [
        {**dict(zip(keys, key, strict=True)), **dict(zip(counters, change, strict=True))}
        for key, change in sorted(changes.items())
        if any(change)
    ]
    if not rows:
        return
    for start in range(0, len(rows), CHUNK):
        bulk.insert(conn, table, rows[start : start + CHUNK], conflict=keys, add=counters)


def _merge_sketches(conn: Connection, changes: Mapping[ResponseKey, Durations]) -> None:
    keys = sorted(key for key, change in changes.items() if change.count or change.bins)
    if not keys:
        return
    rs = schema.response_stats
    existing: dict[ResponseKey, Any] = {}
    for start in range(0, len(keys), KEYS_PER_QUERY):
        chunk = keys[start : start + KEYS_PER_QUERY]
        dialect = conn.dialect.name
        found_rows = conn.execute(_sketch_rows(dialect), key_params(dialect, 4, chunk))
        for found in found_rows:
            key = (found.phone_number_id, found.sender_kind, found.bucket_start, found.kind)
            existing[key] = found
    fresh: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for key in keys:
        change = changes[key]
        old = existing.get(key)
        bins = sketch.add(old.bins if old is not None else None, change.bins)
        count = (old.count if old is not None else 0) + change.count
        total = (old.total_seconds if old is not None else 0.0) + change.total
        largest = max(old.max_seconds if old is not None else 0.0, change.largest)
        if old is not None and change.retracted and change.retracted >= old.max_seconds:
            largest = max(change.largest, _largest(conn, key, sketch.unpack(bins)))
        new = {
            "phone_number_id": key[0],
            "sender_kind": key[1],
            "bucket_start": key[2],
            "kind": key[3],
            "count": count,
            "total_seconds": total if count else 0.0,
            "max_seconds": largest if count else 0.0,
            "bins": bins,
        }
        (changed if old is not None else fresh).append(new)
    bulk.insert(conn, rs, fresh)
    bulk.update(conn, rs, changed, by=("phone_number_id", "sender_kind", "bucket_start", "kind"))


_SKETCH_KEYS = (String(), String(), schema.UTCDateTime(), String())


@functools.cache
def _sketch_rows(dialect: str) -> Any:
    """The stored sketch rows of some keys, locked: a statement built once per database kind
    (see :mod:`waquality.store.keys`)."""
    rs = schema.response_stats
    table = KeyTable(dialect, _SKETCH_KEYS)
    phone, sender, hour, kind = table.columns
    on = and_(
        rs.c.phone_number_id == phone,
        rs.c.sender_kind == sender,
        rs.c.bucket_start == hour,
        rs.c.kind == kind,
    )
    return select(rs).select_from(table.table).join(rs, on).with_for_update(of=rs)


def _largest(conn: Connection, key: ResponseKey, bins: Mapping[int, int]) -> float:
    """The largest response left in a row after its maximum was taken back: exact from the
    stored responses, or the top bin's value once they have expired."""
    if not bins:
        return 0.0
    r = schema.responses
    phone, sender, hour, kind = key
    query = select(func.max(r.c.seconds)).where(
        r.c.asked_at >= hour,
        r.c.asked_at < hour + HOUR,
        r.c.phone_number_id == phone if phone != ALL else true(),
        r.c.sender_kind == sender if sender != ALL else true(),
        r.c.first.is_(True) if kind == "first" else true(),
    )
    found = conn.execute(query).scalar()
    return float(found) if found is not None else sketch.value_of(max(bins))


def reset_since(conn: Connection, since: datetime | None) -> None:
    """Forget the aggregates from ``since`` (everything when ``None``), before a rebuild."""
    for table in (
        schema.response_stats,
        schema.conversation_stats,
        schema.delivery_stats,
        schema.delivery_errors,
    ):
        statement = table.delete()
        if since is not None:
            statement = statement.where(table.c.bucket_start >= since)
        conn.execute(statement)


def chunks(items: Iterable[Any], size: int = CHUNK) -> Iterable[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
