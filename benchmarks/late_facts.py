"""Late facts into long histories: what a late, older event costs processing.

Twenty templates each get ``--history`` status changes in time order, then ``--late`` bodies
arrive, each with one older pause per template, at a time within the first tenth of that
history. Processing them replays each template's status (and its pause counters) from the
earliest late pause until the replay meets the old history again. Reports the time per late
fact, after timing the in-order part too.

    python benchmarks/late_facts.py [--history 2000] [--late 20] [--db sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from harness import scratch_database
from waquality.process.worker import Processor
from waquality.store import inbox, migrate
from waquality.store.database import Database

BENCH_DB = "waquality_bench_late_facts"
TEMPLATES = 20
T0 = 1_760_000_000  # the first change's time (Unix seconds)
STATUSES = ("APPROVED", "REJECTED", "PENDING")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _status(template: int, event: str, at: int) -> dict[str, Any]:
    value = {
        "event": event,
        "message_template_id": template,
        "message_template_name": f"template_{template}",
        "message_template_language": "en_US",
        "reason": "NONE",
    }
    change = {"field": "message_template_status_update", "value": value}
    return {"id": "102290129340398", "time": at, "changes": [change]}


def _body(entries: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"object": "whatsapp_business_account", "entry": entries})


def _process(db: Database, bodies: list[bytes]) -> float:
    for start in range(0, len(bodies), 1000):
        with db.write(priority=True) as conn:
            inbox.insert_bodies(conn, [inbox.Body(b, NOW) for b in bodies[start : start + 1000]])
    began = time.perf_counter()
    Processor(db, batch_size=500, clock=lambda: NOW).drain()
    return time.perf_counter() - began


def measure(url: str, history: int, late: int, seed: int) -> tuple[float, float]:
    db = Database(url)
    try:
        migrate.upgrade(db)
        templates = range(1, TEMPLATES + 1)
        ordered = [
            _body([_status(t, STATUSES[i % 3], T0 + 10 * i) for t in templates])
            for i in range(history)
        ]
        in_order = _process(db, ordered)
        rng = random.Random(seed)
        early = max(1, history // 10)
        pauses = [
            _body([_status(t, "PAUSED", T0 + 10 * rng.randrange(early) + 5) for t in templates])
            for _ in range(late)
        ]
        return in_order, _process(db, pauses)
    finally:
        db.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--history", type=int, default=2000, help="changes per template")
    parser.add_argument("--late", type=int, default=20, help="late pauses per template")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args(argv)
    print("| database | in-order changes | their time | late facts | per late fact |")
    print("|---|---|---|---|---|")
    for database in ("sqlite", "postgres"):
        if options.db not in (database, "both"):
            continue
        with scratch_database(database, BENCH_DB) as url:
            in_order, late = measure(url, options.history, options.late, options.seed)
        changes, facts = options.history * TEMPLATES, options.late * TEMPLATES
        print(
            f"| {database} | {changes:,} | {in_order:.1f} s | {facts:,} "
            f"| {late / facts * 1000:.1f} ms |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
