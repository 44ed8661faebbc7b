"""Objects alive at start-up are frozen; garbage made later is still collected."""

from __future__ import annotations

import gc
import weakref

from waquality.heap import freeze_startup_objects


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_startup_objects_are_frozen_and_later_cycles_still_collected() -> None:
    before = _cycle()  # garbage already: the freeze collects it first
    try:
        freeze_startup_objects()
        assert before() is None
        assert gc.get_freeze_count() > 0
        later = _cycle()
        assert later() is not None
        gc.collect()
        assert later() is None
    finally:
        gc.unfreeze()
