"""What a ``messages`` webhook value says, typed: inbound customer messages, statuses of the
business's messages, and value-level errors. Pure: no database; what cannot be read is reported,
never raised.

Only metadata is taken (who, when, which kind, replies to what, which error): message text and
media stay in the raw payload, which retention deletes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from waquality.domain.enums import MessageStatus
from waquality.domain.values import as_id, as_text, normalise_display_number, parse_timestamp


@dataclass(frozen=True, slots=True)
class Inbound:
    wamid: str
    phone_number_id: str | None
    customer: str  # wa_id, or the business-scoped user id when there is no wa_id
    at: datetime
    kind: str  # text, interactive:button_reply, button, reaction, system, unsupported...
    replies_to: str | None  # context.id: the message it answers
    reply_id: str | None  # the tapped button's or list row's id, a template button's payload
    error_codes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Status:
    wamid: str
    phone_number_id: str | None
    customer: str | None  # recipient
    status: MessageStatus
    at: datetime
    error_codes: tuple[int, ...] = ()
    category: str | None = None  # pricing category, hyphens as underscores
    origin: str | None = None  # conversation origin, where present
    callback: str | None = None  # biz_opaque_callback_data


@dataclass(slots=True)
class MessagesValue:
    inbound: list[Inbound] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    error_codes: list[int] = field(default_factory=list)  # value-level errors
    unreadable: list[str] = field(default_factory=list)  # paths of items that could not be read


def read(value: Any) -> MessagesValue:
    """Every item of one ``messages`` change value."""
    found = MessagesValue()
    if not isinstance(value, dict):
        found.unreadable.append("")
        return found
    metadata = _obj(value, "metadata")
    phone = as_id(metadata.get("phone_number_id"))
    contacts = _contacts(value.get("contacts"))
    for index, item in enumerate(_list(value.get("messages"))):
        message = _inbound(item, phone, contacts)
        if message is None:
            found.unreadable.append(f"messages[{index}]")
        else:
            found.inbound.append(message)
    for index, item in enumerate(_list(value.get("statuses"))):
        status = _status(item, phone)
        if status is None:
            found.unreadable.append(f"statuses[{index}]")
        else:
            found.statuses.append(status)
    found.error_codes = list(_codes(value.get("errors")))
    return found


def _obj(value: dict[str, Any], key: str) -> dict[str, Any]:
    inner = value.get(key)
    return inner if isinstance(inner, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _contacts(value: Any) -> dict[str, str]:
    """wa_id or user id as messages name the sender → the customer's key (wa_id first)."""
    keys: dict[str, str] = {}
    for contact in _list(value):
        if not isinstance(contact, dict):
            continue
        wa_id = normalise_display_number(contact.get("wa_id"))
        user_id = as_text(contact.get("user_id"), 128)
        key = wa_id or user_id
        if key:
            for name in (wa_id, user_id):
                if name:
                    keys[name] = key
    return keys


def _codes(errors: Any) -> tuple[int, ...]:
    codes = []
    for error in _list(errors):
        code = error.get("code") if isinstance(error, dict) else None
        if isinstance(code, int) and not isinstance(code, bool):
            codes.append(code)
        elif isinstance(code, str) and code.isascii() and code.isdigit():
            codes.append(int(code))
    return tuple(codes)


def _inbound(item: Any, phone: str | None, contacts: dict[str, str]) -> Inbound | None:
    if not isinstance(item, dict):
        return None
    wamid = as_text(item.get("id"), 256)
    at = parse_timestamp(item.get("timestamp"))
    sender = normalise_display_number(item.get("from")) or as_text(item.get("from_user_id"), 128)
    if not wamid or at is None or not sender:
        return None
    kind = as_text(item.get("type"), 64) or "unknown"
    reply_id = None
    detail = _obj(item, kind)
    if kind == "interactive":
        subtype = as_text(detail.get("type"), 64) or "unknown"
        chosen = _obj(detail, subtype)
        reply_id = as_text(chosen.get("id"), 256)
        kind = f"interactive:{subtype}"
    elif kind == "button":
        reply_id = as_text(detail.get("payload"), 256)
    elif kind == "system":
        kind = f"system:{as_text(detail.get('type'), 64) or 'unknown'}"
    context = _obj(item, "context")
    return Inbound(
        wamid=wamid,
        phone_number_id=phone,
        customer=contacts.get(sender, sender),
        at=at,
        kind=kind,
        replies_to=as_text(context.get("id"), 256),
        reply_id=reply_id,
        error_codes=_codes(item.get("errors")),
    )


def _status(item: Any, phone: str | None) -> Status | None:
    if not isinstance(item, dict):
        return None
    wamid = as_text(item.get("id"), 256)
    at = parse_timestamp(item.get("timestamp"))
    if not wamid or at is None:
        return None
    pricing = _obj(item, "pricing")
    conversation = _obj(item, "conversation")
    origin = _obj(conversation, "origin")
    category = as_text(pricing.get("category"), 64)
    recipient = normalise_display_number(item.get("recipient_id")) or as_text(
        item.get("recipient_user_id"), 128
    )
    return Status(
        wamid=wamid,
        phone_number_id=phone,
        customer=recipient,
        status=MessageStatus.parse(item.get("status")),
        at=at,
        error_codes=_codes(item.get("errors")),
        category=category.replace("-", "_").lower() if category else None,
        origin=as_text(origin.get("type"), 64),
        callback=as_text(item.get("biz_opaque_callback_data"), 512),
    )


Row = dict[str, Any]
_STATUS_TIME = {
    MessageStatus.SENT: "sent_at",
    MessageStatus.DELIVERED: "delivered_at",
    MessageStatus.READ: "read_at",
    MessageStatus.FAILED: "failed_at",
}


def merge(row: Row | None, item: Inbound | Status) -> Row:
    """A message's row after one more item about it, whatever order its items arrive in: the
    highest status wins (failed is final), each status keeps its earliest time, the message's
    time is its ``sent`` time (until that comes, its earliest status's), the error is the
    earliest failure's, and a redelivery changes nothing."""
    if isinstance(item, Inbound):
        return row or {
            "wamid": item.wamid,
            "phone_number_id": item.phone_number_id,
            "customer": item.customer,
            "inbound": True,
            "kind": item.kind,
            "at": item.at,
            "replies_to": item.replies_to,
        }
    new: Row = dict(row) if row else {"wamid": item.wamid, "inbound": False}
    if new["inbound"]:
        return new  # a status about an inbound message's id: not ours to track
    for key, value in (("phone_number_id", item.phone_number_id), ("customer", item.customer)):
        new[key] = new.get(key) or value
    if item.status.rank > MessageStatus.parse(new.get("status")).rank:
        new["status"] = item.status.value
    column = _STATUS_TIME.get(item.status)
    if column and (new.get(column) is None or item.at < new[column]):
        new[column] = item.at
        if item.status is MessageStatus.FAILED:
            new["error_code"] = item.error_codes[0] if item.error_codes else None
    times = [new[c] for c in _STATUS_TIME.values() if new.get(c) is not None]
    new["at"] = new.get("sent_at") or (min(times) if times else item.at)
    new["category"] = new.get("category") or item.category
    return new
