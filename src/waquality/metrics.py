"""Process metrics in Prometheus form (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WEBHOOK_REQUESTS = Counter(
    "waquality_webhook_requests",
    "Webhook POSTs by outcome (accepted, unsigned, bad_signature, too_large, unavailable, "
    "bad_request, unauthorized).",
    ["result"],
)
WEBHOOK_CHANGES = Counter(
    "waquality_webhook_changes", "Changes processed, by webhook field.", ["field"]
)
EVENTS = Counter("waquality_events", "Typed events created (duplicates excluded).")
DUPLICATES = Counter("waquality_duplicate_events", "Redelivered changes dropped as duplicates.")
QUARANTINED = Counter("waquality_quarantined", "Payload parts quarantined as unparseable.")
PROCESSING_LAG = Histogram(
    "waquality_processing_lag_seconds",
    "From acknowledgement to processing of a webhook body.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
