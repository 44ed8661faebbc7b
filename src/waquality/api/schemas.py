"""Response models: the API's contract, and the source of its OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")
# PostgreSQL text cannot hold NUL characters, so no text the API stores or looks up has them.
NO_NUL = r"^[^\x00]*$"
NoNulStr = Annotated[str, Field(pattern=NO_NUL)]


class ListPage(BaseModel, Generic[T]):
    items: list[T]
    next: str | None = Field(None, description="Cursor for the next page; null on the last page.")


class PhoneNumber(BaseModel):
    id: str | None = Field(description="Phone-number ID; null until it is known.")
    waba_id: str | None
    display_phone_number: str | None = Field(description="Digits only.")
    verified_name: str | None
    quality_rating: str | None = Field(description="GREEN, YELLOW, RED or UNKNOWN.")
    status: str | None
    messaging_limit: str | None = Field(description="TIER_* (portfolio-level since 2025-10).")
    legacy_tier: str | None = Field(description="The number's own TIER_* from current_limit.")
    throughput: str | None
    name_status: str | None
    name_rejection_reason: str | None
    last_event: str | None
    last_alert: str | None
    security_event: str | None
    health_status: str | None = Field(description="AVAILABLE, LIMITED or BLOCKED (polled).")
    confirmed_at: datetime | None = Field(
        description="When a poll of the Graph API last listed it (null: never)."
    )
    updated_at: datetime


class Template(BaseModel):
    id: str
    waba_id: str | None
    name: str | None
    language: str | None
    category: str | None
    status: str | None
    quality_score: str | None
    pause_count: int = Field(description="Quality pauses so far (RATE_LIMITING_PAUSE apart).")
    rate_limit_pause_count: int
    paused_until: datetime | None
    disable_date: datetime | None
    rejected_reason: str | None
    pending_category: str | None = Field(description="Category Meta will switch it to.")
    category_change_at: datetime | None
    locked: bool | None
    last_event: str | None
    confirmed_at: datetime | None = Field(
        description="When a poll of the Graph API last listed it (null: never)."
    )
    updated_at: datetime


class Waba(BaseModel):
    id: str
    business_id: str | None = Field(description="The business portfolio, when known.")
    account_state: str | None = Field(description="ACTIVE, DELETED or OFFBOARDED.")
    partner_state: str | None
    ban_state: str | None = Field(description="DISABLE, REINSTATE or SCHEDULE_FOR_DISABLE.")
    ban_date: datetime | None
    violation: str | None
    restrictions: str | None = Field(description="Restriction types, comma-separated.")
    restricted_until: datetime | None
    review_decision: str | None
    messaging_limit: str | None = Field(description="The portfolio's TIER_*, as seen here.")
    max_phone_numbers: int | None
    last_event: str | None
    last_alert: str | None
    last_webhook_at: datetime | None = Field(description="When this WABA last sent anything.")
    subscribed: bool | None = Field(
        description="Whether an app is subscribed to its webhooks (polled; null: not known)."
    )
    confirmed_at: datetime | None = Field(
        description="When a poll of the Graph API last listed it (null: never)."
    )
    updated_at: datetime


class WatchedWaba(BaseModel):
    waba_id: str
    origin: str = Field(description="settings, business (discovered) or api.")
    business_id: str | None
    added_at: datetime
    poll_state: str = Field(description="new, ok, failing, rate_limited or auth_failed.")
    last_error: str | None
    failures: int = Field(description="Failed polls in a row.")
    last_poll_at: datetime | None
    last_success_at: datetime | None = Field(description="Data is confirmed up to this time.")
    next_poll_at: datetime | None = Field(description="Null: as soon as possible (or stopped).")
    usage_percent: int | None = Field(description="Meta's figure for its call budget used.")


class WatchRequest(BaseModel):
    waba_id: str = Field(pattern=r"^[0-9]{1,32}$")
    access_token: str | None = Field(
        None,
        min_length=1,
        pattern=NO_NUL,
        description="Its own token; default: WAQUALITY_ACCESS_TOKEN.",
    )


class AlertOut(BaseModel):
    fingerprint: str = Field(description="The alert's identity: a hash of its labels.")
    rule: str
    labels: dict[str, str]
    severity: str = Field(description="critical or warning.")
    state: str = Field(description="firing or resolved.")
    summary: str
    description: str
    started_at: datetime
    resolved_at: datetime | None
    updated_at: datetime


class NotificationOut(BaseModel):
    id: int
    fingerprint: str
    receiver: str = Field(description="The receiver's name (its URL is never shown).")
    status: str = Field(description="firing or resolved.")
    state: str = Field(description="pending, sent or failed.")
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    next_attempt_at: datetime
    idempotency_key: str


class SilenceOut(BaseModel):
    id: int
    matchers: dict[str, str] = Field(description="An alert is silenced when all labels match.")
    comment: str
    created_at: datetime
    expires_at: datetime


class SilenceRequest(BaseModel):
    matchers: dict[NoNulStr, NoNulStr] = Field(
        min_length=1, examples=[{"waba_id": "104996122399160"}]
    )
    comment: str = Field("", max_length=1000, pattern=NO_NUL)
    duration: str = Field(pattern=NO_NUL, description="How long it lasts: 30m, 2h, 7d or seconds.")


class Business(BaseModel):
    id: str
    messaging_limit: str | None
    last_alert: str | None
    updated_at: datetime


class HistoryRow(BaseModel):
    field: str
    old_value: str | None
    new_value: str | None
    occurred_at: datetime
    recorded_at: datetime
    source: str
    event_id: int | None


class EventOut(BaseModel):
    id: int
    field: str
    kind: str
    waba_id: str | None
    subject_kind: str | None
    subject_id: str | None
    occurred_at: datetime
    received_at: datetime
    source: str
    value: dict[str, Any]


class QuarantineItem(BaseModel):
    id: int
    raw_id: int
    path: str = Field(description="Where in the body: '' for the whole body.")
    field: str | None
    error: str
    created_at: datetime
    received_at: datetime
    resolved_at: datetime | None


class QuarantineDetail(QuarantineItem):
    body: str = Field(description="The raw body, decoded as UTF-8 (invalid bytes replaced).")


class WebhookCounts(BaseModel):
    received: int
    pending: int
    processed: int
    quarantined: int


class FieldCount(BaseModel):
    changes: int = Field(description="Changes of this field processed.")
    items: int = Field(description="Items inside them (messages, statuses, preferences...).")
    first_seen_at: datetime
    last_seen_at: datetime


class Status(BaseModel):
    version: str
    database: str
    webhooks: WebhookCounts
    events: int
    fields: dict[str, FieldCount] = Field(description="Per webhook field, unknown ones too.")
    polling: dict[str, int] = Field(description="Watched WABAs per polling state.")
    alerts_firing: dict[str, int] = Field(description="Firing alerts per severity.")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


# -- the conversation tracker ------------------------------------------------------------------

Short = Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL)]


class SendError(BaseModel):
    model_config = {"extra": "forbid", "strict": True}

    code: int = Field(ge=0, lt=2**31, description="The Graph API's error code, e.g. 132015.")
    title: str | None = Field(None, max_length=512, pattern=NO_NUL)


class LoggedMessage(BaseModel):
    """A message the business sent (or tried to send): what webhooks do not say."""

    model_config = {"extra": "forbid", "strict": True}

    id: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        pattern=NO_NUL,
        description="The wamid the Graph API returned. Optional for a refused send (error set): "
        "one is made from the attempt, so logging it twice counts once.",
    )
    phone_number_id: str = Field(pattern=r"^[0-9]{1,32}$", description="The sending number.")
    to: Short = Field(description="The recipient: wa_id or business-scoped user id.")
    timestamp: str | int | float | None = Field(
        None, description="When it was sent: ISO 8601 or Unix seconds; default: now."
    )
    type: str = Field("text", max_length=64, pattern=NO_NUL, description="text, template, ...")
    template: str | None = Field(None, max_length=512, pattern=NO_NUL)
    text: str | None = Field(
        None, max_length=4096, pattern=NO_NUL, description="Kept only when message bodies are."
    )
    sender: str | None = Field(None, pattern="^(bot|agent|campaign)$")
    journey: str | None = Field(None, max_length=128, pattern=NO_NUL)
    step: str | None = Field(None, max_length=128, pattern=NO_NUL)
    experiments: dict[Short, Short] = Field(
        default_factory=dict, max_length=16, description="Experiment → arm."
    )
    error: SendError | None = Field(None, description="Set when the Graph API refused the send.")


class LoggedBatch(BaseModel):
    model_config = {"extra": "forbid", "strict": True}

    messages: list[LoggedMessage] = Field(min_length=1, max_length=1000)


class LoggedOut(BaseModel):
    received: int
    changed: int = Field(description="Messages whose record changed (a repeat changes nothing).")
    ids: list[str] = Field(description="The id of each message, in order (made for refusals).")


class DurationSummary(BaseModel):
    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    within: dict[str, float] = Field(description="Target → share answered within it.")


class ConversationCounts(BaseModel):
    started: int
    by_customer: int
    answered: int
    unanswered: int


class ResponseTimePoint(BaseModel):
    start: datetime
    first_response: DurationSummary
    all_responses: DurationSummary
    unanswered: int
    conversations: int


class ResponseTimes(BaseModel):
    from_: datetime = Field(alias="from")
    to: datetime
    bucket: str
    time_zone: str
    relative_error: float = Field(description="Of the percentiles; the rest is exact.")
    first_response: DurationSummary
    all_responses: DurationSummary
    unanswered: int = Field(description="Ended conversations the customer began, never answered.")
    unanswered_runs: int = Field(description="Runs left unanswered in answered conversations.")
    conversations: ConversationCounts
    waiting: int = Field(description="Open conversations whose customer waits for a reply now.")
    series: list[ResponseTimePoint]


class ErrorCount(BaseModel):
    code: int
    count: int
    quality: bool = Field(description="One of the quality-related codes.")
    meaning: str | None


class DeliveryFigures(BaseModel):
    outbound: int = Field(description="Messages the business sent or tried to send.")
    sent: int
    delivered: int
    read: int
    failed: int
    refused: int = Field(description="Sends the Graph API refused (logged with their error).")
    inbound: int
    opt_outs: int
    resumes: int
    delivery_rate: float | None
    read_rate: float | None
    failure_rate: float | None
    errors: list[ErrorCount]


class DeliveryPoint(DeliveryFigures):
    start: datetime


class Delivery(DeliveryFigures):
    from_: datetime = Field(alias="from")
    to: datetime
    bucket: str
    time_zone: str
    series: list[DeliveryPoint]


class ConversationOut(BaseModel):
    id: int
    phone_number_id: str
    customer: str = Field(description="wa_id or user id; its keyed hash when ids are hashed.")
    started_at: datetime
    last_at: datetime
    messages: int
    by_customer: bool = Field(description="The customer wrote first.")
    customer_wrote: bool
    answered: bool
    first_response_seconds: float | None
    unanswered_runs: int
    waiting_since: datetime | None = Field(description="Open: the customer waits since then.")
    ended: bool = Field(description="The inactivity gap has passed since its last message.")


class MessageOut(BaseModel):
    wamid: str
    phone_number_id: str | None
    customer: str | None
    inbound: bool
    kind: str | None = Field(description="text, interactive:button_reply, template, refused...")
    at: datetime = Field(description="Received (inbound) or sent (outbound).")
    status: str | None = Field(description="Outbound: sent, delivered, read, played, failed.")
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    failed_at: datetime | None
    error_code: int | None
    category: str | None = Field(description="Pricing category.")
    origin: str | None
    sender_kind: str = Field(description="bot, agent, campaign or unknown.")
    replies_to: str | None = Field(description="The wamid it answers (context).")
    reply_id: str | None = Field(description="The tapped button's or list row's id.")
    template: str | None
    journey: str | None
    step: str | None
    experiments: list[list[str]] | None = Field(description="[experiment, arm] pairs.")
    body: str | None = Field(description="Its text, when message bodies are kept.")
