"""Recompute conversations, responses and the tracker's aggregates from the stored messages.

For after a change of the rules (gap, counted senders, business hours, time zone) or a restore.
Aggregates from the hour of the oldest stored message on are replaced; older ones (whose
messages retention has deleted) are kept. The work is one transaction: readers see the old
figures until the new ones are complete. On SQLite it holds the write lock throughout, so
webhooks are answered 503 (and redelivered by Meta) while it runs: stop the server first or
choose a quiet hour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, tuple_

from waquality.domain import delivery
from waquality.domain.enums import MessageStatus, PreferenceValue, SenderKind, WebhookField
from waquality.domain.responses import Message
from waquality.store import conversations, schema, stats
from waquality.store.database import Database
from waquality.store.tracker import TrackerConfig

m, e = schema.messages, schema.events
PAGE = 20_000  # messages read at a time
PROGRESS_STEP = 100_000  # messages between two progress reports
INSERT_BATCH = 10_000  # rows per insert
_COLUMNS = (
    m.c.phone_number_id,
    m.c.customer,
    m.c.at,
    m.c.inbound,
    m.c.sender_kind,
    m.c.status,
    m.c.kind,
    m.c.template,
    m.c.sent_at,
    m.c.delivered_at,
    m.c.read_at,
    m.c.error_code,
)


@dataclass(slots=True)
class Rebuilt:
    messages: int = 0
    conversations: int = 0
    responses: int = 0
    since: datetime | None = None


def count_messages(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(m)).scalar_one())


def rebuild(
    db: Database,
    config: TrackerConfig,
    now: datetime,
    progress: Callable[[int], None] | None = None,
) -> Rebuilt:
    """Recompute everything the tracker derives from the stored messages."""
    result = Rebuilt()
    with db.write() as conn:
        oldest = conn.execute(select(func.min(m.c.at))).scalar()
        deltas = stats.Deltas(zone=config.zone)
        result.since = deltas.hour(oldest) if oldest is not None else None
        conn.execute(delete(schema.conversations))
        conn.execute(delete(schema.responses))
        stats.reset_since(conn, result.since)
        # The figures are written once, at the end: read in pair order, every hour comes back
        # again and again, and a figure row is best written once.
        buffered = _Buffered(conn)
        pending = 0
        for pair, rows in _pairs(conn):
            pending += len(rows)
            result.messages += len(rows)
            for row in rows:
                _delivered(deltas, row)
            if pair is not None:
                outcome = config.rules.outcome((_message(row) for row in rows), now)
                conversations_, responses_ = conversations.rows_of(pair, outcome)
                for conversation in conversations_:
                    conversations.count_conversation(deltas, conversation, 1)
                for response in responses_:
                    conversations.count_response(deltas, response, 1)
                buffered.add(conversations_, responses_)
                result.conversations += len(conversations_)
                result.responses += len(responses_)
            if pending >= PROGRESS_STEP:
                if progress is not None:
                    progress(pending)
                pending = 0
        buffered.flush()
        if result.since is not None:
            _preferences(conn, deltas, result.since)
        stats.write(conn, deltas)
        if progress is not None and pending:
            progress(pending)
    return result


class _Buffered:
    """Conversation and response rows, inserted many at a time."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.conversations: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []

    def add(self, conversations_: list[dict[str, Any]], responses_: list[dict[str, Any]]) -> None:
        self.conversations += conversations_
        self.responses += responses_
        if len(self.conversations) + len(self.responses) >= INSERT_BATCH:
            self.flush()

    def flush(self) -> None:
        for table, rows in (
            (schema.conversations, self.conversations),
            (schema.responses, self.responses),
        ):
            if rows:
                self.conn.execute(table.insert(), rows)
                rows.clear()


def _pairs(conn: Connection) -> Iterator[tuple[tuple[str, str] | None, list[Any]]]:
    """Every stored message with a time, grouped by pair and read page by page in pair order;
    then those whose number or customer is unknown (pair ``None``)."""
    key = tuple_(m.c.phone_number_id, m.c.customer, m.c.at, m.c.wamid)
    after: tuple[Any, ...] | None = None
    current: tuple[str, str] | None = None
    group: list[Any] = []
    paired = (m.c.at.is_not(None), m.c.phone_number_id.is_not(None), m.c.customer.is_not(None))
    while True:
        query = select(*_COLUMNS, m.c.wamid).where(*paired)
        if after is not None:
            query = query.where(key > after)
        query = query.order_by(m.c.phone_number_id, m.c.customer, m.c.at, m.c.wamid).limit(PAGE)
        page = conn.execute(query).all()
        for row in page:
            pair = (row.phone_number_id, row.customer)
            if pair != current and group:
                yield current, group
                group = []
            current = pair
            group.append(row)
        if len(page) < PAGE:
            break
        last = page[-1]
        after = (last.phone_number_id, last.customer, last.at, last.wamid)
    if group:
        yield current, group
    unpaired = select(*_COLUMNS).where(
        m.c.at.is_not(None), (m.c.phone_number_id.is_(None)) | (m.c.customer.is_(None))
    )
    for row in conn.execute(unpaired):
        yield None, [row]


def _message(row: Any) -> Message:
    return Message(
        row.at,
        bool(row.inbound),
        SenderKind.parse(row.sender_kind) or SenderKind.UNKNOWN,
        row.status == MessageStatus.FAILED.value,
    )


def _delivered(deltas: stats.Deltas, row: Any) -> None:
    found = delivery.contribution(row._mapping)
    if found is not None:
        deltas.deliveries(
            found.phone_number_id, found.template, found.at, found.counts, found.error_code
        )


def _preferences(conn: Connection, deltas: stats.Deltas, since: datetime) -> None:
    query = select(e.c.subject_id, e.c.occurred_at, e.c.kind).where(
        e.c.field == WebhookField.USER_PREFERENCES.value, e.c.occurred_at >= since
    )
    for phone, at, kind in conn.execute(query):
        value = PreferenceValue.parse(kind)
        counts = {PreferenceValue.STOP: delivery.OPT_OUT, PreferenceValue.RESUME: delivery.RESUME}
        if value in counts:
            deltas.deliveries(phone or "", stats.ALL, at, counts[value])
