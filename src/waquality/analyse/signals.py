"""Signals from the tracker's hourly figures: is a metric above or below a threshold over a
window, for long enough, or well above (or below) its recent baseline? Pure: hourly figures and
``now`` in, a verdict out.

The resolution is the hour, in the configured time zone, because the figures are kept per hour
(see :mod:`waquality.store.stats`):

- A *window* is ``window`` whole hours ending ``delay`` hours after the start of the hour in
  progress. With no delay the hour in progress counts (what has arrived of it so far); with a
  delay of one hour the window is made of completed hours only, for figures that take time to
  settle (a reply to a question asked at 09:50 lands in the 09:00 hour when it is sent; a
  message sent at 09:50 is read later).
- A condition *held for* ``held`` hours must hold in the latest window and in the windows ending
  1, 2, …, ``held`` hours earlier (what Prometheus does when it evaluates every hour).
- The *baseline* of a window is the median of the same window — the same local hours — on each
  of the previous ``baseline_days`` days that had traffic then; it needs at least half of them.
- A window whose count (responses, outbound messages, errors: see :data:`METRICS`) is under
  ``min_count`` is not judged and never fires: two slow replies never make an alert.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from waquality.domain import sketch
from waquality.domain.delivery import rate
from waquality.domain.responses import Bucket, bucket_start

HOUR = timedelta(hours=1)


class Family(StrEnum):
    RESPONSES = "responses"  # response_stats: per number and sender
    DELIVERY = "delivery"  # delivery_stats and delivery_errors: per number and template


class Unit(StrEnum):
    SECONDS = "seconds"
    RATE = "rate"  # a share, 0 to 1
    COUNT = "count"  # how many in the window


class Metric(StrEnum):
    FIRST_RESPONSE_P50 = "first_response_p50"
    FIRST_RESPONSE_P90 = "first_response_p90"
    FIRST_RESPONSE_P99 = "first_response_p99"
    FIRST_RESPONSE_MEAN = "first_response_mean"
    RESPONSE_P50 = "response_p50"
    RESPONSE_P90 = "response_p90"
    RESPONSE_P99 = "response_p99"
    RESPONSE_MEAN = "response_mean"
    DELIVERY_RATE = "delivery_rate"
    READ_RATE = "read_rate"
    FAILURE_RATE = "failure_rate"
    ERROR_RATE = "error_rate"
    ERRORS = "errors"
    OPT_OUTS = "opt_outs"


@dataclass(frozen=True, slots=True)
class MetricInfo:
    family: Family
    unit: Unit
    label: str  # how a summary names it
    counted: str  # what its count (and ``min_count``) counts
    delay: int  # hours left out by default: how long its figures take to settle
    min_count: int  # the default least count to judge a window
    kind: str = ""  # response_stats.kind: first, all
    quantile: float | None = None  # None: the mean (response times)
    meaning: str = ""  # what a signal on it tells, and what to do


_RESPONSE_MEANING = (
    "Customers wait longer than usual for a reply; slow answers lead to blocks and reports, "
    "which lower the quality rating. Check staffing, queues and bots."
)


def _response(kind: str, statistic: str) -> MetricInfo:
    first = kind == "first"
    quantile = None if statistic == "mean" else int(statistic[1:]) / 100
    return MetricInfo(
        family=Family.RESPONSES,
        unit=Unit.SECONDS,
        label=f"{'first-response' if first else 'response'} {statistic}",
        counted="first responses" if first else "responses",
        delay=1,
        min_count=20,
        kind=kind,
        quantile=quantile,
        meaning=_RESPONSE_MEANING,
    )


METRICS: dict[Metric, MetricInfo] = {
    **{
        Metric(f"{prefix}_{statistic}"): _response(kind, statistic)
        for prefix, kind in (("first_response", "first"), ("response", "all"))
        for statistic in ("p50", "p90", "p99", "mean")
    },
    Metric.DELIVERY_RATE: MetricInfo(
        Family.DELIVERY,
        Unit.RATE,
        "delivery rate",
        "sent messages",
        delay=1,
        min_count=100,
        meaning="Fewer sent messages reach phones: invalid or inactive numbers, or Meta holding "
        "messages back. Check the lists and the failures by error code.",
    ),
    Metric.READ_RATE: MetricInfo(
        Family.DELIVERY,
        Unit.RATE,
        "read rate",
        "delivered messages",
        delay=2,
        min_count=100,
        meaning="Fewer delivered messages are read: recipients ignore or mute them, an early "
        "warning of blocks and reports that lower the quality rating. Check what was sent, "
        "to whom and how often.",
    ),
    Metric.FAILURE_RATE: MetricInfo(
        Family.DELIVERY,
        Unit.RATE,
        "failure rate",
        "outbound messages",
        delay=0,
        min_count=100,
        meaning="More messages fail or are refused. See the failures by error code.",
    ),
    Metric.ERROR_RATE: MetricInfo(
        Family.DELIVERY,
        Unit.RATE,
        "share of messages failing with",
        "outbound messages",
        delay=0,
        min_count=100,
        meaning="More messages fail with this error code.",
    ),
    Metric.ERRORS: MetricInfo(
        Family.DELIVERY,
        Unit.COUNT,
        "failures with",
        "failures",
        delay=0,
        min_count=1,
        meaning="Messages fail with this error code.",
    ),
    Metric.OPT_OUTS: MetricInfo(
        Family.DELIVERY,
        Unit.COUNT,
        "opt-outs",
        "opt-outs",
        delay=0,
        min_count=1,
        meaning="More customers stop marketing messages: an early warning of blocks and "
        "reports. Check the campaigns sent in the hours before.",
    ),
}
CODED = frozenset({Metric.ERROR_RATE, Metric.ERRORS})  # metrics of one error code


# -- one hour's figures --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Durations:
    """One hour of response times: the packed sketch (:func:`sketch.pack`), count and exact sum."""

    bins: bytes
    count: int
    total_seconds: float


@dataclass(frozen=True, slots=True)
class Deliveries:
    """One hour of delivery counters (``stats.DELIVERY_COUNTERS``) and failures per code."""

    counts: Mapping[str, int]
    errors: Mapping[int, int] = field(default_factory=dict)


Hour = Durations | Deliveries


@dataclass(frozen=True, slots=True)
class Measure:
    value: float | None  # None: nothing to measure (no responses, nothing sent)
    count: int  # what ``min_count`` is compared with
    active: bool  # the window had traffic: it may serve as a baseline day


def measure(metric: Metric, hours: Iterable[Hour], code: int | None = None) -> Measure:
    """The metric over some hours (all of one scope)."""
    info = METRICS[metric]
    if info.family is Family.RESPONSES:
        durations = [h for h in hours if isinstance(h, Durations)]
        count = sum(h.count for h in durations)
        if not count:
            return Measure(None, 0, False)
        if info.quantile is None:
            return Measure(sum(h.total_seconds for h in durations) / count, count, True)
        merged = sketch.merged(h.bins for h in durations)
        return Measure(merged.quantile(info.quantile), count, True)
    counts: dict[str, int] = {}
    errors = 0
    for hour in hours:
        if isinstance(hour, Deliveries):
            for name, n in hour.counts.items():
                counts[name] = counts.get(name, 0) + n
            errors += hour.errors.get(code, 0) if code is not None else 0
    outbound = counts.get("outbound", 0)
    if metric is Metric.ERRORS:
        return Measure(errors, errors, outbound > 0)
    if metric is Metric.OPT_OUTS:
        opt_outs = counts.get("opt_outs", 0)
        return Measure(opt_outs, opt_outs, any(counts.values()))
    part, whole = {
        Metric.DELIVERY_RATE: ("delivered", "sent"),
        Metric.READ_RATE: ("read", "delivered"),
    }.get(metric, ("", "outbound"))
    if metric is Metric.FAILURE_RATE:
        found = counts.get("failed", 0) + counts.get("refused", 0)
    elif metric is Metric.ERROR_RATE:
        found = errors
    else:
        found = counts.get(part, 0)
    total = counts.get(whole, 0)
    return Measure(rate(found, total), total, total > 0)


# -- rules and windows ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """What a signal rule asks, in hours. ``factor`` compares with the baseline: above 1 a rise
    (the value at least ``factor`` times the baseline), below 1 a fall; ``above``/``below`` are
    thresholds (with ``factor``: a floor or a ceiling the value must pass too)."""

    metric: Metric
    code: int | None = None
    above: float | None = None
    below: float | None = None
    factor: float | None = None
    baseline_days: int = 7
    window: int = 1
    delay: int | None = None  # None: the metric's own (see MetricInfo.delay)
    held: int = 0
    min_count: int | None = None

    @property
    def lag(self) -> int:
        return METRICS[self.metric].delay if self.delay is None else self.delay

    @property
    def least(self) -> int:
        return METRICS[self.metric].min_count if self.min_count is None else self.min_count

    @property
    def needed_days(self) -> int:
        """Baseline days with traffic needed for a baseline: half of them, rounded up."""
        return math.ceil(self.baseline_days / 2)


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime  # UTC, an hour's start
    end: datetime  # exclusive

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def windows(rule: Rule, now: datetime, zone: str = "UTC") -> list[Window]:
    """The windows judged at ``now``, latest first: one, and one more per hour held."""
    current = bucket_start(now, Bucket.HOUR, zone).astimezone(UTC)
    found = []
    for back in range(rule.held + 1):
        end = current + HOUR * (1 - rule.lag - back)
        found.append(Window(end - HOUR * rule.window, end))
    return found


def days_before(moment: datetime, days: int, zone: str) -> datetime:
    """The same local wall-clock time ``days`` days earlier (a day may be 23 or 25 hours)."""
    tz = ZoneInfo(zone)
    wall = moment.astimezone(tz).replace(tzinfo=None) - timedelta(days=days)
    return wall.replace(tzinfo=tz).astimezone(UTC)


def baseline_windows(rule: Rule, window: Window, zone: str = "UTC") -> list[Window]:
    return [
        Window(days_before(window.start, d, zone), days_before(window.end, d, zone))
        for d in range(1, rule.baseline_days + 1)
    ]


def span(rule: Rule, now: datetime, zone: str = "UTC") -> Window:
    """The hours a verdict at ``now`` reads: from the oldest baseline window to the latest."""
    judged = windows(rule, now, zone)
    start = judged[-1].start
    if rule.factor is not None:
        start = min(w.start for w in baseline_windows(rule, judged[-1], zone))
    return Window(start, judged[0].end)


def recent(rule: Rule, now: datetime, zone: str = "UTC") -> Window:
    """The hours of the judged windows alone (where a scope must have traffic to fire)."""
    judged = windows(rule, now, zone)
    return Window(judged[-1].start, judged[0].end)


# -- verdicts ------------------------------------------------------------------------------------


class Outcome(StrEnum):
    FIRING = "firing"  # the condition holds, for long enough
    PENDING = "pending"  # it holds in the latest window, not yet for long enough
    NORMAL = "normal"  # judged, and it does not hold
    TOO_FEW = "too_few"  # the latest window's count is under min_count: not judged
    NO_BASELINE = "no_baseline"  # too few baseline days had traffic


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    window: Window  # the latest window
    current: Measure  # the metric over it
    baseline: float | None = None  # the median of its baseline days
    baseline_days: int = 0  # the days that made the baseline
    held: int = 0  # consecutive windows, latest first, where the condition holds

    @property
    def firing(self) -> bool:
        return self.outcome is Outcome.FIRING

    @property
    def ratio(self) -> float | None:
        """The value over the baseline (None without a baseline, or against a zero one)."""
        if self.baseline is None or self.current.value is None or self.baseline == 0:
            return None
        return self.current.value / self.baseline


def evaluate(
    rule: Rule, series: Mapping[datetime, Hour], now: datetime, zone: str = "UTC"
) -> Verdict:
    """The verdict at ``now`` on one scope's hourly figures (keyed by the hour's start)."""
    hours = _Hours(series)
    judged = [_judge(rule, hours, w, zone) for w in windows(rule, now, zone)]
    latest, holds = judged[0]
    held = 0
    while held < len(judged) and judged[held][1]:
        held += 1
    outcome = latest.outcome
    if outcome is Outcome.NORMAL and holds:
        outcome = Outcome.FIRING if held == len(judged) else Outcome.PENDING
    return Verdict(
        outcome, latest.window, latest.current, latest.baseline, latest.baseline_days, held
    )


class _Hours:
    """Hourly figures in time order, to take a window's hours by bisection."""

    def __init__(self, series: Mapping[datetime, Hour]) -> None:
        ordered = sorted(
            ((start.astimezone(UTC), hour) for start, hour in series.items()), key=_start
        )
        self.starts = [start for start, _ in ordered]
        self.figures = [hour for _, hour in ordered]

    def within(self, window: Window) -> list[Hour]:
        first = bisect.bisect_left(self.starts, window.start)
        last = bisect.bisect_left(self.starts, window.end)
        return self.figures[first:last]


def _start(pair: tuple[datetime, Hour]) -> datetime:
    return pair[0]


def _judge(rule: Rule, hours: _Hours, window: Window, zone: str) -> tuple[Verdict, bool]:
    current = measure(rule.metric, hours.within(window), rule.code)
    if current.value is None or current.count < rule.least:
        return Verdict(Outcome.TOO_FEW, window, current), False
    value = current.value
    holds = (rule.above is None or value > rule.above) and (
        rule.below is None or value < rule.below
    )
    if rule.factor is None:
        return Verdict(Outcome.NORMAL, window, current), holds
    days = [
        measure(rule.metric, hours.within(w), rule.code)
        for w in baseline_windows(rule, window, zone)
    ]
    values = [d.value for d in days if d.active and d.value is not None]
    if len(values) < rule.needed_days:
        return Verdict(Outcome.NO_BASELINE, window, current, None, len(values)), False
    baseline = float(statistics.median(values))
    if rule.factor > 1:
        holds = holds and value > baseline and value >= rule.factor * baseline
    else:
        holds = holds and value < baseline and value <= rule.factor * baseline
    return Verdict(Outcome.NORMAL, window, current, baseline, len(values)), holds


# -- words ---------------------------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    """``0.4s``, ``45s``, ``14m 10s``, ``2h 5m``, ``1d 3h``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    for big, small, size, unit in (
        (86400, 3600, "d", "h"),
        (3600, 60, "h", "m"),
        (60, 1, "m", "s"),
    ):
        if whole >= big:
            first, rest = divmod(whole, big)
            return f"{first}{size} {rest // small}{unit}" if rest // small else f"{first}{size}"
    return f"{whole}s"


def format_value(metric: Metric, value: float | None) -> str:
    if value is None:
        return "n/a"
    unit = METRICS[metric].unit
    if unit is Unit.SECONDS:
        return format_seconds(value)
    if unit is Unit.RATE:
        percent = value * 100
        return f"{percent:.2f}%" if 0 < percent < 1 else f"{percent:.1f}%"
    return f"{value:g}"


def phrase(metric: Metric, value: float | None, code: int | None = None) -> str:
    """The metric and its value: ``first-response p90 14m 10s``, ``3 failures with 131048``."""
    info = METRICS[metric]
    shown = format_value(metric, value)
    if metric is Metric.ERRORS:
        return f"{shown} {info.label} {code}"
    if metric is Metric.OPT_OUTS:
        return f"{shown} {info.label}"
    if metric is Metric.ERROR_RATE:
        return f"{shown} of messages failing with {code}"
    return f"{info.label} {shown}"


def describe_window(rule: Rule, window: Window, zone: str = "UTC") -> str:
    """``over the last 3 hours`` (the hour in progress included), ``in the hour to 10:00 UTC``."""
    hours = "hour" if rule.window == 1 else f"{rule.window} hours"
    if rule.lag == 0:
        return f"over the last {hours}"
    end = window.end.astimezone(ZoneInfo(zone))
    return f"in the {hours} to {end:%H:%M %Z}".rstrip()
