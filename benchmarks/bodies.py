"""Deterministic, signed WhatsApp webhook bodies for load tests.

Body ``i`` of a pool depends only on ``(seed, i)``: it is built from its own
``random.Random``, and every id in it embeds the seed and the index, so no two
bodies of a pool are equal and a pool can be generated in parallel shards.

About 95% of the bodies are ``messages`` changes carrying a few
``statuses[]`` (sent, delivered, read, failed, with ``conversation`` and
``pricing`` objects): by default each outbound message's own callbacks, as Meta
sends them (see :data:`STATUSES`); the rest batch several management changes
(``message_template_status_update``, ``message_template_quality_update``,
``phone_number_quality_update``, ``account_alerts``,
``business_capability_update``), the way Meta batches updates in one POST.

A pool on disk is a directory of shard files read by ``replay.lua``. Each
record is a decimal length line followed by that many bytes: the
``X-Hub-Signature-256`` and ``Content-Length`` header lines, a blank line and
the body. The request line, ``Host`` and ``Content-Type`` are added by the
Lua script, so a pool does not depend on the server's port.

Usage::

    python benchmarks/bodies.py --count 200000 --out pool
    python benchmarks/bodies.py --sample 3
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_SEED = 20_240_611
DEFAULT_SECRET = "waquality-bench-app-secret"  # noqa: S105 - public, for load tests only
DEFAULT_SHARDS = 16
MANIFEST = "manifest.json"
BASE_TIME = 1_760_000_000
"""Unix time of body 0; body ``i`` happens at ``BASE_TIME + i``."""

MESSAGES_SHARE = 0.95
"""Share of bodies that are ``messages`` changes. Status callbacks dominate real traffic (Meta
sizes webhook endpoints at about 3x outbound plus 1x inbound messages), while quality, template
and account changes arrive a few times a day per WABA: 5% of bodies carrying several management
changes each is already far more than a real presence sees."""

STATUSES = ("lifecycle", "new")
"""How the ``statuses[]`` items of a pool relate to messages.

``lifecycle`` (the default): each business number has its own stream of outbound messages,
and each message gets its callbacks as Meta sends them (up to three per message: sent,
delivered, read), in the number's bodies: its ``sent`` first, its ``delivered`` (or, for
:data:`FAILED_SHARE` of messages, ``failed`` instead, and no ``read``) :data:`DELIVERED_LAG`
messages later, its ``read`` :data:`READ_LAG` messages later. Body ``i`` belongs to number
``i % numbers`` and holds the next :data:`SLOTS` callbacks of its stream, of which it sends
3 to 5 (so some messages are first heard of as delivered or read, and some are never read).

``new``: every status is the first news of a message never seen before, to a customer never
seen before (the most work per item for the conversation tracker: a new message and a new
conversation each)."""

SLOTS = 5
DELIVERED_LAG = 5  # messages
READ_LAG = 100  # messages
FAILED_SHARE = 0.1

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Phone:
    display_phone_number: str
    phone_number_id: str


@dataclass(frozen=True, slots=True)
class Template:
    template_id: int
    name: str
    language: str
    category: str


@dataclass(frozen=True, slots=True)
class Waba:
    waba_id: str
    business_id: str
    phones: tuple[Phone, ...]
    templates: tuple[Template, ...]


_TEMPLATE_NAMES = (
    "order_confirmation",
    "shipping_update",
    "delivery_reminder",
    "abandoned_cart",
    "cart_reminder",
    "welcome_template",
    "appointment_reminder",
    "payment_receipt",
    "otp_login",
    "seasonal_offer",
    "feedback_request",
    "back_in_stock",
)
_LANGUAGES = ("en_US", "pt_BR", "es", "en", "de", "id")
_CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")


def make_wabas(seed: int, count: int = 6) -> tuple[Waba, ...]:
    """The fixed set of accounts, numbers and templates a pool talks about."""
    rng = random.Random(f"wabas:{seed}")
    wabas: list[Waba] = []
    for w in range(count):
        phones = tuple(
            Phone(
                display_phone_number=f"1555{rng.randrange(10**7):07d}",
                phone_number_id=str(106_540_352_000_000 + rng.randrange(10**9)),
            )
            for _ in range(rng.randint(1, 3))
        )
        templates = tuple(
            Template(
                template_id=1_689_556_900_000_000 + w * 10_000 + t,
                name=f"{rng.choice(_TEMPLATE_NAMES)}_{t}",
                language=rng.choice(_LANGUAGES),
                category=rng.choice(_CATEGORIES),
            )
            for t in range(rng.randint(8, 24))
        )
        wabas.append(
            Waba(
                waba_id=str(102_290_129_340_000 + rng.randrange(10**6)),
                business_id=str(506_914_307_000_000 + rng.randrange(10**6)),
                phones=phones,
                templates=templates,
            )
        )
    return tuple(wabas)


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` header value Meta would send."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _wamid(recipient: str, token: str) -> str:
    # Shaped like real ids: base64 of a small binary envelope around the
    # recipient number and an 18-character hex message key.
    raw = (
        b"\x1c\x18"
        + bytes([len(recipient)])
        + recipient.encode()
        + b"\x15\x02\x00\x11\x18\x12"
        + token.encode()
        + b"\x00"
    )
    return "wamid." + base64.b64encode(raw).decode()


_PRICING_CATEGORIES = ("marketing", "utility", "authentication", "service")
_FAILURES = (
    (131049, "This message was not delivered to maintain healthy ecosystem engagement."),
    (131026, "Message undeliverable"),
    (131047, "Re-engagement message"),
    (130429, "Rate limit hit"),
    (131048, "Spam rate limit hit"),
)
_ERROR_HREF = "/documentation/business-messaging/whatsapp/support/error-codes"


@dataclass(frozen=True, slots=True)
class _Message:
    """What every callback of one outbound message shares."""

    recipient: str
    wamid: str
    category: str
    tag: str | None  # biz_opaque_callback_data
    failure: tuple[int, str] | None
    conversation_id: str


class BodyFactory:
    """Builds body ``i`` of the pool identified by ``seed`` (and ``statuses``, one of
    :data:`STATUSES`)."""

    def __init__(self, seed: int = DEFAULT_SEED, statuses: str = STATUSES[0]) -> None:
        if statuses not in STATUSES:
            raise ValueError(f"statuses must be one of {STATUSES}")
        self.seed = seed
        self.statuses = statuses
        self.wabas = make_wabas(seed)
        self.numbers = [(waba, phone) for waba in self.wabas for phone in waba.phones]

    def body(self, index: int) -> bytes:
        rng = random.Random(self.seed * 2**40 + index)
        if rng.random() < MESSAGES_SHARE:
            payload = self._statuses_payload(rng, index)
        else:
            payload = self._management_payload(rng, index)
        return json.dumps(payload, separators=(",", ":")).encode()

    def management(self, index: int) -> bytes:
        """Body ``index`` as a batch of management changes, whatever ``MESSAGES_SHARE`` says."""
        rng = random.Random(self.seed * 2**40 + index)
        rng.random()  # the draw that body() spends on choosing the kind
        payload = self._management_payload(rng, index)
        return json.dumps(payload, separators=(",", ":")).encode()

    def _key(self, index: int, part: int) -> str:
        return f"{self.seed % 0xFFFF:04X}{index:010X}{part:02X}AB"

    # -- messages -----------------------------------------------------------

    def _statuses_payload(self, rng: random.Random, index: int) -> Json:
        if self.statuses == "lifecycle":
            number = index % len(self.numbers)
            waba, phone = self.numbers[number]
            first = index // len(self.numbers) * SLOTS
            sent = rng.choice((3, 3, 4, 4, 4, 5))
            when = BASE_TIME + index - rng.randrange(3)
            found = (self._callback(number, slot, when) for slot in range(first, first + sent))
            statuses = [status for status in found if status is not None]
        else:
            waba = rng.choice(self.wabas)
            phone = rng.choice(waba.phones)
            statuses = [
                self._status(rng, index, part) for part in range(rng.choice((3, 3, 4, 4, 4, 5)))
            ]
        value: Json = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": phone.display_phone_number,
                "phone_number_id": phone.phone_number_id,
            },
            "statuses": statuses,
        }
        return {
            "object": "whatsapp_business_account",
            "entry": [{"id": waba.waba_id, "changes": [{"field": "messages", "value": value}]}],
        }

    def _callback(self, number: int, slot: int, when: int) -> Json | None:
        """The callback in ``slot`` of a number's stream (``None``: the read of a failed
        message, or a message before the stream's first)."""
        stage = slot % 3
        serial = slot // 3 - (0, DELIVERED_LAG, READ_LAG)[stage]
        if serial < 0:
            return None
        message = self._message(number, serial)
        kind = ("sent", "failed" if message.failure else "delivered", "read")[stage]
        if kind == "read" and message.failure:
            return None
        return _status_item(message, kind, when)

    def _message(self, number: int, serial: int) -> _Message:
        rng = random.Random((self.seed * 2**8 + number) * 2**40 + serial)
        recipient = f"{rng.choice(('1650', '5511', '4479', '6281'))}{rng.randrange(10**7):07d}"
        tag = None
        if rng.random() < 0.3:
            tag = f"campaign-{rng.randrange(40)}:step-{rng.randrange(6)}"
        key = f"{self.seed % 0xFFFF:04X}{number:02X}{serial:010X}CD"
        return _Message(
            recipient=recipient,
            wamid=_wamid(recipient, key),
            category=rng.choice(_PRICING_CATEGORIES),
            tag=tag,
            failure=rng.choice(_FAILURES) if rng.random() < FAILED_SHARE else None,
            conversation_id=hashlib.blake2b(key.encode(), digest_size=16).hexdigest(),
        )

    def _status(self, rng: random.Random, index: int, part: int) -> Json:
        recipient = f"{rng.choice(('1650', '5511', '4479', '6281'))}{rng.randrange(10**7):07d}"
        when = BASE_TIME + index - rng.randrange(60)
        kind = rng.choices(("sent", "delivered", "read", "failed"), (35, 33, 22, 10))[0]
        tag = None
        if rng.random() < 0.3:
            tag = f"campaign-{rng.randrange(40)}:step-{rng.randrange(6)}"
        category = rng.choice(_PRICING_CATEGORIES)
        message = _Message(
            recipient=recipient,
            wamid=_wamid(recipient, self._key(index, part)),
            category=category,
            tag=tag,
            failure=rng.choice(_FAILURES) if kind == "failed" else None,
            conversation_id=hashlib.blake2b(f"{index}:{part}".encode(), digest_size=16).hexdigest(),
        )
        return _status_item(message, kind, when)

    # -- management ---------------------------------------------------------

    def _management_payload(self, rng: random.Random, index: int) -> Json:
        when = BASE_TIME + index
        wabas = rng.sample(self.wabas, rng.choice((1, 1, 1, 2)))
        per_entry = (4, 5, 5, 6) if len(wabas) == 1 else (2, 3, 3)
        entries: list[Json] = [
            {
                "id": waba.waba_id,
                "time": when,
                "changes": [
                    self._management_change(rng, waba) for _ in range(rng.choice(per_entry))
                ],
            }
            for waba in wabas
        ]
        return {"object": "whatsapp_business_account", "entry": entries}

    def _management_change(self, rng: random.Random, waba: Waba) -> Json:
        field = rng.choices(
            (
                "message_template_status_update",
                "message_template_quality_update",
                "phone_number_quality_update",
                "account_alerts",
                "business_capability_update",
            ),
            (30, 25, 20, 15, 10),
        )[0]
        value: Json
        if field == "message_template_status_update":
            value = _template_status(rng, rng.choice(waba.templates))
        elif field == "message_template_quality_update":
            template = rng.choice(waba.templates)
            scores = ("GREEN", "YELLOW", "RED", "UNKNOWN")
            previous, new = rng.sample(scores, 2)
            value = {
                "previous_quality_score": previous,
                "new_quality_score": new,
                "message_template_id": template.template_id,
                "message_template_name": template.name,
                "message_template_language": template.language,
            }
        elif field == "phone_number_quality_update":
            value = _phone_quality(rng, rng.choice(waba.phones))
        elif field == "account_alerts":
            value = _account_alert(rng, waba)
        else:
            limit = rng.choice((250, 2000, 10_000, 100_000, "TIER_UNLIMITED"))
            value = {"max_daily_conversations_per_business": limit}
            if limit == 250:
                value["max_phone_numbers_per_business"] = 2
            else:
                value["max_phone_numbers_per_waba"] = rng.choice((20, 25))
        return {"field": field, "value": value}


_PAUSE_TEXT = (
    "Your WhatsApp message template has been paused for 3 hours until Sep 22 at "
    "3:00 AM UTC because it had issues."
)


def _status_item(message: _Message, kind: str, when: int) -> Json:
    """One ``statuses[]`` item about ``message``."""
    status: Json = {
        "id": message.wamid,
        "status": kind,
        "timestamp": str(when),
        "recipient_id": message.recipient,
    }
    if message.tag is not None:
        status["biz_opaque_callback_data"] = message.tag
    if kind == "failed":
        assert message.failure is not None
        code, title = message.failure
        status["errors"] = [
            {
                "code": code,
                "title": title,
                "message": title,
                "error_data": {"details": f"{title} See the error code reference."},
                "href": _ERROR_HREF,
            }
        ]
        return status
    add_conversation(status, message.conversation_id, when, message.category)
    return status


def add_conversation(status: Json, conversation_id: str, when: int, category: str) -> None:
    """The ``conversation`` and ``pricing`` objects of a status that did not fail: the
    expiration only on ``sent``, no pricing on ``read``."""
    kind = status["status"]
    conversation: Json = {"id": conversation_id}
    if kind == "sent":
        conversation["expiration_timestamp"] = str(when + 86_400)
    conversation["origin"] = {"type": category}
    status["conversation"] = conversation
    if kind != "read":
        status["pricing"] = {
            "billable": category != "service",
            "pricing_model": "PMP",
            "type": "regular" if category != "service" else "free_customer_service",
            "category": category,
        }


def _template_status(rng: random.Random, template: Template) -> Json:
    event = rng.choices(
        ("APPROVED", "PAUSED", "DISABLED", "REJECTED", "FLAGGED", "REINSTATED", "PENDING"),
        (30, 15, 8, 12, 15, 10, 10),
    )[0]
    value: Json = {
        "event": event,
        "message_template_id": template.template_id,
        "message_template_name": template.name,
        "message_template_language": template.language,
        "reason": "NONE",
        "message_template_category": template.category,
    }
    if event == "PAUSED":
        value["other_info"] = {
            "title": rng.choice(("FIRST_PAUSE", "SECOND_PAUSE", "RATE_LIMITING_PAUSE")),
            "description": _PAUSE_TEXT,
        }
    elif event == "DISABLED":
        value["disable_info"] = {"disable_date": BASE_TIME + rng.randrange(10**6)}
        value["other_info"] = {
            "title": "DISABLED",
            "description": "Your WhatsApp message template has been disabled.",
        }
    elif event == "REJECTED":
        value["reason"] = rng.choice(("INVALID_FORMAT", "PROMOTIONAL", "INCORRECT_CATEGORY"))
        if value["reason"] == "INVALID_FORMAT":
            value["rejection_info"] = {
                "reason": "Your template has parameters placed next to each other "
                "without text or punctuation between them.",
                "recommendation": "Separate parameters with descriptive text.",
            }
    elif event == "FLAGGED":
        value["reason"] = None
    return value


_TIERS = ("TIER_250", "TIER_2K", "TIER_10K", "TIER_100K", "TIER_UNLIMITED")


def _phone_quality(rng: random.Random, phone: Phone) -> Json:
    event = rng.choice(("FLAGGED", "UNFLAGGED", "UPGRADE", "DOWNGRADE", "THROUGHPUT_UPGRADE"))
    value: Json = {"display_phone_number": phone.display_phone_number, "event": event}
    if event == "THROUGHPUT_UPGRADE":
        value["current_limit"] = "TIER_UNLIMITED"
        value["max_daily_conversations_per_business"] = "TIER_UNLIMITED"
        return value
    old, new = sorted(rng.sample(range(len(_TIERS) - 1), 2))
    if event == "DOWNGRADE":
        old, new = new, old
    if event in ("UPGRADE", "DOWNGRADE"):
        value["old_limit"] = _TIERS[old]
    value["current_limit"] = _TIERS[new]
    value["max_daily_conversations_per_business"] = _TIERS[new]
    return value


_ALERTS = (
    (
        "WARNING",
        "INCREASED_CAPABILITIES_ELIGIBILITY_DEFERRED",
        "Limits cannot be increased for your business at this time. Use WhatsApp Business "
        "platform actively for several days and follow our messaging policies.",
    ),
    (
        "CRITICAL",
        "INCREASED_CAPABILITIES_ELIGIBILITY_FAILED",
        "Your messaging quality was too low to unlock more capabilities at this time.",
    ),
    (
        "WARNING",
        "INCREASED_CAPABILITIES_ELIGIBILITY_NEED_MORE_INFO",
        "We need more information about your business before limits can be increased.",
    ),
    (
        "INFORMATIONAL",
        "OBA_APPROVED",
        "Your request for an Official Business Account was approved.",
    ),
    ("CRITICAL", "OBA_REJECTED", "Your request for an Official Business Account was rejected."),
    ("WARNING", "PROFILE_PICTURE_LOST", "The profile picture of your business was removed."),
)


def _account_alert(rng: random.Random, waba: Waba) -> Json:
    severity, alert_type, description = rng.choice(_ALERTS)
    if alert_type.startswith("INCREASED"):
        entity_type, entity_id = "BUSINESS", waba.business_id
    else:
        entity_type, entity_id = "PHONE_NUMBER", rng.choice(waba.phones).phone_number_id
    return {
        "entity_type": entity_type,
        "entity_id": entity_id,
        "alert_info": {
            "alert_severity": severity,
            "alert_status": "ACTIVE",
            "alert_type": alert_type,
            "alert_description": description,
        },
    }


# -- pools on disk ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolInfo:
    """What ``manifest.json`` of a pool says."""

    directory: str
    first: int
    count: int
    shards: int
    seed: int
    secret_sha256: str
    total_body_bytes: int
    seconds: float
    statuses: str = STATUSES[0]

    @property
    def mean_body_bytes(self) -> float:
        return self.total_body_bytes / self.count if self.count else 0.0


def shard_path(directory: Path, shard: int) -> Path:
    return directory / f"shard-{shard:03d}.req"


def request_record(secret: bytes, body: bytes) -> bytes:
    """One pool record: length line, header lines, blank line, body."""
    head = f"X-Hub-Signature-256: {sign(secret, body)}\r\nContent-Length: {len(body)}\r\n\r\n"
    record = head.encode() + body
    return f"{len(record)}\n".encode() + record


def _default_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _write_shard(
    directory: str,
    shard: int,
    shards: int,
    first: int,
    count: int,
    seed: int,
    secret: bytes,
    statuses: str,
) -> int:
    factory = BodyFactory(seed, statuses)
    total = 0
    with shard_path(Path(directory), shard).open("wb", buffering=1 << 20) as out:
        for index in range(first + shard, first + count, shards):
            body = factory.body(index)
            total += len(body)
            out.write(request_record(secret, body))
    return total


def write_pool(
    directory: Path,
    count: int,
    *,
    first: int = 0,
    seed: int = DEFAULT_SEED,
    secret: str = DEFAULT_SECRET,
    shards: int = DEFAULT_SHARDS,
    workers: int | None = None,
    statuses: str = STATUSES[0],
) -> PoolInfo:
    """Write bodies ``first .. first+count-1`` as ``shards`` files under ``directory``.

    Body ``first + j`` goes to shard ``j % shards``; shards are written in
    parallel. Pools with disjoint index ranges never share a body.
    """
    if count < 1 or shards < 1:
        raise ValueError("count and shards must be positive")
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    key = secret.encode()
    jobs = workers or min(shards, os.cpu_count() or 1)
    tasks = [(str(directory), s, shards, first, count, seed, key, statuses) for s in range(shards)]
    if jobs == 1:
        sizes = [_write_shard(*task) for task in tasks]
    else:
        # Leaving the block for any reason (an interrupt too) terminates the workers.
        with multiprocessing.Pool(jobs, initializer=_default_signals) as pool:
            sizes = pool.starmap(_write_shard, tasks)
    info = PoolInfo(
        directory=str(directory),
        first=first,
        count=count,
        shards=shards,
        seed=seed,
        secret_sha256=hashlib.sha256(key).hexdigest(),
        total_body_bytes=sum(sizes),
        seconds=round(time.perf_counter() - started, 3),
        statuses=statuses,
    )
    (directory / MANIFEST).write_text(json.dumps(asdict(info), indent=2) + "\n")
    return info


def read_pool(directory: Path) -> PoolInfo:
    data = json.loads((directory / MANIFEST).read_text())
    return PoolInfo(**data)


def describe(count: int, seed: int = DEFAULT_SEED, kind: str = STATUSES[0]) -> Json:
    """Counts of bodies, statuses, messages and change fields among the first ``count``
    bodies (``kind``: one of :data:`STATUSES`)."""
    factory = BodyFactory(seed, kind)
    fields: dict[str, int] = {}
    statuses: dict[str, int] = {}
    messages: set[str] = set()
    sizes: list[int] = []
    for index in range(count):
        raw = factory.body(index)
        sizes.append(len(raw))
        for entry in json.loads(raw)["entry"]:
            for change in entry["changes"]:
                fields[change["field"]] = fields.get(change["field"], 0) + 1
                for status in change["value"].get("statuses", ()):
                    statuses[status["status"]] = statuses.get(status["status"], 0) + 1
                    messages.add(status["id"])
    sizes.sort()
    return {
        "bodies": count,
        "mean_bytes": round(sum(sizes) / count, 1),
        "min_bytes": sizes[0],
        "median_bytes": sizes[count // 2],
        "max_bytes": sizes[-1],
        "changes_by_field": dict(sorted(fields.items())),
        "statuses": dict(sorted(statuses.items())),
        "messages": len(messages),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200_000, help="number of requests")
    parser.add_argument("--first", type=int, default=0, help="index of the first body")
    parser.add_argument("--out", type=Path, help="pool directory to write")
    parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--secret", default=DEFAULT_SECRET, help="app secret used to sign")
    parser.add_argument(
        "--statuses", choices=STATUSES, default=STATUSES[0], help="how statuses relate to messages"
    )
    parser.add_argument("--sample", type=int, metavar="N", help="print the first N bodies and exit")
    parser.add_argument("--describe", type=int, metavar="N", help="summarise the first N bodies")
    args = parser.parse_args(argv)
    if args.sample:
        factory = BodyFactory(args.seed, args.statuses)
        for index in range(args.sample):
            sys.stdout.write(factory.body(index).decode() + "\n")
        return 0
    if args.describe:
        print(json.dumps(describe(args.describe, args.seed, args.statuses), indent=2))
        return 0
    if args.out is None:
        parser.error("--out is required unless --sample or --describe is given")
    info = write_pool(
        args.out,
        args.count,
        first=args.first,
        seed=args.seed,
        secret=args.secret,
        shards=args.shards,
        statuses=args.statuses,
    )
    print(
        f"wrote {info.count} requests in {info.shards} shards to {info.directory} "
        f"in {info.seconds:.1f} s (mean body {info.mean_body_bytes:.0f} B)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
