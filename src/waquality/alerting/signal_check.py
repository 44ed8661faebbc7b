"""Judging the signal rules (:mod:`waquality.alerting.signal_rules`) once a minute on the
hourly aggregates (:mod:`waquality.analyse.signals` says how: whole hours of the configured
time zone) and, when an alert fires or resolves, recording it with its notifications and an
event (source ``tracker``, field ``signals``) in one transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from waquality.alerting.book import Alerting, Timed, record
from waquality.alerting.rules import Severity, Signal, fingerprint
from waquality.alerting.signal_rules import (
    BUILT_IN_NAMES,
    DIMENSIONS,
    FIELD,
    PLACEHOLDER,
    SOURCE,
    SignalRuleConfig,
)
from waquality.analyse import delivery
from waquality.analyse import signals as sig
from waquality.analyse.signals import Family, Outcome, Unit, Verdict
from waquality.domain.delivery import QUALITY_CODES
from waquality.domain.enums import SubjectKind
from waquality.domain.responses import Bucket
from waquality.store import schema
from waquality.store.database import Database
from waquality.store.stats import ALL, DELIVERY_COUNTERS


@dataclass(frozen=True, slots=True)
class Scope:
    phone_number_id: str | None = None
    template: str | None = None
    sender: str | None = None

    def labels(self) -> dict[str, str]:
        return {d: v for d in DIMENSIONS if (v := getattr(self, d)) is not None}


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's verdict on one scope (no verdict: a firing alert no rule evaluates any more)."""

    rule: str
    labels: dict[str, str]
    firing: bool
    severity: Severity
    config: SignalRuleConfig | None = None
    scope: Scope = Scope()
    verdict: Verdict | None = None

    @property
    def key(self) -> str:
        return fingerprint(self.labels)


@dataclass(frozen=True, slots=True)
class _Firing:
    rule: str
    labels: dict[str, Any]
    severity: str


@dataclass(frozen=True, slots=True)
class _Phone:
    display: str
    waba_id: str | None


class SignalEvaluator:
    """Judges the signal rules and records what changed. Every minute is cheap: one query per
    rule and scope (a delivery summary reads two tables), scopes found from the hours judged,
    and a write only when an alert fires or resolves."""

    def __init__(
        self,
        db: Database,
        rules: Sequence[SignalRuleConfig],
        alerting: Alerting,
        zone: str = "UTC",
    ) -> None:
        self.db, self.alerting, self.zone = db, alerting, zone
        self.rules = tuple(r for r in rules if r.enabled)
        # alerts of these rules that nothing evaluates any more (a rule turned off) resolve
        self.names = frozenset({r.name for r in rules} | BUILT_IN_NAMES)
        # other rules of firing alerts → whether they were signal rules (since removed from the
        # configuration: their alerts resolve too); the configuration is read once, so it holds
        self._removed: dict[str, bool] = {}
        # (rule, scope, oldest hour, first judged hour) → the hours before the judged windows
        self._older: dict[tuple[str, Scope, datetime, datetime], dict[datetime, sig.Hour]] = {}
        self._kept: dict[tuple[str, Scope, datetime, datetime], dict[datetime, sig.Hour]] = {}

    def run(self, now: datetime) -> int:
        """Judge every rule at ``now``; returns how many alerts fired or resolved."""
        self._kept = {}
        with self.db.read() as conn:
            firing = self._firing(conn)
            found = [f for rule in self.rules for f in self._judge(conn, rule, firing, now)]
            changes = _changed(found, firing)
            phones = _phones(conn, {f.scope.phone_number_id for f in changes}) if changes else {}
        self._older = self._kept  # what this run did not use is let go
        if not changes:
            return 0
        signals = [self._signal(f, phones) for f in changes]
        with self.db.write() as conn:
            queued = record(self.db, conn, [Timed(s, now) for s in signals], now, self.alerting)
            _write_events(self.db, conn, changes, signals, phones, now)
        if queued:
            self.alerting.queued()
        return len(changes)

    def _firing(self, conn: Connection) -> dict[str, _Firing]:
        """The firing alerts of signal rules: those configured, and those of rules since
        removed (known by the signal events they left)."""
        a, e = schema.alerts, schema.events
        query = select(a.c.fingerprint, a.c.rule, a.c.labels, a.c.severity).where(
            a.c.state == "firing"
        )
        rows = conn.execute(query).all()
        unknown = sorted({r.rule for r in rows if r.rule not in self.names} - set(self._removed))
        if unknown:
            kinds = [f"{rule}:firing" for rule in unknown]
            signalled = select(e.c.kind).where(e.c.field == FIELD, e.c.kind.in_(kinds)).distinct()
            found = set(conn.execute(signalled).scalars())
            self._removed.update({rule: f"{rule}:firing" in found for rule in unknown})
        return {
            row.fingerprint: _Firing(row.rule, row.labels, row.severity)
            for row in rows
            if row.rule in self.names or self._removed.get(row.rule, False)
        }

    def _judge(
        self,
        conn: Connection,
        config: SignalRuleConfig,
        firing: Mapping[str, _Firing],
        now: datetime,
    ) -> list[Finding]:
        rule = config.rule()
        whole, recent = sig.span(rule, now, self.zone), sig.recent(rule, now, self.zone)
        severity = Severity(config.severity)
        found = []
        for scope in sorted(self._scopes(conn, config, rule, firing, now), key=_scope_order):
            series = self._series(conn, config, scope, whole, recent)
            verdict = sig.evaluate(rule, series, now, self.zone)
            labels = {**config.labels, "rule": config.name, **scope.labels()}
            found.append(
                Finding(config.name, labels, verdict.firing, severity, config, scope, verdict)
            )
        return found

    def _scopes(
        self,
        conn: Connection,
        config: SignalRuleConfig,
        rule: sig.Rule,
        firing: Mapping[str, _Firing],
        now: datetime,
    ) -> set[Scope]:
        fixed = Scope(config.phone_number_id, config.template, config.sender)
        scopes = {fixed} if not config.per else self._discover(conn, config, rule, now)
        for alert in firing.values():  # each firing alert is judged again, to resolve
            if alert.rule != config.name or set(alert.labels) & set(DIMENSIONS) != set(
                config.dimensions
            ):
                continue
            scope = Scope(*(alert.labels.get(d) for d in DIMENSIONS))
            if all(getattr(fixed, d) in (None, getattr(scope, d)) for d in DIMENSIONS):
                scopes.add(scope)
        return scopes

    def _discover(
        self, conn: Connection, config: SignalRuleConfig, rule: sig.Rule, now: datetime
    ) -> set[Scope]:
        """The scopes with figures in the judged hours (none elsewhere can fire)."""
        info = sig.METRICS[rule.metric]
        recent = sig.recent(rule, now, self.zone)
        if info.family is Family.RESPONSES:
            t = schema.response_stats
            other, column = "sender", t.c.sender_kind
            query = select(t.c.phone_number_id, column).where(t.c.kind == info.kind, t.c.count > 0)
        else:
            t = schema.delivery_stats
            other, column = "template", t.c.template
            query = select(t.c.phone_number_id, column)
        query = query.where(t.c.bucket_start >= recent.start, t.c.bucket_start < recent.end)
        for dimension, col in (("phone_number_id", t.c.phone_number_id), (other, column)):
            if dimension in config.per:
                query = query.where(col.not_in([ALL, ""]))
            else:
                query = query.where(col == (getattr(config, dimension) or ALL))
        scopes = set()
        for phone, value in conn.execute(query.distinct()):
            values = {
                "phone_number_id": phone
                if "phone_number_id" in config.per
                else config.phone_number_id,
                other: value if other in config.per else getattr(config, other),
            }
            scopes.add(Scope(**values))
        return scopes

    def _series(
        self,
        conn: Connection,
        config: SignalRuleConfig,
        scope: Scope,
        whole: sig.Window,
        recent: sig.Window,
    ) -> dict[datetime, sig.Hour]:
        """The scope's hours over ``whole``: those of the judged windows read each time, the
        older ones (the baseline days) once an hour — they no longer change."""
        fresh = self._read(conn, config, scope, sig.Window(recent.start, whole.end))
        if whole.start >= recent.start:
            return fresh
        key = (config.name, scope, whole.start, recent.start)
        older = self._older.get(key)
        if older is None:
            older = self._read(conn, config, scope, sig.Window(whole.start, recent.start))
        self._kept[key] = older
        return {**older, **fresh}

    def _read(
        self, conn: Connection, config: SignalRuleConfig, scope: Scope, span: sig.Window
    ) -> dict[datetime, sig.Hour]:
        info = sig.METRICS[config.metric]
        if info.family is Family.RESPONSES:
            rs = schema.response_stats
            query = select(rs.c.bucket_start, rs.c.count, rs.c.total_seconds, rs.c.bins).where(
                rs.c.phone_number_id == (scope.phone_number_id or ALL),
                rs.c.sender_kind == (scope.sender or ALL),
                rs.c.kind == info.kind,
                rs.c.bucket_start >= span.start,
                rs.c.bucket_start < span.end,
            )
            return {
                start: sig.Durations(bytes(bins), int(count), float(total))
                for start, count, total, bins in conn.execute(query)
            }
        asked = delivery.Query(
            span.start, span.end, scope.phone_number_id, scope.template, Bucket.HOUR, self.zone
        )
        return {
            hour["start"]: sig.Deliveries(
                {k: hour[k] for k in DELIVERY_COUNTERS},
                {e["code"]: e["count"] for e in hour["errors"]},
            )
            for hour in delivery.summary(conn, asked)["series"]
        }

    def _signal(self, finding: Finding, phones: Mapping[str, _Phone]) -> Signal:
        config, verdict = finding.config, finding.verdict
        if config is None or verdict is None:
            summary = f"{finding.rule}: no longer evaluated (the rule was turned off or changed)"
            return Signal(finding.rule, finding.labels, False, finding.severity, summary, "")
        words = _words(config, finding.scope, verdict, phones, self.zone)
        if config.summary:
            summary = _render(config.summary, words)
            summary = summary if finding.firing else f"resolved: {summary}"
        else:
            summary = _summary(config, verdict, words, self.zone)
        description = _render(config.description, words) if config.description else ""
        if not description:
            description = _meaning(config)
        return Signal(
            finding.rule, finding.labels, finding.firing, finding.severity, summary, description
        )


def _changed(found: Sequence[Finding], firing: Mapping[str, _Firing]) -> list[Finding]:
    """The findings that fire or resolve an alert, and the firing alerts no rule judged any
    more (a rule turned off or changed), to resolve."""
    seen = {f.key for f in found}
    changes = [f for f in found if _changes(f, firing.get(f.key))]
    changes += [
        Finding(
            alert.rule,
            dict(alert.labels),
            False,
            Severity(alert.severity),
            scope=Scope(*(alert.labels.get(d) for d in DIMENSIONS)),
        )
        for key, alert in sorted(firing.items())
        if key not in seen
    ]
    return changes


def _changes(finding: Finding, alert: _Firing | None) -> bool:
    if finding.firing:
        return alert is None or alert.severity != finding.severity.value
    return alert is not None


def _scope_order(scope: Scope) -> tuple[str, str, str]:
    return (scope.phone_number_id or "", scope.template or "", scope.sender or "")


def _phones(conn: Connection, ids: set[str | None]) -> dict[str, _Phone]:
    wanted = sorted(i for i in ids if i)
    if not wanted:
        return {}
    p = schema.phone_numbers
    query = select(
        p.c.phone_number_id, p.c.display_phone_number, p.c.verified_name, p.c.waba_id
    ).where(p.c.phone_number_id.in_(wanted))
    found = {}
    for phone_id, number, name, waba_id in conn.execute(query):
        shown = f"+{number}" if number and str(number).isdigit() else f"number {phone_id}"
        found[phone_id] = _Phone(f"{shown} ({name})" if name else shown, waba_id)
    return found


def _words(
    config: SignalRuleConfig,
    scope: Scope,
    verdict: Verdict,
    phones: Mapping[str, _Phone],
    zone: str,
) -> dict[str, str]:
    """What summaries and descriptions may name, in words."""
    rule = config.rule()
    parts = []
    if scope.phone_number_id is not None:
        phone = phones.get(scope.phone_number_id)
        parts.append(phone.display if phone else f"number {scope.phone_number_id}")
    if scope.template is not None:
        parts.append(f"template {scope.template}")
    if scope.sender is not None:
        parts.append(f"{scope.sender} replies")
    threshold = config.above if config.above is not None else config.below
    ratio = verdict.ratio
    return {
        "rule": config.name,
        "metric": config.metric.value,
        "code": "" if config.code is None else str(config.code),
        "scope": ", ".join(parts) or "all numbers",
        "value": sig.format_value(config.metric, verdict.current.value),
        "count": str(verdict.current.count),
        "window": sig.describe_window(rule, verdict.window, zone),
        "baseline": sig.format_value(config.metric, verdict.baseline),
        "ratio": "n/a" if ratio is None else f"{ratio:.1f}",
        "days": str(rule.baseline_days),
        "threshold": "" if threshold is None else sig.format_value(config.metric, threshold),
        **{d: getattr(scope, d) or "" for d in DIMENSIONS},
    }


def _render(template: str, words: Mapping[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: words.get(m.group(1), m.group(0)), template)


def _summary(
    config: SignalRuleConfig, verdict: Verdict, words: Mapping[str, str], zone: str
) -> str:
    """``+15550783881 (Lucky Shrub): first-response p90 14m 10s in the hour to 10:00 UTC, 3.1×
    the 7-day median of 4m 35s (34 first responses)``."""
    rule = config.rule()
    info = sig.METRICS[config.metric]
    current = verdict.current
    median = f"{rule.baseline_days}-day median"
    head = f"{words['scope']}: "
    measured = f"{sig.phrase(config.metric, current.value, config.code)} {words['window']}"
    counted = f" ({current.count} {info.counted})" if info.unit is not Unit.COUNT else ""
    if not verdict.firing:
        if verdict.outcome is Outcome.TOO_FEW and info.unit is not Unit.COUNT:
            return (
                f"{head}too few {info.counted} {words['window']} to judge "
                f"({current.count}, fewer than {rule.least})"
            )
        if verdict.outcome is Outcome.NO_BASELINE:
            return f"{head}{measured} (no {median} yet: {verdict.baseline_days} days with traffic)"
        if verdict.baseline is not None:
            return f"{head}{measured} ({median} {words['baseline']})"
        return f"{head}{measured}"
    if rule.factor is not None and verdict.baseline is not None:
        ratio = verdict.ratio
        if ratio is None:
            return f"{head}{measured}, against a {median} of {words['baseline']}{counted}"
        if rule.factor > 1:
            return f"{head}{measured}, {ratio:.1f}× the {median} of {words['baseline']}{counted}"
        below = (1 - ratio) * 100
        return f"{head}{measured}, {below:.0f}% below the {median} of {words['baseline']}{counted}"
    if config.above:
        return f"{head}{measured}, above {words['threshold']}{counted}"
    if config.below is not None:
        return f"{head}{measured}, below {words['threshold']}{counted}"
    return f"{head}{measured}{counted}"


def _meaning(config: SignalRuleConfig) -> str:
    meaning = sig.METRICS[config.metric].meaning
    if config.code is not None and config.code in QUALITY_CODES:
        meaning = f"{config.code}: {QUALITY_CODES[config.code]}. {meaning}"
    return meaning


def _write_events(
    db: Database,
    conn: Connection,
    changes: Sequence[Finding],
    signals: Sequence[Signal],
    phones: Mapping[str, _Phone],
    now: datetime,
) -> None:
    """One event per transition: its key is the alert's and the moment it fired or resolved,
    as recorded, so evaluators on several processes write it once."""
    a, e = schema.alerts, schema.events
    keys = sorted({f.key for f in changes})
    rows = {
        row.fingerprint: row for row in conn.execute(select(a).where(a.c.fingerprint.in_(keys)))
    }
    events = []
    for finding, signal in zip(changes, signals, strict=True):
        row = rows.get(finding.key)
        state = "firing" if finding.firing else "resolved"
        if row is None or row.state != state:
            continue  # nothing changed (another evaluator got there first)
        moment = row.started_at if finding.firing else row.resolved_at
        identity = f"signal|{finding.key}|{state}|{moment.isoformat()}"
        phone_id = finding.scope.phone_number_id
        phone = phones.get(phone_id or "")
        events.append(
            {
                "dedupe_key": hashlib.sha256(identity.encode()).hexdigest(),
                "raw_id": None,
                "source": SOURCE,
                "field": FIELD,
                "kind": f"{finding.rule}:{state}",
                "waba_id": phone.waba_id if phone else None,
                "subject_kind": SubjectKind.PHONE_NUMBER.value if phone_id else None,
                "subject_id": phone_id,
                "occurred_at": moment,
                "received_at": now,
                "value": _event_value(finding, signal, state),
            }
        )
    if events:
        conn.execute(db.insert(e).on_conflict_do_nothing(index_elements=[e.c.dedupe_key]), events)


def _event_value(finding: Finding, signal: Signal, state: str) -> dict[str, Any]:
    value: dict[str, Any] = {
        "rule": finding.rule,
        "state": state,
        "severity": signal.severity.value,
        "labels": signal.labels,
        "summary": signal.summary,
    }
    config, verdict = finding.config, finding.verdict
    if config is not None and verdict is not None:
        value.update(
            metric=config.metric.value,
            code=config.code,
            outcome=verdict.outcome.value,
            value=verdict.current.value,
            count=verdict.current.count,
            baseline=verdict.baseline,
            baseline_days=verdict.baseline_days,
            ratio=verdict.ratio,
            window={
                "start": verdict.window.start.isoformat(),
                "end": verdict.window.end.isoformat(),
            },
        )
    return value
