"""Response-time summaries from the per-hour aggregates: as fast for a year as for a day, and
whatever number of messages is stored (one row per hour is read, see
:mod:`waquality.store.stats`). Percentiles carry the sketch's relative error (1%); counts,
means and maxima are exact. Times are in seconds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, false, func, select

from waquality.domain import sketch
from waquality.domain.enums import SenderKind
from waquality.domain.responses import Bucket, BucketOf, bucket_start
from waquality.store import schema
from waquality.store.stats import ALL, CONVERSATION_COUNTERS

rs, cs, c = schema.response_stats, schema.conversation_stats, schema.conversations
KINDS = {"first": "first_response", "all": "all_responses"}


@dataclass(frozen=True, slots=True)
class Query:
    start: datetime
    end: datetime
    phone_number_id: str | None = None
    sender: SenderKind | None = None
    bucket: Bucket = Bucket.DAY
    zone: str = "UTC"
    targets: dict[str, float] = field(default_factory=lambda: {"1m": 60.0, "5m": 300.0})


def _hour_floor(moment: datetime, zone: str) -> datetime:
    return bucket_start(moment, Bucket.HOUR, zone)


def summary(conn: Connection, q: Query) -> dict[str, Any]:
    """Summaries over ``[start, end)`` (whole hours: the hour holding ``start`` counts) and a
    series per bucket, for one number or all, one sender kind or all."""
    since = _hour_floor(q.start, q.zone)
    phone = q.phone_number_id or ALL
    query = select(
        rs.c.bucket_start, rs.c.kind, rs.c.count, rs.c.total_seconds, rs.c.max_seconds, rs.c.bins
    ).where(
        rs.c.phone_number_id == phone,
        rs.c.sender_kind == (q.sender.value if q.sender else ALL),
        rs.c.bucket_start >= since,
        rs.c.bucket_start < q.end,
    )
    series_of = BucketOf(q.bucket, q.zone)
    # (series start or None for the whole range, kind) → bins, sum, max
    groups: dict[tuple[datetime | None, str], _Group] = {}
    for start, kind, count, total, largest, bins in conn.execute(query):
        if not count:
            continue
        key = (series_of(start), kind)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group()
        group.add(bins, total, largest)
    counters: dict[datetime | None, Counter[str]] = {}
    query_c = select(cs).where(
        cs.c.phone_number_id == phone, cs.c.bucket_start >= since, cs.c.bucket_start < q.end
    )
    for row in conn.execute(query_c).mappings():
        values = {k: int(row[k]) for k in CONVERSATION_COUNTERS}
        for moment in (series_of(row["bucket_start"]), None):
            counters.setdefault(moment, Counter()).update(values)
    starts = sorted(
        {k for k, _ in groups if k is not None} | {k for k in counters if k is not None}
    )
    whole = counters.get(None, Counter())
    summarised = _summarised(groups, starts, q.targets)
    return {
        "from": q.start,
        "to": q.end,
        "bucket": q.bucket.value,
        "time_zone": q.zone,
        "relative_error": sketch.RELATIVE_ERROR,
        **summarised[None],
        "unanswered": whole["unanswered"],
        "unanswered_runs": whole["unanswered_runs"],
        "conversations": _conversations(whole),
        "waiting": waiting(conn, q.phone_number_id),
        "series": [
            {
                "start": start,
                **summarised[start],
                "unanswered": counters.get(start, Counter())["unanswered"],
                "conversations": counters.get(start, Counter())["conversations"],
            }
            for start in starts
        ],
    }


@dataclass(slots=True)
class _Group:
    bins: list[bytes] = field(default_factory=list)
    total: float = 0.0
    largest: float = 0.0

    def add(self, bins: bytes, total: float, largest: float) -> None:
        self.bins.append(bins)
        self.total += total
        self.largest = max(self.largest, largest)


def _summarised(
    groups: dict[tuple[datetime | None, str], _Group],
    starts: list[datetime],
    targets: dict[str, float],
) -> dict[datetime | None, dict[str, Any]]:
    """Both kinds' summaries for every series start and for the whole range (``None``: the
    sum of the series), computed all at once."""
    keys: list[tuple[datetime | None, str]] = [(s, kind) for s in starts for kind in KINDS]
    chosen = [groups.get(key) or _Group() for key in keys]
    kinds = list(KINDS)
    whole = [[i for i, (_, kind) in enumerate(keys) if kind == k] for k in kinds]
    found = sketch.summaries(
        [g.bins for g in chosen],
        [g.total for g in chosen],
        [g.largest if g.bins else None for g in chosen],
        targets,
        combined=whole,
    )
    keys += [(None, kind) for kind in kinds]
    result: dict[datetime | None, dict[str, Any]] = {start: {} for start in [None, *starts]}
    for (start, kind), summary in zip(keys, found, strict=True):
        result[start][KINDS[kind]] = summary
    return result


def _conversations(counts: Counter[str]) -> dict[str, int]:
    return {
        "started": counts["conversations"],
        "by_customer": counts["by_customer"],
        "answered": counts["answered"],
        "unanswered": counts["unanswered"],
    }


def waiting(conn: Connection, phone_number_id: str | None = None) -> int:
    """Open conversations whose customer is waiting for a reply right now."""
    conditions: list[ColumnElement[bool]] = [c.c.ended == false(), c.c.waiting_since.is_not(None)]
    if phone_number_id:
        conditions.append(c.c.phone_number_id == phone_number_id)
    return int(
        conn.execute(select(func.count()).select_from(c).where(and_(*conditions))).scalar() or 0
    )
