"""Per-hour aggregates of the tracker, changed by deltas in the caller's transaction.

A change to a message, a conversation or a response adds its new contribution and takes back
its old one, so the aggregates always equal what a rebuild from the stored rows gives, in
whatever order the rows changed. Every contribution also goes to the ``*`` rows (every number,
every sender, every template), so a summary reads one row per hour whatever it filters on.
Hours are those of the configured time zone. Counters are added in SQL; duration sketches are
read, merged and written back (rows locked in key order, so concurrent writers never deadlock).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select, true, update

from waquality.domain import sketch
from waquality.domain.responses import Bucket, bucket_start
from waquality.store import schema
from waquality.store.database import Database

ALL = "*"  # the rollup: every number, sender or template
HOUR = timedelta(hours=1)
CHUNK = 400  # rows per statement
KEYS_PER_QUERY = 200  # rows one statement looks up by key

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
DELIVERY_COUNTERS = (
    "outbound",
    "sent",
    "delivered",
    "read",
    "failed",
    "refused",
    "inbound",
    "opt_outs",
    "resumes",
)


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


@dataclass(slots=True)
class Deltas:
    """What one transaction changes in the aggregates."""

    zone: str = "UTC"
    responses: dict[ResponseKey, Durations] = field(default_factory=dict)
    conversations: dict[CounterKey, Counter[str]] = field(default_factory=dict)
    delivery: dict[DeliveryKey, Counter[str]] = field(default_factory=dict)
    errors: Counter[ErrorKey] = field(default_factory=Counter)

    def hour(self, moment: datetime) -> datetime:
        return bucket_start(moment, Bucket.HOUR, self.zone)

    def response(
        self, phone: str, sender: str, asked_at: datetime, seconds: float, first: bool, sign: int
    ) -> None:
        hour = self.hour(asked_at)
        for p in (phone, ALL):
            for s in (sender, ALL):
                for kind in ("first", "all") if first else ("all",):
                    self.responses.setdefault((p, s, hour, kind), Durations()).add(seconds, sign)

    def conversation(self, phone: str, started_at: datetime, counts: Mapping[str, int]) -> None:
        hour = self.hour(started_at)
        for p in (phone, ALL):
            self.conversations.setdefault((p, hour), Counter()).update(counts)

    def deliveries(
        self,
        phone: str,
        template: str,
        at: datetime,
        counts: Mapping[str, int],
        errors: Mapping[int, int] | None = None,
    ) -> None:
        hour = self.hour(at)
        for p in (phone, ALL):
            for t in {template, ALL} if template != ALL else {ALL}:
                self.delivery.setdefault((p, t, hour), Counter()).update(counts)
                for code, n in (errors or {}).items():
                    self.errors[(p, t, hour, code)] += n

    def __bool__(self) -> bool:
        return bool(self.responses or self.conversations or self.delivery or self.errors)


def write(db: Database, conn: Connection, deltas: Deltas) -> None:
    """Apply ``deltas`` to the aggregate tables."""
    _add_counters(
        db,
        conn,
        schema.conversation_stats,
        ("phone_number_id", "bucket_start"),
        CONVERSATION_COUNTERS,
        deltas.conversations,
    )
    _add_counters(
        db,
        conn,
        schema.delivery_stats,
        ("phone_number_id", "template", "bucket_start"),
        DELIVERY_COUNTERS,
        deltas.delivery,
    )
    errors = {key: Counter({"count": n}) for key, n in deltas.errors.items() if n}
    _add_counters(
        db,
        conn,
        schema.delivery_errors,
        ("phone_number_id", "template", "bucket_start", "code"),
        ("count",),
        errors,
    )
    _merge_sketches(db, conn, deltas.responses)


def _add_counters(
    db: Database,
    conn: Connection,
    table: Any,
    keys: tuple[str, ...],
    counters: tuple[str, ...],
    changes: Mapping[Any, Counter[str]],
) -> None:
    rows = [
        {**dict(zip(keys, key, strict=True)), **{c: change.get(c, 0) for c in counters}}
        for key, change in sorted(changes.items())
        if any(change.get(c, 0) for c in counters)
    ]
    if not rows:
        return
    statement = db.insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={c: table.c[c] + statement.excluded[c] for c in counters},
    )
    for start in range(0, len(rows), CHUNK):
        conn.execute(statement, rows[start : start + CHUNK])


def _merge_sketches(
    db: Database, conn: Connection, changes: Mapping[ResponseKey, Durations]
) -> None:
    keys = sorted(key for key, change in changes.items() if change.count or change.bins)
    if not keys:
        return
    rs = schema.response_stats
    columns = (rs.c.phone_number_id, rs.c.sender_kind, rs.c.bucket_start, rs.c.kind)
    existing: dict[ResponseKey, Any] = {}
    for start in range(0, len(keys), KEYS_PER_QUERY):
        chunk = keys[start : start + KEYS_PER_QUERY]
        # one condition per key: both databases then search the primary key for each
        found_keys = or_(
            *(and_(*(col == v for col, v in zip(columns, k, strict=True))) for k in chunk)
        )
        query = select(rs).where(found_keys).order_by(*columns).with_for_update()
        for found in conn.execute(query):
            key = (found.phone_number_id, found.sender_kind, found.bucket_start, found.kind)
            existing[key] = found
    fresh: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for key in keys:
        change = changes[key]
        old = existing.get(key)
        bins = sketch.unpack(old.bins) if old is not None else Counter()
        bins.update(change.bins)
        bins = Counter({i: n for i, n in bins.items() if n})
        count = (old.count if old is not None else 0) + change.count
        total = (old.total_seconds if old is not None else 0.0) + change.total
        largest = max(old.max_seconds if old is not None else 0.0, change.largest)
        if old is not None and change.retracted and change.retracted >= old.max_seconds:
            largest = max(change.largest, _largest(conn, key, bins))
        new = {
            "phone_number_id": key[0],
            "sender_kind": key[1],
            "bucket_start": key[2],
            "kind": key[3],
            "count": count,
            "total_seconds": total if count else 0.0,
            "max_seconds": largest if count else 0.0,
            "bins": sketch.pack(bins),
        }
        (changed if old is not None else fresh).append(new)
    if fresh:
        conn.execute(rs.insert(), fresh)
    if changed:
        conn.execute(
            update(rs)
            .where(
                rs.c.phone_number_id == bindparam("k_phone"),
                rs.c.sender_kind == bindparam("k_sender"),
                rs.c.bucket_start == bindparam("k_hour"),
                rs.c.kind == bindparam("k_kind"),
            )
            .values(
                {c: bindparam(f"v_{c}") for c in ("count", "total_seconds", "max_seconds", "bins")}
            ),
            [
                {
                    "k_phone": row["phone_number_id"],
                    "k_sender": row["sender_kind"],
                    "k_hour": row["bucket_start"],
                    "k_kind": row["kind"],
                    **{f"v_{c}": row[c] for c in ("count", "total_seconds", "max_seconds", "bins")},
                }
                for row in changed
            ],
        )


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
