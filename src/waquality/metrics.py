"""Metrics in Prometheus form, served at ``/metrics`` (with the API token).

Most figures are read from the database when Prometheus scrapes (:class:`StoreCollector`), so
every process that serves them shows the same values, whichever process did the work, and they
survive restarts. Labels name numbers and templates the way alerts do (``waba_id``,
``phone_number`` — the display number, else the phone-number ID — and ``template_id``), so
series and alerts join. Series per number or template grow with the numbers and templates
watched (about five per template); nothing is labelled per customer or per message.

State (values: ``quality`` 2 GREEN/High, 1 YELLOW/Medium, 0 RED/Low, -1 not rated):

- ``waquality_phone_number_quality{waba_id,phone_number}``
- ``waquality_phone_number_status{waba_id,phone_number,status}`` 1 (the current status only)
- ``waquality_phone_number_messaging_limit{waba_id,phone_number}`` business-initiated
  conversations per 24 h (``+Inf``: unlimited)
- ``waquality_phone_number_confirmed_timestamp_seconds{waba_id,phone_number}`` last poll that
  listed it
- ``waquality_phone_number_flagged_due_timestamp_seconds{waba_id,phone_number}`` a FLAGGED
  number's expected return to CONNECTED, while its quality holds
- ``waquality_template_info{waba_id,template_id,name,language,category}`` 1
- ``waquality_template_status{waba_id,template_id,status}`` 1 (the current status only)
- ``waquality_template_quality{waba_id,template_id}``
- ``waquality_template_pauses{waba_id,template_id}`` quality pauses so far
- ``waquality_template_paused_until_timestamp_seconds{waba_id,template_id}``
- ``waquality_templates{waba_id,status,quality}`` templates per status and quality

Alerts: ``waquality_alerts_firing{severity}`` (critical and warning, 0 included) and
``waquality_alert_rule_firing{rule,severity}``.

Ingestion and processing: ``waquality_webhook_changes_total{field}`` and
``waquality_webhook_items_total{field}`` (processed, duplicates included),
``waquality_webhook_refusals_last_hour{reason}`` (POSTs refused for their signature, every
receiving process), ``waquality_processing_backlog`` (stored bodies not processed yet),
``waquality_processing_lag_seconds`` (age of the oldest of them; 0 when none),
``waquality_quarantined_bodies`` (bodies with a quarantined part not dealt with),
``waquality_waba_last_webhook_timestamp_seconds{waba_id}``. This process's own counter of
webhook POSTs by outcome: ``waquality_webhook_requests_total{result}`` (accepted, unsigned,
bad_signature, too_large, unavailable, bad_request, unauthorized).

Polling: ``waquality_watched_wabas{state}``, ``waquality_poll_state{waba_id,state}`` 1,
``waquality_poll_failures{waba_id}`` (failed polls in a row),
``waquality_poll_last_success_timestamp_seconds{waba_id}``, ``waquality_graph_usage_percent
{waba_id}`` (Meta's figure for its call budget), ``waquality_graph_calls_last_hour{waba_id,
outcome}`` (ok, error).

Conversations, over the last 24 hours (the hour buckets started since the hour 23 hours back):
``waquality_response_time_seconds{waba_id,phone_number,kind}`` a gauge histogram (``kind``:
first, all; ``le`` in seconds; to the sketch's 1% relative error),
``waquality_messages_last_24h{waba_id,phone_number,outcome}`` (outbound, sent, delivered, read,
failed, refused, inbound), ``waquality_message_errors_last_24h{waba_id,phone_number,code}``,
and ``waquality_conversations_waiting{waba_id,phone_number}`` (customers waiting for a reply),
for every phone number waquality knows.

The processing counters below (events, duplicates, quarantined parts, processing lag, changes)
are counted where processing runs — the child process of ``serve`` or a ``waquality worker`` —
and are kept in :data:`PROCESSING`, which ``/metrics`` does not serve: there they would always
read 0. The figures above carry what the database knows of the same things.
"""

from __future__ import annotations

import math
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from sqlalchemy import Connection, false, func, select

from waquality.alerting.book import AlertState
from waquality.domain import sketch
from waquality.domain.enums import PollState, RawStatus
from waquality.ingest.rejections import SIGNATURE_REASONS
from waquality.store import schema
from waquality.store.database import Database
from waquality.store.stats import ALL, DELIVERY_COUNTERS

WEBHOOK_REQUESTS = Counter(
    "waquality_webhook_requests",
    "Webhook POSTs by outcome (accepted, unsigned, bad_signature, too_large, unavailable, "
    "bad_request, unauthorized).",
    ["result"],
)

PROCESSING = CollectorRegistry()
WEBHOOK_CHANGES = Counter(
    "waquality_webhook_changes",
    "Changes processed, by webhook field.",
    ["field"],
    registry=PROCESSING,
)
EVENTS = Counter(
    "waquality_events", "Typed events created (duplicates excluded).", registry=PROCESSING
)
DUPLICATES = Counter(
    "waquality_duplicate_events", "Redelivered changes dropped as duplicates.", registry=PROCESSING
)
QUARANTINED = Counter(
    "waquality_quarantined", "Payload parts quarantined as unparseable.", registry=PROCESSING
)
PROCESSING_LAG = Histogram(
    "waquality_processing_lag_seconds",
    "From acknowledgement to processing of a webhook body.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=PROCESSING,
)

QUALITY_VALUE = {"GREEN": 2.0, "YELLOW": 1.0, "RED": 0.0}
TIER_VALUE = {
    "TIER_50": 50.0,
    "TIER_250": 250.0,
    "TIER_1K": 1000.0,
    "TIER_2K": 2000.0,
    "TIER_10K": 10000.0,
    "TIER_100K": 100000.0,
    "TIER_UNLIMITED": math.inf,
}
RESPONSE_BUCKETS = (10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0)
WINDOW = timedelta(hours=24)
PHONE = ("waba_id", "phone_number")
TEMPLATE = ("waba_id", "template_id")


def served(db: Database, clock: Callable[[], datetime] | None = None) -> CollectorRegistry:
    """What ``/metrics`` serves: this process's metrics and the store's figures."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Process())
    registry.register(StoreCollector(db, clock or (lambda: datetime.now(UTC))))
    return registry


class _Process:
    """The default registry's metrics (this process's counters, Python and process figures)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _phone_labels(row: Any) -> list[str]:
    number = row.display_phone_number or row.phone_number_id or str(row.key)
    return [row.waba_id or "", str(number)]


class StoreCollector:
    """Figures read from the database at scrape time, in one read transaction."""

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        with self.db.read() as conn:
            phones = {
                row.phone_number_id: _phone_labels(row)
                for row in conn.execute(select(schema.phone_numbers))
                if row.phone_number_id
            }
            metrics: list[Metric] = [
                *_numbers(conn, now),
                *_templates(conn),
                *_alerts(conn),
                *_ingest(conn, now),
                *_polling(conn, now),
                *_responses(conn, now, phones),
                *_conversations(conn, now, phones),
            ]
        yield from metrics


def _numbers(conn: Connection, now: datetime) -> list[Metric]:
    from waquality.web.reads import flagged  # the dashboard's countdown, shared

    quality = GaugeMetricFamily(
        "waquality_phone_number_quality",
        "Quality rating: 2 GREEN (High), 1 YELLOW (Medium), 0 RED (Low), -1 not rated.",
        labels=PHONE,
    )
    status = GaugeMetricFamily(
        "waquality_phone_number_status",
        "The number's current status (1).",
        labels=[*PHONE, "status"],
    )
    limit = GaugeMetricFamily(
        "waquality_phone_number_messaging_limit",
        "Messaging limit: business-initiated conversations per 24 h (+Inf: unlimited).",
        labels=PHONE,
    )
    confirmed = GaugeMetricFamily(
        "waquality_phone_number_confirmed_timestamp_seconds",
        "When a poll of the Graph API last listed the number.",
        labels=PHONE,
    )
    due = GaugeMetricFamily(
        "waquality_phone_number_flagged_due_timestamp_seconds",
        "A FLAGGED number's expected return to CONNECTED, if its quality stays Medium or High.",
        labels=PHONE,
    )
    for row in conn.execute(select(schema.phone_numbers)):
        labels = _phone_labels(row)
        quality.add_metric(labels, QUALITY_VALUE.get(row.quality_rating or "", -1.0))
        if row.status:
            status.add_metric([*labels, row.status], 1.0)
        if row.messaging_limit in TIER_VALUE:
            limit.add_metric(labels, TIER_VALUE[row.messaging_limit])
        if row.confirmed_at is not None:
            confirmed.add_metric(labels, row.confirmed_at.timestamp())
        if row.status == "FLAGGED":
            countdown = flagged(conn, dict(row._mapping), now)
            if countdown is not None and countdown.due_at is not None:
                due.add_metric(labels, countdown.due_at.timestamp())
    return [quality, status, limit, confirmed, due]


def _templates(conn: Connection) -> list[Metric]:
    t = schema.templates
    info = GaugeMetricFamily(
        "waquality_template_info",
        "A template's name, language and category (1).",
        labels=[*TEMPLATE, "name", "language", "category"],
    )
    status = GaugeMetricFamily(
        "waquality_template_status",
        "The template's current status (1).",
        labels=[*TEMPLATE, "status"],
    )
    quality = GaugeMetricFamily(
        "waquality_template_quality",
        "Template quality: 2 GREEN (High), 1 YELLOW (Medium), 0 RED (Low), -1 not rated.",
        labels=TEMPLATE,
    )
    pauses = GaugeMetricFamily(
        "waquality_template_pauses",
        "Quality pauses so far (rate-limit pauses apart).",
        labels=TEMPLATE,
    )
    until = GaugeMetricFamily(
        "waquality_template_paused_until_timestamp_seconds",
        "When a paused template is unpaused.",
        labels=TEMPLATE,
    )
    counts = GaugeMetricFamily(
        "waquality_templates",
        "Templates per status and quality.",
        labels=["waba_id", "status", "quality"],
    )
    tally: Tally[tuple[str, str, str]] = Tally()
    columns = (
        t.c.id,
        t.c.waba_id,
        t.c.name,
        t.c.language,
        t.c.category,
        t.c.status,
        t.c.quality_score,
        t.c.pause_count,
        t.c.paused_until,
    )
    for row in conn.execute(select(*columns)):
        labels = [row.waba_id or "", row.id]
        info.add_metric([*labels, row.name or "", row.language or "", row.category or ""], 1.0)
        if row.status:
            status.add_metric([*labels, row.status], 1.0)
        quality.add_metric(labels, QUALITY_VALUE.get(row.quality_score or "", -1.0))
        pauses.add_metric(labels, float(row.pause_count or 0))
        if row.status == "PAUSED" and row.paused_until is not None:
            until.add_metric(labels, row.paused_until.timestamp())
        tally[(row.waba_id or "", row.status or "UNKNOWN", row.quality_score or "UNKNOWN")] += 1
    for key, n in sorted(tally.items()):
        counts.add_metric(list(key), float(n))
    return [info, status, quality, pauses, until, counts]


def _alerts(conn: Connection) -> list[Metric]:
    a = schema.alerts
    firing = GaugeMetricFamily(
        "waquality_alerts_firing", "Alerts firing, per severity.", labels=["severity"]
    )
    by_rule = GaugeMetricFamily(
        "waquality_alert_rule_firing", "Alerts firing, per rule.", labels=["rule", "severity"]
    )
    per_severity: Tally[str] = Tally({"critical": 0, "warning": 0})
    query = (
        select(a.c.rule, a.c.severity, func.count())
        .where(a.c.state == AlertState.FIRING.value)
        .group_by(a.c.rule, a.c.severity)
    )
    for rule, severity, n in conn.execute(query):
        by_rule.add_metric([rule, severity], float(n))
        per_severity[severity] += int(n)
    for severity, n in sorted(per_severity.items()):
        firing.add_metric([severity], float(n))
    return [firing, by_rule]


def _ingest(conn: Connection, now: datetime) -> list[Metric]:
    fc, raw, q = schema.field_counts, schema.raw_webhooks, schema.quarantine
    changes = CounterMetricFamily(
        "waquality_webhook_changes",
        "Webhook changes processed, by field (redeliveries included).",
        labels=["field"],
    )
    items = CounterMetricFamily(
        "waquality_webhook_items",
        "Items inside processed changes (messages, statuses...), by field.",
        labels=["field"],
    )
    query = select(fc.c.field, func.sum(fc.c.changes), func.sum(fc.c["items"])).group_by(fc.c.field)
    for name, n_changes, n_items in conn.execute(query):
        changes.add_metric([name], float(n_changes or 0))
        items.add_metric([name], float(n_items or 0))
    refusals = GaugeMetricFamily(
        "waquality_webhook_refusals_last_hour",
        "Webhook POSTs refused for their signature in the last hour, by every receiving process.",
        labels=["reason"],
    )
    r = schema.webhook_rejections
    found = dict.fromkeys(SIGNATURE_REASONS, 0)
    since = (now - timedelta(hours=1)).replace(second=0, microsecond=0)
    query_r = (
        select(r.c.reason, func.sum(r.c.count)).where(r.c.minute >= since).group_by(r.c.reason)
    )
    for reason, n in conn.execute(query_r):
        found[reason] = int(n or 0)
    for reason, n in sorted(found.items()):
        refusals.add_metric([reason], float(n))
    pending = raw.c.status == RawStatus.PENDING.value
    backlog = conn.execute(select(func.count()).select_from(raw).where(pending)).scalar_one()
    oldest = conn.execute(
        select(raw.c.received_at).where(pending).order_by(raw.c.id).limit(1)
    ).scalar()
    lag = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    open_quarantine = conn.execute(
        select(func.count(func.distinct(q.c.raw_id))).where(q.c.resolved_at.is_(None))
    ).scalar_one()
    last_webhook = GaugeMetricFamily(
        "waquality_waba_last_webhook_timestamp_seconds",
        "When a WABA last sent a webhook.",
        labels=["waba_id"],
    )
    w = schema.wabas
    for waba_id, at in conn.execute(select(w.c.id, w.c.last_webhook_at)):
        if at is not None:
            last_webhook.add_metric([waba_id], at.timestamp())
    return [
        changes,
        items,
        refusals,
        GaugeMetricFamily(
            "waquality_processing_backlog",
            "Stored webhook bodies not processed yet.",
            value=float(backlog),
        ),
        GaugeMetricFamily(
            "waquality_processing_lag_seconds",
            "Age of the oldest stored webhook body not processed yet (0: none waiting).",
            value=lag,
        ),
        GaugeMetricFamily(
            "waquality_quarantined_bodies",
            "Webhook bodies with a quarantined part nobody has dealt with yet.",
            value=float(open_quarantine),
        ),
        last_webhook,
    ]


def _polling(conn: Connection, now: datetime) -> list[Metric]:
    w, c = schema.watched_wabas, schema.graph_calls
    watched = GaugeMetricFamily(
        "waquality_watched_wabas", "Watched WABAs per polling state.", labels=["state"]
    )
    state = GaugeMetricFamily(
        "waquality_poll_state", "A watched WABA's polling state (1).", labels=["waba_id", "state"]
    )
    failures = GaugeMetricFamily(
        "waquality_poll_failures", "Failed polls in a row.", labels=["waba_id"]
    )
    success = GaugeMetricFamily(
        "waquality_poll_last_success_timestamp_seconds",
        "When a poll of the WABA last succeeded (its data is confirmed up to then).",
        labels=["waba_id"],
    )
    usage = GaugeMetricFamily(
        "waquality_graph_usage_percent",
        "Meta's figure for the share of the WABA's call budget used.",
        labels=["waba_id"],
    )
    per_state: Tally[str] = Tally({s.value: 0 for s in PollState})
    for row in conn.execute(select(w)):
        per_state[row.poll_state] += 1
        state.add_metric([row.waba_id, row.poll_state], 1.0)
        failures.add_metric([row.waba_id], float(row.failures))
        if row.last_success_at is not None:
            success.add_metric([row.waba_id], row.last_success_at.timestamp())
        if row.usage_percent is not None:
            usage.add_metric([row.waba_id], float(row.usage_percent))
    for name, n in sorted(per_state.items()):
        watched.add_metric([name], float(n))
    calls = GaugeMetricFamily(
        "waquality_graph_calls_last_hour",
        "Graph API calls in the last hour, per WABA and outcome (ok: a 2xx answer).",
        labels=["waba_id", "outcome"],
    )
    ok = c.c.status.between(200, 299)
    query = (
        select(c.c.waba_id, ok.label("ok"), func.count())
        .where(c.c.at >= now - timedelta(hours=1))
        .group_by(c.c.waba_id, ok)
    )
    for waba_id, good, n in conn.execute(query):
        calls.add_metric([waba_id or "", "ok" if good else "error"], float(n))
    return [watched, state, failures, success, usage, calls]


def _responses(conn: Connection, now: datetime, phones: dict[str, list[str]]) -> list[Metric]:
    rs = schema.response_stats
    since = (now - WINDOW).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    # one index search per known number (a != on the key's first column would read it all)
    query = select(rs.c.phone_number_id, rs.c.kind, rs.c.total_seconds, rs.c.bins).where(
        rs.c.phone_number_id.in_(sorted(phones)),
        rs.c.sender_kind == ALL,
        rs.c.bucket_start >= since,
    )
    groups: dict[tuple[str, str], tuple[list[bytes], float]] = {}
    for phone, kind, total, bins in conn.execute(query):
        found, seconds = groups.get((phone, kind), ([], 0.0))
        groups[(phone, kind)] = ([*found, bins], seconds + float(total))
    family = GaugeHistogramMetricFamily(
        "waquality_response_time_seconds",
        "Business response times over the last 24 hours (kind: first of a conversation, all).",
        labels=[*PHONE, "kind"],
    )
    for (phone, kind), (packed, total) in sorted(groups.items()):
        merged = sketch.merged(packed)
        buckets = []
        for bound in RESPONSE_BUCKETS:
            share = merged.share_within(bound)
            buckets.append((_bound(bound), round(share * merged.total)))
        buckets.append(("+Inf", merged.total))
        labels = [*phones.get(phone, ["", phone]), kind]
        family.add_metric(labels, buckets, total)
    return [family]


def _bound(seconds: float) -> str:
    return str(int(seconds)) if seconds.is_integer() else str(seconds)


def _conversations(conn: Connection, now: datetime, phones: dict[str, list[str]]) -> list[Metric]:
    ds, de, c = schema.delivery_stats, schema.delivery_errors, schema.conversations
    since = now - WINDOW
    messages = GaugeMetricFamily(
        "waquality_messages_last_24h",
        "Messages in the last 24 hours by outcome (outbound: every message sent or tried).",
        labels=[*PHONE, "outcome"],
    )
    sums = [func.sum(ds.c[k]) for k in DELIVERY_COUNTERS]
    query = (
        select(ds.c.phone_number_id, *sums)
        .where(
            ds.c.phone_number_id.in_(sorted(phones)),
            ds.c.template == ALL,
            ds.c.bucket_start >= since,
        )
        .group_by(ds.c.phone_number_id)
    )
    for phone, *values in conn.execute(query):
        labels = phones.get(phone, ["", phone])
        for key, value in zip(DELIVERY_COUNTERS, values, strict=True):
            if key in ("opt_outs", "resumes"):
                continue
            messages.add_metric([*labels, key], float(value or 0))
    errors = GaugeMetricFamily(
        "waquality_message_errors_last_24h",
        "Failed or refused messages in the last 24 hours by error code.",
        labels=[*PHONE, "code"],
    )
    query_e = (
        select(de.c.phone_number_id, de.c.code, func.sum(de.c.count))
        .where(
            de.c.phone_number_id.in_(sorted(phones)),
            de.c.template == ALL,
            de.c.bucket_start >= since,
        )
        .group_by(de.c.phone_number_id, de.c.code)
    )
    for phone, code, n in conn.execute(query_e):
        if n:
            errors.add_metric([*phones.get(phone, ["", phone]), str(code)], float(n))
    waiting = GaugeMetricFamily(
        "waquality_conversations_waiting",
        "Open conversations whose customer is waiting for a reply.",
        labels=PHONE,
    )
    query_w = (
        select(c.c.phone_number_id, func.count())
        .where(c.c.ended == false(), c.c.waiting_since.is_not(None))
        .group_by(c.c.phone_number_id)
    )
    for phone, n in conn.execute(query_w):
        waiting.add_metric(phones.get(phone, ["", phone]), float(n))
    return [messages, errors, waiting]
