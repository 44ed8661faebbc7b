"""Conversations and responses, kept up to date as messages arrive, in any order.

When messages of a (business number, customer) pair change, the pair's conversations from the
one the earliest change falls into onwards are computed again from the stored messages (the
pure :func:`waquality.domain.responses.track`) and compared with the stored ones: only what
differs is written — a reply arriving in order writes its one response — and the aggregates get
the difference (:mod:`waquality.store.stats`). A conversation ends once the inactivity gap has
passed; :func:`end_idle` marks those that ended without a new message.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, String, and_, delete, false, select, update

from waquality.domain.enums import MessageStatus, SenderKind
from waquality.domain.responses import (
    BusinessHours,
    Conversation,
    Message,
    Outcome,
    Response,
    every_sender,
    track,
)
from waquality.store import bulk, keys, schema
from waquality.store.keys import KeyTable
from waquality.store.stats import Deltas

Pair = tuple[str, str]  # phone number id, customer
Touch = tuple[datetime, Message | None]  # see recompute
c, r, m = schema.conversations, schema.responses, schema.messages
_FAILED = MessageStatus.FAILED.value
END_BATCH = 1000  # conversations ended per transaction
PAIRS_PER_QUERY = 5_000  # pairs whose rows one statement reads


@dataclass(frozen=True, slots=True)
class Rules:
    """How conversations and responses are counted (settings; changing them needs a rebuild)."""

    gap: timedelta = timedelta(hours=24)
    senders: frozenset[SenderKind] | None = None  # the senders whose replies count; None: all
    hours: BusinessHours | None = None  # the clock runs only inside them; None: always

    def counts(self, sender: SenderKind) -> bool:
        return self.senders is None or sender in self.senders

    def outcome(self, messages: Iterable[Message], now: datetime) -> Outcome:
        return track(
            messages,
            now,
            gap=self.gap,
            counts=every_sender if self.senders is None else self.counts,
            hours=self.hours,
        )


def conversation_row(pair: Pair, conversation: Conversation, first: float | None) -> dict[str, Any]:
    return {
        "phone_number_id": pair[0],
        "customer": pair[1],
        "started_at": conversation.started_at,
        "last_at": conversation.last_at,
        "messages": conversation.messages,
        "by_customer": conversation.by_customer,
        "customer_wrote": conversation.customer_wrote,
        "answered": conversation.answered,
        "first_response_seconds": first,
        "unanswered_runs": conversation.unanswered_runs,
        "waiting_since": conversation.waiting_since,
        "ended": conversation.ended,
    }


def contribution(row: Mapping[str, Any]) -> tuple[int, ...]:
    """What a stored conversation adds to its hour's counters (``CONVERSATION_COUNTERS``:
    conversations, by customer, answered, unanswered, unanswered runs)."""
    ended, answered = bool(row["ended"]), bool(row["answered"])
    return (
        1,
        int(bool(row["by_customer"])),
        int(answered),
        int(ended and bool(row["customer_wrote"]) and not answered),
        int(row["unanswered_runs"]) if ended else 0,
    )


def count_conversation(deltas: Deltas, row: Mapping[str, Any], sign: int) -> None:
    counts = contribution(row)
    deltas.conversation(row["phone_number_id"], row["started_at"], [sign * v for v in counts])


def _response_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        row["asked_at"],
        row["answered_at"],
        row["sender_kind"],
        bool(row["first"]),
        round(float(row["seconds"]), 3),
    )


def _response_row(pair: Pair, response: Response) -> dict[str, Any]:
    return {
        "phone_number_id": pair[0],
        "customer": pair[1],
        "asked_at": response.asked_at,
        "answered_at": response.answered_at,
        "seconds": response.seconds,
        "sender_kind": response.sender.value,
        "first": response.first,
    }


def count_response(deltas: Deltas, row: Mapping[str, Any], sign: int) -> None:
    deltas.response(
        row["phone_number_id"],
        row["sender_kind"],
        row["asked_at"],
        float(row["seconds"]),
        bool(row["first"]),
        sign,
    )


def recompute(
    conn: Connection,
    touched: Mapping[Pair, Sequence[Touch]],
    now: datetime,
    rules: Rules,
    deltas: Deltas,
) -> None:
    """Bring the conversations and responses of the ``touched`` pairs up to date. Each pair
    maps to what changed among its messages: the earliest time the change concerns, and the
    message when it is new (``None`` when a stored message moved, failed or changed sender).
    New messages later than everything stored extend the pair's last conversation directly;
    anything else has the pair computed again from its stored messages."""
    pairs = sorted(touched)
    for start in range(0, len(pairs), PAIRS_PER_QUERY):
        chunk = {p: touched[p] for p in pairs[start : start + PAIRS_PER_QUERY]}
        _recompute(conn, chunk, now, rules, deltas)


def _recompute(
    conn: Connection,
    touched: Mapping[Pair, Sequence[Touch]],
    now: datetime,
    rules: Rules,
    deltas: Deltas,
) -> None:
    writes = _Writes()
    earliest = {pair: _earliest(items) for pair, items in touched.items()}
    # Conversations a change at t can belong to, or follow: those that end within the gap
    # before t, and every later one.
    old: dict[Pair, list[dict[str, Any]]] = {p: [] for p in touched}
    reach = [(*pair, at - rules.gap) for pair, at in earliest.items()]
    dialect = conn.dialect.name
    found_rows = conn.execute(_statement(dialect, "conversations"), _params(dialect, reach))
    for found in found_rows.mappings():
        old[(found["phone_number_id"], found["customer"])].append(dict(found))
    slow: dict[Pair, datetime] = {}
    for pair, items in touched.items():
        if not _extend(pair, old[pair], items, now, rules, deltas, writes):
            slow[pair] = min([earliest[pair], *(row["started_at"] for row in old[pair])])
    if slow:
        _recompute_from_messages(conn, slow, old, now, rules, deltas, writes)
    writes.apply(conn)


def _earliest(items: Sequence[Touch]) -> datetime:
    return min(at for at, _ in items)


def _extend(
    pair: Pair,
    old: list[dict[str, Any]],
    items: Sequence[Touch],
    now: datetime,
    rules: Rules,
    deltas: Deltas,
    writes: _Writes,
) -> bool:
    """The fast path: new messages later than everything stored extend the pair's last
    conversation (or start one) exactly as :func:`track` would; ``False`` when they do not
    qualify and the pair must be computed from its messages."""
    if any(message is None for _, message in items):
        return False
    messages = sorted(
        (message for _, message in items if message is not None),
        key=lambda message: (message.at, not message.inbound),
    )
    last = max(old, key=lambda row: row["started_at"]) if old else None
    if last is not None and (messages[0].at <= last["last_at"] or last["ended"]):
        return False
    current = dict(last) if last is not None else None
    changed: list[dict[str, Any]] = []
    for message in messages:
        if current is None or message.at - current["last_at"] > rules.gap:
            if current is not None:
                _ended(current)
                changed.append(current)
            current = _opened(pair, message)
        current["last_at"] = message.at
        current["messages"] += 1
        if message.inbound:
            current["customer_wrote"] = True
            current["waiting_since"] = current["waiting_since"] or message.at
        elif current["waiting_since"] is not None and rules.counts(message.sender):
            asked = current["waiting_since"]
            seconds = (
                rules.hours.seconds_between(asked, message.at)
                if rules.hours is not None
                else (message.at - asked).total_seconds()
            )
            first = not current["answered"]
            response = Response(asked, message.at, seconds, message.sender, first)
            writes.new_responses.append(_response_row(pair, response))
            count_response(deltas, writes.new_responses[-1], 1)
            if first:
                current["first_response_seconds"] = seconds
            current["answered"], current["waiting_since"] = True, None
    assert current is not None
    if now - current["last_at"] > rules.gap:
        _ended(current)
    changed.append(current)
    for row in changed:
        before = last if last is not None and row.get("id") == last["id"] else None
        if before is not None:
            writes.changed_conversations.append((before["id"], _without_id(row)))
            count_conversation(deltas, before, -1)
        else:
            writes.new_conversations.append(_without_id(row))
        count_conversation(deltas, row, 1)
    return True


def _opened(pair: Pair, message: Message) -> dict[str, Any]:
    return {
        "phone_number_id": pair[0],
        "customer": pair[1],
        "started_at": message.at,
        "last_at": message.at,
        "messages": 0,
        "by_customer": message.inbound,
        "customer_wrote": False,
        "answered": False,
        "first_response_seconds": None,
        "unanswered_runs": 0,
        "waiting_since": None,
        "ended": False,
    }


def _ended(row: dict[str, Any]) -> None:
    """A conversation is over: a run still waiting in an answered one is left unanswered."""
    if row["waiting_since"] is not None and row["answered"]:
        row["unanswered_runs"] += 1
    row["ended"], row["waiting_since"] = True, None


def _without_id(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "id"}


def _recompute_from_messages(
    conn: Connection,
    since: Mapping[Pair, datetime],
    old: Mapping[Pair, list[dict[str, Any]]],
    now: datetime,
    rules: Rules,
    deltas: Deltas,
    writes: _Writes,
) -> None:
    bounds = [(*pair, at) for pair, at in since.items()]
    messages: dict[Pair, list[Message]] = {p: [] for p in since}
    dialect = conn.dialect.name
    for phone, customer, at, inbound, sender, status in conn.execute(
        _statement(dialect, "messages"), _params(dialect, bounds)
    ):
        kind = SenderKind.parse(sender) or SenderKind.UNKNOWN
        messages[(phone, customer)].append(Message(at, bool(inbound), kind, status == _FAILED))
    stored: dict[Pair, list[dict[str, Any]]] = {p: [] for p in since}
    found_rows = conn.execute(_statement(dialect, "responses"), _params(dialect, bounds))
    for found in found_rows.mappings():
        stored[(found["phone_number_id"], found["customer"])].append(dict(found))
    for pair in since:
        fresh_conversations, fresh_responses = rows_of(pair, rules.outcome(messages[pair], now))
        was = {row["started_at"]: row for row in old[pair]}
        for row in fresh_conversations:
            before = was.pop(row["started_at"], None)
            if before is None:
                writes.new_conversations.append(row)
                count_conversation(deltas, row, 1)
            elif any(before[k] != v for k, v in row.items()):
                writes.changed_conversations.append((before["id"], row))
                count_conversation(deltas, before, -1)
                count_conversation(deltas, row, 1)
        for before in was.values():
            writes.stale_conversations.append(before["id"])
            count_conversation(deltas, before, -1)
        unmatched: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for row in stored[pair]:
            unmatched.setdefault(_response_key(row), []).append(row)
        for row in fresh_responses:
            same = unmatched.get(_response_key(row))
            if same:
                same.pop()  # already stored
                continue
            writes.new_responses.append(row)
            count_response(deltas, row, 1)
        for rows in unmatched.values():
            for row in rows:
                writes.stale_responses.append(row["id"])
                count_response(deltas, row, -1)


_KEYS = (String(), String(), schema.UTCDateTime())


def _params(dialect: str, bounds: list[tuple[str, str, datetime]]) -> dict[str, Any]:
    return keys.params(dialect, len(_KEYS), bounds)


@functools.cache
def _statement(dialect: str, name: str) -> Any:
    """The rows of ``name`` for each (number, customer) from its bound on: a statement built
    once per database kind (see :mod:`waquality.store.keys`)."""
    table = KeyTable(dialect, _KEYS)
    phone, customer, bound = table.columns
    if name == "conversations":
        on = and_(c.c.phone_number_id == phone, c.c.customer == customer, c.c.last_at >= bound)
        # locked against end_idle, which skips what is locked
        return select(c).select_from(table.table).join(c, on).with_for_update(of=c)
    if name == "messages":
        on = and_(m.c.phone_number_id == phone, m.c.customer == customer, m.c.at >= bound)
        columns = (m.c.phone_number_id, m.c.customer, m.c.at, m.c.inbound, m.c.sender_kind)
        return select(*columns, m.c.status).select_from(table.table).join(m, on)
    on = and_(r.c.phone_number_id == phone, r.c.customer == customer, r.c.asked_at >= bound)
    return select(r).select_from(table.table).join(r, on)


@dataclass(slots=True)
class _Writes:
    """What a batch changes in conversations and responses, written at the end."""

    stale_conversations: list[int] = field(default_factory=list)
    changed_conversations: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    new_conversations: list[dict[str, Any]] = field(default_factory=list)
    stale_responses: list[int] = field(default_factory=list)
    new_responses: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, conn: Connection) -> None:
        if self.stale_conversations:
            conn.execute(delete(c).where(c.c.id.in_(self.stale_conversations)))
        changed = [{**row, "id": row_id} for row_id, row in self.changed_conversations]
        bulk.update(conn, c, changed, by=("id",))
        bulk.insert(conn, c, self.new_conversations)
        if self.stale_responses:
            conn.execute(delete(r).where(r.c.id.in_(self.stale_responses)))
        bulk.insert(conn, r, self.new_responses)


def rows_of(pair: Pair, outcome: Outcome) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A pair's conversations and responses as rows."""
    return (
        [
            conversation_row(pair, conversation, _first_seconds(conversation, outcome.responses))
            for conversation in outcome.conversations
        ],
        [_response_row(pair, response) for response in outcome.responses],
    )


def _first_seconds(conversation: Conversation, responses: Sequence[Response]) -> float | None:
    for response in responses:
        if response.first and conversation.started_at <= response.asked_at <= conversation.last_at:
            return response.seconds
    return None


def end_idle(
    conn: Connection, now: datetime, rules: Rules, deltas: Deltas, limit: int = 1000
) -> int:
    """Mark conversations whose gap has passed as ended (a run still waiting is then left
    unanswered); returns how many."""
    query = (
        select(c)
        .where(c.c.ended == false(), c.c.last_at < now - rules.gap)
        .order_by(c.c.last_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = [dict(row) for row in conn.execute(query).mappings()]
    for before in rows:
        after = {
            **before,
            "ended": True,
            "unanswered_runs": before["unanswered_runs"]
            + int(before["waiting_since"] is not None and bool(before["answered"])),
            "waiting_since": None,
        }
        count_conversation(deltas, before, -1)
        count_conversation(deltas, after, 1)
        conn.execute(
            update(c)
            .where(c.c.id == before["id"])
            .values(
                ended=True,
                unanswered_runs=after["unanswered_runs"],
                waiting_since=None,
            )
        )
    return len(rows)
