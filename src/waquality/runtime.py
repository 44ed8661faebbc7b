"""A running instance: database, group committer, processing workers and housekeeping.

``serve`` and the end-to-end tests build the same :class:`Runtime`, so what is tested is what
runs.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from waquality.api.app import Application, create_api
from waquality.api.auth import ensure_api_token
from waquality.config import Settings
from waquality.errors import StoreUnavailable
from waquality.ingest import rejections
from waquality.ingest.committer import GroupCommitter
from waquality.ingest.receiver import WebhookReceiver
from waquality.ingest.rejections import Rejections
from waquality.process.child import ProcessingChild, spawn_context
from waquality.process.worker import Clock, utcnow
from waquality.store import inbox, migrate, tracker
from waquality.store.database import Database, WriteGate
from waquality.store.retention import prune_customer_data

log = logging.getLogger(__name__)
HOUSEKEEPING_INTERVAL = 3600.0
REJECTIONS_KEPT = timedelta(days=30)
ACK_MARGIN = 1.0  # seconds beyond the write timeout before a hanging commit is answered 503
# Seconds between two WAL checkpoints on SQLite. A checkpoint ends by flushing the database
# file to disk, and acknowledgements that commit meanwhile wait behind that flush: in a burst,
# checkpoints every 2 s took 64-256 ms and held acknowledgements up to 46 ms; every 0.5 s they
# take 10-45 ms.
CHECKPOINT_INTERVAL = 0.5
LOOP_PROBE = 0.005  # seconds between event-loop lag probes
LOOP_LAG_BUSY = 0.002  # a loop this late has requests waiting for the CPU
CROWD_HOLD = 0.05  # processing waits this long after acknowledgements last queued up
SWITCH_INTERVAL = 0.0005


class Runtime:
    def __init__(self, settings: Settings, *, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.clock = clock
        # SQLite's writers (this process and the processing child) share one gate.
        url = settings.database_url.get_secret_value()
        self.gate = WriteGate(spawn_context()) if url.startswith("sqlite") else None
        # On SQLite, only housekeeping checkpoints the WAL (every CHECKPOINT_INTERVAL, on a
        # connection of its own, outside the gate): a commit that checkpointed would hold the
        # gate, and every acknowledgement behind it, for as long as the checkpoint takes.
        self.db = Database(
            url,
            write_timeout=settings.write_timeout.total_seconds(),
            gate=self.gate,
            checkpoints=False,
        )
        self.committer: GroupCommitter | None = None
        self.loop_lag = 0.0
        self.processing: ProcessingChild | None = None
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self.rejections = Rejections()

    def prepare(self) -> str | None:
        """Apply migrations and make sure an API token exists; returns a newly made token."""
        migrate.upgrade(self.db)
        self.auth, generated = ensure_api_token(self.db, self.settings)
        return generated

    def application(self) -> Application:
        verify_token = self.settings.verify_token
        receiver = WebhookReceiver(
            self.settings.app_secrets,
            verify_token.get_secret_value().encode() if verify_token else None,
            self._store,
            authorized=self.auth.check,
            on_refused=lambda reason: self.rejections.add(reason, self.clock()),
        )
        api = create_api(
            self.db,
            self.auth,
            self._lifespan,
            tracker.configured(self.db, self.settings),
            self.settings,
        )
        return Application(receiver, api, self.auth)

    async def _watch_loop(self) -> None:
        """Tell the processing child when acknowledgements need the machine: the event loop
        runs its callbacks late (short of CPU) or requests queue up for the disk."""
        while True:
            start = time.monotonic()
            await asyncio.sleep(LOOP_PROBE)
            now = time.monotonic()
            self.loop_lag = now - start - LOOP_PROBE
            committer = self.committer
            if self.processing is not None and committer is not None:
                self.processing.set_load(
                    busy=now - committer.last_crowd_at < CROWD_HOLD
                    or self.loop_lag > LOOP_LAG_BUSY,
                    arrivals=committer.rate(now),
                )

    async def _store(self, body: bytes, quiet: bool) -> None:
        if self.committer is None:
            raise StoreUnavailable("not started")
        await self.committer.store(body, quiet)

    def _write_bodies(self, bodies: Sequence[inbox.Body]) -> None:
        with self.db.write(priority=True) as conn:
            inbox.insert_bodies(conn, bodies)

    def _wake_workers(self) -> None:
        if self.processing is not None:
            self.processing.wake.set()

    def start(self) -> None:
        # The request loop shares the interpreter with the committer and housekeeping threads:
        # hand the lock over every 0.5 ms instead of 5 ms, so acknowledgements never queue long.
        sys.setswitchinterval(SWITCH_INTERVAL)
        # The child also polls the Graph API and delivers alerts, even without processing workers.
        self.processing = ProcessingChild(self.settings, self.gate)
        self.processing.start()
        self.committer = GroupCommitter(
            self._write_bodies,
            on_commit=self._wake_workers,
            wait_limit=self.settings.write_timeout.total_seconds() + ACK_MARGIN,
        )
        self._housekeeper = threading.Thread(
            target=self._housekeeping, daemon=True, name="waquality-housekeeping"
        )
        self._housekeeper.start()

    def stop(self) -> None:
        if self.committer is not None:
            self.committer.close()
        self._stop.set()
        if self.processing is not None:
            self.processing.stop()
        if self._housekeeper is not None:
            self._housekeeper.join(10)
        try:
            self.rejections.flush(self.db)
        except StoreUnavailable as exc:
            log.warning("refused webhooks not counted: %s", exc)
        self.db.dispose()

    @asynccontextmanager
    async def _lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        self.start()
        watcher = asyncio.create_task(self._watch_loop())
        try:
            yield
        finally:
            watcher.cancel()
            self.stop()

    def _housekeeping(self) -> None:
        """Hourly retention; every few seconds, an SQLite WAL checkpoint and the refused
        webhooks' tally."""
        next_prune = 0.0
        while not self._stop.wait(CHECKPOINT_INTERVAL if next_prune else 0):
            try:
                self.db.checkpoint()
                self.rejections.flush(self.db)
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + HOUSEKEEPING_INTERVAL
                    now = self.clock()
                    pruned = prune_customer_data(
                        self.db, now, self.settings.customer_data_retention
                    )
                    if pruned.total:
                        log.info("retention: %s deleted or redacted", pruned)
                    rejections.prune(self.db, now - REJECTIONS_KEPT)
            except StoreUnavailable as exc:
                log.warning("housekeeping skipped: %s", exc)
