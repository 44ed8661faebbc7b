"""Waiting and waking across processes, safe when a waiter dies.

``serve`` shares a write gate and two events with its processing child. The standard library's
``multiprocessing.Condition`` (``Event`` is built on it) wakes waiters precisely: it holds the
lock until each woken waiter has taken its wakeup, so that no newcomer can take it instead. But
it waits for that for ever, and a waiter killed while it waited (an out-of-memory kill, a
crash, a stop signal sent to the whole process group) never takes it: the waker hangs for good,
and with it every webhook acknowledgement. Here it waits at most ``WAKE_TIMEOUT`` for them; a
dead waiter costs the first wakeup after its death that long, once.
"""

from __future__ import annotations

import time
from multiprocessing.context import BaseContext
from multiprocessing.synchronize import Condition, Event
from typing import Any

WAKE_TIMEOUT = 1.0  # seconds: the longest a waker waits for the waiters it woke to wake


class SharedCondition(Condition):
    """``multiprocessing.Condition`` whose ``notify`` (and ``notify_all``) gives up on waiters
    that do not wake within ``WAKE_TIMEOUT``."""

    def __init__(self, context: BaseContext, lock: Any = None) -> None:
        super().__init__(lock, ctx=context)

    @property
    def sleepers(self) -> int:
        """How many wait now (dead ones included)."""
        state: Any = self
        return int(state._sleeping_count.get_value() - state._woken_count.get_value())

    def notify(self, n: int = 1) -> None:
        # The standard library's notify, with a deadline on the wait for woken waiters.
        state: Any = self
        assert state._lock._semlock._is_mine(), "lock is not owned"
        assert not state._wait_semaphore.acquire(False)
        while state._woken_count.acquire(False):  # waiters that timed out since the last one
            state._sleeping_count.acquire(False)
        woken = 0
        while woken < n and state._sleeping_count.acquire(False):
            state._wait_semaphore.release()
            woken += 1
        if woken:
            deadline = time.monotonic() + WAKE_TIMEOUT
            for _ in range(woken):
                if not state._woken_count.acquire(True, max(0.0, deadline - time.monotonic())):
                    break  # a waiter died while it waited
            while state._wait_semaphore.acquire(False):  # wakeups nobody took
                pass


class SharedEvent(Event):
    """``multiprocessing.Event`` on a :class:`SharedCondition`: ``set`` never hangs on a dead
    waiter."""

    def __init__(self, context: BaseContext) -> None:
        super().__init__(ctx=context)
        self._cond = SharedCondition(context, context.Lock())

    @property
    def cond(self) -> SharedCondition:
        return self._cond
