"""A late fact's replay stops where it meets the old history again: what it keeps and what it
writes together are exactly the history of replaying every fact from the beginning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from waquality.domain.timeline import Fact, Step, apply, replay_until_met
from waquality.process.interpret import Op

T0 = datetime(2026, 1, 1, tzinfo=UTC)
VALUES = ("APPROVED", "PAUSED", "REJECTED", "ARCHIVED", "3", "7")

fact_shape = st.tuples(
    st.integers(0, 40),  # seconds after T0: ties happen
    st.sampled_from(list(Op)),
    st.sampled_from(VALUES),
    st.booleans(),  # late: the old history did not know it
)


def _fold(facts: list[Fact], value: str | None = None) -> list[Step]:
    """Every fact from the beginning, in time order (ties in the order they were recorded)."""
    before = None
    steps = []
    for fact in sorted(facts, key=lambda f: (f.occurred_at, f.order)):
        new = apply(fact, value, before)
        if new != value:
            steps.append(Step(value, new, fact))
            value, before = new, value
    return steps


def _shape(steps: list[Step]) -> list[tuple[str | None, str | None, datetime]]:
    return [(s.old, s.new, s.fact.occurred_at) for s in steps]


@settings(max_examples=400, deadline=None)
@given(st.lists(fact_shape, min_size=1, max_size=30))
def test_a_replay_from_the_late_facts_gives_the_whole_replay(
    shapes: list[tuple[int, Op, str, bool]],
) -> None:
    facts = [
        Fact(op, value, T0 + timedelta(seconds=at), "webhook", None, T0, order)
        for order, (at, op, value, _) in enumerate(shapes)
    ]
    late = [f for f, shape in zip(facts, shapes, strict=True) if shape[3]]
    assume(late)
    known = [f for f in facts if f not in late]
    old = _fold(known)
    first, last = min(f.occurred_at for f in late), max(f.occurred_at for f in late)
    kept = [s for s in old if s.fact.occurred_at < first]
    value, before = (kept[-1].new, kept[-1].old) if kept else (None, None)
    timeline, until = replay_until_met(
        [f for f in facts if f.occurred_at >= first],
        value,
        before,
        [s for s in old if s.fact.occurred_at >= first],
        last,
    )
    after = [] if until is None else [s for s in old if s.fact.occurred_at > until]
    whole = _fold(facts)
    assert _shape(kept + timeline.steps + after) == _shape(whole)
    if until is None:
        assert timeline.value == (whole[-1].new if whole else None)
    else:
        assert until >= last


def test_a_late_fact_between_two_settings_is_met_again_at_once() -> None:
    def fact(at: int, value: str, order: int) -> Fact:
        return Fact(Op.SET, value, T0 + timedelta(seconds=at), "webhook", None, T0, order)

    old_facts = [fact(10 * i, VALUES[i % 3], i) for i in range(100)]
    old = _fold(old_facts)
    late = fact(505, "ARCHIVED", 100)
    since = [f for f in [*old_facts, late] if f.occurred_at >= late.occurred_at]
    before = [s for s in old if s.fact.occurred_at < late.occurred_at][-1]
    timeline, until = replay_until_met(
        since,
        before.new,
        before.old,
        [s for s in old if s.fact.occurred_at >= late.occurred_at],
        late.occurred_at,
    )
    # met once the value and the one it replaced are the old ones again: 48 later steps stand
    assert until == T0 + timedelta(seconds=520)
    assert _shape(timeline.steps) == [
        (before.new, "ARCHIVED", late.occurred_at),
        ("ARCHIVED", VALUES[51 % 3], T0 + timedelta(seconds=510)),
        (VALUES[51 % 3], VALUES[52 % 3], T0 + timedelta(seconds=520)),
    ]
