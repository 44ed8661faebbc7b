"""Keep customer data only as long as allowed.

Raw bodies with ``messages``/``user_preferences`` changes are deleted once older than the
retention. A body that also carries management changes is not deleted: it is rewritten without
its customer changes (management payloads are the history and are kept for good).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson
from sqlalchemy import delete, select, update

from waquality.domain.enums import RawStatus
from waquality.process.parse import CUSTOMER_FIELDS
from waquality.store import schema
from waquality.store.database import Database

raw = schema.raw_webhooks
_CUSTOMER_NAMES = frozenset(f.value for f in CUSTOMER_FIELDS)


def without_customer_changes(body: bytes) -> bytes | None:
    """The body minus its customer changes; ``None`` when nothing else is left."""
    try:
        document = orjson.loads(body)
        entries = document["entry"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    kept = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("changes"), list):
            continue
        changes = [
            c
            for c in entry["changes"]
            if not (isinstance(c, dict) and c.get("field") in _CUSTOMER_NAMES)
        ]
        if changes:
            kept.append({**entry, "changes": changes})
    return orjson.dumps({**document, "entry": kept}) if kept else None


def prune_customer_payloads(
    db: Database, now: datetime, retention: timedelta, batch: int = 500
) -> int:
    """Delete or redact expired customer payloads; returns how many bodies were touched."""
    cutoff = now - retention
    touched = 0
    while True:
        with db.write() as conn:
            rows = conn.execute(
                select(raw.c.id, raw.c.body)
                .where(
                    raw.c.has_customer_data.is_(True),
                    raw.c.redacted_at.is_(None),
                    raw.c.status == RawStatus.PROCESSED.value,
                    raw.c.received_at < cutoff,
                )
                .order_by(raw.c.id)
                .limit(batch)
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                kept = without_customer_changes(row.body)
                if kept is None:
                    conn.execute(delete(raw).where(raw.c.id == row.id))
                else:
                    conn.execute(
                        update(raw)
                        .where(raw.c.id == row.id)
                        .values(body=kept, redacted_at=now, has_customer_data=False)
                    )
        touched += len(rows)
        if len(rows) < batch:
            return touched


__all__ = ["prune_customer_payloads", "without_customer_changes"]
