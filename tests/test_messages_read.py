"""Reading ``messages`` values: inbound messages, statuses and errors, typed; never a raise."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import webhook
from waquality.domain.enums import MessageStatus
from waquality.domain.messages import read

PHONE = "106540352242922"


def value(name: str) -> Any:
    return orjson.loads(webhook(f"messages/{name}.json"))["entry"][0]["changes"][0]["value"]


def test_inbound_kinds_replies_and_customers() -> None:
    [text] = read(value("inbound_text")).inbound
    assert (text.customer, text.kind, text.phone_number_id) == ("16505551234", "text", PHONE)
    assert text.at == datetime(2025, 6, 8, 20, 59, 43, tzinfo=UTC)
    [button] = read(value("interactive_button_reply")).inbound
    assert (button.kind, button.reply_id) == ("interactive:button_reply", "confirm_order_yes")
    assert button.replies_to and button.replies_to.startswith("wamid.")
    [row] = read(value("interactive_list_reply")).inbound
    assert (row.kind, row.reply_id) == ("interactive:list_reply", "succulent_small")
    [tap] = read(value("template_quick_reply_button")).inbound
    assert (tap.kind, tap.reply_id) == ("button", "STOP_PROMOTIONS")
    [odd] = read(value("unsupported_with_errors")).inbound
    assert (odd.kind, odd.error_codes) == ("unsupported", (131051,))


def test_a_customer_without_a_phone_number_is_keyed_on_the_user_id() -> None:
    [message] = read(value("bsuid_inbound_no_wa_id")).inbound
    assert message.customer.startswith("US.")


def test_statuses_pricing_errors_and_value_errors() -> None:
    [sent] = read(value("status_sent")).statuses
    assert (sent.status, sent.category, sent.origin) == (
        MessageStatus.SENT,
        "marketing",
        "marketing",
    )
    [failed] = read(value("status_failed_131049")).statuses
    assert (failed.status, failed.error_codes) == (MessageStatus.FAILED, (131049,))
    [legacy] = read(value("status_delivered_legacy_cbp")).statuses
    assert (legacy.status, legacy.category) == (MessageStatus.DELIVERED, "service")
    assert read(value("value_level_errors")).error_codes == [130429]
    hyphen = {
        "id": "wamid.x",
        "status": "sent",
        "timestamp": "1750030073",
        "pricing": {"category": "authentication-international"},
    }
    assert read({"statuses": [hyphen]}).statuses[0].category == "authentication_international"


def test_the_lifecycle_never_moves_backwards() -> None:
    order = ["sent", "delivered", "read", "played", "failed"]
    ranks = [MessageStatus.parse(s).rank for s in order]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert MessageStatus.parse("deleted") is MessageStatus.UNKNOWN
    assert MessageStatus.UNKNOWN.rank < MessageStatus.SENT.rank


def test_unreadable_items_are_reported_by_path() -> None:
    found = read({"messages": [{"id": "wamid.a"}, 7], "statuses": [{"status": "sent"}]})
    assert found.unreadable == ["messages[0]", "messages[1]", "statuses[0]"]
    assert read("not a value").unreadable == [""]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, derandomize=True, database=None)
@given(
    st.sampled_from(
        ["inbound_text", "status_sent", "interactive_button_reply", "status_failed_131049"]
    ),
    st.lists(
        st.tuples(
            st.sampled_from(["messages", "statuses", "contacts", "metadata", "errors"]), json_values
        ),
        max_size=3,
    ),
)
def test_mutated_values_never_raise(name: str, mutations: list[tuple[str, Any]]) -> None:
    mutated = dict(value(name))
    for key, replacement in mutations:
        mutated[key] = replacement
    found = read(mutated)
    items = sum(
        len(v) for v in (mutated.get("messages"), mutated.get("statuses")) if isinstance(v, list)
    )
    assert len(found.inbound) + len(found.statuses) + len(found.unreadable) == items
