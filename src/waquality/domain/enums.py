"""Meta's enumerations, in Meta's own spellings.

Every enum derives from :class:`MetaEnum`: an unknown value maps to ``UNKNOWN`` instead of
raising, so a value Meta adds tomorrow never stops ingestion (the raw JSON keeps the original).
Aliases normalise spellings that mean the same thing (``NA`` → ``UNKNOWN``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Self, TypeVar, cast

_ALIASES: dict[str, dict[str, str]] = {
    "QualityRating": {"NA": "UNKNOWN", "HIGH": "GREEN", "MEDIUM": "YELLOW", "LOW": "RED"},
    "MessagingLimit": {
        "50": "TIER_50",
        "250": "TIER_250",
        "1000": "TIER_1K",
        "2000": "TIER_2K",
        "10000": "TIER_10K",
        "100000": "TIER_100K",
        "_1": "TIER_UNLIMITED",
        "UNLIMITED": "TIER_UNLIMITED",
        "TIER_1000": "TIER_1K",
        "TIER_2000": "TIER_2K",
        "TIER_10000": "TIER_10K",
        "TIER_100000": "TIER_100K",
    },
    "NameStatus": {"REJECTED": "DECLINED", "PENDING": "PENDING_REVIEW"},
}


E = TypeVar("E", bound=StrEnum)


def _member(kind: type[E], value: str) -> E:
    """``kind(value)``; a value spelt exactly is found in the enum's own map, without the call
    (parsing runs for every status of every webhook)."""
    exact = kind._value2member_map_.get(value)
    return cast(E, exact) if exact is not None else kind(value)


class MetaEnum(StrEnum):
    """A string enum with an ``UNKNOWN`` fallback and optional aliases."""

    @classmethod
    def _missing_(cls, value: object) -> Self:
        if isinstance(value, str):
            key = value.strip().upper().replace("-", "_")
            key = _ALIASES.get(cls.__name__, {}).get(key, key)
            for member in cls:
                if member.value == key:
                    return member
        return cls("UNKNOWN")

    @classmethod
    def parse(cls, value: Any) -> Self | None:
        """``None`` stays ``None``; anything else becomes a member (``UNKNOWN`` if unknown)."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            return cls("UNKNOWN")
        return _member(cls, str(value))


class WebhookField(MetaEnum):
    PHONE_NUMBER_QUALITY_UPDATE = "phone_number_quality_update"
    PHONE_NUMBER_NAME_UPDATE = "phone_number_name_update"
    MESSAGE_TEMPLATE_STATUS_UPDATE = "message_template_status_update"
    MESSAGE_TEMPLATE_QUALITY_UPDATE = "message_template_quality_update"
    TEMPLATE_CATEGORY_UPDATE = "template_category_update"
    MESSAGE_TEMPLATE_COMPONENTS_UPDATE = "message_template_components_update"
    ACCOUNT_UPDATE = "account_update"
    ACCOUNT_ALERTS = "account_alerts"
    BUSINESS_CAPABILITY_UPDATE = "business_capability_update"
    ACCOUNT_REVIEW_UPDATE = "account_review_update"
    SECURITY = "security"
    USER_PREFERENCES = "user_preferences"
    MESSAGES = "messages"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def _missing_(cls, value: object) -> Self:
        # Field names are lower case on the wire; never upper-case them.
        if isinstance(value, str):
            for member in cls:
                if member.value == value.strip():
                    return member
        return cls("UNKNOWN")


class QualityRating(MetaEnum):
    """Phone-number quality rating and template quality score."""

    GREEN = "GREEN"
    YELLOW = "YELLOW"
    RED = "RED"
    UNKNOWN = "UNKNOWN"


class MessagingLimit(MetaEnum):
    TIER_50 = "TIER_50"
    TIER_250 = "TIER_250"
    TIER_1K = "TIER_1K"
    TIER_2K = "TIER_2K"
    TIER_10K = "TIER_10K"
    TIER_100K = "TIER_100K"
    TIER_UNLIMITED = "TIER_UNLIMITED"
    TIER_NOT_SET = "TIER_NOT_SET"
    UNKNOWN = "UNKNOWN"


class PhoneStatus(MetaEnum):
    PENDING = "PENDING"
    DELETED = "DELETED"
    MIGRATED = "MIGRATED"
    BANNED = "BANNED"
    RESTRICTED = "RESTRICTED"
    RATE_LIMITED = "RATE_LIMITED"
    FLAGGED = "FLAGGED"
    CONNECTED = "CONNECTED"
    DISCONNECTED = "DISCONNECTED"
    UNVERIFIED = "UNVERIFIED"
    OFFLINE = "OFFLINE"
    UNKNOWN = "UNKNOWN"


class PhoneQualityEvent(MetaEnum):
    ONBOARDING = "ONBOARDING"
    THROUGHPUT_UPGRADE = "THROUGHPUT_UPGRADE"
    FLAGGED = "FLAGGED"
    UNFLAGGED = "UNFLAGGED"
    UPGRADE = "UPGRADE"
    DOWNGRADE = "DOWNGRADE"
    UNKNOWN = "UNKNOWN"


class ThroughputLevel(MetaEnum):
    STANDARD = "STANDARD"
    HIGH = "HIGH"
    NOT_APPLICABLE = "NOT_APPLICABLE"
    UNKNOWN = "UNKNOWN"


class NameStatus(MetaEnum):
    """Display-name review state (Graph ``name_status`` plus the webhook's decisions)."""

    APPROVED = "APPROVED"
    AVAILABLE_WITHOUT_REVIEW = "AVAILABLE_WITHOUT_REVIEW"
    DECLINED = "DECLINED"
    EXPIRED = "EXPIRED"
    PENDING_REVIEW = "PENDING_REVIEW"
    DEFERRED = "DEFERRED"
    NONE = "NONE"
    UNKNOWN = "UNKNOWN"


class NameRejectionReason(MetaEnum):
    NAME_EMPLOYEE_ISSUE = "NAME_EMPLOYEE_ISSUE"
    NAME_ENDCLIENT_NOTRELATED = "NAME_ENDCLIENT_NOTRELATED"
    NAME_FORMAT_UNACCEPTABLE = "NAME_FORMAT_UNACCEPTABLE"
    NAME_INDIVIDUAL_ISSUE = "NAME_INDIVIDUAL_ISSUE"
    NAME_NOT_CONSISTENT = "NAME_NOT_CONSISTENT"
    UNKNOWN = "UNKNOWN"


class Decision(MetaEnum):
    """``phone_number_name_update.decision`` and ``account_review_update.decision``."""

    APPROVED = "APPROVED"
    DEFERRED = "DEFERRED"
    PENDING = "PENDING"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"


class TemplateEvent(MetaEnum):
    APPROVED = "APPROVED"
    ARCHIVED = "ARCHIVED"
    UNARCHIVED = "UNARCHIVED"
    DELETED = "DELETED"
    DISABLED = "DISABLED"
    FLAGGED = "FLAGGED"
    IN_APPEAL = "IN_APPEAL"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    LOCKED = "LOCKED"
    UNLOCKED = "UNLOCKED"
    PAUSED = "PAUSED"
    PENDING = "PENDING"
    REINSTATED = "REINSTATED"
    PENDING_DELETION = "PENDING_DELETION"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"


class TemplateStatus(MetaEnum):
    APPROVED = "APPROVED"
    PENDING = "PENDING"
    REJECTED = "REJECTED"
    PAUSED = "PAUSED"
    DISABLED = "DISABLED"
    FLAGGED = "FLAGGED"
    IN_APPEAL = "IN_APPEAL"
    PENDING_DELETION = "PENDING_DELETION"
    DELETED = "DELETED"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    ARCHIVED = "ARCHIVED"
    UNKNOWN = "UNKNOWN"


class TemplateReason(MetaEnum):
    ABUSIVE_CONTENT = "ABUSIVE_CONTENT"
    CATEGORY_NOT_AVAILABLE = "CATEGORY_NOT_AVAILABLE"
    INCORRECT_CATEGORY = "INCORRECT_CATEGORY"
    INVALID_FORMAT = "INVALID_FORMAT"
    NONE = "NONE"
    PROMOTIONAL = "PROMOTIONAL"
    SCAM = "SCAM"
    TAG_CONTENT_MISMATCH = "TAG_CONTENT_MISMATCH"
    UNKNOWN = "UNKNOWN"


class PauseTitle(MetaEnum):
    FIRST_PAUSE = "FIRST_PAUSE"
    SECOND_PAUSE = "SECOND_PAUSE"
    RATE_LIMITING_PAUSE = "RATE_LIMITING_PAUSE"
    UNPAUSE = "UNPAUSE"
    DISABLED = "DISABLED"
    UNKNOWN = "UNKNOWN"


class TemplateCategory(MetaEnum):
    MARKETING = "MARKETING"
    UTILITY = "UTILITY"
    AUTHENTICATION = "AUTHENTICATION"
    UNKNOWN = "UNKNOWN"


class AccountEvent(MetaEnum):
    ACCOUNT_VIOLATION = "ACCOUNT_VIOLATION"
    ACCOUNT_RESTRICTION = "ACCOUNT_RESTRICTION"
    DISABLED_UPDATE = "DISABLED_UPDATE"
    ACCOUNT_DELETED = "ACCOUNT_DELETED"
    ACCOUNT_OFFBOARDED = "ACCOUNT_OFFBOARDED"
    ACCOUNT_RECONNECTED = "ACCOUNT_RECONNECTED"
    PARTNER_ADDED = "PARTNER_ADDED"
    PARTNER_REMOVED = "PARTNER_REMOVED"
    PARTNER_APP_INSTALLED = "PARTNER_APP_INSTALLED"
    PARTNER_APP_UNINSTALLED = "PARTNER_APP_UNINSTALLED"
    PARTNER_CLIENT_CERTIFICATION_STATUS_UPDATE = "PARTNER_CLIENT_CERTIFICATION_STATUS_UPDATE"
    AD_ACCOUNT_LINKED = "AD_ACCOUNT_LINKED"
    MM_LITE_TERMS_SIGNED = "MM_LITE_TERMS_SIGNED"
    AUTH_INTL_PRICE_ELIGIBILITY_UPDATE = "AUTH_INTL_PRICE_ELIGIBILITY_UPDATE"
    BUSINESS_PRIMARY_LOCATION_COUNTRY_UPDATE = "BUSINESS_PRIMARY_LOCATION_COUNTRY_UPDATE"
    VOLUME_BASED_PRICING_TIER_UPDATE = "VOLUME_BASED_PRICING_TIER_UPDATE"
    VERIFIED_ACCOUNT = "VERIFIED_ACCOUNT"
    UNKNOWN = "UNKNOWN"


class AccountState(MetaEnum):
    """Our summary of a WABA's life cycle, from ``account_update`` events."""

    ACTIVE = "ACTIVE"
    DELETED = "DELETED"
    OFFBOARDED = "OFFBOARDED"
    UNKNOWN = "UNKNOWN"


class PartnerState(MetaEnum):
    ADDED = "ADDED"
    REMOVED = "REMOVED"
    APP_INSTALLED = "APP_INSTALLED"
    APP_UNINSTALLED = "APP_UNINSTALLED"
    UNKNOWN = "UNKNOWN"


class BanState(MetaEnum):
    DISABLE = "DISABLE"
    REINSTATE = "REINSTATE"
    SCHEDULE_FOR_DISABLE = "SCHEDULE_FOR_DISABLE"
    UNKNOWN = "UNKNOWN"


class RestrictionType(MetaEnum):
    RESTRICTED_ADD_PHONE_NUMBER_ACTION = "RESTRICTED_ADD_PHONE_NUMBER_ACTION"
    RESTRICTED_BIZ_INITIATED_MESSAGING = "RESTRICTED_BIZ_INITIATED_MESSAGING"
    RESTRICTED_CUSTOMER_INITIATED_MESSAGING = "RESTRICTED_CUSTOMER_INITIATED_MESSAGING"
    RESTRICTED_BUSINESS_INITIATED_CALLING = "RESTRICTED_BUSINESS_INITIATED_CALLING"
    RESTRICTED_USER_INITIATED_CALLING = "RESTRICTED_USER_INITIATED_CALLING"
    RESTRICTED_BIZ_INITIATED_AND_USER_INITIATED_CALLING = (
        "RESTRICTED_BIZ_INITIATED_AND_USER_INITIATED_CALLING"
    )
    RESTRICTED_USER_INITIATED_CALLING_CALL_BUTTON_HIDDEN = (
        "RESTRICTED_USER_INITIATED_CALLING_CALL_BUTTON_HIDDEN"
    )
    RESTRICTED_DIRECT_SEND_UTILITY_TEMPLATES = "RESTRICTED_DIRECT_SEND_UTILITY_TEMPLATES"
    RESTRICTED_UTILITY_TEMPLATES = "RESTRICTED_UTILITY_TEMPLATES"
    UNKNOWN = "UNKNOWN"


class AlertSeverity(MetaEnum):
    CRITICAL = "CRITICAL"
    WARNING = "WARNING"
    INFORMATIONAL = "INFORMATIONAL"
    UNKNOWN = "UNKNOWN"


class AlertStatus(MetaEnum):
    ACTIVE = "ACTIVE"
    NONE = "NONE"
    UNKNOWN = "UNKNOWN"


class AlertType(MetaEnum):
    INCREASED_CAPABILITIES_ELIGIBILITY_DEFERRED = "INCREASED_CAPABILITIES_ELIGIBILITY_DEFERRED"
    INCREASED_CAPABILITIES_ELIGIBILITY_FAILED = "INCREASED_CAPABILITIES_ELIGIBILITY_FAILED"
    INCREASED_CAPABILITIES_ELIGIBILITY_NEED_MORE_INFO = (
        "INCREASED_CAPABILITIES_ELIGIBILITY_NEED_MORE_INFO"
    )
    OBA_APPROVED = "OBA_APPROVED"
    OBA_REJECTED = "OBA_REJECTED"
    PROFILE_PICTURE_LOST = "PROFILE_PICTURE_LOST"
    UNKNOWN = "UNKNOWN"


class AlertEntityType(MetaEnum):
    BUSINESS = "BUSINESS"
    PHONE_NUMBER = "PHONE_NUMBER"
    CURRENT_STATUS_ID = "CURRENT_STATUS_ID"
    WABA = "WABA"
    UNKNOWN = "UNKNOWN"


class SecurityEvent(MetaEnum):
    PIN_CHANGED = "PIN_CHANGED"
    PIN_RESET_REQUEST = "PIN_RESET_REQUEST"
    PIN_REQUEST_SUCCESS = "PIN_REQUEST_SUCCESS"
    UNKNOWN = "UNKNOWN"


class PreferenceValue(MetaEnum):
    STOP = "stop"
    RESUME = "resume"
    SIGNUP = "signup"
    UNKNOWN = "UNKNOWN"


class HealthStatus(MetaEnum):
    """``health_status.can_send_message`` of a WABA, phone number or template."""

    AVAILABLE = "AVAILABLE"
    LIMITED = "LIMITED"
    BLOCKED = "BLOCKED"
    UNKNOWN = "UNKNOWN"


class PollState(StrEnum):
    """How polling a WABA went last."""

    NEW = "new"  # not polled yet
    OK = "ok"
    FAILING = "failing"  # transient errors: retried with backoff
    RATE_LIMITED = "rate_limited"  # Meta's limit or our own budget: waiting
    AUTH_FAILED = "auth_failed"  # token expired or revoked: stopped until the token changes


class WatchOrigin(StrEnum):
    """Why a WABA is polled."""

    SETTINGS = "settings"
    BUSINESS = "business"  # discovered through a business portfolio in the settings
    API = "api"


class SubjectKind(StrEnum):
    """What a state change or history row is about."""

    BUSINESS = "business"
    WABA = "waba"
    PHONE_NUMBER = "phone_number"
    TEMPLATE = "template"


class Source(StrEnum):
    """Where a fact came from."""

    WEBHOOK = "webhook"
    POLL = "poll"


class RawStatus(StrEnum):
    """Life cycle of a stored webhook body."""

    PENDING = "pending"
    PROCESSED = "processed"


class LowerEnum(StrEnum):
    """A string enum of lower-case wire values with an ``unknown`` fallback."""

    @classmethod
    def _missing_(cls, value: object) -> Self:
        if isinstance(value, str):
            key = value.strip().lower()
            for member in cls:
                if member.value == key:
                    return member
        return cls("unknown")

    @classmethod
    def parse(cls, value: object) -> Self:
        return _member(cls, value) if isinstance(value, str) else cls("unknown")


class SenderKind(LowerEnum):
    """Who sent a business message."""

    BOT = "bot"
    AGENT = "agent"
    CAMPAIGN = "campaign"
    UNKNOWN = "unknown"  # known only from webhooks


class MessageStatus(LowerEnum):
    """An outbound message's lifecycle; ``rank`` orders it (it never moves backwards)."""

    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    PLAYED = "played"
    FAILED = "failed"  # final: a failure after a delivery report still failed
    UNKNOWN = "unknown"

    @property
    def rank(self) -> int:
        return _STATUS_RANK[self]


# the order a message's lifecycle moves in (failed is final)
_STATUS_RANK = {
    status: rank
    for rank, status in enumerate(
        (
            MessageStatus.UNKNOWN,
            MessageStatus.SENT,
            MessageStatus.DELIVERED,
            MessageStatus.READ,
            MessageStatus.PLAYED,
            MessageStatus.FAILED,
        )
    )
}
