"""Delivering the traffic: webhook POSTs signed with the app secret (``?quiet=1`` with the API
token for a backfill or replay, so history notifies nobody), outbound messages logged through
``POST /api/v1/messages``, Graph API changes applied to the fake Graph API's scenario.

POSTs go out over a few connections at once, in stream order (so the endpoint sees them
slightly out of order, as Meta's concurrent deliveries are); a ``503`` or a dropped connection
is retried as Meta retries, anything else refused is counted, never retried.

History sent fast reaches processing in batches, and an alert that fires and resolves within
one batch leaves no trace. So before a POST that carries a management change, :func:`send`
can *settle*: wait for what is in flight, then for the instance to process it. Every pause,
unpause or quality change of the history then alerts (and resolves) in its own batch.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from waquality.graph.fake import FakeBusiness, FakePhone, FakeTemplate, FakeWaba, Scenario
from waquality.ingest.signature import sign
from waquality.simulate.records import Delivery, GraphChange, Logged, Post
from waquality.simulate.world import World

RETRIES = (0.2, 0.5, 1.0, 2.0, 4.0)  # waits before each retry of a 503 or a lost connection
WEBHOOK_PATH = "/webhooks/whatsapp"
MESSAGES_PATH = "/api/v1/messages"


class Outcome(StrEnum):
    ACKNOWLEDGED = "acknowledged"  # 200
    REFUSED = "refused"  # answered, but not with 200: not retried
    FAILED = "failed"  # no answer, or 503, after every retry


# -- the fake Graph API -----------------------------------------------------------------------


def scenario(world: World, token: str) -> Scenario:
    """What the Graph API says about the world at the start: every number CONNECTED and GREEN
    at the 2K limit, every template as the world has it. ``token`` reads everything."""
    made = Scenario(app_name="waquality demo")
    owner = FakeBusiness(world.business_id, token, name=world.business_name)
    made.businesses[owner.id] = owner
    for waba in world.wabas:
        fake = FakeWaba(waba.id, waba.name, token, business_id=owner.id, timezone_id="58")
        owner.owned.append(waba.id)
        for phone in waba.phones:
            fake.phones[phone.id] = FakePhone(
                phone.id,
                phone.formatted,
                phone.name,
                name_status="PENDING_REVIEW" if phone.role == "alerts" else "APPROVED",
            )
        for template in waba.templates:
            fake.templates[template.id] = FakeTemplate(
                template.id,
                template.name,
                template.language,
                template.status,
                template.category,
                template.quality,
                rejected_reason="PROMOTIONAL" if template.status == "REJECTED" else "NONE",
            )
        made.wabas[waba.id] = fake
    return made


def apply(made: Scenario, change: GraphChange) -> None:
    """Change what the fake Graph API answers from now on."""
    waba = made.wabas[change.waba_id]
    target: FakeWaba | FakePhone | FakeTemplate
    if change.kind == "waba":
        target = waba
    elif change.kind == "phone":
        target = waba.phones[change.object_id]
    else:
        target = waba.templates[change.object_id]
        if change.field == "quality_score":
            target.quality_date = int(change.at.timestamp())
    setattr(target, change.field, change.value)


# -- sending ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A running instance: its base URL, the app secret Meta signs with, the API token."""

    url: str
    secret: bytes
    token: str | None


@dataclass(slots=True)
class Tally:
    webhooks: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    changes: int = 0  # changes in the acknowledged POSTs
    messages: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    graph: int = 0  # Graph API changes applied
    skipped: int = 0  # Graph API changes nobody could apply
    problems: list[str] = field(default_factory=list)  # the first few reasons for refusals
    seconds: float = 0.0

    def note(self, problem: str) -> None:
        if len(self.problems) < 5 and problem not in self.problems:
            self.problems.append(problem)

    def add(self, other: Tally) -> None:
        for outcome in Outcome:
            self.webhooks[outcome] += other.webhooks[outcome]
            self.messages[outcome] += other.messages[outcome]
        self.changes += other.changes
        self.graph += other.graph
        self.skipped += other.skipped
        for problem in other.problems:
            self.note(problem)
        self.seconds += other.seconds


class Sender:
    """Posts deliveries to one endpoint over ``connections`` connections, each kept by a thread
    of the sender's own pool (plain ``http.client``: on a small machine the client's own CPU
    time matters)."""

    def __init__(self, endpoint: Endpoint, *, connections: int = 16, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        parts = urlsplit(endpoint.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {endpoint.url!r}")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self.connections = connections
        self.pool = ThreadPoolExecutor(connections, thread_name_prefix="waquality-send")
        self._local = threading.local()
        self._opened: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it served a request already."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            connection = kind(self._host, self._port, timeout=self._timeout)
            self._local.connection, self._local.used = connection, False
            with self._lock:
                self._opened.append(connection)
        return connection, bool(self._local.used)

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for connection in self._opened:
                connection.close()
            self._opened.clear()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def webhook(self, post: Post, *, quiet: bool) -> tuple[Outcome, str | None]:
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": sign(self.endpoint.secret, post.body),
        }
        path = WEBHOOK_PATH
        if quiet:
            if self.endpoint.token is None:
                raise ValueError("a quiet delivery needs the API token")
            headers["Authorization"] = f"Bearer {self.endpoint.token}"
            path += "?quiet=1"
        return self._post(path, post.body, headers)

    def log(self, logged: Logged) -> tuple[Outcome, str | None]:
        if self.endpoint.token is None:
            raise ValueError("logging messages needs the API token")
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.endpoint.token}",
        }
        body = orjson.dumps({"messages": list(logged.messages)})
        return self._post(MESSAGES_PATH, body, headers)

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[Outcome, str | None]:
        name = path.partition("?")[0]
        retries = iter(RETRIES)
        while True:
            connection, reused = self._connection()
            try:
                connection.request("POST", self._prefix + path, body=body, headers=headers)
                response = connection.getresponse()
                text = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                problem = f"{name}: {type(exc).__name__}"
                if reused:
                    continue  # the server closed an idle connection: a new one, at once
            else:
                self._local.used = True
                if response.will_close:
                    self._drop()
                if response.status == 200:
                    return Outcome.ACKNOWLEDGED, None
                detail = text[:200].decode(errors="replace")
                problem = f"{name}: HTTP {response.status} {detail}"
                if response.status != 503:
                    return Outcome.REFUSED, problem
            pause = next(retries, None)
            if pause is None:
                return Outcome.FAILED, problem
            time.sleep(pause)


def coalesced(deliveries: Iterable[Delivery], limit: int = 1000) -> Iterator[Delivery]:
    """The same deliveries with the logs merged into calls of up to ``limit`` messages, each
    sent where its last part was: a backfill logs in bulk."""
    held: list[dict[str, Any]] = []
    last: datetime | None = None
    for delivery in deliveries:
        if isinstance(delivery, Logged):
            if len(held) + len(delivery.messages) > limit and held and last is not None:
                yield Logged(last, tuple(held))
                held = []
            held += delivery.messages
            last = delivery.at
            continue
        yield delivery
    if held and last is not None:
        yield Logged(last, tuple(held))


def processed(
    endpoint: Endpoint, stop: threading.Event | None = None, timeout: float = 120.0
) -> bool:
    """Wait until the instance has processed every webhook it stored (its ``/api/v1/status``
    says none is pending); False when it cannot tell (no token, an error) or takes too long."""
    if endpoint.token is None:
        return False
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {endpoint.token}"}
    with httpx.Client(base_url=endpoint.url, headers=headers, timeout=10) as client:
        while time.monotonic() < deadline:
            try:
                response = client.get("/api/v1/status")
                if response.status_code != 200:
                    return False
                if response.json()["webhooks"]["pending"] == 0:
                    return True
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                return False
            if stop is not None and stop.wait(0.05):
                return False
            if stop is None:
                time.sleep(0.05)
    return False


GraphHandler = Callable[[GraphChange], bool]  # applies a change; False: it could not


def send(
    deliveries: Iterable[Delivery],
    sender: Sender,
    *,
    quiet: bool,
    graph: GraphHandler | None = None,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    settle: Callable[[], None] | None = None,
) -> Tally:
    """Deliver in stream order over the sender's connections, at most ``rate`` requests a
    second; ``progress`` hears of every delivery done; ``stop`` ends early; ``settle`` waits
    until the instance has processed what it acknowledged (called before each POST with a
    management change)."""
    tally = Tally()
    started = time.monotonic()
    pending: set[Future[tuple[Outcome, str | None, Delivery]]] = set()

    def run(delivery: Post | Logged) -> tuple[Outcome, str | None, Delivery]:
        if isinstance(delivery, Post):
            return (*sender.webhook(delivery, quiet=quiet), delivery)
        return (*sender.log(delivery), delivery)

    def collect(done: set[Future[tuple[Outcome, str | None, Delivery]]]) -> None:
        for future in done:
            outcome, problem, delivery = future.result()
            if isinstance(delivery, Post):
                tally.webhooks[outcome] += 1
                tally.changes += delivery.changes if outcome is Outcome.ACKNOWLEDGED else 0
            elif isinstance(delivery, Logged):
                tally.messages[outcome] += len(delivery.messages)
            if problem:
                tally.note(problem)
            if progress is not None:
                progress(1)

    requests = 0
    try:
        for delivery in deliveries:
            if stop is not None and stop.is_set():
                break
            if isinstance(delivery, GraphChange):
                applied = graph(delivery) if graph is not None else False
                tally.graph += applied
                tally.skipped += not applied
                if progress is not None:
                    progress(1)
                continue
            if rate:
                delay = started + requests / rate - time.monotonic()
                if delay > 0 and (stop or threading.Event()).wait(delay):
                    break
            if settle is not None and isinstance(delivery, Post) and delivery.management:
                done, pending = wait(pending)
                collect(done)
                settle()
            requests += 1
            pending.add(sender.pool.submit(run, delivery))
            if len(pending) >= sender.connections * 4:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
    finally:
        done, pending = wait(pending)
        collect(done)
    tally.seconds = time.monotonic() - started
    return tally
