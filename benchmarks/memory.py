"""Memory under steady load: resident memory of ``waquality serve`` (receiver and processing
child together) over a long run of mixed traffic, against its value after warm-up.

Posts the ingestion benchmark's mixed bodies (about 95% ``messages`` status batches, 5%
management changes) with wrk at a fixed rate, in one-minute stretches from one pool (later
stretches redeliver earlier bodies, as Meta does), and samples the resident memory of the server's
processes between stretches.

    python benchmarks/memory.py [--minutes 30] [--rate 1500] [--warmup-minutes 3] [--db sqlite]

Passes when the resident memory at every sample after warm-up stays within 20% of its value at
the end of the warm-up.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bodies import DEFAULT_SECRET, write_pool
from harness import Postgres, Processes, free_port, serve_env, start_serve, wait_ready
from loadgen import run_wrk

STRETCH = 60  # seconds of load between two samples
LIMIT = 0.20  # the allowed growth after warm-up
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree(pid: int) -> list[int]:
    """The process and its descendants."""
    found, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            frontier += children
    return found


def resident_mb(pid: int) -> float:
    total = 0
    for member in tree(pid):
        try:
            total += int(Path(f"/proc/{member}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--warmup-minutes", type=int, default=3)
    parser.add_argument("--rate", type=int, default=1500, help="requests per second")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    options = parser.parse_args(argv)
    processes = Processes()
    with tempfile.TemporaryDirectory() as tmp:
        pool = write_pool(Path(tmp) / "pool", options.rate * STRETCH)
        if options.db == "postgres":
            database = Postgres("waquality_bench_memory")
            database.recreate()
            url = database.url
        else:
            url = f"sqlite:///{Path(tmp) / 'memory.db'}"
        env = serve_env(Path(tmp), url, DEFAULT_SECRET, "memory-token")
        server = start_serve(processes, env, free_port(), Path(tmp) / "server.log")
        samples: list[tuple[float, float]] = []
        began = time.monotonic()
        try:
            wait_ready(server, "/readyz")
            samples.append((0.0, resident_mb(server.process.pid)))
            for minute in range(1, options.minutes + 1):
                result = run_wrk(
                    server.url + "/webhooks/whatsapp",
                    pool,
                    seconds=STRETCH,
                    connections=64,
                    threads=2,
                    rate=options.rate,
                )
                if result.non_2xx:
                    print(f"minute {minute}: {result.non_2xx} answers were not 2xx", flush=True)
                rss = resident_mb(server.process.pid)
                samples.append(((time.monotonic() - began) / 60, rss))
                print(
                    f"minute {minute:3d}: {result.rate:,.0f} requests/s, resident {rss:,.1f} MB",
                    flush=True,
                )
        finally:
            processes.stop_all()
            if options.db == "postgres":
                database.drop()
    warm = samples[min(options.warmup_minutes, len(samples) - 1)][1]
    after = [rss for _, rss in samples[options.warmup_minutes :]]
    peak, end = max(after), after[-1]
    growth = (peak - warm) / warm
    verdict = "PASS" if growth <= LIMIT else "FAIL"
    print(
        f"| {options.db} | {options.minutes} min at {options.rate:,}/s | "
        f"after {options.warmup_minutes} min warm-up {warm:,.0f} MB | peak {peak:,.0f} MB | "
        f"end {end:,.0f} MB | growth {growth:+.1%} | {verdict} |"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
