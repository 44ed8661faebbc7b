"""Keep customer data only as long as allowed.

Raw bodies with ``messages``/``user_preferences`` changes are deleted once older than the
retention. A body that also carries management changes is not deleted: it is rewritten without
its customer changes (management payloads are the history and are kept for good).

:func:`prune_customer_data` does that and deletes the tracker's rows older than the retention:
conversations whose last message is older (once ended), responses answered before, messages
sent or received before — except what belongs to a conversation still kept, which a late
message may yet recompute (otherwise the per-hour aggregates would count it twice). Opt-out
events older than the retention lose their customer ids (they still count as opt-outs). The
per-hour aggregates hold no identifier and are never touched. Every step works in short
transactions of ``batch`` rows: SQLite's writer is shared with webhook acknowledgements.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    Text,
    bindparam,
    cast,
    delete,
    exists,
    or_,
    select,
    true,
    update,
)

from waquality.domain import privacy
from waquality.domain.enums import RawStatus, WebhookField
from waquality.process.parse import CUSTOMER_FIELDS
from waquality.store import schema
from waquality.store.database import Database

raw, events = schema.raw_webhooks, schema.events
m, c, r = schema.messages, schema.conversations, schema.responses
kept = c.alias("kept")  # conversations a retention pass leaves
BATCH = 1000
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


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one retention pass removed."""

    payloads: int = 0  # raw bodies deleted or rewritten without their customer changes
    messages: int = 0
    conversations: int = 0
    responses: int = 0
    events: int = 0  # opt-out events whose customer ids were removed

    @property
    def total(self) -> int:
        return sum(asdict(self).values())

    def __str__(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in asdict(self).items())


def prune_customer_data(
    db: Database, now: datetime, retention: timedelta, batch: int = BATCH
) -> Pruned:
    """Remove every kind of customer data older than ``retention`` (see the module's
    docstring)."""
    cutoff = now - retention
    payloads = prune_customer_payloads(db, now, retention, batch)
    # Conversations first: what they still hold decides which messages and responses stay.
    conversations = _delete_batches(db, c, c.c.id, _expired_conversations(cutoff), batch)
    responses = _delete_batches(db, r, r.c.id, _expired_responses(cutoff), batch)
    messages = sum(
        _delete_batches(db, m, m.c.wamid, query, batch) for query in _expired_messages(cutoff)
    )
    return Pruned(
        payloads=payloads,
        messages=messages,
        conversations=conversations,
        responses=responses,
        events=_forget_preferences(db, cutoff, batch),
    )


def _outside_kept(table: Table, at: ColumnElement[Any]) -> ColumnElement[bool]:
    """No conversation still kept spans ``at`` for the row's pair."""
    return ~exists().where(
        kept.c.phone_number_id == table.c.phone_number_id,
        kept.c.customer == table.c.customer,
        kept.c.started_at <= at,
        kept.c.last_at >= at,
    )


def _expired_conversations(cutoff: datetime) -> Select[Any]:
    # started_at <= last_at: the bound lets the started_at index do the work
    return select(c.c.id).where(c.c.started_at < cutoff, c.c.last_at < cutoff, c.c.ended == true())


def _expired_responses(cutoff: datetime) -> Select[Any]:
    # asked_at <= answered_at: the bound lets the asked_at index do the work
    return select(r.c.id).where(
        r.c.asked_at < cutoff, r.c.answered_at < cutoff, _outside_kept(r, r.c.asked_at)
    )


def _expired_messages(cutoff: datetime) -> tuple[Select[Any], Select[Any]]:
    timed = select(m.c.wamid).where(m.c.at < cutoff, _outside_kept(m, m.c.at))
    untimed = select(m.c.wamid).where(m.c.at.is_(None), m.c.updated_at < cutoff)
    return timed, untimed


def _delete_batches(
    db: Database, table: Table, key: ColumnElement[Any], query: Select[Any], batch: int
) -> int:
    """Delete the rows ``query`` selects (by ``key``), ``batch`` at a time, each batch in a
    transaction of its own; rows another transaction holds are left for the next pass."""
    deleted = 0
    while True:
        with db.write() as conn:
            found = list(
                conn.execute(query.limit(batch).with_for_update(skip_locked=True)).scalars()
            )
            if found:
                conn.execute(delete(table).where(key.in_(found)))
        deleted += len(found)
        if len(found) < batch:
            return deleted


def _forget_preferences(db: Database, cutoff: datetime, batch: int) -> int:
    """Remove the customer ids of opt-out events older than ``cutoff``; returns how many."""
    value = cast(events.c.value, Text)
    named = or_(*(value.like(f'%"{name}"%') for name in privacy.PREFERENCE.names))
    query = (
        select(events.c.id, events.c.value)
        .where(
            events.c.field == WebhookField.USER_PREFERENCES.value,
            events.c.occurred_at < cutoff,
            named,
        )
        .order_by(events.c.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    forgotten, after = 0, 0
    while True:
        with db.write() as conn:
            rows = conn.execute(query.where(events.c.id > after)).all()
            changed = [
                {"eid": row.id, "forgotten": stripped}
                for row in rows
                if (stripped := privacy.forget_preference(row.value)) is not None
            ]
            if changed:
                statement = update(events).where(events.c.id == bindparam("eid"))
                conn.execute(statement.values(value=bindparam("forgotten")), changed)
        forgotten += len(changed)
        if len(rows) < batch:
            return forgotten
        after = rows[-1].id


__all__ = [
    "Pruned",
    "prune_customer_data",
    "prune_customer_payloads",
    "without_customer_changes",
]
