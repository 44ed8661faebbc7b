"""The built-in rules, pure: a change of current state in, signals out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from waquality.alerting.rules import Severity, evaluate, fingerprint
from waquality.domain.enums import SubjectKind
from waquality.store.state import Changed

AT = datetime(2025, 6, 1, 12, tzinfo=UTC)
PHONE = {
    "key": 1,
    "phone_number_id": "106540352242922",
    "display_phone_number": "15550783881",
    "waba_id": "102290129340398",
    "verified_name": "Lucky Shrub",
    "status": "CONNECTED",
}


def phone(field: str, old: Any, new: Any, **row: Any) -> Changed:
    return Changed(SubjectKind.PHONE_NUMBER, {**PHONE, **row}, field, old, new, AT)


def fired(*changes: Changed) -> list[tuple[str, bool, Severity]]:
    return [(s.rule, s.firing, s.severity) for s in evaluate(list(changes))]


def test_quality_drops_warn_then_page_and_recover() -> None:
    assert fired(phone("quality_rating", "GREEN", "YELLOW")) == [
        ("phone_quality", True, Severity.WARNING)
    ]
    assert fired(phone("quality_rating", "YELLOW", "RED")) == [
        ("phone_quality", True, Severity.CRITICAL)
    ]
    assert fired(phone("quality_rating", "RED", "GREEN")) == [
        ("phone_quality", False, Severity.WARNING)
    ]
    assert fired(phone("quality_rating", None, "UNKNOWN")) == []


def test_flagged_numbers_get_the_return_date_and_a_broken_streak_warning() -> None:
    [signal] = evaluate([phone("status", "CONNECTED", "FLAGGED", status="FLAGGED")])
    assert signal.firing and signal.severity is Severity.CRITICAL
    assert "around 2025-06-08 12:00 UTC" in signal.description
    broke = fired(phone("quality_rating", "YELLOW", "RED", status="FLAGGED"))
    assert ("flagged_streak", True, Severity.WARNING) in broke
    assert ("flagged_streak", True, Severity.WARNING) not in fired(
        phone("quality_rating", "YELLOW", "RED")
    )
    back = fired(phone("status", "FLAGGED", "CONNECTED"))
    assert ("flagged_streak", False, Severity.WARNING) in back
    assert ("phone_status", False, Severity.CRITICAL) in back


def test_messaging_limit_lowered_and_raised() -> None:
    assert fired(phone("messaging_limit", "TIER_10K", "TIER_2K")) == [
        ("messaging_limit_lowered", True, Severity.WARNING)
    ]
    assert fired(phone("messaging_limit", "TIER_2K", "TIER_10K")) == [
        ("messaging_limit_lowered", False, Severity.WARNING)
    ]
    assert fired(phone("messaging_limit", None, "TIER_2K")) == []


def test_template_pause_ladder_is_spelled_out() -> None:
    row = {
        "id": "7",
        "waba_id": "1",
        "name": "promo",
        "language": "en_US",
        "pause_count": 2,
        "paused_until": datetime(2025, 6, 1, 18, tzinfo=UTC),
    }
    [signal] = evaluate([Changed(SubjectKind.TEMPLATE, row, "status", "APPROVED", "PAUSED", AT)])
    assert signal.severity is Severity.CRITICAL
    assert signal.description == (
        "Pause number 2, until 2025-06-01 18:00 UTC; the next pause disables the template."
    )
    assert signal.labels == {"rule": "template_status", "waba_id": "1", "template_id": "7"}


def test_fingerprints_depend_on_labels_only() -> None:
    a = fingerprint({"rule": "x", "waba_id": "1"})
    assert a == fingerprint({"waba_id": "1", "rule": "x"})
    assert a != fingerprint({"rule": "x", "waba_id": "2"})


def test_notifications_link_to_the_dashboard_page_of_what_they_are_about() -> None:
    from waquality.alerting.book import _link

    base = "https://quality.example.com/"
    assert _link(base, {"phone_number": "15550783881"}) == f"{base}numbers/15550783881"
    assert _link(base, {"template_id": "1234"}) == f"{base}templates/1234"
    assert _link(base, {"template_id": "a/b?c"}) == f"{base}templates/a%2Fb%3Fc"
    assert _link(base, {"rule": "signature_failures"}) == f"{base}alerts"
    assert _link(None, {"phone_number": "1"}) is None
