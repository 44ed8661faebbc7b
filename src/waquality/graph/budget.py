"""Our own Graph API call budget: at most N calls per WABA per rolling hour.

Meta allows 200 calls per app per WABA per hour; staying under a lower figure of our own
(``WAQUALITY_GRAPH_CALLS_PER_HOUR``) leaves room for the business's other tools.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta

from waquality.errors import GraphError

WINDOW = timedelta(hours=1)


class CallBudget:
    def __init__(self, per_hour: int) -> None:
        self.per_hour = per_hour
        self._calls: dict[str, deque[datetime]] = {}

    def preload(self, waba_id: str, times: Iterable[datetime]) -> None:
        """Calls made before a restart still count."""
        self._calls[waba_id] = deque(sorted(times))

    def _window(self, waba_id: str, now: datetime) -> deque[datetime]:
        calls = self._calls.setdefault(waba_id, deque())
        while calls and calls[0] <= now - WINDOW:
            calls.popleft()
        return calls

    def remaining(self, waba_id: str, now: datetime) -> int:
        return max(0, self.per_hour - len(self._window(waba_id, now)))

    def take(self, waba_id: str, now: datetime) -> None:
        """Count one call, or raise ``GraphError(kind="budget")`` when none is left."""
        calls = self._window(waba_id, now)
        if len(calls) >= self.per_hour:
            wait = (calls[0] + WINDOW - now).total_seconds()
            raise GraphError(
                "budget",
                f"call budget of {self.per_hour}/hour used up",
                retry_after=max(1.0, wait),
            )
        calls.append(now)
