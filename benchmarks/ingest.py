"""Webhook-ingestion benchmark: signed, unique webhook bodies posted by wrk.

    python benchmarks/ingest.py [--db sqlite|postgres|both] [--burst-seconds 10]
        [--sustained-seconds 60] [--rates 5000,6000,8000,10000] [--quick]
        [--json results.json]

It measures, in one run and on one machine:

1. the ceiling: ``bare_app.py`` (reads the body, answers 200) under the burst
   load, and paced at the highest sustained rate to show the load generator
   can offer it;
2. per database, a burst (64 connections, unpaced) against a fresh
   ``python -m waquality serve``, then the wait for its backlog to drain;
3. per database and rate, a sustained run at that fixed offered rate against
   a fresh server, sampling ``GET /api/v1/status`` every second to decide
   whether the processing backlog stays bounded (see ``report.py``).

It prints a Markdown table and one PASS/FAIL line per target. The exit code
is 0 when every run completed without errors, 1 when a run was flagged
(non-2xx answers, socket errors, a crash, lost acknowledgements), 2 when the
benchmark could not run at all. Missing a target is not an error.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from bodies import DEFAULT_SEED, STATUSES, PoolInfo, write_pool
from harness import (
    HOST,
    CpuSnapshot,
    HarnessError,
    Postgres,
    Processes,
    Sampler,
    Server,
    StatusClient,
    free_port,
    http_get,
    memory_directory,
    wait_drained,
    wait_ready,
)
from loadgen import LoadError, WrkResult, run_wrk, wrk_version
from report import (
    Run,
    check_load,
    check_stored,
    judge_sustained,
    markdown_table,
    run_title,
    summary_lines,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVER_MODULE = "waquality"
WEBHOOK_PATH = "/webhooks/whatsapp"
READY_PATH = "/readyz"
BURST_POOL_RATE = 60_000
"""Requests per second a burst run may consume at most; sizes the pool."""
WARMUP_RATE = 1_000
OTHER_CPU_NOTE = 0.1
"""Cores' worth of CPU used by unrelated processes during a load that earns a note."""
WARMUP_SPACE = 100_000
"""Body indices below this belong to the warm-up pool, the rest to the main pool."""
REQUEST_BYTES = 2_048
"""A generous size of one pooled request (headers and body), for the room the pools need."""


@dataclass(frozen=True, slots=True)
class Options:
    databases: tuple[str, ...]
    burst_seconds: int
    sustained_seconds: int
    rates: tuple[int, ...]
    quick: bool
    json_path: Path | None
    connections: int
    threads: int
    warmup_seconds: int
    drain_timeout: int
    check_bodies: bool
    pool_size: int | None
    pg_database: str
    seed: int
    statuses: str


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="Webhook-ingestion benchmark (wrk against python -m waquality serve).",
    )
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--burst-seconds", type=int, help="burst length (default 10; quick 2)")
    parser.add_argument(
        "--sustained-seconds", type=int, help="length of each sustained run (default 60; quick 3)"
    )
    parser.add_argument(
        "--rates",
        help="offered rates for the sustained runs, comma-separated "
        "(default 5000,6000,8000,10000; quick: the lowest one)",
    )
    parser.add_argument("--quick", action="store_true", help="few-second smoke version")
    parser.add_argument("--json", type=Path, dest="json_path", help="write all results here")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--warmup-seconds", type=int, help="paced warm-up per server (default 2)")
    parser.add_argument(
        "--drain-timeout", type=int, help="longest wait for a backlog to drain (default 180 s)"
    )
    parser.add_argument(
        "--check-bodies",
        action="store_true",
        help="first prove wrk sends distinct, correctly signed bodies (always on with --quick)",
    )
    parser.add_argument("--pool-size", type=int, help="requests to pre-generate (default: enough)")
    parser.add_argument("--pg-database", default="waquality_bench")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--statuses",
        choices=STATUSES,
        default=STATUSES[0],
        help="lifecycle: each message's sent, delivered and read callbacks (default); "
        "new: every status a message never seen before",
    )
    args = parser.parse_args(argv)

    quick = bool(args.quick)
    rates = (
        tuple(sorted({int(r) for r in args.rates.split(",") if r.strip()}))
        if args.rates
        else (5_000, 6_000, 8_000, 10_000)
    )
    if quick and not args.rates:
        rates = rates[:1]
    databases = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    options = Options(
        databases=databases,
        burst_seconds=args.burst_seconds or (2 if quick else 10),
        sustained_seconds=args.sustained_seconds or (3 if quick else 60),
        rates=rates,
        quick=quick,
        json_path=args.json_path,
        connections=args.connections,
        threads=args.threads,
        warmup_seconds=(
            args.warmup_seconds if args.warmup_seconds is not None else (1 if quick else 2)
        ),
        drain_timeout=args.drain_timeout or (30 if quick else 180),
        check_bodies=bool(args.check_bodies) or quick,
        pool_size=args.pool_size,
        pg_database=args.pg_database,
        seed=args.seed,
        statuses=args.statuses,
    )
    if not rates or min(rates) <= 0:
        parser.error("--rates needs positive integers")
    if min(options.burst_seconds, options.sustained_seconds) <= 0:
        parser.error("durations must be positive")
    if options.threads < 1 or options.connections < options.threads:
        parser.error("need 1 <= threads <= connections")
    return options


def log(message: str) -> None:
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, options: Options, workdir: Path, processes: Processes) -> None:
        self.options = options
        self.workdir = workdir
        self.processes = processes
        self.secret = "bench-" + secrets.token_hex(16)
        self.api_token = secrets.token_hex(16)
        self.verify_token = secrets.token_hex(8)
        self.postgres = Postgres(options.pg_database)
        self.pool: PoolInfo | None = None
        self.warm_pool: PoolInfo | None = None
        self.pool_root: Path | None = None  # where both pools are, removed by cleanup()
        self.pools_in_memory = False
        self._counter = 0

    # -- pools ----------------------------------------------------------------

    def pool_size(self) -> int:
        o = self.options
        if o.pool_size:
            return o.pool_size
        burst = o.burst_seconds * BURST_POOL_RATE
        sustained = math.ceil(max(o.rates) * o.sustained_seconds * 1.1)
        return max(burst, sustained) + 10_000

    def prepare_pools(self) -> None:
        o = self.options
        shards = max(16, o.threads)
        count = self.pool_size()
        warm = min(WARMUP_SPACE, int(WARMUP_RATE * max(o.warmup_seconds, 1) * 1.5) + 1_000)
        self.pool_root, self.pools_in_memory = memory_directory(
            "waquality-bench-pool-", (count + warm) * REQUEST_BYTES
        )
        log(
            f"generating {count:,} signed requests in "
            f"{'memory' if self.pools_in_memory else 'a temporary directory on disk'} ..."
        )
        self.pool = write_pool(
            self.pool_root / "pool",
            count,
            first=WARMUP_SPACE,
            seed=o.seed,
            secret=self.secret,
            shards=shards,
            statuses=o.statuses,
        )
        log(
            f"pool ready in {self.pool.seconds:.1f} s, mean body {self.pool.mean_body_bytes:,.0f} B"
        )
        self.warm_pool = write_pool(
            self.pool_root / "warm",
            warm,
            seed=o.seed,
            secret=self.secret,
            shards=shards,
            statuses=o.statuses,
        )

    # -- load -----------------------------------------------------------------

    def load(
        self,
        server: Server,
        seconds: int,
        rate: int | None = None,
        *,
        run: Run | None = None,
        pool: PoolInfo | None = None,
    ) -> WrkResult:
        """Run wrk; for a measured ``run``, also record other processes' CPU use."""
        chosen = pool or self.pool
        assert chosen is not None
        before = CpuSnapshot.take()
        result = run_wrk(
            server.url + WEBHOOK_PATH,
            chosen,
            seconds=seconds,
            connections=self.options.connections,
            threads=self.options.threads,
            rate=rate,
        )
        if run is not None:
            run.other_cpu = CpuSnapshot.take().busy_since(before)
            if run.other_cpu >= OTHER_CPU_NOTE:
                run.notes.append(
                    f"other processes used {run.other_cpu:.2f} cores during the load; "
                    "the numbers are disturbed"
                )
        return result

    def warm_up(self, server: Server, run: Run, client: StatusClient | None = None) -> None:
        seconds = self.options.warmup_seconds
        if seconds <= 0:
            return
        warm = self.load(server, seconds, WARMUP_RATE, pool=self.warm_pool)
        if warm.has_errors or warm.exhausted:
            run.problems.append(f"warm-up: {warm.error_text()}")
        if client is not None:
            _, drained = wait_drained(client, server, timeout=60)
            if not drained:
                run.notes.append("warm-up backlog had not drained after 60 s")

    # -- servers --------------------------------------------------------------

    def _log_path(self, name: str) -> Path:
        self._counter += 1
        return self.workdir / f"{self._counter:02d}-{name}.log"

    def start_app(self, script: str, *extra: str) -> Server:
        port = free_port()
        argv = [sys.executable, str(HERE / script), "--host", HOST, "--port", str(port), *extra]
        server = self.processes.start(
            script,
            argv,
            port=port,
            env=os.environ,
            log_path=self._log_path(Path(script).stem),
            cwd=self.workdir,
        )
        wait_ready(server, READY_PATH, timeout=30)
        return server

    def server_env(self, database_url: str) -> dict[str, str]:
        env = dict(os.environ)
        src = REPO / "src"
        if src.is_dir():
            paths = [str(src), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
            env["PYTHONPATH"] = os.pathsep.join(paths)
        env.update(
            WAQUALITY_DATABASE_URL=database_url,
            WAQUALITY_APP_SECRET=self.secret,
            WAQUALITY_VERIFY_TOKEN=self.verify_token,
            WAQUALITY_API_TOKEN=self.api_token,
        )
        return env

    def server_available(self) -> str | None:
        """None when ``python -m waquality serve --help`` works, else why not."""
        argv = [sys.executable, "-m", SERVER_MODULE, "serve", "--help"]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=60,
                env=self.server_env("sqlite://"),
                cwd=self.workdir,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return "`python -m waquality serve --help` did not finish in 60 s"
        if done.returncode != 0:
            tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-5:]
            return "`python -m waquality serve --help` failed: " + " | ".join(tail)
        return None

    @contextlib.contextmanager
    def waquality(self, db: str, label: str) -> Iterator[tuple[Server, StatusClient]]:
        """A fresh database and a started, ready server; both gone afterwards."""
        data_dir = self.workdir / f"{db}-{label}"
        if db == "sqlite":
            data_dir.mkdir()
            url = f"sqlite:///{data_dir / 'bench.db'}"
        else:
            self.postgres.recreate()
            url = self.postgres.url
        port = free_port()
        argv = [sys.executable, "-m", SERVER_MODULE, "serve", "--host", HOST, "--port", str(port)]
        server = self.processes.start(
            f"waquality ({db})",
            argv,
            port=port,
            env=self.server_env(url),
            log_path=self._log_path(f"{db}-{label}"),
            cwd=self.workdir,
        )
        try:
            wait_ready(server, READY_PATH, timeout=60)
            yield server, StatusClient(port, self.api_token)
        finally:
            self.processes.stop(server)
            shutil.rmtree(data_dir, ignore_errors=True)

    @staticmethod
    def check_alive(server: Server, run: Run) -> None:
        code = server.exit_code()
        if code is not None:
            run.problems.append(f"server exited with code {code}")
            run.notes.append("server log tail:\n" + server.log_tail())

    # -- runs -----------------------------------------------------------------

    def run_check(self) -> Run:
        seconds = 2
        run = Run("check", "check", seconds=seconds)
        server = self.start_app("check_app.py", "--secret", self.secret)
        try:
            run.wrk = self.load(server, seconds, run=run)
            time.sleep(0.5)
            status, body = http_get(server.port, "/stats")
            stats = json.loads(body) if status == 200 else {}
        finally:
            self.processes.stop(server)
        check_load(run)
        received = int(stats.get("requests", -1))
        distinct = int(stats.get("distinct", -1))
        if distinct != received:
            run.problems.append(f"{received - distinct} repeated bodies among {received}")
        if stats.get("bad_signature", -1) != 0:
            run.problems.append(f"{stats.get('bad_signature')} bodies with a wrong signature")
        sent = run.wrk.requests
        if not sent <= received <= sent + self.options.connections:
            run.problems.append(f"check app received {received}, wrk completed {sent}")
        run.notes.append(f"check app: {stats}")
        return run

    def run_ceiling(self) -> list[Run]:
        o = self.options
        burst = Run("ceiling", "bare", seconds=o.burst_seconds)
        paced_seconds = min(o.sustained_seconds, 10)
        paced = Run("ceiling-paced", "bare", seconds=paced_seconds, offered=max(o.rates))
        server = self.start_app("bare_app.py")
        try:
            self.warm_up(server, burst)
            burst.wrk = self.load(server, o.burst_seconds, run=burst)
            check_load(burst)
            self.check_alive(server, burst)
            paced.wrk = self.load(server, paced_seconds, paced.offered, run=paced)
            check_load(paced)
            if paced.wrk.ack_rate < 0.95 * max(o.rates):
                paced.notes.append("the load generator did not reach the offered rate")
            self.check_alive(server, paced)
        finally:
            self.processes.stop(server)
        return [burst, paced]

    def run_burst(self, db: str) -> Run:
        o = self.options
        run = Run("burst", db, seconds=o.burst_seconds)
        with self.waquality(db, "burst") as (server, client):
            self.warm_up(server, run, client)
            run.before = client.get()
            with Sampler(client, max_seconds=o.burst_seconds + o.drain_timeout + 60) as sampler:
                run.wrk = self.load(server, o.burst_seconds, run=run)
                run.after = client.try_get(timeout=10)
                expect = run.before.received + run.wrk.acked
                run.final, run.drained = wait_drained(
                    client, server, timeout=o.drain_timeout, expect_received=expect
                )
            run.samples = sampler.samples
            run.sample_failures = sampler.failures
            if run.drained and run.final is not None and run.after is not None:
                run.drain_seconds = run.final.at - run.after.at
            self.check_alive(server, run)
        check_load(run)
        check_stored(run, o.connections)
        return run

    def run_sustained(self, db: str, rate: int) -> Run:
        o = self.options
        run = Run("sustained", db, seconds=o.sustained_seconds, offered=rate)
        with self.waquality(db, f"sustained-{rate}") as (server, client):
            self.warm_up(server, run, client)
            run.before = client.get()
            with Sampler(client, max_seconds=o.sustained_seconds + 60) as sampler:
                run.wrk = self.load(server, o.sustained_seconds, rate, run=run)
                run.after = client.try_get(timeout=10)
            run.samples = sampler.samples
            run.sample_failures = sampler.failures
            time.sleep(1.0)
            run.final = client.try_get(timeout=10)
            self.check_alive(server, run)
        check_load(run)
        check_stored(run, o.connections)
        judge_sustained(run)
        return run


FAILURES = (HarnessError, LoadError, OSError, ValueError)


def failed(run: Run, action: str, exc: Exception) -> Run:
    """Record a harness or load failure on ``run``, which is then flagged."""
    log(f"{action} failed: {exc}")
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    run.problems.append(f"{action} failed: {first}")
    run.notes.append(str(exc))
    return run


def guarded(run: Run, action: str, step: Callable[[], Run]) -> Run:
    """``step()``, or ``run`` flagged with the reason it failed."""
    try:
        return step()
    except FAILURES as exc:
        return failed(run, action, exc)


def machine_info(options: Options, bench: Bench) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "wrk": wrk_version(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    source = sorted((REPO / "src" / "waquality").rglob("*.py"))
    if source:
        digest = hashlib.sha256()
        for path in source:
            digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
        info["waquality_source_sha256"] = digest.hexdigest()[:12]
    for package in ("uvicorn", "uvloop", "httptools", "waquality"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info[package] = importlib.metadata.version(package)
    if "postgres" in options.databases:
        with contextlib.suppress(HarnessError):
            info["postgresql"] = bench.postgres.version()
    return info


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_all(options: Options, bench: Bench) -> list[Run]:
    runs: list[Run] = []
    bench.prepare_pools()
    if options.check_bodies:
        log("checking that wrk sends distinct, correctly signed bodies ...")
        runs.append(guarded(Run("check", "check", seconds=2), "body check", bench.run_check))
    log("measuring the ceiling (bare ASGI app) ...")
    try:
        runs.extend(bench.run_ceiling())
    except FAILURES as exc:
        runs.append(failed(Run("ceiling", "bare", seconds=options.burst_seconds), "ceiling", exc))
    unavailable = bench.server_available()
    for db in options.databases:
        if unavailable:
            run = Run("burst", db, seconds=options.burst_seconds)
            run.problems.append(unavailable)
            runs.append(run)
            continue
        log(f"{db}: burst, {options.burst_seconds} s ...")
        burst = Run("burst", db, seconds=options.burst_seconds)
        runs.append(guarded(burst, f"{db} burst", functools.partial(bench.run_burst, db)))
        for rate in options.rates:
            log(f"{db}: sustained at {rate:,}/s for {options.sustained_seconds} s ...")
            sustained = Run("sustained", db, seconds=options.sustained_seconds, offered=rate)
            step = functools.partial(bench.run_sustained, db, rate)
            done = guarded(sustained, f"{db} sustained {rate}/s", step)
            if done.bounded is None:
                judge_sustained(done)
            runs.append(done)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        wrk_version()
    except LoadError as exc:
        print(exc, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    processes = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="waquality-bench-"))
    bench = Bench(options, workdir, processes)

    def cleanup() -> None:
        processes.stop_all()
        if "postgres" in options.databases:
            with contextlib.suppress(HarnessError):
                bench.postgres.drop()
        shutil.rmtree(workdir, ignore_errors=True)
        if bench.pool_root is not None:
            shutil.rmtree(bench.pool_root, ignore_errors=True)

    atexit.register(cleanup)
    started = time.monotonic()
    try:
        info = machine_info(options, bench)
        runs = run_all(options, bench)
    finally:
        cleanup()
        atexit.unregister(cleanup)
    return report(options, bench, info, runs, time.monotonic() - started, argv)


def report(
    options: Options,
    bench: Bench,
    info: dict[str, Any],
    runs: list[Run],
    elapsed: float,
    argv: Sequence[str] | None,
) -> int:
    command = "python benchmarks/ingest.py " + " ".join(
        sys.argv[1:] if argv is None else list(argv)
    )
    pool = bench.pool
    print()
    print(f"Command: `{command.strip()}`")
    print(
        f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"{info['wrk']}, {options.connections} connections, {options.threads} wrk threads"
        + (f", PostgreSQL {info['postgresql']}" if "postgresql" in info else "")
        + f"; load average {info['load_average_at_start']} at start"
    )
    if "waquality_source_sha256" in info:
        print(f"Server: src/waquality sources with SHA-256 {info['waquality_source_sha256']}")
    if pool is not None:
        print(
            f"Bodies: {pool.count:,} unique signed requests, mean body "
            f"{pool.mean_body_bytes:,.0f} B, statuses: {pool.statuses}, read by the load "
            f"generator from {'memory' if bench.pools_in_memory else 'disk'}; load generator "
            "and server share the machine."
        )
    if options.quick:
        print("Quick smoke run: numbers are not comparable with the targets.")
    print()
    print(markdown_table(runs))
    print()
    for run in runs:
        for note in run.notes:
            first, *rest = note.splitlines() or [""]
            print(f"note ({run_title(run)}): {first}")
            for line in rest:
                print(f"    {line}")
    summary = summary_lines(runs, options.databases)
    print()
    for line in summary:
        print(line)
    disturbed = [r for r in runs if (r.other_cpu or 0.0) >= OTHER_CPU_NOTE]
    if disturbed:
        print(
            f"WARNING: other processes were busy during {len(disturbed)} of the runs "
            "(see the notes); repeat on a quiet machine before quoting the numbers."
        )
    flagged = [r for r in runs if r.flagged]
    print(f"\n{len(runs)} runs in {elapsed:.0f} s; {len(flagged)} flagged.")
    if options.json_path is not None:
        data = {
            "command": command.strip(),
            "machine": info,
            "options": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()
            },
            "pool": asdict(replace(pool, directory="")) if pool else None,
            "pool_in_memory": bench.pools_in_memory,
            "runs": [r.as_json() for r in runs],
            "summary": summary,
        }
        options.json_path.write_text(json.dumps(data, indent=2) + "\n")
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
