"""A field's history from its facts: pure, and the same whatever order the facts arrived in.

A fact says what happened to one field of one subject at one moment: set to a value, a counter
pinned to at least a number or incremented, or an archived template restored. Replaying the
facts of a field in time order (ties in the order they were recorded) gives its history — one
row per real change — and its value after the newest fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from waquality.domain.enums import TemplateStatus
from waquality.process.interpret import Op


@dataclass(frozen=True, slots=True)
class Fact:
    op: Op
    value: str | None  # as history keeps values: text
    occurred_at: datetime
    source: str
    event_id: int | None
    recorded_at: datetime
    order: int = 0  # ties in time: the order they were recorded in


@dataclass(frozen=True, slots=True)
class Step:
    """One real change: a history row."""

    old: str | None
    new: str | None
    fact: Fact


@dataclass(frozen=True, slots=True)
class Timeline:
    steps: list[Step]
    value: str | None  # after the newest fact
    newest: datetime | None  # the newest fact's time


def replay_until_met(
    facts: Sequence[Fact],
    initial: str | None,
    before: str | None,
    old: Sequence[Step],
    settled: datetime,
) -> tuple[Timeline, datetime | None]:
    """Replay ``facts`` (a field's facts from some time on) in time order from ``initial``
    (which replaced ``before``), beside ``old``, the history the field had from that time on.
    Once every fact up to a time at or after ``settled`` (the newest fact the old history did
    not know) is replayed, and the value is the one the old history had then, replacing the
    same one, the old history after that time stands. Returns the steps up to then and that
    time, or every step and ``None`` when the two never meet."""
    ordered = sorted(facts, key=lambda f: (f.occurred_at, f.order))
    value, at = initial, None
    steps: list[Step] = []
    was, was_before, seen = initial, before, 0  # the old history's value then
    for index, fact in enumerate(ordered):
        at = fact.occurred_at
        new = apply(fact, value, before)
        if new != value:
            steps.append(Step(value, new, fact))
            value, before = new, value
        if at < settled or (index + 1 < len(ordered) and ordered[index + 1].occurred_at == at):
            continue
        while seen < len(old) and old[seen].fact.occurred_at <= at:
            was, was_before = old[seen].new, old[seen].old
            seen += 1
        if (value, before) == (was, was_before):
            return Timeline(steps, value, at), at
    return Timeline(steps, value, at), None


def apply(fact: Fact, value: str | None, before: str | None) -> str | None:
    """The field's value after ``fact``, given its value and the one that value replaced."""
    match fact.op:
        case Op.SET:
            return fact.value
        case Op.AT_LEAST:
            return str(max(_int(value), _int(fact.value)))
        case Op.INCREMENT:
            return str(_int(value) + _int(fact.value))
        case Op.RESTORE:  # back from ``fact.value`` (ARCHIVED) to what it replaced
            if value != fact.value:
                return value
            return before if before is not None else TemplateStatus.UNKNOWN.value
    return value  # pragma: no cover (every op is matched above)


def _int(text: Any) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0
