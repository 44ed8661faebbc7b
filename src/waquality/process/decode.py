"""Decode one ``changes[].value`` of a known management field into a typed detail.

Pure functions. A value that lacks what identifies its subject (a template id, a display number)
raises :class:`PayloadError`; anything else that is odd becomes ``None`` or ``UNKNOWN``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from waquality.domain.enums import (
    AccountEvent,
    AlertEntityType,
    AlertSeverity,
    AlertStatus,
    AlertType,
    BanState,
    Decision,
    MessagingLimit,
    NameRejectionReason,
    PauseTitle,
    PhoneQualityEvent,
    PreferenceValue,
    QualityRating,
    RestrictionType,
    SecurityEvent,
    TemplateCategory,
    TemplateEvent,
    TemplateReason,
    WebhookField,
)
from waquality.domain.events import (
    AccountAlert,
    AccountReviewUpdate,
    AccountUpdate,
    BusinessCapabilityUpdate,
    Detail,
    MessagesError,
    PhoneNameUpdate,
    PhoneQualityUpdate,
    Restriction,
    SecurityUpdate,
    TemplateCategoryUpdate,
    TemplateComponentsUpdate,
    TemplateQualityUpdate,
    TemplateRef,
    TemplateStatusUpdate,
    UserPreference,
)
from waquality.domain.values import (
    as_id,
    as_int,
    as_text,
    normalise_display_number,
    normalise_language,
    parse_timestamp,
)
from waquality.errors import PayloadError

_PAUSE_HOURS = re.compile(r"paused for (\d{1,3}) hours?", re.IGNORECASE)
# Moments outside this window are odd (and later date arithmetic on them could overflow): the
# same window ``parse_timestamp`` allows for Unix seconds, applied to dates given as text too.
_EARLIEST = datetime.fromtimestamp(1_000_000_000, UTC)
_LATEST = datetime.fromtimestamp(9_999_999_999, UTC)
_MAX_COUNT = 2**31 - 1  # counts are stored in 32-bit integer columns

Value = dict[str, Any]


def timestamp(value: Any) -> datetime | None:
    """A moment of the platform's own life, or ``None`` (an odd or out-of-range time)."""
    moment = parse_timestamp(value)
    return moment if moment is not None and _EARLIEST <= moment <= _LATEST else None


def _count(value: Any) -> int | None:
    """A count: a non-negative integer that fits its column, else ``None``."""
    number = as_int(value)
    return number if number is not None and 0 <= number <= _MAX_COUNT else None


def _obj(value: Value, key: str) -> Value:
    inner = value.get(key)
    return inner if isinstance(inner, dict) else {}


def _display_number(value: Value) -> str:
    number = normalise_display_number(value.get("display_phone_number"))
    if number is None:
        raise PayloadError("display_phone_number is missing or not a phone number")
    return number


def _template(value: Value) -> TemplateRef:
    template_id = as_id(value.get("message_template_id"))
    if template_id is None:
        raise PayloadError("message_template_id is missing or not an id")
    return TemplateRef(
        template_id=template_id,
        name=as_text(value.get("message_template_name"), 512),
        language=normalise_language(value.get("message_template_language")),
    )


def _limit(value: Any) -> MessagingLimit | None:
    return MessagingLimit.parse(value)


def phone_quality(value: Value) -> PhoneQualityUpdate:
    return PhoneQualityUpdate(
        display_phone_number=_display_number(value),
        event=PhoneQualityEvent.parse(value.get("event")) or PhoneQualityEvent.UNKNOWN,
        current_limit=_limit(value.get("current_limit")),
        old_limit=_limit(value.get("old_limit")),
        business_limit=_limit(value.get("max_daily_conversations_per_business")),
    )


def phone_name(value: Value) -> PhoneNameUpdate:
    return PhoneNameUpdate(
        display_phone_number=_display_number(value),
        decision=Decision.parse(value.get("decision")) or Decision.UNKNOWN,
        requested_verified_name=as_text(value.get("requested_verified_name"), 512),
        rejection_reason=NameRejectionReason.parse(value.get("rejection_reason")),
    )


def template_status(value: Value) -> TemplateStatusUpdate:
    other = _obj(value, "other_info")
    description = as_text(other.get("description")) or ""
    hours = _PAUSE_HOURS.search(description)
    return TemplateStatusUpdate(
        template=_template(value),
        event=TemplateEvent.parse(value.get("event")) or TemplateEvent.UNKNOWN,
        reason=TemplateReason.parse(value.get("reason")),
        category=TemplateCategory.parse(value.get("message_template_category")),
        pause_title=PauseTitle.parse(other.get("title")),
        pause_hours=int(hours.group(1)) if hours else None,
        disable_date=timestamp(_obj(value, "disable_info").get("disable_date")),
    )


def template_quality(value: Value) -> TemplateQualityUpdate:
    return TemplateQualityUpdate(
        template=_template(value),
        previous=QualityRating.parse(value.get("previous_quality_score")),
        new=QualityRating.parse(value.get("new_quality_score")) or QualityRating.UNKNOWN,
    )


def template_category(value: Value) -> TemplateCategoryUpdate:
    return TemplateCategoryUpdate(
        template=_template(value),
        previous_category=TemplateCategory.parse(value.get("previous_category")),
        new_category=TemplateCategory.parse(value.get("new_category")),
        correct_category=TemplateCategory.parse(value.get("correct_category")),
        scheduled_at=timestamp(value.get("category_update_timestamp")),
    )


def template_components(value: Value) -> TemplateComponentsUpdate:
    return TemplateComponentsUpdate(template=_template(value))


def account_update(value: Value) -> AccountUpdate:
    waba_info = _obj(value, "waba_info")
    ban = _obj(value, "ban_info")
    raw_restrictions = value.get("restriction_info")
    restrictions = tuple(
        Restriction(
            restriction_type=RestrictionType.parse(item.get("restriction_type"))
            or RestrictionType.UNKNOWN,
            expiration=timestamp(item.get("expiration")),
        )
        for item in (raw_restrictions if isinstance(raw_restrictions, list) else [])
        if isinstance(item, dict)
    )
    return AccountUpdate(
        event=AccountEvent.parse(value.get("event")) or AccountEvent.UNKNOWN,
        waba_id=as_id(waba_info.get("waba_id")),
        owner_business_id=as_id(waba_info.get("owner_business_id")),
        violation_type=as_text(_obj(value, "violation_info").get("violation_type"), 128),
        restrictions=restrictions,
        ban_state=BanState.parse(ban.get("waba_ban_state")),
        ban_date=timestamp(ban.get("waba_ban_date")),
    )


def account_alert(value: Value) -> AccountAlert:
    info = _obj(value, "alert_info")
    return AccountAlert(
        entity_type=AlertEntityType.parse(value.get("entity_type")) or AlertEntityType.UNKNOWN,
        entity_id=as_id(value.get("entity_id")),
        severity=AlertSeverity.parse(info.get("alert_severity")) or AlertSeverity.UNKNOWN,
        status=AlertStatus.parse(info.get("alert_status")) or AlertStatus.UNKNOWN,
        alert_type=AlertType.parse(info.get("alert_type")) or AlertType.UNKNOWN,
        description=as_text(info.get("alert_description")),
    )


def business_capability(value: Value) -> BusinessCapabilityUpdate:
    limit = value.get("max_daily_conversations_per_business")
    if limit is None:
        limit = value.get("max_daily_conversation_per_phone")
    phones = _count(value.get("max_phone_numbers_per_waba"))
    if phones is None:
        phones = _count(value.get("max_phone_numbers_per_business"))
    return BusinessCapabilityUpdate(messaging_limit=_limit(limit), max_phone_numbers=phones)


def account_review(value: Value) -> AccountReviewUpdate:
    return AccountReviewUpdate(decision=Decision.parse(value.get("decision")) or Decision.UNKNOWN)


def security(value: Value) -> SecurityUpdate:
    return SecurityUpdate(
        display_phone_number=_display_number(value),
        event=SecurityEvent.parse(value.get("event")) or SecurityEvent.UNKNOWN,
    )


def user_preference(item: Value, metadata: Value) -> UserPreference:
    customer = as_id(item.get("wa_id")) or as_id(item.get("user_id"))
    return UserPreference(
        phone_number_id=as_id(metadata.get("phone_number_id")),
        display_phone_number=normalise_display_number(metadata.get("display_phone_number")),
        customer=customer,
        value=PreferenceValue.parse(item.get("value")) or PreferenceValue.UNKNOWN,
        category=as_text(item.get("category"), 128),
    )


def messages_error(item: Value, metadata: Value) -> MessagesError:
    code = as_int(item.get("code"))
    return MessagesError(
        phone_number_id=as_id(metadata.get("phone_number_id")),
        display_phone_number=normalise_display_number(metadata.get("display_phone_number")),
        code=code if code is not None and 0 <= code < 2**31 else None,
        title=as_text(item.get("title"), 512),
    )


DECODERS: dict[WebhookField, Callable[[Value], Detail]] = {
    WebhookField.PHONE_NUMBER_QUALITY_UPDATE: phone_quality,
    WebhookField.PHONE_NUMBER_NAME_UPDATE: phone_name,
    WebhookField.MESSAGE_TEMPLATE_STATUS_UPDATE: template_status,
    WebhookField.MESSAGE_TEMPLATE_QUALITY_UPDATE: template_quality,
    WebhookField.TEMPLATE_CATEGORY_UPDATE: template_category,
    WebhookField.MESSAGE_TEMPLATE_COMPONENTS_UPDATE: template_components,
    WebhookField.ACCOUNT_UPDATE: account_update,
    WebhookField.ACCOUNT_ALERTS: account_alert,
    WebhookField.BUSINESS_CAPABILITY_UPDATE: business_capability,
    WebhookField.ACCOUNT_REVIEW_UPDATE: account_review,
    WebhookField.SECURITY: security,
}
