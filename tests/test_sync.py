"""Waking across processes never hangs on a waiter that died (see ``waquality.sync``)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from conftest import wait_for
from waquality.process.child import spawn_context
from waquality.store.database import WriteGate
from waquality.sync import SharedCondition, SharedEvent

context = spawn_context()


def _wait_forever(event: SharedEvent, waiting: SharedEvent) -> None:
    waiting.set()
    event.wait()


def _enter_gate(gate: WriteGate, waiting: SharedEvent) -> None:
    waiting.set()
    with gate.background():
        pass


def _finishes(work: Callable[[], Any], seconds: float = 5.0) -> bool:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def _killed_while_waiting(cond: SharedCondition, target: Callable[..., None], *args: Any) -> None:
    waiting = SharedEvent(context)
    child = context.Process(target=target, args=(*args, waiting), daemon=True)
    child.start()
    assert waiting.wait(30)
    wait_for(lambda: cond.sleepers == 1)
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)


def test_setting_an_event_whose_waiter_was_killed_returns_at_once() -> None:
    event = SharedEvent(context)
    _killed_while_waiting(event.cond, _wait_forever, event)
    assert _finishes(event.set)
    assert event.wait(0) and event.is_set()
    event.clear()
    assert not event.wait(0.05)


def test_an_event_wakes_a_waiter_in_another_process_and_times_out_otherwise() -> None:
    event, waiting = SharedEvent(context), SharedEvent(context)
    child = context.Process(target=_wait_forever, args=(event, waiting), daemon=True)
    child.start()
    assert waiting.wait(30)
    began = time.monotonic()
    assert not event.wait(0.2)
    assert time.monotonic() - began >= 0.2
    event.set()
    child.join(10)
    assert child.exitcode == 0


def test_releasing_the_gate_while_a_killed_writer_waited_for_it_returns_at_once() -> None:
    gate = WriteGate(context)
    held = gate.priority()
    held.__enter__()
    _killed_while_waiting(gate._shared.cond, _enter_gate, gate)
    assert _finishes(lambda: held.__exit__(None, None, None))  # wakes the dead waiter
    assert _finishes(lambda: gate.background().__enter__())
