"""Walk a stored webhook body: every ``entry[] × changes[] × items``, nothing skipped.

:func:`parse_body` is pure and never raises: what cannot be read becomes a :class:`Broken`
item (quarantined, with its path and reason) and the rest of the body is still used.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from waquality.domain import messages, privacy
from waquality.domain.enums import AlertEntityType, SubjectKind, WebhookField
from waquality.domain.events import (
    AccountAlert,
    AccountReviewUpdate,
    AccountUpdate,
    BusinessCapabilityUpdate,
    Detail,
    Event,
    MessagesError,
    PhoneJoin,
    PhoneNameUpdate,
    PhoneQualityUpdate,
    SecurityUpdate,
    TemplateCategoryUpdate,
    TemplateComponentsUpdate,
    TemplateQualityUpdate,
    TemplateStatusUpdate,
    UnmodelledChange,
    UserPreference,
)
from waquality.domain.values import as_id, normalise_display_number
from waquality.errors import PayloadError
from waquality.process import decode

EXPECTED_OBJECT = "whatsapp_business_account"
# Fields whose payloads carry customer data (retention and redaction apply to them).
CUSTOMER_FIELDS = frozenset({WebhookField.MESSAGES, WebhookField.USER_PREFERENCES})
_MESSAGE_ITEM_LISTS = ("messages", "statuses", "errors")
# A JSON escape (read left to right, so that "\\" is one). \uD800-\uDBFF followed by
# \uDC00-\uDFFF is a surrogate pair; either one alone is a lone surrogate, which the JSON
# grammar allows and Unicode (and orjson) does not.
_ESCAPE = re.compile(
    rb"\\(?:u(?P<high>[dD][89abAB][0-9a-fA-F]{2})(?P<low>\\u[dD][c-fC-F][0-9a-fA-F]{2})?"
    rb"|u(?P<lone_low>[dD][c-fC-F][0-9a-fA-F]{2})|.)",
    re.DOTALL,
)
# What a lone surrogate is read as: U+10FFFF, a noncharacter (kept for internal use by Unicode).
_MARK_ESCAPE = rb"\udbff\udfff"
_MARK = "\U0010ffff".encode()


@dataclass(frozen=True, slots=True)
class Broken:
    path: str
    field: str | None
    error: str


@dataclass(slots=True)
class ParsedBody:
    events: list[Event] = field(default_factory=list)
    broken: list[Broken] = field(default_factory=list)
    joins: list[PhoneJoin] = field(default_factory=list)
    changes: dict[str, int] = field(default_factory=dict)  # field name → changes seen
    items: dict[str, int] = field(default_factory=dict)  # field name → items (messages, ...)
    wabas: set[str] = field(default_factory=set)  # WABAs this body speaks for
    messages: list[messages.Item] = field(default_factory=list)  # inbound messages, statuses
    has_customer_data: bool = False
    has_management_data: bool = False
    lone_surrogates: bool = False  # the body escapes lone surrogates: what holds one is broken


def canonical_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def dedupe_key(*parts: Any) -> str:
    """A stable key for "the same change": a hash of its identifying parts."""
    return hashlib.sha256(canonical_json(list(parts))).hexdigest()


def parse_body(
    body: bytes, received_at: datetime | None = None, customer_key: bytes | None = None
) -> ParsedBody:
    """Everything in one stored body. ``received_at`` tells apart value-level errors of the
    ``messages`` field, which carry no time of their own: the same error in another hour is
    another event. With ``customer_key`` (customer ids stored as keyed hashes), an opt-out is
    recognised as the same whether its payload names the customer or their hash (a redacted
    body processed again)."""
    parsed = ParsedBody()
    try:
        document = _load(parsed, body)
    except orjson.JSONDecodeError as exc:
        parsed.broken.append(Broken("", None, _printable(f"body is not valid JSON: {exc}")))
        return parsed
    if not isinstance(document, dict):
        parsed.broken.append(Broken("", None, "body is not a JSON object"))
        return parsed
    if document.get("object") != EXPECTED_OBJECT:
        parsed.broken.append(
            Broken(
                "object",
                None,
                f"object is {_short(document.get('object'))}, expected {EXPECTED_OBJECT!r}",
            )
        )
        return parsed
    entries = document.get("entry")
    if not isinstance(entries, list):
        parsed.broken.append(Broken("entry", None, "entry is not a list"))
        return parsed
    seen: set[str] = set()
    hour = int(received_at.timestamp()) // 3600 if received_at else None
    for e_index, entry in enumerate(entries):
        _parse_entry(parsed, seen, f"entry[{e_index}]", entry, hour, customer_key)
    return parsed


def _load(parsed: ParsedBody, body: bytes) -> Any:
    """The JSON document; raises :class:`orjson.JSONDecodeError` when there is none.

    orjson refuses a string escape that is a lone UTF-16 surrogate (``"\\ud800"``), which the
    JSON grammar allows. Such a body is read again with each lone surrogate marked, so that only
    the values holding one are broken, not the whole body (every other rule stays orjson's).
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if b"\\u" not in body:
            raise
        marked = _ESCAPE.sub(_mark_lone_surrogate, body)
        if marked == body:
            raise
        try:
            document = orjson.loads(marked)
        except orjson.JSONDecodeError:
            raise exc from None
        parsed.lone_surrogates = True
        return document


def _mark_lone_surrogate(match: re.Match[bytes]) -> bytes:
    if match["lone_low"] or (match["high"] and not match["low"]):
        return _MARK_ESCAPE
    return match[0]  # not a surrogate, or a pair


def _parse_entry(
    parsed: ParsedBody,
    seen: set[str],
    path: str,
    entry: Any,
    hour: int | None,
    customer_key: bytes | None,
) -> None:
    if not isinstance(entry, dict):
        parsed.broken.append(Broken(path, None, "entry item is not an object"))
        return
    changes = entry.get("changes")
    if not isinstance(changes, list):
        parsed.broken.append(Broken(f"{path}.changes", None, "changes is not a list"))
        return
    waba_id = as_id(entry.get("id"))
    entry_time = decode.timestamp(entry.get("time"))
    for c_index, change in enumerate(changes):
        change_path = f"{path}.changes[{c_index}]"
        field_name = change.get("field") if isinstance(change, dict) else None
        try:
            if not isinstance(change, dict):
                raise PayloadError("change is not an object")
            if not isinstance(field_name, str) or not field_name:
                raise PayloadError("change has no field name")
            if not field_name.isprintable():
                raise PayloadError("change field name is not printable text")
            value = change.get("value")
            if not isinstance(value, dict):
                raise PayloadError("change value is not an object")
            parsed.changes[field_name] = parsed.changes.get(field_name, 0) + 1
            if WebhookField(field_name) is WebhookField.MESSAGES:
                events = _messages(parsed, change_path, waba_id, entry_time, value, hour)
            else:
                events = _decode_change(
                    parsed, field_name, waba_id, entry_time, value, customer_key
                )
        except PayloadError as exc:
            parsed.broken.append(Broken(change_path, _storable(field_name), str(exc)))
            continue
        except Exception as exc:  # a decoder bug must not lose the rest of the body
            name = _storable(field_name)
            error = _printable(f"cannot be decoded ({type(exc).__name__}: {exc})"[:500])
            parsed.broken.append(Broken(change_path, name, error))
            continue
        for event in events:
            if event.dedupe_key not in seen:
                seen.add(event.dedupe_key)
                parsed.events.append(event)


def _decode_change(
    parsed: ParsedBody,
    field_name: str,
    waba_id: str | None,
    entry_time: datetime | None,
    value: dict[str, Any],
    customer_key: bytes | None = None,
) -> list[Event]:
    known = WebhookField(field_name)
    if known in CUSTOMER_FIELDS:
        parsed.has_customer_data = True
        if waba_id:
            parsed.wabas.add(waba_id)
        _note_join(parsed, waba_id, value)
        return _user_preferences(parsed, waba_id, value, customer_key)
    parsed.has_management_data = True
    decoder = decode.DECODERS.get(known)
    detail: Detail = decoder(value) if decoder else UnmodelledChange()
    key = _value_key(parsed, field_name, waba_id, _epoch(entry_time), value)
    event = _event(known, field_name, waba_id, entry_time, value, key, detail)
    if event.waba_id:
        parsed.wabas.add(event.waba_id)
    return [event]


def _messages(
    parsed: ParsedBody,
    path: str,
    waba_id: str | None,
    entry_time: datetime | None,
    value: dict[str, Any],
    hour: int | None,
) -> list[Event]:
    """A ``messages`` change: its inbound messages and statuses go to the tracker (what cannot
    be read is broken, by path); each value-level error is an event."""
    parsed.has_customer_data = True
    if waba_id:
        parsed.wabas.add(waba_id)
    _note_join(parsed, waba_id, value)
    count = sum(len(v) for k in _MESSAGE_ITEM_LISTS if isinstance(v := value.get(k), list))
    parsed.items["messages"] = parsed.items.get("messages", 0) + count
    found = messages.read(value)
    parsed.messages += found.inbound
    parsed.messages += found.statuses
    for item_path in found.unreadable:
        parsed.broken.append(Broken(f"{path}.{item_path}", "messages", "item cannot be read"))
    errors = value.get("errors")
    if not isinstance(errors, list):
        return []
    metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    events = []
    for index, item in enumerate(errors):
        if not isinstance(item, dict):
            parsed.broken.append(Broken(f"{path}.errors[{index}]", "messages", "not an object"))
            continue
        detail = decode.messages_error(item, metadata)
        key = _value_key(parsed, "messages", detail.phone_number_id, _epoch(entry_time), hour, item)
        events.append(
            _event(WebhookField.MESSAGES, "messages", waba_id, entry_time, item, key, detail)
        )
    return events


def _user_preferences(
    parsed: ParsedBody, waba_id: str | None, value: dict[str, Any], customer_key: bytes | None
) -> list[Event]:
    items = value.get("user_preferences")
    if not isinstance(items, list):
        raise PayloadError("user_preferences is not a list")
    metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    parsed.items["user_preferences"] = parsed.items.get("user_preferences", 0) + len(items)
    events = []
    for item in items:
        if not isinstance(item, dict):
            raise PayloadError("user_preferences item is not an object")
        detail = decode.user_preference(item, metadata)
        occurred = decode.timestamp(item.get("timestamp"))
        keyed = privacy.pseudonymise_preference(item, customer_key) if customer_key else None
        key = _value_key(parsed, "user_preferences", detail.phone_number_id, keyed or item)
        events.append(
            _event(
                WebhookField.USER_PREFERENCES,
                "user_preferences",
                waba_id,
                occurred,
                item,
                key,
                detail,
            )
        )
    return events


def _value_key(parsed: ParsedBody, *parts: Any) -> str:
    """The dedupe key of a value that is to be stored as JSON; a value that cannot be (a lone
    surrogate, nesting deeper than the encoder allows) is a :class:`PayloadError`."""
    try:
        canonical = canonical_json(list(parts))
    except orjson.JSONEncodeError as exc:
        raise PayloadError(f"value cannot be stored as JSON: {exc}") from None
    if parsed.lone_surrogates and _MARK in canonical:
        raise PayloadError("value holds a lone UTF-16 surrogate, which is not text")
    return hashlib.sha256(canonical).hexdigest()


def _note_join(parsed: ParsedBody, waba_id: str | None, value: dict[str, Any]) -> None:
    metadata = value.get("metadata")
    if not isinstance(metadata, dict):
        return
    phone_id = as_id(metadata.get("phone_number_id"))
    display = normalise_display_number(metadata.get("display_phone_number"))
    if phone_id and display:
        parsed.joins.append(
            PhoneJoin(waba_id=waba_id, phone_number_id=phone_id, display_phone_number=display)
        )


def _event(
    known: WebhookField,
    field_name: str,
    waba_id: str | None,
    occurred_at: datetime | None,
    value: dict[str, Any],
    key: str,
    detail: Detail,
) -> Event:
    subject_kind, subject_id = _subject(detail, waba_id)
    if isinstance(detail, AccountUpdate) and detail.waba_id:
        waba_id = detail.waba_id  # PARTNER_* events: entry.id is the partner, not the WABA
    return Event(
        field=known,
        field_name=field_name,
        kind=_kind(detail, value),
        waba_id=waba_id,
        occurred_at=occurred_at,
        value=value,
        dedupe_key=key,
        subject_kind=subject_kind,
        subject_id=subject_id,
        detail=detail,
    )


def _subject(detail: Detail, waba_id: str | None) -> tuple[SubjectKind | None, str | None]:
    match detail:
        case PhoneQualityUpdate() | PhoneNameUpdate() | SecurityUpdate():
            return SubjectKind.PHONE_NUMBER, detail.display_phone_number
        case (
            TemplateStatusUpdate()
            | TemplateQualityUpdate()
            | TemplateCategoryUpdate()
            | (TemplateComponentsUpdate())
        ):
            return SubjectKind.TEMPLATE, detail.template.template_id
        case AccountUpdate():
            return SubjectKind.WABA, detail.waba_id or waba_id
        case AccountAlert(entity_type=AlertEntityType.BUSINESS, entity_id=str(entity)):
            return SubjectKind.BUSINESS, entity
        case AccountAlert(entity_type=AlertEntityType.PHONE_NUMBER, entity_id=str(entity)):
            return SubjectKind.PHONE_NUMBER, entity
        case AccountAlert() | BusinessCapabilityUpdate() | AccountReviewUpdate():
            return SubjectKind.WABA, waba_id
        case UserPreference() | MessagesError():
            return SubjectKind.PHONE_NUMBER, detail.phone_number_id or detail.display_phone_number
    return None, None


def _kind(detail: Detail, value: dict[str, Any]) -> str:
    match detail:
        case PhoneQualityUpdate() | TemplateStatusUpdate() | AccountUpdate() | SecurityUpdate():
            return detail.event.value
        case PhoneNameUpdate() | AccountReviewUpdate():
            return detail.decision.value
        case TemplateQualityUpdate():
            return detail.new.value
        case TemplateCategoryUpdate():
            category = detail.correct_category or detail.new_category
            return category.value if category else "UNKNOWN"
        case TemplateComponentsUpdate():
            return "EDITED"
        case AccountAlert():
            return detail.alert_type.value
        case BusinessCapabilityUpdate():
            return detail.messaging_limit.value if detail.messaging_limit else "CAPABILITY"
        case UserPreference():
            return detail.value.value
        case MessagesError():
            return str(detail.code) if detail.code is not None else "error"
    event = value.get("event")
    if not isinstance(event, str):
        return ""
    return event[:64] if event[:64].isprintable() else "UNKNOWN"


def _epoch(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment else None


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"  # its repr could nest deeper than Python recurses
    text = repr(value[:60] if isinstance(value, str) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def _storable(field_name: Any) -> str | None:
    """A field name as a quarantine row can hold it (an unprintable one is not kept)."""
    return field_name if isinstance(field_name, str) and field_name.isprintable() else None


def _printable(text: str) -> str:
    """An error message as it can be stored: no NUL, no lone surrogate."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
