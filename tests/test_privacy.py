"""Customer data kept only as fully and as long as the privacy settings allow: raw payloads
redacted once processed, one customer erased on request (store and HTTP), retention of the
tracker's rows. Golden payloads from the fact sheet's shapes, BSUID-era ones without ``wa_id``
included, on a real database."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import delete, event, func, select, text, update

from builders import DISPLAY, PHONE_ID, WABA, envelope, inbound_message, template_status
from conftest import WEBHOOKS, webhook
from test_parse_fuzz import emit, fuzz_settings, json_values, mutated_bodies
from waquality.api.app import create_api
from waquality.api.auth import Authenticator, digest
from waquality.domain import privacy, sketch
from waquality.domain.enums import MessageStatus
from waquality.domain.messages import Inbound, Item, Status
from waquality.domain.privacy import customer_names, pseudonym, redact_payload
from waquality.process.parse import parse_body
from waquality.process.worker import Processor
from waquality.store import inbox, schema
from waquality.store.database import Database
from waquality.store.privacy import Erased, erase_customer, redact_bodies
from waquality.store.retention import Pruned, prune_customer_data
from waquality.store.tracker import Tracker, TrackerConfig

KEY = b"a customer id key, 32 bytes long"
NOW = datetime(2026, 5, 4, 12, tzinfo=UTC)
T = int((NOW - timedelta(days=2)).timestamp())  # webhook times: two days before NOW

GOLDEN_CUSTOMER = sorted(
    [f"messages/{p.name}" for p in (WEBHOOKS / "messages").glob("*.json")]
    + [f"user_preferences/{p.name}" for p in (WEBHOOKS / "user_preferences").glob("*.json")]
)
GOLDEN_SECRETS = [
    "16505551234",
    "16505559876",
    "US.13491208655302741918",
    "US.ENT.11815799212886844830",
    "Sheena Nelson",
    "Marco",
    "marco.plants",
    "Does it come in another color?",
    "Hi, is the monstera still available?",
    "Yes, confirm",
    "Small succulent",
    "4 inch pot",
    "Stop promotions",
]
GOLDEN_KEPT = ["confirm_order_yes", "succulent_small", "STOP_PROMOTIONS", "131051", "131049"]

# Constructed from the fact sheet (2.11, 2.13): every place a customer id or text appears.
CUSTOMER = "16505550111"
USER = "US.20000000000000000001"
PARENT = "US.ENT.30000000000000000001"
OTHER = "16505550222"
GROUP = "120363040000000001"
PARTICIPANT = "16505550333"
PARTICIPANT_USER = "US.40000000000000000001"
NEW_NUMBER = "16505550444"
TEXTS = [
    "Ada Lovelace",
    "ada.lovelace",
    "IKH-secret-hash",
    "RIKH-secret-hash",
    "my address is 1 Main St",
    "photo of my passport",
    "tax-return-ada.pdf",
    "here is my tax return",
    "Home of Ada",
    "12 Secret Lane",
    "51.50735",
    "Charles Babbage",
    "442079460000",
    "ada@example.com",
    "please gift wrap",
    "changed from",
    "\U0001f60d",
    "a reply that quotes",
    "mixed secret text",
]
SECRETS = [CUSTOMER, USER, PARENT, OTHER, GROUP, PARTICIPANT, PARTICIPANT_USER, NEW_NUMBER]


def _value(**lists: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY, "phone_number_id": PHONE_ID},
        **lists,
    }


def _messages(value: dict[str, Any], *, waba: str = WABA) -> dict[str, Any]:
    return {"id": waba, "changes": [{"field": "messages", "value": value}]}


def _message(wamid: str, at: int, kind: str, detail: Any, **extra: Any) -> dict[str, Any]:
    return {
        "from": CUSTOMER,
        "id": wamid,
        "timestamp": str(at),
        "type": kind,
        kind: detail,
        **extra,
    }


RICH_INBOUND = envelope(
    _messages(
        _value(
            contacts=[
                {
                    "profile": {"name": "Ada Lovelace", "username": "ada.lovelace"},
                    "wa_id": CUSTOMER,
                    "user_id": USER,
                    "parent_user_id": PARENT,
                    "identity_key_hash": "IKH-secret-hash",
                }
            ],
            messages=[
                _message(
                    "wamid.r1",
                    T,
                    "text",
                    {"body": "my address is 1 Main St"},
                    from_user_id=USER,
                    from_parent_user_id=PARENT,
                    context={"from": CUSTOMER, "id": "wamid.r0"},
                ),
                _message(
                    "wamid.r2",
                    T + 1,
                    "image",
                    {"id": "media.1", "mime_type": "image/jpeg", "caption": "photo of my passport"},
                ),
                _message(
                    "wamid.r3",
                    T + 2,
                    "document",
                    {
                        "id": "media.2",
                        "mime_type": "application/pdf",
                        "filename": "tax-return-ada.pdf",
                        "caption": "here is my tax return",
                    },
                ),
                _message(
                    "wamid.r4",
                    T + 3,
                    "location",
                    {
                        "latitude": 51.50735,
                        "longitude": -0.12776,
                        "name": "Home of Ada",
                        "address": "12 Secret Lane",
                    },
                ),
                _message(
                    "wamid.r5",
                    T + 4,
                    "contacts",
                    [
                        {
                            "name": {"formatted_name": "Charles Babbage", "first_name": "Charles"},
                            "phones": [{"phone": "+44 20 7946 0000", "wa_id": "442079460000"}],
                        }
                    ],
                ),
                _message(
                    "wamid.r6",
                    T + 5,
                    "interactive",
                    {
                        "type": "nfm_reply",
                        "nfm_reply": {
                            "name": "flow",
                            "body": "Sent",
                            "response_json": '{"flow_token":"F1","email":"ada@example.com"}',
                        },
                    },
                ),
                _message("wamid.r7", T + 6, "reaction", {"message_id": "wamid.b1", "emoji": "😍"}),
                _message(
                    "wamid.r8",
                    T + 7,
                    "order",
                    {
                        "catalog_id": "catalog.1",
                        "text": "please gift wrap",
                        "product_items": [
                            {"product_retailer_id": "sku.1", "quantity": 2, "currency": "EUR"}
                        ],
                    },
                ),
                _message(
                    "wamid.r9",
                    T + 8,
                    "system",
                    {
                        "body": f"User Ada changed from {CUSTOMER} to {NEW_NUMBER}",
                        "new_wa_id": NEW_NUMBER,
                        "type": "user_changed_number",
                    },
                ),
            ],
        )
    )
)
BSUID_STATUSES = envelope(
    _messages(
        _value(
            contacts=[{"profile": {"username": "ada.lovelace"}, "user_id": USER}],
            statuses=[
                {
                    "id": "wamid.o1",
                    "status": "delivered",
                    "timestamp": str(T + 60),
                    "recipient_user_id": USER,
                    "parent_recipient_user_id": PARENT,
                    "recipient_parent_user_id": PARENT,
                    "recipient_identity_key_hash": "RIKH-secret-hash",
                }
            ],
        )
    )
)
GROUP_STATUS = envelope(
    _messages(
        _value(
            statuses=[
                {
                    "id": "wamid.g1",
                    "status": "read",
                    "timestamp": str(T + 70),
                    "recipient_id": GROUP,
                    "recipient_type": "group",
                    "recipient_participant_id": PARTICIPANT,
                    "recipient_participant_user_id": PARTICIPANT_USER,
                }
            ]
        )
    )
)
BSUID_PREFERENCE = envelope(
    {
        "id": WABA,
        "changes": [
            {
                "field": "user_preferences",
                "value": _value(
                    contacts=[{"user_id": USER}],
                    user_preferences=[
                        {
                            "user_id": USER,
                            "parent_user_id": PARENT,
                            "detail": "User requested to stop marketing messages",
                            "category": "marketing_messages",
                            "value": "stop",
                            "timestamp": T + 80,
                        }
                    ],
                ),
            }
        ],
    }
)
QUOTING_REPLY = envelope(
    _messages(
        _value(
            contacts=[{"profile": {"name": "Someone Else"}, "wa_id": OTHER}],
            messages=[
                {
                    "from": OTHER,
                    "id": "wamid.q1",
                    "timestamp": str(T + 90),
                    "type": "text",
                    "text": {"body": "a reply that quotes"},
                    "context": {"from": CUSTOMER, "id": "wamid.r1"},
                }
            ],
        )
    )
)
MIXED = envelope(
    template_status(77, "APPROVED", T),
    inbound_message("wamid.m1", OTHER, T + 100, "mixed secret text"),
)
CONSTRUCTED = [RICH_INBOUND, BSUID_STATUSES, GROUP_STATUS, BSUID_PREFERENCE, QUOTING_REPLY, MIXED]


def _redacted(body: bytes, key: bytes | None, keep_bodies: bool) -> bytes:
    found = redact_payload(body, key, keep_bodies)
    assert found is not None
    assert redact_payload(found, key, keep_bodies) is None  # once is enough
    return found


def _management(document: Any) -> list[Any]:
    return [
        change
        for entry in document["entry"]
        for change in entry["changes"]
        if change["field"] not in privacy.CUSTOMER_FIELDS
    ]


# -- redact_payload: pure ---------------------------------------------------------------------


@pytest.mark.parametrize("name", GOLDEN_CUSTOMER)
def test_golden_payloads_lose_ids_profiles_and_text(name: str) -> None:
    body = webhook(name)
    if name.endswith("value_level_errors.json"):
        assert redact_payload(body, KEY, False) is None  # no customer in it
        return
    text = _redacted(body, KEY, False).decode()
    assert not [secret for secret in GOLDEN_SECRETS if secret in text]
    assert [kept for kept in GOLDEN_KEPT if kept in body.decode()] == [
        kept for kept in GOLDEN_KEPT if kept in text
    ]
    before, after = orjson.loads(body), orjson.loads(text)
    value_before = before["entry"][0]["changes"][0]["value"]
    value_after = after["entry"][0]["changes"][0]["value"]
    for kind in ("messages", "statuses", "user_preferences"):
        items = zip(value_before.get(kind, []), value_after.get(kind, []), strict=True)
        for old, new in items:
            for field in ("id", "type", "timestamp", "status", "errors", "pricing", "value"):
                assert old.get(field) == new.get(field)


def test_with_a_key_only_ids_become_the_tracker_pseudonyms_and_text_stays() -> None:
    document = orjson.loads(_redacted(webhook("messages/inbound_text.json"), KEY, True))
    value = document["entry"][0]["changes"][0]["value"]
    assert value["contacts"] == [{"wa_id": pseudonym("16505551234", KEY)}]  # no profile
    assert value["messages"][0]["from"] == pseudonym("16505551234", KEY)
    assert value["messages"][0]["text"] == {"body": "Does it come in another color?"}


def test_without_bodies_only_text_goes_and_ids_stay() -> None:
    document = orjson.loads(
        _redacted(webhook("messages/template_quick_reply_button.json"), None, False)
    )
    value = document["entry"][0]["changes"][0]["value"]
    assert value["contacts"][0] == {"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}
    message = value["messages"][0]
    assert message["button"] == {"payload": "STOP_PROMOTIONS"}
    assert message["from"] == "16505551234" and message["context"]["from"] == DISPLAY


def test_nothing_changes_when_neither_setting_is_on() -> None:
    for body in [*CONSTRUCTED, webhook("messages/inbound_text.json")]:
        assert redact_payload(body, None, True) is None


def test_every_constructed_id_and_text_goes() -> None:
    for body in CONSTRUCTED:
        text = _redacted(body, KEY, False).decode()
        assert not [s for s in [*SECRETS, *TEXTS] if s in text], text


def test_rich_messages_keep_types_ids_and_reply_ids() -> None:
    document = orjson.loads(_redacted(RICH_INBOUND, KEY, False))
    value = document["entry"][0]["changes"][0]["value"]
    assert value["contacts"] == [
        {
            "wa_id": pseudonym(CUSTOMER, KEY),
            "user_id": pseudonym(USER, KEY),
            "parent_user_id": pseudonym(PARENT, KEY),
        }
    ]
    by_id = {m["id"]: m for m in value["messages"]}
    hidden = pseudonym(CUSTOMER, KEY)
    assert [m["type"] for m in value["messages"]] == [
        "text",
        "image",
        "document",
        "location",
        "contacts",
        "interactive",
        "reaction",
        "order",
        "system",
    ]
    assert all(m["from"] == hidden for m in value["messages"])
    assert by_id["wamid.r1"]["context"] == {"from": hidden, "id": "wamid.r0"}  # the customer
    assert by_id["wamid.r1"]["from_user_id"] == pseudonym(USER, KEY)
    assert by_id["wamid.r1"]["text"] == {}
    assert by_id["wamid.r2"]["image"] == {"id": "media.1", "mime_type": "image/jpeg"}
    assert by_id["wamid.r3"]["document"] == {"id": "media.2", "mime_type": "application/pdf"}
    assert by_id["wamid.r4"]["location"] == {}
    assert "contacts" not in by_id["wamid.r5"]
    assert by_id["wamid.r6"]["interactive"] == {"type": "nfm_reply", "nfm_reply": {}}
    assert by_id["wamid.r7"]["reaction"] == {"message_id": "wamid.b1"}
    assert by_id["wamid.r8"]["order"] == {
        "catalog_id": "catalog.1",
        "product_items": [{"product_retailer_id": "sku.1", "quantity": 2, "currency": "EUR"}],
    }
    assert by_id["wamid.r9"]["system"] == {"type": "user_changed_number"}


def test_with_a_key_system_messages_keep_their_ids_hashed_and_lose_their_text() -> None:
    document = orjson.loads(_redacted(RICH_INBOUND, KEY, True))
    system = document["entry"][0]["changes"][0]["value"]["messages"][-1]["system"]
    assert system == {"new_wa_id": pseudonym(NEW_NUMBER, KEY), "type": "user_changed_number"}


def test_statuses_of_every_era_are_hashed() -> None:
    for body in (BSUID_STATUSES, GROUP_STATUS):
        document = orjson.loads(_redacted(body, KEY, True))
        [status] = document["entry"][0]["changes"][0]["value"]["statuses"]
        for field, value in status.items():
            if "recipient" in field and field != "recipient_type":
                assert privacy.is_pseudonym(value), field
        assert "recipient_identity_key_hash" not in status
        assert status["status"] in ("delivered", "read")


def test_the_business_number_in_a_reply_context_stays() -> None:
    document = orjson.loads(_redacted(webhook("messages/interactive_button_reply.json"), KEY, True))
    message = document["entry"][0]["changes"][0]["value"]["messages"][0]
    assert message["context"]["from"] == DISPLAY


def test_management_changes_in_the_same_body_are_untouched() -> None:
    document = orjson.loads(_redacted(MIXED, KEY, False))
    assert _management(document) == _management(orjson.loads(MIXED))


def test_ids_in_other_shapes_are_read_as_the_parser_reads_them() -> None:
    body = envelope(
        _messages(
            _value(
                messages=[
                    {
                        "from": "+1 650-555-0111",
                        "id": "wamid.f1",
                        "timestamp": str(T),
                        "type": "text",
                    },
                    {"from": 16505550111, "id": "wamid.f2", "timestamp": str(T), "type": "text"},
                    {"from": {"not": "an id"}, "id": "wamid.f3", "timestamp": str(T), "type": "x"},
                ]
            )
        )
    )
    messages = orjson.loads(_redacted(body, KEY, True))["entry"][0]["changes"][0]["value"]
    froms = [m.get("from") for m in messages["messages"]]
    assert froms == [pseudonym(CUSTOMER, KEY), pseudonym(CUSTOMER, KEY), None]


def _customers(body: bytes) -> list[str | None]:
    return [item.customer for item in parse_body(body).messages]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(webhook("messages/bsuid_inbound_no_wa_id.json"), id="bsuid_inbound"),
        pytest.param(BSUID_STATUSES, id="bsuid_statuses"),
        pytest.param(webhook("messages/inbound_text.json"), id="inbound_text"),
        pytest.param(webhook("messages/status_read.json"), id="status_read"),
    ],
)
def test_the_redacted_body_names_the_customer_the_tracker_stored(body: bytes) -> None:
    stored = [pseudonym(c, KEY) if c else None for c in _customers(body)]
    assert _customers(_redacted(body, KEY, False)) == stored


# -- never raises, idempotent: property-based -------------------------------------------------

ID_FIELDS = {
    *privacy.CONTACT.names,
    *privacy.SENDER.names,
    *privacy.SYSTEM.names,
    *privacy.RECIPIENT.names,
    *privacy.PREFERENCE.names,
    "profile",
    "context",
    "text",
    "interactive",
    "type",
    "system",
}
CUSTOMER_DOCUMENTS = [orjson.loads(webhook(name)) for name in GOLDEN_CUSTOMER] + [
    orjson.loads(body) for body in CONSTRUCTED
]


def _slots(value: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every dict value whose key names an id or text."""
    stack = [value]
    while stack:
        node = stack.pop()
        children = node.items() if isinstance(node, dict) else enumerate(node)
        for key, inner in children:
            if isinstance(node, dict) and key in ID_FIELDS:
                yield node, key
            if isinstance(inner, dict | list):
                stack.append(inner)


@st.composite
def customer_bodies(draw: st.DrawFn) -> bytes:
    """Customer payloads with ids and text of every type (objects, numbers, pseudonyms, ...)."""
    document = copy.deepcopy(draw(st.sampled_from(CUSTOMER_DOCUMENTS)))
    slots = list(_slots(document))
    for _ in range(draw(st.integers(1, 4)) if slots else 0):
        container, key = draw(st.sampled_from(slots))
        container[key] = draw(
            json_values
            | st.sampled_from([pseudonym(CUSTOMER, KEY), "h:" + "F" * 32, "", " ", "+1 650"])
        )
    return emit(document)


bodies = customer_bodies() | mutated_bodies | st.binary(max_size=200)


@given(body=bodies, key=st.sampled_from([None, KEY]), keep_bodies=st.booleans())
@fuzz_settings(300)
def test_redaction_never_raises_and_is_idempotent(
    body: bytes, key: bytes | None, keep_bodies: bool
) -> None:
    once = redact_payload(body, key, keep_bodies)
    if once is not None:
        assert redact_payload(once, key, keep_bodies) is None
        assert isinstance(json.loads(once), dict)  # still JSON (lone surrogates kept escaped)


@given(body=bodies, customer=st.sampled_from([CUSTOMER, USER, "16505551234", "x"]))
@fuzz_settings(200)
def test_erasure_from_a_payload_never_raises_and_is_idempotent(body: bytes, customer: str) -> None:
    for key in (None, KEY):
        names = customer_names(customer, key)
        once = privacy.erase_from_payload(body, names)
        if once is not None and once.body is not None:
            assert privacy.erase_from_payload(once.body, names) is None


# -- names, erasure from a payload: pure -------------------------------------------------------


def test_customer_names_cover_the_forms_an_id_is_stored_in() -> None:
    assert customer_names("+1 (650) 555-0111", None) == {"+1 (650) 555-0111", CUSTOMER}
    assert customer_names(CUSTOMER, KEY) == {CUSTOMER, pseudonym(CUSTOMER, KEY)}
    assert customer_names(USER, None) == {USER}  # a user id is not read as digits
    hidden = pseudonym(USER, KEY)
    assert customer_names(hidden, KEY) == {hidden}
    assert customer_names(" ", KEY) == {" ", pseudonym(" ", KEY)}
    assert customer_names("", KEY) == frozenset()


def test_erasure_from_a_payload_keeps_the_others() -> None:
    body = webhook("user_preferences/two_items.json")
    erased = privacy.erase_from_payload(body, customer_names("16505551234", None))
    assert erased is not None and erased.body is not None and erased.customer_data
    value = orjson.loads(erased.body)["entry"][0]["changes"][0]["value"]
    assert value["contacts"] == [{"wa_id": "16505559876"}]
    assert [p["wa_id"] for p in value["user_preferences"]] == ["16505559876"]
    assert privacy.erase_from_payload(body, customer_names("19999999999", None)) is None


def test_erasure_leaves_management_changes_and_drops_an_empty_body() -> None:
    erased = privacy.erase_from_payload(MIXED, customer_names(OTHER, None))
    assert erased is not None and erased.body is not None and not erased.customer_data
    document = orjson.loads(erased.body)
    assert document["entry"] == [orjson.loads(MIXED)["entry"][0]]
    alone = privacy.erase_from_payload(RICH_INBOUND, customer_names(CUSTOMER, None))
    assert alone == privacy.Erasure(None, False)


def test_erasure_takes_a_quoted_id_out_of_another_customer_reply() -> None:
    erased = privacy.erase_from_payload(QUOTING_REPLY, customer_names(CUSTOMER, None))
    assert erased is not None and erased.body is not None
    [message] = orjson.loads(erased.body)["entry"][0]["changes"][0]["value"]["messages"]
    assert message["context"] == {"id": "wamid.r1"} and message["from"] == OTHER


def test_opt_out_values_lose_their_ids_and_keep_what_they_say() -> None:
    item = orjson.loads(webhook("user_preferences/stop.json"))["entry"][0]["changes"][0]["value"]
    value = item["user_preferences"][0]
    hidden = privacy.pseudonymise_preference(value, KEY)
    assert hidden is not None and hidden["wa_id"] == pseudonym("16505551234", KEY)
    assert privacy.pseudonymise_preference(hidden, KEY) is None
    forgotten = privacy.forget_preference(hidden, customer_names("16505551234", KEY))
    assert forgotten == {k: v for k, v in value.items() if k != "wa_id"}
    assert privacy.forget_preference(hidden, customer_names("19999999999", KEY)) is None
    assert privacy.forget_preference(forgotten) is None


# -- in the store: processing ------------------------------------------------------------------


def store(db: Database, *bodies: bytes, at: datetime = NOW) -> None:
    with db.write(priority=True) as conn:
        inbox.insert_bodies(conn, [inbox.Body(body, at) for body in bodies])


def process(db: Database, config: TrackerConfig, *bodies: bytes, at: datetime = NOW) -> None:
    store(db, *bodies, at=at)
    Processor(db, clock=lambda: NOW, tracker=Tracker(db, config)).drain()


def everything_stored(db: Database) -> str:
    """Every stored row that may hold customer data, as one text."""
    parts: list[str] = []
    with db.read() as conn:
        parts += [b.decode() for b in conn.execute(select(schema.raw_webhooks.c.body)).scalars()]
        for table in (schema.messages, schema.conversations, schema.responses):
            parts += [repr(dict(row)) for row in conn.execute(select(table)).mappings()]
        values = conn.execute(select(schema.events.c.value)).scalars()
        parts += [orjson.dumps(value).decode() for value in values]
    return "\n".join(parts)


def test_nothing_of_a_customer_survives_processing_with_a_key_and_without_bodies(
    db: Database,
) -> None:
    config = TrackerConfig(customer_key=KEY, keep_bodies=False)
    process(db, config, *[webhook(name) for name in GOLDEN_CUSTOMER], *CONSTRUCTED)
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(schema.quarantine)).scalar() == 0
        customers = set(conn.execute(select(schema.messages.c.customer)).scalars())
        texts = set(conn.execute(select(schema.messages.c.body)).scalars())
        kinds = set(conn.execute(select(schema.events.c.kind)).scalars())
        conversations = conn.execute(select(func.count()).select_from(schema.conversations))
        assert conversations.scalar()
    stored = everything_stored(db)
    assert not [s for s in [*GOLDEN_SECRETS, *SECRETS, *TEXTS] if s in stored]
    assert customers and all(privacy.is_pseudonym(c) for c in customers)
    assert texts == {None}
    assert {"stop", "resume", "signup", "130429"} <= kinds  # opt-outs and errors still counted
    assert "message_template_id" in stored  # the management change of the mixed body


def test_without_either_setting_nothing_is_read_or_rewritten(db: Database) -> None:
    process(db, TrackerConfig(), *CONSTRUCTED)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        with db.write() as conn:
            assert redact_bodies(conn, [1, 2, 3], TrackerConfig()) == 0
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert not [s for s in statements if "raw_webhooks" in s or "events" in s]
    with db.read() as conn:
        assert sorted(conn.execute(select(schema.raw_webhooks.c.body)).scalars()) == sorted(
            CONSTRUCTED
        )


def test_only_text_goes_without_bodies_and_no_key(db: Database) -> None:
    process(db, TrackerConfig(keep_bodies=False), RICH_INBOUND, QUOTING_REPLY)
    stored = everything_stored(db)
    profile = ("Ada Lovelace", "ada.lovelace", "IKH-secret-hash")  # hidden with a key only
    assert CUSTOMER in stored and OTHER in stored and all(p in stored for p in profile)
    assert not [t for t in TEXTS if t in stored and t not in profile]


def messages_rows(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(select(schema.messages).order_by(schema.messages.c.wamid)).mappings()
        return [{k: v for k, v in row.items() if k != "updated_at"} for row in rows]


def requeue_all(db: Database) -> None:
    with db.write() as conn:
        ids = list(conn.execute(select(schema.raw_webhooks.c.id)).scalars())
        inbox.requeue(conn, ids)


def count_rows(db: Database, table: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


REDACTED_AGAIN = [
    "messages/bsuid_inbound_no_wa_id.json",
    "messages/inbound_text.json",
    "messages/status_sent.json",
    "messages/interactive_list_reply.json",
]


def test_reprocessing_redacted_bodies_changes_no_stored_message(db: Database) -> None:
    config = TrackerConfig(customer_key=KEY, keep_bodies=False)
    process(db, config, *[webhook(n) for n in REDACTED_AGAIN], RICH_INBOUND, BSUID_STATUSES)
    before, events = messages_rows(db), count_rows(db, schema.events)
    with db.read() as conn:
        bodies = sorted(conn.execute(select(schema.raw_webhooks.c.body)).scalars())
    requeue_all(db)
    Processor(db, clock=lambda: NOW, tracker=Tracker(db, config)).drain()
    assert messages_rows(db) == before
    assert count_rows(db, schema.events) == events
    with db.read() as conn:  # redacting again changed nothing
        assert sorted(conn.execute(select(schema.raw_webhooks.c.body)).scalars()) == bodies


@pytest.mark.parametrize(
    "name",
    [
        "messages/bsuid_inbound_no_wa_id.json",
        "messages/inbound_text.json",
    ],
)
def test_replaying_a_redacted_body_into_empty_tables_stores_the_same_messages(
    db: Database, name: str
) -> None:
    config = TrackerConfig(customer_key=KEY, keep_bodies=False)
    process(db, config, webhook(name))
    before = messages_rows(db)
    with db.write() as conn:
        for table in (schema.messages, schema.conversations, schema.responses):
            conn.execute(delete(table))
    requeue_all(db)
    Processor(db, clock=lambda: NOW, tracker=Tracker(db, config)).drain()
    assert messages_rows(db) == before


def test_reprocessing_a_redacted_opt_out_adds_no_event(db: Database) -> None:
    config = TrackerConfig(customer_key=KEY)
    process(db, config, webhook("user_preferences/stop.json"))
    requeue_all(db)
    Processor(db, clock=lambda: NOW, tracker=Tracker(db, config)).drain()
    assert count_rows(db, schema.events) == 1


def test_a_redelivered_original_opt_out_adds_no_event(db: Database) -> None:
    config = TrackerConfig(customer_key=KEY)
    process(db, config, webhook("user_preferences/stop.json"))
    process(db, config, webhook("user_preferences/stop.json"))
    assert count_rows(db, schema.events) == 1


# -- in the store: erasure ---------------------------------------------------------------------

STATS_TABLES = (
    schema.conversation_stats,
    schema.delivery_stats,
    schema.delivery_errors,
    schema.response_stats,
)


def stats(db: Database) -> dict[str, Any]:
    """The per-hour aggregates, comparable (sketches read, rows back at zero left out)."""
    found: dict[str, Any] = {}
    with db.read() as conn:
        for table in STATS_TABLES:
            values = []
            for row in conn.execute(select(table)).mappings():
                item = dict(row)
                if "bins" in item:
                    item["bins"] = dict(sketch.unpack(item["bins"]))
                    item["total_seconds"] = round(item["total_seconds"], 6)
                counters = [v for k, v in item.items() if isinstance(v, int) and k != "code"]
                if counters and not any(counters):
                    continue
                values.append(tuple(sorted(item.items())))
            found[table.name] = sorted(values, key=repr)
    return found


def stop(customer: str, at: int) -> bytes:
    document = orjson.loads(webhook("user_preferences/stop.json"))
    value = document["entry"][0]["changes"][0]["value"]
    value["contacts"] = [{"wa_id": customer}]
    value["user_preferences"][0].update(wa_id=customer, timestamp=at)
    return orjson.dumps(document)


def sent(wamid: str, customer: str, at: int) -> bytes:
    value = _value(
        statuses=[{"id": wamid, "status": "sent", "timestamp": str(at), "recipient_id": customer}]
    )
    return envelope(_messages(value))


ERASURE_BODIES = [
    envelope(inbound_message("wamid.e1", CUSTOMER, T, "erase me")),
    sent("wamid.e2", CUSTOMER, T + 60),  # the business answers: a response
    envelope(inbound_message("wamid.e3", OTHER, T + 5, "keep me")),
    sent("wamid.e4", OTHER, T + 120),
    QUOTING_REPLY,
    envelope(template_status(78, "APPROVED", T), inbound_message("wamid.e5", CUSTOMER, T + 200)),
    envelope(inbound_message("wamid.e6", CUSTOMER, T + 300), inbound_message("wamid.e7", OTHER, T)),
    stop(CUSTOMER, T + 400),
    webhook("messages/bsuid_inbound_no_wa_id.json"),
]


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "keyed"])
def test_erasing_a_customer_removes_them_everywhere_and_keeps_the_rest(
    db: Database, key: bytes | None
) -> None:
    config = TrackerConfig(customer_key=key)
    process(db, config, *ERASURE_BODIES)
    aggregates, stored = stats(db), everything_stored(db)
    them, others = pseudonym(CUSTOMER, key), pseudonym(OTHER, key)
    assert them in stored and others in stored
    erased = erase_customer(db, CUSTOMER, config, NOW)
    # messages e1 e2 e5 e6; one conversation, one response; bodies: theirs alone (1, 2 and the
    # opt-out, 8) deleted, the quoting reply (5) and the shared ones (6, 7) rewritten; the
    # opt-out event no longer names them
    assert erased == Erased(messages=4, conversations=1, responses=1, payloads=6, events=1)
    stored = everything_stored(db)
    assert them not in stored and CUSTOMER not in stored
    assert others in stored and pseudonym("US.13491208655302741918", key) in stored
    assert stats(db) == aggregates
    with db.read() as conn:
        raw = conn.execute(select(schema.raw_webhooks)).mappings().all()
        left = {row["id"]: row for row in raw}
        kinds = conn.execute(select(schema.events.c.kind)).scalars().all()
        customers = set(conn.execute(select(schema.messages.c.customer)).scalars())
    assert "stop" in kinds  # still an opt-out
    assert them not in customers and others in customers
    assert sorted(left) == [3, 4, 5, 6, 7, 9]
    mixed = left[6]
    assert b"message_template_id" in mixed["body"] and not mixed["has_customer_data"]
    assert mixed["redacted_at"] == NOW
    assert left[7]["has_customer_data"] and b"wamid.e7" in left[7]["body"]
    assert erase_customer(db, CUSTOMER, config, NOW) == Erased()


def _wamids(db: Database) -> set[str]:
    with db.read() as conn:
        return set(conn.execute(select(schema.messages.c.wamid)).scalars())


THEIR_WAMIDS = {"wamid.e1", "wamid.e2", "wamid.e5", "wamid.e6"}


def test_bodies_not_yet_processed_are_erased_too(db: Database) -> None:
    config = TrackerConfig()
    store(db, *ERASURE_BODIES)  # all still waiting
    erased = erase_customer(db, CUSTOMER, config, NOW)
    assert erased == Erased(payloads=6)
    Processor(db, clock=lambda: NOW, tracker=Tracker(db, config)).drain()
    stored = everything_stored(db)
    assert CUSTOMER not in stored and OTHER in stored
    wamids = _wamids(db)
    assert not wamids & THEIR_WAMIDS and {"wamid.e3", "wamid.e4", "wamid.e7"} <= wamids
    assert count_rows(db, schema.events) > 0  # the shared body's template change still counts


def _wait_for_a_lock_wait(db: Database) -> None:
    """Until a session of this database waits for a row lock (PostgreSQL)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with db.read() as conn:
            if conn.execute(query).scalar():
                return
        time.sleep(0.01)
    raise AssertionError("erasure never waited for the worker's locks")


def test_erasure_while_a_worker_holds_the_bodies_leaves_nothing_of_them(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrackerConfig()
    store(db, *ERASURE_BODIES)
    processor = Processor(db, clock=lambda: NOW, tracker=Tracker(db, config))
    erased: list[Erased] = []

    def erase() -> None:
        erased.append(erase_customer(db, CUSTOMER, config, NOW))

    if db.is_sqlite:  # the worker reads and parses before it takes the write lock
        read = processor._prefetch

        def read_then_erase(size: int) -> Any:
            found = read(size)
            erase()
            return found

        monkeypatch.setattr(processor, "_prefetch", read_then_erase)
        processor.run_once()
    else:  # the worker claims (locks) the bodies, then parses: erasure waits for it
        claim = inbox.claim_pending
        eraser = threading.Thread(target=erase)

        def claim_then_erase(conn: Any, limit: int) -> Any:
            rows = claim(conn, limit)
            eraser.start()
            _wait_for_a_lock_wait(db)
            return rows

        monkeypatch.setattr(inbox, "claim_pending", claim_then_erase)
        processor.run_once()
        eraser.join()
    monkeypatch.undo()
    processor.drain()
    assert erased and erased[0].payloads == 6
    assert CUSTOMER not in everything_stored(db)
    wamids = _wamids(db)
    assert not wamids & THEIR_WAMIDS and {"wamid.e3", "wamid.e4", "wamid.e7"} <= wamids


def test_a_customer_is_found_by_the_number_as_written_by_its_user_id_and_by_its_pseudonym(
    db: Database,
) -> None:
    config = TrackerConfig(customer_key=KEY)
    process(db, config, *ERASURE_BODIES)
    assert erase_customer(db, "+1 (650) 555-0111", config, NOW).messages == 4
    assert erase_customer(db, pseudonym(OTHER, KEY), config, NOW).messages == 4
    bsuid = erase_customer(db, "US.13491208655302741918", config, NOW)
    assert bsuid == Erased(messages=1, conversations=1, payloads=1)
    assert count_rows(db, schema.messages) == 0


def api(db: Database, **state: Any) -> FastAPI:
    """The API as the app serves it (the tracker given to it), with ``state`` set."""
    app = create_api(db, Authenticator(digest("token")), tracker=state.pop("tracker", None))
    for name, value in state.items():
        setattr(app.state, name, value)
    return app


def delete_request(app: FastAPI, path: str) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://waquality") as client:
            return await client.delete(path, headers={"Authorization": "Bearer token"})

    return asyncio.run(send())


def test_erasure_over_http(db: Database) -> None:
    config = TrackerConfig(customer_key=KEY)
    process(db, config, *ERASURE_BODIES)
    app = api(db, tracker_config=config)
    response = delete_request(app, f"/api/v1/customers/{CUSTOMER}")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "messages": 4,
        "conversations": 1,
        "responses": 1,
        "payloads": 6,
        "events": 1,
    }
    again = delete_request(app, f"/api/v1/customers/{CUSTOMER}")
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "not_found"
    assert CUSTOMER not in again.text
    assert delete_request(app, "/api/v1/customers/" + "9" * 200).status_code == 400


def test_the_api_erases_with_the_tracker_settings(db: Database) -> None:
    config = TrackerConfig(customer_key=KEY)
    process(db, config, *ERASURE_BODIES)
    app = api(db, tracker=Tracker(db, config))
    assert delete_request(app, f"/api/v1/customers/{OTHER}").json()["messages"] == 4


# -- in the store: retention -------------------------------------------------------------------

DAY = timedelta(days=1)
RETENTION = timedelta(days=30)


def inbound(wamid: str, customer: str, at: datetime) -> Inbound:
    return Inbound(wamid, PHONE_ID, customer, at, "text", None, None, text="hello")


def reply(wamid: str, customer: str, at: datetime) -> Status:
    return Status(wamid, PHONE_ID, customer, MessageStatus.SENT, at)


def track(db: Database, items: list[Item], now: datetime) -> None:
    tracker = Tracker(db)
    with db.write() as conn:
        tracker.apply(conn, items, now)
    tracker.end_idle(now)


def first_phase(now: datetime) -> list[Item]:
    """An old conversation, one that spans the retention's cutoff, and a recent one."""
    old: list[Item] = [
        inbound("old.1", "old", now - 40 * DAY),
        reply("old.2", "old", now - 40 * DAY + DAY / 24),
    ]
    start = now - 32 * DAY
    spanning: list[Item] = []
    for half_day in range(62):
        at = start + half_day * DAY / 2
        spanning.append(
            inbound(f"span.{half_day}", "span", at)
            if half_day % 2 == 0
            else reply(f"span.{half_day}", "span", at)
        )
    return [*old, *spanning, inbound("new.1", "new", now - DAY / 24)]


def second_phase(now: datetime) -> list[Item]:
    """What comes after ``now``: a late message within the spanning conversation's gap (which
    recomputes it from its first message), a reply, a returning customer."""
    return [
        inbound("span.late", "span", now - DAY - DAY / 6),
        reply("span.late.reply", "span", now - DAY - DAY / 8),
        inbound("old.again", "old", now + DAY / 8),
        reply("new.reply", "new", now + DAY / 48),
    ]


def test_retention_deletes_old_tracker_rows_in_batches_and_keeps_the_aggregates(
    db: Database,
) -> None:
    track(db, first_phase(NOW), NOW)
    process(db, TrackerConfig(), stop(CUSTOMER, int((NOW - 40 * DAY).timestamp())))
    process(db, TrackerConfig(), stop(OTHER, int((NOW - DAY).timestamp())))
    aggregates = stats(db)
    with db.read() as conn:
        span_messages = conn.execute(
            select(func.count()).where(schema.messages.c.customer == "span")
        ).scalar_one()
    pruned = prune_customer_data(db, NOW, RETENTION, batch=2)
    assert pruned == Pruned(messages=2, conversations=1, responses=1, events=1)
    assert str(pruned) == "0 payloads, 2 messages, 1 conversations, 1 responses, 1 events"
    assert stats(db) == aggregates
    with db.read() as conn:
        customers = sorted(conn.execute(select(schema.messages.c.customer)).scalars())
        conversations = conn.execute(select(schema.conversations.c.customer)).scalars().all()
        values = conn.execute(select(schema.events.c.value).order_by(schema.events.c.id)).all()
    assert customers == ["new"] + ["span"] * span_messages  # the spanning one is whole
    assert sorted(conversations) == ["new", "span"]
    assert "wa_id" not in values[0].value and values[0].value["value"] == "stop"
    assert values[1].value["wa_id"] == OTHER
    assert prune_customer_data(db, NOW, RETENTION) == Pruned()


def test_retention_never_changes_what_the_aggregates_become(db: Database) -> None:
    later = NOW + DAY / 2

    def run(prune: bool) -> dict[str, Any]:
        with db.write() as conn:
            for table in (schema.messages, schema.conversations, schema.responses, *STATS_TABLES):
                conn.execute(delete(table))
        track(db, first_phase(NOW), NOW)
        if prune:
            prune_customer_data(db, NOW, RETENTION, batch=3)
        track(db, second_phase(NOW), later)
        return stats(db)

    assert run(prune=True) == run(prune=False)


def test_retention_shorter_than_the_gap_keeps_open_conversations(db: Database) -> None:
    track(db, [inbound("open.1", "open", NOW - DAY / 4)], NOW)
    assert prune_customer_data(db, NOW, timedelta(hours=1)) == Pruned()
    assert count_rows(db, schema.messages) == 1 and count_rows(db, schema.conversations) == 1


def test_retention_of_raw_payloads_is_counted_with_the_rest(db: Database) -> None:
    old = NOW - 40 * DAY
    process(db, TrackerConfig(), MIXED, envelope(inbound_message("wamid.p1", OTHER, T)), at=old)
    with db.write() as conn:  # old enough to go with them
        conn.execute(update(schema.messages).values(at=old))
    pruned = prune_customer_data(db, NOW, RETENTION)
    assert (pruned.payloads, pruned.messages, pruned.total) == (2, 2, 4 + pruned.conversations)
    assert count_rows(db, schema.raw_webhooks) == 1  # the management change stays
