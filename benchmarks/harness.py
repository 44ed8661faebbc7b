"""Processes, databases and status sampling for the ingestion benchmark.

Everything here talks to 127.0.0.1 only. Every process started through
:class:`Processes` is stopped by :meth:`Processes.stop_all`, which the runner
calls in ``finally`` and registers with ``atexit``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from waquality.periodic import Periodic
from waquality.runtime import CHECKPOINT_INTERVAL
from waquality.store.database import Database

HOST = "127.0.0.1"


class HarnessError(RuntimeError):
    """A server would not start, answer or stop as expected."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(
    port: int, path: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass(slots=True)
class Server:
    """A process started by the benchmark, listening on ``port``."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def exit_code(self) -> int | None:
        return self.process.poll()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass(slots=True)
class Processes:
    """Starts servers and guarantees they are stopped."""

    running: list[Server] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> Server:
        log = log_path.open("wb")
        try:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            log.close()
        server = Server(name=name, process=process, port=port, log_path=log_path)
        self.running.append(server)
        return server

    def stop(self, server: Server, timeout: float = 20.0) -> int | None:
        """SIGTERM the server's process group, then SIGKILL after ``timeout``."""
        if server in self.running:
            self.running.remove(server)
        process = server.process
        # The group is signalled only while its leader is alive (not yet
        # reaped), so its id cannot have been reused by another process.
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        return process.returncode

    def stop_all(self) -> None:
        for server in list(self.running):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self.stop(server)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_ready(server: Server, path: str, timeout: float = 60.0) -> float:
    """Poll ``GET path`` until it answers 200; returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    last = "no answer"
    for _ in range(int(timeout / 0.1) + 1):
        code = server.exit_code()
        if code is not None:
            raise HarnessError(
                f"{server.name} exited with code {code} before it was ready:\n{server.log_tail()}"
            )
        try:
            status, _ = http_get(server.port, path, timeout=2.0)
            if status == 200:
                return time.monotonic() - started
            last = f"HTTP {status}"
        except OSError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise HarnessError(
        f"{server.name} not ready after {timeout:.0f} s ({last}):\n{server.log_tail()}"
    )


# -- status sampling ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """One answer of ``GET /api/v1/status``, stamped with ``time.monotonic()``."""

    at: float
    received: int
    pending: int
    processed: int
    quarantined: int
    events: int

    @classmethod
    def from_json(cls, at: float, data: Mapping[str, Any]) -> Status:
        hooks = data["webhooks"]
        return cls(
            at=at,
            received=int(hooks["received"]),
            pending=int(hooks["pending"]),
            processed=int(hooks["processed"]),
            quarantined=int(hooks["quarantined"]),
            events=int(data["events"]),
        )


class StatusClient:
    def __init__(self, port: int, api_token: str, path: str = "/api/v1/status") -> None:
        self.port = port
        self.path = path
        self.headers = {"Authorization": f"Bearer {api_token}"}

    def get(self, timeout: float = 5.0) -> Status:
        at = time.monotonic()
        status, body = http_get(self.port, self.path, self.headers, timeout=timeout)
        if status != 200:
            raise HarnessError(f"GET {self.path} answered HTTP {status}: {body[:200]!r}")
        return Status.from_json(at, json.loads(body))

    def try_get(self, timeout: float = 5.0) -> Status | None:
        try:
            return self.get(timeout)
        except (OSError, HarnessError, ValueError, KeyError):
            return None


class Sampler:
    """Samples the status once a second on a background thread.

    The thread stops when :meth:`stop` is called or after ``max_seconds``.
    """

    def __init__(self, client: StatusClient, max_seconds: float, interval: float = 1.0) -> None:
        self.client = client
        self.interval = interval
        self.max_seconds = max_seconds
        self.samples: list[Status] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 10)

    def _run(self) -> None:
        started = time.monotonic()
        for tick in range(1, int(self.max_seconds / self.interval) + 1):
            sample = self.client.try_get(timeout=max(self.interval * 3, 3.0))
            if sample is None:
                self.failures += 1
            else:
                self.samples.append(sample)
            wait = started + tick * self.interval - time.monotonic()
            if self._stop.wait(max(wait, 0.0)):
                return


def wait_drained(
    client: StatusClient,
    server: Server,
    *,
    timeout: float,
    expect_received: int | None = None,
) -> tuple[Status | None, bool]:
    """Poll until nothing is pending; returns the last status and whether it drained.

    With ``expect_received``, also wait until that many bodies are stored.
    Gives up early if the server exits.
    """
    deadline = time.monotonic() + timeout
    last: Status | None = None
    for _ in range(int(timeout / 0.25) + 2):
        if server.exit_code() is not None:
            break
        status = client.try_get()
        if status is not None:
            last = status
            stored = expect_received is None or status.received >= expect_received
            if status.pending == 0 and stored:
                return status, True
        if time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    return last, False


# -- PostgreSQL ---------------------------------------------------------------


ADMIN_URL = f"postgresql+psycopg://postgres@{HOST}:5432/postgres"
"""A PostgreSQL server's maintenance database, used only to create and drop scratch ones."""


@dataclass(frozen=True, slots=True)
class Postgres:
    """A scratch database on the server of ``admin_url``, created and dropped by the benchmark."""

    database: str
    admin_url: str = ADMIN_URL

    @property
    def url(self) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + self.database

    def _admin(self, sql: str) -> str:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                result = conn.execute(text(sql))
                return str(result.scalar()) if result.returns_rows else ""
        except SQLAlchemyError as exc:
            raise HarnessError(f"PostgreSQL failed running {sql!r}: {exc}") from exc
        finally:
            engine.dispose()

    def version(self) -> str:
        return self._admin("SHOW server_version")

    def recreate(self) -> None:
        self.drop()
        self._admin(f'CREATE DATABASE "{self.database}"')

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_database(kind: str, name: str, admin_url: str = ADMIN_URL) -> Iterator[str]:
    """The URL of a fresh, empty database: a SQLite file (``kind`` "sqlite") or the database
    ``name`` on the PostgreSQL server of ``admin_url``; gone afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="waquality-bench-") as tmp:
            yield f"sqlite:///{Path(tmp) / (name + '.db')}"
        return
    database = Postgres(name, admin_url)
    database.recreate()
    try:
        yield database.url
    finally:
        database.drop()


@contextlib.contextmanager
def processing_database(url: str) -> Iterator[Database]:
    """``url`` opened as serve's processing child opens it: on SQLite its commits never move
    the WAL into the database file; a thread of its own does, every ``CHECKPOINT_INTERVAL``, as
    serve's housekeeping does. Disposed of afterwards."""
    db = Database(url, checkpoints=False)
    checkpoints = Periodic(db.checkpoint, interval=CHECKPOINT_INTERVAL, name="checkpoints")
    checkpoints.start()
    try:
        yield db
    finally:
        checkpoints.stop()
        db.dispose()


# A directory in memory: Linux's shared-memory file system, where it exists.
MEMORY_ROOT = Path("/dev/shm")


def memory_directory(prefix: str, needed: int) -> tuple[Path, bool]:
    """A new directory for ``needed`` bytes of load-generator input, in memory when the machine
    has room there (``True``), else an ordinary temporary directory (``False``); the caller
    removes it.

    Read from disk, the requests compete with the server's commits for the same device: a page
    that has to come from the disk while the database syncs stalls the load generator's thread
    and every request it has in flight, and the stall shows up as the server's latency."""
    with contextlib.suppress(OSError):
        if MEMORY_ROOT.is_dir() and shutil.disk_usage(MEMORY_ROOT).free > 2 * needed:
            return Path(tempfile.mkdtemp(prefix=prefix, dir=MEMORY_ROOT)), True
    return Path(tempfile.mkdtemp(prefix=prefix)), False


# -- other processes ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds used so far by each process that is not the benchmark's own.

    The benchmark's own processes are this one and its descendants (wrk, the
    servers); PostgreSQL's processes are left out too, since they serve the
    benchmark. What remains is other work on the machine.
    """

    at: float
    foreign: dict[int, float]

    @classmethod
    def take(cls) -> CpuSnapshot:
        tick = os.sysconf("SC_CLK_TCK")
        stats: dict[int, tuple[int, str, float]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                raw = (entry / "stat").read_text()
                comm = raw[raw.index("(") + 1 : raw.rindex(")")]
                rest = raw[raw.rindex(")") + 2 :].split()
                ppid, utime, stime = int(rest[1]), int(rest[11]), int(rest[12])
                stats[int(entry.name)] = (ppid, comm, (utime + stime) / tick)
        own = {os.getpid()}
        for _ in range(64):  # descendants, a generation per pass
            grown = {pid for pid, (ppid, _, _) in stats.items() if ppid in own} - own
            if not grown:
                break
            own |= grown
        foreign = {
            pid: cpu
            for pid, (_, comm, cpu) in stats.items()
            if pid not in own and comm != "postgres"
        }
        return cls(at=time.monotonic(), foreign=foreign)

    def busy_since(self, earlier: CpuSnapshot) -> float:
        """Cores' worth of CPU other processes used between the two snapshots."""
        elapsed = self.at - earlier.at
        if elapsed <= 0:
            return 0.0
        used = sum(cpu - earlier.foreign.get(pid, 0.0) for pid, cpu in self.foreign.items())
        return max(used, 0.0) / elapsed


# -- the server under test ------------------------------------------------------


def serve_env(
    tmp: Path, database_url: str, secret: str, token: str, **extra: str
) -> dict[str, str]:
    """The environment of a ``waquality serve`` under test: this one without any WAQUALITY_*
    setting, an empty config file in ``tmp``, and the given database, secret and token
    (``extra``: more settings, named without the prefix)."""
    config = tmp / "none.toml"
    config.write_text("")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("WAQUALITY_")},
        "WAQUALITY_DATABASE_URL": database_url,
        "WAQUALITY_APP_SECRET": secret,
        "WAQUALITY_API_TOKEN": token,
        "WAQUALITY_LOG_LEVEL": "WARNING",
        "WAQUALITY_CONFIG": str(config),
        **{f"WAQUALITY_{k.upper()}": v for k, v in extra.items()},
    }


def start_serve(processes: Processes, env: Mapping[str, str], port: int, log_path: Path) -> Server:
    return processes.start(
        "waquality",
        [sys.executable, "-m", "waquality", "serve", "--port", str(port)],
        port=port,
        env=env,
        log_path=log_path,
    )
