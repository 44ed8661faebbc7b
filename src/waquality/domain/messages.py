"""What a ``messages`` webhook value says, typed: inbound customer messages, statuses of the
business's messages, and value-level errors; and what the business logs of its own messages
(:class:`Outbound`). Pure: no database; what cannot be read is reported, never raised.

Taken: who, when, which kind, replies to what, which button or row, which error, the tags of
``biz_opaque_callback_data``, and the text a customer typed or tapped (kept only when message
bodies are kept). Media stay in the raw payload, which retention deletes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from waquality.domain import privacy, tags
from waquality.domain.enums import MessageStatus, SenderKind
from waquality.domain.values import as_id, as_text, normalise_display_number, parse_timestamp

MAX_BODY = 4096  # characters of a message's text kept (WhatsApp allows 4,096)


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
    text: str | None = None  # typed text, a tapped button's or row's title, a caption


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


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message the business sent (or tried to send), as it logs it: what webhooks do not say.

    ``error_code`` set: the Graph API refused the send (no message left), such as 132015 for a
    paused template; ``wamid`` is then a key the business chooses or one made from the attempt.
    """

    wamid: str
    phone_number_id: str
    customer: str
    at: datetime  # when it was sent (the logged time)
    kind: str = "text"  # text, template, interactive, media...
    template: str | None = None
    text: str | None = None
    tags: tags.Tags = field(default_factory=tags.Tags)
    error_code: int | None = None


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
        wa_id = _customer(contact.get("wa_id"))
        user_id = as_text(contact.get("user_id"), 128)
        key = wa_id or user_id
        if key:
            for name in (wa_id, user_id):
                if name:
                    keys[name] = key
    return keys


def _customer(value: Any) -> str | None:
    """A phone-style customer id (``wa_id``, ``from``, ``recipient_id``) as its digits; a
    pseudonym (from a redacted payload) as it is."""
    if isinstance(value, str) and privacy.is_pseudonym(value):
        return value
    return normalise_display_number(value)


def _codes(errors: Any) -> tuple[int, ...]:
    codes = []
    for error in _list(errors):
        code = error.get("code") if isinstance(error, dict) else None
        if isinstance(code, str) and code.isascii() and code.isdigit() and len(code) < 11:
            code = int(code)
        if isinstance(code, int) and not isinstance(code, bool) and 0 <= code < 2**31:
            codes.append(code)
    return tuple(codes)


def _inbound(item: Any, phone: str | None, contacts: dict[str, str]) -> Inbound | None:
    if not isinstance(item, dict):
        return None
    wamid = as_text(item.get("id"), 256)
    at = parse_timestamp(item.get("timestamp"))
    sender = _customer(item.get("from")) or as_text(item.get("from_user_id"), 128)
    if not wamid or at is None or not sender:
        return None
    kind = as_text(item.get("type"), 64) or "unknown"
    reply_id = None
    detail = _obj(item, kind)
    text = as_text(detail.get("body"), MAX_BODY) or as_text(detail.get("caption"), MAX_BODY)
    if kind == "interactive":
        subtype = as_text(detail.get("type"), 64) or "unknown"
        chosen = _obj(detail, subtype)
        reply_id = as_text(chosen.get("id"), 256)
        text = as_text(chosen.get("title"), MAX_BODY) or as_text(chosen.get("body"), MAX_BODY)
        kind = f"interactive:{subtype}"
    elif kind == "button":
        reply_id = as_text(detail.get("payload"), 256)
        text = as_text(detail.get("text"), MAX_BODY)
    elif kind == "reaction":
        text = as_text(detail.get("emoji"), 64)
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
        text=text,
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
    recipient = _customer(item.get("recipient_id")) or as_text(item.get("recipient_user_id"), 128)
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
Item = Inbound | Status | Outbound
_STATUS_TIME = {
    MessageStatus.SENT: "sent_at",
    MessageStatus.DELIVERED: "delivered_at",
    MessageStatus.READ: "read_at",
    MessageStatus.FAILED: "failed_at",
}
REFUSED = "refused"  # the kind of a send attempt the Graph API refused


def merge(row: Row | None, item: Item) -> Row:
    """A message's row after one more item about it, whatever order its items arrive in: the
    highest status wins (failed is final), each status keeps its earliest time, the message's
    time is its ``sent`` time (until that comes, the logged time, else its earliest status's),
    the error is the earliest failure's, what the business logged wins over callback tags, and a
    redelivery changes nothing."""
    if isinstance(item, Inbound):
        return row or {
            "wamid": item.wamid,
            "phone_number_id": item.phone_number_id,
            "customer": item.customer,
            "inbound": True,
            "kind": item.kind,
            "at": item.at,
            "replies_to": item.replies_to,
            "reply_id": item.reply_id,
            "body": item.text,
            "error_code": item.error_codes[0] if item.error_codes else None,
        }
    new: Row = dict(row) if row else {"wamid": item.wamid, "inbound": False}
    if new["inbound"]:
        return new  # a status about an inbound message's id: not ours to track
    for key, value in (("phone_number_id", item.phone_number_id), ("customer", item.customer)):
        new[key] = new.get(key) or value
    if isinstance(item, Outbound):
        _logged(new, item)
    else:
        _status_seen(new, item)
    times = [new[c] for c in _STATUS_TIME.values() if new.get(c) is not None]
    new["at"] = new.get("sent_at") or new.get("logged_at") or (min(times) if times else None)
    return new


def _logged(new: Row, item: Outbound) -> None:
    if new.get("logged_at") is None or item.at < new["logged_at"]:
        new["logged_at"] = item.at
    new["kind"] = REFUSED if item.error_code is not None else item.kind
    new["template"] = item.template or new.get("template")
    new["body"] = item.text if item.text is not None else new.get("body")
    _tagged(new, item.tags, logged=True)
    if item.error_code is not None:
        new["status"] = MessageStatus.FAILED.value
        new["failed_at"] = min(item.at, new.get("failed_at") or item.at)
        new["error_code"] = item.error_code


def _status_seen(new: Row, item: Status) -> None:
    if item.status.rank > MessageStatus.parse(new.get("status")).rank:
        new["status"] = item.status.value
    column = _STATUS_TIME.get(item.status)
    if column and (new.get(column) is None or item.at < new[column]):
        new[column] = item.at
        if item.status is MessageStatus.FAILED:
            new["error_code"] = item.error_codes[0] if item.error_codes else None
    new["category"] = new.get("category") or item.category
    new["origin"] = new.get("origin") or item.origin
    found = tags.decode(item.callback)
    if found is not None:
        _tagged(new, found, logged=False)


def _tagged(new: Row, found: tags.Tags, *, logged: bool) -> None:
    """Tags logged through the API win; callback tags fill what is still unknown."""
    sender = SenderKind.parse(new.get("sender_kind")) or SenderKind.UNKNOWN
    if found.sender is not SenderKind.UNKNOWN and (logged or sender is SenderKind.UNKNOWN):
        new["sender_kind"] = found.sender.value
    named = (("journey", found.journey), ("step", found.step), ("template", found.template))
    for key, value in named:
        if value and (logged or not new.get(key)):
            new[key] = value[: 512 if key == "template" else 128]
    if found.experiments and (logged or not new.get("experiments")):
        new["experiments"] = [list(pair) for pair in found.experiments]
