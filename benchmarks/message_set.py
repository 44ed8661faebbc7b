"""A deterministic set of WhatsApp messages shaped like a business's traffic, as columns.

Everything depends only on the :class:`Shape` (seed included) and is drawn with NumPy, so ten
million messages take seconds. The model, per conversation of one (business number, customer)
pair:

- 80% are started by the customer, 20% by the business with one or two template messages
  (a campaign, a reminder), which 45% of customers answer, often with the template's button;
- a customer writes in *exchanges*: a run of 1 to 4 messages, then the business's reply of 1 to
  3 messages; about 3.5 exchanges per conversation on average;
- replies come from a bot (1 to 8 s after the run), an agent (minutes to hours, lognormal, and
  not before 08:00 when the run came in at night) or an unknown sender (either); bots answer
  most first exchanges, agents most later ones;
- 3% of runs inside a conversation and 12% of last runs are never answered;
- outbound messages end sent, delivered, read or failed (error codes 131049, 131026, 131047,
  130429, 131048; templates fail more often, mostly with 131049); tagged messages carry their
  sender kind and template, some were logged through the API; replies are priced as service,
  templates as marketing or utility;
- conversations start on one of ``days`` days at hours weighted like a business day; a pair has
  2.5 conversations on average, numbers are busy unevenly (Zipf-like).

Rows come out in arrival order (by time), the order a live system stores them in, with the
columns of the ``messages`` table as :func:`waquality.domain.messages.merge` fills them: ``at``
is an outbound message's send time (or its logged time, or its first status's), ``status`` the
highest status reached, each status its own time.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_SEED = 20_240_611
END = 1_772_323_200  # 2026-03-01 00:00 UTC: when the default period ends
Ints = npt.NDArray[np.int64]
Codes = npt.NDArray[np.signedinteger[Any]]  # small integers: int8 or int32
Bools = npt.NDArray[np.bool_]

SENDERS = ("unknown", "bot", "agent", "campaign")
UNKNOWN, BOT, AGENT, CAMPAIGN = range(4)
STATUSES = ("sent", "delivered", "read", "failed")
SENT, DELIVERED, READ, FAILED = range(4)
CATEGORIES = ("service", "marketing", "utility")
KINDS = ("text", "button", "interactive:button_reply", "image", "reaction", "template")
TEMPLATES = (
    "order_confirmation",
    "shipping_update",
    "delivery_reminder",
    "abandoned_cart",
    "appointment_reminder",
    "payment_receipt",
    "seasonal_offer",
    "feedback_request",
    "back_in_stock",
    "welcome_offer",
    "renewal_notice",
    "loyalty_points",
)
PHRASES = (
    "Hi, where is my order?",
    "Hello",
    "I need help with my account",
    "Can I change the delivery address?",
    "Thanks!",
    "ok",
    "Is this still available?",
    "My payment failed",
    "When do you open?",
    "I want to cancel",
    "Yes please",
    "The item arrived damaged",
)
BUTTONS = ("Yes", "Not now", "Stop promotions")
ERRORS_TEMPLATE = ((131049, 0.55), (131026, 0.2), (131047, 0.05), (130429, 0.1), (131048, 0.1))
ERRORS_REPLY = ((131026, 0.4), (131047, 0.3), (130429, 0.2), (131049, 0.1))
# share of conversations started in each hour of the day (a business day, a quiet night)
DIURNAL = np.array(
    [1, 1, 1, 1, 1, 2, 3, 5, 7, 8, 8, 8, 7, 7, 7, 7, 7, 7, 6, 6, 5, 4, 3, 2], dtype=np.float64
)
CONVERSATIONS_PER_PAIR = 2.5
_OPENER, _CUSTOMER, _REPLY = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Shape:
    messages: int = 10_000_000
    days: int = 60
    numbers: int = 20
    seed: int = DEFAULT_SEED
    end: int = END  # Unix time at which the period ends


@dataclass(slots=True)
class MessageSet:
    """One entry per message in arrival order; times are Unix seconds, -1 when unknown; codes
    index the tuples above (-1: none)."""

    shape: Shape
    phones: list[str]  # phone_number_id of each business number
    displays: list[str]  # its display number
    wabas: list[str]  # its WABA
    customers: list[str]  # the customer of each pair
    pair_phone: Ints  # the number of each pair
    conversations: int  # as generated (pairs whose conversations overlap merge some)
    pair: Codes
    inbound: Bools
    at: Ints
    sent_at: Ints
    delivered_at: Ints
    read_at: Ints
    failed_at: Ints
    logged_at: Ints
    status: Codes
    sender: Codes
    error_code: Codes  # 0: none
    template: Codes
    kind: Codes
    category: Codes
    replies_to: Codes  # index of the message replied to
    reply_id: Codes  # index into BUTTONS
    body: Codes  # index into PHRASES or BUTTONS (see kind)
    prefixes: list[str] = field(default_factory=list)  # each pair's wamid prefix, when needed

    def __len__(self) -> int:
        return len(self.at)

    @property
    def updated_at(self) -> Ints:
        """The last time anything about the message was seen."""
        latest: Ints = np.maximum.reduce(
            [self.at, self.sent_at, self.delivered_at, self.read_at, self.failed_at]
        )
        return latest

    def wamids(self, start: int, stop: int) -> list[str]:
        """Message ids shaped like Meta's: base64 of an envelope around the customer's number
        and a key unique in the set."""
        return self.wamids_of(np.arange(start, stop))

    def wamids_of(self, indexes: Codes) -> list[str]:
        prefixes = _prefixes(self)
        keys = _keys(self.shape.seed % 0xFFFF, indexes, self.inbound[indexes])
        return [prefixes[p] + k for p, k in zip(self.pair[indexes].tolist(), keys, strict=True)]

    def phone_of(self, start: int, stop: int) -> list[str]:
        phones = self.phones
        return [phones[p] for p in self.pair_phone[self.pair[start:stop]].tolist()]

    def customer_of(self, start: int, stop: int) -> list[str]:
        customers = self.customers
        return [customers[p] for p in self.pair[start:stop].tolist()]


def _prefixes(found: MessageSet) -> list[str]:
    cached = found.prefixes
    if len(cached) != len(found.customers):
        # 21 bytes, a multiple of 3: the envelope's base64 is a prefix of the whole id's
        cached[:] = [
            "wamid."
            + base64.b64encode(b"\x1c\x18\x0c" + c.encode() + b"\x15\x02\x00\x11\x18\x12").decode()
            for c in found.customers
        ]
    return cached


_HEX = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
_BASE64 = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", dtype=np.uint8
)


def _keys(tag: int, indexes: Codes, inbound: Bools) -> list[str]:
    """base64 of ``TTTTIIIIIIIIIIIIDF\\0``: tag, index and direction in hex, a NUL (as Meta's
    ids end); vectorised, as there are millions."""
    indexes = indexes.astype(np.int64)  # shifted by up to 44 bits below
    raw = np.empty((len(indexes), 18), dtype=np.uint8)
    raw[:, :4] = np.frombuffer(f"{tag:04X}".encode(), dtype=np.uint8)
    for digit in range(12):
        raw[:, 4 + digit] = _HEX[(indexes >> (4 * (11 - digit))) & 15]
    raw[:, 16] = np.where(inbound, ord("A"), ord("B"))
    raw[:, 17] = ord("F")
    groups = raw.reshape(-1, 6, 3).astype(np.uint32)
    word = (groups[:, :, 0] << 16) | (groups[:, :, 1] << 8) | groups[:, :, 2]
    text = np.empty((len(indexes), 28), dtype=np.uint8)
    for part in range(4):
        text[:, part:24:4] = _BASE64[(word >> (18 - 6 * part)) & 63]
    text[:, 24:] = np.frombuffer(b"AA==", dtype=np.uint8)  # the final NUL byte
    width = 28
    joined = text.tobytes().decode("ascii")
    return [joined[i : i + width] for i in range(0, len(joined), width)]


def generate(shape: Shape) -> MessageSet:
    """At most ``shape.messages`` messages (whole conversations: within one of it)."""
    rng = np.random.default_rng([shape.seed, shape.messages, shape.days, shape.numbers])
    # -- conversations and their exchanges (15% more than needed, then cut) ------------------
    planned = int(shape.messages / 9.0 * 1.15) + 16
    by_business = rng.random(planned) < 0.2
    opener = np.where(by_business, rng.choice([1, 2], planned, p=[0.8, 0.2]), 0)
    engaged = ~by_business | (rng.random(planned) < 0.45)
    exchanges = np.where(engaged, 1 + np.minimum(rng.poisson(2.5, planned), 12), 0)
    conv_of = np.repeat(np.arange(planned), exchanges)
    first_exchange = np.cumsum(exchanges) - exchanges
    order = np.arange(len(conv_of)) - first_exchange[conv_of]
    last = order == exchanges[conv_of] - 1
    run = rng.choice([1, 2, 3, 4], len(conv_of), p=[0.5, 0.25, 0.15, 0.1])
    reply = rng.choice([1, 2, 3], len(conv_of), p=[0.55, 0.3, 0.15])
    reply[rng.random(len(conv_of)) < np.where(last, 0.12, 0.03)] = 0
    draw = rng.random(len(conv_of))
    bot = np.where(order == 0, 0.55, 0.25)  # bots take most first exchanges, agents the rest
    reply_sender = np.where(draw < bot, BOT, np.where(draw < bot + 0.2, UNKNOWN, AGENT))
    sizes = opener + np.bincount(conv_of, weights=run + reply, minlength=planned).astype(np.int64)
    kept = max(1, int(np.searchsorted(np.cumsum(sizes), shape.messages, side="right")))
    keep_exchange = conv_of < kept
    conv_of, order = conv_of[keep_exchange], order[keep_exchange]
    run, reply, reply_sender = run[keep_exchange], reply[keep_exchange], reply_sender[keep_exchange]
    opener, by_business = opener[:kept], by_business[:kept]
    opener_sender = rng.choice([CAMPAIGN, BOT, UNKNOWN], kept, p=[0.6, 0.15, 0.25])

    # -- pairs, numbers, customers, start times -----------------------------------------------
    pairs = max(1, round(kept / CONVERSATIONS_PER_PAIR))
    weights = 1.0 / np.arange(1, shape.numbers + 1) ** 0.8
    pair_phone = rng.choice(shape.numbers, pairs, p=weights / weights.sum()).astype(np.int64)
    conv_pair = rng.integers(0, pairs, kept)
    begin = shape.end - shape.days * 86_400
    hours = rng.choice(24, kept, p=DIURNAL / DIURNAL.sum())
    conv_start = (
        begin
        + rng.integers(0, shape.days, kept) * 86_400
        + hours * 3600
        + rng.integers(0, 3600, kept)
    )

    # -- blocks: opener, then customer run and reply per exchange -----------------------------
    has_opener = np.flatnonzero(opener > 0)
    has_reply = reply > 0
    block_conv = np.concatenate([has_opener, conv_of, conv_of[has_reply]])
    block_order = np.concatenate(
        [np.full(len(has_opener), -1), 2 * order, 2 * order[has_reply] + 1]
    )
    block_kind = np.concatenate(
        [
            np.full(len(has_opener), _OPENER),
            np.full(len(conv_of), _CUSTOMER),
            np.full(int(has_reply.sum()), _REPLY),
        ]
    )
    block_len = np.concatenate([opener[has_opener], run, reply[has_reply]])
    block_sender = np.concatenate(
        [opener_sender[has_opener], np.full(len(conv_of), UNKNOWN), reply_sender[has_reply]]
    )
    sort = np.lexsort((block_order, block_conv))
    block_conv, block_kind = block_conv[sort], block_kind[sort]
    block_len, block_sender = block_len[sort], block_sender[sort]
    first_block = np.ones(len(block_conv), dtype=bool)
    first_block[1:] = block_conv[1:] != block_conv[:-1]
    previous_kind = np.roll(block_kind, 1)

    # -- messages and their times -------------------------------------------------------------
    count = int(block_len.sum())
    block = np.repeat(np.arange(len(block_len)), block_len)
    position = np.arange(count) - (np.cumsum(block_len) - block_len)[block]
    kind_b, sender_b = block_kind[block], block_sender[block]
    head = position == 0
    gap = np.zeros(count, dtype=np.int64)

    def lognormal(median: float, sigma: float, size: int) -> Ints:
        return np.rint(rng.lognormal(np.log(median), sigma, size)).astype(np.int64)

    within = ~head
    gap[within & (kind_b == _CUSTOMER)] = lognormal(
        15, 0.8, int((within & (kind_b == _CUSTOMER)).sum())
    )
    for who, median, sigma in ((BOT, 2, 0.4), (AGENT, 25, 0.7), (UNKNOWN, 8, 1.0)):
        chosen = within & (kind_b == _REPLY) & (sender_b == who)
        gap[chosen] = lognormal(median, sigma, int(chosen.sum()))
    opener_within = within & (kind_b == _OPENER)
    gap[opener_within] = rng.integers(1, 10, int(opener_within.sum()))
    starts = head & ~first_block[block]
    after_opener = starts & (kind_b == _CUSTOMER) & (previous_kind[block] == _OPENER)
    gap[after_opener] = lognormal(1800, 1.2, int(after_opener.sum()))
    again = starts & (kind_b == _CUSTOMER) & (previous_kind[block] != _OPENER)
    gap[again] = np.minimum(lognormal(180, 1.5, int(again.sum())), 8 * 3600)
    replies = starts & (kind_b == _REPLY)
    human = (sender_b == AGENT) | ((sender_b == UNKNOWN) & (rng.random(count) < 0.5))
    quick = replies & ~human
    gap[quick] = rng.integers(1, 9, int(quick.sum()))
    slow = replies & human
    gap[slow] = np.clip(lognormal(360, 1.3, int(slow.sum())), 5, 12 * 3600)
    gap = np.maximum(gap, np.where(head & first_block[block], 0, 1))
    conv = block_conv[block]
    at = _times(conv_start, conv, gap)
    # agents answer a run that came in at night from 08:00 on
    night = slow & (sender_b == AGENT)
    hour = (at[night] % 86_400) // 3600
    late = hour >= 20
    early = hour < 8
    push = np.zeros(int(night.sum()), dtype=np.int64)
    into_hour = at[night] % 3600
    push[early] = (8 - hour[early]) * 3600 - into_hour[early]
    push[late] = (32 - hour[late]) * 3600 - into_hour[late]
    pushed = push > 0
    push[pushed] += rng.integers(0, 1800, int(pushed.sum()))
    gap[np.flatnonzero(night)] += push
    at = _times(conv_start, conv, gap)

    # -- what each message is -----------------------------------------------------------------
    inbound = kind_b == _CUSTOMER
    outbound = ~inbound
    is_opener = kind_b == _OPENER
    sender = np.where(inbound, UNKNOWN, sender_b)
    template = np.full(count, -1, dtype=np.int64)
    tagged = outbound & (sender != UNKNOWN)
    template[is_opener & tagged] = rng.integers(0, len(TEMPLATES), int((is_opener & tagged).sum()))
    follow_up = tagged & (sender == AGENT) & (rng.random(count) < 0.03)
    template[follow_up] = rng.integers(0, len(TEMPLATES), int(follow_up.sum()))
    failure = np.where(is_opener, 0.07, 0.015)
    failed = outbound & (rng.random(count) < failure)
    status = np.full(count, -1, dtype=np.int64)
    draw = rng.random(count)
    read_share, delivered_share = np.where(is_opener, 0.45, 0.7), np.where(is_opener, 0.45, 0.22)
    status[outbound] = np.where(
        draw < read_share, READ, np.where(draw < read_share + delivered_share, DELIVERED, SENT)
    )[outbound]
    status[failed] = FAILED
    error_code = np.zeros(count, dtype=np.int64)
    for chosen, table in (
        (failed & is_opener, ERRORS_TEMPLATE),
        (failed & ~is_opener, ERRORS_REPLY),
    ):
        codes, shares = zip(*table, strict=True)
        error_code[chosen] = rng.choice(codes, int(chosen.sum()), p=shares)
    missing = np.full(count, -1, dtype=np.int64)
    logged = tagged & (rng.random(count) < 0.6)
    logged_at = np.where(logged, at, missing)
    sent_seen = outbound & (~failed | (rng.random(count) < 0.4))
    sent_at = np.where(sent_seen, at, missing)
    failed_at = np.where(
        failed, at + np.where(sent_seen | logged, rng.integers(0, 30, count), 0), missing
    )
    reached = outbound & ((status == DELIVERED) | (status == READ))
    delivered_at = np.where(reached, at + rng.integers(1, 5, count), missing)
    read_after = np.clip(lognormal(60, 1.5, count), 1, 86_400)
    read_at = np.where(outbound & (status == READ), delivered_at + read_after, missing)
    category = np.full(count, -1, dtype=np.int64)
    priced = outbound & ~failed
    category[priced] = 0  # service
    category[priced & is_opener] = np.where(sender[priced & is_opener] == CAMPAIGN, 1, 2)
    category[priced & (template >= 0) & ~is_opener] = 2
    kind = np.full(count, -1, dtype=np.int64)
    kind[logged] = np.where(template[logged] >= 0, 5, 0)
    draw = rng.random(count)
    kind[inbound] = np.where(draw < 0.85, 0, np.where(draw < 0.91, 3, np.where(draw < 0.96, 2, 4)))[
        inbound
    ]
    answers_opener = inbound & after_opener & (rng.random(count) < 0.5)
    kind[answers_opener] = 1
    replies_to = np.full(count, -1, dtype=np.int64)
    replies_to[answers_opener] = np.flatnonzero(answers_opener) - 1  # the opener's last message
    reply_id = np.full(count, -1, dtype=np.int64)
    buttons = (kind == 1) | (kind == 2)
    reply_id[buttons] = rng.integers(0, len(BUTTONS), int(buttons.sum()))
    body = np.full(count, -1, dtype=np.int64)
    body[inbound & (kind == 0)] = rng.integers(0, len(PHRASES), int((inbound & (kind == 0)).sum()))
    body[buttons] = reply_id[buttons]

    # -- arrival order ------------------------------------------------------------------------
    arrival = np.argsort(at, kind="stable")
    rank = np.empty(count, dtype=np.int64)
    rank[arrival] = np.arange(count)
    replies_to = np.where(replies_to >= 0, rank[np.maximum(replies_to, 0)], -1)[arrival]
    phones, displays, wabas = _numbers(shape)
    spread = (np.arange(pairs, dtype=np.int64) * 48_271 + shape.seed) % 10**8
    areas = ("5511", "1650", "4479", "6281")
    customers = [f"{areas[i % 4]}{n:08d}" for i, n in enumerate(spread.tolist())]
    small, code = np.int32, np.int8
    return MessageSet(
        shape=shape,
        phones=phones,
        displays=displays,
        wabas=wabas,
        customers=customers,
        pair_phone=pair_phone,
        conversations=kept,
        pair=conv_pair[conv][arrival].astype(small),
        inbound=inbound[arrival],
        at=at[arrival],
        sent_at=sent_at[arrival],
        delivered_at=delivered_at[arrival],
        read_at=read_at[arrival],
        failed_at=failed_at[arrival],
        logged_at=logged_at[arrival],
        status=status[arrival].astype(code),
        sender=sender[arrival].astype(code),
        error_code=error_code[arrival].astype(small),
        template=template[arrival].astype(code),
        kind=kind[arrival].astype(code),
        category=category[arrival].astype(code),
        replies_to=replies_to.astype(small),
        reply_id=reply_id[arrival].astype(code),
        body=body[arrival].astype(code),
    )


def _times(conv_start: Ints, conv: Ints, gap: Ints) -> Ints:
    """Each message's time: its conversation's start plus the gaps before it in it."""
    total = np.cumsum(gap)
    first = np.ones(len(conv), dtype=bool)
    first[1:] = conv[1:] != conv[:-1]
    before = (total - gap)[first]
    offset = total - np.repeat(before, np.diff(np.append(np.flatnonzero(first), len(conv))))
    result: Ints = conv_start[conv] + offset
    return result


def _numbers(shape: Shape) -> tuple[list[str], list[str], list[str]]:
    rng = np.random.default_rng([shape.seed, 7])
    ids = rng.integers(10**8, 10**9, shape.numbers).tolist()
    display = rng.integers(10**6, 10**7, shape.numbers).tolist()
    phones = [str(106_540_000_000_000 + i * 10**9 + n) for i, n in enumerate(ids)]
    displays = [f"1555{i:02d}{n % 10**5:05d}" for i, n in enumerate(display)]
    wabas = [str(102_290_129_340_000 + i // 2) for i in range(shape.numbers)]  # two numbers each
    return phones, displays, wabas


def describe(found: MessageSet) -> dict[str, Any]:
    """Counts that show what the set holds."""
    outbound = ~found.inbound
    return {
        "messages": len(found),
        "conversations_generated": found.conversations,
        "pairs": len(found.customers),
        "numbers": len(found.phones),
        "inbound": int(found.inbound.sum()),
        "outbound": int(outbound.sum()),
        "by_sender": {
            name: int((outbound & (found.sender == i)).sum()) for i, name in enumerate(SENDERS)
        },
        "by_status": {name: int((found.status == i).sum()) for i, name in enumerate(STATUSES)},
        "with_template": int((found.template >= 0).sum()),
        "errors": {
            str(code): int((found.error_code == code).sum())
            for code in sorted(set(found.error_code.tolist()) - {0})
        },
        "from": int(found.at.min()) if len(found) else None,
        "to": int(found.updated_at.max()) if len(found) else None,
    }
