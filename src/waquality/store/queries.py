"""Read-side queries with keyset pagination (stable under inserts, fast at any depth)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, Integer, Select, and_, or_, select

from waquality.domain.enums import SubjectKind
from waquality.domain.values import normalise_display_number
from waquality.errors import BadRequest
from waquality.store import schema


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next: str | None


@dataclass(frozen=True, slots=True)
class SortKey:
    column: Any
    descending: bool = False


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(orjson.dumps(plain)).decode().rstrip("=")


def decode_cursor(cursor: str, keys: Sequence[SortKey]) -> list[Any]:
    """The sort-key values a cursor carries, each checked against its column's type."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(values, list) or len(values) != len(keys):
            raise ValueError
        return [_cursor_value(k, v) for k, v in zip(keys, values, strict=True)]
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise BadRequest("cursor is not valid; use the 'next' value of a previous page") from None


def _cursor_value(key: SortKey, value: Any) -> Any:
    """A cursor's value as its column can compare it; ``ValueError`` for anything else (a
    forged cursor is refused, never passed to the database)."""
    column_type = key.column.type
    if isinstance(column_type, schema.UTCDateTime):
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
        if moment is None or moment.tzinfo is None:
            raise ValueError
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise ValueError from None
    if isinstance(column_type, Integer):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError
        if not -(2**63) <= value < 2**63:
            raise ValueError
        return value
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError
    return value


def paginate(
    conn: Connection,
    query: Select[Any],
    keys: Sequence[SortKey],
    limit: int,
    cursor: str | None,
) -> Page:
    if cursor:
        query = query.where(_after(keys, decode_cursor(cursor, keys)))
    order = [k.column.desc() if k.descending else k.column.asc() for k in keys]
    rows = [dict(r._mapping) for r in conn.execute(query.order_by(*order).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    following = encode_cursor([rows[-1][k.column.key] for k in keys]) if more else None
    return Page(rows, following)


def _after(keys: Sequence[SortKey], values: list[Any]) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order of ``keys`` (mixed directions allowed)."""
    clauses = []
    for i, key in enumerate(keys):
        equal = [keys[j].column == values[j] for j in range(i)]
        beyond = key.column < values[i] if key.descending else key.column > values[i]
        clauses.append(and_(*equal, beyond))
    return or_(*clauses)


def _equal(query: Select[Any], *pairs: tuple[Any, str | None]) -> Select[Any]:
    """``query`` narrowed to ``column == value`` for every pair whose value was given."""
    for column, value in pairs:
        if value:
            query = query.where(column == value)
    return query


def phone_numbers(conn: Connection, *, waba_id: str | None, limit: int, cursor: str | None) -> Page:
    t = schema.phone_numbers
    query = _equal(select(t), (t.c.waba_id, waba_id))
    return paginate(conn, query, [SortKey(t.c.key)], limit, cursor)


def find_phone_number(conn: Connection, ident: str) -> dict[str, Any] | None:
    t = schema.phone_numbers
    row = conn.execute(select(t).where(t.c.phone_number_id == ident)).mappings().first()
    display = normalise_display_number(ident)
    if row is None and display:
        row = conn.execute(select(t).where(t.c.display_phone_number == display)).mappings().first()
    return dict(row) if row else None


def templates(
    conn: Connection,
    *,
    waba_id: str | None,
    status: str | None,
    quality_score: str | None,
    name: str | None,
    limit: int,
    cursor: str | None,
) -> Page:
    t = schema.templates
    query = _equal(
        select(t),
        (t.c.waba_id, waba_id),
        (t.c.status, status),
        (t.c.quality_score, quality_score),
        (t.c.name, name),
    )
    return paginate(conn, query, [SortKey(t.c.id)], limit, cursor)


def wabas(conn: Connection, *, business_id: str | None, limit: int, cursor: str | None) -> Page:
    t = schema.wabas
    query = _equal(select(t), (t.c.business_id, business_id))
    return paginate(conn, query, [SortKey(t.c.id)], limit, cursor)


def businesses(conn: Connection, *, limit: int, cursor: str | None) -> Page:
    t = schema.businesses
    return paginate(conn, select(t), [SortKey(t.c.id)], limit, cursor)


def exists(conn: Connection, table: Any, key: str) -> bool:
    return conn.execute(select(table.c.id).where(table.c.id == key)).first() is not None


def find_template(conn: Connection, template_id: str) -> dict[str, Any] | None:
    t = schema.templates
    row = conn.execute(select(t).where(t.c.id == template_id)).mappings().first()
    return dict(row) if row else None


def history(
    conn: Connection,
    *,
    kind: SubjectKind,
    key: str,
    field: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> Page:
    h = schema.history
    query = select(h).where(h.c.subject_kind == kind.value, h.c.subject_key == key)
    query = _equal(query, (h.c.field, field))
    if since:
        query = query.where(h.c.occurred_at >= since)
    if until:
        query = query.where(h.c.occurred_at < until)
    return paginate(conn, query, [SortKey(h.c.occurred_at), SortKey(h.c.id)], limit, cursor)


def events(
    conn: Connection,
    *,
    field: str | None,
    waba_id: str | None,
    kind: str | None,
    subject_kind: str | None,
    subject_id: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> Page:
    e = schema.events
    query = _equal(
        select(e),
        (e.c.field, field),
        (e.c.waba_id, waba_id),
        (e.c.kind, kind),
        (e.c.subject_kind, subject_kind),
        (e.c.subject_id, subject_id),
    )
    if since:
        query = query.where(e.c.occurred_at >= since)
    if until:
        query = query.where(e.c.occurred_at < until)
    keys = [SortKey(e.c.occurred_at, descending=True), SortKey(e.c.id, descending=True)]
    return paginate(conn, query, keys, limit, cursor)


def quarantine(conn: Connection, *, include_resolved: bool, limit: int, cursor: str | None) -> Page:
    q, r = schema.quarantine, schema.raw_webhooks
    query = select(*q.c, r.c.received_at).join(r, r.c.id == q.c.raw_id)
    if not include_resolved:
        query = query.where(q.c.resolved_at.is_(None))
    return paginate(conn, query, [SortKey(q.c.id, descending=True)], limit, cursor)


def raw_body(conn: Connection, raw_id: int) -> bytes | None:
    r = schema.raw_webhooks
    value = conn.execute(select(r.c.body).where(r.c.id == raw_id)).scalar()
    return bytes(value) if value is not None else None


def conversations(
    conn: Connection,
    *,
    phone_number_id: str | None,
    customer: str | None,
    since: datetime | None,
    until: datetime | None,
    unanswered: bool | None,
    limit: int,
    cursor: str | None,
) -> Page:
    """Conversations, latest start first."""
    c = schema.conversations
    query = _equal(select(c), (c.c.phone_number_id, phone_number_id), (c.c.customer, customer))
    if since:
        query = query.where(c.c.started_at >= since)
    if until:
        query = query.where(c.c.started_at < until)
    if unanswered is not None:
        left = and_(c.c.customer_wrote.is_(True), c.c.answered.is_(False))
        query = query.where(left if unanswered else ~left)
    keys = [SortKey(c.c.started_at, descending=True), SortKey(c.c.id, descending=True)]
    return paginate(conn, query, keys, limit, cursor)


def messages(
    conn: Connection,
    *,
    phone_number_id: str | None,
    customer: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> Page:
    """Messages in time order (a customer's whole exchange, when both are given)."""
    m = schema.messages
    query = _equal(
        select(m).where(m.c.at.is_not(None)),
        (m.c.phone_number_id, phone_number_id),
        (m.c.customer, customer),
    )
    if since:
        query = query.where(m.c.at >= since)
    if until:
        query = query.where(m.c.at < until)
    return paginate(conn, query, [SortKey(m.c.at), SortKey(m.c.wamid)], limit, cursor)
