"""The simulator's commands: demo, simulate, replay."""

from __future__ import annotations
