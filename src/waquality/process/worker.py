"""Process stored bodies: claim a batch, parse, deduplicate, apply state, mark done.

Each batch is one transaction, so a body is processed exactly once even with several workers
(PostgreSQL ``SKIP LOCKED``) and a crash mid-batch leaves it pending. A body that makes the code
fail is isolated and quarantined with the error, never retried forever and never lost.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, or_, select, update

from waquality import metrics
from waquality.alerting.book import Alerting
from waquality.domain.enums import Source, SubjectKind
from waquality.domain.events import Event, UserPreference
from waquality.errors import StoreConflict, StoreUnavailable
from waquality.process.interpret import interpret
from waquality.process.parse import Broken, ParsedBody, parse_body
from waquality.store import bulk, inbox, privacy, schema, watch
from waquality.store.database import Database
from waquality.store.state import StateWriter, TimedChange, join_phone
from waquality.store.tracker import Preference, Tracker
from waquality.store.watch import Reread

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
CONFLICT_RETRIES = 8
COUNTER_SHARDS = 64
DEFER_STEP = 0.002
# While webhooks arrive faster than they are processed (a burst), processing makes way for
# acknowledgements. On SQLite a transaction holds the one write lock: batches of this many bodies.
BURST_BATCH = 10
# On PostgreSQL acknowledgements never wait for a transaction, but they share the CPU and the
# write-ahead log's flushes with it: full batches, and a longer wait for the crowd to pass.
BURST_DEFER = 1.0  # seconds
# A burst that lasts longer is an overload: full batches again, so the backlog grows slowest.
BURST_LIMIT = 15.0  # seconds
# A burst is over once webhooks have come no faster than processing for this long: the rate of
# acknowledgements wavers around processing's in an overload, and must not start a new burst.
BURST_CALM = 3.0  # seconds
# A burst starts from a backlog that processing had emptied at most this long ago, once
# webhooks come BURST_SURGE times as fast as they did while it kept up and the backlog has grown
# to BURST_BACKLOG full batches and a second's worth of webhooks. Near its capacity under steady
# load, processing's measured rate wavers around the rate of webhooks; small batches then would
# cost it the very throughput it lacks (a tenth of it, and the backlog never drains): that is
# no burst. Nor is the rate of acknowledgements jumping back after a long processing
# transaction held them: the rate processing kept up with is the highest seen when it caught
# up, forgotten over KEPT_UP_MEMORY.
BURST_FRESH = 5.0  # seconds
BURST_SURGE = 2.0
KEPT_UP_MEMORY = 30.0  # seconds
BURST_BACKLOG = 4  # full batches
BURST_BACKLOG_SECONDS = 1.0  # of webhooks at the rate they arrive
RATE_SMOOTHING = 0.3
TOUCH_RESOLUTION = timedelta(seconds=1)
# A webhook about one of these asks the poller to re-read it (the webhook may not say it all).
REREAD_KINDS = frozenset({SubjectKind.PHONE_NUMBER, SubjectKind.TEMPLATE})


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class BatchResult:
    bodies: int = 0
    events: int = 0
    duplicates: int = 0
    quarantined: int = 0
    history: int = 0
    notifications: int = 0
    messages: int = 0  # message rows the tracker changed
    wabas_seen: dict[str, datetime] = field(default_factory=dict)

    def add(self, other: BatchResult) -> None:
        self.bodies += other.bodies
        self.events += other.events
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.history += other.history
        self.notifications += other.notifications
        self.messages += other.messages
        for waba_id, at in other.wabas_seen.items():
            self.wabas_seen[waba_id] = max(at, self.wabas_seen.get(waba_id, at))


class Processor:
    def __init__(
        self,
        db: Database,
        *,
        batch_size: int = 200,
        clock: Clock = utcnow,
        reread_delay: timedelta = timedelta(seconds=30),
        alerting: Alerting | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        self.db, self.batch_size, self.clock = db, batch_size, clock
        self.tracker = tracker
        self._customer_key = tracker.config.customer_key if tracker is not None else None
        self.reread_delay = reread_delay
        self.alerting = alerting or Alerting()
        self._joined: set[tuple[str, str]] = set()  # (phone id, display) already tied together
        self._wabas: set[str] = set()  # WABA rows known to exist
        self._touched: dict[str, datetime] = {}  # last_webhook_at written, per WABA
        self._shard = random.randrange(COUNTER_SHARDS)  # this worker's field_counts rows
        self.rate: float | None = None  # bodies/s of full batches, parsing included, smoothed

    def run_once(self, limit: int | None = None) -> BatchResult:
        """Process one batch of pending bodies (``batch_size``, or ``limit`` when smaller); an
        empty result means nothing was pending."""
        size = min(limit or self.batch_size, self.batch_size)
        started = time.monotonic()
        # SQLite has one writer: parse before taking the write lock, so acknowledgements wait
        # only for database work. PostgreSQL workers claim first (SKIP LOCKED), then parse.
        prefetched = self._prefetch(size) if self.db.is_sqlite else None
        if prefetched == {}:
            return BatchResult()
        ids: list[int] = list(prefetched or ())
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                with self.db.write() as conn:
                    if prefetched is None:
                        rows = inbox.claim_pending(conn, size)
                        parsed = [
                            (
                                r.id,
                                r.received_at,
                                parse_body(r.body, r.received_at, self._customer_key),
                            )
                            for r in rows
                        ]
                        ids = [r.id for r in rows]
                        quiet = {r.id for r in rows if r.quiet}
                    else:
                        still = inbox.still_pending(conn, ids)
                        parsed = [(rid, *prefetched[rid][:2]) for rid in ids if rid in still]
                        quiet = {rid for rid in ids if prefetched[rid][2]}
                    result = self._process(conn, parsed, quiet)
                self._measure(result.bodies, time.monotonic() - started)
                if result.notifications:
                    self.alerting.queued()
                self._touch_wabas(result.wabas_seen)
                return result
            except StoreConflict:
                if attempt == CONFLICT_RETRIES:
                    raise
                time.sleep(random.uniform(0, 0.01 * attempt))  # let the other side finish
            except StoreUnavailable:
                raise
            except Exception:
                log.exception("processing a batch failed; isolating its %d bodies", len(ids))
                break
        result = BatchResult()
        for raw_id in ids:
            result.add(self._process_alone(raw_id))
        return result

    def backlog_reaches(self, bodies: int) -> bool:
        """Whether ``bodies`` or more are pending."""
        with self.db.read() as conn:
            return inbox.pending_at_least(conn, bodies)

    def _measure(self, bodies: int, seconds: float) -> None:
        if bodies * 2 < self.batch_size or seconds <= 0:
            return  # a small batch says more about fixed costs than about throughput
        rate = bodies / seconds
        self.rate = rate if self.rate is None else self.rate + (rate - self.rate) * RATE_SMOOTHING

    def _prefetch(self, size: int) -> dict[int, tuple[datetime, ParsedBody, bool]]:
        with self.db.read() as conn:
            rows = inbox.peek_pending(conn, size)
        return {
            r.id: (r.received_at, parse_body(r.body, r.received_at, self._customer_key), r.quiet)
            for r in rows
        }

    def drain(self, limit: int | None = None) -> BatchResult:
        """Process until nothing is pending (or ``limit`` bodies were processed)."""
        total = BatchResult()
        while limit is None or total.bodies < limit:
            result = self.run_once()
            if result.bodies == 0:
                break
            total.add(result)
        return total

    def _process_alone(self, raw_id: int) -> BatchResult:
        try:
            with self.db.write() as conn:
                rows = inbox.claim_ids(conn, [raw_id])
                return self._process(
                    conn,
                    [
                        (r.id, r.received_at, parse_body(r.body, r.received_at, self._customer_key))
                        for r in rows
                    ],
                    {r.id for r in rows if r.quiet},
                )
        except StoreUnavailable:
            raise
        except Exception as exc:
            log.exception("body %d cannot be processed; quarantining it", raw_id)
            error = f"internal error while processing: {type(exc).__name__}: {exc}"[:2000]
            with self.db.write() as conn:
                if not inbox.claim_ids(conn, [raw_id]):
                    return BatchResult()
                _quarantine(conn, [(raw_id, Broken("", None, error))], self.clock())
                inbox.mark_processed(conn, [(raw_id, False)], self.clock())
            metrics.QUARANTINED.inc()
            return BatchResult(bodies=1, quarantined=1)

    def _process(
        self,
        conn: Connection,
        parsed: list[tuple[int, datetime, ParsedBody]],
        quiet: AbstractSet[int] = frozenset(),
    ) -> BatchResult:
        """A batch in one transaction; bodies marked quiet apart, so they notify nobody."""
        result = BatchResult()
        loud = [item for item in parsed if item[0] not in quiet]
        for group, notify in ((loud, True), ([p for p in parsed if p[0] in quiet], False)):
            if group:
                result.add(self._process_group(conn, group, notify))
        return result

    def _process_group(
        self, conn: Connection, parsed: list[tuple[int, datetime, ParsedBody]], notify: bool
    ) -> BatchResult:
        now = self.clock()
        result = BatchResult(bodies=len(parsed))
        new_events = self._insert_events(conn, parsed, result)
        for join in (j for _, _, p in parsed for j in p.joins):
            if (join.phone_number_id, join.display_phone_number) not in self._joined:
                join_phone(self.db, conn, join, now)
                self._joined.add((join.phone_number_id, join.display_phone_number))
        writer = StateWriter(self.db, conn, now, Source.WEBHOOK.value)
        changes = [
            TimedChange(change, occurred_at, event_id)
            for event, occurred_at, event_id in new_events
            for change in interpret(event)
        ]
        result.history = writer.apply(changes)
        result.notifications = self.alerting.apply(
            self.db, conn, writer.changed, now, [(e, at) for e, at, _ in new_events], notify=notify
        )
        rereads = [
            Reread(event.subject_kind, event.subject_id, event.waba_id)
            for event, _, _ in new_events
            if event.subject_kind in REREAD_KINDS and event.subject_id
        ]
        watch.request_rereads(self.db, conn, rereads, now + self.reread_delay)
        if self.tracker is not None:
            items = [item for _, _, body in parsed for item in body.messages]
            preferences = [
                Preference(
                    event.detail.phone_number_id or event.detail.display_phone_number or "",
                    at,
                    event.detail.value,
                )
                for event, at, _ in new_events
                if isinstance(event.detail, UserPreference)
            ]
            result.messages = self.tracker.apply(conn, items, now, preferences)
            customer = [raw_id for raw_id, _, body in parsed if body.has_customer_data]
            privacy.redact_bodies(conn, customer, self.tracker.config)
        result.wabas_seen = _wabas_seen(parsed)
        broken = [(raw_id, b) for raw_id, _, p in parsed for b in p.broken]
        _quarantine(conn, broken, now)
        result.quarantined = len(broken)
        _count_fields(self.db, conn, [p for _, _, p in parsed], now, self._shard)
        inbox.mark_processed(conn, [(rid, p.has_customer_data) for rid, _, p in parsed], now)
        metrics.EVENTS.inc(result.events)
        metrics.DUPLICATES.inc(result.duplicates)
        metrics.QUARANTINED.inc(result.quarantined)
        for _, received_at, _ in parsed:
            metrics.PROCESSING_LAG.observe(max(0.0, (now - received_at).total_seconds()))
        return result

    def _touch_wabas(self, seen: dict[str, datetime]) -> None:
        """Note when each WABA last spoke: at most once a second per WABA, in a short
        transaction of its own after the batch, so workers never queue on WABA rows."""
        due = {
            waba_id: at
            for waba_id, at in seen.items()
            if at - self._touched.get(waba_id, datetime.min.replace(tzinfo=UTC)) >= TOUCH_RESOLUTION
        }
        if not due:
            return
        w = schema.wabas
        now = self.clock()
        try:
            with self.db.write() as conn:
                unknown = set(due) - self._wabas
                if unknown:
                    present = set(conn.execute(select(w.c.id).where(w.c.id.in_(unknown))).scalars())
                    absent = sorted(unknown - present)
                    if absent:
                        rows = [
                            {"id": waba_id, "updated_at": now, "as_of": {}} for waba_id in absent
                        ]
                        self.db.create_missing(conn, w, rows)
                statement = (
                    update(w)
                    .where(
                        w.c.id == bindparam("wid"),
                        or_(w.c.last_webhook_at.is_(None), w.c.last_webhook_at < bindparam("at")),
                    )
                    .values(last_webhook_at=bindparam("at"))
                )
                conn.execute(
                    statement, [{"wid": waba_id, "at": at} for waba_id, at in sorted(due.items())]
                )
        except StoreConflict:
            return  # another worker is touching the same WABA: its time is as good
        self._wabas.update(due)
        self._touched.update(due)

    def _insert_events(
        self,
        conn: Connection,
        parsed: list[tuple[int, datetime, ParsedBody]],
        result: BatchResult,
    ) -> list[tuple[Event, datetime, int]]:
        rows: dict[str, dict[str, Any]] = {}
        events: dict[str, tuple[Event, datetime]] = {}
        for raw_id, received_at, body in parsed:
            for event in body.events:
                if event.dedupe_key in rows:
                    result.duplicates += 1
                    continue
                occurred = event.occurred_at or received_at
                events[event.dedupe_key] = (event, occurred)
                rows[event.dedupe_key] = {
                    "dedupe_key": event.dedupe_key,
                    "raw_id": raw_id,
                    "source": Source.WEBHOOK.value,
                    "field": event.field_name[:64],
                    "kind": event.kind[:64],
                    "waba_id": event.waba_id,
                    "subject_kind": event.subject_kind.value if event.subject_kind else None,
                    "subject_id": event.subject_id,
                    "occurred_at": occurred,
                    "received_at": received_at,
                    "value": event.value,
                }
        if not rows:
            return []
        wanted = list(rows.values())
        keys = ("id", "dedupe_key")
        inserted = bulk.insert_new(conn, schema.events, wanted, key="dedupe_key", returning=keys)
        order = {key: index for index, key in enumerate(rows)}
        inserted.sort(key=lambda found: order[found[1]])  # the order they came in
        result.events = len(inserted)
        result.duplicates += len(rows) - len(inserted)
        return [(events[key][0], events[key][1], event_id) for event_id, key in inserted]


def _wabas_seen(parsed: list[tuple[int, datetime, ParsedBody]]) -> dict[str, datetime]:
    seen: dict[str, datetime] = {}
    for _, received_at, body in parsed:
        for waba_id in body.wabas:
            if waba_id not in seen or received_at > seen[waba_id]:
                seen[waba_id] = received_at
    return seen


def _quarantine(conn: Connection, broken: list[tuple[int, Broken]], now: datetime) -> None:
    if broken:
        conn.execute(
            schema.quarantine.insert(),
            [
                {
                    "raw_id": raw_id,
                    "path": b.path[:128],
                    "field": (b.field or None) and b.field[:64],
                    "error": b.error[:2000],
                    "created_at": now,
                }
                for raw_id, b in broken
            ],
        )


def _count_fields(
    db: Database, conn: Connection, bodies: list[ParsedBody], now: datetime, shard: int
) -> None:
    totals: dict[str, list[int]] = {}
    for body in bodies:
        for name, n in body.changes.items():
            totals.setdefault(name[:64], [0, 0])[0] += n
        for name, n in body.items.items():
            totals.setdefault(name[:64], [0, 0])[1] += n
    if not totals:
        return
    for name, (changes, _) in totals.items():
        metrics.WEBHOOK_CHANGES.labels(field=name if len(name) <= 40 else "UNKNOWN").inc(changes)
    fc = schema.field_counts
    statement = db.insert(fc)
    statement = statement.on_conflict_do_update(
        index_elements=[fc.c.field, fc.c.shard],
        set_={
            "changes": fc.c.changes + statement.excluded.changes,
            "items": fc.c["items"] + statement.excluded["items"],
            "last_seen_at": statement.excluded.last_seen_at,
        },
    )
    conn.execute(
        statement,
        [
            {
                "field": f,
                "shard": shard,
                "changes": c,
                "items": i,
                "first_seen_at": now,
                "last_seen_at": now,
            }
            for f, (c, i) in sorted(totals.items())
        ],
    )


class Wakeup(Protocol):
    """A threading or multiprocessing event."""

    def set(self) -> None: ...
    def clear(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class BackgroundWorker:
    """Runs a :class:`Processor` on a thread until stopped; woken early by new bodies.

    ``busy`` tells when acknowledgements are waiting (for the CPU or the store): the worker then
    defers its next batch, up to ``max_defer`` seconds. ``arrivals`` tells how many webhooks
    per second are being acknowledged: while that is more than the processor's throughput (a
    burst: the backlog grows whatever processing does), batches shrink to ``burst_batch``
    bodies (``None``: full batches), so that no transaction holds the store long, and the worker
    defers up to ``burst_defer`` seconds instead, so that acknowledgements get the machine and
    stay fast. Processing catches up afterwards (the backlog is durable), or after
    ``BURST_LIMIT`` seconds if the webhooks keep coming that fast (an overload, not a burst).
    A burst starts only from a backlog that processing emptied shortly before (``BURST_FRESH``),
    once webhooks come ``BURST_SURGE`` times as fast as they did then and the backlog holds
    ``burst_backlog`` bodies or more, and a second's worth of arrivals: once processing has
    fallen behind, full batches until it catches up. With a ``burst_batch``, batches outside a
    burst grow to a full batch from that size, anew after every idle moment.
    """

    def __init__(
        self,
        processor: Processor,
        *,
        idle_poll: float = 1.0,
        name: str = "waquality-worker",
        busy: Callable[[], bool] | None = None,
        max_defer: float = 0.25,
        arrivals: Callable[[], float] | None = None,
        burst_batch: int | None = None,
        burst_defer: float | None = None,
        burst_backlog: int = 0,
        wake: Wakeup | None = None,
    ) -> None:
        self.processor = processor
        self.idle_poll = idle_poll
        self.busy = busy
        self.max_defer = max_defer
        self.arrivals = arrivals
        self.burst_batch = burst_batch
        self.burst_defer = max_defer if burst_defer is None else burst_defer
        self._ramp = burst_batch  # the next batch's size outside a burst (see _ramp_after)
        self.burst_backlog = burst_backlog
        self._burst_since = -math.inf  # monotonic time the current burst began
        self._outrun_at = -math.inf  # when webhooks last came faster than processing
        self._caught_up_at = -math.inf  # when a batch last emptied the backlog
        self._kept_up = 0.0  # webhooks per second processing kept up with (see KEPT_UP_MEMORY)
        self._kept_up_at = -math.inf
        self.wake: Wakeup = wake if wake is not None else threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake.set()
        self._thread.join(timeout)

    def _defer(self, seconds: float) -> None:
        if self.busy is None:
            return
        deadline = time.monotonic() + seconds
        while self.busy() and time.monotonic() < deadline and not self._stop.is_set():
            self._stop.wait(DEFER_STEP)

    def in_burst(self, now: float) -> bool:
        """Whether webhooks arrive faster than processing can take them, for at most
        ``BURST_LIMIT`` seconds of a burst; a burst ends after ``BURST_CALM`` seconds in which
        they did not (``now``: monotonic seconds). Until processing has measured its rate (on a
        full batch), acknowledgements queueing up (``busy``) tell a burst: a fresh server that
        has seen only light traffic would otherwise meet its first burst with a full batch,
        holding SQLite's write lock for a quarter of a second."""
        if self.arrivals is None:
            return False
        rate, arrivals = self.processor.rate, self.arrivals()
        outrun = bool(self.busy and self.busy()) if rate is None else arrivals > rate
        if not outrun:
            return False
        if now - self._outrun_at > BURST_CALM:  # not in a burst: does one start?
            if now - self._caught_up_at > BURST_FRESH or arrivals < BURST_SURGE * self._kept_up:
                return False
            backlog = max(self.burst_backlog, math.ceil(arrivals * BURST_BACKLOG_SECONDS))
            if not self.processor.backlog_reaches(backlog):
                return False
            self._burst_since = now
        self._outrun_at = now
        return now - self._burst_since < BURST_LIMIT

    def finished(self, now: float, limit: int | None, bodies: int) -> None:
        """Note a batch of ``bodies`` taken with ``limit`` (``now``: monotonic seconds)."""
        if bodies >= min(limit or self.processor.batch_size, self.processor.batch_size):
            return
        self._caught_up_at = now
        if bodies and self.arrivals is not None:  # it kept up with webhooks coming this fast
            fading = math.exp(min(0.0, self._kept_up_at - now) / KEPT_UP_MEMORY)
            self._kept_up = max(self.arrivals(), self._kept_up * fading)
            self._kept_up_at = now

    def _ramp_after(self, burst: bool, bodies: int) -> None:
        """With small batches in a burst, batches outside one start at ``burst_batch`` bodies
        again once nothing was pending, and double while they come back full: a burst's first
        batch begins before the burst can be told (its webhooks are only just acknowledged),
        and a full batch then would hold SQLite's write lock for a tenth of a second."""
        if self._ramp is None:  # no burst_batch: full batches
            return
        if bodies == 0:
            self._ramp = self.burst_batch
        elif not burst and bodies >= self._ramp:
            self._ramp = min(self._ramp * 2, self.processor.batch_size)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            burst = self.in_burst(time.monotonic())
            self._defer(self.burst_defer if burst else self.max_defer)
            limit = self.burst_batch if burst else self._ramp
            try:
                result = self.processor.run_once(limit)
                backoff = 0.5
            except StoreUnavailable as exc:
                log.warning("store unavailable, processing paused for %.1fs: %s", backoff, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            except Exception:  # never let the worker thread die; the bodies stay pending
                log.exception("processing failed, retrying in %.1fs", backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            self.finished(time.monotonic(), limit, result.bodies)
            self._ramp_after(burst, result.bodies)
            if result.bodies == 0:
                self.wake.wait(self.idle_poll)
                self.wake.clear()
