"""Alert rules on events rather than state: account alerts, violations, offboarding, partner
removal — and the users' own rules from the config file, written the same way.

A rule matches an event of one webhook field on dotted paths of its value (``kind`` is the
event's short label); ``resolve`` matches the events that end the alert; ``identity`` names the
paths that tell two alerts of one rule apart (with the WABA).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from waquality.alerting.rules import Severity, Signal
from waquality.domain.events import Event

if TYPE_CHECKING:
    from waquality.config import Settings

_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.]+)\}")


@dataclasses.dataclass(frozen=True, slots=True)
class EventRule:
    name: str
    field: str
    match: Mapping[str, str]
    severity: Severity
    summary: str
    description: str = ""
    resolve: Mapping[str, str] | None = None
    identity: tuple[str, ...] = ()
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def signals(self, event: Event) -> list[Signal]:
        if event.field_name != self.field:
            return []
        firing = _matches(event, self.match)
        if not firing and not (self.resolve and _matches(event, self.resolve)):
            return []
        labels = {
            **self.labels,
            "rule": self.name,
            "waba_id": event.waba_id or "",
            **{path: _text(_lookup(event, path)) for path in self.identity},
        }
        summary = _render(self.summary, event)
        if not firing:
            summary = f"resolved: {summary}"
        description = _render(self.description, event)
        return [Signal(self.name, labels, firing, self.severity, summary, description)]


def _lookup(event: Event, path: str) -> Any:
    if path == "kind":
        return event.kind
    if path == "waba_id":
        return event.waba_id
    value: Any = event.value
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _text(value: Any) -> str:
    """A payload value as label or message text: short, and without NUL (which PostgreSQL's
    text cannot hold)."""
    return "" if value is None else str(value)[:200].replace("\x00", "")


def _matches(event: Event, conditions: Mapping[str, str]) -> bool:
    return all(
        _text(_lookup(event, path)) in expected.split("|") for path, expected in conditions.items()
    )


def _render(template: str, event: Event) -> str:
    return _PLACEHOLDER.sub(lambda m: _text(_lookup(event, m.group(1))) or "?", template)


BUILT_IN: tuple[EventRule, ...] = (
    *(
        EventRule(
            name=f"account_alert_{level.lower()}",
            field="account_alerts",
            match={"alert_info.alert_severity": level, "alert_info.alert_status": "ACTIVE|"},
            resolve={"alert_info.alert_severity": level, "alert_info.alert_status": "INACTIVE"},
            severity=Severity(level.lower()),
            summary="WABA {waba_id}: account alert {alert_info.alert_type} ({entity_type} "
            "{entity_id})",
            description="{alert_info.alert_description}",
            identity=("alert_info.alert_type", "entity_id"),
        )
        for level in ("CRITICAL", "WARNING")
    ),
    EventRule(
        name="account_violation",
        field="account_update",
        match={"kind": "ACCOUNT_VIOLATION"},
        severity=Severity.CRITICAL,
        summary="WABA {waba_id}: policy violation {violation_info.violation_type}",
        identity=("violation_info.violation_type",),
    ),
    EventRule(
        name="account_offboarded",
        field="account_update",
        match={"kind": "ACCOUNT_OFFBOARDED|ACCOUNT_DELETED"},
        resolve={"kind": "ACCOUNT_RECONNECTED"},
        severity=Severity.CRITICAL,
        summary="WABA {waba_id}: {kind}",
    ),
    EventRule(
        name="partner_removed",
        field="account_update",
        match={"kind": "PARTNER_REMOVED|PARTNER_APP_UNINSTALLED"},
        resolve={"kind": "PARTNER_ADDED|PARTNER_APP_INSTALLED"},
        severity=Severity.CRITICAL,
        summary="WABA {waba_id}: {kind}: webhooks and API access for this partner stop",
    ),
)


def evaluate(rules: Iterable[EventRule], events: Iterable[Event]) -> list[Signal]:
    return [signal for event in events for rule in rules for signal in rule.signals(event)]


def configured_rules(settings: Settings) -> tuple[EventRule, ...]:
    """The built-in event rules and the config file's ``[[alert_rules]]``."""
    return BUILT_IN + tuple(
        EventRule(
            name=r.name,
            field=r.field,
            match=r.match,
            resolve=r.resolve,
            severity=Severity(r.severity),
            summary=r.summary,
            description=r.description,
            identity=tuple(r.identity),
            labels=r.labels,
        )
        for r in settings.alert_rules
    )
