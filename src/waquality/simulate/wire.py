"""What the platform puts on the wire for the simulated messages: ``messages`` and
``user_preferences`` change values shaped as Meta sends them (statuses with callback tags,
pricing and errors; inbound messages of every kind the journeys use), each arriving a moment
after it happened — now and then much later, so statuses and messages arrive out of order —;
changes batched into POSTs, a few POSTs sent twice and a few changes sent again in a later
batch; and the log entries the business's sending system posts to ``/api/v1/messages``.
Pure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from waquality.domain.enums import SenderKind
from waquality.domain.tags import Tags, encode
from waquality.simulate.records import Post, iso
from waquality.simulate.script import In, Item, Out, Preference
from waquality.simulate.story import Management

BATCH_WINDOW = timedelta(seconds=2)  # changes this close together may share a POST
REDELIVERED_POSTS = 0.008  # share of POSTs Meta sends again (same bytes)
REBATCHED_CHANGES = 0.004  # share of changes sent again inside a later POST
HREF = "/documentation/business-messaging/whatsapp/support/error-codes"
ERRORS: dict[int, tuple[str, str]] = {  # code → (title, details)
    131026: (
        "Message undeliverable",
        "Unable to deliver message. The recipient may not be on WhatsApp or may use an old "
        "version.",
    ),
    131047: (
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last "
        "replied to this number.",
    ),
    131048: (
        "Spam rate limit hit",
        "Message failed to send because there are restrictions on how many messages can be sent "
        "from this phone number.",
    ),
    131049: (
        "This message was not delivered to maintain healthy ecosystem engagement.",
        "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
    ),
    131050: (
        "Unable to deliver the marketing message",
        "The user has stopped receiving marketing messages from this business.",
    ),
    131051: ("Message type unknown", "Message type is currently not supported."),
    132015: ("Template is Paused", "The template is paused because of low quality."),
    130429: ("Rate limit hit", "Cloud API message throughput has been reached."),
}


@dataclass(frozen=True, slots=True)
class Change:
    """One ``changes[]`` item and when it reaches the endpoint."""

    arrive: datetime
    waba_id: str
    field: str
    value: dict[str, Any]
    time: int | None = None  # entry.time (management fields carry it, messages do not)
    again: bool = False  # a re-batched copy


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _error(code: int) -> dict[str, Any]:
    title, details = ERRORS[code]
    return {
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": details},
        "href": HREF,
    }


def _lag(rng: random.Random) -> timedelta:
    if rng.random() < 0.03:
        return timedelta(seconds=rng.uniform(5, 180))
    return timedelta(seconds=rng.uniform(0.2, 2.5))


def _messages_value(out_or_in: Out | In | Preference) -> dict[str, Any]:
    phone = out_or_in.phone
    return {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": phone.display, "phone_number_id": phone.id},
    }


def tags(out: Out) -> str:
    template = out.template.name if out.template else None
    sender = SenderKind(out.sender)
    return encode(Tags(sender, out.journey, out.step, out.experiments, template))


def _pricing(out: Out) -> dict[str, Any]:
    if out.template is None:
        return {
            "billable": False,
            "pricing_model": "PMP",
            "type": "free_customer_service",
            "category": "service",
        }
    return {
        "billable": True,
        "pricing_model": "PMP",
        "type": "regular",
        "category": out.template.category.lower(),
    }


def status_changes(out: Out, rng: random.Random) -> list[Change]:
    statuses = sorted(out.statuses, key=lambda s: s[1])
    names = [s for s, _, _ in statuses]
    if "read" in names and "delivered" in names:
        delivered = next(t for s, t, _ in statuses if s == "delivered")
        read = next(t for s, t, _ in statuses if s == "read")
        if read - delivered < timedelta(seconds=3) and rng.random() < 0.3:
            statuses = [s for s in statuses if s[0] != "delivered"]  # Meta folds them together
    priced = {"sent", "delivered" if "delivered" in [s for s, _, _ in statuses] else "read"}
    found = []
    for status, at, code in statuses:
        item: dict[str, Any] = {
            "id": out.wamid,
            "status": status,
            "timestamp": str(_unix(at)),
            "recipient_id": out.customer.wa_id,
            "biz_opaque_callback_data": tags(out),
        }
        if status in priced:
            item["pricing"] = _pricing(out)
        if code is not None:
            item["errors"] = [_error(code)]
        value = {**_messages_value(out), "statuses": [item]}
        found.append(Change(at + _lag(rng), out.phone.waba_id, "messages", value))
    return found


def inbound_change(message: In, rng: random.Random) -> Change:
    item: dict[str, Any] = {
        "from": message.customer.wa_id,
        "id": message.wamid,
        "timestamp": str(_unix(message.at)),
        "type": message.kind,
    }
    if message.replies_to is not None:
        item["context"] = {"from": message.phone.display, "id": message.replies_to}
    if message.kind == "unsupported":
        item["errors"] = [_error(131051)]
    else:
        item[message.kind] = message.content
    value = {
        **_messages_value(message),
        "contacts": [{"profile": {"name": message.customer.name}, "wa_id": message.customer.wa_id}],
        "messages": [item],
    }
    return Change(message.at + _lag(rng), message.phone.waba_id, "messages", value)


def preference_change(preference: Preference, rng: random.Random) -> Change:
    wa_id = preference.customer.wa_id
    verb = "stop" if preference.value == "stop" else "resume"
    value = {
        **_messages_value(preference),
        "contacts": [{"wa_id": wa_id}],
        "user_preferences": [
            {
                "wa_id": wa_id,
                "detail": f"User requested to {verb} marketing messages",
                "category": "marketing_messages",
                "value": preference.value,
                "timestamp": _unix(preference.at),
            }
        ],
    }
    lag = timedelta(seconds=rng.uniform(1, 6))
    return Change(preference.at + lag, preference.phone.waba_id, "user_preferences", value)


def management_change(happening: Management, rng: random.Random) -> Change:
    lag = timedelta(seconds=rng.uniform(1, 20))
    time = None if happening.field == "messages" else _unix(happening.at)  # as Meta does
    return Change(happening.at + lag, happening.waba_id, happening.field, happening.value, time)


def changes(item: Item, rng: random.Random) -> list[Change]:
    match item:
        case Out():
            return status_changes(item, rng) if item.refused is None else []
        case In():
            return [inbound_change(item, rng)]
        case Preference():
            return [preference_change(item, rng)]


def logged(out: Out) -> dict[str, Any] | None:
    """What the sending system logs about one of its messages (None: it does not log it)."""
    if not out.logged and out.refused is None:
        return None
    entry: dict[str, Any] = {
        "phone_number_id": out.phone.id,
        "to": out.customer.wa_id,
        "timestamp": iso(out.at),
        "type": out.kind,
        "sender": out.sender,
    }
    if out.refused is None:
        entry = {"id": out.wamid, **entry, "text": out.text}
    else:
        entry["error"] = {"code": out.refused, "title": ERRORS[out.refused][0]}
    if out.template is not None:
        entry["template"] = out.template.name
    if out.journey:
        entry["journey"] = out.journey
    if out.step:
        entry["step"] = out.step
    if out.experiments:
        entry["experiments"] = dict(out.experiments)
    return entry


def envelope(batch: list[Change]) -> bytes:
    """One POST body: consecutive changes of one WABA (and of one kind) share an entry."""
    entries: list[dict[str, Any]] = []
    for change in batch:
        last = entries[-1] if entries else None
        if last is not None and last["id"] == change.waba_id and last.get("time") == change.time:
            last["changes"].append({"field": change.field, "value": change.value})
            continue
        entry: dict[str, Any] = {"id": change.waba_id}
        if change.time is not None:
            entry["time"] = change.time
        entry["changes"] = [{"field": change.field, "value": change.value}]
        entries.append(entry)
    return orjson.dumps({"object": "whatsapp_business_account", "entry": entries})


def batches(ready: list[Change], rng: random.Random) -> tuple[list[Post], list[Post], list[Change]]:
    """Group changes (in arrival order) into POSTs. Returns the POSTs, the redeliveries to
    send later and the changes to send again in a later batch."""
    posts: list[Post] = []
    later: list[Post] = []
    again: list[Change] = []
    i = 0
    while i < len(ready):
        cap = rng.choices((1, rng.randint(2, 8), rng.randint(9, 40)), (35, 45, 20))[0]
        first = ready[i].arrive
        j = i + 1
        while j < len(ready) and j - i < cap and ready[j].arrive - first <= BATCH_WINDOW:
            j += 1
        group = ready[i:j]
        management = any(change.time is not None for change in group)
        post = Post(group[-1].arrive, envelope(group), len(group), management=management)
        posts.append(post)
        if rng.random() < REDELIVERED_POSTS:
            wait = timedelta(seconds=rng.uniform(20, 300))
            later.append(Post(post.at + wait, post.body, post.changes, True, management))
        for change in group:
            if not change.again and rng.random() < REBATCHED_CHANGES:
                wait = timedelta(seconds=rng.uniform(30, 600))
                again.append(
                    Change(
                        change.arrive + wait,
                        change.waba_id,
                        change.field,
                        change.value,
                        change.time,
                        again=True,
                    )
                )
        i = j
    return posts, later, again
