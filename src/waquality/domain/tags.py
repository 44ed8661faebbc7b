"""Tags a business sets when it sends a message, carried in ``biz_opaque_callback_data`` so that
no extra call is needed: Meta echoes the value on every status of the message.

The encoding is compact and versioned: ``wq1`` then ``;key=value`` pairs, values
percent-encoded, keys from a fixed set::

    wq1;s=agent;j=order_support;t=ask_address;x=split_question:B;m=order_update

``s`` sender kind (bot, agent, campaign), ``j`` journey, ``t`` step, ``x`` experiment and arm
(``name:arm``, repeatable), ``m`` the template's name (for delivery figures per template).
Meta allows 512 characters; :func:`encode` refuses more. A value that is not ours (another
tool's data) reads as no tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, unquote

from waquality.domain.enums import SenderKind

PREFIX = "wq1"
MAX_LENGTH = 512  # Meta's limit for biz_opaque_callback_data


@dataclass(frozen=True, slots=True)
class Tags:
    sender: SenderKind = SenderKind.UNKNOWN
    journey: str | None = None
    step: str | None = None
    experiments: tuple[tuple[str, str], ...] = ()  # (experiment, arm)
    template: str | None = None


class TagError(ValueError):
    """Tags that cannot be encoded (too long, or an experiment name holding ':')."""


def _q(value: str) -> str:
    return quote(value, safe="_-.~")


def encode(tags: Tags) -> str:
    parts = [PREFIX]
    if tags.sender is not SenderKind.UNKNOWN:
        parts.append(f"s={tags.sender.value}")
    if tags.journey:
        parts.append(f"j={_q(tags.journey)}")
    if tags.step:
        parts.append(f"t={_q(tags.step)}")
    for name, arm in tags.experiments:
        parts.append(f"x={_q(name)}:{_q(arm)}")
    if tags.template:
        parts.append(f"m={_q(tags.template)}")
    text = ";".join(parts)
    if len(text) > MAX_LENGTH:
        raise TagError(f"tags take {len(text)} characters; Meta allows {MAX_LENGTH}")
    return text


def decode(value: object) -> Tags | None:
    """The tags in a callback value, or ``None`` when it is not ours."""
    if not isinstance(value, str):
        return None
    return _decoded(value)


@lru_cache(maxsize=4096)  # a campaign's thousands of statuses carry the same value
def _decoded(value: str) -> Tags | None:
    head, _, rest = value.partition(";")
    if head != PREFIX:
        return None
    sender, journey, step, template = SenderKind.UNKNOWN, None, None, None
    experiments: list[tuple[str, str]] = []
    for part in rest.split(";") if rest else []:
        key, _, raw = part.partition("=")
        if key == "s":
            sender = SenderKind.parse(unquote(raw))
        elif key == "j":
            journey = unquote(raw) or None
        elif key == "t":
            step = unquote(raw) or None
        elif key == "m":
            template = unquote(raw) or None
        elif key == "x" and ":" in raw:
            name, _, arm = raw.partition(":")
            experiments.append((unquote(name), unquote(arm)))
        # unknown keys: written by a newer version; ignored
    return Tags(sender, journey, step, tuple(experiments), template)
