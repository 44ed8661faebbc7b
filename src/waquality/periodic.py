"""A background thread that runs one step again and again: every ``interval`` seconds, or at
once when woken. A failing step is logged and tried again at the next turn."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from waquality.errors import StoreUnavailable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(
        self,
        step: Callable[[], object],
        *,
        interval: float,
        name: str,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.step, self.interval, self.on_stop = step, interval, on_stop
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake.set()
        self._thread.join(timeout)
        if self.on_stop is not None:
            self.on_stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except StoreUnavailable as exc:
                log.warning("%s paused: %s", self._thread.name, exc)
            except Exception:  # never let the thread die: the next turn tries again
                log.exception("%s failed", self._thread.name)
            self.wake.wait(self.interval)
            self.wake.clear()
