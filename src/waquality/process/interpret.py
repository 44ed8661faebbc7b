"""What a typed event means for the current state: a list of :class:`StateChange`.

Pure: no database, no clock. The store applies the changes (newest wins per field; every real
change becomes a history row).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from waquality.domain.enums import (
    AccountEvent,
    AccountState,
    AlertEntityType,
    Decision,
    MessagingLimit,
    NameStatus,
    PartnerState,
    PauseTitle,
    PhoneQualityEvent,
    PhoneStatus,
    SubjectKind,
    TemplateEvent,
    TemplateStatus,
    ThroughputLevel,
)
from waquality.domain.events import (
    AccountAlert,
    AccountReviewUpdate,
    AccountUpdate,
    BusinessCapabilityUpdate,
    Event,
    PhoneNameUpdate,
    PhoneQualityUpdate,
    SecurityUpdate,
    TemplateCategoryUpdate,
    TemplateComponentsUpdate,
    TemplateQualityUpdate,
    TemplateRef,
    TemplateStatusUpdate,
)

StateValue = str | int | bool | datetime | None


class Op(StrEnum):
    SET = "set"  # the newest value wins
    AT_LEAST = "at_least"  # counters that a titled event pins (FIRST_PAUSE → at least 1)
    INCREMENT = "increment"  # counters of events (each event counted once: events are deduped)
    RESTORE = "restore"  # back to the value before the current one (UNARCHIVED)


@dataclass(frozen=True, slots=True)
class SubjectRef:
    kind: SubjectKind
    key: str  # business/WABA/template id; phone-number id, or display number if by_display
    waba_id: str | None = None
    by_display: bool = False


@dataclass(frozen=True, slots=True)
class StateChange:
    subject: SubjectRef
    field: str
    value: StateValue
    op: Op = Op.SET


# Fields that describe identity or bookkeeping: updated, but not history-worthy.
UNTRACKED_FIELDS = frozenset(
    {"name", "language", "waba_id", "last_event", "last_alert", "confirmed_at"}
)

# Legacy pause lengths, used when the description does not say.
_PAUSE_HOURS = {PauseTitle.FIRST_PAUSE: 3, PauseTitle.SECOND_PAUSE: 6}
_PAUSE_COUNT = {PauseTitle.FIRST_PAUSE: 1, PauseTitle.SECOND_PAUSE: 2}
_TEMPLATE_STATUS = {
    TemplateEvent.APPROVED: TemplateStatus.APPROVED,
    TemplateEvent.REINSTATED: TemplateStatus.APPROVED,
    TemplateEvent.PAUSED: TemplateStatus.PAUSED,
    TemplateEvent.DISABLED: TemplateStatus.DISABLED,
    TemplateEvent.REJECTED: TemplateStatus.REJECTED,
    TemplateEvent.PENDING: TemplateStatus.PENDING,
    TemplateEvent.FLAGGED: TemplateStatus.FLAGGED,
    TemplateEvent.IN_APPEAL: TemplateStatus.IN_APPEAL,
    TemplateEvent.LIMIT_EXCEEDED: TemplateStatus.LIMIT_EXCEEDED,
    TemplateEvent.ARCHIVED: TemplateStatus.ARCHIVED,
    TemplateEvent.DELETED: TemplateStatus.DELETED,
    TemplateEvent.PENDING_DELETION: TemplateStatus.PENDING_DELETION,
}
_ACCOUNT_STATE = {
    AccountEvent.ACCOUNT_DELETED: AccountState.DELETED,
    AccountEvent.ACCOUNT_OFFBOARDED: AccountState.OFFBOARDED,
    AccountEvent.ACCOUNT_RECONNECTED: AccountState.ACTIVE,
}
_PARTNER_STATE = {
    AccountEvent.PARTNER_ADDED: PartnerState.ADDED,
    AccountEvent.PARTNER_REMOVED: PartnerState.REMOVED,
    AccountEvent.PARTNER_APP_INSTALLED: PartnerState.APP_INSTALLED,
    AccountEvent.PARTNER_APP_UNINSTALLED: PartnerState.APP_UNINSTALLED,
}
_NAME_STATUS = {
    Decision.APPROVED: NameStatus.APPROVED,
    Decision.REJECTED: NameStatus.DECLINED,
    Decision.PENDING: NameStatus.PENDING_REVIEW,
    Decision.DEFERRED: NameStatus.DEFERRED,
}


def interpret(event: Event) -> list[StateChange]:
    """The state changes an event implies (empty for fields that carry no state)."""
    detail, at, waba = event.detail, event.occurred_at, event.waba_id
    match detail:
        case PhoneQualityUpdate():
            return _phone_quality(detail, waba)
        case PhoneNameUpdate():
            phone = SubjectRef(SubjectKind.PHONE_NUMBER, detail.display_phone_number, waba, True)
            changes = [
                StateChange(phone, "name_status", _NAME_STATUS.get(detail.decision)),
                StateChange(phone, "name_rejection_reason", detail.rejection_reason),
            ]
            if detail.decision is Decision.APPROVED and detail.requested_verified_name:
                changes.append(StateChange(phone, "verified_name", detail.requested_verified_name))
            return [c for c in changes if c.field != "name_status" or c.value is not None]
        case SecurityUpdate():
            phone = SubjectRef(SubjectKind.PHONE_NUMBER, detail.display_phone_number, waba, True)
            return [StateChange(phone, "security_event", detail.event)]
        case TemplateStatusUpdate():
            return _template_status(detail, at, waba)
        case TemplateQualityUpdate():
            subject = _template_ref(detail.template, waba)
            return [
                *_template_identity(subject, detail.template),
                StateChange(subject, "quality_score", detail.new),
            ]
        case TemplateCategoryUpdate():
            return _template_category(detail, waba)
        case TemplateComponentsUpdate():
            subject = _template_ref(detail.template, waba)
            return [
                *_template_identity(subject, detail.template),
                StateChange(subject, "components_updated_at", at),
            ]
        case AccountUpdate():
            return _account_update(detail, waba)
        case AccountAlert():
            return _account_alert(detail, waba)
        case BusinessCapabilityUpdate() if waba:
            subject = SubjectRef(SubjectKind.WABA, waba)
            changes = []
            if detail.messaging_limit is not None:
                changes.append(StateChange(subject, "messaging_limit", detail.messaging_limit))
            if detail.max_phone_numbers is not None:
                changes.append(StateChange(subject, "max_phone_numbers", detail.max_phone_numbers))
            return changes
        case AccountReviewUpdate() if waba:
            return [
                StateChange(SubjectRef(SubjectKind.WABA, waba), "review_decision", detail.decision)
            ]
    return []


def _phone_quality(detail: PhoneQualityUpdate, waba: str | None) -> list[StateChange]:
    phone = SubjectRef(SubjectKind.PHONE_NUMBER, detail.display_phone_number, waba, True)
    changes = [StateChange(phone, "last_event", detail.event)]
    limit = _usable(detail.business_limit) or _usable(detail.current_limit)
    if limit is not None:
        changes.append(StateChange(phone, "messaging_limit", limit))
    if detail.current_limit is not None:
        changes.append(StateChange(phone, "legacy_tier", detail.current_limit))
    if detail.business_limit is not None and waba:
        changes.append(
            StateChange(
                SubjectRef(SubjectKind.WABA, waba), "messaging_limit", detail.business_limit
            )
        )
    match detail.event:
        case PhoneQualityEvent.FLAGGED:
            changes.append(StateChange(phone, "status", PhoneStatus.FLAGGED))
        case PhoneQualityEvent.UNFLAGGED:
            changes.append(StateChange(phone, "status", PhoneStatus.CONNECTED))
        case PhoneQualityEvent.THROUGHPUT_UPGRADE:
            changes.append(StateChange(phone, "throughput", ThroughputLevel.HIGH))
    return changes


def _usable(limit: MessagingLimit | None) -> MessagingLimit | None:
    unusable = (None, MessagingLimit.UNKNOWN, MessagingLimit.TIER_NOT_SET)
    return None if limit in unusable else limit


def _template_ref(template: TemplateRef, waba: str | None) -> SubjectRef:
    return SubjectRef(SubjectKind.TEMPLATE, template.template_id, waba)


def _template_identity(subject: SubjectRef, template: TemplateRef) -> list[StateChange]:
    changes = []
    if template.name:
        changes.append(StateChange(subject, "name", template.name))
    if template.language:
        changes.append(StateChange(subject, "language", template.language))
    return changes


def _template_status(
    detail: TemplateStatusUpdate, at: datetime | None, waba: str | None
) -> list[StateChange]:
    subject = _template_ref(detail.template, waba)
    changes = [
        *_template_identity(subject, detail.template),
        StateChange(subject, "last_event", detail.event),
    ]
    if detail.category not in (None, "UNKNOWN"):
        changes.append(StateChange(subject, "category", detail.category))
    event, title = detail.event, detail.pause_title
    if event is TemplateEvent.UNARCHIVED:
        changes.append(StateChange(subject, "status", TemplateStatus.ARCHIVED, Op.RESTORE))
    elif (status := _TEMPLATE_STATUS.get(event)) is not None:
        changes.append(StateChange(subject, "status", status))
    if event in (TemplateEvent.LOCKED, TemplateEvent.UNLOCKED):
        changes.append(StateChange(subject, "locked", event is TemplateEvent.LOCKED))
    if event is TemplateEvent.PAUSED:
        changes.extend(_pause(subject, title, detail.pause_hours, at))
    elif title is PauseTitle.UNPAUSE or event in (TemplateEvent.APPROVED, TemplateEvent.REINSTATED):
        changes.append(StateChange(subject, "paused_until", None))
    if event is TemplateEvent.DISABLED:
        changes.append(StateChange(subject, "disable_date", detail.disable_date or at))
    elif detail.disable_date is not None:  # FLAGGED: "scheduled for disabling on ..."
        changes.append(StateChange(subject, "disable_date", detail.disable_date))
    if event is TemplateEvent.REJECTED:
        changes.append(StateChange(subject, "rejected_reason", detail.reason))
    return changes


def _pause(
    subject: SubjectRef, title: PauseTitle | None, hours: int | None, at: datetime | None
) -> list[StateChange]:
    if title is PauseTitle.RATE_LIMITING_PAUSE:
        changes = [StateChange(subject, "rate_limit_pause_count", 1, Op.INCREMENT)]
    elif title in _PAUSE_COUNT:
        changes = [StateChange(subject, "pause_count", _PAUSE_COUNT[title], Op.AT_LEAST)]
    else:
        changes = [StateChange(subject, "pause_count", 1, Op.INCREMENT)]
    hours = hours or (_PAUSE_HOURS.get(title) if title else None)
    until = at + timedelta(hours=hours) if at and hours else None
    changes.append(StateChange(subject, "paused_until", until))
    return changes


def _template_category(detail: TemplateCategoryUpdate, waba: str | None) -> list[StateChange]:
    subject = _template_ref(detail.template, waba)
    changes = _template_identity(subject, detail.template)
    if detail.new_category is not None:
        changes.append(StateChange(subject, "category", detail.new_category))
    if detail.correct_category is not None:  # impending: the switch is scheduled
        changes.append(StateChange(subject, "pending_category", detail.correct_category))
        changes.append(StateChange(subject, "category_change_at", detail.scheduled_at))
    else:
        changes.append(StateChange(subject, "pending_category", None))
        changes.append(StateChange(subject, "category_change_at", None))
    return changes


def _account_update(detail: AccountUpdate, entry_waba: str | None) -> list[StateChange]:
    waba = detail.waba_id or entry_waba
    if waba is None:
        return []
    subject = SubjectRef(SubjectKind.WABA, waba)
    changes = [StateChange(subject, "last_event", detail.event)]
    if detail.owner_business_id:
        changes.append(StateChange(subject, "business_id", detail.owner_business_id))
    event = detail.event
    if event is AccountEvent.ACCOUNT_VIOLATION:
        changes.append(StateChange(subject, "violation", detail.violation_type or "UNKNOWN"))
    elif event is AccountEvent.ACCOUNT_RESTRICTION:
        kinds = sorted({r.restriction_type.value for r in detail.restrictions})
        until = [r.expiration for r in detail.restrictions if r.expiration]
        changes.append(StateChange(subject, "restrictions", ",".join(kinds) or None))
        changes.append(StateChange(subject, "restricted_until", max(until) if until else None))
    elif event is AccountEvent.DISABLED_UPDATE and detail.ban_state is not None:
        changes.append(StateChange(subject, "ban_state", detail.ban_state))
        changes.append(StateChange(subject, "ban_date", detail.ban_date))
    if (state := _ACCOUNT_STATE.get(event)) is not None:
        changes.append(StateChange(subject, "account_state", state))
    if (partner := _PARTNER_STATE.get(event)) is not None:
        changes.append(StateChange(subject, "partner_state", partner))
    return changes


def _account_alert(detail: AccountAlert, waba: str | None) -> list[StateChange]:
    label = f"{detail.severity.value} {detail.alert_type.value}"
    changes = []
    if waba:
        changes.append(StateChange(SubjectRef(SubjectKind.WABA, waba), "last_alert", label))
    if detail.entity_type is AlertEntityType.BUSINESS and detail.entity_id:
        business = SubjectRef(SubjectKind.BUSINESS, detail.entity_id)
        changes.append(StateChange(business, "last_alert", label))
        if waba:
            changes.append(
                StateChange(SubjectRef(SubjectKind.WABA, waba), "business_id", detail.entity_id)
            )
    elif detail.entity_type is AlertEntityType.PHONE_NUMBER and detail.entity_id:
        phone = SubjectRef(SubjectKind.PHONE_NUMBER, detail.entity_id, waba)
        changes.append(StateChange(phone, "last_alert", label))
    return changes
