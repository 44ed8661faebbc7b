"""Query-parameter parsing shared by the routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query

from waquality.errors import BadRequest

MAX_LIMIT = 10_000

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size (1–10,000).")]
Cursor = Annotated[str | None, Query(description="The 'next' value of the previous page.")]
TimeParam = Annotated[str | None, Query(description="ISO 8601 (UTC if no offset) or Unix seconds.")]


def parse_time(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if text.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(text), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise BadRequest(f"{name}: expected ISO 8601 or Unix seconds, got {value[:40]!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
