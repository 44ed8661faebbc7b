"""The alert book: fire and resolve alerts, and put their notifications in the outbox, inside
the caller's transaction (the one that changed the state), so none is lost or invented."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from waquality.alerting.rules import Signal, evaluate, fingerprint
from waquality.store import schema
from waquality.store.database import Database
from waquality.store.state import Changed

a, n = schema.alerts, schema.notifications


class AlertState:
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

    def apply(
        self, db: Database, conn: Connection, changes: Sequence[Changed], now: datetime
    ) -> int:
        signals = [Timed(signal, change.at) for change in changes for signal in evaluate([change])]
        return record(db, conn, signals, now, self.receivers, self.public_url)

    def queued(self) -> None:
        if self.on_queued is not None:
            self.on_queued()


def record(
    db: Database,
    conn: Connection,
    signals: Sequence[Timed],
    now: datetime,
    receivers: Sequence[str],
    public_url: str | None = None,
) -> int:
    """Apply the signals of one batch; returns how many notifications were queued."""
    latest: dict[str, Timed] = {}
    for timed in signals:  # per alert, the batch's last word counts
        latest[fingerprint(timed.signal.labels)] = timed
    if not latest:
        return 0
    query = select(a).where(a.c.fingerprint.in_(sorted(latest))).with_for_update()
    existing = {row.fingerprint: row for row in conn.execute(query)}
    outbox: list[dict[str, Any]] = []
    for key, timed in sorted(latest.items()):
        s, row = timed.signal, existing.get(key)
        firing_now = row is not None and row.state == AlertState.FIRING
        if s.firing:
            escalated = firing_now and row is not None and s.severity.value != row.severity
            if firing_now and not escalated:
                continue
            values = {
                "rule": s.rule,
                "labels": s.labels,
                "severity": s.severity.value,
                "state": AlertState.FIRING,
                "summary": s.summary,
                "description": s.description,
                "started_at": row.started_at if firing_now and row is not None else timed.at,
                "resolved_at": None,
                "updated_at": now,
            }
        elif firing_now and row is not None:
            values = {
                "state": AlertState.RESOLVED,
                "summary": s.summary,
                "resolved_at": timed.at,
                "updated_at": now,
                "started_at": row.started_at,
                "severity": row.severity,
                "labels": row.labels,
                "description": row.description,
            }
        else:
            continue
        if row is None:
            conn.execute(a.insert().values(fingerprint=key, **values))
        else:
            conn.execute(update(a).where(a.c.fingerprint == key).values(**values))
        payload = _payload(key, values, public_url)
        for receiver in receivers:
            outbox.append(_notification(key, receiver, payload, now))
    if outbox:  # the same notification twice (a replay) is one
        statement = db.insert(n).on_conflict_do_nothing(index_elements=[n.c.idempotency_key])
        conn.execute(statement, outbox)
    return len(outbox)


def _payload(key: str, values: dict[str, Any], public_url: str | None) -> dict[str, Any]:
    labels = dict(values["labels"])
    link = None
    if public_url:
        link = f"{public_url.rstrip('/')}/api/v1/alerts?state={values['state']}"
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


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _notification(
    key: str, receiver: str, payload: dict[str, Any], now: datetime
) -> dict[str, Any]:
    moment = payload["endsAt"] if payload["status"] == AlertState.RESOLVED else payload["startsAt"]
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
        "created_at": now,
    }


def alerts(db: Database, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Alerts, most recently changed first."""
    query = select(a).order_by(a.c.updated_at.desc(), a.c.fingerprint).limit(limit)
    if state is not None:
        query = query.where(a.c.state == state)
    with db.read() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def notifications(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    """The delivery log, newest first (payloads included, receivers by name only)."""
    query = select(n).order_by(n.c.id.desc()).limit(limit)
    with db.read() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]
