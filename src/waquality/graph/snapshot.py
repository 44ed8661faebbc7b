"""What a Graph API object says about the current state: pure mapping to state changes.

Only the fields present in an object are used (a field Meta did not return is not "empty").
Every listed object is also *confirmed* at the poll's time, which is not a history-worthy change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from waquality.domain.enums import (
    HealthStatus,
    MessagingLimit,
    NameStatus,
    PhoneStatus,
    QualityRating,
    SubjectKind,
    TemplateCategory,
    TemplateReason,
    TemplateStatus,
    ThroughputLevel,
)
from waquality.domain.events import PhoneJoin
from waquality.domain.values import as_id, as_text, normalise_display_number, normalise_language
from waquality.process.interpret import StateChange, SubjectRef

PHONE_FIELDS = (
    "id,display_phone_number,verified_name,status,quality_rating,"
    "whatsapp_business_manager_messaging_limit,messaging_limit_tier,throughput,name_status,"
    "health_status"
)
TEMPLATE_FIELDS = "id,name,language,status,category,quality_score,rejected_reason"
PAGE_SIZE = "100"


def _field(item: dict[str, Any], name: str) -> Any:
    value = item.get(name)
    return value.get("level") if name == "throughput" and isinstance(value, dict) else value


def _health(item: dict[str, Any]) -> HealthStatus | None:
    health = item.get("health_status")
    if not isinstance(health, dict):
        return None
    return HealthStatus.parse(health.get("can_send_message"))


def phone(
    item: Any, waba_id: str, now: datetime
) -> tuple[PhoneJoin | None, list[StateChange]] | None:
    """A listed phone number: the display-number join and its changes (``None``: no id)."""
    if not isinstance(item, dict) or (phone_id := as_id(item.get("id"))) is None:
        return None
    subject = SubjectRef(SubjectKind.PHONE_NUMBER, phone_id, waba_id)
    display = normalise_display_number(item.get("display_phone_number"))
    join = (
        PhoneJoin(waba_id=waba_id, phone_number_id=phone_id, display_phone_number=display)
        if display
        else None
    )
    changes = [StateChange(subject, "waba_id", waba_id), StateChange(subject, "confirmed_at", now)]
    mapped: dict[str, Any] = {
        "verified_name": as_text(item.get("verified_name"), 512),
        "status": PhoneStatus.parse(item.get("status")),
        "quality_rating": QualityRating.parse(item.get("quality_rating")),
        "messaging_limit": MessagingLimit.parse(
            item.get("whatsapp_business_manager_messaging_limit")
        ),
        "legacy_tier": MessagingLimit.parse(item.get("messaging_limit_tier")),
        "throughput": ThroughputLevel.parse(_field(item, "throughput")),
        "name_status": NameStatus.parse(item.get("name_status")),
        "health_status": _health(item),
    }
    changes += [StateChange(subject, f, v) for f, v in mapped.items() if v is not None]
    return join, changes


def template(item: Any, waba_id: str, now: datetime) -> list[StateChange] | None:
    """A listed template's changes (``None``: no id)."""
    if not isinstance(item, dict) or (template_id := as_id(item.get("id"))) is None:
        return None
    subject = SubjectRef(SubjectKind.TEMPLATE, template_id, waba_id)
    quality = item.get("quality_score")
    mapped: dict[str, Any] = {
        "waba_id": waba_id,
        "confirmed_at": now,
        "name": as_text(item.get("name"), 512),
        "language": normalise_language(item.get("language")),
        "status": TemplateStatus.parse(item.get("status")),
        "category": TemplateCategory.parse(item.get("category")),
        "quality_score": QualityRating.parse(quality.get("score"))
        if isinstance(quality, dict)
        else None,
        "rejected_reason": TemplateReason.parse(item.get("rejected_reason")),
    }
    return [StateChange(subject, f, v) for f, v in mapped.items() if v is not None]


def subscription(data: dict[str, Any], waba_id: str, now: datetime) -> list[StateChange]:
    """``GET /{WABA}/subscribed_apps``: is any app subscribed to the WABA's webhooks?"""
    apps = data.get("data")
    subject = SubjectRef(SubjectKind.WABA, waba_id)
    return [
        StateChange(subject, "subscribed", isinstance(apps, list) and len(apps) > 0),
        StateChange(subject, "confirmed_at", now),
    ]
