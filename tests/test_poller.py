"""The poller against the project's fake Graph API, over real HTTP, on a real database."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from builders import entry, envelope, template_status
from conftest import make_settings
from waquality.alerting.book import alerts
from waquality.domain.enums import PollState, Source, WatchOrigin
from waquality.graph.client import GraphClient
from waquality.graph.fake import FakeGraph, Fault, Scenario, serve
from waquality.graph.poller import Poller, WabaReport
from waquality.process.worker import Processor
from waquality.store import inbox, schema, watch
from waquality.store.database import Database

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Rig:
    db: Database
    fake: FakeGraph
    scenario: Scenario
    clock: Clock
    url: str
    poller: Poller

    def round(self) -> dict[str, WabaReport]:
        """Poll every watched WABA now, whatever its schedule."""
        return {w.waba_id: self.poller.poll(w) for w in watch.watched(self.db)}


def make_poller(
    db: Database, url: str, clock: Clock, scenario: Scenario, **settings: str
) -> Poller:
    values = {"graph_url": url, "waba_ids": ",".join(scenario.wabas), **settings}
    config = make_settings(_url(db), **values).model_copy(
        update={"access_tokens": {w.id: SecretStr(w.token) for w in scenario.wabas.values()}}
    )
    client = GraphClient(url, "v24.0", timeout=2.0, sleep=lambda _: None)
    return Poller(db, config, client=client, clock=clock, rng=random.Random(1))


@pytest.fixture
def rig(db: Database) -> Iterator[Rig]:
    clock = Clock()
    scenario = Scenario.generate(wabas=3, phones=25, templates=250, seed=7)
    fake = FakeGraph(scenario, clock=lambda: clock.now.timestamp())
    with serve(fake) as url:
        poller = make_poller(db, url, clock, scenario)
        assert poller.start() == []
        yield Rig(db, fake, scenario, clock, url, poller)
        poller.close()


def _url(db: Database) -> str:
    return db.url.render_as_string(hide_password=False)


def table(db: Database, t: Any, *where: Any) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(select(t).where(*where))]


def poll_history(db: Database) -> set[tuple[str, str, str | None, str | None]]:
    h = schema.history
    return {
        (r["subject_key"], r["field"], r["old_value"], r["new_value"])
        for r in table(db, h, h.c.source == Source.POLL.value, h.c.old_value.is_not(None))
    }


def phone_key(db: Database, phone_id: str) -> str:
    [row] = table(db, schema.phone_numbers, schema.phone_numbers.c.phone_number_id == phone_id)
    return str(row["key"])


def test_first_round_reads_every_number_template_and_subscription(rig: Rig) -> None:
    reports = rig.round()
    assert set(reports) == set(rig.scenario.wabas)
    for report in reports.values():
        assert (report.state, report.error) == (PollState.OK, None)
        assert (report.phones, report.templates) == (25, 250)
        assert report.calls == 5  # one page of numbers, three of templates, the subscription
    phones = table(rig.db, schema.phone_numbers)
    templates = table(rig.db, schema.templates)
    assert len(phones) == 75 and len(templates) == 750
    assert {p["confirmed_at"] for p in phones} == {T0} == {t["confirmed_at"] for t in templates}
    fake_phones = {p.id: p for w in rig.scenario.wabas.values() for p in w.phones.values()}
    for row in phones:
        expected = fake_phones[row["phone_number_id"]]
        assert row["quality_rating"] == (
            "UNKNOWN" if expected.quality_rating == "NA" else expected.quality_rating
        )
        assert row["status"] == expected.status
        assert row["messaging_limit"] == expected.messaging_limit
        assert row["health_status"] == expected.can_send_message
        assert row["display_phone_number"] == "".join(
            ch for ch in expected.display_phone_number if ch.isdigit()
        )
    assert all(w["subscribed"] is True for w in table(rig.db, schema.wabas))
    watched = {w.waba_id: w for w in watch.watched(rig.db)}
    assert {w.poll_state for w in watched.values()} == {PollState.OK}
    assert {w.last_success_at for w in watched.values()} == {T0}


def test_a_later_round_records_exactly_the_changes_the_scenario_made(rig: Rig) -> None:
    rig.round()
    before = poll_history(rig.db)
    assert before == set()  # first sightings have no old value
    waba = next(iter(rig.scenario.wabas.values()))
    phones = list(waba.phones.values())[:3]
    templates = list(waba.templates.values())[:5]
    expected = set()
    for phone, rating in zip(phones, ("YELLOW", "RED", "YELLOW"), strict=True):
        expected.add((phone.id, "quality_rating", phone.quality_rating, rating))
        phone.quality_rating = rating
    for template in templates:
        new = "PAUSED" if template.status != "PAUSED" else "APPROVED"
        expected.add((template.id, "status", template.status, new))
        template.status = new
    waba.subscribed = False
    expected.add((waba.id, "subscribed", "true", "false"))
    rig.clock.advance(minutes=5)
    reports = rig.round()
    assert sum(r.history for r in reports.values()) == len(expected)
    keys = {phone_key(rig.db, p.id): p.id for p in phones}
    seen = {(keys.get(k, k), f, old, new) for k, f, old, new in poll_history(rig.db)}
    assert seen == expected
    assert {p["confirmed_at"] for p in table(rig.db, schema.phone_numbers)} == {rig.clock.now}


def test_scheduled_ticks_stay_within_the_call_budget(db: Database) -> None:
    clock = Clock()
    scenario = Scenario.generate(wabas=2, phones=3, templates=120, seed=3)
    fake = FakeGraph(scenario, clock=lambda: clock.now.timestamp())
    with serve(fake) as url:
        poller = make_poller(
            db, url, clock, scenario, graph_calls_per_hour="12", poll_interval="1m"
        )
        poller.start()
        for _ in range(180):  # three hours, a tick a minute: polling wants 4 calls a minute
            poller.tick()
            clock.advance(minutes=1)
        poller.close()
    for waba_id in scenario.wabas:
        times = sorted(call.at for call in fake.calls_for(waba_id))
        assert len(times) >= 24  # it kept polling, as much as the budget allowed
        for i, start in enumerate(times):
            in_hour = [t for t in times[i:] if t < start + 3600]
            assert len(in_hour) <= 12
        assert all(call.status == 200 for call in fake.calls_for(waba_id))
    states = {w.poll_state for w in watch.watched(db)}
    assert states <= {PollState.OK, PollState.RATE_LIMITED}


def test_meta_rate_limit_waits_for_the_time_meta_gives(rig: Rig) -> None:
    waba_id = next(iter(rig.scenario.wabas))
    rig.fake.rate_limit(waba_id, until=(T0 + timedelta(hours=1)).timestamp())
    report = rig.poller.poll(watch.watched(rig.db, [waba_id])[0])
    assert report.state is PollState.RATE_LIMITED and report.error
    [w] = watch.watched(rig.db, [waba_id])
    assert w.next_poll_at is not None and w.next_poll_at >= T0 + timedelta(minutes=50)
    calls = len(rig.fake.calls_for(waba_id))
    for _ in range(10):  # ticks during the hour do not call it again
        rig.clock.advance(minutes=5)
        rig.poller.tick()
    assert len(rig.fake.calls_for(waba_id)) == calls
    rig.clock.advance(minutes=15)
    rig.poller.tick()
    [w] = watch.watched(rig.db, [waba_id])
    assert w.poll_state is PollState.OK and w.last_success_at == rig.clock.now


def test_an_expired_token_stops_polling_that_waba_until_the_token_changes(rig: Rig) -> None:
    rig.round()
    first, *others = rig.scenario.wabas
    rig.fake.inject(Fault.EXPIRED_TOKEN, match=first, times=100)
    rig.clock.advance(minutes=6)
    rig.poller.tick()
    [w] = watch.watched(rig.db, [first])
    assert w.poll_state is PollState.AUTH_FAILED and w.last_success_at == T0
    assert {x.poll_state for x in watch.watched(rig.db, others)} == {PollState.OK}
    calls = len(rig.fake.calls_for(first))
    for _ in range(3):
        rig.clock.advance(minutes=6)
        rig.poller.tick()
    assert len(rig.fake.calls_for(first)) == calls
    [confirmed] = {
        p["confirmed_at"]
        for p in table(rig.db, schema.phone_numbers, schema.phone_numbers.c.waba_id == first)
    }
    assert confirmed == T0  # "not confirmed since", never "all clear"
    rig.fake.clear_faults()
    watch.add(rig.db, first, rig.scenario.wabas[first].token, rig.clock.now)
    rig.poller.tick()
    [w] = watch.watched(rig.db, [first])
    assert w.poll_state is PollState.OK


def test_polling_that_stops_or_keeps_failing_raises_an_alert(rig: Rig) -> None:
    first, second, _ = rig.scenario.wabas
    rig.fake.inject(Fault.EXPIRED_TOKEN, match=first, times=100)
    rig.fake.inject(Fault.BAD_GATEWAY, match=second, times=1000)
    for _ in range(3):
        rig.round()
        rig.clock.advance(minutes=6)
    polling = [a for a in alerts(rig.db, limit=10_000) if a["rule"] == "polling_failed"]
    firing = {a["labels"]["waba_id"]: a for a in polling if a["state"] == "firing"}
    assert set(firing) == {first, second}
    assert firing[first]["severity"] == "critical" and "polling stopped" in firing[first]["summary"]
    assert firing[second]["severity"] == "warning" and "3 polls failed" in firing[second]["summary"]
    rig.fake.clear_faults()
    watch.add(rig.db, first, rig.scenario.wabas[first].token, rig.clock.now)
    rig.round()
    polling = [a for a in alerts(rig.db, limit=10_000) if a["rule"] == "polling_failed"]
    assert [a["state"] for a in polling] == ["resolved", "resolved"]


@pytest.mark.parametrize(
    "fault", [Fault.SERVER_ERROR, Fault.BAD_GATEWAY, Fault.MALFORMED, Fault.TRANSIENT]
)
def test_a_passing_failure_is_retried_within_the_poll(rig: Rig, fault: Fault) -> None:
    waba_id = next(iter(rig.scenario.wabas))
    rig.fake.inject(fault, match="message_templates", times=1)
    report = rig.poller.poll(watch.watched(rig.db, [waba_id])[0])
    assert report.state is PollState.OK and report.templates == 250
    assert report.calls == 6


def test_a_lasting_failure_marks_the_waba_failing_and_backs_off(rig: Rig) -> None:
    rig.round()
    waba_id = next(iter(rig.scenario.wabas))
    rig.fake.inject(Fault.SERVER_ERROR, match=f"{waba_id}/phone_numbers", times=3)
    rig.clock.advance(minutes=6)
    failed_at = rig.clock.now
    report = rig.poller.poll(watch.watched(rig.db, [waba_id])[0])
    assert report.state is PollState.FAILING and "unavailable" in (report.error or "").lower()
    [w] = watch.watched(rig.db, [waba_id])
    assert w.failures == 1 and w.last_success_at == T0
    assert w.next_poll_at is not None and failed_at < w.next_poll_at <= failed_at + timedelta(
        minutes=5
    )
    rig.clock.now = w.next_poll_at
    rig.poller.tick()
    [w] = watch.watched(rig.db, [waba_id])
    assert w.poll_state is PollState.OK and w.failures == 0


def test_a_slow_answer_times_out_as_a_failure(db: Database) -> None:
    clock = Clock()
    scenario = Scenario.generate(wabas=1, phones=2, templates=3, seed=5)
    fake = FakeGraph(scenario, clock=lambda: clock.now.timestamp())
    with serve(fake) as url:
        poller = make_poller(db, url, clock, scenario)
        poller.client.close()
        poller.client = GraphClient(url, "v24.0", timeout=0.2, sleep=lambda _: None)
        poller.client.budget, poller.client.on_call = poller.budget, poller._calls.append
        poller.start()
        fake.inject(Fault.SLOW, delay=1.0, times=3)
        [report] = [poller.poll(w) for w in watch.watched(db)]
        poller.close()
    assert report.state is PollState.FAILING and "timed out" in (report.error or "")


def test_webhooks_ask_for_one_debounced_reread_per_object(rig: Rig) -> None:
    rig.round()
    waba = next(iter(rig.scenario.wabas.values()))
    phone = next(iter(waba.phones.values()))
    template = next(iter(waba.templates.values()))
    display = "".join(ch for ch in phone.display_phone_number if ch.isdigit())
    bodies = [
        envelope(
            entry(
                "phone_number_quality_update",
                {"display_phone_number": display, "event": "FLAGGED"},
                time=1_772_000_000 + i,
                waba=waba.id,
            )
        )
        for i in range(5)
    ] + [
        envelope(template_status(int(template.id), "PAUSED", 1_772_000_000 + i, waba=waba.id))
        for i in range(3)
    ]
    with rig.db.write(priority=True) as conn:
        inbox.insert_bodies(conn, [inbox.Body(b, rig.clock.now) for b in bodies])
    Processor(rig.db, clock=rig.clock, reread_delay=timedelta(seconds=30)).drain()
    with rig.db.read() as conn:
        assert conn.execute(select(func.count()).select_from(schema.poll_requests)).scalar() == 2
    phone.quality_rating, template.status = "RED", "DISABLED"
    before = len(rig.fake.calls)
    assert rig.poller.reread(rig.clock.now) == 0  # not due yet
    assert rig.poller.reread(rig.clock.advance(seconds=31)) == 2
    paths = sorted(call.path for call in rig.fake.calls[before:])
    assert paths == sorted([f"/{phone.id}", f"/{template.id}"])
    [row] = table(rig.db, schema.phone_numbers, schema.phone_numbers.c.phone_number_id == phone.id)
    assert row["quality_rating"] == "RED"
    [t] = table(rig.db, schema.templates, schema.templates.c.id == template.id)
    assert t["status"] == "DISABLED"
    assert rig.poller.reread(rig.clock.advance(seconds=31)) == 0


def test_business_portfolios_are_discovered(db: Database) -> None:
    clock = Clock()
    scenario = Scenario.generate(wabas=3, phones=1, templates=1, seed=9, businesses=1)
    [business] = scenario.businesses.values()
    fake = FakeGraph(scenario, clock=lambda: clock.now.timestamp())
    with serve(fake) as url:
        config = make_settings(_url(db), graph_url=url, business_ids=business.id).model_copy(
            update={
                "access_tokens": {
                    business.id: SecretStr(business.token),
                    **{w.id: SecretStr(w.token) for w in scenario.wabas.values()},
                }
            }
        )
        client = GraphClient(url, "v24.0", timeout=2.0, sleep=lambda _: None)
        poller = Poller(db, config, client=client, clock=clock)
        assert poller.start() == []
        found = {w.waba_id: w for w in watch.watched(db)}
        assert set(found) == set(business.owned) | set(business.client)
        assert {w.origin for w in found.values()} == {WatchOrigin.BUSINESS}
        assert {w.business_id for w in found.values()} == {business.id}
        # a WABA that leaves the portfolio is forgotten at the next hourly discovery
        gone = business.owned.pop()
        clock.advance(minutes=30)
        poller.tick()
        assert gone in {w.waba_id for w in watch.watched(db)}
        clock.advance(minutes=31)
        poller.tick()
        poller.close()
    assert {w.waba_id for w in watch.watched(db)} == set(business.owned) | set(business.client)


def test_wabas_added_at_run_time_are_polled_and_removed_ones_are_not(rig: Rig) -> None:
    extra = Scenario.generate(wabas=1, phones=1, templates=1, seed=99)
    [new] = extra.wabas.values()
    rig.scenario.wabas[new.id] = new
    assert watch.add(rig.db, new.id, new.token, rig.clock.now) is True
    rig.poller.tick()
    [w] = watch.watched(rig.db, [new.id])
    assert w.origin is WatchOrigin.API and w.poll_state is PollState.OK
    assert watch.remove(rig.db, new.id) is WatchOrigin.API
    first = next(iter(rig.scenario.wabas))
    assert watch.remove(rig.db, first) is WatchOrigin.SETTINGS
    assert first in {w.waba_id for w in watch.watched(rig.db)}
    assert new.id not in {w.waba_id for w in watch.watched(rig.db)}


def test_poll_history_and_webhook_history_share_one_timeline(rig: Rig) -> None:
    rig.round()
    waba = next(iter(rig.scenario.wabas.values()))
    template = next(iter(waba.templates.values()))
    old = template.status
    body = envelope(
        template_status(
            int(template.id), "PAUSED", int(rig.clock.now.timestamp()) + 60, waba=waba.id
        )
    )
    with rig.db.write(priority=True) as conn:
        inbox.insert_bodies(conn, [inbox.Body(body, rig.clock.now)])
    Processor(rig.db, clock=rig.clock).drain()
    template.status = "PAUSED"
    rig.clock.advance(minutes=5)
    rig.round()
    h = schema.history
    rows = table(rig.db, h, h.c.subject_key == template.id, h.c.field == "status")
    assert [
        (r["old_value"], r["new_value"], r["source"])
        for r in sorted(rows, key=lambda r: r["occurred_at"])
    ] == [
        (None, old, "poll"),
        *([(old, "PAUSED", "webhook")] if old != "PAUSED" else []),
    ]


EXPECTED_STATE = {
    Fault.RATE_LIMIT: PollState.RATE_LIMITED,
    Fault.APP_RATE_LIMIT: PollState.RATE_LIMITED,
    Fault.EXPIRED_TOKEN: PollState.AUTH_FAILED,
    Fault.PERMISSION: PollState.AUTH_FAILED,
    Fault.SERVER_ERROR: PollState.FAILING,
    Fault.BAD_GATEWAY: PollState.FAILING,
    Fault.TRANSIENT: PollState.FAILING,
    Fault.MALFORMED: PollState.FAILING,
    Fault.NOT_FOUND: PollState.FAILING,
}


@pytest.mark.parametrize("fault", list(EXPECTED_STATE))
def test_every_lasting_fault_keeps_the_state_and_says_what_failed(rig: Rig, fault: Fault) -> None:
    rig.round()
    waba_id = next(iter(rig.scenario.wabas))
    [phone] = list(rig.scenario.wabas[waba_id].phones.values())[:1]
    phone.quality_rating = "RED"  # a change the failed poll must not half-apply as "all clear"
    rig.fake.inject(fault, match=f"{waba_id}/message_templates", times=10)
    rig.clock.advance(minutes=6)
    report = rig.poller.poll(watch.watched(rig.db, [waba_id])[0])
    assert report.state is EXPECTED_STATE[fault] and report.error
    [w] = watch.watched(rig.db, [waba_id])
    assert w.poll_state is EXPECTED_STATE[fault] and w.last_success_at == T0
    templates = table(rig.db, schema.templates, schema.templates.c.waba_id == waba_id)
    assert len(templates) == 250 and {t["confirmed_at"] for t in templates} == {T0}
    # the phone numbers were read completely before the failure: they are kept, and confirmed
    [row] = table(rig.db, schema.phone_numbers, schema.phone_numbers.c.phone_number_id == phone.id)
    assert (row["quality_rating"], row["confirmed_at"]) == ("RED", rig.clock.now)


def test_high_usage_slows_polling_down_and_full_usage_stops_it(db: Database) -> None:
    clock = Clock()
    scenario = Scenario.generate(wabas=1, phones=2, templates=3, seed=4)
    fake = FakeGraph(scenario, clock=lambda: clock.now.timestamp(), waba_calls_per_hour=10)
    with serve(fake) as url:
        poller = make_poller(db, url, clock, scenario)
        poller.start()
        [w] = watch.watched(db)
        assert poller.poll(w).usage_percent == 30  # three calls of ten
        assert watch.watched(db)[0].next_poll_at <= clock.now + timedelta(minutes=5.5)  # type: ignore[operator]
        clock.advance(minutes=1)
        assert poller.poll(watch.watched(db)[0]).usage_percent == 60
        clock.advance(minutes=1)
        report = poller.poll(watch.watched(db)[0])
        assert report.usage_percent == 90 and report.state is PollState.OK
        [w] = watch.watched(db)
        assert w.next_poll_at is not None and w.next_poll_at >= clock.now + timedelta(minutes=9)
        poller.close()
