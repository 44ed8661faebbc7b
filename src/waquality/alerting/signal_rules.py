"""Alerts on the tracker's signals: response times and delivery figures crossing a threshold
over a window, or rising well above (or falling well below) their recent baseline.

``[[signal_rules]]`` tables in the config file describe them (:class:`SignalRuleConfig`); the
built-in rules (:data:`BUILT_IN`) are on unless a table of the same name turns them off or
changes them. :mod:`waquality.alerting.signal_check` judges them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from waquality.analyse import signals as sig
from waquality.analyse.signals import Family, Metric, Unit

if TYPE_CHECKING:
    pass

SOURCE = "tracker"  # events.source of the events written here
FIELD = "signals"  # their events.field
Dimension = Literal["phone_number_id", "template", "sender"]
DIMENSIONS: tuple[Dimension, ...] = ("phone_number_id", "template", "sender")
SENDERS = ("bot", "agent", "campaign", "unknown")
PLACEHOLDERS = frozenset(
    {
        "rule",
        "metric",
        "code",
        "scope",
        "value",
        "count",
        "window",
        "baseline",
        "ratio",
        "days",
        "threshold",
        *DIMENSIONS,
    }
)
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_RESERVED_LABELS = frozenset({"rule", "severity", *DIMENSIONS})
MAX_WINDOW = timedelta(days=7)
MAX_DELAY = timedelta(days=2)
MAX_FOR = timedelta(days=2)


def _duration(value: Any) -> timedelta:
    # config.py imports this module; by the time a rule is validated it is fully loaded
    from waquality.config import parse_duration

    return parse_duration(value)


def _whole_hours(value: Any) -> timedelta:
    duration = _duration(value)
    if duration % timedelta(hours=1):
        raise ValueError("must be whole hours (the figures are hourly), such as 1h or 3h")
    return duration


def _hours(duration: timedelta) -> int:
    return int(duration / timedelta(hours=1))


def _threshold(value: Any, unit: Unit) -> float:
    """A threshold in the metric's unit: a duration, a share (``5%`` or 0.05), a count."""
    if isinstance(value, bool):
        raise ValueError("expected a number")
    if unit is Unit.SECONDS:
        return _duration(value).total_seconds()
    if unit is Unit.RATE:
        if isinstance(value, str) and value.strip().endswith("%"):
            try:
                value = float(value.strip()[:-1]) / 100
            except ValueError:
                raise ValueError("expected a share such as 5% or 0.05") from None
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError("expected a share between 0 and 1, or a percentage such as 5%")
        return float(value)
    if not isinstance(value, int | float) or value < 0:
        raise ValueError("expected a count of zero or more")
    return float(value)


class SignalRuleConfig(BaseModel):
    """``[[signal_rules]]`` in the config file: an alert on one metric of the tracker's hourly
    figures, for one scope or for each number, template or sender (``per``).

    A *threshold* rule gives ``above`` or ``below``; a *peak* rule gives ``factor`` (above 1: a
    rise to at least that many times the median of the same hours over the last
    ``baseline_days`` days; below 1: a fall), with ``above`` (a rise) or ``below`` (a fall) as
    an optional floor or ceiling. ``window``, ``delay`` and ``for`` are whole hours.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,54}$")
    enabled: bool = Field(True, strict=True)
    metric: Metric
    code: int | None = Field(None, ge=0)
    above: float | None = None
    below: float | None = None
    factor: float | None = Field(None, gt=0)
    baseline_days: int | None = Field(None, ge=1, le=28)
    window: timedelta = timedelta(hours=1)
    delay: timedelta | None = None
    for_: timedelta = Field(timedelta(0), alias="for")
    min_count: int | None = Field(None, ge=1)
    per: list[Dimension] = Field(default_factory=list)
    phone_number_id: str | None = Field(None, min_length=1)
    template: str | None = Field(None, min_length=1)
    sender: str | None = None
    severity: Literal["critical", "warning"] = "warning"
    summary: str = ""
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("metric", mode="before")
    @classmethod
    def _metric(cls, value: Any) -> Any:
        if not isinstance(value, str) or value not in {m.value for m in Metric}:
            raise ValueError(
                f"unknown metric {value!r}: expected one of {', '.join(m.value for m in Metric)}"
            )
        return value

    @field_validator("above", "below", mode="before")
    @classmethod
    def _in_unit(cls, value: Any, info: ValidationInfo) -> Any:
        metric = info.data.get("metric")
        if value is None or metric is None:
            return None  # an unknown metric is reported on its own
        return _threshold(value, sig.METRICS[Metric(metric)].unit)

    @field_validator("window", "delay", "for_", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        return None if value is None else _whole_hours(value)

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is not None and value not in SENDERS:
            raise ValueError(f"expected one of {', '.join(SENDERS)}")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> SignalRuleConfig:
        info = sig.METRICS[self.metric]
        problems = [
            *self._check_shape(info),
            *self._check_scope(info),
            *self._check_text(),
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _check_shape(self, info: sig.MetricInfo) -> list[str]:
        problems = []
        coded = self.metric in sig.CODED
        if coded and self.code is None:
            problems.append(f"metric {self.metric.value} needs code, an error code such as 131049")
        if not coded and self.code is not None:
            problems.append("code is only for the error_rate and errors metrics")
        if not timedelta(hours=1) <= self.window <= MAX_WINDOW:
            problems.append("window must be from 1h to 7d")
        if self.delay is not None and self.delay > MAX_DELAY:
            problems.append("delay must be 2d at most")
        if self.for_ > MAX_FOR:
            problems.append("for must be 2d at most")
        if self.factor is None:
            if self.baseline_days is not None:
                problems.append("baseline_days goes with factor (a peak against the baseline)")
            if (self.above is None) == (self.below is None):
                problems.append(
                    "give above or below (a threshold), or factor (a peak against the baseline)"
                )
        elif self.factor == 1:
            problems.append("factor must be above 1 (a rise) or below 1 (a fall)")
        elif self.factor > 1 and self.below is not None:
            problems.append("a rise (factor above 1) takes a floor in above, not below")
        elif self.factor < 1 and self.above is not None:
            problems.append("a fall (factor below 1) takes a ceiling in below, not above")
        falls = self.below is not None or (self.factor is not None and self.factor < 1)
        if info.unit is Unit.COUNT and falls:
            problems.append(f"{self.metric.value} is a count: it alerts on a rise only")
        return problems

    def _check_scope(self, info: sig.MetricInfo) -> list[str]:
        problems = []
        if len(set(self.per)) != len(self.per):
            problems.append("per names a dimension twice")
        allowed = {"phone_number_id"}
        allowed.add("sender" if info.family is Family.RESPONSES else "template")
        if self.metric is Metric.OPT_OUTS:
            allowed.discard("template")  # opt-outs belong to a number, not to a template
        for dimension in self.dimensions:
            if dimension not in allowed:
                per = " and ".join(sorted(allowed))
                problems.append(f"{self.metric.value} has no {dimension}: it is per {per}")
            if dimension in self.per and getattr(self, dimension) is not None:
                problems.append(f"{dimension} is both in per and given")
        return problems

    def _check_text(self) -> list[str]:
        problems = []
        for name in ("summary", "description"):
            unknown = set(PLACEHOLDER.findall(getattr(self, name))) - PLACEHOLDERS
            if unknown:
                problems.append(
                    f"{name} names unknown placeholders {', '.join(sorted(unknown))} "
                    f"(known: {', '.join(sorted(PLACEHOLDERS))})"
                )
        reserved = sorted(set(self.labels) & _RESERVED_LABELS)
        if reserved:
            problems.append(f"labels may not set {', '.join(reserved)}")
        return problems

    @property
    def dimensions(self) -> tuple[Dimension, ...]:
        """The scope's labels: those it is split by and those it is filtered on."""
        return tuple(d for d in DIMENSIONS if d in self.per or getattr(self, d) is not None)

    def rule(self) -> sig.Rule:
        """The rule in hours, as :func:`waquality.analyse.signals.evaluate` takes it."""
        return sig.Rule(
            metric=self.metric,
            code=self.code,
            above=self.above,
            below=self.below,
            factor=self.factor,
            baseline_days=self.baseline_days or 7,
            window=_hours(self.window),
            delay=None if self.delay is None else _hours(self.delay),
            held=_hours(self.for_),
            min_count=self.min_count,
        )

    @classmethod
    def effective(cls, value: Any) -> list[SignalRuleConfig]:
        """The built-in rules — a table of the same name changes the fields it gives, and
        ``enabled = false`` turns one off — followed by the config file's own rules."""
        if value is None:
            value = []
        if not isinstance(value, list | tuple):
            raise ValueError("expected [[signal_rules]] tables")
        tables: list[dict[str, Any]] = []
        for item in value:
            if isinstance(item, SignalRuleConfig):
                tables.append(item.model_dump(by_alias=True))
            elif isinstance(item, Mapping):
                tables.append(dict(item))
            else:
                raise ValueError("expected [[signal_rules]] tables")
        problems = []
        names = [str(t.get("name")) for t in tables]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            problems.append(f"rule names must be unique: {', '.join(twice)}")
        given = {str(t.get("name")): t for t in tables}
        merged = [{**b, **given.get(b["name"], {})} for b in BUILT_IN]
        merged += [t for t in tables if t.get("name") not in BUILT_IN_NAMES]
        rules = []
        for table in merged:
            try:
                rules.append(cls.model_validate(table))
            except ValidationError as exc:
                problems += [f"rule {table.get('name')!r}: {_problem(e)}" for e in exc.errors()]
        if problems:
            raise ValueError("; ".join(problems))
        return rules


def _problem(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{where}: {message}" if where else message


# The built-in rules, on by default, each per phone number. Turn one off with
# ``[[signal_rules]] name = "..."  enabled = false``; change one by naming it with other values.
BUILT_IN: tuple[dict[str, Any], ...] = (
    {
        # A sudden slowdown (staff away, a bot down, a stuck queue): customers kept waiting
        # block and report. The first response is the wait a customer feels first.
        "name": "response_time_peak",
        "metric": "first_response_p90",
        "factor": 2.0,
        "baseline_days": 7,
        "above": "5m",
        "window": "1h",
        "min_count": 20,
        "per": ["phone_number_id"],
        "description": "First replies take longer than usual ({value} against {baseline}, the "
        "same hours over the last {days} days). Customers kept waiting block and report, which "
        "lowers the quality rating: check staffing, queues and bots.",
    },
    {
        # 131048: Meta already limits this number because earlier messages were blocked or
        # reported as spam. Quality and the messaging limit follow; retrying does not help.
        "name": "spam_rate_failures",
        "metric": "errors",
        "code": 131048,
        "above": 0,
        "window": "24h",
        "per": ["phone_number_id"],
        "severity": "critical",
        "description": "Meta refuses messages from this number under its spam rate limit: too "
        "many earlier messages were blocked or reported. Stop the campaigns sending from it and "
        "check its quality rating; retrying soon does not help.",
    },
    {
        # 131049: Meta held marketing messages back from users who get too many. A rising share
        # means campaigns reach over-messaged users: wasted sends, and fatigue that turns into
        # blocks.
        "name": "marketing_limit_rising",
        "metric": "error_rate",
        "code": 131049,
        "factor": 2.0,
        "baseline_days": 7,
        "above": "1%",
        "window": "3h",
        "min_count": 100,
        "per": ["phone_number_id"],
        "description": "Meta holds back more messages than usual under its per-user marketing "
        "limit (131049): {value} of them against {baseline} (the same hours over the last "
        "{days} days). Campaigns reach users who already get too many: do not resend to them "
        "for at least 24 hours; send less often or to fewer people.",
    },
    {
        # Fewer reads come before blocks and reports: an early warning of a quality drop.
        # Reads arrive over hours, so the window ends two hours back (read_rate's own delay).
        "name": "read_rate_falling",
        "metric": "read_rate",
        "factor": 0.7,
        "baseline_days": 7,
        "window": "3h",
        "min_count": 100,
        "per": ["phone_number_id"],
        "description": "Delivered messages are read less than usual ({value} against "
        "{baseline}, the same hours over the last {days} days): recipients ignore or mute them, "
        "an early warning of blocks and reports. Check what was sent, to whom and how often.",
    },
    {
        # Opt-outs arrive as soon as customers tap "stop": a burst is the clearest early sign
        # that a campaign is unwelcome.
        "name": "opt_outs_peak",
        "metric": "opt_outs",
        "factor": 3.0,
        "baseline_days": 7,
        "above": 5,
        "window": "2h",
        "per": ["phone_number_id"],
        "description": "More customers than usual stopped marketing messages ({value} against "
        "{baseline}, the same hours over the last {days} days): an early warning of blocks and "
        "reports. Check the campaigns sent in the hours before.",
    },
)
BUILT_IN_NAMES = frozenset(str(b["name"]) for b in BUILT_IN)
