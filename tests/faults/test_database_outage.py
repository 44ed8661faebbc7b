"""Database faults under a steady stream of signed webhooks, over real HTTP on real databases.

An acknowledgement (200) promises that the raw body is durably committed. While the store cannot
commit, every POST answers 503 (Meta retries), within the write timeout; when the store is back,
POSTs answer 200 again without restarting anything, and every acknowledged body is in the inbox
exactly once.

* PostgreSQL stopped in immediate mode mid-stream, then started again (an instance of the test's
  own, in a temporary folder: the shared server cannot be stopped);
* SQLite's file locked by another process (``BEGIN EXCLUSIVE``), then released;
* SQLite out of space (``SQLITE_FULL``, through ``PRAGMA max_page_count``), then given room.

Each fault runs once, in the suite's pass for its database (``scripts/test`` runs the suite on
SQLite, then again with ``TEST_DATABASE_URL`` on PostgreSQL): the SQLite faults in the SQLite
pass, the PostgreSQL outage in the PostgreSQL pass. None of them uses the pass's own database.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import Connection, create_engine, event, select, text

from builders import envelope, template_status
from conftest import LiveServer, free_port, make_settings, run_server, signed_headers
from waquality.config import Settings
from waquality.domain.enums import RawStatus
from waquality.errors import StoreUnavailable
from waquality.store import inbox, schema
from waquality.store.inbox import Body

PATH = "/webhooks/whatsapp"
WRITE_TIMEOUT = 2.0  # seconds; the servers below run with write_timeout="2s"
MARGIN = 1.5  # scheduling slack on a small, busy machine: far below a second write timeout
SENDERS = 4  # concurrent senders, as Meta's deliveries overlap
PACE = 0.02  # each sender's pause between two POSTs
CLIENT_TIMEOUT = 4 * WRITE_TIMEOUT  # a sender gives up then: status 0, a hang
RECOVERY = 15.0  # the store is back: a 200 must come within this long
DRAINED = 45.0  # every stored body processed within this long after the stream ends
FIRST_ID = 7_000_000_000_000
NO_PAGE_LIMIT = 1_073_741_823  # SQLite's long-standing default limit: room again


@dataclass(frozen=True)
class Post:
    marker: int  # the body's template id, unique to this POST
    status: int  # 0: no HTTP answer at all
    started: float  # time.monotonic()
    ended: float

    @property
    def took(self) -> float:
        return self.ended - self.started


class Stream:
    """Signed webhooks from a few concurrent senders until stopped; every body is unique."""

    def __init__(self, live: LiveServer, padding: int = 0) -> None:
        self.url = live.url
        self.padding = "x" * padding
        self._markers = itertools.count(FIRST_ID)
        self._posts: list[Post] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, name=f"sender-{i}", daemon=True)
            for i in range(SENDERS)
        ]

    def __enter__(self) -> Stream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> list[Post]:
        self._stop.set()
        for thread in self._threads:
            thread.join(WRITE_TIMEOUT * 5)
        assert not any(t.is_alive() for t in self._threads), "a sender is stuck in a POST"
        return self.posts()

    def posts(self) -> list[Post]:
        with self._lock:
            return list(self._posts)

    def _body(self, marker: int) -> bytes:
        extra = {"padding": self.padding} if self.padding else {}
        return envelope(template_status(marker, "APPROVED", 1_751_247_548, **extra))

    def _send(self) -> None:
        with httpx.Client(base_url=self.url, timeout=CLIENT_TIMEOUT) as client:
            while not self._stop.is_set():
                with self._lock:
                    marker = next(self._markers)
                body = self._body(marker)
                started = time.monotonic()
                try:
                    status = client.post(
                        PATH, content=body, headers=signed_headers(body)
                    ).status_code
                except httpx.HTTPError:
                    status = 0
                post = Post(marker, status, started, time.monotonic())
                with self._lock:
                    self._posts.append(post)
                self._stop.wait(PACE)

    def wait_for(
        self, what: str, status: int, *, since: float, count: int = 1, timeout: float = RECOVERY
    ) -> Post:
        """The ``count``-th POST started after ``since`` that got ``status``; polls, bounded."""
        deadline = time.monotonic() + timeout
        while True:
            found = [p for p in self.posts() if p.status == status and p.started >= since]
            if len(found) >= count:
                return sorted(found, key=lambda p: p.ended)[count - 1]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: {len(found)}/{count} POSTs answered {status} within {timeout}s; "
                    f"answers since then (0: none within {CLIENT_TIMEOUT}s): "
                    f"{dict(self.statuses(since))}"
                )
            time.sleep(0.02)

    def statuses(self, since: float) -> Counter[int]:
        return Counter(p.status for p in self.posts() if p.started >= since)


@dataclass(frozen=True)
class Inbox:
    copies: Counter[int]  # template id → rows holding it
    processed: set[int]  # template ids whose row is processed


def read_inbox(database_url: str) -> Inbox:
    """What is committed, read through a connection of its own."""
    raw = schema.raw_webhooks
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(raw.c.body, raw.c.status)).all()
    finally:
        engine.dispose()
    copies: Counter[int] = Counter()
    processed: set[int] = set()
    for body, status in rows:
        value = orjson.loads(body)["entry"][0]["changes"][0]["value"]
        marker = int(value["message_template_id"])
        copies[marker] += 1
        if status == RawStatus.PROCESSED.value:
            processed.add(marker)
    return Inbox(copies, processed)


def check(
    label: str,
    posts: list[Post],
    fault: tuple[float, float],
    database_url: str,
    *,
    processed: bool,
) -> str:
    """The fault's rules over every POST; returns the tally (also in every failure message)."""
    acknowledged = {p.marker for p in posts if p.status == 200}
    refused = [p for p in posts if p.status == 503]
    start, end = fault
    during = [p for p in posts if p.started >= start and p.ended <= end]
    found = read_inbox(database_url)
    stored = {m for m in acknowledged if found.copies[m] == 1}
    tally = (
        f"{label}: {len(posts)} POSTs, {len(acknowledged)} acknowledged (200), "
        f"{len(stored)} of them stored once, "
        f"{len(acknowledged & found.processed)} processed; {len(refused)} refused (503), "
        f"{len(during)} of all POSTs wholly inside the fault; "
        f"slowest answer {max(p.took for p in posts):.2f}s; "
        f"answers {dict(Counter(p.status for p in posts))}"
    )
    print(tally)
    odd = [p for p in posts if p.status not in (200, 503)]
    assert not odd, f"answers other than 200/503 (0: none at all): {odd[:5]}\n{tally}"
    slow = [p for p in posts if p.took > WRITE_TIMEOUT + MARGIN]
    assert not slow, f"answers slower than the write timeout + {MARGIN}s: {slow[:5]}\n{tally}"
    assert len(during) >= SENDERS, f"too few POSTs inside the fault to judge\n{tally}"
    lies = [p for p in during if p.status == 200]
    assert not lies, f"acknowledged while the store could not commit: {lies[:5]}\n{tally}"
    assert stored == acknowledged, (
        f"acknowledged but not stored exactly once: "
        f"{sorted((m, found.copies[m]) for m in acknowledged - stored)[:10]}\n{tally}"
    )
    twice = [m for m, n in found.copies.items() if n > 1]
    assert not twice, f"bodies stored more than once: {twice[:10]}\n{tally}"
    if processed:
        unprocessed = acknowledged - found.processed
        assert not unprocessed, (
            f"acknowledged, never processed: {sorted(unprocessed)[:10]}\n{tally}"
        )
    return tally


@contextmanager
def serving(settings: Settings) -> Iterator[LiveServer]:
    yield from run_server(settings)


# --- PostgreSQL: the server goes away mid-stream -------------------------------------------------


class PostgresInstance:
    """A PostgreSQL server of the test's own: trust auth, loopback and a socket in its folder."""

    def __init__(self, root: Path) -> None:
        versions = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
            key=lambda p: float(p.parent.parent.name),
        )
        assert versions, "the PostgreSQL fault needs the server binaries: /usr/lib/postgresql/*/bin"
        self.bin = versions[-1].parent
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log = root / "postgresql.log"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/waquality"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise AssertionError(
                f"{program} {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}{log}"
            )

    def init(self) -> None:
        self.sockets.mkdir()
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in (self.root, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        admin = create_engine(self.url.replace("/waquality", "/postgres"))
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("CREATE DATABASE waquality"))
        admin.dispose()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        data, log = str(self.data), str(self.log)
        self._run("pg_ctl", "-w", "-t", "60", "-D", data, "-l", log, "-o", options, "start")

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-m", mode, "stop")


@pytest.fixture
def postgres() -> Iterator[PostgresInstance]:
    # Not under pytest's tmp_path: its parents are private to root, the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="waquality-outage-"))
    instance = PostgresInstance(root)
    try:
        instance.init()
        yield instance
    finally:
        if (instance.data / "postmaster.pid").exists():
            try:
                instance.stop("immediate")
            except AssertionError as exc:
                print(exc)
        shutil.rmtree(root, ignore_errors=True)


def test_postgresql_outage_answers_503_then_recovers(postgres: PostgresInstance) -> None:
    with serving(make_settings(postgres.url, write_timeout="2s")) as live, Stream(live) as stream:
        stream.wait_for("before the outage", 200, since=0, count=20)
        postgres.stop("immediate")
        down = time.monotonic()
        stream.wait_for("server stopped", 503, since=down, count=4 * SENDERS)
        time.sleep(max(0.0, down + WRITE_TIMEOUT - time.monotonic()))  # a full write timeout down
        back = time.monotonic()
        postgres.start()
        first = stream.wait_for("server started again", 200, since=back)
        print(f"first 200 {first.ended - back:.2f}s after the start began")
        stream.wait_for("after the outage", 200, since=first.ended, count=20)
        posts = stream.stop()
        live.wait_processed(DRAINED)
        check("PostgreSQL outage", posts, (down, back), postgres.url, processed=True)


# --- SQLite: another process holds the file's write lock -----------------------------------------

LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
"""


def test_sqlite_locked_file_answers_503_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "waquality.db"
    url = f"sqlite:///{path}"
    with serving(make_settings(url, write_timeout="2s")) as live, Stream(live) as stream:
        stream.wait_for("before the lock", 200, since=0, count=20)
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert locker.stdin is not None and locker.stdout is not None
        try:
            assert locker.stdout.readline() == "locked\n"
            locked = time.monotonic()
            stream.wait_for("file locked", 503, since=locked, count=2 * SENDERS)
        finally:
            # the fault ends when the lock is let go: a POST that ends after this may be a 200
            released = time.monotonic()
            locker.stdin.write("\n")
            locker.stdin.close()
            locker.stdout.close()
            assert locker.wait(10) == 0
        first = stream.wait_for("lock released", 200, since=released)
        print(f"first 200 {first.ended - released:.2f}s after the lock was released")
        stream.wait_for("after the lock", 200, since=first.ended, count=20)
        posts = stream.stop()
        live.wait_processed(DRAINED)
        check("SQLite locked", posts, (locked, released), url, processed=True)


# --- SQLite: no room left for the file to grow ----------------------------------------------------


def test_sqlite_full_disk_answers_503_then_recovers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'waquality.db'}"
    # No processing: nothing but the acknowledgements writes, so "full" stays full. Bodies larger
    # than a page need new (overflow) pages on every insert.
    settings = make_settings(url, write_timeout="2s", workers="0")
    limit: list[int | None] = [None]

    def cap(conn: Connection) -> None:
        # max_page_count belongs to a connection and cannot go below the file's size: set on
        # every transaction of the server's engine, 1 means "no page beyond the current ones".
        if limit[0] is not None:
            conn.exec_driver_sql(f"PRAGMA max_page_count={limit[0]}")

    with serving(settings) as live:
        engine = live.runtime.db.engine
        event.listen(engine, "begin", cap)
        try:
            with Stream(live, padding=6000) as stream:
                stream.wait_for("before the disk is full", 200, since=0, count=20)
                limit[0] = 1
                capped = time.monotonic()
                full_from = stream.wait_for("disk full", 503, since=capped).ended
                with pytest.raises(StoreUnavailable, match="full"), live.runtime.db.write() as c:
                    inbox.insert_bodies(c, [Body(b"x" * 6000, datetime.now(UTC))])
                stream.wait_for("still full", 503, since=full_from, count=4 * SENDERS)
                freed = time.monotonic()
                limit[0] = NO_PAGE_LIMIT
                first = stream.wait_for("room again", 200, since=freed)
                print(f"first 200 {first.ended - freed:.2f}s after room was made")
                stream.wait_for("after the disk was full", 200, since=first.ended, count=20)
                posts = stream.stop()
        finally:
            event.remove(engine, "begin", cap)
        check("SQLite full", posts, (full_from, freed), url, processed=False)


# One pass each (see the module docstring): the other pass does not collect them.
if os.environ.get("TEST_DATABASE_URL"):
    del test_sqlite_locked_file_answers_503_then_recovers
    del test_sqlite_full_disk_answers_503_then_recovers
else:
    del test_postgresql_outage_answers_503_then_recovers
