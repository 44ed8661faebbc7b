"""The tables (SQLAlchemy Core). Migrations in ``migrations/`` must produce exactly this."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


@overload
def utc(value: datetime) -> datetime: ...


@overload
def utc(value: None) -> None: ...


def utc(value: datetime | None) -> datetime | None:
    """An aware datetime in UTC, as a ``UTCDateTime`` column takes it (a naive one is refused)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def sqlite_time(value: datetime | None) -> str | None:
    """A ``UTCDateTime`` as SQLite stores it (SQLAlchemy's ``DATETIME`` text: UTC, no zone,
    microseconds)."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = utc(value)
    # "2026-01-02 03:04:05.000006+00:00" without its zone
    return value.isoformat(" ", "microseconds")[:26]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on both databases."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        value = utc(value)
        return value.replace(tzinfo=None) if value and dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite's rowid alias must be INTEGER
# Plain JSON on both: PostgreSQL's JSONB would refuse some authentic payloads (\u0000).
Json = JSON()


def _state_columns() -> list[Column[Any]]:
    """Bookkeeping every state table shares."""
    return [
        Column("updated_at", UTCDateTime, nullable=False),
        # field → Unix time of the event that set it: a late, older event never overwrites.
        Column("as_of", Json, nullable=False, default=dict),
    ]


raw_webhooks = Table(
    "raw_webhooks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("processed_at", UTCDateTime),
    Column("has_customer_data", Boolean),
    Column("redacted_at", UTCDateTime),
    # a replay or backfill marked by its sender: its state changes notify nobody
    Column("quiet", Boolean, nullable=False, server_default=false()),
    Index(
        "ix_raw_webhooks_pending",
        "id",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
    Index("ix_raw_webhooks_received_at", "received_at"),
)

events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("dedupe_key", String(64), nullable=False, unique=True),
    Column("raw_id", Id, ForeignKey("raw_webhooks.id", ondelete="SET NULL")),
    Column("source", String(16), nullable=False),
    Column("field", String(64), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("waba_id", String(64)),
    Column("subject_kind", String(16)),
    Column("subject_id", String(64)),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("value", Json, nullable=False),
    Index("ix_events_occurred_at", "occurred_at", "id"),
    Index("ix_events_field_occurred_at", "field", "occurred_at"),
    Index("ix_events_waba_id_occurred_at", "waba_id", "occurred_at"),
    Index("ix_events_subject", "subject_kind", "subject_id", "occurred_at"),
    Index("ix_events_raw_id", "raw_id"),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("raw_id", Id, ForeignKey("raw_webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("path", String(128), nullable=False),
    Column("field", String(64)),
    Column("error", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime),
    Index("ix_quarantine_raw_id", "raw_id"),
    Index(
        "ix_quarantine_open",
        "id",
        sqlite_where=text("resolved_at IS NULL"),
        postgresql_where=text("resolved_at IS NULL"),
    ),
)

field_counts = Table(
    "field_counts",
    metadata,
    Column("field", String(64), primary_key=True),
    # Each worker adds to its own shard's rows, so concurrent workers never wait on each other;
    # readers sum the shards.
    Column("shard", Integer, primary_key=True, autoincrement=False),
    Column("changes", BigInteger, nullable=False, default=0),
    Column("items", BigInteger, nullable=False, default=0),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
)

businesses = Table(
    "businesses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("messaging_limit", String(32)),
    Column("last_alert", String(128)),
    *_state_columns(),
)

wabas = Table(
    "wabas",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("business_id", String(64)),
    Column("account_state", String(32)),
    Column("partner_state", String(32)),
    Column("ban_state", String(32)),
    Column("ban_date", UTCDateTime),
    Column("violation", String(128)),
    Column("restrictions", Text),
    Column("restricted_until", UTCDateTime),
    Column("review_decision", String(32)),
    Column("messaging_limit", String(32)),
    Column("max_phone_numbers", Integer),
    Column("last_event", String(64)),
    Column("last_alert", String(128)),
    Column("last_webhook_at", UTCDateTime),
    Column("subscribed", Boolean),  # our app is subscribed to its webhooks (polled)
    Column("confirmed_at", UTCDateTime),  # last successful poll
    *_state_columns(),
)

phone_numbers = Table(
    "phone_numbers",
    metadata,
    Column("key", Id, primary_key=True, autoincrement=True),
    Column("phone_number_id", String(64), unique=True),
    Column("display_phone_number", String(32), unique=True),
    Column("waba_id", String(64)),
    Column("verified_name", String(512)),
    Column("quality_rating", String(16)),
    Column("status", String(32)),
    Column("messaging_limit", String(32)),
    Column("legacy_tier", String(32)),
    Column("throughput", String(32)),
    Column("name_status", String(32)),
    Column("name_rejection_reason", String(64)),
    Column("security_event", String(64)),
    Column("health_status", String(16)),
    Column("last_event", String(64)),
    Column("last_alert", String(128)),
    Column("confirmed_at", UTCDateTime),  # last successful poll that listed it
    *_state_columns(),
    Index("ix_phone_numbers_waba_id", "waba_id"),
)

templates = Table(
    "templates",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("waba_id", String(64)),
    Column("name", String(512)),
    Column("language", String(32)),
    Column("category", String(32)),
    Column("status", String(32)),
    Column("quality_score", String(16)),
    Column("pause_count", Integer, nullable=False, default=0),
    Column("rate_limit_pause_count", Integer, nullable=False, default=0),
    Column("paused_until", UTCDateTime),
    Column("disable_date", UTCDateTime),
    Column("rejected_reason", String(64)),
    Column("pending_category", String(32)),
    Column("category_change_at", UTCDateTime),
    Column("components_updated_at", UTCDateTime),
    Column("locked", Boolean),
    Column("last_event", String(64)),
    Column("confirmed_at", UTCDateTime),  # last successful poll that listed it
    *_state_columns(),
    Index("ix_templates_waba_id", "waba_id"),
)

watched_wabas = Table(
    "watched_wabas",
    metadata,
    Column("waba_id", String(64), primary_key=True),
    Column("origin", String(16), nullable=False),  # settings, business, api
    Column("business_id", String(64)),  # the portfolio it was discovered through
    Column("access_token", Text),  # its own token; NULL: the default token
    Column("added_at", UTCDateTime, nullable=False),
    Column("poll_state", String(16), nullable=False, server_default="new"),
    Column("last_error", Text),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("last_poll_at", UTCDateTime),
    Column("last_success_at", UTCDateTime),
    Column("next_poll_at", UTCDateTime),
    Column("usage_percent", Integer),  # Meta's highest reported usage of its call budget
)

poll_requests = Table(
    "poll_requests",
    metadata,
    # A webhook about a phone number or template asks for a re-read: one row per object, so a
    # burst of webhooks makes one read.
    Column("subject_kind", String(16), primary_key=True),
    Column("subject_id", String(64), primary_key=True),
    Column("waba_id", String(64)),
    Column("due_at", UTCDateTime, nullable=False),
)

graph_calls = Table(
    "graph_calls",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("waba_id", String(64)),
    Column("at", UTCDateTime, nullable=False),
    Column("path", String(256), nullable=False),
    Column("status", Integer),  # HTTP status; NULL when no answer came
    Column("error_code", Integer),
    Column("duration_ms", Integer, nullable=False),
    Index("ix_graph_calls_waba_id_at", "waba_id", "at"),
    Index("ix_graph_calls_at", "at"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("fingerprint", String(32), primary_key=True),  # a hash of the labels
    Column("rule", String(64), nullable=False),
    Column("labels", Json, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("state", String(16), nullable=False),  # firing, resolved
    Column("summary", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    # when its current firing was last told (or deemed told: a quiet replay); NULL: not yet
    # (it was silenced or inhibited), so it goes out once it no longer is
    Column("notified_at", UTCDateTime),
    Index("ix_alerts_state_started_at", "state", "started_at"),
)

notifications = Table(
    "notifications",
    metadata,
    # The outbox: written in the transaction that fires or resolves the alert, sent afterwards.
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("fingerprint", String(32), nullable=False),
    Column("receiver", String(64), nullable=False),  # a receiver's name, never its URL
    Column("group_key", String(64)),  # warnings of one group go out together; NULL: alone
    Column("status", String(16), nullable=False),  # firing, resolved
    Column("payload", Json, nullable=False),
    Column("idempotency_key", String(64), nullable=False, unique=True),
    Column("state", String(16), nullable=False),  # pending, sent, failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    Index(
        "ix_notifications_pending",
        "next_attempt_at",
        sqlite_where=text("state = 'pending'"),
        postgresql_where=text("state = 'pending'"),
    ),
    Index("ix_notifications_fingerprint", "fingerprint"),
)

silences = Table(
    "silences",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("matchers", Json, nullable=False),  # label → value; an alert matches all of them
    Column("comment", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

# Webhook POSTs refused before anything was stored (bad or missing signature), per minute:
# what the signature-failure alert counts, shared by every receiving process.
webhook_rejections = Table(
    "webhook_rejections",
    metadata,
    Column("minute", UTCDateTime, primary_key=True),
    Column("reason", String(32), primary_key=True),
    Column("count", BigInteger, nullable=False),
)

history = Table(
    "history",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("subject_kind", String(16), nullable=False),
    Column("subject_key", String(64), nullable=False),
    Column("field", String(64), nullable=False),
    Column("old_value", Text),
    Column("new_value", Text),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("source", String(16), nullable=False),
    Column("event_id", Id, ForeignKey("events.id", ondelete="SET NULL")),
    Index("ix_history_subject", "subject_kind", "subject_key", "field", "occurred_at"),
    Index("ix_history_occurred_at", "occurred_at"),
)

facts = Table(
    "facts",
    metadata,
    # Every fact about a tracked field (polls' confirmations that change nothing excepted):
    # what a field's history is replayed from when an older fact arrives late.
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("subject_kind", String(16), nullable=False),
    Column("subject_key", String(64), nullable=False),
    Column("field", String(64), nullable=False),
    Column("op", String(16), nullable=False),  # set, at_least, increment, restore
    Column("value", Text),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("source", String(16), nullable=False),
    Column("event_id", Id, ForeignKey("events.id", ondelete="SET NULL")),
    Index("ix_facts_subject", "subject_kind", "subject_key", "field", "occurred_at"),
)

messages = Table(
    "messages",
    metadata,
    # One row per message (wamid): metadata only, never its text. An outbound message's status
    # only moves forward (sent → delivered → read → played; failed is final).
    Column("wamid", String(256), primary_key=True),
    Column("phone_number_id", String(64)),
    Column("customer", String(128)),  # wa_id, or the business-scoped user id
    Column("inbound", Boolean, nullable=False),
    Column("kind", String(64)),
    Column("at", UTCDateTime),  # inbound: received; outbound: sent (else the first status seen)
    Column("status", String(16)),
    Column("sent_at", UTCDateTime),
    Column("delivered_at", UTCDateTime),
    Column("read_at", UTCDateTime),
    Column("failed_at", UTCDateTime),
    Column("error_code", Integer),
    Column("category", String(64)),
    Column("sender_kind", String(16), nullable=False, server_default="unknown"),
    Column("replies_to", String(256)),
    Column("updated_at", UTCDateTime, nullable=False),
    # what the business logged (POST /api/v1/messages) or tagged in biz_opaque_callback_data
    Column("logged_at", UTCDateTime),
    Column("template", String(512)),
    Column("journey", String(128)),
    Column("step", String(128)),
    Column("experiments", Json),  # [[experiment, arm], ...]
    Column("origin", String(64)),  # conversation origin, where Meta sent it
    Column("reply_id", String(256)),  # the tapped button's or list row's id
    Column("body", Text),  # the text, unless message bodies are not kept
    Index("ix_messages_pair", "phone_number_id", "customer", "at"),
    Index("ix_messages_at", "at"),
)

conversations = Table(
    "conversations",
    metadata,
    # One (business number, customer) conversation: messages with less than the inactivity gap
    # between them. Derived from messages; rebuilt when a late message changes it.
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("phone_number_id", String(64), nullable=False),
    Column("customer", String(128), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),
    Column("messages", Integer, nullable=False),
    Column("by_customer", Boolean, nullable=False),
    Column("customer_wrote", Boolean, nullable=False),
    Column("answered", Boolean, nullable=False),
    Column("first_response_seconds", Float),
    Column("unanswered_runs", Integer, nullable=False),
    Column("waiting_since", UTCDateTime),  # open: the customer's run waiting for a reply
    Column("ended", Boolean, nullable=False),  # the gap has passed since its last message
    Index("ix_conversations_pair", "phone_number_id", "customer", "started_at"),
    Index(
        "ix_conversations_open",
        "last_at",
        sqlite_where=text("ended = 0"),
        postgresql_where=text("NOT ended"),
    ),
    Index("ix_conversations_started_at", "started_at"),
)

responses = Table(
    "responses",
    metadata,
    # One business reply to a run of customer messages, written once.
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("phone_number_id", String(64), nullable=False),
    Column("customer", String(128), nullable=False),
    Column("asked_at", UTCDateTime, nullable=False),  # the run's first message: its bucket
    Column("answered_at", UTCDateTime, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("sender_kind", String(16), nullable=False),
    Column("first", Boolean, nullable=False),  # the conversation's first response
    Index("ix_responses_pair", "phone_number_id", "customer", "asked_at"),
    Index("ix_responses_asked_at", "asked_at"),
)

# Per-hour aggregates (hours of the configured time zone), kept after messages expire. ``*``
# stands for "every number" or "every sender": a summary reads as many rows as it has hours.
response_stats = Table(
    "response_stats",
    metadata,
    Column("phone_number_id", String(64), primary_key=True),
    Column("sender_kind", String(16), primary_key=True),
    Column("bucket_start", UTCDateTime, primary_key=True),
    Column("kind", String(8), primary_key=True),  # first, all
    Column("count", BigInteger, nullable=False),
    Column("total_seconds", Float, nullable=False),
    Column("max_seconds", Float, nullable=False),
    Column("bins", LargeBinary, nullable=False),  # a packed duration sketch
)

conversation_stats = Table(
    "conversation_stats",
    metadata,
    Column("phone_number_id", String(64), primary_key=True),
    Column("bucket_start", UTCDateTime, primary_key=True),  # the conversation's start
    Column("conversations", BigInteger, nullable=False),
    Column("by_customer", BigInteger, nullable=False),
    Column("answered", BigInteger, nullable=False),
    Column("unanswered", BigInteger, nullable=False),
    Column("unanswered_runs", BigInteger, nullable=False),
)

delivery_stats = Table(
    "delivery_stats",
    metadata,
    # Outbound messages by the hour of their send time; template "" when none is known.
    Column("phone_number_id", String(64), primary_key=True),
    Column("template", String(512), primary_key=True),
    Column("bucket_start", UTCDateTime, primary_key=True),
    Column("outbound", BigInteger, nullable=False),
    Column("sent", BigInteger, nullable=False),
    Column("delivered", BigInteger, nullable=False),
    Column("read", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False),
    Column("refused", BigInteger, nullable=False),  # refused by the Graph API when sent
    Column("inbound", BigInteger, nullable=False),
    Column("opt_outs", BigInteger, nullable=False),
    Column("resumes", BigInteger, nullable=False),
)

delivery_errors = Table(
    "delivery_errors",
    metadata,
    Column("phone_number_id", String(64), primary_key=True),
    Column("template", String(512), primary_key=True),
    Column("bucket_start", UTCDateTime, primary_key=True),
    Column("code", Integer, primary_key=True, autoincrement=False),
    Column("count", BigInteger, nullable=False),
)

instance = Table(
    "instance",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

STATE_TABLES = {
    "business": businesses,
    "waba": wabas,
    "phone_number": phone_numbers,
    "template": templates,
}
