"""Webhook bodies that tell a :class:`message_set.MessageSet` the way Meta would: each customer
message as a ``messages[]`` item, each outbound message's statuses (sent, delivered, read,
failed with its error) as ``statuses[]`` items at their own times, tagged messages with their
``biz_opaque_callback_data`` (sender kind, template). Items of one business number are batched
in time order, 3 to 5 statuses or 1 to 3 customer messages to a body (held back while at most
:data:`HOLD_EVENTS` other items come, so bodies keep about the order of events); every 20th
body is a batch of management changes (:meth:`bodies.BodyFactory.management`), so 95% are
``messages`` changes as in the ingestion benchmark.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

import bodies
import message_set as ms
from waquality.domain import tags
from waquality.domain.enums import SenderKind

MANAGEMENT_EVERY = 20
HOLD_EVENTS = 50
Json = dict[str, Any]
_ERROR_TITLES = {
    131049: "This message was not delivered to maintain healthy ecosystem engagement.",
    131026: "Message undeliverable",
    131047: "Re-engagement message",
    130429: "Rate limit hit",
    131048: "Spam rate limit hit",
}


@dataclass(slots=True)
class Traffic:
    bodies: list[tuple[bytes, datetime]] = field(default_factory=list)  # body, received at
    counts: list[int] = field(default_factory=list)  # message items in each body

    @property
    def items(self) -> int:
        """Message items (customer messages and statuses) in all bodies."""
        return sum(self.counts)

    @property
    def last(self) -> datetime:
        return max(at for _, at in self.bodies)


@dataclass(slots=True)
class _Pending:
    items: list[Json] = field(default_factory=list)
    contacts: dict[str, Json] = field(default_factory=dict)
    first_event: int = 0
    size: int = 1


def traffic(found: ms.MessageSet, count: int, seed: int = ms.DEFAULT_SEED) -> Traffic:
    """The first ``count`` bodies of the set's traffic."""
    rng = random.Random(seed)
    factory = bodies.BodyFactory(seed)
    wamids = found.wamids(0, len(found))
    events = _events(found)
    result = Traffic()
    pending: dict[tuple[int, bool], _Pending] = {}

    def flush(key: tuple[int, bool], now: int) -> None:
        batch = pending.pop(key)
        if len(result.bodies) % MANAGEMENT_EVERY == MANAGEMENT_EVERY - 1:
            when = datetime.fromtimestamp(now, UTC)
            result.bodies.append((factory.management(len(result.bodies)), when))
            result.counts.append(0)
        phone, inbound = key
        value: Json = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": found.displays[phone],
                "phone_number_id": found.phones[phone],
            },
        }
        if inbound:
            value["contacts"] = list(batch.contacts.values())
            value["messages"] = batch.items
        else:
            value["statuses"] = batch.items
        payload = {
            "object": "whatsapp_business_account",
            "entry": [
                {"id": found.wabas[phone], "changes": [{"field": "messages", "value": value}]}
            ],
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        result.bodies.append((body, datetime.fromtimestamp(now, UTC)))
        result.counts.append(len(batch.items))

    for number, (index, status, at) in enumerate(events):
        if len(result.bodies) >= count:
            break
        for key in [k for k, p in pending.items() if number - p.first_event > HOLD_EVENTS]:
            flush(key, at)
        phone = int(found.pair_phone[found.pair[index]])
        inbound = status < 0
        batch = pending.get((phone, inbound))
        if batch is None:
            sizes = (1, 1, 2, 3) if inbound else (3, 3, 4, 4, 4, 5)
            batch = pending[(phone, inbound)] = _Pending(first_event=number, size=rng.choice(sizes))
        customer = found.customers[int(found.pair[index])]
        if inbound:
            batch.items.append(_inbound(found, index, wamids, customer))
            batch.contacts[customer] = {"profile": {"name": "Customer"}, "wa_id": customer}
        else:
            batch.items.append(_status(found, index, status, at, wamids[index], customer))
        if len(batch.items) >= batch.size:
            flush((phone, inbound), at)
    return Traffic(result.bodies[:count], result.counts[:count])


def _events(found: ms.MessageSet) -> list[tuple[int, int, int]]:
    """(message, status or -1 for a customer message, time), in time order."""
    index = np.arange(len(found))
    parts = [(index[found.inbound], -1, found.at[found.inbound])]
    for status, column in (
        (ms.SENT, found.sent_at),
        (ms.DELIVERED, found.delivered_at),
        (ms.READ, found.read_at),
        (ms.FAILED, found.failed_at),
    ):
        seen = column >= 0
        parts.append((index[seen], status, column[seen]))
    messages = np.concatenate([p[0] for p in parts])
    statuses = np.concatenate([np.full(len(p[0]), p[1]) for p in parts])
    times = np.concatenate([p[2] for p in parts])
    order = np.lexsort((statuses, messages, times))
    return list(
        zip(messages[order].tolist(), statuses[order].tolist(), times[order].tolist(), strict=True)
    )


def _inbound(found: ms.MessageSet, index: int, wamids: list[str], customer: str) -> Json:
    item: Json = {"from": customer, "id": wamids[index], "timestamp": str(int(found.at[index]))}
    kind = ms.KINDS[int(found.kind[index])]
    body = int(found.body[index])
    if kind == "button":
        payload = ms.BUTTONS[int(found.reply_id[index])]
        item.update(type="button", button={"payload": payload, "text": payload})
    elif kind == "interactive:button_reply":
        choice = ms.BUTTONS[int(found.reply_id[index])]
        reply = {"id": f"option-{int(found.reply_id[index])}", "title": choice}
        item.update(type="interactive", interactive={"type": "button_reply", "button_reply": reply})
    elif kind == "image":
        media = hashlib.blake2b(wamids[index].encode(), digest_size=8).hexdigest()
        item.update(type="image", image={"mime_type": "image/jpeg", "id": media})
    elif kind == "reaction":
        item.update(type="reaction", reaction={"message_id": wamids[index - 1], "emoji": "👍"})
    else:
        item.update(type="text", text={"body": ms.PHRASES[body] if body >= 0 else "hi"})
    replies_to = int(found.replies_to[index])
    if replies_to >= 0:
        item["context"] = {"from": found.displays[0], "id": wamids[replies_to]}
    return item


def _status(
    found: ms.MessageSet, index: int, status: int, at: int, wamid: str, customer: str
) -> Json:
    item: Json = {
        "id": wamid,
        "status": ms.STATUSES[status],
        "timestamp": str(at),
        "recipient_id": customer,
    }
    sender = ms.SENDERS[int(found.sender[index])]
    template = int(found.template[index])
    if sender != "unknown":
        found_tags = tags.Tags(
            sender=SenderKind(sender), template=ms.TEMPLATES[template] if template >= 0 else None
        )
        item["biz_opaque_callback_data"] = tags.encode(found_tags)
    if status == ms.FAILED:
        code = int(found.error_code[index])
        title = _ERROR_TITLES.get(code, "Message failed")
        item["errors"] = [
            {"code": code, "title": title, "message": title, "error_data": {"details": title}}
        ]
        return item
    category = ms.CATEGORIES[max(int(found.category[index]), 0)]
    conversation_id = hashlib.md5(customer.encode()).hexdigest()  # noqa: S324
    bodies.add_conversation(item, conversation_id, at, category)
    return item
