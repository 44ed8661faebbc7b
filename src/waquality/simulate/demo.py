"""The whole system alive in one process tree: a database (SQLite in a temporary directory),
the real server (the same :class:`~waquality.runtime.Runtime` as ``serve``), the fake Graph API
on a port of its own, and the simulated business.

The order matters. The backfill goes first, quietly (``?quiet=1``: history notifies nobody,
its alerts are still recorded), with its historical times, settling before each management
change (see :mod:`~waquality.simulate.deliver`); the WABAs are watched only once it
is processed, because a poll states what is true *now* and would otherwise be newer than the
history still to come. Then the traffic goes on live, ``speed`` simulated seconds per second,
and the poller reads the fake Graph API as the story changes it.
"""

from __future__ import annotations

import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn

from waquality.config import Settings
from waquality.graph.fake import FakeGraph, serve
from waquality.runtime import Runtime
from waquality.simulate import deliver, traffic
from waquality.simulate.deliver import Endpoint, Sender, Tally
from waquality.simulate.records import GraphChange

TICK = 0.25  # seconds between two steps of the live traffic
GRAPH_CALLS_PER_HOUR = 5000  # Meta's allowance for an active WABA
POLL_BUDGET = 1000  # the server's own budget per WABA and hour


class DemoError(Exception):
    """The demo cannot start (a port in use) or a step did not finish in time."""


class Stopped(Exception):
    """Asked to stop while waiting."""


@dataclass(frozen=True, slots=True)
class Options:
    port: int = 8000
    host: str = "127.0.0.1"
    days: int = 7
    seed: int = 1
    customers: int = 3000
    speed: float = 1.0
    api_token: str | None = None  # None: one is generated
    database_url: str | None = None  # None: SQLite in a temporary directory
    poll_interval: timedelta = timedelta(seconds=30)


def utcnow() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _serve(app: Any, host: str, port: int) -> Iterator[str]:
    """The server as ``serve`` runs it (lifespan on: committer, processing child, housekeeping),
    on a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DemoError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(256)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="waquality-demo-server", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise DemoError("the server did not start")
            time.sleep(0.01)
        yield f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


class Demo:
    """``with Demo(options) as demo:`` starts everything; then :meth:`backfill`,
    :meth:`watch` and :meth:`live`. Leaving the block stops everything and removes the
    temporary files."""

    def __init__(self, options: Options, *, now: Callable[[], datetime] = utcnow) -> None:
        if options.days < 1:
            raise ValueError("days: at least 1")
        self.options = options
        self.token = options.api_token or secrets.token_urlsafe(24)
        self._secret = secrets.token_hex(20).encode()
        self._graph_token = "EAAdemo" + secrets.token_hex(24)
        end = now().replace(microsecond=0)
        start = end - timedelta(days=options.days)
        self.world, self.story, self.traffic, self.backlog = traffic.generate(
            options.seed, options.customers, start, end
        )
        self.sending = list(deliver.coalesced(self.backlog))  # the backfill logs in bulk
        self.scenario = deliver.scenario(self.world, self._graph_token)
        self._lock = threading.Lock()
        self._stack = ExitStack()
        self.url = ""
        self.runtime: Runtime | None = None

    def __enter__(self) -> Demo:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        options = self.options
        database_url = options.database_url
        if database_url is None:
            folder = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="waquality-"))
            database_url = f"sqlite:///{folder}/waquality.db"
        fake = FakeGraph(self.scenario, waba_calls_per_hour=GRAPH_CALLS_PER_HOUR)
        graph_url = self._stack.enter_context(serve(fake))
        settings = Settings.model_validate(
            {
                "database_url": database_url,
                "app_secret": self._secret.decode(),
                "verify_token": secrets.token_urlsafe(16),
                "api_token": self.token,
                "host": options.host,
                "port": options.port or 8000,
                "graph_url": graph_url,
                "access_token": self._graph_token,
                "poll_interval": options.poll_interval,
                "graph_calls_per_hour": POLL_BUDGET,
                "time_zone": self.world.zone,
                "log_level": "WARNING",
            }
        )
        runtime = Runtime(settings)
        self._stack.callback(runtime.db.dispose)
        runtime.prepare()
        self.runtime = runtime
        self.url = self._stack.enter_context(
            _serve(runtime.application(), options.host, options.port)
        )
        endpoint = Endpoint(self.url, self._secret, self.token)
        self.sender = self._stack.enter_context(Sender(endpoint))
        self.client = self._stack.enter_context(
            httpx.Client(
                base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
            )
        )

    # -- steps ----------------------------------------------------------------------------------

    def apply(self, change: GraphChange) -> bool:
        with self._lock:
            deliver.apply(self.scenario, change)
        return True

    def backfill(
        self, progress: Callable[[int], None] | None = None, stop: threading.Event | None = None
    ) -> Tally:
        """Send the history (quietly) and wait until it is processed."""
        tally = deliver.send(
            self.sending,
            self.sender,
            quiet=True,
            graph=self.apply,
            progress=progress,
            stop=stop,
            settle=lambda: self.wait_processed(stop=stop),
        )
        self.wait_processed(stop=stop)
        return tally

    def _api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        if response.status_code >= 300:
            raise DemoError(f"{method} {path}: HTTP {response.status_code} {response.text[:200]}")
        return response.json()

    def _until(
        self, ready: Callable[[], bool], what: str, timeout: float, stop: threading.Event | None
    ) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if stop is not None and stop.is_set():
                raise Stopped
            if time.monotonic() > deadline:
                raise DemoError(f"{what} did not finish within {timeout:.0f}s")
            time.sleep(0.05)

    def wait_processed(self, timeout: float = 300, stop: threading.Event | None = None) -> None:
        """Until every stored webhook is processed."""
        self._until(
            lambda: self._api("GET", "/api/v1/status")["webhooks"]["pending"] == 0,
            "processing",
            timeout,
            stop,
        )

    def watch(self, timeout: float = 60, stop: threading.Event | None = None) -> None:
        """Watch every WABA (the poller reads them at once) and wait for the first reads."""
        for waba in self.world.wabas:
            self._api("POST", "/api/v1/watched-wabas", json={"waba_id": waba.id})

        def read() -> bool:
            rows = self._api("GET", "/api/v1/watched-wabas")
            return all(row["last_success_at"] for row in rows) and len(rows) >= len(
                self.world.wabas
            )

        self._until(read, "the first poll", timeout, stop)

    def live(
        self,
        stop: threading.Event,
        *,
        speed: float | None = None,
        on_tally: Callable[[Tally], None] | None = None,
    ) -> Tally:
        """Go on from the end of the backfill until ``stop``: ``speed`` simulated seconds per
        second (the options' by default)."""
        pace = self.options.speed if speed is None else speed
        origin, began = self.story.end, time.monotonic()
        total = Tally()
        while not stop.wait(TICK):
            moment = origin + timedelta(seconds=(time.monotonic() - began) * pace)
            batch = self.traffic.until(moment)
            if not batch:
                continue
            tally = deliver.send(batch, self.sender, quiet=False, graph=self.apply, stop=stop)
            total.add(tally)
            if on_tally is not None:
                on_tally(tally)
        return total


def summary(tally: Tally) -> str:
    webhooks, messages = tally.webhooks, tally.messages
    return (
        f"{webhooks[deliver.Outcome.ACKNOWLEDGED]:,} webhook POSTs acknowledged "
        f"({tally.changes:,} changes), {messages[deliver.Outcome.ACKNOWLEDGED]:,} outbound "
        f"messages logged, {tally.graph} Graph API changes"
    )
