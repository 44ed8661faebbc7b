"""Charts as inline SVG, drawn on the server: no script, nothing to download, readable without
colour (every shape has a title, every lane names its values). Pure: values in, markup out.

- :func:`timeline`: lanes of states over time (quality, status, limit), events marked below;
- :func:`bars`: delivery figures per bucket (sent, delivered and read nested, failures on top);
- :func:`lines`: durations per bucket on a logarithmic scale (response-time percentiles).

Every piece of text is escaped here; class names are made of ``[A-Za-z0-9_-]`` only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from waquality.web import formats

WIDTH = 960
LEFT = 120  # lane titles
RIGHT = 12
LANE = 24
GAP = 6
AXIS = 22
LEGEND = 22  # a row of series names above a line chart
PLOT = WIDTH - LEFT - RIGHT
_TOKEN = re.compile(r"^[A-Za-z0-9_]{1,40}$")


@dataclass(frozen=True, slots=True)
class Segment:
    start: datetime
    end: datetime
    value: str | None


@dataclass(frozen=True, slots=True)
class Lane:
    title: str
    kind: str  # its values' colour family: quality, status, limit, template
    segments: Sequence[Segment]


@dataclass(frozen=True, slots=True)
class Marker:
    at: datetime
    label: str


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    kind: str  # colour family
    points: Sequence[tuple[datetime, float | None]] = field(default_factory=list)


def token(value: str | None) -> str:
    if value is None:
        return "NONE"
    return value if _TOKEN.match(value) else "OTHER"


def segments(
    before: str | None,
    changes: Sequence[tuple[datetime, str | None]],
    start: datetime,
    end: datetime,
) -> list[Segment]:
    """The runs of a value over ``[start, end)``, from its value at ``start`` and its changes."""
    found: list[Segment] = []
    value, since = before, start
    for at, new in sorted(changes, key=lambda change: change[0]):
        at = min(max(at, start), end)
        if new == value:
            continue
        if at > since:
            found.append(Segment(since, at, value))
        value, since = new, at
    if end > since:
        found.append(Segment(since, end, value))
    return found


class _Scale:
    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.seconds = max((end - start).total_seconds(), 1.0)

    def x(self, moment: datetime) -> float:
        share = (moment - self.start).total_seconds() / self.seconds
        return round(LEFT + min(max(share, 0.0), 1.0) * PLOT, 1)


def timeline(
    lanes: Sequence[Lane],
    markers: Sequence[Marker],
    start: datetime,
    end: datetime,
    zone: str = "UTC",
    *,
    label: str = "History",
) -> Markup:
    scale = _Scale(start, end)
    rows = len(lanes) + (1 if markers else 0)
    height = rows * (LANE + GAP) + AXIS
    parts = [_open(height, label)]
    for index, lane in enumerate(lanes):
        y = index * (LANE + GAP)
        parts.append(_text(8, y + LANE / 2 + 4, lane.title, "lane-title"))
        for seg in lane.segments:
            x1, x2 = scale.x(seg.start), scale.x(seg.end)
            width = max(x2 - x1, 1.0)
            value = seg.value or "unknown"
            tip = (
                f"{lane.title}: {value} from {formats.moment(seg.start, zone)} "
                f"to {formats.moment(seg.end, zone)}"
            )
            parts.append(
                f'<rect class="seg {lane.kind} v-{token(seg.value)}" x="{x1}" y="{y}" '
                f'width="{width:.1f}" height="{LANE}"><title>{escape(tip)}</title></rect>'
            )
            if width > 8 * len(value) + 8:
                parts.append(_text(x1 + 4, y + LANE / 2 + 4, value, "seg-label"))
    if markers:
        middle = len(lanes) * (LANE + GAP) + LANE / 2
        parts.append(_text(8, middle + 4, "events", "lane-title"))
        parts.append(
            f'<line class="rule" x1="{LEFT}" x2="{LEFT + PLOT}" y1="{middle}" y2="{middle}"></line>'
        )
        for marker in markers:
            tip = f"{formats.moment(marker.at, zone)}: {marker.label}"
            parts.append(
                f'<circle class="marker" cx="{scale.x(marker.at)}" cy="{middle}" r="5">'
                f"<title>{escape(tip)}</title></circle>"
            )
    parts.append(_axis(scale, start, end, zone, rows * (LANE + GAP)))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it went through escape)


def bars(
    series: Sequence[tuple[datetime, Mapping[str, int]]],
    start: datetime,
    end: datetime,
    step: timedelta,
    zone: str = "UTC",
    *,
    label: str = "Delivery",
) -> Markup:
    """Sent, delivered and read nested (each a part of the one before), failed and refused
    stacked on top of sent."""
    scale = _Scale(start, end)
    plot = 140
    top = max(
        [f.get("sent", 0) + f.get("failed", 0) + f.get("refused", 0) for _, f in series] or [0]
    )
    parts = [_open(plot + AXIS, label)]
    parts.append(_text(8, 14, f"{top:,} max", "lane-title"))
    parts.append(
        f'<line class="rule" x1="{LEFT}" x2="{LEFT + PLOT}" y1="{plot}" y2="{plot}"></line>'
    )
    for moment, figures in series:
        x1 = scale.x(moment)
        width = max(scale.x(moment + step) - x1 - 1, 1.0)
        stacked = 0.0
        title = (
            f"{formats.moment(moment, zone)}: sent {figures.get('sent', 0):,}, delivered "
            f"{figures.get('delivered', 0):,}, read {figures.get('read', 0):,}, failed "
            f"{figures.get('failed', 0) + figures.get('refused', 0):,}"
        )
        group = [f"<g><title>{escape(title)}</title>"]
        for name, base in (("sent", 0), ("delivered", 0), ("read", 0), ("failed", None)):
            value = figures.get(name, 0) + (figures.get("refused", 0) if name == "failed" else 0)
            if not value or not top:
                continue
            size = value / top * (plot - 4)
            bottom = plot - (stacked if base is None else 0)
            group.append(
                f'<rect class="bar {name}" x="{x1}" y="{bottom - size:.1f}" '
                f'width="{width:.1f}" height="{size:.1f}"></rect>'
            )
            if name == "sent":
                stacked = size
        group.append("</g>")
        parts.append("".join(group))
    parts.append(_axis(scale, start, end, zone, plot))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it went through escape)


_DURATION_TICKS = (1, 10, 60, 600, 3600, 6 * 3600, 86400, 7 * 86400)


def lines(
    series: Sequence[Series],
    start: datetime,
    end: datetime,
    zone: str = "UTC",
    *,
    label: str = "Durations",
) -> Markup:
    """Durations (seconds) on a logarithmic scale; gaps where a bucket has none."""
    scale = _Scale(start, end)
    plot = 160
    values = [v for s in series for _, v in s.points if v is not None and v > 0]
    low = min([1.0, *values])
    high = max([60.0, *values])
    span = math.log10(high) - math.log10(low) or 1.0

    def y(seconds: float) -> float:
        share = (math.log10(max(seconds, low)) - math.log10(low)) / span
        return round(plot - 4 - share * (plot - 12), 1)

    parts = [_open(plot + AXIS + LEGEND, label), f'<g transform="translate(0 {LEGEND})">']
    for tick in _DURATION_TICKS:
        if low <= tick <= high:
            parts.append(
                f'<line class="grid" x1="{LEFT}" x2="{LEFT + PLOT}" y1="{y(tick)}" '
                f'y2="{y(tick)}"></line>'
            )
            parts.append(_text(LEFT - 6, y(tick) + 4, formats.duration(tick), "tick end"))
    for index, one in enumerate(series):
        parts.append(_text(LEFT + index * 170, -8, "● " + one.name, f"legend {one.kind}"))
        run: list[str] = []
        for moment, value in one.points:
            if value is None:
                parts.append(_path(run, one.kind))
                run = []
                continue
            point = f"{scale.x(moment)},{y(value)}"
            run.append(point)
            tip = f"{one.name}, {formats.moment(moment, zone)}: {formats.duration(value)}"
            parts.append(
                f'<circle class="dot {one.kind}" cx="{scale.x(moment)}" cy="{y(value)}" r="3">'
                f"<title>{escape(tip)}</title></circle>"
            )
        parts.append(_path(run, one.kind))
    parts.append(_axis(scale, start, end, zone, plot))
    parts.append("</g></svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it went through escape)


def _path(points: list[str], kind: str) -> str:
    if len(points) < 2:
        return ""
    return f'<polyline class="line {kind}" points="{" ".join(points)}"></polyline>'


def _open(height: float, label: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
        f'preserveAspectRatio="xMinYMin meet" aria-label="{escape(label)}">'
    )


def _text(x: float, y: float, text: str, cls: str) -> str:
    return f'<text class="{cls}" x="{x:.1f}" y="{y:.1f}">{escape(text)}</text>'


_STEPS = (
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=6),
    timedelta(hours=12),
    timedelta(days=1),
    timedelta(days=2),
    timedelta(days=7),
    timedelta(days=14),
    timedelta(days=30),
    timedelta(days=91),
    timedelta(days=365),
)


def ticks(start: datetime, end: datetime, zone: str, most: int = 8) -> list[datetime]:
    """Round moments (local hours, midnights, firsts of months) between ``start`` and ``end``."""
    span = end - start
    step = next((s for s in _STEPS if span / s <= most), _STEPS[-1])
    tz = ZoneInfo(zone)
    local = start.astimezone(tz)
    found: list[datetime] = []
    if step < timedelta(days=1):
        hours = int(step.total_seconds() // 3600)
        moment = local.replace(minute=0, second=0, microsecond=0)
        while moment < end:
            if moment >= start and moment.hour % hours == 0:
                found.append(moment)
            moment = (moment + timedelta(hours=1)).astimezone(tz)
    elif step < timedelta(days=30):
        days = step.days
        day = local.date()
        while True:
            moment = datetime(day.year, day.month, day.day, tzinfo=tz)
            if moment >= end:
                break
            if moment >= start and day.toordinal() % days == 0:
                found.append(moment)
            day += timedelta(days=1)
    else:
        months = {30: 1, 91: 3, 365: 12}[step.days]
        year, month = local.year, local.month
        while True:
            moment = datetime(year, month, 1, tzinfo=tz)
            if moment >= end:
                break
            if moment >= start and (month - 1) % months == 0:
                found.append(moment)
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def _axis(scale: _Scale, start: datetime, end: datetime, zone: str, y: float) -> str:
    parts = [f'<g class="axis"><line x1="{LEFT}" x2="{LEFT + PLOT}" y1="{y}" y2="{y}"></line>']
    span = end - start
    for moment in ticks(start, end, zone):
        x = scale.x(moment)
        local = moment.astimezone(ZoneInfo(zone))
        if span <= timedelta(days=2):
            text = local.strftime("%H:%M") if local.hour else local.strftime("%b %d")
        elif span <= timedelta(days=400):
            text = local.strftime("%b %d")
        else:
            text = local.strftime("%b %Y")
        parts.append(f'<line x1="{x}" x2="{x}" y1="{y}" y2="{y + 4}"></line>')
        parts.append(_text(min(max(x, LEFT + 24), WIDTH - 28), y + 16, text, "tick mid"))
    parts.append("</g>")
    return "".join(parts)
