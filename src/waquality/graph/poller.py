"""Poll the Business Management API: every watched WABA on a jittered interval, plus the
targeted re-reads that phone-number and template webhooks ask for.

Poll results go into the same state and history as webhooks (source ``poll``): only real
changes make history rows; every listed object gets its "last confirmed" time. A poll that fails
is "no data", never "all clear": the WABA's row says what failed and when it last succeeded.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select

from waquality.alerting import rules
from waquality.alerting.book import Alerting, Timed
from waquality.config import Settings
from waquality.domain.enums import PollState, Source, SubjectKind, WatchOrigin
from waquality.domain.events import PhoneJoin
from waquality.domain.values import as_id
from waquality.errors import GraphError, StoreUnavailable
from waquality.graph import snapshot
from waquality.graph.budget import WINDOW, CallBudget
from waquality.graph.client import Call, ErrorKind, GraphClient, Reply
from waquality.process.interpret import StateChange
from waquality.store import schema, watch
from waquality.store.database import Database
from waquality.store.state import StateWriter, TimedChange, join_phone
from waquality.store.watch import Reread, Watched

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
BUSY_USAGE = 75  # Meta's usage (percent) above which a WABA is polled half as often
STOP_USAGE = 90  # ... above which it is left alone until Meta says access is back
FIRST_BACKOFF = timedelta(seconds=30)
CALL_RETENTION = timedelta(days=2)
PRUNE_INTERVAL = timedelta(hours=1)
DISCOVERY_INTERVAL = timedelta(hours=1)  # portfolios are re-read for WABAs added or removed
# A poll or re-read taken by one poller: others on the same database leave it alone this long.
LEASE = timedelta(minutes=5)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class WabaReport:
    waba_id: str
    state: PollState = PollState.OK
    phones: int = 0
    templates: int = 0
    history: int = 0  # history rows the poll wrote (real changes)
    calls: int = 0
    usage_percent: int = 0
    error: str | None = None


@dataclass(slots=True)
class _Read:
    joins: list[PhoneJoin] = field(default_factory=list)
    changes: list[StateChange] = field(default_factory=list)
    phones: int = 0
    templates: int = 0
    usage: int = 0
    regain: float | None = None

    def note(self, reply: Reply) -> Reply:
        self.usage = max(self.usage, reply.usage.percent)
        if reply.usage.regain_seconds:
            self.regain = max(self.regain or 0.0, reply.usage.regain_seconds)
        return reply


class Poller:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        client: GraphClient | None = None,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        alerting: Alerting | None = None,
    ) -> None:
        self.db, self.settings, self.clock = db, settings, clock
        self.alerting = alerting or Alerting()
        self.rng = rng or random.Random()
        self.budget = CallBudget(settings.graph_calls_per_hour)
        self._calls: list[Call] = []
        self._next_prune: datetime | None = None
        self._next_discovery: datetime | None = None
        self._started = False
        self.client = client or GraphClient(
            settings.graph_url,
            settings.graph_version,
            timeout=settings.graph_timeout.total_seconds(),
        )
        self.client.budget, self.client.on_call = self.budget, self._calls.append
        self.client.clock = clock

    def close(self) -> None:
        self.client.close()

    # -- set-up -------------------------------------------------------------------------------

    def start(self) -> list[str]:
        """Register the configured WABAs (and discover the portfolios' ones); remember the calls
        of the last hour. Returns the problems met (a portfolio that could not be read)."""
        now = self.clock()
        problems = self._register(now, retry_auth=True)
        for waba_id, times in watch.calls_since(self.db, now - WINDOW).items():
            self.budget.preload(waba_id, times)
        return problems

    def _register(self, now: datetime, *, retry_auth: bool) -> list[str]:
        problems: list[str] = []
        configured: dict[str, WatchOrigin | tuple[WatchOrigin, str]] = dict.fromkeys(
            self.settings.waba_ids, WatchOrigin.SETTINGS
        )
        for business_id in self.settings.business_ids:
            try:
                for waba_id in self.discover(business_id):
                    configured.setdefault(waba_id, (WatchOrigin.BUSINESS, business_id))
            except GraphError as exc:
                problems.append(f"business {business_id}: {exc.message}")
                # keep what was discovered before rather than forget it
                for known in watch.watched(self.db):
                    if known.business_id == business_id:
                        configured.setdefault(known.waba_id, (WatchOrigin.BUSINESS, business_id))
        watch.sync_configured(self.db, configured, now, retry_auth=retry_auth)
        self._flush_calls()
        self._next_discovery = now + DISCOVERY_INTERVAL
        return problems

    def discover(self, business_id: str) -> list[str]:
        """The WABAs a business portfolio owns and those of its clients."""
        token = self.settings.token_for(business_id)
        if token is None:
            raise GraphError(ErrorKind.AUTH, "no access token configured")
        found: list[str] = []
        for edge in ("owned_whatsapp_business_accounts", "client_whatsapp_business_accounts"):
            for reply in self.client.pages(
                f"{business_id}/{edge}", token, params={"fields": "id", "limit": "100"}
            ):
                items = reply.data.get("data")
                for item in items if isinstance(items, list) else []:
                    waba_id = as_id(item.get("id")) if isinstance(item, dict) else None
                    if waba_id and waba_id not in found:
                        found.append(waba_id)
        return found

    # -- a round ------------------------------------------------------------------------------

    def step(self) -> None:
        """What a polling thread does each second: start once (retried until it works), then
        :meth:`tick`."""
        if not self._started:
            for problem in self.start():
                log.warning("polling: %s", problem)
            self._started = True
        self.tick()

    def tick(self) -> list[WabaReport]:
        """What is due now: re-reads asked by webhooks, then WABAs whose time has come."""
        now = self.clock()
        if self.settings.business_ids and (
            self._next_discovery is None or now >= self._next_discovery
        ):
            for problem in self._register(now, retry_auth=False):
                log.warning("polling: %s", problem)
        reports = [
            self.poll(w)
            for w in watch.watched(self.db)
            if self._due(w, now) and watch.claim_poll(self.db, w, now + LEASE)
        ]
        self.reread(now)
        if self._next_prune is None or now >= self._next_prune:
            watch.prune_calls(self.db, now - CALL_RETENTION)
            self._next_prune = now + PRUNE_INTERVAL
        return reports

    def _due(self, w: Watched, now: datetime) -> bool:
        if w.poll_state is PollState.AUTH_FAILED:
            return False
        return w.next_poll_at is None or w.next_poll_at <= now

    def poll(self, w: Watched) -> WabaReport:
        """Read one WABA completely and apply what was read; record how it went."""
        now = self.clock()
        report = WabaReport(w.waba_id)
        read = _Read()
        token = w.access_token or self.settings.token_for(w.waba_id)
        calls_before = len(self._calls)
        try:
            if token is None:
                raise GraphError(ErrorKind.AUTH, "no access token configured")
            self._read_waba(w.waba_id, token, read, now)
        except GraphError as exc:
            report.state, report.error = self._failure(exc), exc.message
            next_at = self._retry_at(w, exc, now)
        else:
            next_at = now + self._interval(read.usage)
            if read.usage >= STOP_USAGE:
                next_at = max(next_at, now + timedelta(seconds=read.regain or 600))
        report.calls = len(self._calls) - calls_before
        report.phones, report.templates, report.usage_percent = (
            read.phones,
            read.templates,
            read.usage,
        )
        report.history = self._apply(read, now)
        self._flush_calls()
        watch.record_poll(
            self.db,
            w.waba_id,
            state=report.state,
            now=now,
            next_poll_at=next_at,
            error=report.error,
            usage_percent=read.usage,
        )
        if report.error:
            log.warning("polling WABA %s: %s (%s)", w.waba_id, report.error, report.state.value)
        if not (report.state is PollState.OK and w.poll_state is PollState.OK):
            # only a change of polling state can fire or resolve its alert
            failures = 0 if report.state is PollState.OK else w.failures + 1
            signals = rules.polling(w.waba_id, report.state.value, failures, report.error)
            self.alerting.signal(self.db, [Timed(s, now) for s in signals], now)
        return report

    def _read_waba(self, waba_id: str, token: str, read: _Read, now: datetime) -> None:
        phones = {"fields": snapshot.PHONE_FIELDS, "limit": snapshot.PAGE_SIZE}
        for reply in self.client.pages(
            f"{waba_id}/phone_numbers", token, params=phones, waba_id=waba_id
        ):
            self._phones(read.note(reply).data.get("data"), waba_id, read, now)
        templates = {"fields": snapshot.TEMPLATE_FIELDS, "limit": snapshot.PAGE_SIZE}
        for reply in self.client.pages(
            f"{waba_id}/message_templates", token, params=templates, waba_id=waba_id
        ):
            self._templates(read.note(reply).data.get("data"), waba_id, read, now)
        reply = read.note(self.client.get(f"{waba_id}/subscribed_apps", token, waba_id=waba_id))
        read.changes += snapshot.subscription(reply.data, waba_id, now)

    def _phones(self, items: Any, waba_id: str, read: _Read, now: datetime) -> None:
        for item in items if isinstance(items, list) else []:
            mapped = snapshot.phone(item, waba_id, now)
            if mapped is None:
                continue
            join, changes = mapped
            read.joins += [join] if join else []
            read.changes += changes
            read.phones += 1

    def _templates(self, items: Any, waba_id: str, read: _Read, now: datetime) -> None:
        for item in items if isinstance(items, list) else []:
            changes = snapshot.template(item, waba_id, now)
            if changes is not None:
                read.changes += changes
                read.templates += 1

    def _apply(self, read: _Read, now: datetime) -> int:
        if not read.changes and not read.joins:
            return 0
        with self.db.write() as conn:
            for join in read.joins:
                join_phone(self.db, conn, join, now)
            writer = StateWriter(self.db, conn, now, Source.POLL.value, keep_confirmations=False)
            history = writer.apply([TimedChange(change, now, None) for change in read.changes])
            queued = self.alerting.apply(self.db, conn, writer.changed, now)
        if queued:
            self.alerting.queued()
        return history

    def _interval(self, usage: int) -> timedelta:
        interval = self.settings.poll_interval * self.rng.uniform(0.9, 1.1)
        return interval * 2 if usage >= BUSY_USAGE else interval

    def _failure(self, exc: GraphError) -> PollState:
        if exc.kind == ErrorKind.AUTH:
            return PollState.AUTH_FAILED
        if exc.kind in (ErrorKind.RATE_LIMIT, ErrorKind.BUDGET):
            return PollState.RATE_LIMITED
        return PollState.FAILING

    def _retry_at(self, w: Watched, exc: GraphError, now: datetime) -> datetime | None:
        if exc.kind == ErrorKind.AUTH:
            return None  # stopped until the token changes
        backoff: timedelta = min(
            FIRST_BACKOFF * (2 ** min(w.failures, 10)), self.settings.poll_interval
        )
        if exc.kind in (ErrorKind.RATE_LIMIT, ErrorKind.BUDGET):
            backoff = max(backoff, timedelta(seconds=exc.retry_after or 0))
            if exc.kind == ErrorKind.RATE_LIMIT and exc.retry_after is None:
                backoff = max(backoff, timedelta(minutes=5) * (2 ** min(w.failures, 3)))
        retry: datetime = now + backoff * self.rng.uniform(1.0, 1.25)
        return retry

    def _flush_calls(self) -> None:
        calls, self._calls[:] = list(self._calls), []
        try:
            watch.record_calls(self.db, calls)
        except StoreUnavailable as exc:
            log.warning("graph calls not recorded: %s", exc)

    # -- re-reads -----------------------------------------------------------------------------

    def reread(self, now: datetime) -> int:
        """Re-read the objects webhooks asked about; a burst of webhooks made one request."""
        due = watch.due_rereads(self.db, now, LEASE)
        if not due:
            return 0
        wabas = {w.waba_id: w for w in watch.watched(self.db)}
        done: list[Reread] = []
        for request in due:
            w = wabas.get(request.waba_id or "")
            if w is None or self._due(w, now):
                done.append(request)  # not watched, or a full poll is about to read it anyway
                continue
            if w.poll_state in (PollState.RATE_LIMITED, PollState.AUTH_FAILED):
                continue  # later, when the WABA may be called again
            token = w.access_token or self.settings.token_for(w.waba_id)
            read = _Read()
            try:
                if token is not None:
                    self._reread_one(request, w.waba_id, token, read, now)
            except GraphError as exc:
                log.info(
                    "re-reading %s %s: %s",
                    request.subject_kind.value,
                    request.subject_id,
                    exc.message,
                )
                if exc.kind in (ErrorKind.RATE_LIMIT, ErrorKind.BUDGET, ErrorKind.TRANSIENT):
                    continue
            self._apply(read, now)
            done.append(request)
        self._flush_calls()
        watch.forget_rereads(self.db, done)
        return len(done)

    def _reread_one(
        self, request: Reread, waba_id: str, token: str, read: _Read, now: datetime
    ) -> None:
        if request.subject_kind is SubjectKind.TEMPLATE:
            reply = self.client.get(
                request.subject_id,
                token,
                params={"fields": snapshot.TEMPLATE_FIELDS},
                waba_id=waba_id,
            )
            self._templates([reply.data], waba_id, read, now)
            return
        phone_id = self._phone_id(request.subject_id)
        if phone_id is None:  # only the display number is known: the list has both
            params = {"fields": snapshot.PHONE_FIELDS, "limit": snapshot.PAGE_SIZE}
            for reply in self.client.pages(
                f"{waba_id}/phone_numbers", token, params=params, waba_id=waba_id
            ):
                self._phones(reply.data.get("data"), waba_id, read, now)
            return
        reply = self.client.get(
            phone_id, token, params={"fields": snapshot.PHONE_FIELDS}, waba_id=waba_id
        )
        self._phones([reply.data], waba_id, read, now)

    def _phone_id(self, key: str) -> str | None:
        t = schema.phone_numbers
        query = select(t.c.phone_number_id).where(
            or_(t.c.phone_number_id == key, t.c.display_phone_number == key)
        )
        with self.db.read() as conn:
            return conn.execute(query).scalar()
