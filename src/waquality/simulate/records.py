"""What the simulator delivers, and its JSON-lines form (one delivery a line).

- :class:`Post`: a webhook POST as Meta sends it — the exact bytes (signed when sent);
  ``redelivery`` marks a POST sent again with the same bytes (a retry Meta makes),
  ``management`` one that carries a management change (a template's status, a quality...).
- :class:`Logged`: outbound messages the business logs through ``POST /api/v1/messages``
  (what its sending system knows and webhooks do not: sender, journey, step, experiments,
  text, and sends the Graph API refused).
- :class:`GraphChange`: a change of what the Graph API answers about a phone number,
  template or WABA; the demo applies it to the fake Graph API, a replay skips it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson

GraphKind = Literal["phone", "template", "waba"]


@dataclass(frozen=True, slots=True)
class Post:
    at: datetime
    body: bytes
    changes: int
    redelivery: bool = False
    management: bool = False


@dataclass(frozen=True, slots=True)
class Logged:
    at: datetime
    messages: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class GraphChange:
    at: datetime
    kind: GraphKind
    waba_id: str
    object_id: str
    field: str  # the attribute of the fake Graph API's object (quality_rating, status, ...)
    value: str


Delivery = Post | Logged | GraphChange


class RecordError(ValueError):
    """A line that is not a delivery."""


def iso(moment: datetime) -> str:
    """UTC, milliseconds, ``Z``: the form every time in the traffic is written in."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dumps(delivery: Delivery) -> bytes:
    """One JSON line (without its newline)."""
    record: dict[str, Any]
    match delivery:
        case Post():
            record = {
                "at": iso(delivery.at),
                "kind": "webhook",
                "changes": delivery.changes,
                "redelivery": delivery.redelivery,
                "management": delivery.management,
                "body": delivery.body.decode(),
            }
        case Logged():
            record = {"at": iso(delivery.at), "kind": "messages", "messages": delivery.messages}
        case GraphChange():
            record = {
                "at": iso(delivery.at),
                "kind": "graph",
                "object": delivery.kind,
                "waba_id": delivery.waba_id,
                "id": delivery.object_id,
                "field": delivery.field,
                "value": delivery.value,
            }
    return orjson.dumps(record)


def loads(line: bytes | str) -> Delivery:
    try:
        record = orjson.loads(line)
        at = datetime.fromisoformat(record["at"].replace("Z", "+00:00"))
        kind = record["kind"]
        if kind == "webhook":
            return Post(
                at,
                record["body"].encode(),
                int(record["changes"]),
                bool(record["redelivery"]),
                bool(record.get("management", False)),
            )
        if kind == "messages":
            return Logged(at, tuple(record["messages"]))
        if kind == "graph" and record["object"] in ("phone", "template", "waba"):
            return GraphChange(
                at,
                record["object"],
                str(record["waba_id"]),
                str(record["id"]),
                str(record["field"]),
                str(record["value"]),
            )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RecordError(f"not a delivery: {exc}") from None
    raise RecordError(f"unknown kind {str(record.get('kind'))[:40]!r}")
