"""Normalisers for the types Meta sends inconsistently (see the fact sheet's "type drift").

Each function takes whatever JSON gave and returns a clean value or ``None``; none raises on bad
input, so callers decide whether a missing value is an error.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime
from typing import Any

_DIGITS = re.compile(r"[^0-9]+")  # ASCII digits only: "٣" is no digit of a phone number
# Meta's human dates: "April 17, 2025", "January 31, 2021".
_HUMAN_DATE_FORMATS = ("%B %d, %Y", "%b %d, %Y", "%Y-%m-%d")
# Unix seconds accepted as timestamps: 2001-09-09 .. 2286-11-20.
_MIN_EPOCH, _MAX_EPOCH = 1_000_000_000, 9_999_999_999


def parse_timestamp(value: Any) -> datetime | None:
    """Unix seconds as int, float or string; ISO 8601; or a human date → aware UTC datetime."""
    if type(value) is str and value.isdecimal():  # Meta's own: "1700000000"
        return _epoch_text(value)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value) or not _MIN_EPOCH <= value <= _MAX_EPOCH:
            return None
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    try:
        return parse_timestamp(float(text)) if _looks_numeric(text) else _parse_text_date(text)
    except (ValueError, OverflowError):
        return None


@functools.lru_cache(maxsize=4096)
def _epoch_text(text: str) -> datetime | None:
    """Whole Unix seconds as text (a batch's timestamps repeat: each is read once)."""
    return parse_timestamp(int(text))


def _looks_numeric(text: str) -> bool:
    return text.replace(".", "", 1).lstrip("-").isdigit()


def _parse_text_date(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is not None:
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    for fmt in _HUMAN_DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def normalise_display_number(value: Any) -> str | None:
    """Keep the digits only: ``+1 555-078-3881`` → ``15550783881``."""
    if isinstance(value, bool) or value is None:
        return None
    digits = _DIGITS.sub("", str(value))
    return digits if 5 <= len(digits) <= 20 else None


LANGUAGE_LENGTH = 32  # the longest language code that is stored


def normalise_language(value: Any) -> str | None:
    """Template language codes as the Graph API spells them: ``en-US`` → ``en_US``; ``None``
    for anything that is no language code (too long, control characters)."""
    if not isinstance(value, str) or not value.strip():
        return None
    parts = value.strip().replace("-", "_").split("_")
    head = parts[0].lower()
    tail = [p.upper() if len(p) == 2 else p for p in parts[1:]]
    language = "_".join([head, *tail])
    if len(language) > LANGUAGE_LENGTH or not language.isprintable():
        return None
    return language


def as_id(value: Any) -> str | None:
    """An object id as a string. Ids come as JSON integers or strings; never as floats."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value) if value >= 0 else None
    if isinstance(value, str):
        text = value.strip()
        return text if text and len(text) <= 64 and text.isprintable() else None
    return None


def as_text(value: Any, limit: int = 4096) -> str | None:
    """A free-text value as it can be stored: cut to ``limit`` characters, NUL (which
    PostgreSQL text cannot hold) replaced by U+FFFD; non-strings give ``None``. The raw payload
    keeps the original."""
    if isinstance(value, str):
        return value[:limit].replace("\x00", "\ufffd")
    return None


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    digits = value.strip().lstrip("-") if isinstance(value, str) else ""
    if digits.isascii() and digits.isdigit():
        return int(value.strip())
    return None
