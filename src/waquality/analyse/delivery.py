"""Delivery signals per number and template from the per-hour counters: sent, delivered, read,
failed and refused messages with their rates, failures by error code (the quality-related
codes called out), opt-outs and resumes; as a total and a series per bucket."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from waquality.domain.delivery import QUALITY_CODES, rate
from waquality.domain.responses import Bucket, BucketOf, bucket_start
from waquality.store import schema
from waquality.store.stats import ALL, DELIVERY_COUNTERS

ds, de = schema.delivery_stats, schema.delivery_errors


@dataclass(frozen=True, slots=True)
class Query:
    start: datetime
    end: datetime
    phone_number_id: str | None = None
    template: str | None = None
    bucket: Bucket = Bucket.DAY
    zone: str = "UTC"


def summary(conn: Connection, q: Query) -> dict[str, Any]:
    since = bucket_start(q.start, Bucket.HOUR, q.zone)
    phone, template = q.phone_number_id or ALL, q.template or ALL
    series_of = BucketOf(q.bucket, q.zone)
    counters: dict[datetime | None, list[int]] = {}
    query = select(ds).where(
        ds.c.phone_number_id == phone,
        ds.c.template == template,
        ds.c.bucket_start >= since,
        ds.c.bucket_start < q.end,
    )
    columns = [ds.c[k] for k in DELIVERY_COUNTERS]
    for start, *values in conn.execute(query.with_only_columns(ds.c.bucket_start, *columns)):
        for key in (series_of(start), None):
            found = counters.get(key)
            if found is None:
                counters[key] = [int(v) for v in values]
            else:
                for i, v in enumerate(values):
                    found[i] += int(v)
    errors: dict[datetime | None, Counter[int]] = {}
    query_e = select(de.c.bucket_start, de.c.code, de.c.count).where(
        de.c.phone_number_id == phone,
        de.c.template == template,
        de.c.bucket_start >= since,
        de.c.bucket_start < q.end,
    )
    for start, code, count in conn.execute(query_e):
        for key in (series_of(start), None):
            errors.setdefault(key, Counter())[int(code)] += int(count)
    starts = sorted(k for k in set(counters) | set(errors) if k is not None)
    return {
        "from": q.start,
        "to": q.end,
        "bucket": q.bucket.value,
        "time_zone": q.zone,
        **figures(_named(counters.get(None)), errors.get(None, Counter())),
        "series": [
            {"start": s, **figures(_named(counters.get(s)), errors.get(s, Counter()))}
            for s in starts
        ],
    }


def _named(values: list[int] | None) -> Counter[str]:
    return Counter(dict(zip(DELIVERY_COUNTERS, values, strict=True))) if values else Counter()


def figures(counts: Counter[str], errors: Counter[int]) -> dict[str, Any]:
    return {
        **{k: counts[k] for k in DELIVERY_COUNTERS},
        "delivery_rate": rate(counts["delivered"], counts["sent"]),
        "read_rate": rate(counts["read"], counts["delivered"]),
        "failure_rate": rate(counts["failed"] + counts["refused"], counts["outbound"]),
        "errors": [
            {
                "code": code,
                "count": n,
                "quality": code in QUALITY_CODES,
                "meaning": QUALITY_CODES.get(code),
            }
            for code, n in sorted(errors.items(), key=lambda item: (-item[1], item[0]))
            if n
        ],
    }
