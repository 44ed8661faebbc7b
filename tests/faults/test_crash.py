"""Crash under load, the quick version of ``benchmarks/crash.py``: the server and then its
processing child are killed with SIGKILL mid-stream; nothing acknowledged is lost, nothing is
stored or processed twice."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from builders import envelope, template_status
from conftest import LiveServer, signed_headers, wait_for
from waquality.errors import StoreUnavailable
from waquality.process.child import spawn_context
from waquality.store.database import WriteGate

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import crash  # noqa: E402


def test_killed_server_and_worker_lose_nothing(database_url: str, tmp_path: Path) -> None:
    report = crash.run(
        database_url, "test", posts=1500, messages_share=0.8, tmp=tmp_path, drain_timeout=120
    )
    assert report.refused == {} and report.acked + report.in_doubt == report.posts
    assert report.acked >= report.posts - 64, report.line()  # only those in flight at the kill
    assert report.lost == 0 and report.stored_twice == 0 and report.unexpected == 0
    assert report.processed == report.stored >= report.acked
    assert report.events == report.events_expected > 0


def _hold(gate: WriteGate, held: Any) -> None:
    with gate.background():
        held.set()
        time.sleep(60)


def test_a_writer_killed_while_holding_the_gate_does_not_block_the_next() -> None:
    context = spawn_context()
    gate = WriteGate(context)
    held = context.Event()
    holder = context.Process(target=_hold, args=(gate, held), daemon=True)
    holder.start()
    assert held.wait(30)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    with pytest.raises(StoreUnavailable), gate.priority(time.monotonic() + 0.2):
        pass  # the dead holder's hold is still there
    gate.reset()  # what the supervisor does before it starts a new child
    with gate.priority(time.monotonic() + 1):
        pass
    with gate.background():
        pass


def test_acknowledgements_go_on_when_the_idle_processing_child_is_killed(
    server: LiveServer,
) -> None:
    """The child waits for work, and for the word to stop, on primitives it shares with the
    server: its death while waiting must not hang the server's next wakeup, or the
    acknowledgement behind it, or the server's stop."""

    def post(index: int) -> int:
        body = envelope(template_status(index, "APPROVED", 1_760_000_000 + index))
        headers = signed_headers(body)
        return server.client.post(
            "/webhooks/whatsapp", content=body, headers=headers, timeout=5
        ).status_code

    assert post(0) == 200
    server.wait_processed()
    child = server.runtime.processing
    assert child is not None
    first = child._process
    os.kill(first.pid, signal.SIGKILL)
    assert [post(index) for index in range(1, 6)] == [200] * 5
    wait_for(lambda: child._process is not first and child._process.is_alive())
    assert server.wait_processed()["processed"] == 6
