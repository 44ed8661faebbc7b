"""How values read on the pages: moments in the dashboard's time zone, durations, shares."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup

TIERS = {
    "TIER_50": "50",
    "TIER_250": "250",
    "TIER_1K": "1K",
    "TIER_2K": "2K",
    "TIER_10K": "10K",
    "TIER_100K": "100K",
    "TIER_UNLIMITED": "unlimited",
}
QUALITY_WORDS = {"GREEN": "High", "YELLOW": "Medium", "RED": "Low"}


def moment(value: datetime | None, zone: str = "UTC") -> str:
    if value is None:
        return "—"
    local = value.astimezone(ZoneInfo(zone))
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or zone}"


def time_tag(value: datetime | None, zone: str = "UTC") -> Markup:
    """A ``<time>`` element: the moment in the time zone, and in UTC for machines."""
    if value is None:
        return Markup('<span class="none">—</span>')
    iso = value.isoformat().replace("+00:00", "Z")
    return Markup('<time datetime="{}">{}</time>').format(iso, moment(value, zone))


def span(value: timedelta | None) -> str:
    """``3 d 4 h``, ``5 h 12 min``, ``42 min``, ``now``."""
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "now"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{max(minutes, 1)} min"


def ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "never"
    if value > now:
        return f"in {span(value - now)}"
    return f"{span(now - value)} ago" if now - value >= timedelta(minutes=1) else "just now"


def duration(seconds: float | None) -> str:
    """A response time: ``42 s``, ``5.2 min``, ``1.3 h``, ``2.1 d``."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def percent(share: float | None) -> str:
    if share is None:
        return "—"
    return f"{share * 100:.1f}%"


def number(value: Any) -> str:
    return f"{int(value or 0):,}"


def tier(value: str | None) -> str:
    if not value:
        return "—"
    return TIERS.get(value, value)


def quality_word(value: str | None) -> str:
    """``GREEN`` reads as ``High``; what is not known reads as ``unknown``."""
    if not value or value == "UNKNOWN":
        return "unknown"
    return QUALITY_WORDS.get(value, value.lower())


def phone_label(row: dict[str, Any] | None) -> str:
    if not row:
        return "unknown number"
    display = row.get("display_phone_number")
    label = f"+{display}" if display else str(row.get("phone_number_id") or row.get("key"))
    name = row.get("verified_name")
    return f"{label} ({name})" if name else label


def template_label(row: dict[str, Any] | None) -> str:
    if not row:
        return "unknown template"
    name = row.get("name") or row.get("id")
    return f"{name} [{row['language']}]" if row.get("language") else str(name)


def labels(values: dict[str, Any]) -> Markup:
    """Alert labels as ``key=value`` chips (escaped)."""
    return Markup(" ").join(
        Markup('<span class="chip">{}={}</span>').format(k, v)
        for k, v in sorted(values.items())
        if k != "rule"
    )
