"""The Flagged countdown: when a FLAGGED number is due back to CONNECTED. Pure.

A number becomes FLAGGED when its quality rating reaches Low (older accounts and webhook
versions). If its quality improves to Medium or High and stays there for 7 days, it returns to
CONNECTED; otherwise it returns anyway, one messaging-limit tier lower. The 7 days count from the
later of the flagging and the moment quality last rose out of Low; Low again starts them over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from waquality.alerting.rules import FLAGGED_WINDOW

GOOD = frozenset({"GREEN", "YELLOW"})  # High and Medium


@dataclass(frozen=True, slots=True)
class Countdown:
    flagged_at: datetime
    streak_since: datetime | None  # quality Medium or High since then; None: not (yet)
    due_at: datetime | None  # back to CONNECTED around then, if quality holds
    remaining: timedelta | None

    @property
    def running(self) -> bool:
        return self.streak_since is not None


def countdown(
    flagged_at: datetime,
    quality_before: str | None,
    quality_changes: Sequence[tuple[datetime, str | None]],
    now: datetime,
    window: timedelta = FLAGGED_WINDOW,
) -> Countdown:
    """``quality_before``: the rating when it was flagged (as known); ``quality_changes``: the
    rating's changes since then, (time, new value)."""
    run_start = flagged_at if quality_before in GOOD else None
    for at, value in sorted(quality_changes, key=lambda change: change[0]):
        # Medium or High starts a run (unless one runs already); Low ends it
        run_start = (run_start or max(at, flagged_at)) if value in GOOD else None
    if run_start is None:
        return Countdown(flagged_at, None, None, None)
    due = run_start + window
    return Countdown(flagged_at, run_start, due, max(due - now, timedelta(0)))
