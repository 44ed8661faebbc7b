"""Customer data in the store, as the privacy settings allow: raw payloads redacted once
processed, one customer's data erased on request.

Redaction runs in the processing transaction (:func:`redact_bodies`). Erasure
(:func:`erase_customer`) looks for the customer in read transactions, then deletes and rewrites
in short write transactions of its own (SQLite's writer is shared with webhook
acknowledgements); it is idempotent, so a request that fails half-way is simply made again.
The per-hour aggregates hold no identifier and are kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TypeVar

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    LargeBinary,
    Text,
    bindparam,
    cast,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)

from waquality.domain import privacy
from waquality.domain.enums import RawStatus, WebhookField
from waquality.store import inbox, schema
from waquality.store.database import Database
from waquality.store.tracker import TrackerConfig, lock_pairs

raw, e = schema.raw_webhooks, schema.events
m, c, r = schema.messages, schema.conversations, schema.responses
CHUNK = 500  # rows read or written per statement, and per erasure transaction
PHONES_PER_TRANSACTION = 20  # business numbers whose rows of one customer go in one transaction
PREFERENCES = WebhookField.USER_PREFERENCES.value
T = TypeVar("T")


# -- redaction once processed -------------------------------------------------------------------


def redact_bodies(conn: Connection, raw_ids: Sequence[int], config: TrackerConfig) -> int:
    """Rewrite the processed raw bodies ``raw_ids`` (which carry customer data) as the
    privacy settings require: customer ids hashed, profiles dropped, message text dropped
    (:func:`waquality.domain.privacy.redact_payload`); with a key, the opt-out events they
    gave have their customer ids hashed too. Nothing is read when neither setting is on.
    Returns how many bodies were rewritten."""
    key, keep_bodies = config.customer_key, config.keep_bodies
    if not raw_ids or (key is None and keep_bodies):
        return 0
    rewritten = 0
    for chunk in _chunks(raw_ids, CHUNK):
        rows = conn.execute(select(raw.c.id, raw.c.body).where(raw.c.id.in_(chunk))).all()
        changed = [
            {"rid": row.id, "redacted": body}
            for row in rows
            if (body := privacy.redact_payload(row.body, key, keep_bodies)) is not None
        ]
        if changed:
            statement = update(raw).where(raw.c.id == bindparam("rid"))
            conn.execute(statement.values(body=bindparam("redacted")), changed)
        rewritten += len(changed)
        if key is not None:
            _pseudonymise_events(conn, chunk, key)
    return rewritten


def _pseudonymise_events(conn: Connection, raw_ids: Sequence[int], key: bytes) -> None:
    query = select(e.c.id, e.c.value).where(e.c.raw_id.in_(raw_ids), e.c.field == PREFERENCES)
    changed = [
        {"eid": row.id, "hidden": value}
        for row in conn.execute(query)
        if (value := privacy.pseudonymise_preference(row.value, key)) is not None
    ]
    if changed:
        statement = update(e).where(e.c.id == bindparam("eid")).values(value=bindparam("hidden"))
        conn.execute(statement, changed)


# -- erasure on request -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Erased:
    """What erasing one customer removed or rewrote."""

    messages: int = 0
    conversations: int = 0
    responses: int = 0
    payloads: int = 0  # raw bodies rewritten without them, or deleted
    events: int = 0  # opt-out events whose value no longer names them

    @property
    def found(self) -> bool:
        return any(asdict(self).values())


def erase_customer(
    db: Database, customer: str, config: TrackerConfig, now: datetime, batch: int = CHUNK
) -> Erased:
    """Erase one customer, found by the id given (a ``wa_id`` — digits, or as a phone number is
    written — or a business-scoped user id) and, with a key configured, by its pseudonym: their
    messages, conversations and responses are deleted; raw bodies lose their items
    (:func:`waquality.domain.privacy.erase_from_payload`; a body left with nothing is deleted,
    management changes are never touched), bodies still waiting to be processed too; opt-out
    events keep what they say but no longer name them.

    The bodies go first: one still waiting is stored again without them, under a new id (a
    worker that has already read it finds its id no longer pending and leaves it), so nothing
    processed after the request brings them back. Whatever was processed before is in the
    rows and events, which are erased after the bodies."""
    names = privacy.customer_names(customer, config.customer_key)
    if not names:
        return Erased()
    with db.read() as conn:
        bodies = _candidate_bodies(conn, names)
    payloads = sum(_erase_bodies(db, chunk, names, now) for chunk in _chunks(bodies, batch))
    with db.read() as conn:
        phones = _phones_of(conn, names)
        events = _candidate_events(conn, names)
    counts = {"messages": 0, "conversations": 0, "responses": 0}
    for chunk in _chunks(phones, PHONES_PER_TRANSACTION):
        with db.write() as conn:
            for kind, found in _delete_pairs(conn, chunk, names).items():
                counts[kind] += found
    forgotten = sum(_forget_events(db, chunk, names) for chunk in _chunks(events, batch))
    return Erased(**counts, payloads=payloads, events=forgotten)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


def _phones_of(conn: Connection, names: frozenset[str]) -> list[str | None]:
    """The business numbers the customer has rows with (``None``: a message without one)."""
    found: set[str | None] = set()
    for table in (m, c, r):
        query = select(table.c.phone_number_id).where(table.c.customer.in_(names)).distinct()
        found.update(conn.execute(query).scalars())
    return sorted(found, key=lambda phone: (phone is not None, phone or ""))


def _delete_pairs(
    conn: Connection, phones: Sequence[str | None], names: frozenset[str]
) -> dict[str, int]:
    """Delete the customer's rows with ``phones`` in one transaction, the pairs locked against
    the tracker (which would otherwise rebuild a conversation from messages read before)."""
    lock_pairs(conn, ((phone, name) for phone in phones if phone for name in names))
    known = [phone for phone in phones if phone is not None]
    counts = {}
    for kind, table in (("messages", m), ("conversations", c), ("responses", r)):
        at_phone: ColumnElement[bool] = table.c.phone_number_id.in_(known)
        if None in phones:
            at_phone = or_(at_phone, table.c.phone_number_id.is_(None))
        result = conn.execute(delete(table).where(at_phone, table.c.customer.in_(names)))
        counts[kind] = result.rowcount or 0
    return counts


def _json_text(name: str) -> str:
    """``name`` as it is written inside a JSON string."""
    return orjson.dumps(name).decode()[1:-1]


def _contains(conn: Connection, needle: bytes) -> ColumnElement[bool]:
    """The raw body holds these bytes (an exact pre-filter, confirmed by parsing)."""
    if conn.dialect.name == "sqlite":
        return func.instr(raw.c.body, literal(needle, LargeBinary)) > 0
    escaped = needle.replace(b"\\", b"\\\\").replace(b"%", b"\\%").replace(b"_", b"\\_")
    return raw.c.body.op("LIKE")(literal(b"%" + escaped + b"%", LargeBinary))


def _like(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _candidate_bodies(conn: Connection, names: frozenset[str]) -> list[int]:
    needles = sorted({_json_text(name).encode() for name in names})
    query = (
        select(raw.c.id)
        .where(_may_name_customers(), or_(*(_contains(conn, n) for n in needles)))
        .order_by(raw.c.id)
    )
    return list(conn.execute(query).scalars())


def _candidate_events(conn: Connection, names: frozenset[str]) -> list[int]:
    value = cast(e.c.value, Text)
    query = (
        select(e.c.id)
        .where(
            e.c.field == PREFERENCES,
            or_(*(value.like(_like(_json_text(name)), escape="\\") for name in sorted(names))),
        )
        .order_by(e.c.id)
    )
    return list(conn.execute(query).scalars())


def _may_name_customers() -> ColumnElement[bool]:
    """Raw bodies that may hold customer data: processed ones that do, and those still
    waiting to be processed."""
    return or_(raw.c.has_customer_data.is_(True), raw.c.status == RawStatus.PENDING.value)


def _erase_bodies(db: Database, ids: Sequence[int], names: frozenset[str], now: datetime) -> int:
    touched = 0
    with db.write() as conn:
        rows = conn.execute(
            select(raw.c.id, raw.c.body, raw.c.status, raw.c.received_at, raw.c.quiet)
            .where(raw.c.id.in_(ids), _may_name_customers())
            .order_by(raw.c.id)
            .with_for_update()
        ).all()
        for row in rows:
            erased = privacy.erase_from_payload(row.body, names)
            if erased is None:
                continue
            touched += 1
            if row.status == RawStatus.PENDING.value:
                conn.execute(delete(raw).where(raw.c.id == row.id))
                if erased.body is not None:
                    inbox.insert_bodies(conn, [inbox.Body(erased.body, row.received_at, row.quiet)])
            elif erased.body is None:
                conn.execute(delete(raw).where(raw.c.id == row.id))
            elif erased.customer_data:
                conn.execute(update(raw).where(raw.c.id == row.id).values(body=erased.body))
            else:  # management changes only, from now on
                conn.execute(
                    update(raw)
                    .where(raw.c.id == row.id)
                    .values(body=erased.body, has_customer_data=False, redacted_at=now)
                )
    return touched


def _forget_events(db: Database, ids: Sequence[int], names: frozenset[str]) -> int:
    with db.write() as conn:
        rows = conn.execute(
            select(e.c.id, e.c.value).where(e.c.id.in_(ids)).order_by(e.c.id).with_for_update()
        ).all()
        changed = [
            {"eid": row.id, "forgotten": value}
            for row in rows
            if (value := privacy.forget_preference(row.value, names)) is not None
        ]
        if changed:
            statement = update(e).where(e.c.id == bindparam("eid"))
            conn.execute(statement.values(value=bindparam("forgotten")), changed)
    return len(changed)


__all__ = ["Erased", "erase_customer", "redact_bodies"]
