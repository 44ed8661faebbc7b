"""``/metrics`` read from the database at scrape time, against the API's answers; and the example
Grafana dashboard and Prometheus rules in ``docs/``: they load, and every metric they use is in a
live ``/metrics``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from seeded import (
    HOSTILE_TEMPLATE,
    N1,
    N2,
    T_HOSTILE,
    T_PAUSED,
    WABA,
    module_database_url,
    seeded_server,
)

from conftest import API_TOKEN, LiveServer
from waquality.domain.enums import PollState
from waquality.graph.client import Call
from waquality.metrics import QUALITY_VALUE
from waquality.store import watch

DOCS = Path(__file__).resolve().parents[2] / "docs"
__all__ = ["module_database_url", "seeded_server"]  # fixtures used by these tests
METRIC = re.compile(r"\bwaquality_[a-z0-9_]+")


@pytest.fixture(scope="module")
def scraped(seeded_server: LiveServer) -> Iterator[dict[str, list[Any]]]:
    """Samples by name, after a watched WABA was polled (so polling series exist too)."""
    db, now = seeded_server.runtime.db, datetime.now(UTC)
    watch.add(db, WABA, None, now - timedelta(hours=1))
    watch.record_poll(
        db,
        WABA,
        state=PollState.OK,
        now=now,
        next_poll_at=now + timedelta(minutes=5),
        usage_percent=17,
    )
    watch.record_calls(
        db, [Call(WABA, "/phone_numbers", now, 200, None, 0.2), Call(WABA, "/x", now, 500, 1, 1)]
    )
    yield scrape(seeded_server)


def scrape(server: LiveServer) -> dict[str, list[Any]]:
    response = server.client.get("/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert response.status_code == 200
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(response.text):  # also proves it parses
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def one(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    found = [s for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return float(found[0].value)


def test_number_and_template_state_is_the_apis(
    seeded_server: LiveServer, scraped: dict[str, list[Any]]
) -> None:
    for phone in seeded_server.api("/api/v1/phone-numbers")["items"]:
        labels = {"waba_id": phone["waba_id"], "phone_number": phone["display_phone_number"]}
        expected = QUALITY_VALUE.get(phone["quality_rating"] or "", -1.0)
        assert one(scraped, "waquality_phone_number_quality", **labels) == expected
        assert one(scraped, "waquality_phone_number_status", status=phone["status"], **labels) == 1
    for template in seeded_server.api("/api/v1/templates")["items"]:
        labels = {"waba_id": template["waba_id"], "template_id": template["id"]}
        assert one(scraped, "waquality_template_status", status=template["status"], **labels) == 1
        assert one(scraped, "waquality_template_pauses", **labels) == template["pause_count"]
    # text from Meta is a label value, escaped, never a broken exposition
    assert one(scraped, "waquality_template_info", template_id=T_HOSTILE) == 1
    [info] = [s for s in scraped["waquality_template_info"] if s.labels["template_id"] == T_HOSTILE]
    assert info.labels["name"] == HOSTILE_TEMPLATE
    paused_until = one(
        scraped, "waquality_template_paused_until_timestamp_seconds", template_id=T_PAUSED
    )
    assert paused_until > datetime.now(UTC).timestamp()
    due = one(
        scraped, "waquality_phone_number_flagged_due_timestamp_seconds", phone_number=N2.display
    )
    assert due > datetime.now(UTC).timestamp()


def test_alerts_processing_and_polling(
    seeded_server: LiveServer, scraped: dict[str, list[Any]]
) -> None:
    firing = seeded_server.api("/api/v1/alerts", state="firing")
    for severity in ("critical", "warning"):
        count = sum(1 for a in firing if a["severity"] == severity)
        assert one(scraped, "waquality_alerts_firing", severity=severity) == count
    assert one(scraped, "waquality_processing_backlog") == 0
    assert one(scraped, "waquality_processing_lag_seconds") == 0
    status = seeded_server.api("/api/v1/status")
    for field, counts in status["fields"].items():
        assert one(scraped, "waquality_webhook_changes_total", field=field) == counts["changes"]
    assert one(scraped, "waquality_graph_usage_percent", waba_id=WABA) == 17
    assert one(scraped, "waquality_graph_calls_last_hour", waba_id=WABA, outcome="error") == 1
    assert one(scraped, "waquality_poll_state", waba_id=WABA, state="ok") == 1
    assert one(scraped, "waquality_watched_wabas", state="ok") == 1
    # counted where processing runs: not served, where they would read 0
    assert "waquality_duplicate_events_total" not in scraped


def test_response_times_and_delivery_are_the_apis_last_day(
    seeded_server: LiveServer, scraped: dict[str, list[Any]]
) -> None:
    now = datetime.now(UTC)
    since = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    window = {"from": since.isoformat(), "to": (now + timedelta(minutes=1)).isoformat()}
    found = seeded_server.api(
        "/api/v1/response-times", phone_number_id=N1.phone_number_id, **window
    )
    labels = {"phone_number": N1.display, "kind": "first"}
    count = one(scraped, "waquality_response_time_seconds_gcount", **labels)
    assert count == found["first_response"]["count"] > 0
    total = one(scraped, "waquality_response_time_seconds_gsum", **labels)
    assert total == pytest.approx(found["first_response"]["mean"] * count)
    assert one(scraped, "waquality_response_time_seconds_bucket", le="+Inf", **labels) == count
    within = found["first_response"]["within"]["1m"]
    assert one(scraped, "waquality_response_time_seconds_bucket", le="60", **labels) == round(
        within * count
    )
    figures = seeded_server.api("/api/v1/delivery", phone_number_id=N1.phone_number_id, **window)
    for outcome in ("outbound", "sent", "delivered", "read", "failed"):
        shown = one(
            scraped, "waquality_messages_last_24h", phone_number=N1.display, outcome=outcome
        )
        assert shown == figures[outcome], outcome
    for error in figures["errors"]:
        shown = one(
            scraped,
            "waquality_message_errors_last_24h",
            phone_number=N1.display,
            code=str(error["code"]),
        )
        assert shown == error["count"]
    assert (
        one(scraped, "waquality_conversations_waiting", phone_number=N1.display) == found["waiting"]
    )


def expressions(value: Any) -> Iterator[str]:
    """Every ``expr`` anywhere in a loaded document."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in ("expr", "query", "definition") and isinstance(inner, str):
                yield inner
            else:
                yield from expressions(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from expressions(inner)


def missing(exprs: list[str], samples: dict[str, list[Any]]) -> set[str]:
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used, "no waquality metric used"
    return used - set(samples)


def test_the_grafana_dashboard_loads_and_uses_live_metrics(scraped: dict[str, list[Any]]) -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    exprs = list(expressions(dashboard))
    assert missing(exprs, scraped) == set()
    for expr in exprs:  # balanced, as PromQL must be
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


def test_the_prometheus_rules_load_and_use_live_metrics(scraped: dict[str, list[Any]]) -> None:
    path = DOCS / "prometheus-rules.yml"
    rules = yaml.safe_load(path.read_text())
    found = [rule for group in rules["groups"] for rule in group["rules"]]
    assert found and all(group["name"] for group in rules["groups"])
    for rule in found:
        assert re.match(r"^[A-Z][A-Za-z]+$", rule["alert"]), rule
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"]
        assert re.match(r"^\d+[smh]$", rule.get("for", "0s")), rule
    exprs = [rule["expr"] for rule in found]
    assert missing(exprs, scraped) == set()
    promtool = shutil.which("promtool")
    if promtool:  # the full check, where Prometheus's own tool is installed
        result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True)
        assert result.returncode == 0, result.stdout + result.stderr
