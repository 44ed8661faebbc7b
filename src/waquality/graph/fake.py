"""A fake of Meta's Graph API (the Business Management reads the poller makes), over real HTTP.

Build a :class:`Scenario`, wrap it in a :class:`FakeGraph` and :func:`serve` it; it answers like
Meta: field selection, cursor paging, tokens, usage headers, hourly limits, Graph error bodies::

    scenario = Scenario.generate(wabas=2, phones=3, templates=250)
    fake = FakeGraph(scenario, clock=clock, waba_calls_per_hour=20)  # clock: () -> float
    with serve(fake) as url:  # "http://127.0.0.1:<port>"; poll f"{url}/v24.0/..."
        scenario.wabas[waba_id].phones[phone_id].quality_rating = "YELLOW"  # between polls
        fake.inject(Fault.SERVER_ERROR, match="/message_templates")  # the next one fails
    assert fake.calls_for(waba_id)[-1].status == 200
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import random
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

WINDOW = 3600.0  # seconds: Meta's rate limits count calls in a rolling hour
DEFAULT_LIMIT = 25
MAX_LIMIT = 100
T = TypeVar("T")

# --------------------------------------------------------------------------------------------
# The world the fake serves: plain mutable objects, named after the Graph fields they answer.
# --------------------------------------------------------------------------------------------


@dataclass
class FakePhone:
    """A business phone number. ``messaging_limit`` answers
    ``whatsapp_business_manager_messaging_limit``; ``messaging_limit_tier`` (legacy) is left out
    of responses when None; ``throughput`` is the level (STANDARD or HIGH); ``can_send_message``
    (AVAILABLE, LIMITED, BLOCKED) drives the PHONE_NUMBER entity of ``health_status``."""

    id: str
    display_phone_number: str
    verified_name: str
    status: str = "CONNECTED"
    quality_rating: str = "GREEN"
    messaging_limit: str = "TIER_2K"
    messaging_limit_tier: str | None = None
    throughput: str = "STANDARD"
    name_status: str = "APPROVED"
    can_send_message: str = "AVAILABLE"


@dataclass
class FakeTemplate:
    """A message template; ``quality_score`` and ``quality_date`` (unix seconds) answer the
    ``quality_score`` field."""

    id: str
    name: str
    language: str = "en_US"
    status: str = "APPROVED"
    category: str = "UTILITY"
    quality_score: str = "GREEN"
    quality_date: int = 1_760_000_000
    rejected_reason: str = "NONE"


@dataclass
class FakeWaba:
    """A WhatsApp Business Account. ``token`` reads it and everything in it; ``business_id`` is
    the portfolio that lists it (as owned or client), whose token may read it too."""

    id: str
    name: str
    token: str
    business_id: str | None = None
    phones: dict[str, FakePhone] = field(default_factory=dict)
    templates: dict[str, FakeTemplate] = field(default_factory=dict)
    subscribed: bool = True
    messaging_limit: str = "TIER_2K"
    can_send_message: str = "AVAILABLE"
    account_review_status: str = "APPROVED"
    currency: str = "USD"
    timezone_id: str = "1"


@dataclass
class FakeBusiness:
    """A business portfolio: ``owned`` and ``client`` list WABA ids; its token reads them all."""

    id: str
    token: str
    owned: list[str] = field(default_factory=list)
    client: list[str] = field(default_factory=list)
    name: str = "Business"


@dataclass
class Scenario:
    """Everything the fake serves. A token listed in ``expired_tokens`` answers code 190
    "Session has expired"; ``app_id``/``app_name`` are what ``subscribed_apps`` lists."""

    wabas: dict[str, FakeWaba] = field(default_factory=dict)
    businesses: dict[str, FakeBusiness] = field(default_factory=dict)
    app_id: str = "1234567890123456"
    app_name: str = "waquality"
    expired_tokens: set[str] = field(default_factory=set)

    @classmethod
    def generate(
        cls,
        wabas: int = 3,
        phones: int = 25,
        templates: int = 250,
        seed: int = 1,
        businesses: int = 1,
    ) -> Scenario:
        """A deterministic scenario: ``phones`` and ``templates`` per WABA, mostly healthy.

        WABA ``i`` is listed by business ``i % businesses``: as a client WABA when ``i % 3 == 2``,
        as owned otherwise (with ``businesses=0`` no business lists it)."""
        rng = random.Random(seed)
        used: set[str] = set()

        def new_id() -> str:
            while (value := str(rng.randrange(10**14, 10**16))) in used:
                pass
            used.add(value)
            return value

        def token() -> str:
            return f"EAAfake{rng.getrandbits(96):024x}"

        scenario = cls(app_id=new_id())
        portfolio = [
            FakeBusiness(id=new_id(), token=token(), name=f"{_BRANDS[i % len(_BRANDS)]} Group")
            for i in range(businesses)
        ]
        scenario.businesses = {b.id: b for b in portfolio}
        number = 100
        for w in range(wabas):
            brand = _BRANDS[w % len(_BRANDS)]
            owner = portfolio[w % businesses] if portfolio else None
            waba = FakeWaba(
                id=new_id(),
                name=f"{brand} WhatsApp {w + 1}",
                token=token(),
                business_id=owner.id if owner else None,
                messaging_limit=_pick(rng, _LIMITS),
            )
            if owner is not None:
                (owner.client if w % 3 == 2 else owner.owned).append(waba.id)
            for p in range(phones):
                status = _pick(rng, _PHONE_STATUSES)
                limit = _pick(rng, _LIMITS)
                phone = FakePhone(
                    id=new_id(),
                    display_phone_number=f"+1 555-{number // 10_000:03d}-{number % 10_000:04d}",
                    verified_name=f"{brand} {_SUFFIXES[p % len(_SUFFIXES)]}",
                    status=status,
                    quality_rating=_pick(rng, _QUALITIES),
                    messaging_limit=limit,
                    messaging_limit_tier=_LEGACY[limit] if rng.random() < 0.5 else None,
                    throughput=_pick(rng, {"STANDARD": 9, "HIGH": 1}),
                    name_status=_pick(rng, {"APPROVED": 18, "PENDING_REVIEW": 1, "DECLINED": 1}),
                    can_send_message=_CAN_SEND.get(status, "AVAILABLE"),
                )
                number += 1
                waba.phones[phone.id] = phone
            for t in range(templates):
                state = _pick(rng, _TEMPLATE_STATUSES)
                template = FakeTemplate(
                    id=new_id(),
                    name=f"{_TOPICS[t % len(_TOPICS)]}_{t + 1:04d}",
                    language=_LANGUAGES[rng.randrange(len(_LANGUAGES))],
                    status=state,
                    category=_pick(rng, {"UTILITY": 9, "MARKETING": 9, "AUTHENTICATION": 2}),
                    quality_score=_pick(rng, _SCORES) if state == "APPROVED" else "UNKNOWN",
                    quality_date=1_760_000_000 + rng.randrange(30 * 86_400),
                    rejected_reason=_pick(rng, _REJECTIONS) if state == "REJECTED" else "NONE",
                )
                waba.templates[template.id] = template
            scenario.wabas[waba.id] = waba
        return scenario


def _pick(rng: random.Random, weights: Mapping[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


_BRANDS = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wonka")
_SUFFIXES = ("Support", "Sales", "Orders", "Alerts", "Care", "Bookings", "Billing")
_TOPICS = ("order_update", "shipping_notice", "appointment_reminder", "otp_code", "spring_sale")
_LANGUAGES = ("en_US", "en_GB", "es", "pt_BR", "de", "fr")
_PHONE_STATUSES = {
    "CONNECTED": 85,
    "FLAGGED": 4,
    "RESTRICTED": 3,
    "RATE_LIMITED": 2,
    "PENDING": 3,
    "DISCONNECTED": 2,
    "BANNED": 1,
}
_CAN_SEND = {
    "FLAGGED": "LIMITED",
    "RESTRICTED": "LIMITED",
    "RATE_LIMITED": "LIMITED",
    "DISCONNECTED": "BLOCKED",
    "BANNED": "BLOCKED",
}
_QUALITIES = {"GREEN": 80, "YELLOW": 12, "RED": 5, "NA": 3}
_LIMITS = {"TIER_250": 2, "TIER_2K": 8, "TIER_10K": 6, "TIER_100K": 3, "TIER_UNLIMITED": 1}
_LEGACY = {
    "TIER_250": "TIER_250",
    "TIER_2K": "TIER_1K",
    "TIER_10K": "TIER_10K",
    "TIER_100K": "TIER_100K",
    "TIER_UNLIMITED": "TIER_UNLIMITED",
}
_TEMPLATE_STATUSES = {"APPROVED": 80, "PENDING": 6, "REJECTED": 6, "PAUSED": 4, "DISABLED": 2}
_SCORES = {"GREEN": 80, "YELLOW": 10, "RED": 4, "UNKNOWN": 6}
_REJECTIONS = {"INVALID_FORMAT": 1, "PROMOTIONAL": 1, "TAG_CONTENT_MISMATCH": 1}

# --------------------------------------------------------------------------------------------
# Rendering: objects → Graph JSON, with field selection and cursor paging.
# --------------------------------------------------------------------------------------------

Node = FakeWaba | FakePhone | FakeTemplate | FakeBusiness
_DEFAULTS: dict[type, tuple[str, ...]] = {
    FakePhone: ("id", "display_phone_number", "verified_name", "quality_rating"),
    FakeTemplate: ("id", "name", "language", "status", "category"),
    FakeWaba: ("id", "name"),
    FakeBusiness: ("id", "name"),
}
_CAN_SEND_ORDER = ("AVAILABLE", "LIMITED", "BLOCKED")


def parse_fields(raw: str | None) -> list[str] | None:
    """``"a,b{c,d},e.limit(5)"`` → ``["a", "b", "e"]``; None when no fields are asked for."""
    if raw is None or not raw.strip():
        return None
    names, current, depth = [], "", 0
    for char in raw + ",":
        if char == "{":
            depth += 1
        elif char == "}":
            depth = max(0, depth - 1)
        elif depth == 0 and char == ",":
            names.append(current.split(".")[0].strip())
            current = ""
        elif depth == 0:
            current += char
    return [name for name in names if name]


def _entity(kind: str, entity_id: str, can_send: str) -> dict[str, Any]:
    entity: dict[str, Any] = {"entity_type": kind, "id": entity_id, "can_send_message": can_send}
    if can_send == "BLOCKED":
        entity["errors"] = [
            {
                "error_code": 141002,
                "error_description": f"Messaging from this {kind.lower()} is blocked.",
                "possible_solution": "Review the account's status in WhatsApp Manager.",
            }
        ]
    elif can_send == "LIMITED":
        entity["additional_info"] = [f"Messaging from this {kind.lower()} is limited."]
    return entity


def _health(entities: list[dict[str, Any]]) -> dict[str, Any]:
    worst = max((e["can_send_message"] for e in entities), key=_CAN_SEND_ORDER.index)
    return {"can_send_message": worst, "entities": entities}


def render(node: Node, waba: FakeWaba | None, fields: list[str] | None) -> dict[str, Any]:
    """The node's fields as Graph answers them: the requested ones (unknown names ignored) or
    the node's defaults; ``id`` always."""
    full: dict[str, Any]
    match node:
        case FakePhone():
            entities = [_entity("PHONE_NUMBER", node.id, node.can_send_message)]
            if waba is not None:
                entities.append(_entity("WABA", waba.id, waba.can_send_message))
            full = {
                "id": node.id,
                "display_phone_number": node.display_phone_number,
                "verified_name": node.verified_name,
                "status": node.status,
                "quality_rating": node.quality_rating,
                "whatsapp_business_manager_messaging_limit": node.messaging_limit,
                "throughput": {"level": node.throughput},
                "name_status": node.name_status,
                "health_status": _health(entities),
            }
            if node.messaging_limit_tier is not None:
                full["messaging_limit_tier"] = node.messaging_limit_tier
        case FakeTemplate():
            full = {
                "id": node.id,
                "name": node.name,
                "language": node.language,
                "status": node.status,
                "category": node.category,
                "quality_score": {"score": node.quality_score, "date": node.quality_date},
                "rejected_reason": node.rejected_reason,
            }
        case FakeWaba():
            entities = [_entity("WABA", node.id, node.can_send_message)]
            entities += [
                _entity("PHONE_NUMBER", p.id, p.can_send_message) for p in node.phones.values()
            ]
            full = {
                "id": node.id,
                "name": node.name,
                "currency": node.currency,
                "timezone_id": node.timezone_id,
                "message_template_namespace": hashlib.sha256(node.id.encode()).hexdigest()[:36],
                "account_review_status": node.account_review_status,
                "whatsapp_business_manager_messaging_limit": node.messaging_limit,
                "health_status": _health(entities),
            }
        case FakeBusiness():
            full = {"id": node.id, "name": node.name}
    wanted = fields if fields is not None else _DEFAULTS[type(node)]
    out = {name: full[name] for name in wanted if name in full}
    out.setdefault("id", node.id)
    return out


def encode_cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{index}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The item position a cursor stands for; ValueError if it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(cursor) from exc
    prefix, _, number = text.partition(":")
    if prefix != "offset" or not number.isdigit():
        raise ValueError(cursor)
    return int(number)


def _link(url: str, **replace: str | None) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in replace]
    query += [(k, v) for k, v in replace.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def paginate(
    items: Sequence[T], query: Mapping[str, str], url: str
) -> tuple[list[T], dict[str, Any] | None]:
    """One page of ``items`` and its ``paging`` object (None for an empty page).

    ``after``/``before`` are cursors of an item; ``next`` (absent on the last page) and
    ``previous`` (absent on the first) are ``url`` with the cursor replaced. ValueError on a bad
    ``limit`` or cursor."""
    limit = int(query.get("limit", DEFAULT_LIMIT))
    if limit <= 0:
        raise ValueError("limit")
    limit = min(limit, MAX_LIMIT)
    if "after" in query:
        start = decode_cursor(query["after"]) + 1
        end = start + limit
    elif "before" in query:
        end = decode_cursor(query["before"])
        start = max(0, end - limit)
    else:
        start, end = 0, limit
    chunk = list(items[start:end])
    if not chunk:
        return chunk, None
    first, last = encode_cursor(start), encode_cursor(start + len(chunk) - 1)
    paging: dict[str, Any] = {"cursors": {"before": first, "after": last}}
    if start + len(chunk) < len(items):
        paging["next"] = _link(url, after=last, before=None)
    if start > 0:
        paging["previous"] = _link(url, before=first, after=None)
    return chunk, paging


# --------------------------------------------------------------------------------------------
# Errors, faults and recorded calls.
# --------------------------------------------------------------------------------------------


class Fault(StrEnum):
    """What ``FakeGraph.inject`` can make a request answer."""

    RATE_LIMIT = "rate_limit"  # HTTP 400, the WABA code (80007 or 80008), regain minutes ≥ 1
    APP_RATE_LIMIT = "app_rate_limit"  # HTTP 400, code 4
    EXPIRED_TOKEN = "expired_token"  # HTTP 401, code 190, "Session has expired"  # noqa: S105
    PERMISSION = "permission"  # HTTP 403, code 200
    SERVER_ERROR = "server_error"  # HTTP 500, code 2, is_transient
    BAD_GATEWAY = "bad_gateway"  # HTTP 502, an HTML page
    TRANSIENT = "transient"  # HTTP 500, code 131000
    MALFORMED = "malformed"  # HTTP 200, the normal body cut in half
    SLOW = "slow"  # the normal answer, after ``delay`` seconds
    NOT_FOUND = "not_found"  # HTTP 400, code 100


_ERRORS: dict[int, tuple[int, str, str, str]] = {  # code → (HTTP status, type, title, details)
    2: (500, "OAuthException", "Service temporarily unavailable", "Try again later."),
    4: (400, "OAuthException", "Application request limit reached", "Too many calls this hour."),
    100: (400, "GraphMethodException", "Unsupported get request", "Invalid parameter."),
    190: (401, "OAuthException", "Invalid OAuth access token", "Cannot parse access token."),
    200: (403, "OAuthException", "Permissions error", "The token may not read this object."),
    2500: (400, "OAuthException", "Unknown path components", "Paths are /v24.0/<id>[/<edge>]."),
    80007: (400, "OAuthException", "Rate limit issues", "The WABA reached its rate limit."),
    80008: (400, "OAuthException", "Rate limit issues", "The WABA reached its rate limit."),
    131000: (500, "OAuthException", "Something went wrong", "Something went wrong. Try again."),
}
_FAULT_CODES = {
    Fault.APP_RATE_LIMIT: 4,
    Fault.EXPIRED_TOKEN: 190,
    Fault.PERMISSION: 200,
    Fault.SERVER_ERROR: 2,
    Fault.TRANSIENT: 131000,
    Fault.NOT_FOUND: 100,
}
_TRANSIENT = frozenset({2, 131000})
_BAD_GATEWAY = (
    b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
)


@dataclass(frozen=True)
class Call:
    """One request as the fake saw it. ``path`` is without the version (``/123/phone_numbers``);
    ``waba_id`` is the WABA the object belongs to (None for businesses and unknown ids)."""

    at: float
    method: str
    path: str
    query: Mapping[str, str]
    waba_id: str | None
    status: int
    error_code: int | None


@dataclass
class Reply:
    """An answer of the core, before it goes on the wire."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"
    error_code: int | None = None
    delay: float = 0.0


@dataclass
class _Armed:
    fault: Fault
    match: str | None
    remaining: int
    delay: float


def error_reply(code: int, message: str | None = None, **extra: Any) -> Reply:
    """A Graph error body; ``message`` is ``(#code) <title>`` unless given."""
    status, kind, title, details = _ERRORS[code]
    error = {
        "message": f"(#{code}) {message or title}",
        "type": kind,
        "code": code,
        **extra,
        "is_transient": code in _TRANSIENT,
        "error_data": {"messaging_product": "whatsapp", "details": details},
        "fbtrace_id": "A" + secrets.token_urlsafe(16),
    }
    return Reply(status, orjson.dumps({"error": error}), error_code=code)


def _expired(now: float) -> Reply:
    when = time.strftime("%A, %d-%b-%y %H:%M:%S UTC", time.gmtime(now - 60))
    message = f"Error validating access token: Session has expired on {when}."
    return error_reply(190, message, error_subcode=463)


def _missing(object_id: str) -> Reply:
    message = (
        f"Unsupported get request. Object with ID '{object_id}' does not exist, cannot be "
        "loaded due to missing permissions, or does not support this operation."
    )
    return error_reply(100, message, error_subcode=33)


# --------------------------------------------------------------------------------------------
# The fake: the pure core (``handle``) and its ASGI app.
# --------------------------------------------------------------------------------------------

_PATH = re.compile(r"/v\d+\.\d+((?:/[^/]+){1,2})/?")


class FakeGraph:
    """Meta's Graph API over a :class:`Scenario`; serve ``app`` (ASGI) or use :func:`serve`.

    A request counts against the app's and its WABA's hourly allowances when it is answered
    with data (a SLOW or MALFORMED fault included); refused requests do not count. Injected
    faults apply, one per request and oldest first, to requests that pass the token checks.
    Answers to those requests carry ``X-App-Usage`` and, when they touch a WABA (the WABA
    itself, its edges, its phone numbers or templates), ``X-Business-Use-Case-Usage``; a
    BAD_GATEWAY answer carries neither."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        clock: Callable[[], float] = time.time,
        waba_calls_per_hour: int = 200,
        app_calls_per_hour: int = 10_000,
        waba_limit_code: int = 80007,
    ) -> None:
        if waba_limit_code not in (80007, 80008):
            raise ValueError("waba_limit_code must be 80007 or 80008")
        self.scenario = scenario
        self.clock = clock
        self.waba_calls_per_hour = waba_calls_per_hour
        self.app_calls_per_hour = app_calls_per_hour
        self.waba_limit_code = waba_limit_code
        self.calls: list[Call] = []
        self._faults: list[_Armed] = []
        self._limited: dict[str, float] = {}
        self._waba_usage: dict[str, deque[float]] = {}
        self._app_usage: deque[float] = deque()
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[Route("/{path:path}", self._endpoint, methods=["GET", "POST", "DELETE"])]
        )

    # -- test controls ----------------------------------------------------------------------

    def inject(
        self, fault: Fault, *, match: str | None = None, times: int = 1, delay: float = 0.0
    ) -> None:
        """The next ``times`` requests whose path contains ``match`` (any when None) answer
        ``fault``; ``delay`` is the wait of a SLOW fault."""
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.append(_Armed(Fault(fault), match, times, delay))

    def clear_faults(self) -> None:
        """Forget injected faults and the limits set by :meth:`rate_limit`."""
        with self._lock:
            self._faults.clear()
            self._limited.clear()

    def rate_limit(self, waba_id: str, until: float) -> None:
        """The WABA answers its rate-limit error until the clock reads ``until``."""
        with self._lock:
            self._limited[waba_id] = until

    def calls_for(self, waba_id: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.waba_id == waba_id]

    # -- the core ---------------------------------------------------------------------------

    def handle(self, method: str, url: str, token: str | None, now: float) -> Reply:
        """Answer one request (``url`` absolute; ``token`` from the Authorization header, else
        the ``access_token`` parameter is used) and record it in ``calls``."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        found = _PATH.fullmatch(parts.path)
        path = found.group(1) if found else parts.path
        with self._lock:
            segments = path.strip("/").split("/") if found else []
            located = self._locate(segments[0]) if segments else None
            waba_id = located[1].id if located and located[1] else None
            reply = self._answer(
                method,
                parts.path,
                segments,
                query,
                token or query.get("access_token"),
                url,
                located,
                now,
            )
            self.calls.append(
                Call(now, method, path, query, waba_id, reply.status, reply.error_code)
            )
        return reply

    def _answer(
        self,
        method: str,
        full_path: str,
        segments: list[str],
        query: Mapping[str, str],
        token: str | None,
        url: str,
        located: tuple[Node, FakeWaba | None] | None,
        now: float,
    ) -> Reply:
        if not segments:
            return error_reply(2500, f"Unknown path components: {full_path}")
        if method != "GET":
            return error_reply(100, f"Unsupported {method.lower()} request")
        known = {w.token for w in self.scenario.wabas.values()}
        known |= {b.token for b in self.scenario.businesses.values()}
        if token is None or token not in known:
            return error_reply(190, error_subcode=467)
        if token in self.scenario.expired_tokens:
            return _expired(now)
        if located is None:
            return _missing(segments[0])
        node, waba = located
        if not self._allowed(token, node, waba):
            return error_reply(200)
        waba_id = waba.id if waba else None
        armed = self._take_fault(full_path)
        if armed is not None and armed.fault not in (Fault.SLOW, Fault.MALFORMED):
            return self._fault(armed.fault, segments[0], waba_id, now)
        if len(self._window(self._app_usage, now)) >= self.app_calls_per_hour:
            return self._with_usage(error_reply(4), waba_id, now, throttled=0)
        if waba_id is not None and (throttled := self._throttled(waba_id, now)):
            reply = error_reply(self.waba_limit_code)
            return self._with_usage(reply, waba_id, now, throttled=throttled)
        self._app_usage.append(now)
        if waba_id is not None:
            self._waba_usage.setdefault(waba_id, deque()).append(now)
        try:
            reply = self._data(node, waba, segments[1:], query, url)
        except ValueError:
            reply = error_reply(100, "Invalid parameter")
        reply = self._with_usage(reply, waba_id, now, throttled=0)
        if armed is not None and armed.fault is Fault.SLOW:
            reply.delay = armed.delay
        elif armed is not None:  # MALFORMED
            reply.body = reply.body[: max(1, len(reply.body) // 2)]
        return reply

    def _data(
        self,
        node: Node,
        waba: FakeWaba | None,
        edge: list[str],
        query: Mapping[str, str],
        url: str,
    ) -> Reply:
        fields = parse_fields(query.get("fields"))
        if not edge:
            return Reply(200, orjson.dumps(render(node, waba, fields)))
        items: Sequence[Node]
        match node, edge[0]:
            case FakeWaba(), "subscribed_apps":
                link = f"https://www.facebook.com/games/?app_id={self.scenario.app_id}"
                app = {"id": self.scenario.app_id, "link": link, "name": self.scenario.app_name}
                data = [{"whatsapp_business_api_data": app}] if node.subscribed else []
                return Reply(200, orjson.dumps({"data": data}))
            case FakeWaba(), "phone_numbers":
                items = list(node.phones.values())
            case FakeWaba(), "message_templates":
                items = list(node.templates.values())
            case (
                FakeBusiness(),
                "owned_whatsapp_business_accounts" | "client_whatsapp_business_accounts",
            ):
                ids = node.owned if edge[0].startswith("owned") else node.client
                items = [self.scenario.wabas[i] for i in ids if i in self.scenario.wabas]
            case _:
                kind = type(node).__name__.removeprefix("Fake")
                return error_reply(100, f"Tried accessing nonexisting field ({edge[0]}) on {kind}")
        chunk, paging = paginate(items, query, url)
        body: dict[str, Any] = {"data": [render(item, waba, fields) for item in chunk]}
        if paging is not None:
            body["paging"] = paging
        return Reply(200, orjson.dumps(body))

    def _locate(self, object_id: str) -> tuple[Node, FakeWaba | None] | None:
        if object_id in self.scenario.businesses:
            return self.scenario.businesses[object_id], None
        for waba in self.scenario.wabas.values():
            if waba.id == object_id:
                return waba, waba
            if object_id in waba.phones:
                return waba.phones[object_id], waba
            if object_id in waba.templates:
                return waba.templates[object_id], waba
        return None

    def _allowed(self, token: str, node: Node, waba: FakeWaba | None) -> bool:
        if waba is not None and waba.token == token:
            return True
        for business in self.scenario.businesses.values():
            if business.token != token:
                continue
            if node is business or (waba and waba.id in business.owned + business.client):
                return True
        return False

    def _take_fault(self, path: str) -> _Armed | None:
        for armed in self._faults:
            if armed.match is None or armed.match in path:
                armed.remaining -= 1
                if armed.remaining == 0:
                    self._faults.remove(armed)
                return armed
        return None

    def _fault(self, fault: Fault, object_id: str, waba_id: str | None, now: float) -> Reply:
        if fault is Fault.BAD_GATEWAY:
            return Reply(502, _BAD_GATEWAY, media_type="text/html")
        throttled = 0
        if fault is Fault.RATE_LIMIT:
            reply = error_reply(self.waba_limit_code)
            throttled = max(1, self._estimate(waba_id, now)) if waba_id else 0
        elif fault is Fault.EXPIRED_TOKEN:
            reply = _expired(now)
        elif fault is Fault.NOT_FOUND:
            reply = _missing(object_id)
        else:
            reply = error_reply(_FAULT_CODES[fault])
        return self._with_usage(reply, waba_id, now, throttled=throttled)

    # -- usage ------------------------------------------------------------------------------

    @staticmethod
    def _window(calls: deque[float], now: float) -> deque[float]:
        while calls and calls[0] <= now - WINDOW:
            calls.popleft()
        return calls

    def _estimate(self, waba_id: str | None, now: float) -> int:
        """Minutes until the WABA's count in the window drops below its allowance (0 if it is)."""
        if waba_id is None:
            return 0
        calls = self._window(self._waba_usage.get(waba_id, deque()), now)
        over = len(calls) - self.waba_calls_per_hour
        if over < 0:
            return 0
        return max(1, math.ceil((calls[over] + WINDOW - now) / 60))

    def _throttled(self, waba_id: str, now: float) -> int:
        """Regain minutes if the WABA is refused now, else 0."""
        until = self._limited.get(waba_id, 0.0)
        if now < until:
            return max(1, math.ceil((until - now) / 60))
        return self._estimate(waba_id, now)

    def _with_usage(
        self, reply: Reply, waba_id: str | None, now: float, *, throttled: int
    ) -> Reply:
        app = len(self._window(self._app_usage, now)) * 100 // max(1, self.app_calls_per_hour)
        if reply.error_code == 4:
            app = max(app, 100)
        reply.headers["X-App-Usage"] = orjson.dumps(_percentages(app)).decode()
        if waba_id is not None:
            calls = self._window(self._waba_usage.get(waba_id, deque()), now)
            pct = len(calls) * 100 // max(1, self.waba_calls_per_hour)
            figures = _percentages(max(pct, 100) if throttled else pct)
            usage = {
                "type": "whatsapp_business_management",
                **figures,
                "estimated_time_to_regain_access": throttled,
            }
            reply.headers["X-Business-Use-Case-Usage"] = orjson.dumps({waba_id: [usage]}).decode()
        return reply

    # -- ASGI -------------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        token = credentials.strip() if scheme.lower() == "bearer" else None
        reply = self.handle(request.method, str(request.url), token or None, self.clock())
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        return Response(
            reply.body, reply.status, headers=reply.headers, media_type=reply.media_type
        )


def _percentages(call_count: int) -> dict[str, int]:
    """The three usage figures; the fake reports CPU time as a quarter and total time as half
    of the call count (so the highest figure is always ``call_count``)."""
    return {
        "call_count": call_count,
        "total_cputime": call_count // 4,
        "total_time": call_count // 2,
    }


def serve(fake: FakeGraph, host: str = "127.0.0.1", port: int = 0) -> AbstractContextManager[str]:
    """Serve ``fake.app`` over HTTP (see :func:`serve_app`)."""
    return serve_app(fake.app, host, port)


@contextmanager
def serve_app(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a background thread; yield its base URL once it
    accepts connections (``port=0``: a free port) and stop it on exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"fake-graph-{port}", daemon=True
        )
        thread.start()
        try:
            deadline = time.monotonic() + 15
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the fake Graph API did not start")
                time.sleep(0.005)
            yield (
                f"http://[{host}]:{port}" if family == socket.AF_INET6 else f"http://{host}:{port}"
            )
        finally:
            server.should_exit = True
            thread.join(15)
    finally:
        sock.close()
