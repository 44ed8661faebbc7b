"""How fast a business answers: conversations and response times of one (business number,
customer) pair, from its messages. Pure: no database, no clock (``now`` is passed in).

- A conversation ends after ``gap`` without a message (default 24 h, the customer-service
  window); it was started by whoever wrote first.
- A *run* is a customer message and those that follow it before a reply; the reply answers the
  whole run, its response time is from the run's first message to the reply.
- The *first response* of a conversation is the reply to its first run: from the customer's
  first message to the business's first reply (in a conversation the business started, that is
  once the customer has written).
- A failed message is no reply; replies may be counted for some senders only (``counts``), and
  the clock may run only inside business hours (``hours``).
- A run still waiting when its conversation ended is *unanswered*; a conversation whose customer
  wrote and was never answered is an unanswered conversation (the worst case, not missing data).
  Runs of a conversation still open are *waiting*, neither answered nor unanswered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from waquality.domain.enums import SenderKind


@dataclass(frozen=True, slots=True)
class Message:
    at: datetime  # a reply's time: its ``sent`` status time, else the logged time
    inbound: bool  # from the customer
    sender: SenderKind = SenderKind.UNKNOWN
    failed: bool = False


@dataclass(frozen=True, slots=True)
class Response:
    asked_at: datetime  # the run's first customer message: the response's time bucket
    answered_at: datetime
    seconds: float
    sender: SenderKind
    first: bool  # the conversation's first response


@dataclass(slots=True)
class Conversation:
    started_at: datetime
    last_at: datetime
    by_customer: bool
    customer_wrote: bool = False
    answered: bool = False
    unanswered_runs: int = 0  # runs left without a reply (once the conversation ended)
    ended: bool = False  # ``gap`` has passed since its last message
    waiting_since: datetime | None = None  # open: the run waiting for a reply
    messages: int = 0  # its messages (failed ones are not part of it)


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """Weekly opening hours in a time zone; the response clock runs only inside them."""

    zone: str = "UTC"
    opens: time = time(9)
    closes: time = time(17)
    days: frozenset[int] = frozenset(range(5))  # Monday = 0

    def seconds_between(self, start: datetime, end: datetime) -> float:
        """Open seconds between two moments."""
        if end <= start:
            return 0.0
        tz = ZoneInfo(self.zone)
        local_start, local_end = start.astimezone(tz), end.astimezone(tz)
        total = 0.0
        day = local_start.date()
        while day <= local_end.date():
            if day.weekday() in self.days:
                opened = datetime.combine(day, self.opens, tz)
                closed = datetime.combine(day, self.closes, tz)
                overlap = min(closed, local_end) - max(opened, local_start)
                total += max(overlap.total_seconds(), 0.0)
            day += timedelta(days=1)
        return total


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(
    r"^\s*(?P<days>[a-z,\-]+)\s+(?P<opens>\d{1,2}:\d{2})-(?P<closes>\d{1,2}:\d{2})\s*$"
)


def parse_business_hours(text: str, zone: str = "UTC") -> BusinessHours:
    """``mon-fri 09:00-17:00``, ``mon,wed,fri 08:30-12:00``, ``sat-sun 10:00-14:00``: days
    (ranges wrap around the week) and the opening hours of each, local time of ``zone``."""
    match = _HOURS.match(text.lower())
    if match is None:
        raise ValueError("expected days and hours such as mon-fri 09:00-17:00")
    days: set[int] = set()
    for part in match["days"].split(","):
        first, _, last = part.partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise ValueError(f"unknown day in {part!r}: use {', '.join(_DAYS)}")
        start, end = _DAYS.index(first), _DAYS.index(last or first)
        days.update((start + i) % 7 for i in range((end - start) % 7 + 1))
    try:
        opens = time.fromisoformat(match["opens"].zfill(5))
        closes = time.fromisoformat(match["closes"].zfill(5))
    except ValueError:
        raise ValueError("hours must be HH:MM between 00:00 and 23:59") from None
    if closes <= opens:
        raise ValueError("closing time must come after opening time")
    return BusinessHours(zone, opens, closes, frozenset(days))


@dataclass(slots=True)
class Outcome:
    responses: list[Response] = field(default_factory=list)
    conversations: list[Conversation] = field(default_factory=list)

    @property
    def unanswered(self) -> int:
        """Conversations, ended, in which the customer wrote and nobody answered."""
        return sum(1 for c in self.conversations if c.ended and c.customer_wrote and not c.answered)

    @property
    def unanswered_runs(self) -> int:
        """Runs left without a reply inside answered conversations."""
        return sum(c.unanswered_runs for c in self.conversations)


def every_sender(_: SenderKind) -> bool:
    return True


def track(
    messages: Iterable[Message],
    now: datetime,
    *,
    gap: timedelta = timedelta(hours=24),
    counts: Callable[[SenderKind], bool] = every_sender,
    hours: BusinessHours | None = None,
) -> Outcome:
    """Conversations and responses of one pair's messages (any order)."""
    outcome = Outcome()
    current: Conversation | None = None
    run_start: datetime | None = None
    # customer messages first at equal times: a reply stamped the same second answers them
    for message in sorted(messages, key=lambda m: (m.at, not m.inbound)):
        if message.failed:
            continue
        if current is None or message.at - current.last_at > gap:
            if current is not None:
                _end(current, run_start)
            current = Conversation(message.at, message.at, message.inbound)
            outcome.conversations.append(current)
            run_start = None
        current.last_at = message.at
        current.messages += 1
        if message.inbound:
            current.customer_wrote = True
            run_start = run_start or message.at
            continue
        if run_start is None or not counts(message.sender):
            continue
        seconds = (
            hours.seconds_between(run_start, message.at)
            if hours is not None
            else (message.at - run_start).total_seconds()
        )
        outcome.responses.append(
            Response(run_start, message.at, seconds, message.sender, not current.answered)
        )
        current.answered, run_start = True, None
    if current is not None:
        if now - current.last_at > gap:
            _end(current, run_start)
        else:
            current.waiting_since = run_start
    return outcome


def _end(conversation: Conversation, run_start: datetime | None) -> None:
    """A conversation is over: a run still waiting is left unanswered."""
    conversation.ended = True
    if run_start is not None and conversation.answered:
        conversation.unanswered_runs += 1


class Bucket(StrEnum):
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"  # weeks start on Monday


def bucket_start(moment: datetime, bucket: Bucket, zone: str = "UTC") -> datetime:
    """The start (aware, in ``zone``) of the bucket holding ``moment``; a response belongs to
    the bucket of the customer message it answers."""
    local = moment.astimezone(ZoneInfo(zone))
    if bucket is Bucket.HOUR:
        return local.replace(minute=0, second=0, microsecond=0)
    midnight = datetime.combine(local.date(), time(0), local.tzinfo)
    if bucket is Bucket.WEEK:
        midnight -= timedelta(days=local.weekday())
    # a wall-clock midnight: re-attach the zone so its offset is the one of that day
    return midnight.replace(tzinfo=None).replace(tzinfo=ZoneInfo(zone))


def duration_label(duration: timedelta) -> str:
    """``90s``, ``5m``, ``1h``, ``2d``: the largest whole unit."""
    seconds = int(duration.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class BucketOf:
    """The bucket of the zone's hour starts (the stored hours), remembered: a report meets
    each day or week once per hour of it. ``BucketOf(Bucket.DAY, zone)(hour)``."""

    def __init__(self, bucket: Bucket, zone: str = "UTC") -> None:
        self.bucket, self.zone = bucket, zone
        self._start = self._end = datetime.max.replace(tzinfo=UTC)

    def __call__(self, hour: datetime) -> datetime:
        if self.bucket is Bucket.HOUR:
            return hour
        if not self._start <= hour < self._end:  # hours come in order: mostly the same bucket
            self._start = bucket_start(hour, self.bucket, self.zone)
            after = timedelta(hours=26) if self.bucket is Bucket.DAY else timedelta(days=7, hours=2)
            self._end = bucket_start(self._start + after, self.bucket, self.zone)
        return self._start
