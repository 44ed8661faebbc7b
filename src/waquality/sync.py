"""Waiting and waking across processes, safe when a waiter dies.

``serve`` shares a write gate and two events with its processing child. With the standard
library's ``multiprocessing.Condition`` (and ``Event``, built on it), waking waiters waits until
each has woken: one killed while it waited (an out-of-memory kill, a crash, a stop signal sent
to the whole process group) never does, and the waker hangs for good, with it every webhook
acknowledgement. Here waking only releases a semaphore once per waiter and never waits. A dead
waiter leaves a spare release behind, which costs a later waiter one needless look at its
condition, nothing more.
"""

from __future__ import annotations

import time
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import Any


class SharedCondition:
    """A condition variable for processes: ``acquire``/``release`` (or ``with``), ``wait``
    and ``notify_all``, the lock held around each as with ``threading.Condition``."""

    def __init__(self, context: BaseContext) -> None:
        self._lock = context.Lock()
        self._wakeups = context.Semaphore(0)
        self._sleepers: Any = context.Value("i", 0, lock=False)  # guarded by the lock

    @property
    def sleepers(self) -> int:
        """How many wait now (dead ones included)."""
        return int(self._sleepers.value)

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return self._lock.acquire(block, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> SharedCondition:
        self._lock.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock until notified (or ``timeout``), then take it again; returns whether
        a wakeup came (it may be a spare one: look at the condition again)."""
        self._sleepers.value += 1
        self._lock.release()
        try:
            return self._wakeups.acquire(True, timeout)
        finally:
            self._lock.acquire()
            self._sleepers.value -= 1

    def notify_all(self) -> None:
        for _ in range(self._sleepers.value):
            self._wakeups.release()


class SharedEvent:
    """``multiprocessing.Event``'s interface (``set``, ``clear``, ``is_set``, ``wait``) on a
    :class:`SharedCondition`: ``set`` never waits for the waiters it wakes."""

    def __init__(self, context: BaseContext) -> None:
        self.cond = SharedCondition(context)
        self._flag: Any = context.Value("b", 0, lock=False)  # guarded by the condition's lock

    def is_set(self) -> bool:
        with self.cond:
            return bool(self._flag.value)

    def set(self) -> None:
        with self.cond:
            self._flag.value = 1
            self.cond.notify_all()

    def clear(self) -> None:
        with self.cond:
            self._flag.value = 0

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while not self._flag.value:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self.cond.wait(left)
            return bool(self._flag.value)
