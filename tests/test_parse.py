"""The parser against every golden payload, and the domain normalisers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from conftest import manifest, webhook
from waquality.domain.enums import (
    MessagingLimit,
    PhoneStatus,
    PreferenceValue,
    QualityRating,
    TemplateEvent,
    WebhookField,
)
from waquality.domain.events import PhoneQualityUpdate, TemplateStatusUpdate
from waquality.domain.values import (
    as_id,
    normalise_display_number,
    normalise_language,
    parse_timestamp,
)
from waquality.process.parse import parse_body

KNOWN = {f.value for f in WebhookField} - {"UNKNOWN"}


@pytest.mark.parametrize("case", manifest(), ids=lambda c: c["file"])
def test_golden_payload_counts(case: dict[str, Any]) -> None:
    parsed = parse_body(webhook(case["file"]))
    assert len(parsed.broken) == case["broken_changes"], parsed.broken
    assert len(parsed.events) == case["management_events"]
    unknown = [e for e in parsed.events if e.field is WebhookField.UNKNOWN]
    assert bool(unknown) == case["unknown_field"]
    for event in unknown:
        assert event.field_name not in KNOWN
        assert event.value  # the raw JSON of an unknown field is kept


def test_every_event_has_a_unique_dedupe_key_and_a_time() -> None:
    keys: dict[str, str] = {}
    for case in manifest():
        for event in parse_body(webhook(case["file"])).events:
            if event.dedupe_key in keys:
                # the only identical change across files is the deliberate redelivery pair
                assert {keys[event.dedupe_key], case["file"]} == {
                    "sequences/retry_redelivery_1.json",
                    "sequences/retry_redelivery_2.json",
                }
            keys[event.dedupe_key] = case["file"]


def test_duplicates_inside_one_post_are_dropped() -> None:
    parsed = parse_body(webhook("batching/duplicate_change_same_post.json"))
    assert parsed.changes["message_template_status_update"] > len(parsed.events)


def test_large_batch_reads_every_change() -> None:
    parsed = parse_body(webhook("batching/large_1000_changes.json"))
    assert sum(parsed.changes.values()) == 1000
    assert parsed.has_customer_data and parsed.has_management_data


def test_paused_template_is_typed() -> None:
    [event] = parse_body(webhook("sequences/out_of_order_1_newer_delivered_first.json")).events
    detail = event.detail
    assert isinstance(detail, TemplateStatusUpdate)
    assert detail.event is TemplateEvent.PAUSED
    assert detail.pause_hours == 3
    assert detail.template.template_id == "1689556908129870"
    assert event.occurred_at == datetime.fromtimestamp(1762614000, UTC)


def test_legacy_phone_quality_update_is_typed() -> None:
    events = parse_body(webhook("phone_number_quality_update/legacy_flagged.json")).events
    detail = events[0].detail
    assert isinstance(detail, PhoneQualityUpdate)
    assert detail.event.value == "FLAGGED"
    assert detail.current_limit is MessagingLimit.TIER_10K


def test_unknown_enum_value_maps_to_unknown_and_keeps_raw() -> None:
    events = parse_body(webhook("phone_number_quality_update/unknown_event.json")).events
    assert events[0].kind == "UNKNOWN"
    assert events[0].value["event"] == "SOMETHING_NEW"


def test_messages_change_gives_no_event_but_a_join_and_counts() -> None:
    parsed = parse_body(webhook("messages/status_failed_131049.json"))
    assert parsed.events == []
    assert parsed.items["messages"] == 1
    assert parsed.joins[0].phone_number_id == "106540352242922"
    assert parsed.joins[0].display_phone_number == "15550783881"


def test_user_preferences_become_one_event_per_item() -> None:
    parsed = parse_body(webhook("user_preferences/two_items.json"))
    assert len(parsed.events) == 2
    assert {e.detail.value for e in parsed.events} <= set(PreferenceValue)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1751247548, datetime(2025, 6, 30, 1, 39, 8, tzinfo=UTC)),
        ("1751247548", datetime(2025, 6, 30, 1, 39, 8, tzinfo=UTC)),
        ("January 31, 2021", datetime(2021, 1, 31, tzinfo=UTC)),
        ("April 17, 2025", datetime(2025, 4, 17, tzinfo=UTC)),
        ("2025-04-17T10:00:00Z", datetime(2025, 4, 17, 10, tzinfo=UTC)),
        (True, None),
        (None, None),
        ("soon", None),
        (12, None),
        (float("nan"), None),
        ({"a": 1}, None),
        ("9" * 100, None),
    ],
)
def test_parse_timestamp(raw: Any, expected: datetime | None) -> None:
    assert parse_timestamp(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (2000, "TIER_2K"),
        ("2000", "TIER_2K"),
        (-1, "TIER_UNLIMITED"),
        ("UNLIMITED", "TIER_UNLIMITED"),
        ("TIER_2K", "TIER_2K"),
        ("tier_10k", "TIER_10K"),
        (1000, "TIER_1K"),
        (250, "TIER_250"),
        ("TIER_50", "TIER_50"),
        ("TIER_NOT_SET", "TIER_NOT_SET"),
        (7, "UNKNOWN"),
        ([], "UNKNOWN"),
    ],
)
def test_messaging_limits(raw: Any, expected: str) -> None:
    assert MessagingLimit.parse(raw) == expected


def test_enums_fall_back_to_unknown() -> None:
    assert QualityRating.parse("NA") is QualityRating.UNKNOWN
    assert QualityRating.parse("PURPLE") is QualityRating.UNKNOWN
    assert QualityRating.parse(None) is None
    assert PhoneStatus.parse("connected") is PhoneStatus.CONNECTED
    assert WebhookField("some_future_field") is WebhookField.UNKNOWN
    assert PreferenceValue.parse("stop") is PreferenceValue.STOP


def test_identifier_normalisers() -> None:
    assert normalise_display_number("+1 555-078-3881") == "15550783881"
    assert normalise_display_number("12") is None
    assert normalise_display_number("+1 555-078-3881 ٣٣") == "15550783881"  # ASCII digits only
    assert normalise_language("en-US") == normalise_language("en_US") == "en_US"
    assert normalise_language("pt_br") == "pt_BR"
    assert as_id(1689556908129832) == "1689556908129832"
    assert as_id(" 42 ") == "42"
    assert as_id(1.5) is None and as_id(True) is None and as_id(-3) is None
