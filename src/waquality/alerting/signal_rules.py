"""Alerts on the tracker's signals: response times and delivery figures crossing a threshold
over a window, or rising well above their recent baseline."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SignalRuleConfig(BaseModel):
    """``[[signal_rules]]`` in the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
