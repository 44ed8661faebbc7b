"""Dashboard page speed: server time per page with a year of history for 20 numbers and 500
templates.

Seeds a fresh database straight through the tables (a year of hourly delivery, response-time
and conversation aggregates per number, daily per template; history and events of every
number and template; alerts, notifications and silences), then asks for every page many times
through the application in-process and times each answer from the request's arrival to its
last byte (no network, no client parsing). Prints the median and p95 per page.

    python benchmarks/dashboard.py [--db sqlite|postgres|both] [--requests 30]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import text

from harness import Postgres
from waquality.api.app import create_api
from waquality.api.auth import Authenticator, digest
from waquality.config import Settings
from waquality.domain import sketch
from waquality.store import migrate, schema
from waquality.store.database import Database
from waquality.store.stats import ALL

BENCH_DB = "waquality_bench_dashboard"
TOKEN = "benchmark-token"  # noqa: S105
NUMBERS, TEMPLATES, WABAS = 20, 500, 4
CHUNK = 5000
HOUR = timedelta(hours=1)
QUALITY = ("GREEN", "GREEN", "GREEN", "YELLOW", "RED")
TIERS = ("TIER_1K", "TIER_2K", "TIER_10K", "TIER_100K")


@dataclass(slots=True)
class Rows:
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.tables.setdefault(table, []).append(row)


def seed(db: Database, now: datetime, rng: random.Random) -> dict[str, int]:
    """A year of everything; returns rows per table."""
    rows = Rows()
    start = now - timedelta(days=365)
    wabas = [str(102290129340000 + i) for i in range(WABAS)]
    for i, waba in enumerate(wabas):
        rows.add("wabas", {"id": waba, "updated_at": now, "as_of": {}, "last_webhook_at": now})
        rows.add(
            "watched_wabas",
            {
                "waba_id": waba,
                "origin": "settings",
                "added_at": start,
                "poll_state": "ok" if i else "failing",
                "failures": 0 if i else 3,
                "last_poll_at": now,
                "last_success_at": now - timedelta(minutes=5),
                "usage_percent": 12 + i,
            },
        )
    phones = _numbers(rows, rng, wabas, start, now)
    templates = _templates(rows, rng, wabas, start, now)
    _aggregates(rows, rng, phones, templates, start, now)
    _alerts(rows, rng, phones, templates, start, now)
    with db.write() as conn:
        for name in ("wabas", "watched_wabas", "phone_numbers", "templates"):
            conn.execute(schema.metadata.tables[name].insert(), rows.tables[name])
    events = rows.tables.pop("events")
    with db.write() as conn:
        ids = []
        for chunk in _chunks(events):
            ids += [
                r.id
                for r in conn.execute(schema.events.insert().returning(schema.events.c.id), chunk)
            ]
    for row, event_id in zip(rows.tables["history"], ids, strict=False):
        row["event_id"] = event_id
    for name, found in rows.tables.items():
        if name in ("wabas", "watched_wabas", "phone_numbers", "templates"):
            continue
        table = schema.metadata.tables[name]
        for chunk in _chunks(found):
            with db.write() as conn:
                conn.execute(table.insert(), chunk)
    return {name: len(found) for name, found in rows.tables.items()} | {"events": len(events)}


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for begin in range(0, len(rows), CHUNK):
        yield rows[begin : begin + CHUNK]


def _walk(
    rng: random.Random, start: datetime, now: datetime, every_days: float, values: tuple[str, ...]
) -> list[tuple[datetime, str]]:
    """Random changes of a value over the year, about one per ``every_days``."""
    found: list[tuple[datetime, str]] = []
    moment, value = start, values[0]
    while True:
        moment += timedelta(days=rng.expovariate(1 / every_days))
        if moment >= now:
            return found
        new = rng.choice(values)
        if new != value:
            found.append((moment, new))
            value = new


def _history(
    rows: Rows,
    kind: str,
    key: str,
    subject_id: str,
    waba: str,
    field_name: str,
    changes: list[tuple[datetime, str]],
    webhook_field: str,
) -> str | None:
    old = None
    for at, new in changes:
        rows.add(
            "history",
            {
                "subject_kind": kind,
                "subject_key": key,
                "field": field_name,
                "old_value": old,
                "new_value": new,
                "occurred_at": at,
                "recorded_at": at,
                "source": "webhook",
            },
        )
        rows.add(
            "events",
            {
                "dedupe_key": f"{kind}{key}{field_name}{at.timestamp()}",
                "source": "webhook",
                "field": webhook_field,
                "kind": new,
                "waba_id": waba,
                "subject_kind": kind,
                "subject_id": subject_id,
                "occurred_at": at,
                "received_at": at,
                "value": {"event": new},
            },
        )
        old = new
    return old


def _numbers(
    rows: Rows, rng: random.Random, wabas: list[str], start: datetime, now: datetime
) -> list[str]:
    phones = []
    for i in range(NUMBERS):
        phone_id, display, waba = str(106540352243000 + i), f"1555078{4000 + i}", wabas[i % WABAS]
        key = str(i + 1)
        quality = _history(
            rows,
            "phone_number",
            key,
            display,
            waba,
            "quality_rating",
            _walk(rng, start, now, 2.0, QUALITY),
            "phone_number_quality_update",
        )
        status = _history(
            rows,
            "phone_number",
            key,
            display,
            waba,
            "status",
            _walk(rng, start, now, 30.0, ("CONNECTED", "FLAGGED")),
            "phone_number_quality_update",
        )
        limit = _history(
            rows,
            "phone_number",
            key,
            display,
            waba,
            "messaging_limit",
            _walk(rng, start, now, 45.0, TIERS),
            "phone_number_quality_update",
        )
        rows.add(
            "phone_numbers",
            {
                "key": i + 1,
                "phone_number_id": phone_id,
                "display_phone_number": display,
                "waba_id": waba,
                "verified_name": f"Shop {i}",
                "quality_rating": quality or "GREEN",
                "status": status or "CONNECTED",
                "messaging_limit": limit or "TIER_1K",
                "throughput": "STANDARD",
                "confirmed_at": now - timedelta(minutes=5),
                "updated_at": now,
                "as_of": {},
            },
        )
        phones.append(phone_id)
    return phones


def _templates(
    rows: Rows, rng: random.Random, wabas: list[str], start: datetime, now: datetime
) -> list[str]:
    names = []
    statuses = ("APPROVED",) * 8 + ("PAUSED", "REJECTED")
    for i in range(TEMPLATES):
        template_id, waba, name = str(100000000000 + i), wabas[i % WABAS], f"template_{i:03d}"
        status = _history(
            rows,
            "template",
            template_id,
            template_id,
            waba,
            "status",
            _walk(rng, start, now, 36.0, statuses),
            "message_template_status_update",
        )
        quality = _history(
            rows,
            "template",
            template_id,
            template_id,
            waba,
            "quality_score",
            _walk(rng, start, now, 9.0, QUALITY),
            "message_template_quality_update",
        )
        pauses = rng.choice((0, 0, 0, 1, 2))
        rows.add(
            "templates",
            {
                "id": template_id,
                "waba_id": waba,
                "name": name,
                "language": "en_US",
                "category": rng.choice(("MARKETING", "UTILITY", "AUTHENTICATION")),
                "status": status or "APPROVED",
                "quality_score": quality or "GREEN",
                "pause_count": pauses,
                "paused_until": now + timedelta(hours=2) if status == "PAUSED" else None,
                "confirmed_at": now - timedelta(minutes=5),
                "updated_at": now,
                "as_of": {},
            },
        )
        names.append(name)
    return names


def _sketches(rng: random.Random) -> list[tuple[int, float, float, bytes]]:
    """Packed response-time sketches to reuse: (count, total, max, bins)."""
    found = []
    for _ in range(64):
        values = [rng.lognormvariate(4, 1.2) for _ in range(rng.randint(1, 40))]
        found.append((len(values), sum(values), max(values), sketch.pack(sketch.histogram(values))))
    return found


def _aggregates(
    rows: Rows,
    rng: random.Random,
    phones: list[str],
    templates: list[str],
    start: datetime,
    now: datetime,
) -> None:
    packs = _sketches(rng)
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour <= now:
        total: Counter[str] = Counter()
        for phone in phones:
            sent = rng.randint(0, 60)
            delivered = sent - rng.randint(0, min(sent, 3))
            counts = {
                "outbound": sent + 1,
                "sent": sent,
                "delivered": delivered,
                "read": delivered // 2,
                "failed": 1,
                "refused": 0,
                "inbound": rng.randint(0, 30),
                "opt_outs": 0,
                "resumes": 0,
            }
            total.update(counts)
            base = {"phone_number_id": phone, "bucket_start": hour}
            rows.add("delivery_stats", {**base, "template": ALL, **counts})
            rows.add(
                "conversation_stats",
                {
                    **base,
                    "conversations": 5,
                    "by_customer": 4,
                    "answered": 4,
                    "unanswered": 1,
                    "unanswered_runs": 0,
                },
            )
            for kind in ("first", "all"):
                count, seconds, largest, bins = rng.choice(packs)
                rows.add(
                    "response_stats",
                    {
                        **base,
                        "sender_kind": ALL,
                        "kind": kind,
                        "count": count,
                        "total_seconds": seconds,
                        "max_seconds": largest,
                        "bins": bins,
                    },
                )
            if hour.hour == 12:
                rows.add(
                    "delivery_errors",
                    {**base, "template": ALL, "code": rng.choice((131049, 131026)), "count": 1},
                )
        base = {"phone_number_id": ALL, "bucket_start": hour}
        rows.add("delivery_stats", {**base, "template": ALL, **total})
        for kind in ("first", "all"):
            count, seconds, largest, bins = rng.choice(packs)
            rows.add(
                "response_stats",
                {
                    **base,
                    "sender_kind": ALL,
                    "kind": kind,
                    "count": count,
                    "total_seconds": seconds,
                    "max_seconds": largest,
                    "bins": bins,
                },
            )
        if hour.hour == 10:  # every template sends once a day
            for name in templates:
                counts = dict.fromkeys(total, 0)
                counts.update(outbound=20, sent=20, delivered=19, read=12, failed=0)
                rows.add("delivery_stats", {**base, "template": name, **counts})
        hour += HOUR


def _alerts(
    rows: Rows,
    rng: random.Random,
    phones: list[str],
    templates: list[str],
    start: datetime,
    now: datetime,
) -> None:
    for i in range(2040):
        firing = i < 40
        began = start + timedelta(minutes=rng.randrange(525_000))
        fingerprint = f"{i:032x}"
        rows.add(
            "alerts",
            {
                "fingerprint": fingerprint,
                "rule": "phone_quality" if i % 2 else "template_status",
                "labels": {"rule": "phone_quality", "waba_id": "102290129340000", "n": str(i)},
                "severity": "critical" if i % 3 == 0 else "warning",
                "state": "firing" if firing else "resolved",
                "summary": f"alert {i}",
                "description": "",
                "started_at": began,
                "resolved_at": None if firing else began + timedelta(hours=2),
                "updated_at": began,
                "notified_at": began,
            },
        )
        if i < 1500:
            rows.add(
                "notifications",
                {
                    "fingerprint": fingerprint,
                    "receiver": "chat",
                    "status": "firing",
                    "payload": {"summary": f"alert {i}"},
                    "idempotency_key": f"{i:064x}",
                    "state": "sent",
                    "attempts": 1,
                    "next_attempt_at": began,
                    "created_at": began,
                    "sent_at": began,
                },
            )
    for i in range(20):
        rows.add(
            "silences",
            {
                "matchers": {"n": str(i)},
                "comment": "maintenance",
                "created_at": now - timedelta(days=i),
                "expires_at": now + timedelta(days=10 - i),
            },
        )


class Timed:
    """ASGI wrapper that records each request's server time (arrival to last byte)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        begun = time.perf_counter()

        async def timed_send(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.last = time.perf_counter() - begun

        await self.app(scope, receive, timed_send)


async def measure(db: Database, requests: int) -> list[tuple[str, int, float, float, float]]:
    settings = Settings(api_token=SecretStr(TOKEN))
    api = create_api(db, Authenticator(digest(TOKEN)), settings=settings)
    timed = Timed(api)
    transport = httpx.ASGITransport(app=timed)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        page = await client.get("/login")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        signed = await client.post("/login", data={"csrf": csrf, "secret": TOKEN, "next": "/"})
        assert signed.status_code == 303, signed.text
        number, template = "106540352243003", "100000000042"
        pages = [
            "/",
            "/numbers",
            f"/numbers/{number}",
            f"/numbers/{number}?range=all",
            "/templates",
            "/templates?status=APPROVED&q=template_1",
            f"/templates/{template}",
            f"/templates/{template}?range=all",
            "/alerts",
            "/response-times",
            "/response-times?range=1y",
            f"/response-times?number={number}&range=all",
            "/metrics",
        ]
        found = []
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for path in pages:
            times = []
            for index in range(requests + 3):
                response = await client.get(path, headers=auth if path == "/metrics" else None)
                assert response.status_code == 200, (path, response.status_code)
                if index >= 3:  # the first ones warm caches
                    times.append(timed.last * 1000)
            times.sort()
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            found.append((path, len(response.content), statistics.median(times), p95, times[-1]))
    return found


def _postgres() -> str:
    database = Postgres(BENCH_DB)
    database.recreate()
    return database.url


def _drop_postgres() -> None:
    Postgres(BENCH_DB).drop()


def run(kind: str, requests: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = _postgres() if kind == "postgres" else f"sqlite:///{Path(folder) / 'bench.db'}"
        db = Database(url)
        try:
            migrate.upgrade(db)
            now = datetime.now(UTC)
            begun = time.perf_counter()
            counts = seed(db, now, random.Random(7))
            if kind == "postgres":
                with db.write() as conn:
                    conn.execute(text("ANALYZE"))
            print(
                f"\n{kind}: seeded {sum(counts.values()):,} rows in "
                f"{time.perf_counter() - begun:.1f} s "
                f"(history {counts['history']:,}, events {counts['events']:,}, "
                f"delivery {counts['delivery_stats']:,}, responses {counts['response_stats']:,})"
            )
            results = asyncio.run(measure(db, requests))
        finally:
            db.dispose()
            if kind == "postgres":
                _drop_postgres()
    print(f"| page ({kind}) | bytes | median ms | p95 ms | max ms |")
    print("|---|---|---|---|---|")
    for path, size, median, p95, worst in results:
        print(f"| `{path}` | {size:,} | {median:.1f} | {p95:.1f} | {worst:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    for kind in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        run(kind, args.requests)


if __name__ == "__main__":
    main()
