"""The conversation tracker's writer: messages in, messages, conversations, responses and
per-hour aggregates out, in the caller's transaction.

Processing calls :meth:`Tracker.apply` with every message item of a batch (webhook statuses and
inbound messages) and the API with what a business logs; the same path serves both, so the
aggregates are the same whichever way a message became known. Customer ids are hashed and
message bodies dropped here, before anything is stored, when the privacy settings say so.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from waquality.config import Settings
from waquality.domain import delivery, privacy
from waquality.domain.enums import PreferenceValue, SenderKind
from waquality.domain.messages import Inbound, Item, Outbound, Row, Status
from waquality.domain.responses import Message, duration_label, parse_business_hours
from waquality.store import conversations, messages, stats
from waquality.store.conversations import Pair, Rules, Touch
from waquality.store.database import Database


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    rules: Rules = field(default_factory=Rules)
    zone: str = "UTC"  # hours, days and weeks of the aggregates
    customer_key: bytes | None = None  # set: customer ids are stored as keyed hashes
    keep_bodies: bool = True  # False: message text is never stored
    # response-time targets reported by summaries: label → seconds
    targets: tuple[tuple[str, float], ...] = (("1m", 60.0), ("5m", 300.0), ("1h", 3600.0))


@dataclass(frozen=True, slots=True)
class Preference:
    """A customer's stop or resume of marketing messages (``user_preferences``)."""

    phone_number_id: str
    at: datetime
    value: PreferenceValue


def tracker_config(settings: Settings) -> TrackerConfig:
    key = settings.customer_id_key
    return TrackerConfig(
        rules=Rules(
            gap=settings.conversation_gap,
            senders=frozenset(SenderKind(s) for s in settings.response_senders) or None,
            hours=parse_business_hours(settings.business_hours, settings.time_zone)
            if settings.business_hours
            else None,
        ),
        zone=settings.time_zone,
        customer_key=key.get_secret_value().encode() if key is not None else None,
        keep_bodies=settings.message_bodies,
        targets=tuple((duration_label(t), t.total_seconds()) for t in settings.response_targets),
    )


def configured(db: Database, settings: Settings) -> Tracker | None:
    """The tracker the settings ask for (``None`` when tracking is off)."""
    return Tracker(db, tracker_config(settings)) if settings.tracker else None


_PREFERENCE_COUNTS = {
    PreferenceValue.STOP: delivery.OPT_OUT,
    PreferenceValue.RESUME: delivery.RESUME,
}


class Tracker:
    def __init__(self, db: Database, config: TrackerConfig | None = None) -> None:
        self.db = db
        self.config = config or TrackerConfig()

    def private(self, item: Item) -> Item:
        """``item`` as it may be stored."""
        key = self.config.customer_key
        changes: dict[str, Any] = {}
        if key is not None and item.customer is not None:
            changes["customer"] = privacy.pseudonym(item.customer, key)
        if not self.config.keep_bodies and not isinstance(item, Status) and item.text is not None:
            changes["text"] = None
        return dataclasses.replace(item, **changes) if changes else item

    def apply(
        self,
        conn: Connection,
        items: Sequence[Item],
        now: datetime,
        preferences: Sequence[Preference] = (),
    ) -> int:
        """Record ``items`` and everything that follows from them; returns how many messages
        changed."""
        deltas = stats.Deltas(zone=self.config.zone)
        for preference in preferences:
            counts = _PREFERENCE_COUNTS.get(preference.value)
            if counts is not None:
                deltas.deliveries(preference.phone_number_id, stats.ALL, preference.at, counts)
        stored = [self.private(item) for item in items]
        lock_pairs(conn, (_pair_of(item) for item in stored))
        changes = messages.merge_items(conn, stored, now)
        touched: dict[Pair, list[Touch]] = {}
        for before, after in changes:
            _delivery(deltas, before, after)
            _touch(touched, before, after)
        if touched:
            conversations.recompute(conn, touched, now, self.config.rules, deltas)
        stats.write(conn, deltas)
        return len(changes)

    def end_idle(self, now: datetime) -> int:
        """End the conversations whose gap has passed; returns how many."""
        total = 0
        while True:
            deltas = stats.Deltas(zone=self.config.zone)
            with self.db.write() as conn:
                ended = conversations.end_idle(conn, now, self.config.rules, deltas)
                stats.write(conn, deltas)
            total += ended
            if ended < conversations.END_BATCH:
                return total


def _pair_of(item: Item | Row | None) -> Pair | None:
    if item is None:
        return None
    if isinstance(item, Inbound | Status | Outbound):
        phone, customer = item.phone_number_id, item.customer
    else:
        phone, customer = item.get("phone_number_id"), item.get("customer")
    return (phone, customer) if phone and customer else None


def _touch(touched: dict[Pair, list[Touch]], before: Row | None, after: Row) -> None:
    """Note what a message's change means for its pair's conversations."""
    if _timing(before) == _timing(after):
        return  # delivered, read, played: nothing changes for response times
    failed = after.get("status") == "failed"
    pair = _pair_of(after)
    if before is None:
        if failed or pair is None or after.get("at") is None:
            return  # failed from the start (a refused send): never part of a conversation
        sender = SenderKind.parse(after.get("sender_kind")) or SenderKind.UNKNOWN
        message = Message(after["at"], bool(after["inbound"]), sender, False)
        touched.setdefault(pair, []).append((after["at"], message))
        return
    for row in (before, after):
        pair = _pair_of(row)
        if pair is not None and row.get("at") is not None:
            touched.setdefault(pair, []).append((row["at"], None))


def _timing(row: Row | None) -> tuple[Any, ...] | None:
    """What of a message response times depend on."""
    if row is None:
        return None
    return (
        _pair_of(row),
        row.get("at"),
        row["inbound"],
        row.get("sender_kind"),
        row.get("status") == "failed",
    )


def _delivery(deltas: stats.Deltas, before: Row | None, after: Row) -> None:
    old, new = delivery.contribution(before), delivery.contribution(after)
    if old == new:
        return
    for found, sign in ((old, -1), (new, 1)):
        if found is not None:
            deltas.deliveries(
                found.phone_number_id,
                found.template,
                found.at,
                found.counts,
                found.error_code,
                sign,
            )


def lock_pairs(conn: Connection, pairs: Iterable[Pair | None]) -> None:
    """Serialise writers of the same pairs on PostgreSQL (transaction-scoped advisory locks,
    taken in one order so two writers never wait on each other in a circle). SQLite has one
    writer already."""
    if conn.dialect.name != "postgresql":
        return
    keys = sorted(
        {
            int.from_bytes(
                hashlib.blake2b(f"{p[0]}|{p[1]}".encode(), digest_size=8).digest(),
                "big",
                signed=True,
            )
            for p in pairs
            if p is not None
        }
    )
    if keys:
        conn.execute(
            text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) k"),
            {"keys": keys},
        )
