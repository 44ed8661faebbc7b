"""The conversation tracker at scale: rebuild, DuckDB reference, summaries, processing overhead.

One run generates a deterministic message set (``message_set.py``), then, per database:
bulk-imports it into ``messages`` (``bulk_import.py``), times the full rebuild of conversations,
responses and aggregates, checks the stored first responses against the same computation in
DuckDB (and, optionally, as plain window-function SQL on the database itself), and times the
30-day response-time and delivery summaries. Last, it times processing of webhook bodies that
tell such conversations (``conversation_bodies.py``) with the tracker off and on, each batch
at the time its bodies came, as serve processes webhooks while they come.

    python benchmarks/tracker.py --quick
    python benchmarks/tracker.py [--messages 10000000] [--db sqlite|postgres|both] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import gc
import io
import json
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, select

import bulk_import
import conversation_bodies
import first_response
import message_set as ms
import tracker_report
from harness import ADMIN_URL, CpuSnapshot, processing_database, scratch_database
from waquality.analyse import delivery, response_times
from waquality.domain.responses import Bucket
from waquality.heap import freeze_startup_objects
from waquality.process.worker import BatchResult, Processor
from waquality.store import inbox, migrate, schema
from waquality.store.database import Database
from waquality.store.rebuild import rebuild
from waquality.store.tracker import Tracker, TrackerConfig

STORE_DB = "waquality_bench_tracker"
PROCESSING_DB = "waquality_bench_tracker_processing"
LABELS = tracker_report.LABELS
WINDOW = timedelta(days=30)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(what: str, total: int, *, increments: bool = False) -> Callable[[int], None]:
    """A progress callback told how many are done (or, with ``increments``, how many more)."""
    state = {"done": 0, "shown": 0.0}

    def show(count: int) -> None:
        done = state["done"] + count if increments else count
        state["done"] = done
        if time.monotonic() - state["shown"] >= 5 or done >= total:
            state["shown"] = time.monotonic()
            log(f"  {what}: {done:,} of {total:,}")

    return show


def _profiled(enabled: bool, work: Callable[[], Any]) -> tuple[Any, str | None]:
    if not enabled:
        return work(), None
    profile = cProfile.Profile()
    result = profile.runcall(work)
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(30)
    return result, out.getvalue()


# -- the store: import, rebuild, checks, summaries -------------------------------------


@dataclass(frozen=True, slots=True)
class SummaryCase:
    label: str
    kind: Literal["response_times", "delivery"]
    bucket: Bucket
    one_number: bool


SUMMARIES = (
    SummaryCase("response times, all numbers, by day", "response_times", Bucket.DAY, False),
    SummaryCase("response times, all numbers, by hour", "response_times", Bucket.HOUR, False),
    SummaryCase("response times, one number, by day", "response_times", Bucket.DAY, True),
    SummaryCase("response times, one number, by hour", "response_times", Bucket.HOUR, True),
    SummaryCase("delivery, all numbers, by day", "delivery", Bucket.DAY, False),
    SummaryCase("delivery, one number, by day", "delivery", Bucket.DAY, True),
)


def _summary(
    db: Database, case: SummaryCase, start: datetime, end: datetime, phone: str | None
) -> dict[str, Any]:
    with db.read() as conn:
        if case.kind == "delivery":
            asked = delivery.Query(start=start, end=end, phone_number_id=phone, bucket=case.bucket)
            return delivery.summary(conn, asked)
        query = response_times.Query(
            start=start, end=end, phone_number_id=phone, bucket=case.bucket
        )
        return response_times.summary(conn, query)


def time_summaries(db: Database, now: datetime, phone: str, runs: int) -> list[dict[str, Any]]:
    """Median and slowest of ``runs`` calls each (after two warm-ups), a connection from the
    pool per call as a request would take it."""
    results = []
    for case in SUMMARIES:
        call = functools.partial(
            _summary, db, case, now - WINDOW, now, phone if case.one_number else None
        )
        for _ in range(2):
            found = call()
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            call()
            times.append((time.perf_counter() - began) * 1000)
        results.append(
            {
                "label": case.label,
                "kind": case.kind,
                "median_ms": statistics.median(times),
                "max_ms": max(times),
                "runs": runs,
                "series": len(found["series"]),
            }
        )
        log(f"  {case.label}: median {results[-1]['median_ms']:.1f} ms")
    return results


def _counts(db: Database) -> dict[str, int]:
    tables = (
        schema.messages,
        schema.conversations,
        schema.responses,
        schema.response_stats,
        schema.conversation_stats,
        schema.delivery_stats,
        schema.delivery_errors,
    )
    with db.read() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in tables
        }


def measure_store(
    database: str,
    found: ms.MessageSet,
    reference: first_response.Firsts,
    options: argparse.Namespace,
) -> dict[str, Any]:
    now = datetime.fromtimestamp(int(found.updated_at.max()) + 1, UTC)
    result: dict[str, Any] = {"database": database, "now": now.isoformat()}
    before = CpuSnapshot.take()
    with scratch_database(database, STORE_DB, options.admin_url) as url:
        db = Database(url)
        try:
            migrate.upgrade(db)
            log(f"{LABELS[database]}: importing {len(found):,} messages")
            show = _progress("imported", len(found))
            if database == "sqlite":
                imported = bulk_import.to_sqlite(str(db.url.database), found, show)
            else:
                conninfo = db.url.set(drivername="postgresql").render_as_string(False)
                imported = bulk_import.to_postgres(conninfo, found, show)
            result["import"] = {
                "rows": imported.rows,
                "load_seconds": imported.seconds,
                "index_seconds": imported.index_seconds,
                "rows_per_second": imported.rows_per_second,
            }
            log(f"{LABELS[database]}: rebuilding")
            show = _progress("rebuilt", len(found), increments=True)
            began = time.perf_counter()
            rebuilt, profile = _profiled(
                options.profile, lambda: rebuild(db, TrackerConfig(), now, show)
            )
            seconds = time.perf_counter() - began
            result["rebuild"] = {
                "seconds": seconds,
                "messages": rebuilt.messages,
                "conversations": rebuilt.conversations,
                "responses": rebuilt.responses,
                "messages_per_second": rebuilt.messages / seconds if seconds else 0.0,
                "profile": profile,
            }
            log(f"  rebuild: {seconds:.1f} s ({rebuilt.messages / seconds:,.0f} messages/s)")
            if profile:
                log(profile)
            with db.read() as conn:
                responses, conversations = first_response.stored(conn)
            result["check"] = {
                "duckdb": _firsts(reference),
                "responses": _firsts(responses),
                "conversations": _firsts(conversations),
                "agrees": reference.agrees(responses) and reference.agrees(conversations),
            }
            if options.window_sql:
                log(f"{LABELS[database]}: first responses as plain window-function SQL")
                with db.read() as conn:
                    timed = first_response.window_sql(conn, 1)
                result["window_sql"] = {
                    "seconds": timed.median,
                    "firsts": _firsts(timed.firsts),
                    "agrees": reference.agrees(timed.firsts),
                }
                log(f"  window SQL: {timed.median:.1f} s")
            result["rows"] = _counts(db)
            log(f"{LABELS[database]}: summaries over 30 days, {options.runs} runs each")
            result["summaries"] = time_summaries(db, now, found.phones[0], options.runs)
        finally:
            db.dispose()
    result["other_cores_busy"] = CpuSnapshot.take().busy_since(before)
    return result


def _firsts(found: first_response.Firsts) -> dict[str, Any]:
    return {"count": found.count, "seconds": found.seconds}


# -- processing with and without the tracker ---------------------------------------------


def process_once(
    database: str,
    traffic: conversation_bodies.Traffic,
    tracked: bool,
    options: argparse.Namespace,
    check: bool,
) -> dict[str, Any]:
    clock_at = traffic.last + timedelta(seconds=1)
    with (
        scratch_database(database, PROCESSING_DB, options.admin_url) as url,
        processing_database(url) as db,
    ):
        migrate.upgrade(db)
        for start in range(0, len(traffic.bodies), 1000):
            with db.write(priority=True) as conn:
                inbox.insert_bodies(
                    conn,
                    [inbox.Body(body, at) for body, at in traffic.bodies[start : start + 1000]],
                )
        tracker = Tracker(db) if tracked else None
        moments = _batch_moments(traffic, options.batch_size)
        moment = [moments[0]]
        processor = Processor(
            db, batch_size=options.batch_size, clock=lambda: moment[0], tracker=tracker
        )

        def live() -> BatchResult:
            """Each batch processed when its last body came (a second later), as serve keeps
            up with webhooks; conversations whose gap has passed ended after each batch, as
            serve's idle check does."""
            total = BatchResult()
            for at in moments:
                moment[0] = at
                total.add(processor.run_once())
                if tracker is not None:
                    tracker.end_idle(at)
            total.add(processor.drain())  # whatever a batch left (none when each was full)
            return total

        freeze_startup_objects()  # as the processing child does once it is set up
        began = time.perf_counter()
        done, profile = _profiled(options.profile and tracked, live)
        seconds = time.perf_counter() - began
        gc.unfreeze()
        run: dict[str, Any] = {
            "tracker": tracked,
            "seconds": seconds,
            "bodies": done.bodies,
            "items": traffic.items,
            "bodies_per_second": done.bodies / seconds,
            "items_per_second": traffic.items / seconds,
            "messages_changed": done.messages,
            "quarantined": done.quarantined,
            "profile": profile,
        }
        if check and tracked:
            with db.read() as conn:
                incremental, _ = first_response.stored(conn)
            rebuild(db, TrackerConfig(), clock_at)
            with db.read() as conn:
                rebuilt, _ = first_response.stored(conn)
            run["check"] = {
                "incremental": _firsts(incremental),
                "rebuilt": _firsts(rebuilt),
                "agrees": incremental.agrees(rebuilt) and incremental.count > 0,
            }
    return run


def _batch_moments(traffic: conversation_bodies.Traffic, size: int) -> list[datetime]:
    """When each full batch of ``size`` bodies, in arrival order, was complete: a second after
    the latest of them came."""
    return [
        max(at for _, at in traffic.bodies[start : start + size]) + timedelta(seconds=1)
        for start in range(0, len(traffic.bodies), size)
    ]


def measure_processing(
    database: str, traffic: conversation_bodies.Traffic, options: argparse.Namespace
) -> dict[str, Any]:
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    before = CpuSnapshot.take()
    for repeat in range(options.repeats):
        for tracked in (False, True) if repeat % 2 == 0 else (True, False):
            run = process_once(database, traffic, tracked, options, check=repeat == 0)
            runs[tracked].append(run)
            state = "on " if tracked else "off"
            log(
                f"  {LABELS[database]} tracker {state}: {run['bodies_per_second']:,.0f} bodies/s, "
                f"{run['items_per_second']:,.0f} message items/s"
            )
            if run.get("profile"):
                log(run["profile"])
    off = statistics.median(r["bodies_per_second"] for r in runs[False])
    on = statistics.median(r["bodies_per_second"] for r in runs[True])
    check = next((r["check"] for r in runs[True] if "check" in r), None)
    return {
        "database": database,
        "bodies": len(traffic.bodies),
        "items": traffic.items,
        "off_bodies_per_second": off,
        "on_bodies_per_second": on,
        "off_items_per_second": off * traffic.items / len(traffic.bodies),
        "on_items_per_second": on * traffic.items / len(traffic.bodies),
        "overhead": 1 - on / off if off else 0.0,
        "check": check,
        "runs": runs[False] + runs[True],
        "other_cores_busy": CpuSnapshot.take().busy_since(before),
    }


def _machine() -> str:
    model = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, help="messages in the set (default 10,000,000)")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--numbers", type=int, default=20, help="business phone numbers")
    parser.add_argument("--seed", type=int, default=ms.DEFAULT_SEED)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--runs", type=int, help="runs of each summary (default 20)")
    parser.add_argument("--duckdb-runs", type=int, default=3)
    parser.add_argument(
        "--window-sql",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the first responses as plain window-function SQL on the database",
    )
    parser.add_argument("--bodies", type=int, help="bodies processed per run (default 20,000)")
    parser.add_argument("--repeats", type=int, help="processing runs each way (default 3)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--skip-store", action="store_true", help="processing overhead only")
    parser.add_argument("--skip-processing", action="store_true", help="the store part only")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the rebuild and the "
        "processing with the tracker; print the top functions to stderr",
    )
    parser.add_argument("--quick", action="store_true", help="CI-sized: proves it works")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument(
        "--admin-url",
        default=ADMIN_URL,
        help="PostgreSQL server (its "
        "postgres database is only used to create and drop scratch databases)",
    )
    options = parser.parse_args(argv)
    quick = options.quick
    options.messages = options.messages or (30_000 if quick else 10_000_000)
    options.runs = options.runs or (5 if quick else 20)
    options.bodies = options.bodies or (1_000 if quick else 20_000)
    options.repeats = options.repeats or (1 if quick else 3)
    databases = [d for d in ("sqlite", "postgres") if options.db in (d, "both")]
    command = "python benchmarks/tracker.py " + " ".join(argv if argv is not None else sys.argv[1:])

    shape = ms.Shape(
        messages=options.messages, days=options.days, numbers=options.numbers, seed=options.seed
    )
    data: dict[str, Any] = {
        "command": command.strip(),
        "machine": _machine(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()},
        "shape": {
            "messages": shape.messages,
            "days": shape.days,
            "numbers": shape.numbers,
            "seed": shape.seed,
        },
        "stores": [],
        "processing": [],
    }
    if not options.skip_store:
        log(f"generating {options.messages:,} messages")
        began = time.perf_counter()
        found = ms.generate(shape)
        data["generate_seconds"] = time.perf_counter() - began
        data["set"] = ms.describe(found)
        log("DuckDB: loading the same rows, then the first-response query")
        duck = first_response.duckdb_connection(found)
        timed = first_response.in_duckdb(duck, options.duckdb_runs)
        data["duckdb"] = {
            "runs": timed.runs,
            "median": timed.median,
            "threads": first_response.duckdb_threads(duck),
            "firsts": _firsts(timed.firsts),
        }
        duck.close()
        log(f"  DuckDB: {timed.median:.2f} s, {timed.firsts.count:,} first responses")
        for database in databases:
            data["stores"].append(measure_store(database, found, timed.firsts, options))
        del found
    else:
        data["set"], data["duckdb"], data["generate_seconds"] = {}, {}, 0.0
    if not options.skip_processing:
        traffic_shape = ms.Shape(
            messages=options.bodies * 2, days=2, numbers=options.numbers, seed=options.seed + 1
        )
        traffic = conversation_bodies.traffic(ms.generate(traffic_shape), options.bodies)
        log(f"processing {len(traffic.bodies):,} bodies ({traffic.items:,} message items)")
        for database in databases:
            data["processing"].append(measure_processing(database, traffic, options))
    table, ok = tracker_report.report(data)
    print(table)
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
