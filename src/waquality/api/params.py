"""Query- and path-parameter parsing shared by the routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query

from waquality.api.schemas import NO_NUL
from waquality.errors import BadRequest

MAX_LIMIT = 10_000
# Row ids are signed 64-bit integers; one is kept free above the largest (the quarantine item
# lookup pages from the id after it).
MAX_ID = 2**63 - 2

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size (1–10,000).")]
Cursor = Annotated[
    str | None,
    Query(pattern=r"^[A-Za-z0-9_=-]*$", description="The 'next' value of the previous page."),
]
TimeParam = Annotated[
    str | None,
    Query(pattern=NO_NUL, description="ISO 8601 (UTC if no offset) or Unix seconds."),
]
Text = Annotated[str | None, Query(pattern=NO_NUL)]
Key = Annotated[str, Path(pattern=NO_NUL)]
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


def parse_time(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if text.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(text), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        # Near year 1 or 9999 an offset can carry the moment out of range.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        raise BadRequest(f"{name}: expected ISO 8601 or Unix seconds, got {value[:40]!r}") from None
