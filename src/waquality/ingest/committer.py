"""Group commit: many acknowledgements share one durable transaction.

Requests hand their body to :meth:`GroupCommitter.store` and wait. One writer thread takes
everything that arrived since its last commit, writes it in one transaction and wakes all those
requests at once. It never waits on a timer: it commits as soon as it is idle, so a lone request
is as fast as one commit and a crowd shares the fsync. When a commit fails, the requests
that queued up during the attempt fail with it: all get 503 within one write timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from waquality.errors import StoreUnavailable
from waquality.store.inbox import Body

log = logging.getLogger(__name__)

# A batch this large means requests are queueing for the disk: acknowledgements are the
# bottleneck, and background work should wait (see Runtime).
CROWD = 16
RATE_WINDOW = 1.0  # seconds over which the rate of acknowledgements is averaged

WriteBatch = Callable[[Sequence[Body]], None]
_Pending = tuple[bytes, float, bool, asyncio.Future[None], asyncio.AbstractEventLoop]


class GroupCommitter:
    def __init__(
        self,
        write_batch: WriteBatch,
        *,
        max_batch: int = 2000,
        on_commit: Callable[[], None] | None = None,
        wait_limit: float | None = None,
    ) -> None:
        """``wait_limit``: seconds after which a request stops waiting and fails with
        :class:`StoreUnavailable` even if its commit has not failed (a database that hangs);
        the commit goes on, and a body stored but refused is redelivered and deduplicated."""
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._wait_limit = wait_limit
        self._pending: list[_Pending] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.last_crowd_at = 0.0  # monotonic time of the last batch of CROWD bodies or more
        self._rate = (0.0, 0.0)  # (bodies/s, monotonic time it was computed)
        self._thread = threading.Thread(target=self._run, name="waquality-committer", daemon=True)
        self._thread.start()

    async def store(self, body: bytes, quiet: bool = False) -> None:
        """Return once ``body`` is durably committed; raise :class:`StoreUnavailable` if not."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._closed:
                raise StoreUnavailable("shutting down")
            self._pending.append((body, time.time(), quiet, future, loop))
        self._wake.set()
        if self._wait_limit is None:
            await future
            return
        timer = loop.call_later(self._wait_limit, _give_up, future)
        try:
            await future
        finally:
            timer.cancel()

    def rate(self, now: float) -> float:
        """Bodies committed per second, averaged exponentially over ``RATE_WINDOW``."""
        value, at = self._rate
        return value * math.exp((at - now) / RATE_WINDOW)

    def _committed(self, bodies: int) -> None:
        now = time.monotonic()
        self._rate = (self.rate(now) + bodies / RATE_WINDOW, now)

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, commit what is queued, stop the thread."""
        with self._lock:
            self._closed = True
        self._wake.set()
        self._thread.join(timeout)

    def _take(self) -> list[_Pending]:
        with self._lock:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            if not self._pending and not self._closed:  # close() must still wake us
                self._wake.clear()
            return batch

    def _take_all(self) -> list[_Pending]:
        with self._lock:
            batch, self._pending = self._pending, []
            return batch

    def _run(self) -> None:
        while True:
            self._wake.wait()
            batch = self._take()
            if not batch:
                with self._lock:
                    if self._closed and not self._pending:
                        return
                continue
            if len(batch) >= CROWD:
                self.last_crowd_at = time.monotonic()
            error: BaseException | None = None
            try:
                self._write_batch(
                    [
                        Body(body, datetime.fromtimestamp(at, UTC), quiet)
                        for body, at, quiet, _, _ in batch
                    ]
                )
            except StoreUnavailable as exc:
                error = exc
            except Exception as exc:  # never let a failure leave requests hanging
                log.exception("webhook commit failed")
                error = StoreUnavailable(f"{type(exc).__name__}")
            if error is not None:
                # Whoever queued up meanwhile has waited already; a fresh attempt could make
                # them wait a whole write timeout more. The store cannot commit: say so now.
                batch += self._take_all()
            if error is None:  # counted before anyone is told: a waiter reads the rate at once
                self._committed(len(batch))
            _resolve(batch, error)
            if error is None and self._on_commit is not None:
                self._on_commit()


def _resolve(batch: list[_Pending], error: BaseException | None) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for *_, future, loop in batch:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, futures, error)


def _give_up(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(StoreUnavailable("the store did not commit in time"))


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
