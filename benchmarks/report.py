"""Results of the ingestion benchmark: verdicts, Markdown table, summary lines.

Definitions (also in README.md):

* acked/s: answers with status < 400 per second of wrk's run time.
* processed/s and events/s: growth of ``webhooks.processed`` and ``events`` in
  ``GET /api/v1/status`` divided by the window they grew in (burst: from the
  start of the load until nothing is pending; sustained: the load window).
* bounded (sustained): the run has no errors, acknowledges at least 95% of
  the offered rate, ends with a backlog (``pending``) of at most 2 s of
  offered traffic, and the least-squares trend of the backlog over the second
  half of the run grows it by at most 0.5 s of offered traffic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harness import Status
from loadgen import WrkResult

Kind = Literal["check", "ceiling", "ceiling-paced", "burst", "sustained"]
P99_TARGET_MS = 25.0
MIN_ACK_SHARE = 0.95
MAX_END_BACKLOG_S = 2.0
MAX_GROWTH_S = 0.5


@dataclass(frozen=True, slots=True)
class Target:
    burst_acks: int
    sustained_rate: int


TARGETS = {
    "sqlite": Target(burst_acks=10_000, sustained_rate=5_000),
    "postgres": Target(burst_acks=12_000, sustained_rate=8_000),
}
DB_LABELS = {
    "sqlite": "SQLite",
    "postgres": "PostgreSQL",
    "bare": "none (bare ASGI)",
    "check": "none (check app)",
}


@dataclass(slots=True)
class Run:
    """One load run against one freshly started server."""

    kind: Kind
    db: str
    seconds: int
    offered: int | None = None
    wrk: WrkResult | None = None
    before: Status | None = None
    after: Status | None = None
    final: Status | None = None
    drained: bool | None = None
    drain_seconds: float | None = None
    samples: list[Status] = field(default_factory=list)
    sample_failures: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bounded: bool | None = None
    bounded_reasons: list[str] = field(default_factory=list)
    backlog_end: int | None = None
    backlog_growth: float | None = None
    other_cpu: float | None = None

    @property
    def flagged(self) -> bool:
        return bool(self.problems)

    @property
    def ack_rate(self) -> float | None:
        return self.wrk.ack_rate if self.wrk else None

    def _rate(self, attribute: str) -> float | None:
        # Burst: from the start of the load until the backlog drained (or the
        # wait ended). Sustained: the load window itself.
        end = self.final if self.kind == "burst" else self.after
        if self.wrk is None or self.before is None or end is None:
            return None
        elapsed = end.at - self.before.at
        if elapsed <= 0:
            return None
        return float(getattr(end, attribute) - getattr(self.before, attribute)) / elapsed

    @property
    def processed_rate(self) -> float | None:
        return self._rate("processed")

    @property
    def events_rate(self) -> float | None:
        return self._rate("events")

    def as_json(self) -> dict[str, Any]:
        def status(s: Status | None) -> dict[str, Any] | None:
            if s is None:
                return None
            return {
                "received": s.received,
                "pending": s.pending,
                "processed": s.processed,
                "quarantined": s.quarantined,
                "events": s.events,
            }

        origin = self.before.at if self.before else None
        return {
            "kind": self.kind,
            "db": self.db,
            "seconds": self.seconds,
            "offered_rate": self.offered,
            "wrk": self.wrk.as_json() if self.wrk else None,
            "status_before": status(self.before),
            "status_after_load": status(self.after),
            "status_final": status(self.final),
            "drained": self.drained,
            "drain_seconds": _round(self.drain_seconds),
            "processed_per_s": _round(self.processed_rate),
            "events_per_s": _round(self.events_rate),
            "bounded": self.bounded,
            "bounded_reasons": self.bounded_reasons,
            "backlog_end": self.backlog_end,
            "backlog_growth_second_half": _round(self.backlog_growth),
            "pending_series": [
                [round(s.at - origin, 2), s.pending] for s in self.samples if origin is not None
            ],
            "status_sample_failures": self.sample_failures,
            "other_processes_cores": _round(self.other_cpu, 2),
            "problems": self.problems,
            "notes": self.notes,
        }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


# -- checks -------------------------------------------------------------------


def check_stored(run: Run, connections: int) -> None:
    """Compare the bodies the server stored with the answers wrk counted."""
    if run.wrk is None or run.before is None or run.final is None:
        return
    stored = run.final.received - run.before.received
    lost = run.wrk.acked - stored
    if lost > 0:
        run.problems.append(f"{lost} acknowledged bodies are not counted as received")
    extra = stored - (run.wrk.requests + connections)
    if extra > 0:
        run.problems.append(f"{extra} more bodies received than requests sent")
    quarantined = run.final.quarantined - run.before.quarantined
    if quarantined:
        run.notes.append(f"{quarantined} bodies quarantined")


def check_load(run: Run) -> None:
    wrk = run.wrk
    if wrk is None:
        return
    if wrk.non_2xx:
        run.problems.append(f"{wrk.non_2xx} non-2xx answers")
    if wrk.socket_errors:
        errors = ", ".join(f"{k} {v}" for k, v in wrk.errors.items() if k != "status" and v)
        run.problems.append(f"socket errors: {errors}")
    if wrk.exhausted:
        run.problems.append("request pool exhausted (raise --pool-size)")


def least_squares_slope(points: Sequence[tuple[float, float]]) -> float:
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def judge_sustained(run: Run) -> None:
    """Decide whether the backlog stayed bounded; see the module docstring."""
    reasons: list[str] = []
    rate = run.offered or 0
    if run.wrk is None or run.before is None or run.after is None:
        run.bounded = False
        run.bounded_reasons = ["no complete measurement"]
        return
    if run.problems:
        reasons.append("run has errors")
    if run.wrk.ack_rate < MIN_ACK_SHARE * rate:
        reasons.append(
            f"acknowledged {run.wrk.ack_rate:,.0f}/s < {MIN_ACK_SHARE:.0%} of offered {rate:,}/s"
        )
    start, end = run.before.at, run.after.at
    window = [run.before, *[s for s in run.samples if start < s.at < end], run.after]
    run.backlog_end = run.after.pending
    if run.backlog_end > MAX_END_BACKLOG_S * rate:
        reasons.append(
            f"backlog at the end {run.backlog_end:,} > {MAX_END_BACKLOG_S:g} s of traffic"
        )
    half = start + (end - start) / 2
    second_half = [(s.at - start, float(s.pending)) for s in window if s.at >= half]
    run.backlog_growth = least_squares_slope(second_half) * (end - half)
    if run.backlog_growth > MAX_GROWTH_S * rate:
        reasons.append(
            f"backlog grew by {run.backlog_growth:,.0f} over the second half "
            f"(> {MAX_GROWTH_S:g} s of traffic)"
        )
    run.bounded = not reasons
    run.bounded_reasons = reasons
    if reasons:
        run.notes.append(f"{rate:,}/s not bounded: " + "; ".join(reasons))


# -- rendering ----------------------------------------------------------------


def _n(value: float | None, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.0f}{suffix}"


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def _label(run: Run) -> str:
    if run.kind == "check":
        return f"body check, {run.seconds} s"
    if run.kind == "ceiling":
        return f"ceiling burst, {run.seconds} s"
    if run.kind == "ceiling-paced":
        return f"ceiling paced, {run.seconds} s"
    if run.kind == "burst":
        return f"burst, {run.seconds} s"
    return f"sustained, {run.seconds} s"


def run_title(run: Run) -> str:
    """``burst, 10 s, SQLite``: how notes name a run."""
    title = f"{_label(run)}, {DB_LABELS.get(run.db, run.db)}"
    return f"{title}, {run.offered:,}/s" if run.offered else title


def _backlog(run: Run) -> str:
    if run.kind == "burst":
        if run.drained is None:
            return "–"
        at_end = _n(run.after.pending if run.after else None)
        if run.drained:
            return f"{at_end} at end of load, drained {run.drain_seconds or 0.0:.1f} s later"
        pending = _n(run.final.pending if run.final else None)
        return f"{at_end} at end of load, {pending} still pending after the wait"
    if run.kind == "sustained":
        verdict = "bounded" if run.bounded else "NOT bounded"
        growth = run.backlog_growth
        trend = "–" if growth is None else f"{growth:+,.0f}"
        return f"end {_n(run.backlog_end)}, {trend} in 2nd half: {verdict}"
    return "–"


def markdown_table(runs: Sequence[Run]) -> str:
    head = (
        "| Run | Database | Offered | Acked/s | p50 | p90 | p99 | max "
        "| Processed/s | Events/s | Backlog | Errors |"
    )
    lines = [head, "|" + "---|" * 12]
    for run in runs:
        wrk = run.wrk
        lat = wrk.latency if wrk else None
        offered = f"{run.offered:,}/s" if run.offered else "max"
        errors = "; ".join(run.problems) if run.problems else "none"
        lines.append(
            "| "
            + " | ".join(
                (
                    _label(run),
                    DB_LABELS.get(run.db, run.db),
                    offered,
                    _n(run.ack_rate),
                    _ms(lat.p("50") if lat else None),
                    _ms(lat.p("90") if lat else None),
                    _ms(lat.p("99") if lat else None),
                    _ms(lat.max if lat else None),
                    _n(run.processed_rate),
                    _n(run.events_rate),
                    _backlog(run),
                    errors,
                )
            )
            + " |"
        )
    return "\n".join(lines)


def summary_lines(runs: Sequence[Run], databases: Sequence[str]) -> list[str]:
    lines: list[str] = []
    for db in databases:
        target = TARGETS[db]
        label = DB_LABELS[db]
        burst = next((r for r in runs if r.kind == "burst" and r.db == db), None)
        if burst is None or burst.wrk is None:
            lines.append(f"FAIL  {label} burst: no measurement")
        else:
            acks = burst.wrk.ack_rate
            p99 = burst.wrk.latency.p("99")
            ok = acks >= target.burst_acks and p99 <= P99_TARGET_MS and not burst.flagged
            flag = " (run flagged: " + "; ".join(burst.problems) + ")" if burst.flagged else ""
            lines.append(
                f"{'PASS' if ok else 'FAIL'}  {label} burst: {acks:,.0f} acks/s "
                f"(target ≥ {target.burst_acks:,}/s), p99 {p99:.1f} ms "
                f"(target ≤ {P99_TARGET_MS:g} ms){flag}"
            )
        sustained = [r for r in runs if r.kind == "sustained" and r.db == db]
        bounded = [r for r in sustained if r.bounded and r.offered]
        if not sustained:
            lines.append(f"FAIL  {label} sustained: no measurement")
            continue
        if not bounded:
            tried = ", ".join(f"{r.offered:,}" for r in sustained if r.offered)
            lines.append(
                f"FAIL  {label} sustained: no tested rate was bounded (tried {tried}/s; "
                f"target ≥ {target.sustained_rate:,}/s)"
            )
            continue
        best = max(bounded, key=lambda r: r.offered or 0)
        rate = best.offered or 0
        lines.append(
            f"{'PASS' if rate >= target.sustained_rate else 'FAIL'}  {label} sustained: "
            f"highest bounded rate {rate:,}/s (target ≥ {target.sustained_rate:,}/s); "
            f"acked {_n(best.ack_rate)}/s, events applied {_n(best.events_rate)}/s, "
            f"processed {_n(best.processed_rate)} webhooks/s"
        )
    return lines
