"""Delivery signals: what one stored message adds to the per-hour delivery counters. Pure.

An outbound message counts in the hour of its send time: ``outbound`` once; ``sent`` once it
left Meta's servers (or was delivered or read, whatever order the statuses came in),
``delivered`` once delivered or read, ``read`` once read, ``failed`` when it failed,
``refused`` when the Graph API refused to send it; its error code (the earliest failure's)
counts once. An inbound message counts in ``inbound``. A status that changes nothing here
(``played``, a redelivery) changes no counter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from waquality.domain.enums import MessageStatus
from waquality.domain.messages import REFUSED

# Error codes that speak of quality (the fact sheet's table): called out in every summary.
QUALITY_CODES: dict[int, str] = {
    131049: "per-user marketing limit (healthy ecosystem engagement)",
    131048: "spam rate limit: earlier messages were blocked or reported",
    131026: "undeliverable",
    131050: "user stopped marketing messages",
    132015: "template paused",
    132016: "template disabled",
    130429: "throughput rate limit",
    131056: "pair rate limit (too many messages to one user)",
}
NO_TEMPLATE = ""  # the template key of a message whose template is not known


# The counters, in the order contributions list them.
COUNTERS = (
    "outbound",
    "sent",
    "delivered",
    "read",
    "failed",
    "refused",
    "inbound",
    "opt_outs",
    "resumes",
)
INBOUND = (0, 0, 0, 0, 0, 0, 1, 0, 0)
OPT_OUT = (0, 0, 0, 0, 0, 0, 0, 1, 0)
RESUME = (0, 0, 0, 0, 0, 0, 0, 0, 1)


@dataclass(frozen=True, slots=True)
class Contribution:
    phone_number_id: str
    template: str
    at: datetime
    counts: tuple[int, ...]  # in the order of COUNTERS
    error_code: int | None


def contribution(row: Mapping[str, Any] | None) -> Contribution | None:
    """What a stored message row adds to the delivery counters; ``None`` for nothing."""
    if row is None or row.get("at") is None:
        return None
    phone = row.get("phone_number_id") or ""
    if row["inbound"]:
        return Contribution(phone, NO_TEMPLATE, row["at"], INBOUND, None)
    status = MessageStatus.parse(row.get("status")) or MessageStatus.UNKNOWN
    read = row.get("read_at") is not None or status in (MessageStatus.READ, MessageStatus.PLAYED)
    delivered = read or row.get("delivered_at") is not None or status is MessageStatus.DELIVERED
    refused = row.get("kind") == REFUSED
    sent = not refused and (delivered or row.get("sent_at") is not None)
    failed = status is MessageStatus.FAILED and not refused
    counts = (1, int(sent), int(delivered), int(read), int(failed), int(refused), 0, 0, 0)
    code = row.get("error_code") if (failed or refused) else None
    return Contribution(phone, row.get("template") or NO_TEMPLATE, row["at"], counts, code)


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None
