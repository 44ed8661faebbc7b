"""Replay stored bodies through processing (after a parser fix): idempotent by design."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update

from waquality.store import inbox, schema
from waquality.store.database import Database


def requeue_quarantined(db: Database, now: datetime, raw_ids: Sequence[int] = ()) -> int:
    """Mark open quarantine items resolved and put their bodies back in the queue.

    With ``raw_ids``, only those bodies (quarantined or not). Whatever still cannot be parsed is
    quarantined again by the next processing pass; what was already applied is deduplicated.
    """
    q = schema.quarantine
    with db.write() as conn:
        if raw_ids:
            ids = list(raw_ids)
        else:
            ids = list(
                conn.execute(
                    select(q.c.raw_id).where(q.c.resolved_at.is_(None)).distinct()
                ).scalars()
            )
        if not ids:
            return 0
        conn.execute(
            update(q).where(q.c.raw_id.in_(ids), q.c.resolved_at.is_(None)).values(resolved_at=now)
        )
        return inbox.requeue(conn, ids)
