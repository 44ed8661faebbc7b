"""Refused webhook POSTs (missing or wrong signature), counted per minute in the database.

The receiver counts in memory (a refusal costs no write, so a flood cannot slow the store);
housekeeping flushes the tally every few seconds. The counts are shared by every receiving
process, so the signature-failure alert sees them all.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime

from sqlalchemy import delete, func, select

from waquality.store import schema
from waquality.store.database import Database

r = schema.webhook_rejections
SIGNATURE_REASONS = ("unsigned", "bad_signature")


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


class Rejections:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[datetime, str]] = Counter()

    def add(self, reason: str, at: datetime) -> None:
        with self._lock:
            self._counts[(minute_of(at), reason)] += 1

    def flush(self, db: Database) -> int:
        """Add the tally to the stored counts; what cannot be written is kept for next time."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
        if not counts:
            return 0
        rows = [{"minute": m, "reason": why, "count": n} for (m, why), n in counts.items()]
        statement = db.insert(r)
        statement = statement.on_conflict_do_update(
            index_elements=[r.c.minute, r.c.reason],
            set_={"count": r.c.count + statement.excluded.count},
        )
        try:
            with db.write() as conn:
                conn.execute(statement, rows)
        except Exception:
            with self._lock:
                self._counts.update(counts)
            raise
        return sum(counts.values())


def signature_failures(db: Database, since: datetime) -> int:
    """Refusals for a missing or wrong signature since ``since`` (minute resolution)."""
    query = select(func.coalesce(func.sum(r.c.count), 0)).where(
        r.c.minute >= minute_of(since), r.c.reason.in_(SIGNATURE_REASONS)
    )
    with db.read() as conn:
        return int(conn.execute(query).scalar() or 0)


def prune(db: Database, before: datetime) -> int:
    with db.write() as conn:
        return conn.execute(delete(r).where(r.c.minute < before)).rowcount or 0
