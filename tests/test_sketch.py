"""The duration sketch against exact quantiles of the same samples."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waquality.domain import sketch


def exact(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[math.floor(q * (len(ordered) - 1))]


def close(estimate: float | None, true: float) -> bool:
    assert estimate is not None
    if true < sketch.SMALLEST:
        return estimate == 0.0
    return abs(estimate - true) <= sketch.RELATIVE_ERROR * true * (1 + 1e-9)


durations = st.floats(min_value=0, max_value=30 * 86_400, allow_nan=False)


@settings(max_examples=200, derandomize=True, database=None)
@given(st.lists(durations, min_size=1, max_size=300), st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]))
def test_quantiles_are_within_the_stated_relative_error(samples: list[float], q: float) -> None:
    assert close(sketch.quantile(sketch.histogram(samples), q), exact(samples, q))


def test_merging_is_adding_counts() -> None:
    rng = random.Random(3)
    parts = [[rng.lognormvariate(3, 2) for _ in range(1000)] for _ in range(5)]
    merged = sum((sketch.histogram(p) for p in parts), start=sketch.histogram([]))
    whole = [x for p in parts for x in p]
    assert merged == sketch.histogram(whole)
    for q in (0.5, 0.9, 0.99):
        assert close(sketch.quantile(merged, q), exact(whole, q))


def test_summary_with_targets() -> None:
    samples = [5.0, 30.0, 50.0, 120.0, 4000.0]
    bins = sketch.histogram(samples)
    summary = sketch.summarise(bins, sum(samples), max(samples), {"1m": 60, "1h": 3600})
    assert summary.count == 5 and summary.mean == pytest.approx(841.0)
    assert summary.max == 4000.0
    assert close(summary.p50, 50.0) and close(summary.p99, 120.0)
    assert summary.within == {"1m": 0.6, "1h": 0.8}
    empty = sketch.summarise({}, 0.0, None, {"1m": 60})
    assert (empty.count, empty.mean, empty.p90, empty.max, empty.within) == (
        0,
        None,
        None,
        None,
        {"1m": 0.0},
    )


def test_bins_are_a_fixed_format() -> None:
    # stored bins must mean the same forever: pin a few
    assert [sketch.bin_of(x) for x in (0.0, 0.0009, 0.001, 1.0, 60.0, 86_400.0)] == [
        sketch.ZERO_BIN,
        sketch.ZERO_BIN,
        -345,
        0,
        205,
        569,
    ]


@settings(max_examples=150, derandomize=True, database=None)
@given(st.lists(st.lists(durations, max_size=60), min_size=1, max_size=6))
def test_stored_bins_merged_as_arrays_summarise_as_the_bins_do(parts: list[list[float]]) -> None:
    """pack → merged (the read path) gives the summary of the merged histograms, exactly."""
    stored = [sketch.pack(sketch.histogram(p)) for p in parts]
    assert [sketch.unpack(b) for b in stored] == [sketch.histogram(p) for p in parts]
    whole = [x for p in parts for x in p]
    targets = {"1s": 1.0, "1m": 60.0, "tiny": 0.0001}
    expected = sketch.summarise(
        sketch.histogram(whole), sum(whole), max(whole, default=None), targets
    )
    found = sketch.merged(stored).summary(sum(whole), max(whole, default=None), targets)
    assert found == expected


@settings(max_examples=200, derandomize=True, database=None)
@given(
    st.none() | st.lists(durations, max_size=40),
    st.lists(durations, max_size=40),
    st.lists(st.integers(min_value=0, max_value=80), max_size=20),
)
def test_adding_to_stored_bins_is_packing_the_sum(
    stored: list[float] | None, added: list[float], taken: list[int]
) -> None:
    """add (the write path) stores what pack gives for the bins after the change, byte for
    byte, values taken back included (down to no bins at all)."""
    before = sketch.histogram(stored or [])
    back = [stored[i] for i in sorted({i % len(stored) for i in taken})] if stored else []
    change = sketch.histogram(added)
    change.subtract(sketch.histogram(back))
    after = before.copy()
    after.update(change)
    expected = sketch.pack({i: n for i, n in after.items() if n})
    data = sketch.pack(before) if stored is not None else None
    assert sketch.add(data, change) == expected
    assert sketch.add(data, sketch.histogram([])) == (data or sketch.pack({}))


def test_adding_past_the_stored_format_fails_loudly() -> None:
    data = sketch.pack({0: 2**31 - 1})
    with pytest.raises(OverflowError):
        sketch.add(data, {0: 1})


@settings(max_examples=100, derandomize=True, database=None)
@given(st.lists(st.lists(st.lists(durations, max_size=30), max_size=4), min_size=1, max_size=6))
def test_many_summaries_at_once_equal_one_at_a_time(groups: list[list[list[float]]]) -> None:
    """The matrix way (every series of a report at once) gives each group's own summary."""
    targets = {"1s": 1.0, "1m": 60.0, "tiny": 0.0001, "huge": 1e9}
    stored = [[sketch.pack(sketch.histogram(part)) for part in group] for group in groups]
    totals = [sum(x for part in group for x in part) for group in groups]
    maxima = [max((x for part in group for x in part), default=None) for group in groups]
    expected = [
        dataclasses.asdict(sketch.merged(rows).summary(total, largest, targets))
        for rows, total, largest in zip(stored, totals, maxima, strict=True)
    ]
    everything = [x for group in groups for part in group for x in part]
    together = sketch.summarise(
        sketch.histogram(everything), sum(totals), max(everything, default=None), targets
    )
    odd = [i for i in range(len(groups)) if i % 2]
    some = [x for i in odd for part in groups[i] for x in part]
    part = sketch.summarise(
        sketch.histogram(some), sum(totals[i] for i in odd), max(some, default=None), targets
    )
    found = sketch.summaries(stored, totals, maxima, targets, combined=[range(len(groups)), odd])
    assert found == [*expected, dataclasses.asdict(together), dataclasses.asdict(part)]
