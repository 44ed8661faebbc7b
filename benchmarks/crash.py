"""Crash under load: nothing acknowledged is lost, nothing is stored or processed twice.

Starts ``python -m waquality serve`` on a fresh database, posts signed, all-different webhook
bodies from many connections, and part-way through kills the whole server with SIGKILL (receiver
and processing child at once), starts it again on the same database and goes on posting. When
the posting is over, it kills the processing child alone while the backlog is still being
worked through (the server restarts it). Then it waits until nothing is pending and checks the
database itself:

- every acknowledged body (HTTP 200) is stored, and every stored body exactly once;
- the only bodies stored without an acknowledgement are the few in flight at the kill;
- every stored body is processed, and the events are exactly those its bodies carry (by
  dedupe key), each once.

    python benchmarks/crash.py [--posts 100000] [--db sqlite|postgres] [--quick]

Exit status 0 when every check holds.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import select

import bodies as body_pool
from harness import HOST, Postgres, Processes, Server, free_port, serve_env, start_serve, wait_ready
from waquality.ingest.signature import sign
from waquality.process.parse import parse_body
from waquality.store import schema
from waquality.store.database import Database

SECRET = "crash-app-secret"  # noqa: S105 (a throwaway secret for a local run)
TOKEN = "crash-api-token"  # noqa: S105
CONNECTIONS = 32


@dataclass
class Tally:
    acked: set[int] = field(default_factory=set)
    in_doubt: set[int] = field(default_factory=set)  # the connection broke after sending
    refused: Counter[int] = field(default_factory=Counter)  # HTTP status → count
    down_seconds: float = 0.0


@dataclass(frozen=True)
class Report:
    db: str
    posts: int
    acked: int
    in_doubt: int
    stored: int
    stored_twice: int
    lost: int
    unexpected: int
    processed: int
    events: int
    events_expected: int
    down_seconds: float
    seconds: float
    refused: dict[int, int]

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and not self.refused
            and self.stored_twice == 0
            and self.unexpected == 0
            and self.processed == self.stored
            and self.events == self.events_expected
        )

    def line(self) -> str:
        return (
            f"| {self.db} | {self.posts:,} posts | acknowledged {self.acked:,} | "
            f"in flight at the kill {self.in_doubt:,} | stored {self.stored:,} "
            f"(twice: {self.stored_twice}, acknowledged but missing: {self.lost}) | "
            f"processed {self.processed:,} | events {self.events:,} of {self.events_expected:,} | "
            f"server down {self.down_seconds:.1f} s | refused {self.refused or 'none'} | "
            f"{self.seconds:.0f} s |"
        )


class Instance:
    """The server under test: started, killed and started again on one database."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.processes = Processes()
        self.port = free_port()
        self.tmp = tmp
        self.env = serve_env(tmp, url, SECRET, TOKEN)
        self.server: Server | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.server = start_serve(
            self.processes, self.env, self.port, self.tmp / f"server-{self.starts}.log"
        )
        wait_ready(self.server, "/readyz")

    def kill(self) -> None:
        """SIGKILL the server and its processing child at once."""
        assert self.server is not None
        os.killpg(self.server.process.pid, signal.SIGKILL)
        self.server.process.wait(10)
        self.processes.running.remove(self.server)

    def kill_child(self) -> int:
        """SIGKILL the processing child alone; returns its pid."""
        assert self.server is not None
        pid = self.server.process.pid
        children = [  # a child is listed under the thread that started it
            child
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
        # the spawn context's resource tracker is a child too; the worker is the other one
        for child in children:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"resource_tracker" not in cmdline:
                os.kill(int(child), signal.SIGKILL)
                return int(child)
        raise RuntimeError("no processing child found")

    def pending(self) -> int | None:
        try:
            response = httpx.get(
                f"http://{HOST}:{self.port}/api/v1/status",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=5,
            )
            return int(response.json()["webhooks"]["pending"])
        except (httpx.HTTPError, KeyError, ValueError):
            return None

    def stop(self) -> None:
        self.processes.stop_all()


async def post_all(instance: Instance, payloads: list[bytes], kill_at: int, tally: Tally) -> None:
    """Post every body once from ``CONNECTIONS`` connections; kill the server after
    ``kill_at`` answers and restart it while the posting goes on."""
    indices: Iterator[int] = iter(range(len(payloads)))
    answered = 0
    up = asyncio.Event()
    up.set()
    killed = False

    async def restart() -> None:
        began = time.monotonic()
        instance.kill()
        await asyncio.to_thread(instance.start)
        tally.down_seconds = time.monotonic() - began
        up.set()

    async def connection() -> None:
        nonlocal answered, killed
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=f"http://{HOST}:{instance.port}", timeout=30, limits=limits
        ) as client:
            for i in indices:
                body = payloads[i]
                headers = {"X-Hub-Signature-256": sign(SECRET.encode(), body)}
                while True:
                    await up.wait()
                    try:
                        response = await client.post(
                            "/webhooks/whatsapp", content=body, headers=headers
                        )
                    except httpx.ConnectError:  # nothing was sent: send it again once up
                        await asyncio.sleep(0.05)
                        continue
                    except httpx.TransportError:  # sent, but no answer: may or may not be in
                        tally.in_doubt.add(i)
                        break
                    if response.status_code == 200:
                        tally.acked.add(i)
                    else:
                        tally.refused[response.status_code] += 1
                    break
                answered += 1
                if answered >= kill_at and not killed:
                    killed = True
                    up.clear()
                    asyncio.get_running_loop().create_task(restart())

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    await up.wait()


def verify(db_url: str, payloads: list[bytes], tally: Tally) -> tuple[int, ...]:
    """(stored, stored twice, acknowledged but missing, stored but never sent or not in
    flight, processed, events, events expected)"""
    by_hash = {hashlib.sha256(b).digest(): i for i, b in enumerate(payloads)}
    db = Database(db_url)
    raw = schema.raw_webhooks
    try:
        with db.read() as conn:
            rows = conn.execute(select(raw.c.body, raw.c.status)).all()
            keys = set(conn.execute(select(schema.events.c.dedupe_key)).scalars())
    finally:
        db.dispose()
    seen: Counter[int] = Counter()
    unknown = processed = 0
    expected: set[str] = set()
    for body, status in rows:
        index = by_hash.get(hashlib.sha256(bytes(body)).digest())
        if index is None:
            unknown += 1
            continue
        seen[index] += 1
        processed += status == "processed"
        expected.update(event.dedupe_key for event in parse_body(bytes(body)).events)
    lost = len(tally.acked - set(seen))
    unexpected = unknown + len(set(seen) - tally.acked - tally.in_doubt)
    twice = sum(1 for n in seen.values() if n > 1)
    return len(rows), twice, lost, unexpected, processed, len(keys & expected), len(expected)


def run(
    db_url: str,
    db_name: str,
    posts: int,
    messages_share: float,
    tmp: Path,
    drain_timeout: float = 600.0,
) -> Report:
    body_pool.MESSAGES_SHARE = messages_share
    factory = body_pool.BodyFactory(seed=int(time.time()) % 10_000)
    payloads = [factory.body(i) for i in range(posts)]
    instance = Instance(db_url, tmp)
    tally = Tally()
    began = time.monotonic()
    try:
        instance.start()
        asyncio.run(post_all(instance, payloads, int(posts * 0.4), tally))
        instance.kill_child()  # the backlog is being worked through: kill the worker
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline:
            if instance.pending() == 0:
                break
            time.sleep(0.25)
        else:
            raise RuntimeError(f"the backlog was not processed within {drain_timeout:.0f} s")
    finally:
        instance.stop()
    seconds = time.monotonic() - began
    stored, twice, lost, unexpected, processed, events, expected = verify(db_url, payloads, tally)
    return Report(
        db_name,
        posts,
        len(tally.acked),
        len(tally.in_doubt),
        stored,
        twice,
        lost,
        unexpected,
        processed,
        events,
        expected,
        tally.down_seconds,
        seconds,
        dict(tally.refused),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--messages-share", type=float, default=0.8, help="share of messages-only bodies"
    )
    parser.add_argument("--quick", action="store_true", help="3,000 posts: a smoke run")
    options = parser.parse_args(argv)
    posts = 3000 if options.quick else options.posts
    names = ("sqlite", "postgres") if options.db == "both" else (options.db,)
    reports = []
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            if name == "postgres":
                database = Postgres("waquality_bench_crash")
                database.recreate()
                url = database.url
            else:
                url = f"sqlite:///{Path(tmp) / 'crash.db'}"
            try:
                reports.append(run(url, name, posts, options.messages_share, Path(tmp)))
            finally:
                if name == "postgres":
                    database.drop()
        print(reports[-1].line(), flush=True)
    ok = all(r.ok for r in reports)
    print("PASS" if ok else "FAIL", " nothing acknowledged lost, nothing stored or processed twice")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
