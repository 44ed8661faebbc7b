"""A field's history from its facts: pure, and the same whatever order the facts arrived in.

A fact says what happened to one field of one subject at one moment: set to a value, a counter
pinned to at least a number or incremented, or an archived template restored. Replaying the
facts of a field in time order (ties in the order they were recorded) gives its history — one
row per real change — and its value after the newest fact.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def replay(
    facts: Iterable[Fact], initial: str | None = None, before: str | None = None
) -> Timeline:
    """The steps ``facts`` make from ``initial`` (which replaced ``before``)."""
    value = initial
    steps: list[Step] = []
    newest: datetime | None = None
    for fact in sorted(facts, key=lambda f: (f.occurred_at, f.order)):
        newest = fact.occurred_at
        new = apply(fact, value, before)
        if new != value:
            steps.append(Step(value, new, fact))
            value, before = new, value
    return Timeline(steps, value, newest)


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
