"""Deliver the outbox: every pending notification, with retries and backoff, outcome recorded.

A notification recorded as sent is never sent again; a crash between sending and recording sends
it once more, with the same idempotency key, so the receiver can drop the repeat. A receiver that
keeps failing is retried with growing pauses and, after ``give_up_after``, its notification is
marked failed (visible in the delivery log).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from waquality.alerting import rules
from waquality.alerting.book import Alerting, Timed, repeat_due
from waquality.alerting.channels import Channel, DeliveryError
from waquality.ingest import rejections
from waquality.store import inbox, schema
from waquality.store.database import Database

log = logging.getLogger(__name__)
n = schema.notifications
BATCH = 100
FIRST_RETRY = timedelta(seconds=1)
MAX_RETRY = timedelta(minutes=5)
REPEAT_CHECK = timedelta(minutes=1)
# Notifications being sent by one dispatcher: others on the same database leave them alone this
# long (after a crash, they are sent again then, with the same idempotency key).
LEASE = timedelta(minutes=2)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class HealthChecks:
    """Monitoring-health thresholds: silence per WABA, refused signatures per window."""

    webhook_silence: timedelta | None = None
    signature_threshold: int = 20  # 0: never alert
    signature_window: timedelta = timedelta(minutes=5)


class Dispatcher:
    def __init__(
        self,
        db: Database,
        receivers: Mapping[str, Channel],
        *,
        clock: Callable[[], datetime] = utcnow,
        give_up_after: timedelta = timedelta(days=1),
        repeat_interval: timedelta = timedelta(hours=4),
        public_url: str | None = None,
        alerting: Alerting | None = None,
        health: HealthChecks = HealthChecks(),
    ) -> None:
        self.alerting, self.health = alerting, health
        self.db, self.receivers, self.clock = db, receivers, clock
        self.give_up_after, self.repeat_interval = give_up_after, repeat_interval
        self.public_url = public_url
        self._next_repeat_check: datetime | None = None

    def _check_health(self, now: datetime) -> None:
        """Monitoring-health alerts: silent WABAs, quarantined payloads, refused signatures."""
        if self.alerting is None:
            return
        signals = rules.quarantine(inbox.open_quarantined(self.db))
        health = self.health
        if health.signature_threshold:
            refused = rejections.signature_failures(self.db, now - health.signature_window)
            signals += rules.signature_failures(
                refused, health.signature_window, health.signature_threshold
            )
        if health.webhook_silence is not None:
            w, watched = schema.wabas, schema.watched_wabas
            query = select(watched.c.waba_id, w.c.last_webhook_at).join_from(
                watched, w, w.c.id == watched.c.waba_id, isouter=True
            )
            with self.db.read() as conn:
                for waba_id, last in conn.execute(query):
                    signals += rules.webhook_silence(waba_id, last, now, health.webhook_silence)
        self.alerting.signal(self.db, [Timed(s, now) for s in signals], now)

    def close(self) -> None:
        for channel in self.receivers.values():
            channel.close()

    def run_once(self) -> int:
        """Send what is due; returns how many were sent."""
        now = self.clock()
        if self._next_repeat_check is None or now >= self._next_repeat_check:
            self._check_health(now)
            alerting = self.alerting or Alerting(tuple(self.receivers), self.public_url)
            repeat_due(self.db, now, self.repeat_interval, alerting)
            self._next_repeat_check = now + REPEAT_CHECK
        query = (
            select(n)
            .where(n.c.state == "pending", n.c.next_attempt_at <= now)
            .order_by(n.c.id)
            .limit(BATCH)
        )
        with self.db.read() as conn:
            if conn.execute(query.limit(1)).first() is None:
                return 0  # the usual case costs no write
        with self.db.write() as conn:  # claim them: another dispatcher leaves them alone
            due = list(conn.execute(query.with_for_update(skip_locked=True)))
            ids = [row.id for row in due]
            conn.execute(update(n).where(n.c.id.in_(ids)).values(next_attempt_at=now + LEASE))
        messages: dict[tuple[str, str], list[Any]] = {}
        for row in due:  # a group's due notifications go out as one message
            group = row.group_key or f"alone-{row.id}"
            messages.setdefault((row.receiver, group), []).append(row)
        sent = 0
        for (receiver, _), rows in messages.items():
            error = self._send(receiver, rows)
            sent += len(rows) if error is None else 0
            for row in rows:
                self._record(row, error)
        return sent

    def _send(self, receiver: str, rows: list[Any]) -> str | None:
        channel = self.receivers.get(receiver)
        if channel is None:
            return "receiver no longer configured"
        keys = sorted(row.idempotency_key for row in rows)
        key = keys[0] if len(keys) == 1 else hashlib.sha256("|".join(keys).encode()).hexdigest()
        try:
            channel.send([row.payload for row in rows], key)
        except DeliveryError as exc:
            return str(exc)[:500]
        except Exception as exc:  # a channel bug must not stop the others
            log.exception("delivering to %s", receiver)
            return f"{type(exc).__name__}"
        return None

    def _record(self, row: Any, error: str | None) -> None:
        now = self.clock()
        attempts = int(row.attempts) + 1
        values: dict[str, object] = {"attempts": attempts}
        if error is None:
            values.update(state="sent", sent_at=now, last_error=None)
        else:
            created = row.created_at
            pause = min(FIRST_RETRY * 2 ** min(attempts - 1, 20), MAX_RETRY)
            values["last_error"] = error
            if now - created >= self.give_up_after:
                values["state"] = "failed"
            else:
                values["next_attempt_at"] = now + pause
            log.warning(
                "notification %d to %s failed (attempt %d): %s",
                row.id,
                row.receiver,
                attempts,
                error,
            )
        with self.db.write() as conn:
            conn.execute(update(n).where(n.c.id == row.id).values(**values))
