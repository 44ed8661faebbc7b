"""Signal detection, pure: hourly figures and a time in, a verdict out. Statistics are checked
against plain computations on the raw values (sorted lists, sums, statistics.median)."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest

from waquality.analyse.signals import (
    METRICS,
    Deliveries,
    Durations,
    Hour,
    Metric,
    Outcome,
    Rule,
    Window,
    baseline_windows,
    days_before,
    describe_window,
    evaluate,
    format_seconds,
    format_value,
    measure,
    phrase,
    span,
    windows,
)
from waquality.domain import sketch

H = timedelta(hours=1)
DAY = timedelta(days=1)
TODAY = datetime(2026, 3, 9, tzinfo=UTC)  # a Monday
NOW = TODAY + timedelta(hours=11, minutes=5)


def durations(values: Iterable[float]) -> Durations:
    values = list(values)
    return Durations(sketch.pack(sketch.histogram(values)), len(values), sum(values))


def deliveries(errors: dict[int, int] | None = None, **counts: int) -> Deliveries:
    return Deliveries(counts, errors or {})


def exact(values: list[float], q: float) -> float:
    """The sketch's quantile definition on the raw values: rank floor(q * (n - 1))."""
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def within_error(estimate: float | None, true: float) -> bool:
    assert estimate is not None
    return abs(estimate - true) <= sketch.RELATIVE_ERROR * true * (1 + 1e-9)


# -- measuring -----------------------------------------------------------------------------------


def test_response_time_statistics_over_several_hours_match_the_raw_values() -> None:
    rng = random.Random(5)
    raw = [[rng.lognormvariate(4, 1.2) for _ in range(rng.randrange(5, 200))] for _ in range(6)]
    hours = [durations(values) for values in raw]
    every = [v for values in raw for v in values]
    for metric, q in (
        (Metric.RESPONSE_P50, 0.5),
        (Metric.RESPONSE_P90, 0.9),
        (Metric.RESPONSE_P99, 0.99),
    ):
        found = measure(metric, hours)
        assert found.count == len(every) and found.active
        assert within_error(found.value, exact(every, q))
    mean = measure(Metric.FIRST_RESPONSE_MEAN, hours)
    assert mean.value == pytest.approx(sum(every) / len(every), rel=1e-12)
    assert measure(Metric.RESPONSE_P90, []) == measure(Metric.RESPONSE_P90, [durations([])])
    assert measure(Metric.RESPONSE_P90, []).value is None


def test_delivery_rates_and_counts_are_plain_ratios_of_the_summed_counters() -> None:
    hours: list[Hour] = [
        deliveries({131049: 3, 131048: 1}, outbound=40, sent=38, delivered=30, read=12, failed=2),
        deliveries({131049: 1}, outbound=60, sent=57, delivered=50, read=30, refused=1, opt_outs=2),
        deliveries(inbound=5, opt_outs=1),
    ]
    assert measure(Metric.DELIVERY_RATE, hours).value == pytest.approx(80 / 95)
    assert measure(Metric.DELIVERY_RATE, hours).count == 95
    assert measure(Metric.READ_RATE, hours).value == pytest.approx(42 / 80)
    assert measure(Metric.FAILURE_RATE, hours).value == pytest.approx(3 / 100)
    assert measure(Metric.ERROR_RATE, hours, 131049).value == pytest.approx(4 / 100)
    assert measure(Metric.ERRORS, hours, 131048).value == 1
    assert measure(Metric.OPT_OUTS, hours).value == 3
    # nothing sent: no rate, and not a day a baseline can use
    idle = measure(Metric.READ_RATE, [deliveries(inbound=3)])
    assert (idle.value, idle.count, idle.active) == (None, 0, False)
    # a count is zero, not missing, on a day with traffic
    quiet = measure(Metric.OPT_OUTS, [deliveries(outbound=10, sent=10)])
    assert (quiet.value, quiet.active) == (0, True)


# -- windows and resolution ----------------------------------------------------------------------


def test_windows_are_whole_hours_with_or_without_the_hour_in_progress() -> None:
    with_current = Rule(Metric.ERRORS, code=131048, above=0, window=3, delay=0)
    assert windows(with_current, NOW) == [Window(TODAY + 9 * H, TODAY + 12 * H)]
    completed = Rule(Metric.RESPONSE_P90, above=600, window=1)  # response times: 1 h delay
    assert windows(completed, NOW) == [Window(TODAY + 10 * H, TODAY + 11 * H)]
    held = Rule(Metric.READ_RATE, below=0.5, window=3, held=2)  # read rate: 2 h delay
    assert windows(held, NOW) == [
        Window(TODAY + 7 * H, TODAY + 10 * H),
        Window(TODAY + 6 * H, TODAY + 9 * H),
        Window(TODAY + 5 * H, TODAY + 8 * H),
    ]
    # the resolution is the hour: the whole of an hour judges the same windows
    for minute in (0, 1, 59):
        moment = TODAY + 11 * H + timedelta(minutes=minute, seconds=59 if minute == 59 else 0)
        assert windows(completed, moment) == windows(completed, NOW)
    assert windows(completed, TODAY + 12 * H)[0].start == TODAY + 11 * H


def test_baseline_days_are_the_same_local_hours_across_a_clock_change() -> None:
    zone = "Europe/Berlin"  # summer time from 2026-03-29 02:00 local
    now = datetime(2026, 3, 30, 8, 30, tzinfo=UTC)  # 10:30 CEST
    rule = Rule(Metric.OPT_OUTS, factor=3, baseline_days=3, window=1, delay=1)
    [window] = windows(rule, now, zone)
    assert window == Window(
        datetime(2026, 3, 30, 7, tzinfo=UTC), datetime(2026, 3, 30, 8, tzinfo=UTC)
    )
    assert baseline_windows(rule, window, zone) == [
        Window(datetime(2026, 3, 29, 7, tzinfo=UTC), datetime(2026, 3, 29, 8, tzinfo=UTC)),
        Window(datetime(2026, 3, 28, 8, tzinfo=UTC), datetime(2026, 3, 28, 9, tzinfo=UTC)),
        Window(datetime(2026, 3, 27, 8, tzinfo=UTC), datetime(2026, 3, 27, 9, tzinfo=UTC)),
    ]
    assert span(rule, now, zone) == Window(datetime(2026, 3, 27, 8, tzinfo=UTC), window.end)
    # hours of a half-hour zone start at half past, in UTC
    india = windows(rule, datetime(2026, 3, 9, 5, 45, tzinfo=UTC), "Asia/Kolkata")
    assert india[0].start == datetime(2026, 3, 9, 4, 30, tzinfo=UTC)
    assert days_before(datetime(2026, 3, 9, 4, 30, tzinfo=UTC), 7, "Asia/Kolkata") == datetime(
        2026, 3, 2, 4, 30, tzinfo=UTC
    )


# -- thresholds ----------------------------------------------------------------------------------


def slow_hours(*p90s: tuple[datetime, float], n: int = 30) -> dict[datetime, Hour]:
    """Hours whose first responses are mostly 60 s, with a tenth at the given value (their p90)."""
    series: dict[datetime, Hour] = {}
    for start, slow in p90s:
        series[start] = durations([60.0] * (n - n // 10 - 1) + [slow] * (n // 10 + 1))
    return series


def test_a_threshold_fires_once_it_held_for_long_enough_and_resolves_at_once() -> None:
    rule = Rule(Metric.FIRST_RESPONSE_P90, above=600, window=1, held=1)  # above 10m for 1h
    series = slow_hours((TODAY + 8 * H, 300), (TODAY + 9 * H, 900), (TODAY + 10 * H, 840))
    verdict = evaluate(rule, series, NOW)
    assert verdict.outcome is Outcome.FIRING and verdict.held == 2
    assert within_error(verdict.current.value, 840)
    assert verdict.current.count == 30
    # the same with "for 2h": the 08:00 hour was fine, so not yet
    longer = evaluate(Rule(Metric.FIRST_RESPONSE_P90, above=600, held=2), series, NOW)
    assert longer.outcome is Outcome.PENDING and longer.held == 2
    # an hour later the 11:00 hour is back under 10 minutes: resolved at once
    series |= slow_hours((TODAY + 11 * H, 400))
    assert evaluate(rule, series, NOW + H).outcome is Outcome.NORMAL
    # below-thresholds mirror above-thresholds
    fast = evaluate(Rule(Metric.FIRST_RESPONSE_P90, below=500), series, NOW + H)
    assert fast.firing


def test_too_few_responses_never_make_an_alert() -> None:
    rule = Rule(Metric.FIRST_RESPONSE_P90, above=600, window=1, min_count=20)
    two = {TODAY + 10 * H: durations([3600.0, 7200.0])}
    verdict = evaluate(rule, two, NOW)
    assert verdict.outcome is Outcome.TOO_FEW and not verdict.firing
    assert verdict.current.count == 2
    assert evaluate(rule, {}, NOW).outcome is Outcome.TOO_FEW
    # the metric's own least count applies when the rule gives none
    assert Rule(Metric.READ_RATE, below=0.5).least == METRICS[Metric.READ_RATE].min_count


def test_a_failure_code_appearing_fires_for_as_long_as_it_is_in_the_window() -> None:
    rule = Rule(Metric.ERRORS, code=131048, above=0, window=24)
    failed_at = TODAY + 10 * H
    series: dict[datetime, Hour] = {
        TODAY + 9 * H: deliveries({131049: 4}, outbound=200, sent=196),
        failed_at: deliveries({131048: 2}, outbound=50, sent=48, failed=2),
    }
    assert not evaluate(rule, series, failed_at - timedelta(minutes=1)).firing
    assert evaluate(rule, series, failed_at + timedelta(minutes=1)).firing  # the hour in progress
    assert evaluate(rule, series, failed_at + 23 * H + timedelta(minutes=59)).firing
    gone = evaluate(rule, series, failed_at + 24 * H)
    assert gone.outcome is Outcome.TOO_FEW and gone.current.value == 0


# -- peaks against the baseline ------------------------------------------------------------------


def test_a_peak_is_measured_against_the_median_of_the_same_hours_on_previous_days() -> None:
    rng = random.Random(8)
    rule = Rule(Metric.FIRST_RESPONSE_P90, factor=2, above=300, baseline_days=7, min_count=20)
    series: dict[datetime, Hour] = {}
    raw_days: list[list[float]] = []
    for day in range(1, 8):
        values = [rng.uniform(30, 400) for _ in range(rng.randrange(25, 80))]
        series[TODAY - day * DAY + 10 * H] = durations(values)
        series[TODAY - day * DAY + 11 * H] = durations([5000.0] * 50)  # other hours do not count
        raw_days.append(values)
    reference = statistics.median(exact(values, 0.9) for values in raw_days)
    now_values = [rng.uniform(600, 1000) for _ in range(40)]
    series[TODAY + 10 * H] = durations(now_values)
    verdict = evaluate(rule, series, NOW)
    assert verdict.firing and verdict.baseline_days == 7
    assert verdict.baseline is not None and verdict.current.value is not None
    assert verdict.baseline == pytest.approx(reference, rel=sketch.RELATIVE_ERROR)
    assert within_error(verdict.current.value, exact(now_values, 0.9))
    assert verdict.ratio == pytest.approx(verdict.current.value / verdict.baseline)
    # the floor: a doubling that stays under 5 minutes is no alert
    calm = dict(series) | {TODAY + 10 * H: durations([200.0] * 40)}
    low = Rule(Metric.FIRST_RESPONSE_P90, factor=1.2, above=300, min_count=20)
    assert evaluate(low, calm, NOW).outcome is Outcome.NORMAL
    # a smaller rise than the factor is no alert
    mild = dict(series) | {TODAY + 10 * H: durations([reference * 1.5] * 40)}
    assert evaluate(rule, mild, NOW).outcome is Outcome.NORMAL


def test_a_baseline_needs_half_of_its_days_with_traffic() -> None:
    rule = Rule(Metric.READ_RATE, factor=0.7, baseline_days=7, window=1, delay=0, min_count=10)
    series: dict[datetime, Hour] = {
        TODAY + 11 * H: deliveries(outbound=100, sent=100, delivered=100, read=20)
    }
    for day in (1, 2, 3):
        series[TODAY - day * DAY + 11 * H] = deliveries(
            outbound=100, sent=100, delivered=100, read=70
        )
    verdict = evaluate(rule, series, NOW)
    assert verdict.outcome is Outcome.NO_BASELINE and verdict.baseline_days == 3
    series[TODAY - 6 * DAY + 11 * H] = deliveries(outbound=80, sent=80, delivered=80, read=60)
    verdict = evaluate(rule, series, NOW)
    assert verdict.firing and verdict.baseline_days == 4
    assert verdict.baseline == pytest.approx(statistics.median([0.7, 0.7, 0.7, 0.75]))
    assert verdict.current.value == pytest.approx(0.2)
    # a fall less than 30% is no alert
    series[TODAY + 11 * H] = deliveries(outbound=100, sent=100, delivered=100, read=55)
    assert evaluate(rule, series, NOW).outcome is Outcome.NORMAL


def test_a_rise_from_a_zero_baseline_needs_its_floor() -> None:
    rule = Rule(Metric.OPT_OUTS, factor=3, above=5, baseline_days=7, window=2, delay=0)
    series: dict[datetime, Hour] = {
        TODAY - day * DAY + 10 * H: deliveries(outbound=500, sent=500) for day in range(1, 8)
    }
    series[TODAY + 10 * H] = deliveries(outbound=500, sent=500, opt_outs=4)
    verdict = evaluate(rule, series, NOW)
    assert verdict.baseline == 0 and verdict.ratio is None and not verdict.firing
    series[TODAY + 11 * H] = deliveries(opt_outs=3)
    verdict = evaluate(rule, series, NOW)
    assert verdict.firing and verdict.current.value == 7


# -- words ---------------------------------------------------------------------------------------


def test_figures_read_as_people_write_them() -> None:
    assert format_seconds(850) == "14m 10s"
    assert format_seconds(275) == "4m 35s"
    assert format_seconds(45.4) == "45s"
    assert format_seconds(3.25) == "3.2s"
    assert format_seconds(7500) == "2h 5m"
    assert format_seconds(3600) == "1h"
    assert format_seconds(97200) == "1d 3h"
    assert format_value(Metric.READ_RATE, 0.41) == "41.0%"
    assert format_value(Metric.ERROR_RATE, 0.0035) == "0.35%"
    assert format_value(Metric.OPT_OUTS, 12.0) == "12"
    assert phrase(Metric.ERRORS, 3, 131048) == "3 failures with 131048"
    assert phrase(Metric.FIRST_RESPONSE_P90, 850) == "first-response p90 14m 10s"
    hour = Window(TODAY + 10 * H, TODAY + 11 * H)
    assert describe_window(Rule(Metric.RESPONSE_P90, above=1), hour) == "in the hour to 11:00 UTC"
    assert describe_window(Rule(Metric.ERRORS, code=1, above=0, window=24), hour) == (
        "over the last 24 hours"
    )
    berlin = describe_window(Rule(Metric.READ_RATE, factor=0.5, window=3), hour, "Europe/Berlin")
    assert berlin == "in the 3 hours to 12:00 CET"
