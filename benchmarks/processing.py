"""Processing throughput without HTTP: bodies/s and events/s that one worker applies.

Stores N generated bodies straight into a fresh database, then times ``Processor.drain()`` (the
database set up as serve's processing child has it, see ``harness.processing_database``).
Two mixes: the realistic one of the ingestion benchmark (95% ``messages``) and a stress mix in
which every body carries management changes (each of them a typed event, state changes and
history rows). The conversation tracker is off unless ``--tracker`` says otherwise;
``--statuses`` chooses how the statuses relate to messages (see ``bodies.STATUSES``).

    python benchmarks/processing.py [--count 20000] [--db sqlite|postgres|both] [--tracker]
        [--statuses lifecycle|new]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from datetime import UTC, datetime

import bodies
from harness import processing_database, scratch_database
from waquality.heap import freeze_startup_objects
from waquality.process.worker import Processor
from waquality.store import inbox, migrate
from waquality.store.tracker import Tracker

BENCH_DB = "waquality_bench_processing"
MIXES = {"realistic (95% messages)": 0.95, "stress (management only)": 0.0}


def measure(url: str, count: int, share: float, options: argparse.Namespace) -> tuple[float, float]:
    bodies.MESSAGES_SHARE = share
    factory = bodies.BodyFactory(statuses=options.statuses)
    with processing_database(url) as db:
        migrate.upgrade(db)
        now = datetime.now(UTC)
        for start in range(0, count, 1000):
            with db.write(priority=True) as conn:
                inbox.insert_bodies(
                    conn,
                    [
                        inbox.Body(factory.body(i), now)
                        for i in range(start, min(count, start + 1000))
                    ],
                )
        tracker = Tracker(db) if options.tracker else None
        processor = Processor(db, batch_size=options.batch_size, tracker=tracker)
        freeze_startup_objects()  # as the processing child does once it is set up
        began = time.perf_counter()
        result = processor.drain()
        elapsed = time.perf_counter() - began
        gc.unfreeze()
    return result.bodies / elapsed, result.events / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--tracker", action="store_true", help="with the conversation tracker")
    parser.add_argument("--statuses", choices=bodies.STATUSES, default=bodies.STATUSES[0])
    options = parser.parse_args(argv)
    rows = ["| database | mix | bodies/s | events/s |", "|---|---|---|---|"]
    for database in ("sqlite", "postgres"):
        if options.db not in (database, "both"):
            continue
        for mix, share in MIXES.items():
            with scratch_database(database, BENCH_DB) as url:
                per_body, per_event = measure(url, options.count, share, options)
            name = "SQLite" if database == "sqlite" else "PostgreSQL"
            rows.append(f"| {name} | {mix} | {per_body:,.0f} | {per_event:,.0f} |")
            print(rows[-1], file=sys.stderr, flush=True)
    flags = f" --statuses {options.statuses}" + (" --tracker" if options.tracker else "")
    print(
        f"Command: `python benchmarks/processing.py --count {options.count} --db {options.db}"
        f"{flags}` (one worker, batches of {options.batch_size}, tracker "
        f"{'on' if options.tracker else 'off'})\n"
    )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
