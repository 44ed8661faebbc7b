"""Typed webhook events: one frozen dataclass per management field.

An :class:`Event` is the envelope every change shares (field, WABA, time, raw value, dedupe key);
its ``detail`` is the typed reading of that field. Decoding lives in :mod:`.decode`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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
    SubjectKind,
    TemplateCategory,
    TemplateEvent,
    TemplateReason,
    WebhookField,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneQualityUpdate:
    display_phone_number: str
    event: PhoneQualityEvent
    current_limit: MessagingLimit | None
    old_limit: MessagingLimit | None
    business_limit: MessagingLimit | None  # max_daily_conversations_per_business


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneNameUpdate:
    display_phone_number: str
    decision: Decision
    requested_verified_name: str | None
    rejection_reason: NameRejectionReason | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateRef:
    template_id: str
    name: str | None
    language: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateStatusUpdate:
    template: TemplateRef
    event: TemplateEvent
    reason: TemplateReason | None
    category: TemplateCategory | None
    pause_title: PauseTitle | None
    pause_hours: int | None  # "paused for 3 hours" in other_info.description
    disable_date: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateQualityUpdate:
    template: TemplateRef
    previous: QualityRating | None
    new: QualityRating


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateCategoryUpdate:
    template: TemplateRef
    previous_category: TemplateCategory | None
    new_category: TemplateCategory | None
    correct_category: TemplateCategory | None  # set on the "impending change" shape
    scheduled_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateComponentsUpdate:
    template: TemplateRef


@dataclass(frozen=True, slots=True, kw_only=True)
class Restriction:
    restriction_type: RestrictionType
    expiration: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountUpdate:
    event: AccountEvent
    waba_id: str | None  # waba_info.waba_id when present (PARTNER_* events), else entry.id
    owner_business_id: str | None
    violation_type: str | None
    restrictions: tuple[Restriction, ...]
    ban_state: BanState | None
    ban_date: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountAlert:
    entity_type: AlertEntityType
    entity_id: str | None
    severity: AlertSeverity
    status: AlertStatus
    alert_type: AlertType
    description: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BusinessCapabilityUpdate:
    messaging_limit: MessagingLimit | None
    max_phone_numbers: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountReviewUpdate:
    decision: Decision


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityUpdate:
    display_phone_number: str
    event: SecurityEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class UserPreference:
    phone_number_id: str | None
    display_phone_number: str | None
    customer: str | None
    value: PreferenceValue
    category: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MessagesError:
    """A value-level error of the ``messages`` field: a system, app or account problem that
    concerns no single message (130429 rate limit hit, ...)."""

    phone_number_id: str | None
    display_phone_number: str | None
    code: int | None
    title: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmodelledChange:
    """A field we keep but do not interpret (yet): its raw value is the record."""


Detail = (
    PhoneQualityUpdate
    | PhoneNameUpdate
    | TemplateStatusUpdate
    | TemplateQualityUpdate
    | TemplateCategoryUpdate
    | TemplateComponentsUpdate
    | AccountUpdate
    | AccountAlert
    | BusinessCapabilityUpdate
    | AccountReviewUpdate
    | SecurityUpdate
    | UserPreference
    | MessagesError
    | UnmodelledChange
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    field: WebhookField
    field_name: str  # as received, so an unknown field keeps its name
    kind: str  # a short label: the event/decision/new value (for listing and filtering)
    waba_id: str | None
    occurred_at: datetime | None
    value: dict[str, Any]  # the raw ``changes[].value`` (or one ``user_preferences[]`` item)
    dedupe_key: str
    subject_kind: SubjectKind | None
    subject_id: str | None
    detail: Detail


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneJoin:
    """A display number seen together with its phone-number ID (``metadata`` of messages)."""

    waba_id: str | None
    phone_number_id: str
    display_phone_number: str
