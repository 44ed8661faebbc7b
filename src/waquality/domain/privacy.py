"""Customer data as the privacy settings allow: identifiers as keyed hashes, webhook payloads
redacted, one customer taken out. Pure.

**Pseudonyms.** With a key configured, a customer's ``wa_id`` or business-scoped user id is
stored as ``h:`` + the first 32 hex digits of HMAC-SHA256(key, id): the same customer always
gets the same pseudonym (so conversations still join up), nobody without the key can tell who
it is, and erasure finds a customer by hashing the id asked for. A pseudonym is never hashed
again.

**Redaction** (:func:`redact_payload`) rewrites the ``messages`` and ``user_preferences``
changes of a stored body once it is processed. With a key, every customer identifier becomes
its pseudonym — the one the tracker stores, so that processing the redacted body again finds
the same customer — and the profile (name, username), identity hashes and the text of system
messages (which names phone numbers) go. Without message bodies, what a customer typed, tapped
or shared goes: the type-specific object of each inbound message keeps only types, ids and
reply ids (button and list row ids, a template button's payload); a location, a shared contact
card or a value that is not an object goes whole. Message ids, timestamps, errors and statuses
stay, and every other change is left as it was (the body is written out again as JSON, so its
spacing may change).

**Erasure** (:func:`erase_from_payload`, :func:`forget_preference`) takes one customer's items
out of a body and their identifiers out of an opt-out event's value.

Whatever the bytes, these functions never raise; what cannot be read is left alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from waquality.domain.enums import WebhookField
from waquality.domain.values import as_text, normalise_display_number

PREFIX = "h:"
_PSEUDONYM = re.compile(r"^h:[0-9a-f]{32}$")
_PHONE_LIKE = re.compile(r"^\+?[0-9][0-9 ().-]*$")
CUSTOMER_FIELDS = frozenset({WebhookField.MESSAGES.value, WebhookField.USER_PREFERENCES.value})
ID_LENGTH = 128  # characters of a business-scoped id that are read (as the messages table holds)
ITEM_LISTS = ("messages", "statuses", "errors", "user_preferences")  # what a change carries
SCRUB_DEPTH = 6  # nesting kept inside a message's type-specific object; deeper is dropped


@dataclass(frozen=True, slots=True)
class IdFields:
    """Where an object names a customer: phone-style ids (read as their digits, like ``wa_id``)
    and business-scoped user ids (read as text)."""

    phones: tuple[str, ...]
    users: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return self.phones + self.users


CONTACT = IdFields(("wa_id",), ("user_id", "parent_user_id"))
SENDER = IdFields(("from",), ("from_user_id", "from_parent_user_id"))
QUOTED = IdFields(("from",), ("from_user_id", "from_parent_user_id"))  # context of a reply
SYSTEM = IdFields(
    ("wa_id", "new_wa_id", "customer"),
    ("user_id", "new_user_id", "parent_user_id", "new_parent_user_id"),
)
RECIPIENT = IdFields(
    ("recipient_id", "recipient_participant_id"),
    (
        "recipient_user_id",
        "recipient_parent_user_id",
        "parent_recipient_user_id",
        "recipient_participant_user_id",
    ),
)
PREFERENCE = IdFields(("wa_id",), ("user_id", "parent_user_id"))
CONTACT_PERSONAL = ("profile", "identity_key_hash")  # name, username; identity checking
# The keys of a message item that are not its type-specific object.
_ITEM_KEYS = frozenset(
    {"id", "from", "timestamp", "type", "context", "errors", "referral", "identity"}
    | set(SENDER.names)
)
# Known type-specific objects (besides the one ``type`` names).
_TYPE_OBJECTS = frozenset(
    {
        "text",
        "image",
        "video",
        "audio",
        "document",
        "sticker",
        "location",
        "contacts",
        "interactive",
        "button",
        "reaction",
        "order",
        "system",
        "edit",
        "revoke",
        "unsupported",
    }
)
# What a type-specific object keeps without message bodies: no text, no place, no card.
_KEPT = frozenset(
    {
        "id",
        "type",
        "payload",
        "message_id",
        "original_message_id",
        "mime_type",
        "sha256",
        "animated",
        "voice",
        "catalog_id",
        "product_items",
        "product_retailer_id",
        "quantity",
        "item_price",
        "currency",
        "response",
        "response_source",
        "expiration_timestamp",
    }
)


# -- pseudonyms ---------------------------------------------------------------------------------


def is_pseudonym(value: str) -> bool:
    return _PSEUDONYM.match(value) is not None


def pseudonym(customer: str, key: bytes | None) -> str:
    """``customer`` as stored: its keyed hash, or itself when no key is configured."""
    if key is None or is_pseudonym(customer):
        return customer
    return PREFIX + hmac.new(key, customer.encode(), hashlib.sha256).hexdigest()[:32]


def customer_id(value: Any, *, phone: bool) -> str | None:
    """An identifier as the tracker reads it: a pseudonym as it is, a phone-style id as its
    digits (``+1 650-555-1234`` → ``16505551234``), a business-scoped id as text; ``None`` for
    what names nobody (no value, an empty one, or one that is no string or integer)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        return None
    if is_pseudonym(value):
        return value
    if phone and (digits := normalise_display_number(value)):
        return digits
    return as_text(value, ID_LENGTH) or None


def customer_names(customer: str, key: bytes | None) -> frozenset[str]:
    """Every form in which ``customer`` can be stored: the id as given, its digits when it is a
    phone number, and the pseudonyms of those when a key is configured."""
    forms = {customer_id(customer, phone=False)}
    if _PHONE_LIKE.match(customer.strip()):
        forms.add(customer_id(customer, phone=True))
    found = {form for form in forms if form}
    return frozenset(found | {pseudonym(form, key) for form in found})


# -- reading and writing bodies -----------------------------------------------------------------


def _refuse(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("number beyond any double")
    return number


def _load(body: bytes) -> Any:
    """The JSON document, or ``None``. A lone UTF-16 surrogate escape (which orjson refuses)
    is read by the standard library, so that such a body is redacted too."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        if b"\\u" not in body:
            return None
    try:
        return json.loads(body, parse_constant=_refuse, parse_float=_finite)
    except (ValueError, RecursionError):
        return None


def _dump(document: Any) -> bytes | None:
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:  # nested past orjson's limit, or a lone surrogate
        pass
    try:
        return json.dumps(document, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        return None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _obj(value: dict[str, Any], key: str) -> dict[str, Any] | None:
    inner = value.get(key)
    return inner if isinstance(inner, dict) else None


def _customer_value(change: Any) -> dict[str, Any] | None:
    """The value of a ``messages`` or ``user_preferences`` change (``None`` for any other)."""
    field = change.get("field") if isinstance(change, dict) else None
    if not isinstance(field, str) or field not in CUSTOMER_FIELDS:
        return None
    value = change.get("value")
    return value if isinstance(value, dict) else None


def _customer_changes(document: Any) -> Iterable[tuple[str, dict[str, Any]]]:
    """(field, value) of every ``messages`` and ``user_preferences`` change, in place."""
    if not isinstance(document, dict):
        return
    for entry in _dicts(document.get("entry")):
        for change in _dicts(entry.get("changes")):
            value = _customer_value(change)
            if value is not None:
                yield change["field"], value


# -- redaction ----------------------------------------------------------------------------------


def redact_payload(body: bytes, key: bytes | None, keep_bodies: bool) -> bytes | None:
    """``body`` as the privacy settings allow it to be kept (see the module's docstring);
    ``None`` when nothing is to change, or when it cannot be read. Redacting again changes
    nothing."""
    if key is None and keep_bodies:
        return None
    document = _load(body)
    changed = False
    for field, value in _customer_changes(document):
        if key is not None:
            changed |= _pseudonymise_value(field, value, key)
        if not keep_bodies and field == WebhookField.MESSAGES.value:
            for item in _dicts(value.get("messages")):
                changed |= _drop_text(item)
    return _dump(document) if changed else None


def pseudonymise_preference(value: Any, key: bytes) -> dict[str, Any] | None:
    """A ``user_preferences`` item (an opt-out event's value) with its customer ids hashed;
    ``None`` when nothing changes."""
    if not isinstance(value, dict):
        return None
    item = dict(value)
    return item if _hide_ids(item, PREFERENCE, key) else None


def _pseudonymise_value(field: str, value: dict[str, Any], key: bytes) -> bool:
    changed = False
    for contact in _dicts(value.get("contacts")):
        changed |= _hide_ids(contact, CONTACT, key)
        changed |= _drop(contact, CONTACT_PERSONAL)
    if field == WebhookField.USER_PREFERENCES.value:
        for item in _dicts(value.get("user_preferences")):
            changed |= _hide_ids(item, PREFERENCE, key)
        return changed
    metadata = _obj(value, "metadata") or {}
    business = customer_id(metadata.get("display_phone_number"), phone=True)
    for item in _dicts(value.get("messages")):
        changed |= _hide_ids(item, SENDER, key)
        context = _obj(item, "context")
        if context is not None:
            quoted = customer_id(context.get("from"), phone=True)
            fields = QUOTED if quoted is None or quoted != business else IdFields((), QUOTED.users)
            changed |= _hide_ids(context, fields, key)
        system = _obj(item, "system")
        if system is not None:
            changed |= _hide_ids(system, SYSTEM, key)
            changed |= _drop(system, ("body",))
        identity = _obj(item, "identity")
        if identity is not None:
            changed |= _drop(identity, ("hash",))
    for status in _dicts(value.get("statuses")):
        changed |= _hide_ids(status, RECIPIENT, key)
        changed |= _drop(status, ("recipient_identity_key_hash",))
    return changed


def _hide_ids(obj: dict[str, Any], fields: IdFields, key: bytes) -> bool:
    """Each identifier of ``obj`` as its pseudonym; a value that names nobody in a readable way
    (an object, a number with a fraction) is removed."""
    changed = False
    for names, phone in ((fields.phones, True), (fields.users, False)):
        for name in names:
            if name not in obj or obj[name] is None or isinstance(obj[name], bool):
                continue
            found = customer_id(obj[name], phone=phone)
            if found is None:
                del obj[name]
                changed = True
            elif (hidden := pseudonym(found, key)) != obj[name]:
                obj[name] = hidden
                changed = True
    return changed


def _drop(obj: dict[str, Any], names: Iterable[str]) -> bool:
    present = [name for name in names if name in obj]
    for name in present:
        del obj[name]
    return bool(present)


def _drop_text(item: dict[str, Any]) -> bool:
    """An inbound message without what the customer typed, tapped or shared."""
    kinds = set(_TYPE_OBJECTS)
    if isinstance(item.get("type"), str):
        kinds.add(item["type"])
    changed = False
    for kind in sorted((kinds - _ITEM_KEYS) & item.keys()):
        inner = item[kind]
        if not isinstance(inner, dict):
            del item[kind]  # a list of contact cards, bare text: nothing of it is kept
            changed = True
            continue
        scrubbed = _scrub(inner, 0)
        if scrubbed != inner:
            item[kind] = scrubbed
            changed = True
    return changed


def _scrub(value: Any, depth: int) -> Any:
    """Only the keys of :data:`_KEPT` (and an interactive reply's object), to a bounded depth."""
    if isinstance(value, dict):
        if depth >= SCRUB_DEPTH:
            return {}
        return {
            k: _scrub(v, depth + 1) for k, v in value.items() if k in _KEPT or k.endswith("_reply")
        }
    if isinstance(value, list):
        return [] if depth >= SCRUB_DEPTH else [_scrub(v, depth + 1) for v in value]
    return value


# -- erasure ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Erasure:
    """A body without one customer."""

    body: bytes | None  # None: nothing else was left in it
    customer_data: bool  # it still carries other customers' changes


def erase_from_payload(body: bytes, names: frozenset[str]) -> Erasure | None:
    """``body`` without the items that name one of ``names`` (see :func:`customer_names`):
    their contacts, inbound messages, statuses and preference changes, and their id where
    another customer's reply quotes them. A change left with no item goes, an entry left with no
    change goes; management changes are never touched. ``None`` when the body does not name
    them (or cannot be read)."""
    document = _load(body)
    if not isinstance(document, dict) or not isinstance(document.get("entry"), list):
        return None
    changed = False
    entries: list[Any] = []
    for entry in document["entry"]:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            entries.append(entry)
            continue
        kept: list[Any] = []
        for change in changes:
            value = _customer_value(change)
            if value is not None and _erase_value(value, names):
                changed = True
                if not any(isinstance(value.get(k), list) and value[k] for k in ITEM_LISTS):
                    continue  # nothing left in it
            kept.append(change)
        if kept or not changes:
            entries.append({**entry, "changes": kept})
    if not changed:
        return None
    if not entries:
        return Erasure(None, False)
    document["entry"] = entries
    dumped = _dump(document)
    if dumped is None:
        return None
    return Erasure(dumped, any(True for _ in _customer_changes(document)))


def _erase_value(value: dict[str, Any], names: frozenset[str]) -> bool:
    changed = False
    for list_name, named in _NAMED_BY:
        items = value.get(list_name)
        if not isinstance(items, list):
            continue
        kept = [item for item in items if not (isinstance(item, dict) and named(item) & names)]
        if len(kept) < len(items):
            value[list_name] = kept
            changed = True
    for item in _dicts(value.get("messages")):
        context = _obj(item, "context")
        if context is not None:
            quoting = [
                n for n in QUOTED.names if _forms(context.get(n), n in QUOTED.phones) & names
            ]
            changed |= _drop(context, quoting)
    return changed


def _forms(value: Any, phone: bool) -> set[str]:
    """The forms in which one field's value can name a customer."""
    found = {value} if isinstance(value, str) else set()
    read = customer_id(value, phone=phone)
    return found | {read} if read else found


def _names(obj: dict[str, Any], fields: IdFields) -> set[str]:
    found: set[str] = set()
    for names, phone in ((fields.phones, True), (fields.users, False)):
        for name in names:
            found |= _forms(obj.get(name), phone)
    return found


def _contact_names(item: dict[str, Any]) -> set[str]:
    return _names(item, CONTACT)


def _message_names(item: dict[str, Any]) -> set[str]:
    system = _obj(item, "system")
    return _names(item, SENDER) | (_names(system, SYSTEM) if system is not None else set())


def _status_names(item: dict[str, Any]) -> set[str]:
    return _names(item, RECIPIENT)


def _preference_names(item: dict[str, Any]) -> set[str]:
    return _names(item, PREFERENCE)


# Each list of a customer change, and who one of its items names.
_NAMED_BY: tuple[tuple[str, Callable[[dict[str, Any]], set[str]]], ...] = (
    ("contacts", _contact_names),
    ("messages", _message_names),
    ("statuses", _status_names),
    ("user_preferences", _preference_names),
)


def forget_preference(value: Any, names: frozenset[str] | None = None) -> dict[str, Any] | None:
    """A ``user_preferences`` item (an opt-out event's value) without its customer ids — only
    when it names one of ``names``, or always when ``names`` is ``None``; ``None`` when nothing
    changes. What it says (stop, resume, its category and time) stays."""
    if not isinstance(value, dict):
        return None
    if names is not None and not _names(value, PREFERENCE) & names:
        return None
    item = dict(value)
    return item if _drop(item, PREFERENCE.names) else None
