"""Built-in alert rules: pure functions from a change of current state to alert signals.

A signal either fires or resolves the alert named by its labels (Prometheus Alertmanager's
model: the labels are the identity). Only changes of *current* values reach the rules, so a late
or replayed fact that changes nothing never alerts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from waquality.domain.enums import SubjectKind
from waquality.store.state import Changed


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Signal:
    rule: str
    labels: dict[str, str]  # the alert's identity (rule included)
    firing: bool
    severity: Severity
    summary: str  # one line: what changed
    description: str  # what it means and what to do


_TIERS = ["TIER_50", "TIER_250", "TIER_1K", "TIER_2K", "TIER_10K", "TIER_100K", "TIER_UNLIMITED"]
_PHONE_STATUS_OK = {"CONNECTED"}
FLAGGED_WINDOW = timedelta(days=7)


def _phone(change: Changed) -> tuple[dict[str, str], str]:
    row = change.row
    number = row.get("display_phone_number") or row.get("phone_number_id") or str(row["key"])
    labels = {"waba_id": row.get("waba_id") or "", "phone_number": str(number)}
    name = f" ({row['verified_name']})" if row.get("verified_name") else ""
    return labels, f"+{number}{name}" if str(number).isdigit() else f"{number}{name}"


def _template(change: Changed) -> tuple[dict[str, str], str]:
    row = change.row
    labels = {"waba_id": row.get("waba_id") or "", "template_id": str(row["id"])}
    name = row.get("name") or row["id"]
    language = f" [{row['language']}]" if row.get("language") else ""
    return labels, f"template {name}{language}"


def _signal(
    rule: str,
    labels: dict[str, str],
    firing: bool,
    severity: Severity,
    summary: str,
    description: str = "",
) -> Signal:
    return Signal(rule, {"rule": rule, **labels}, firing, severity, summary, description)


def phone_quality(change: Changed) -> list[Signal]:
    if change.kind is not SubjectKind.PHONE_NUMBER or change.field != "quality_rating":
        return []
    labels, who = _phone(change)
    if change.new == "GREEN":
        return [
            _signal(
                "phone_quality", labels, False, Severity.WARNING, f"{who}: quality back to GREEN"
            )
        ]
    if change.new not in ("YELLOW", "RED"):
        return []
    severity = Severity.CRITICAL if change.new == "RED" else Severity.WARNING
    return [
        _signal(
            "phone_quality",
            labels,
            True,
            severity,
            f"{who}: quality rating {change.old or 'unknown'} → {change.new}",
            "Recipients blocked, reported, muted or archived recent messages (7 days, weighted "
            "by recency). Check the templates and campaigns sent from this number.",
        )
    ]


def phone_status(change: Changed) -> list[Signal]:
    if change.kind is not SubjectKind.PHONE_NUMBER or change.field != "status" or not change.new:
        return []
    labels, who = _phone(change)
    if change.new in _PHONE_STATUS_OK:
        return [
            _signal("phone_status", labels, False, Severity.CRITICAL, f"{who}: CONNECTED again")
        ]
    meaning = "The number must be CONNECTED to send and receive messages."
    if change.new == "FLAGGED":
        back = change.at + FLAGGED_WINDOW
        meaning = (
            f"Legacy Flagged rule: if quality stays Medium or High for 7 days, it returns to "
            f"CONNECTED around {back:%Y-%m-%d %H:%M} UTC; otherwise one messaging-limit tier lower."
        )
    return [
        _signal(
            "phone_status",
            labels,
            True,
            Severity.CRITICAL,
            f"{who}: status {change.old or 'unknown'} → {change.new}",
            meaning,
        )
    ]


def flagged_streak(change: Changed) -> list[Signal]:
    """While a number is FLAGGED, a drop back to Low breaks the 7-day streak."""
    if change.kind is not SubjectKind.PHONE_NUMBER:
        return []
    labels, who = _phone(change)
    if change.field == "status" and change.new == "CONNECTED":
        return [_signal("flagged_streak", labels, False, Severity.WARNING, f"{who}: CONNECTED")]
    if change.field != "quality_rating" or change.row.get("status") != "FLAGGED":
        return []
    if change.new != "RED":
        return []
    return [
        _signal(
            "flagged_streak",
            labels,
            True,
            Severity.WARNING,
            f"{who}: quality Low again while FLAGGED: the 7-day streak broke",
            "When it returns to CONNECTED its messaging limit will be one tier lower.",
        )
    ]


def phone_health(change: Changed) -> list[Signal]:
    if change.kind is not SubjectKind.PHONE_NUMBER or change.field != "health_status":
        return []
    labels, who = _phone(change)
    if change.new == "AVAILABLE":
        return [_signal("phone_health", labels, False, Severity.WARNING, f"{who}: can send again")]
    if change.new not in ("LIMITED", "BLOCKED"):
        return []
    severity = Severity.CRITICAL if change.new == "BLOCKED" else Severity.WARNING
    return [
        _signal("phone_health", labels, True, severity, f"{who}: can_send_message {change.new}")
    ]


def messaging_limit(change: Changed) -> list[Signal]:
    if change.kind is not SubjectKind.PHONE_NUMBER or change.field != "messaging_limit":
        return []
    if change.old not in _TIERS or change.new not in _TIERS:
        return []
    labels, who = _phone(change)
    lowered = _TIERS.index(change.new) < _TIERS.index(change.old)
    summary = f"{who}: messaging limit {change.old} → {change.new}"
    return [_signal("messaging_limit_lowered", labels, lowered, Severity.WARNING, summary)]


def template_status(change: Changed) -> list[Signal]:
    if change.kind is not SubjectKind.TEMPLATE or change.field != "status" or not change.new:
        return []
    labels, what = _template(change)
    row = change.row
    if change.new == "APPROVED":
        return [
            _signal("template_status", labels, False, Severity.CRITICAL, f"{what}: APPROVED again")
        ]
    if change.new not in ("PAUSED", "DISABLED", "REJECTED", "FLAGGED"):
        return []
    severity = Severity.CRITICAL if change.new in ("PAUSED", "DISABLED") else Severity.WARNING
    meaning = ""
    if change.new == "PAUSED":
        pauses = int(row.get("pause_count") or 0)
        until = row.get("paused_until")
        meaning = f"Pause number {pauses}" + (
            f", until {until:%Y-%m-%d %H:%M} UTC" if until else ""
        )
        meaning += (
            "; the next pause disables the template."
            if pauses >= 2
            else "; sends fail with 132015."
        )
    elif change.new == "DISABLED":
        meaning = "Sends fail with 132016; create a new template."
    elif change.new == "REJECTED" and row.get("rejected_reason"):
        meaning = f"Reason: {row['rejected_reason']}."
    return [
        _signal(
            "template_status",
            labels,
            True,
            severity,
            f"{what}: {change.old or 'unknown'} → {change.new}",
            meaning,
        )
    ]


def template_quality(change: Changed) -> list[Signal]:
    if change.kind is not SubjectKind.TEMPLATE or change.field != "quality_score":
        return []
    labels, what = _template(change)
    if change.new == "GREEN":
        return [
            _signal("template_quality", labels, False, Severity.WARNING, f"{what}: quality GREEN")
        ]
    if change.new not in ("YELLOW", "RED"):
        return []
    summary = f"{what}: quality {change.old or 'unknown'} → {change.new}"
    return [_signal("template_quality", labels, True, Severity.WARNING, summary)]


def waba_subscription(change: Changed) -> list[Signal]:
    if change.kind is not SubjectKind.WABA or change.field != "subscribed":
        return []
    labels = {"waba_id": str(change.row["id"])}
    waba = f"WABA {change.row['id']}"
    if change.new is True:
        return [
            _signal(
                "webhook_subscription",
                labels,
                False,
                Severity.CRITICAL,
                f"{waba}: webhooks subscribed again",
            )
        ]
    return [
        _signal(
            "webhook_subscription",
            labels,
            True,
            Severity.CRITICAL,
            f"{waba}: no app is subscribed to its webhooks any more",
            "Webhooks stopped: subscribe the app again (POST /{WABA_ID}/subscribed_apps).",
        )
    ]


def waba_restriction(change: Changed) -> list[Signal]:
    if change.kind is not SubjectKind.WABA or change.field not in ("restrictions", "ban_state"):
        return []
    labels = {"waba_id": str(change.row["id"])}
    waba = f"WABA {change.row['id']}"
    if change.field == "restrictions":
        if not change.new:
            return [
                _signal(
                    "account_restricted",
                    labels,
                    False,
                    Severity.CRITICAL,
                    f"{waba}: restrictions lifted",
                )
            ]
        until = change.row.get("restricted_until")
        summary = f"{waba}: restricted ({change.new})"
        meaning = f"Until {until:%Y-%m-%d %H:%M} UTC." if until else ""
        return [_signal("account_restricted", labels, True, Severity.CRITICAL, summary, meaning)]
    if change.new == "REINSTATE":
        return [_signal("account_banned", labels, False, Severity.CRITICAL, f"{waba}: reinstated")]
    if change.new in ("DISABLE", "SCHEDULE_FOR_DISABLE"):
        return [
            _signal(
                "account_banned", labels, True, Severity.CRITICAL, f"{waba}: ban state {change.new}"
            )
        ]
    return []


FAILURES_TO_ALERT = 3  # failed polls in a row before a (transient) failure is worth an alert


def polling(waba_id: str, state: str, failures: int, error: str | None) -> list[Signal]:
    """Monitoring health: is this WABA still being read?"""
    labels = {"waba_id": waba_id}
    who = f"WABA {waba_id}"
    if state == "ok":
        return [_signal("polling_failed", labels, False, Severity.CRITICAL, f"{who}: polled again")]
    if state == "auth_failed":
        return [
            _signal(
                "polling_failed",
                labels,
                True,
                Severity.CRITICAL,
                f"{who}: polling stopped: {error}",
                "The access token expired or lost its permission. Give a new one "
                "(POST /api/v1/watched-wabas, or `waquality wabas add ID --token-file F`).",
            )
        ]
    if state == "failing" and failures >= FAILURES_TO_ALERT:
        summary = f"{who}: {failures} polls failed in a row: {error}"
        return [_signal("polling_failed", labels, True, Severity.WARNING, summary)]
    return []


def webhook_silence(
    waba_id: str, last: datetime | None, now: datetime, limit: timedelta
) -> list[Signal]:
    """Monitoring health: a watched WABA that has sent no webhook for longer than ``limit``."""
    labels = {"waba_id": waba_id}
    who = f"WABA {waba_id}"
    if last is not None and now - last <= limit:
        return [_signal("no_webhooks", labels, False, Severity.WARNING, f"{who}: webhooks again")]
    since = f"since {last:%Y-%m-%d %H:%M} UTC" if last else "ever"
    return [
        _signal(
            "no_webhooks",
            labels,
            True,
            Severity.WARNING,
            f"{who}: no webhook {since}",
            "Check the app's subscription (GET /{WABA_ID}/subscribed_apps) and the callback URL.",
        )
    ]


def signature_failures(count: int, window: timedelta, threshold: int) -> list[Signal]:
    """Monitoring health: webhook POSTs refused for a missing or wrong signature. Many at once
    mean a wrong or rotated app secret (Meta's webhooks are being refused) or someone probing."""
    minutes = max(1, round(window.total_seconds() / 60))
    if count < threshold:
        return [
            _signal("signature_failures", {}, False, Severity.CRITICAL, "signatures valid again")
        ]
    return [
        _signal(
            "signature_failures",
            {},
            True,
            Severity.CRITICAL,
            f"{count} webhook POSTs refused for their signature in {minutes} min",
            "Refused webhooks are not stored. If Meta's own are among them, the app secret is "
            "wrong or was rotated: set every app's secret in WAQUALITY_APP_SECRET (comma-"
            "separated). Otherwise someone is posting unsigned or forged requests.",
        )
    ]


def quarantine(open_items: int) -> list[Signal]:
    """Monitoring health: payloads that could not be parsed are waiting to be looked at."""
    if not open_items:
        return [_signal("quarantine", {}, False, Severity.WARNING, "quarantine empty")]
    return [
        _signal(
            "quarantine",
            {},
            True,
            Severity.WARNING,
            f"{open_items} payload part(s) quarantined",
            "See `waquality quarantine`; after a fix, `waquality reprocess` replays them.",
        )
    ]


RULES: tuple[Callable[[Changed], list[Signal]], ...] = (
    phone_quality,
    phone_status,
    flagged_streak,
    phone_health,
    messaging_limit,
    template_status,
    template_quality,
    waba_subscription,
    waba_restriction,
)


def evaluate(changes: list[Changed]) -> list[Signal]:
    """The signals of a batch of changes, in order (a later signal for the same alert wins)."""
    return [signal for change in changes for rule in RULES for signal in rule(change)]


def fingerprint(labels: dict[str, Any]) -> str:
    canonical = "\x1f".join(f"{k}={labels[k]}" for k in sorted(labels))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
