"""Alerts from state changes, the outbox and its delivery to a real local receiver."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from builders import entry, envelope, template_status
from conftest import API_TOKEN, DATA, SECRET, make_settings, run_server, webhook
from receiver import Receiver, receiving
from waquality.alerting.book import Alerting, add_silence, alerts, expire_silence
from waquality.alerting.channels import channels, receiver_name
from waquality.alerting.dispatch import Dispatcher, HealthChecks
from waquality.alerting.event_rules import configured_rules
from waquality.config import load_settings
from waquality.errors import ConfigError
from waquality.process.worker import Processor
from waquality.store import inbox, schema, watch
from waquality.store.database import Database

T0 = 1_772_000_000
NOW = datetime(2026, 3, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def process(db: Database, alerting: Alerting, *bodies: dict[str, Any], clock: Clock) -> int:
    with db.write(priority=True) as conn:
        inbox.insert_bodies(conn, [inbox.Body(envelope(b), clock.now) for b in bodies])
    return Processor(db, clock=clock, alerting=alerting).drain().notifications


def outbox(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(select(schema.notifications).order_by(schema.notifications.c.id))
        return [dict(r._mapping) for r in rows]


@contextmanager
def delivery(db: Database, *urls: str, clock: Clock) -> Iterator[tuple[Alerting, Dispatcher]]:
    receivers = channels(list(urls))
    dispatcher = Dispatcher(db, receivers, clock=clock)
    try:
        yield Alerting(tuple(receivers), "https://waq.example"), dispatcher
    finally:
        dispatcher.close()


def test_a_paused_template_fires_once_and_resolves_once(db: Database) -> None:
    clock = Clock()
    with receiving(Receiver()) as r, delivery(db, f"json://{r.url}/hook", clock=clock) as (al, d):
        assert process(db, al, template_status(7, "APPROVED", T0), clock=clock) == 0
        paused = template_status(7, "PAUSED", T0 + 60, title="FIRST_PAUSE")
        assert process(db, al, paused, clock=clock) == 1
        assert process(db, al, paused, clock=clock) == 0  # redelivered: nothing new
        # an older fact, delivered late, changes no current value: no notification
        assert process(db, al, template_status(7, "REJECTED", T0 + 30), clock=clock) == 0
        assert d.run_once() == 1
        [fired] = r.wait(1)
        assert fired.body["title"].startswith("[CRITICAL] template template_7")
        assert "APPROVED → PAUSED" in fired.body["title"]
        assert "Pause number 1" in fired.body["message"]
        assert fired.headers["idempotency-key"] == outbox(db)[0]["idempotency_key"]
        assert process(db, al, template_status(7, "APPROVED", T0 + 4000), clock=clock) == 1
        assert d.run_once() == 1
        resolved = r.wait(2)[1]
        assert (
            resolved.body["title"].startswith("[RESOLVED]") and resolved.body["type"] == "success"
        )
        assert d.run_once() == 0  # nothing is sent twice
    [alert] = alerts(db)
    assert alert["state"] == "resolved" and alert["labels"]["template_id"] == "7"
    assert [n["status"] for n in outbox(db)] == ["firing", "resolved"]
    assert {n["state"] for n in outbox(db)} == {"sent"}


def test_escalation_notifies_again_but_repeats_do_not(db: Database) -> None:
    clock = Clock()
    quality = "message_template_quality_update"

    def score(new: str, at: int) -> dict[str, Any]:
        value = {"message_template_id": 9, "new_quality_score": new, "previous_quality_score": ""}
        return entry(quality, value, time=at)

    with delivery(db, "json://127.0.0.1:9/unused", clock=clock) as (al, _):
        assert process(db, al, template_status(9, "APPROVED", T0), clock=clock) == 0
        assert process(db, al, template_status(9, "FLAGGED", T0 + 1), clock=clock) == 1
        assert process(db, al, score("YELLOW", T0 + 2), clock=clock) == 1
        assert process(db, al, score("RED", T0 + 3), clock=clock) == 0  # same rule, same severity
    states = {a["rule"]: (a["state"], a["severity"]) for a in alerts(db)}
    assert states == {
        "template_status": ("firing", "warning"),
        "template_quality": ("firing", "warning"),
    }


def test_a_receiver_that_is_down_gets_everything_later_exactly_once(db: Database) -> None:
    clock = Clock()
    with (
        receiving(Receiver(refuse=3)) as r,
        delivery(db, f"webhook+http://{r.url}/alerts", clock=clock) as (al, d),
    ):
        process(
            db,
            al,
            template_status(1, "APPROVED", T0),
            template_status(2, "APPROVED", T0),
            clock=clock,
        )
        process(
            db,
            al,
            template_status(1, "DISABLED", T0 + 10),
            template_status(2, "PAUSED", T0 + 10, title="FIRST_PAUSE"),
            clock=clock,
        )
        assert d.run_once() == 0  # two refusals
        assert {n["attempts"] for n in outbox(db)} == {1}
        assert d.run_once() == 0  # not due yet: backoff
        clock.now += timedelta(seconds=1)
        assert d.run_once() == 1  # third refusal, then one accepted
        clock.now += timedelta(seconds=2)
        assert d.run_once() == 1
        clock.now += timedelta(minutes=10)
        assert d.run_once() == 0
        received = r.wait(2)
    assert len(received) == 2 and r.refused == 3
    keys = {x.headers["idempotency-key"] for x in received}
    assert keys == {n["idempotency_key"] for n in outbox(db)}
    bodies = sorted(
        (x.body for x in received), key=lambda b: b["alerts"][0]["labels"]["template_id"]
    )
    assert [b["alerts"][0]["labels"]["template_id"] for b in bodies] == ["1", "2"]
    assert bodies[0]["alerts"][0]["labels"]["severity"] == "critical"
    assert bodies[0]["status"] == "firing" and bodies[0]["alerts"][0]["fingerprint"]
    assert all(n["state"] == "sent" for n in outbox(db))


def test_a_receiver_down_for_good_is_recorded_as_failed(db: Database) -> None:
    clock = Clock()
    with delivery(db, "webhook+http://127.0.0.1:9/nowhere", clock=clock) as (al, d):
        process(db, al, template_status(3, "APPROVED", T0), clock=clock)
        process(db, al, template_status(3, "PAUSED", T0 + 5, title="FIRST_PAUSE"), clock=clock)
        d.give_up_after = timedelta(minutes=30)
        for _ in range(20):
            d.run_once()
            clock.now += timedelta(minutes=5)
    [notification] = outbox(db)
    assert notification["state"] == "failed" and notification["last_error"]
    assert notification["attempts"] >= 7


def test_serve_delivers_a_critical_alert_end_to_end(database_url: str) -> None:
    with receiving(Receiver()) as r:
        settings = make_settings(database_url, alert_urls=f"json://{r.url}/hook")
        for live in run_server(settings):
            for body in (
                envelope(template_status(5, "APPROVED", T0)),
                envelope(template_status(5, "PAUSED", T0 + 1, title="FIRST_PAUSE")),
            ):
                assert live.post_webhook(body).status_code == 200
            [note] = r.wait(1, timeout=20)
            assert note.body["title"].startswith("[CRITICAL]")
            firing = live.api("/api/v1/alerts", state="firing")
            assert [a["rule"] for a in firing] == ["template_status"]
            assert live.api("/api/v1/status")["alerts_firing"] == {"critical": 1}
            log = live.client.get(
                "/api/v1/notifications", headers={"Authorization": f"Bearer {API_TOKEN}"}
            ).json()
            assert log[0]["receiver"].startswith("json-") and "127.0.0.1" not in str(log)


def account_restricted(at: int) -> dict[str, Any]:
    value = {
        "event": "ACCOUNT_RESTRICTION",
        "restriction_info": [
            {
                "restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING",
                "expiration": at + 86_400,
            }
        ],
    }
    return entry("account_update", value, time=at)


def test_silences_and_inhibition_mute_notifications_not_alerts(db: Database) -> None:
    clock = Clock()
    with delivery(db, "json://127.0.0.1:9/unused", clock=clock) as (al, _):
        process(
            db,
            al,
            template_status(1, "APPROVED", T0),
            template_status(2, "APPROVED", T0),
            clock=clock,
        )
        silence = add_silence(db, {"template_id": "1"}, "known", NOW + timedelta(hours=1), NOW)
        assert process(db, al, template_status(1, "PAUSED", T0 + 5), clock=clock) == 0
        # a restricted account mutes the other alerts of its WABA, but is itself notified
        assert process(db, al, account_restricted(T0 + 10), clock=clock) == 1
        assert process(db, al, template_status(2, "DISABLED", T0 + 20), clock=clock) == 0
        assert expire_silence(db, silence["id"], NOW) is True
        assert expire_silence(db, silence["id"], NOW) is False
        # resolving an alert whose firing was never notified tells nobody
        assert process(db, al, template_status(1, "APPROVED", T0 + 30), clock=clock) == 0
    firing = {a["rule"]: a for a in alerts(db, "firing")}
    assert set(firing) == {"template_status", "account_restricted"}
    assert firing["template_status"]["labels"]["template_id"] == "2"
    assert [n["fingerprint"] for n in outbox(db)] == [firing["account_restricted"]["fingerprint"]]


def test_a_firing_alert_is_repeated_after_the_repeat_interval(db: Database) -> None:
    clock = Clock()
    with delivery(db, "json://127.0.0.1:9/unused", clock=clock) as (al, d):
        d.repeat_interval = timedelta(hours=4)
        process(db, al, template_status(4, "APPROVED", T0), clock=clock)
        assert process(db, al, template_status(4, "PAUSED", T0 + 5), clock=clock) == 1
        d.run_once()
        clock.now += timedelta(hours=3)
        d._next_repeat_check = None
        d.run_once()
        assert len(outbox(db)) == 1
        clock.now += timedelta(hours=1, minutes=1)
        d._next_repeat_check = None
        d.run_once()
        notes = outbox(db)
        assert len(notes) == 2 and notes[1]["payload"]["repeat"] is True
        assert notes[0]["idempotency_key"] != notes[1]["idempotency_key"]
        process(db, al, template_status(4, "APPROVED", T0 + 99_000), clock=clock)
        clock.now += timedelta(hours=5)
        d._next_repeat_check = None
        d.run_once()
    assert [n["status"] for n in outbox(db)] == ["firing", "firing", "resolved"]


def test_monitoring_health_quarantine_and_silent_wabas(db: Database) -> None:
    clock = Clock()
    waba = "102290129340398"  # the WABA of the builders' payloads
    with delivery(db, "json://127.0.0.1:9/unused", clock=clock) as (al, d):
        d.alerting, d.health = al, HealthChecks(webhook_silence=timedelta(hours=1))
        watch.ensure_configured(db, [waba], NOW)
        process(db, al, template_status(1, "APPROVED", T0), clock=clock)  # heard at NOW
        with db.write(priority=True) as conn:
            inbox.insert_bodies(conn, [inbox.Body(b"{not json", NOW)])
        Processor(db, clock=clock, alerting=al).drain()
        d.run_once()
        assert {a["rule"] for a in alerts(db, "firing")} == {"quarantine"}
        clock.now += timedelta(hours=2)
        d._next_repeat_check = None
        d.run_once()
        firing = {a["rule"]: a for a in alerts(db, "firing")}
        assert set(firing) == {"quarantine", "no_webhooks"}
        assert firing["no_webhooks"]["labels"]["waba_id"] == waba
        assert "1 payload part(s) quarantined" in firing["quarantine"]["summary"]
        with db.write() as conn:  # the WABA speaks again; the quarantined part is dealt with
            conn.execute(
                update(schema.wabas)
                .where(schema.wabas.c.id == waba)
                .values(last_webhook_at=clock.now)
            )
            conn.execute(update(schema.quarantine).values(resolved_at=clock.now))
        clock.now += timedelta(minutes=2)
        d.run_once()
    assert alerts(db, "firing") == []


def test_warnings_are_grouped_and_critical_alerts_go_at_once(db: Database) -> None:
    clock = Clock()

    def yellow(template_id: int, at: int) -> dict[str, Any]:
        value = {"message_template_id": template_id, "new_quality_score": "YELLOW"}
        return entry("message_template_quality_update", value, time=at)

    with (
        receiving(Receiver()) as r,
        delivery(db, f"webhook+http://{r.url}/alerts", clock=clock) as (al, d),
    ):
        process(db, al, *(template_status(i, "APPROVED", T0) for i in range(1, 6)), clock=clock)
        process(db, al, yellow(1, T0 + 1), yellow(2, T0 + 2), clock=clock)
        process(db, al, template_status(5, "PAUSED", T0 + 3), clock=clock)
        clock.now += timedelta(seconds=10)
        process(db, al, yellow(3, T0 + 4), clock=clock)
        assert d.run_once() == 1  # the critical one, alone and at once
        [critical] = r.wait(1)
        assert [a["labels"]["rule"] for a in critical.body["alerts"]] == ["template_status"]
        clock.now = NOW + timedelta(seconds=31)
        assert d.run_once() == 3  # group_wait over: the three warnings in one message
        grouped = r.wait(2)[1].body
        assert sorted(a["labels"]["template_id"] for a in grouped["alerts"]) == ["1", "2", "3"]
        assert grouped["commonLabels"] == {
            "rule": "template_quality",
            "waba_id": "102290129340398",
            "severity": "warning",
        }
        process(db, al, yellow(4, T0 + 5), clock=clock)
        clock.now += timedelta(minutes=1)
        assert d.run_once() == 0  # the group spoke less than group_interval ago
        clock.now = NOW + timedelta(seconds=31) + timedelta(minutes=5)
        assert d.run_once() == 1
        assert [a["labels"]["template_id"] for a in r.wait(3)[2].body["alerts"]] == ["4"]


def test_routes_send_by_labels_and_severity(db: Database) -> None:
    clock = Clock()
    with receiving(Receiver()) as pager, receiving(Receiver()) as chat:
        urls = {"pager": f"webhook+http://{pager.url}/p", "chat": f"webhook+http://{chat.url}/c"}
        receivers = channels(list(urls.values()))
        name = {k: receiver_name(v) for k, v in urls.items()}
        al = Alerting(
            (name["chat"],),
            group_wait=timedelta(0),
            routes=(
                ({"severity": "critical"}, (name["pager"],), True),
                ({"rule": "template_status"}, (name["chat"],), False),
            ),
        )
        dispatcher = Dispatcher(db, receivers, clock=clock)
        try:
            process(
                db,
                al,
                template_status(1, "APPROVED", T0),
                template_status(2, "APPROVED", T0),
                clock=clock,
            )
            process(db, al, template_status(1, "PAUSED", T0 + 1), clock=clock)  # critical: both
            process(db, al, template_status(2, "REJECTED", T0 + 2), clock=clock)  # warning: chat
            quality = {"message_template_id": 3, "new_quality_score": "YELLOW"}
            process(
                db, al, entry("message_template_quality_update", quality, time=T0 + 3), clock=clock
            )
            dispatcher.run_once()
        finally:
            dispatcher.close()
        paged = [a["labels"]["template_id"] for x in pager.wait(1) for a in x.body["alerts"]]
        chatted = sorted(a["labels"]["template_id"] for x in chat.wait(3) for a in x.body["alerts"])
    assert paged == ["1"]
    assert chatted == ["1", "2", "3"]  # the last one by default: no route matched it


def process_raw(db: Database, al: Alerting, *bodies: bytes, clock: Clock) -> int:
    with db.write(priority=True) as conn:
        inbox.insert_bodies(conn, [inbox.Body(b, clock.now) for b in bodies])
    return Processor(db, clock=clock, alerting=al).drain().notifications


def test_account_events_alert_and_account_alerts_resolve(db: Database) -> None:
    clock = Clock()
    critical = json.loads(webhook("account_alerts/phone_number_critical_oba_rejected.json"))
    inactive = copy.deepcopy(critical)
    inactive["entry"][0]["time"] += 3600
    inactive["entry"][0]["changes"][0]["value"]["alert_info"]["alert_status"] = "INACTIVE"
    with delivery(db, "json://127.0.0.1:9/unused", clock=clock) as (al, _):
        assert process_raw(db, al, json.dumps(critical).encode(), clock=clock) == 1
        assert (
            process_raw(db, al, webhook("account_update/account_violation.json"), clock=clock) == 1
        )
        assert process_raw(db, al, webhook("account_update/partner_removed.json"), clock=clock) == 1
        assert (
            process_raw(
                db,
                al,
                webhook("account_alerts/phone_number_informational_oba_approved.json"),
                clock=clock,
            )
            == 0
        )
        assert process_raw(db, al, json.dumps(inactive).encode(), clock=clock) == 1
    by_rule = {a["rule"]: a for a in alerts(db)}
    assert by_rule["account_alert_critical"]["state"] == "resolved"
    assert by_rule["account_alert_critical"]["labels"]["alert_info.alert_type"] == "OBA_REJECTED"
    assert (
        "OBA_REJECTED (PHONE_NUMBER 106540352242922)"
        in by_rule["account_alert_critical"]["summary"]
    )
    assert by_rule["account_violation"]["state"] == "firing"
    assert by_rule["account_violation"]["summary"].endswith("policy violation ADULT")
    assert by_rule["partner_removed"]["severity"] == "critical"


def test_rules_from_the_config_file(db: Database, tmp_path: Path) -> None:
    config = tmp_path / "waquality.toml"
    config.write_text(
        """
[[alert_rules]]
name = "capability_down"
field = "business_capability_update"
match = { "max_daily_conversations_per_business" = "TIER_250|TIER_2K" }
resolve = { "max_daily_conversations_per_business" = "TIER_10K|TIER_100K|TIER_UNLIMITED" }
severity = "critical"
summary = "portfolio limit now {max_daily_conversations_per_business}"
labels = { team = "growth" }
"""
    )
    settings = load_settings({"WAQUALITY_CONFIG": str(config)})
    clock = Clock()
    limit = "max_daily_conversations_per_business"
    with delivery(db, "json://127.0.0.1:9/unused", clock=clock) as (al, _):
        al = dataclasses.replace(al, event_rules=configured_rules(settings))
        down = entry("business_capability_update", {limit: "TIER_250"}, time=T0)
        up = entry("business_capability_update", {limit: "TIER_10K"}, time=T0 + 60)
        assert process(db, al, down, clock=clock) == 1
        assert process(db, al, up, clock=clock) == 1
    [alert] = [a for a in alerts(db) if a["rule"] == "capability_down"]
    assert alert["labels"]["team"] == "growth" and alert["state"] == "resolved"
    assert alert["severity"] == "critical"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[alert_rules]]\nname = "Bad Name"\nfield = "x"\nmatch = {}\nsummary = ""\n')
    with pytest.raises(ConfigError, match="alert_rules"):
        load_settings({"WAQUALITY_CONFIG": str(bad)})


def test_an_alert_that_fires_and_resolves_within_one_batch_is_kept_and_told(db: Database) -> None:
    """A backlog (after downtime, or a replay) can hold a pause and its end in one batch: the
    alert is recorded as fired and resolved, and both are told, in order."""
    clock = Clock()
    with receiving(Receiver()) as r, delivery(db, f"json://{r.url}/hook", clock=clock) as (al, d):
        process(db, al, template_status(8, "APPROVED", T0), clock=clock)
        paused = template_status(8, "PAUSED", T0 + 60, title="FIRST_PAUSE")
        back = template_status(8, "APPROVED", T0 + 3 * 3600)
        assert process(db, al, paused, back, clock=clock) == 2
        [alert] = [a for a in alerts(db) if a["labels"].get("template_id") == "8"]
        assert alert["state"] == "resolved"
        assert alert["started_at"] == datetime.fromtimestamp(T0 + 60, UTC)
        assert alert["resolved_at"] == datetime.fromtimestamp(T0 + 3 * 3600, UTC)
        assert [n["status"] for n in outbox(db)] == ["firing", "resolved"]
        assert d.run_once() == 2
        told = r.wait(2)
        assert "PAUSED" in told[0].body["title"] and "[RESOLVED]" in told[1].body["title"]


def test_one_batch_resolves_escalates_and_fires_several_alerts(db: Database) -> None:
    """Alerts of one batch are written together: each keeps its own last step, and only a
    resolution whose firing was told is told."""
    clock = Clock()
    with delivery(db, "json://127.0.0.1:9/unused", clock=clock) as (al, _):
        setup = [template_status(t, "APPROVED", T0) for t in (1, 2, 3, 4)]
        process(db, al, *setup, clock=clock)
        told = [template_status(1, "PAUSED", T0 + 10), template_status(2, "FLAGGED", T0 + 10)]
        assert process(db, al, *told, clock=clock) == 2
        hour = clock.now + timedelta(hours=1)
        silence = add_silence(db, {"template_id": "4"}, "known", hour, clock.now)
        assert process(db, al, template_status(4, "PAUSED", T0 + 20), clock=clock) == 0
        assert expire_silence(db, silence["id"], clock.now)
        clock.now += timedelta(minutes=1)
        batch = [
            template_status(1, "APPROVED", T0 + 100),  # resolves: its firing was told
            template_status(2, "PAUSED", T0 + 100),  # escalates
            template_status(3, "PAUSED", T0 + 100),  # fires, new
            template_status(4, "APPROVED", T0 + 100),  # resolves: its firing was never told
        ]
        assert process(db, al, *batch, clock=clock) == 3
    found = {
        (a["rule"], a["labels"]["template_id"]): (a["state"], a["severity"], a["updated_at"])
        for a in alerts(db)
    }
    later = clock.now
    assert found == {
        ("template_status", "1"): ("resolved", "critical", later),
        ("template_status", "2"): ("firing", "critical", later),
        ("template_status", "3"): ("firing", "critical", later),
        ("template_status", "4"): ("resolved", "critical", later),
    }
    last = [(n["fingerprint"], n["status"]) for n in outbox(db)][-3:]
    fingerprints = {a["labels"]["template_id"]: a["fingerprint"] for a in alerts(db)}
    assert sorted(last) == sorted(
        [
            (fingerprints["1"], "resolved"),
            (fingerprints["2"], "firing"),
            (fingerprints["3"], "firing"),
        ]
    )


def test_a_separate_worker_queues_notifications_for_the_configured_receivers(
    database_url: str, tmp_path: Path
) -> None:
    """``waquality worker`` (no HTTP server, no dispatcher) raises the alerts ``serve`` would,
    for the same receivers: a ``serve`` process's dispatcher then sends them."""
    url = "json://127.0.0.1:9/hook"
    db = Database(database_url)
    try:
        with db.write(priority=True) as conn:
            bodies = (
                envelope(template_status(5, "APPROVED", T0)),
                envelope(template_status(5, "PAUSED", T0 + 1, title="FIRST_PAUSE")),
            )
            inbox.insert_bodies(conn, [inbox.Body(b, NOW) for b in bodies])
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("WAQUALITY_")},
            "WAQUALITY_DATABASE_URL": database_url,
            "WAQUALITY_CONFIG": str(DATA / "empty.toml"),
            "WAQUALITY_APP_SECRET": SECRET,
            "WAQUALITY_API_TOKEN": API_TOKEN,
            "WAQUALITY_ALERT_URLS": url,
            "WAQUALITY_LOG_LEVEL": "WARNING",
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "waquality", "worker"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while not outbox(db) and worker.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            worker.terminate()
            output = worker.communicate(timeout=30)[0].decode()
        assert worker.returncode == 0, output
        [note] = outbox(db)
        assert note["receiver"] == receiver_name(url) and note["state"] == "pending"
        assert note["payload"]["severity"] == "critical"
    finally:
        db.dispose()
