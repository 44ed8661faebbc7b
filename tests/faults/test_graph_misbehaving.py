"""The Graph API misbehaving for an hour, on a clock the test controls: 5xx, HTML error pages,
malformed JSON and a rate limit that lasts the hour. The poller keeps ticking without a crash,
backs off instead of hammering, says what failed and since when nothing was confirmed, and
recovers by itself once the API behaves."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta

import pytest

from test_poller import T0, Clock, make_poller
from waquality.domain.enums import PollState
from waquality.graph.fake import FakeGraph, Fault, Scenario, serve
from waquality.graph.poller import Poller
from waquality.store import schema, watch
from waquality.store.database import Database

FAULTS = (Fault.SERVER_ERROR, Fault.BAD_GATEWAY, Fault.MALFORMED, Fault.TRANSIENT)


@pytest.fixture
def setup(db: Database) -> Iterator[tuple[Poller, FakeGraph, Scenario, Clock]]:
    clock = Clock()
    scenario = Scenario.generate(wabas=3, phones=4, templates=30, seed=11)
    fake = FakeGraph(scenario, clock=lambda: clock.now.timestamp())
    with serve(fake) as url:
        poller = make_poller(db, url, clock, scenario)
        assert poller.start() == []
        yield poller, fake, scenario, clock
        poller.close()


def test_an_hour_of_failures_backs_off_keeps_state_and_recovers(
    db: Database, setup: tuple[Poller, FakeGraph, Scenario, Clock]
) -> None:
    poller, fake, scenario, clock = setup
    poller.tick()  # a good first round at T0
    limited, *broken = scenario.wabas
    fake.rate_limit(limited, until=(T0 + timedelta(hours=1, minutes=5)).timestamp())
    rng = random.Random(5)
    for minute in range(60):  # every request of the other WABAs fails, in varied ways
        clock.now = T0 + timedelta(minutes=minute + 1)
        for waba_id in broken:
            fake.inject(rng.choice(FAULTS), match=waba_id, times=50)
        poller.tick()
        fake.clear_faults()
        fake.rate_limit(limited, until=(T0 + timedelta(hours=1, minutes=5)).timestamp())
    states = {w.waba_id: w for w in watch.watched(db)}
    assert states[limited].poll_state is PollState.RATE_LIMITED
    for waba_id in broken:
        w = states[waba_id]
        assert w.poll_state is PollState.FAILING and w.failures >= 3
        assert w.last_success_at == T0  # "not confirmed since" T0
        calls = len([c for c in fake.calls_for(waba_id) if c.at > T0.timestamp()])
        assert calls <= 40, f"{waba_id}: {calls} calls in an hour of failures"
    with db.read() as conn:  # nothing read during the hour was taken for "all clear"
        confirmed = conn.execute(schema.templates.select()).mappings().all()
    assert {row["confirmed_at"] for row in confirmed} == {T0}
    assert len(fake.calls_for(limited)) <= 10  # a rate limit is waited out, not retried
    fake.clear_faults()  # the API behaves again
    clock.now = T0 + timedelta(hours=1, minutes=30)
    for _ in range(3):
        poller.tick()
        clock.now += timedelta(minutes=6)
    states = {w.waba_id: w for w in watch.watched(db)}
    assert {w.poll_state for w in states.values()} == {PollState.OK}
    assert all(w.last_success_at and w.last_success_at > T0 for w in states.values())
