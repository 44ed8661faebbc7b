"""What a page shows, read from its URL: WABA, number and time range. A link shows the same view.

``range`` is one of :data:`RANGES` (``30d`` unless given); ``from`` and ``to`` (dates or ISO
times, in the dashboard's time zone) make a custom range, ``to`` included. Values that cannot be
read are dropped, never guessed at, and the page says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from waquality.domain.responses import Bucket

RANGES: dict[str, timedelta | None] = {
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
    "1y": timedelta(days=365),
    "all": None,
}
DEFAULT_RANGE = "30d"
CUSTOM = "custom"
_ID = re.compile(r"^[0-9]{1,32}$")
_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class View:
    now: datetime
    zone: str = "UTC"
    waba: str | None = None
    number: str | None = None
    range: str = DEFAULT_RANGE  # a key of RANGES, or CUSTOM
    since: datetime | None = None  # CUSTOM: the first moment shown
    until: datetime | None = None  # CUSTOM: the first moment not shown
    extra: dict[str, str] = field(default_factory=dict)  # a page's own filters
    problems: tuple[str, ...] = ()

    @property
    def start(self) -> datetime | None:
        """The first moment shown; ``None``: all history."""
        if self.range == CUSTOM:
            return self.since
        span = RANGES[self.range]
        return None if span is None else self.now - span

    @property
    def end(self) -> datetime:
        return self.until if self.range == CUSTOM and self.until else self.now

    def start_or(self, earliest: datetime | None) -> datetime:
        """The start, or for all history the earliest moment there is (a day back at least)."""
        if self.start is not None:
            return self.start
        fallback = self.end - timedelta(days=1)
        return min(earliest, fallback) if earliest is not None else fallback

    def params(self, **changes: str | None) -> dict[str, str]:
        """The view's URL parameters, defaults left out, with ``changes`` applied."""
        found: dict[str, str | None] = {"waba": self.waba, "number": self.number}
        if self.range == CUSTOM:
            zone = ZoneInfo(self.zone)
            found["from"] = self.since.astimezone(zone).date().isoformat() if self.since else None
            last = (self.until - timedelta(microseconds=1)) if self.until else None
            found["to"] = last.astimezone(zone).date().isoformat() if last else None
        elif self.range != DEFAULT_RANGE:
            found["range"] = self.range
        found.update(self.extra)
        found.update(changes)
        return {k: v for k, v in found.items() if v}

    def query(self, **changes: str | None) -> str:
        """``?...`` for a link to this view (or ``""``)."""
        params = self.params(**changes)
        return "?" + urlencode(params) if params else ""

    def nav_query(self) -> str:
        """``?...`` carrying the shared filters (WABA, number, range) to another page."""
        shared = {k: v for k, v in self.params().items() if k not in self.extra}
        return "?" + urlencode(shared) if shared else ""

    def bucket(self, start: datetime) -> Bucket:
        """Hours for up to two days, days up to four months, weeks beyond."""
        span = self.end - start
        if span <= timedelta(days=2):
            return Bucket.HOUR
        return Bucket.DAY if span <= timedelta(days=120) else Bucket.WEEK

    def with_extra(self, **values: str | None) -> View:
        return replace(self, extra={**self.extra, **{k: v for k, v in values.items() if v}})


def parse_view(params: Mapping[str, Any], now: datetime, zone: str = "UTC") -> View:
    """The view a page's query parameters ask for."""
    problems: list[str] = []
    waba = _id(params.get("waba"), "WABA", problems)
    number = _id(params.get("number"), "number", problems)
    wanted = str(params.get("range") or DEFAULT_RANGE)
    if wanted not in RANGES:
        problems.append("unknown range: showing the last 30 days")
        wanted = DEFAULT_RANGE
    since = _moment(params.get("from"), zone, problems, end=False)
    until = _moment(params.get("to"), zone, problems, end=True)
    if since is not None or until is not None:
        if since is not None and until is not None and since >= until:
            problems.append("the range ends before it starts: showing the last 30 days")
        else:
            return View(now, zone, waba, number, CUSTOM, since, until, problems=tuple(problems))
    return View(now, zone, waba, number, wanted, problems=tuple(problems))


def page_key(value: Any) -> str | None:
    """A page's own filter value (a status, a sender kind): short and plain, else nothing."""
    text = str(value or "").strip()
    return text if _KEY.match(text) else None


def _id(value: Any, name: str, problems: list[str]) -> str | None:
    text = str(value or "").strip().lstrip("+")
    if not text:
        return None
    if not _ID.match(text):
        problems.append(f"ignored a {name} that is not a numeric id")
        return None
    return text


def _moment(value: Any, zone: str, problems: list[str], *, end: bool) -> datetime | None:
    """A date (its whole day: ``to`` runs to the end of it) or an ISO time, in ``zone``."""
    text = str(value or "").strip()
    if not text:
        return None
    tz = ZoneInfo(zone)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day + timedelta(days=1) if end else day, time(0), tz)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            moment = moment.replace(tzinfo=tz) if moment.tzinfo is None else moment
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        problems.append(f"ignored a time that cannot be read: {text[:40]!r}")
        return None
