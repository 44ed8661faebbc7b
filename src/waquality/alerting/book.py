"""The alert book: fire and resolve alerts, and put their notifications in the outbox, inside
the caller's transaction (the one that changed the state), so none is lost or invented."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, func, or_, select, update

from waquality.alerting.event_rules import BUILT_IN, EventRule
from waquality.alerting.event_rules import evaluate as evaluate_events
from waquality.alerting.rules import Severity, Signal, evaluate, fingerprint
from waquality.domain.events import Event
from waquality.store import bulk, inbox, schema
from waquality.store.database import Database
from waquality.store.state import Changed

a, n = schema.alerts, schema.notifications


class AlertState(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Timed:
    signal: Signal
    at: datetime


@dataclass(frozen=True, slots=True)
class Alerting:
    """What a writer of state needs to raise alerts: the receivers' names, the public address
    for links, and whom to wake once notifications are committed."""

    receivers: tuple[str, ...] = ()
    public_url: str | None = None
    on_queued: Callable[[], None] | None = None
    group_by: tuple[str, ...] = ("rule", "waba_id")
    group_wait: timedelta = timedelta(seconds=30)
    group_interval: timedelta = timedelta(minutes=5)
    # (labels to match, receiver names, continue): the first match wins unless it continues
    routes: tuple[tuple[dict[str, str], tuple[str, ...], bool], ...] = ()

    def receivers_for(self, labels: dict[str, Any], severity: str) -> tuple[str, ...]:
        facts = {**labels, "severity": severity}
        chosen: list[str] = []
        for match, names, go_on in self.routes:
            if all(facts.get(k) == v for k, v in match.items()):
                chosen += [name for name in names if name not in chosen]
                if not go_on:
                    break
        return tuple(chosen) if chosen else self.receivers

    event_rules: tuple[EventRule, ...] = BUILT_IN

    def apply(
        self,
        db: Database,
        conn: Connection,
        changes: Sequence[Changed],
        now: datetime,
        events: Sequence[tuple[Event, datetime]] = (),
        *,
        notify: bool = True,
    ) -> int:
        """Record the alerts a batch's state changes and new events raise or resolve."""
        signals = [Timed(signal, change.at) for change in changes for signal in evaluate([change])]
        for event, at in events:
            signals += [Timed(s, at) for s in evaluate_events(self.event_rules, [event])]
        return record(db, conn, signals, now, self, notify=notify)

    def queued(self) -> None:
        if self.on_queued is not None:
            self.on_queued()

    def signal(self, db: Database, signals: Sequence[Timed], now: datetime) -> int:
        """Record signals that come from no state change (monitoring health), in a transaction
        of their own."""
        with db.write() as conn:
            count = record(db, conn, signals, now, self)
        if count:
            self.queued()
        return count


# Alerts of these rules mute the other alerts of their WABA (a restricted account explains them).
INHIBITORS = frozenset({"account_restricted", "account_banned"})


def record(
    db: Database,
    conn: Connection,
    signals: Sequence[Timed],
    now: datetime,
    alerting: Alerting,
    *,
    notify: bool = True,
) -> int:
    """Apply the signals of one batch, each alert's in time order (an alert that fires and
    resolves within the batch is recorded, and told, as both); returns how many notifications
    were queued (none when ``notify`` is false: a quiet replay or backfill)."""
    by_alert: dict[str, list[Timed]] = {}
    for timed in signals:
        by_alert.setdefault(fingerprint(timed.signal.labels), []).append(timed)
    if not by_alert:
        return 0
    query = select(a).where(a.c.fingerprint.in_(sorted(by_alert))).with_for_update()
    existing = {row.fingerprint: row for row in conn.execute(query)}
    steps_of: dict[str, list[dict[str, Any]]] = {}
    for key, timed_signals in sorted(by_alert.items()):
        row: Any = existing.get(key)
        steps = []
        for timed in sorted(timed_signals, key=lambda t: t.at):  # stable: same time, in order
            values = _transition(timed, row, now)
            if values is not None:
                steps.append(values)
                row = SimpleNamespace(**values)
        if steps:
            steps_of[key] = steps
    written = _write_alerts(conn, steps_of, set(existing))
    changed = [(key, values) for key in written for values in steps_of[key]]
    final_state = {key: values["state"] for key, values in changed}  # the last step wins
    ends_firing = {key for key, state in final_state.items() if state == AlertState.FIRING}
    if not notify:  # a quiet replay: the alerts change, nobody is told (as if already told)
        _told(conn, sorted(ends_firing), now)
        return 0
    mute = Muting.load(conn, now)
    outbox: list[dict[str, Any]] = []
    told_here: set[str] = set()
    resolved = {key for key, values in changed if values["state"] == AlertState.RESOLVED}
    notified = _notified(conn, resolved)
    for key, values in changed:
        if mute.muted(values["rule"], values["labels"]):
            continue
        if values["state"] == AlertState.RESOLVED and not (key in told_here or key in notified):
            continue
        notes = _notifications(conn, key, values, alerting, now)
        if values["state"] == AlertState.FIRING and notes:
            told_here.add(key)
        outbox += notes
    _told(conn, sorted(told_here & ends_firing), now)
    return _queue(db, conn, outbox)


def _notifications(
    conn: Connection,
    key: str,
    values: dict[str, Any],
    alerting: Alerting,
    now: datetime,
    repeat: bool = False,
) -> list[dict[str, Any]]:
    """One notification of the alert per receiver its route gives; warnings join their group."""
    payload = _payload(key, values, alerting.public_url)
    if repeat:
        payload["repeat"] = True
    notes = []
    for receiver in alerting.receivers_for(values["labels"], values["severity"]):
        note = _notification(key, receiver, payload, now, repeat_at=now if repeat else None)
        if values["severity"] != Severity.CRITICAL.value:  # warnings wait for their group
            _group(conn, note, values["labels"], alerting, now)
        notes.append(note)
    return notes


def _told(conn: Connection, keys: Sequence[str], now: datetime) -> None:
    if keys:
        conn.execute(update(a).where(a.c.fingerprint.in_(keys)).values(notified_at=now))


def _group(
    conn: Connection,
    note: dict[str, Any],
    labels: dict[str, Any],
    alerting: Alerting,
    now: datetime,
) -> None:
    """Hold a warning for its group: it joins the group's held message; else it waits
    ``group_wait`` for a new group, or until ``group_interval`` after the group's last one."""
    values = "|".join(f"{k}={labels.get(k, '')}" for k in alerting.group_by)
    key = hashlib.sha256(f"{note['receiver']}|{values}".encode()).hexdigest()
    waiting = conn.execute(
        select(func.min(n.c.next_attempt_at)).where(n.c.group_key == key, n.c.state == "pending")
    ).scalar()
    last = conn.execute(
        select(func.max(n.c.sent_at)).where(n.c.group_key == key, n.c.state == "sent")
    ).scalar()
    if waiting is not None:  # join the group's message that is being held
        due = max(now, inbox.as_utc(waiting))
    elif last is not None:
        due = max(now, inbox.as_utc(last) + alerting.group_interval)
    else:
        due = now + alerting.group_wait
    note.update(group_key=key, next_attempt_at=due)


def _transition(timed: Timed, row: Any, now: datetime) -> dict[str, Any] | None:
    """The alert's new row, or ``None`` when the signal changes nothing worth telling."""
    s = timed.signal
    firing_now = row is not None and row.state == AlertState.FIRING
    if s.firing:
        if firing_now and s.severity.value == row.severity:
            return None  # still firing: repeats are the dispatcher's business
        return {
            "rule": s.rule,
            "labels": s.labels,
            "severity": s.severity.value,
            "state": AlertState.FIRING,
            "summary": s.summary,
            "description": s.description,
            "started_at": row.started_at if firing_now else timed.at,
            "resolved_at": None,
            "updated_at": now,
            "notified_at": None,  # set once it is told
        }
    if not firing_now:
        return None
    return {
        "rule": row.rule,
        "labels": row.labels,
        "severity": row.severity,
        "state": AlertState.RESOLVED,
        "summary": s.summary,
        "description": row.description,
        "started_at": row.started_at,
        "resolved_at": timed.at,
        "updated_at": now,
    }


def _write_alerts(
    conn: Connection, steps_of: dict[str, list[dict[str, Any]]], known: set[str]
) -> list[str]:
    """Store each alert's last step (stored alerts updated a few statements for all, new ones
    inserted in one); returns the alerts written, in order: a new alert another process fired a
    moment ago is left to it, and it tells it."""
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    inserts: list[dict[str, Any]] = []
    for key, steps in steps_of.items():
        final = {"fingerprint": key, **steps[-1], "state": str(steps[-1]["state"])}
        if key in known:
            updates.setdefault(tuple(final), []).append(final)
        else:
            inserts.append({"notified_at": None, **final})  # a new alert is firing, or was
    for rows in updates.values():
        bulk.update(conn, a, rows, by=("fingerprint",))
    new = bulk.insert_new(conn, a, inserts, key="fingerprint", returning=("fingerprint",))
    inserted = {key for (key,) in new}
    return [key for key in steps_of if key in known or key in inserted]


def _notified(conn: Connection, keys: set[str]) -> set[str]:
    """Those of ``keys`` whose firing was told (a resolution is told only then)."""
    if not keys:
        return set()
    query = select(n.c.fingerprint).where(
        n.c.fingerprint.in_(sorted(keys)), n.c.status == AlertState.FIRING.value
    )
    return set(conn.execute(query.distinct()).scalars())


def _queue(db: Database, conn: Connection, outbox: list[dict[str, Any]]) -> int:
    if outbox:  # the same notification twice (a replay) is one
        statement = db.insert(n).on_conflict_do_nothing(index_elements=[n.c.idempotency_key])
        conn.execute(statement, outbox)
    return len(outbox)


@dataclass(frozen=True, slots=True)
class Muting:
    """Active silences and the WABAs whose account alerts inhibit the rest."""

    silences: tuple[dict[str, str], ...]
    inhibited_wabas: frozenset[str]

    @classmethod
    def load(cls, conn: Connection, now: datetime) -> Muting:
        active = conn.execute(
            select(schema.silences.c.matchers).where(schema.silences.c.expires_at > now)
        )
        inhibitors = conn.execute(
            select(a.c.labels).where(
                a.c.state == AlertState.FIRING, a.c.rule.in_(sorted(INHIBITORS))
            )
        )
        wabas = frozenset(
            str(labels.get("waba_id")) for (labels,) in inhibitors if labels.get("waba_id")
        )
        return cls(tuple(dict(m) for (m,) in active), wabas)

    def muted(self, rule: str, labels: dict[str, Any]) -> bool:
        if any(all(labels.get(k) == v for k, v in m.items()) for m in self.silences):
            return True
        return rule not in INHIBITORS and labels.get("waba_id") in self.inhibited_wabas


def repeat_due(db: Database, now: datetime, repeat_interval: timedelta, alerting: Alerting) -> int:
    """Notify firing alerts again once ``repeat_interval`` passed since they were last told,
    and those never told (silenced or inhibited when they fired) once nothing mutes them."""
    if not alerting.receivers and not alerting.routes:
        return 0
    query = select(a).where(
        a.c.state == AlertState.FIRING,
        or_(a.c.notified_at.is_(None), a.c.notified_at <= now - repeat_interval),
    )
    with db.write() as conn:
        due = list(conn.execute(query.with_for_update()).mappings())
        mute = Muting.load(conn, now)
        outbox: list[dict[str, Any]] = []
        for row in due:
            values = dict(row)
            if mute.muted(values["rule"], values["labels"]):
                continue
            repeat = values["notified_at"] is not None
            outbox += _notifications(conn, values["fingerprint"], values, alerting, now, repeat)
        _told(conn, sorted({note["fingerprint"] for note in outbox}), now)
        return _queue(db, conn, outbox)


def _payload(key: str, values: dict[str, Any], public_url: str | None) -> dict[str, Any]:
    labels = dict(values["labels"])
    link = _link(public_url, labels)
    return {
        "status": values["state"],
        "fingerprint": key,
        "labels": labels,
        "severity": values["severity"],
        "summary": values["summary"],
        "description": values["description"],
        "startsAt": _iso(values["started_at"]),
        "endsAt": _iso(values["resolved_at"]),
        "url": link,
    }


def _link(public_url: str | None, labels: dict[str, Any]) -> str | None:
    """The dashboard page that shows what an alert is about: its number or template, else
    the alerts page."""
    if not public_url:
        return None
    base = public_url.rstrip("/")
    if labels.get("phone_number"):
        return f"{base}/numbers/{quote(str(labels['phone_number']), safe='')}"
    if labels.get("template_id"):
        return f"{base}/templates/{quote(str(labels['template_id']), safe='')}"
    return f"{base}/alerts"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _notification(
    key: str,
    receiver: str,
    payload: dict[str, Any],
    now: datetime,
    *,
    repeat_at: datetime | None = None,
) -> dict[str, Any]:
    moment = payload["endsAt"] if payload["status"] == AlertState.RESOLVED else payload["startsAt"]
    if repeat_at is not None:
        moment = f"repeat {repeat_at.isoformat()}"
    identity = f"{key}|{receiver}|{payload['status']}|{payload['severity']}|{moment}"
    return {
        "fingerprint": key,
        "receiver": receiver,
        "status": payload["status"],
        "payload": payload,
        "idempotency_key": hashlib.sha256(identity.encode()).hexdigest(),
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "group_key": None,
        "created_at": now,
    }


def alerts(db: Database, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Alerts, most recently changed first."""
    query = select(a).order_by(a.c.updated_at.desc(), a.c.fingerprint).limit(limit)
    if state is not None:
        query = query.where(a.c.state == state)
    with db.read() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def firing_counts(db: Database) -> dict[str, int]:
    """Firing alerts per severity."""
    query = select(a.c.severity, func.count()).where(a.c.state == AlertState.FIRING)
    with db.read() as conn:
        return {severity: int(n) for severity, n in conn.execute(query.group_by(a.c.severity))}


def notifications(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    """The delivery log, newest first (payloads included, receivers by name only)."""
    query = select(n).order_by(n.c.id.desc()).limit(limit)
    with db.read() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


# -- silences ------------------------------------------------------------------------------------


def add_silence(
    db: Database, matchers: dict[str, str], comment: str, expires_at: datetime, now: datetime
) -> dict[str, Any]:
    row = {"matchers": matchers, "comment": comment, "created_at": now, "expires_at": expires_at}
    with db.write() as conn:
        new_id = conn.execute(schema.silences.insert().returning(schema.silences.c.id), [row])
        return {"id": new_id.scalar_one(), **row}


def silences(db: Database, now: datetime, *, include_expired: bool = False) -> list[dict[str, Any]]:
    t = schema.silences
    query = select(t).order_by(t.c.id.desc())
    if not include_expired:
        query = query.where(t.c.expires_at > now)
    with db.read() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def expire_silence(db: Database, silence_id: int, now: datetime) -> bool:
    t = schema.silences
    with db.write() as conn:
        result = conn.execute(
            update(t).where(t.c.id == silence_id, t.c.expires_at > now).values(expires_at=now)
        )
        return bool(result.rowcount)
