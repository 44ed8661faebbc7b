"""Notification receivers down: every notification is delivered later, once; the outbox survives a
restart; a crash between sending and recording repeats the send with the same idempotency key."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from builders import envelope, template_status
from conftest import make_settings, run_server
from receiver import Receiver, receiving
from test_alerts import T0, Clock, delivery, outbox, process
from waquality.alerting.channels import channels
from waquality.alerting.dispatch import LEASE, Dispatcher
from waquality.store.database import Database


def wait_until(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.02)
    return found


def test_the_outbox_survives_a_restart_and_delivers_once(database_url: str) -> None:
    receiver = Receiver(refuse=1_000_000)  # down until told otherwise
    with receiving(receiver) as r:
        settings = make_settings(database_url, alert_urls=f"webhook+http://{r.url}/alerts")
        for live in run_server(settings):
            for body in (
                template_status(1, "APPROVED", T0),
                template_status(1, "DISABLED", T0 + 1),
            ):
                assert live.post_webhook(envelope(body)).status_code == 200
            wait_until("a refused attempt", lambda: r.refused >= 2)
            [pending] = live.api("/api/v1/notifications")
            assert pending["state"] == "pending" and pending["attempts"] >= 2
            assert pending["last_error"]
        r.refuse = 0  # the receiver is back while the server is down
        for live in run_server(settings):
            [first] = r.wait(1)
            # a second alert, sent after the first: once it has arrived, the first was not
            # sent again on the way
            for body in (
                template_status(2, "APPROVED", T0),
                template_status(2, "DISABLED", T0 + 1),
            ):
                assert live.post_webhook(envelope(body)).status_code == 200
            received = r.wait(2)
            log = live.api("/api/v1/notifications")
    told = [m.body["alerts"][0]["labels"]["template_id"] for m in received]
    assert told == ["1", "2"] and len(r.received) == 2
    assert first.headers["idempotency-key"] == pending["idempotency_key"]
    assert {n["state"] for n in log} == {"sent"}


class CrashAfterSending(Dispatcher):
    """Sends, then dies before it can record that it did."""

    def _record(self, row: Any, error: str | None) -> None:
        raise SystemExit("killed between sending and recording")


def test_a_crash_between_sending_and_recording_repeats_with_the_same_key(db: Database) -> None:
    clock = Clock()
    with receiving(Receiver()) as r:
        url = f"webhook+http://{r.url}/alerts"
        with delivery(db, url, clock=clock) as (al, _):
            process(db, al, template_status(3, "APPROVED", T0), clock=clock)
            assert process(db, al, template_status(3, "DISABLED", T0 + 1), clock=clock) == 1
        crashing = CrashAfterSending(db, channels([url]), clock=clock)
        try:
            crashing.run_once()
        except SystemExit:
            pass
        finally:
            crashing.close()
        [sent] = r.wait(1)
        restarted = Dispatcher(db, channels([url]), clock=clock)
        try:
            assert restarted.run_once() == 0  # claimed by the dead one until its lease ends
            clock.now += LEASE + timedelta(seconds=1)
            assert restarted.run_once() == 1
            assert restarted.run_once() == 0
        finally:
            restarted.close()
        first, again = r.wait(2)
    assert first.headers["idempotency-key"] == again.headers["idempotency-key"]
    assert first.body == again.body == sent.body
    [note] = outbox(db)
    assert note["state"] == "sent" and note["idempotency_key"] == sent.headers["idempotency-key"]
