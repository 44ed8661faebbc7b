"""Conversations and responses, kept up to date as messages arrive, in any order.

When messages of a (business number, customer) pair change, the pair's conversations from the
one the earliest change falls into onwards are computed again from the stored messages (the
pure :func:`waquality.domain.responses.track`) and compared with the stored ones: only what
differs is written — a reply arriving in order writes its one response — and the aggregates get
the difference (:mod:`waquality.store.stats`). A conversation ends once the inactivity gap has
passed; :func:`end_idle` marks those that ended without a new message.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, false, or_, select, update

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
from waquality.store import schema
from waquality.store.stats import Deltas

Pair = tuple[str, str]  # phone number id, customer
c, r, m = schema.conversations, schema.responses, schema.messages
_FAILED = MessageStatus.FAILED.value
END_BATCH = 1000  # conversations ended per transaction
PAIRS_PER_QUERY = 200  # pairs whose rows one statement reads


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


def contribution(row: Mapping[str, Any]) -> Counter[str]:
    """What a stored conversation adds to its hour's counters."""
    ended, answered = bool(row["ended"]), bool(row["answered"])
    return Counter(
        conversations=1,
        by_customer=int(bool(row["by_customer"])),
        answered=int(answered),
        unanswered=int(ended and bool(row["customer_wrote"]) and not answered),
        unanswered_runs=int(row["unanswered_runs"]) if ended else 0,
    )


def count_conversation(deltas: Deltas, row: Mapping[str, Any], sign: int) -> None:
    counts = contribution(row)
    deltas.conversation(
        row["phone_number_id"], row["started_at"], {k: sign * v for k, v in counts.items()}
    )


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


def _pairs_from(table: Any, column: Any, bounds: Mapping[Pair, datetime]) -> Any:
    """Rows of these pairs from their bound on, as one condition per pair: both databases
    then search the pair index once per pair (a row-value IN list may make SQLite scan)."""
    return or_(
        *(
            and_(table.c.phone_number_id == phone, table.c.customer == customer, column >= bound)
            for (phone, customer), bound in bounds.items()
        )
    )


def recompute(
    conn: Connection,
    touched: Mapping[Pair, datetime],
    now: datetime,
    rules: Rules,
    deltas: Deltas,
) -> None:
    """Bring the conversations and responses of ``touched`` pairs up to date; each pair maps
    to the earliest time at which one of its messages changed."""
    pairs = sorted(touched)
    for start in range(0, len(pairs), PAIRS_PER_QUERY):
        chunk = pairs[start : start + PAIRS_PER_QUERY]
        _recompute(conn, {p: touched[p] for p in chunk}, now, rules, deltas)


def _recompute(
    conn: Connection,
    touched: Mapping[Pair, datetime],
    now: datetime,
    rules: Rules,
    deltas: Deltas,
) -> None:
    pairs = list(touched)
    # Conversations a change at t can belong to, or follow: those that end within the gap
    # before t, and every later one.
    old: dict[Pair, list[dict[str, Any]]] = {p: [] for p in pairs}
    reach = {pair: at - rules.gap for pair, at in touched.items()}
    query = (
        select(c)
        .where(_pairs_from(c, c.c.last_at, reach))
        .order_by(c.c.id)
        .with_for_update()  # against end_idle, which skips what is locked
    )
    for found in conn.execute(query).mappings():
        old[(found["phone_number_id"], found["customer"])].append(dict(found))
    since = {p: min([touched[p], *(row["started_at"] for row in old[p])]) for p in pairs}
    messages: dict[Pair, list[Message]] = {p: [] for p in pairs}
    query_m = select(
        m.c.phone_number_id, m.c.customer, m.c.at, m.c.inbound, m.c.sender_kind, m.c.status
    ).where(_pairs_from(m, m.c.at, since))
    for phone, customer, at, inbound, sender, status in conn.execute(query_m):
        kind = SenderKind.parse(sender) or SenderKind.UNKNOWN
        messages[(phone, customer)].append(Message(at, bool(inbound), kind, status == _FAILED))
    stored: dict[Pair, list[dict[str, Any]]] = {p: [] for p in pairs}
    query_r = select(r).where(_pairs_from(r, r.c.asked_at, since))
    for found in conn.execute(query_r).mappings():
        stored[(found["phone_number_id"], found["customer"])].append(dict(found))
    stale_conversations: list[int] = []
    stale_responses: list[int] = []
    new_conversations: list[dict[str, Any]] = []
    new_responses: list[dict[str, Any]] = []
    changed_conversations: list[tuple[int, dict[str, Any]]] = []
    for pair in pairs:
        fresh_conversations, fresh_responses = rows_of(pair, rules.outcome(messages[pair], now))
        was = {row["started_at"]: row for row in old[pair]}
        for row in fresh_conversations:
            before = was.pop(row["started_at"], None)
            if before is None:
                new_conversations.append(row)
                count_conversation(deltas, row, 1)
            elif any(before[k] != v for k, v in row.items()):
                changed_conversations.append((before["id"], row))
                count_conversation(deltas, before, -1)
                count_conversation(deltas, row, 1)
        for before in was.values():
            stale_conversations.append(before["id"])
            count_conversation(deltas, before, -1)
        unmatched: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for row in stored[pair]:
            unmatched.setdefault(_response_key(row), []).append(row)
        for row in fresh_responses:
            same = unmatched.get(_response_key(row))
            if same:
                same.pop()  # already stored
                continue
            new_responses.append(row)
            count_response(deltas, row, 1)
        for rows in unmatched.values():
            for row in rows:
                stale_responses.append(row["id"])
                count_response(deltas, row, -1)
    _write(
        conn,
        stale_conversations,
        changed_conversations,
        new_conversations,
        stale_responses,
        new_responses,
    )


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


def _write(
    conn: Connection,
    stale_conversations: list[int],
    changed_conversations: list[tuple[int, dict[str, Any]]],
    new_conversations: list[dict[str, Any]],
    stale_responses: list[int],
    new_responses: list[dict[str, Any]],
) -> None:
    if stale_conversations:
        conn.execute(delete(c).where(c.c.id.in_(stale_conversations)))
    for row_id, row in changed_conversations:
        conn.execute(update(c).where(c.c.id == row_id).values(**row))
    if new_conversations:
        conn.execute(c.insert(), new_conversations)
    if stale_responses:
        conn.execute(delete(r).where(r.c.id.in_(stale_responses)))
    if new_responses:
        conn.execute(r.insert(), new_responses)


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
