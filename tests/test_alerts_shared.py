"""Alerting beyond one alert: silences that end, quiet replays, refused signatures, and several
dispatchers and pollers sharing one database."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from builders import envelope, template_status
from conftest import API_TOKEN, make_settings, run_server, signed_headers
from receiver import Receiver, receiving
from test_alerts import NOW, T0, Clock, account_restricted, delivery, outbox, process
from test_poller import Clock as PollClock
from test_poller import make_poller
from waquality.alerting.book import Alerting, add_silence, alerts, expire_silence
from waquality.alerting.channels import channels
from waquality.alerting.dispatch import Dispatcher, HealthChecks
from waquality.graph.fake import FakeGraph, Scenario, serve
from waquality.ingest.rejections import Rejections, signature_failures
from waquality.process.worker import Processor
from waquality.store import inbox, schema, watch
from waquality.store.database import Database


def check_now(d: Dispatcher) -> int:
    """Run the dispatcher with its once-a-minute checks (health, repeats) due."""
    d._next_repeat_check = None
    return d.run_once()


def test_an_alert_silenced_when_it_fired_is_told_once_the_silence_ends(db: Database) -> None:
    clock = Clock()
    with receiving(Receiver()) as r, delivery(db, f"json://{r.url}/hook", clock=clock) as (al, d):
        d.alerting = al
        process(db, al, template_status(1, "APPROVED", T0), clock=clock)
        silence = add_silence(db, {"template_id": "1"}, "deploy", NOW + timedelta(hours=1), NOW)
        assert process(db, al, template_status(1, "PAUSED", T0 + 5), clock=clock) == 0
        assert check_now(d) == 0  # still silenced
        clock.now += timedelta(minutes=10)
        assert expire_silence(db, silence["id"], clock.now)
        assert check_now(d) == 1
        [told] = r.wait(1)
        assert told.body["title"].startswith("[CRITICAL] template template_1")
        assert check_now(d) == 0 and d.run_once() == 0  # told once
        assert process(db, al, template_status(1, "APPROVED", T0 + 900), clock=clock) == 1
        assert d.run_once() == 1
        assert r.wait(2)[1].body["title"].startswith("[RESOLVED]")
    assert [(n["status"], n["state"]) for n in outbox(db)] == [
        ("firing", "sent"),
        ("resolved", "sent"),
    ]


def test_an_inhibited_alert_is_told_when_its_inhibitor_resolves(db: Database) -> None:
    clock = Clock()
    with delivery(db, "json://127.0.0.1:9/unused", clock=clock) as (al, d):
        d.alerting = al
        process(db, al, template_status(2, "APPROVED", T0), clock=clock)
        assert process(db, al, account_restricted(T0 + 10), clock=clock) == 1
        assert process(db, al, template_status(2, "DISABLED", T0 + 20), clock=clock) == 0
        check_now(d)
        assert {n["status"] for n in outbox(db)} == {"firing"} and len(outbox(db)) == 1
        with db.write() as conn:  # the restriction is lifted
            conn.execute(
                schema.alerts.update()
                .where(schema.alerts.c.rule == "account_restricted")
                .values(state="resolved", resolved_at=clock.now)
            )
        check_now(d)
    template = [a for a in alerts(db) if a["rule"] == "template_status"]
    assert [n["fingerprint"] for n in outbox(db)][-1] == template[0]["fingerprint"]


def quiet_process(db: Database, al: Alerting, *bodies: dict[str, Any], clock: Clock) -> int:
    with db.write(priority=True) as conn:
        inbox.insert_bodies(conn, [inbox.Body(envelope(b), clock.now, True) for b in bodies])
    return Processor(db, clock=clock, alerting=al).drain().notifications


def test_a_quiet_replay_changes_state_and_alerts_but_tells_nobody(db: Database) -> None:
    clock = Clock()
    with delivery(db, "json://127.0.0.1:9/unused", clock=clock) as (al, d):
        d.alerting = al
        quiet_process(db, al, template_status(3, "APPROVED", T0), clock=clock)
        assert quiet_process(db, al, template_status(3, "PAUSED", T0 + 5), clock=clock) == 0
        [alert] = alerts(db, "firing")
        assert alert["labels"]["template_id"] == "3"
        check_now(d)
        assert outbox(db) == []  # not told later either: it counts as told
        # live traffic in the same batch as a quiet body still notifies
        with db.write(priority=True) as conn:
            inbox.insert_bodies(
                conn,
                [
                    inbox.Body(envelope(template_status(4, "APPROVED", T0)), clock.now, True),
                    inbox.Body(envelope(template_status(4, "DISABLED", T0 + 9)), clock.now),
                ],
            )
        assert Processor(db, clock=clock, alerting=al).drain().notifications == 1
        # a loud resolution of an alert nobody was told of tells nobody either
        assert process(db, al, template_status(3, "APPROVED", T0 + 99), clock=clock) == 0
        # after the repeat interval a quietly fired alert still firing is a reminder like any
        quiet_process(db, al, template_status(5, "PAUSED", T0 + 7), clock=clock)
        clock.now += timedelta(hours=5)
        check_now(d)
    repeats = [n for n in outbox(db) if n["payload"].get("repeat")]
    assert {n["payload"]["labels"]["template_id"] for n in repeats} == {"4", "5"}
    with db.read() as conn:
        rows = conn.execute(select(schema.templates.c.id, schema.templates.c.status))
        assert {row.id: row.status for row in rows}["3"] == "APPROVED"


def test_quiet_posts_need_the_api_token(database_url: str) -> None:
    settings = make_settings(database_url)
    body = envelope(template_status(6, "PAUSED", T0))
    for live in run_server(settings):
        path = "/webhooks/whatsapp"
        refused = live.client.post(f"{path}?quiet=1", content=body, headers=signed_headers(body))
        assert refused.status_code == 401 and b"API token" in refused.content
        wrong = {**signed_headers(body), "Authorization": "Bearer nope"}
        assert live.client.post(f"{path}?quiet=1", content=body, headers=wrong).status_code == 401
        odd = live.client.post(f"{path}?quiet=maybe", content=body, headers=signed_headers(body))
        assert odd.status_code == 400
        auth = {**signed_headers(body), "Authorization": f"Bearer {API_TOKEN}"}
        assert live.client.post(f"{path}?quiet=1", content=body, headers=auth).status_code == 200
        unsigned = {"Authorization": f"Bearer {API_TOKEN}"}  # the token never replaces the HMAC
        assert (
            live.client.post(f"{path}?quiet=1", content=body, headers=unsigned).status_code == 401
        )
        assert live.post_webhook(body).status_code == 200
        with live.runtime.db.read() as conn:
            stored = conn.execute(select(schema.raw_webhooks.c.quiet).order_by("id")).scalars()
            assert list(stored) == [True, False]


def test_refused_signatures_are_counted_for_every_process(database_url: str) -> None:
    settings = make_settings(database_url)
    body = envelope(template_status(6, "PAUSED", T0))
    for live in run_server(settings):
        for _ in range(3):
            live.client.post("/webhooks/whatsapp", content=body, headers=signed_headers(body, "x"))
        live.client.post("/webhooks/whatsapp", content=body)
        db = live.runtime.db
        live.runtime.rejections.flush(db)
        assert signature_failures(db, live.runtime.clock() - timedelta(minutes=1)) == 4


def test_a_spike_of_refused_signatures_fires_and_then_resolves(db: Database) -> None:
    clock = Clock()
    tally = Rejections()
    with receiving(Receiver()) as r, delivery(db, f"json://{r.url}/hook", clock=clock) as (al, d):
        d.alerting = al
        d.health = HealthChecks(signature_threshold=5, signature_window=timedelta(minutes=5))
        for i in range(4):
            tally.add("bad_signature", clock.now + timedelta(seconds=i))
        tally.add("too_large", clock.now)  # not a signature failure
        tally.flush(db)
        assert check_now(d) == 0 and alerts(db, "firing") == []
        tally.add("unsigned", clock.now + timedelta(seconds=30))
        tally.flush(db)
        assert check_now(d) == 1
        [fired] = r.wait(1)
        assert "5 webhook POSTs refused" in fired.body["title"]
        assert "WAQUALITY_APP_SECRET" in fired.body["message"]
        clock.now += timedelta(minutes=7)
        assert check_now(d) == 1
        assert r.wait(2)[1].body["title"].startswith("[RESOLVED]")


def run_together(*steps: Callable[[], object]) -> None:
    """Run the steps at the same moment in threads; re-raise the first failure."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(steps))

    def run(step: Callable[[], object]) -> None:
        try:
            start.wait()
            step()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in steps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]


def test_two_dispatchers_on_one_database_send_each_notification_once(db: Database) -> None:
    clock = Clock()
    count = 40
    with receiving(Receiver()) as r:
        url = f"webhook+http://{r.url}/alerts"
        al = Alerting(tuple(channels([url])))
        process(db, al, *(template_status(i, "APPROVED", T0) for i in range(count)), clock=clock)
        paused = [template_status(i, "PAUSED", T0 + 9) for i in range(count)]
        assert process(db, al, *paused, clock=clock) == count  # critical: each alone
        first, second = (Dispatcher(db, channels([url]), clock=clock) for _ in range(2))

        def drain(d: Dispatcher) -> None:
            for _ in range(count):
                d.run_once()

        try:
            run_together(lambda: drain(first), lambda: drain(second))
        finally:
            first.close()
            second.close()
    told = [a["labels"]["template_id"] for m in r.received for a in m.body["alerts"]]
    assert sorted(told) == sorted(str(i) for i in range(count))
    assert {n["state"] for n in outbox(db)} == {"sent"}


def test_two_pollers_on_one_database_read_each_waba_once_per_round(db: Database) -> None:
    clock = PollClock()
    scenario = Scenario.generate(wabas=4, phones=3, templates=10, seed=3)
    fake = FakeGraph(scenario, clock=lambda: clock.now.timestamp())
    with serve(fake) as url:
        pollers = [make_poller(db, url, clock, scenario) for _ in range(2)]
        for poller in pollers:
            assert poller.start() == []
        try:
            run_together(*(p.tick for p in pollers))
        finally:
            for poller in pollers:
                poller.close()
    for waba_id in scenario.wabas:
        reads = [c for c in fake.calls_for(waba_id) if c.path.endswith("/phone_numbers")]
        assert len(reads) == 1, waba_id
    assert {w.poll_state.value for w in watch.watched(db)} == {"ok"}
