"""Calls to Meta's Graph API: one request, its usage headers, its errors, cursor paging.

Every request carries a timeout and the token in the ``Authorization`` header (never in a URL,
so never in a log). Errors become :class:`GraphError` with a :class:`ErrorKind` from the code
table of Meta's documentation; transient ones are retried here with backoff and jitter, each
attempt paid from the WABA's :class:`CallBudget`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson

from waquality.errors import GraphError
from waquality.graph.budget import CallBudget

log = logging.getLogger(__name__)
RETRIES = 2  # extra attempts for a transient failure
RETRY_BASE = 0.5  # seconds; doubled per attempt, with jitter
REDACTED = "[redacted]"


class ErrorKind(StrEnum):
    RATE_LIMIT = "rate_limit"  # Meta's budget is used up: wait (Meta's estimate when given)
    TRANSIENT = "transient"  # retry with backoff
    AUTH = "auth"  # token expired or revoked, permission missing: polling this WABA stops
    NOT_FOUND = "not_found"
    BUDGET = "budget"  # our own call budget is used up: no call was made
    OTHER = "other"


RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80007, 80008})
TRANSIENT_CODES = frozenset({1, 2, 131000, 131016, 133004, 131057})
AUTH_CODES = frozenset({0, 10, 190, 131005, *range(200, 300)})


def classify(code: int | None, status: int | None) -> ErrorKind:
    """The class of a failure, from Meta's error code first and the HTTP status second."""
    if code in RATE_LIMIT_CODES:
        return ErrorKind.RATE_LIMIT
    if code in AUTH_CODES:
        return ErrorKind.AUTH
    if code in TRANSIENT_CODES:
        return ErrorKind.TRANSIENT
    if code == 100:
        return ErrorKind.NOT_FOUND
    if status is None or status >= 500:
        return ErrorKind.TRANSIENT
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 429:
        return ErrorKind.RATE_LIMIT
    return ErrorKind.OTHER


@dataclass(frozen=True, slots=True)
class Usage:
    """Meta's report of how much of a call budget is used, in percent (the highest figure of
    ``X-Business-Use-Case-Usage`` and ``X-App-Usage``), and when access returns if throttled."""

    percent: int = 0
    regain_seconds: float | None = None


def parse_usage(headers: Mapping[str, str]) -> Usage:
    percent, regain = 0, None
    figures: list[Any] = []
    business = _json_header(headers.get("x-business-use-case-usage"))
    if isinstance(business, dict):
        for entries in business.values():
            figures += entries if isinstance(entries, list) else []
    app = _json_header(headers.get("x-app-usage"))
    if isinstance(app, dict):
        figures.append(app)
    for figure in figures:
        if not isinstance(figure, dict):
            continue
        for name in ("call_count", "total_time", "total_cputime"):
            value = figure.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                percent = max(percent, int(value))
        minutes = figure.get("estimated_time_to_regain_access")
        if isinstance(minutes, int | float) and not isinstance(minutes, bool) and minutes > 0:
            regain = max(regain or 0.0, float(minutes) * 60)
    return Usage(percent, regain)


def _json_header(value: str | None) -> Any:
    if not value:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP exchange, as recorded for the budget and for monitoring."""

    waba_id: str | None
    path: str
    at: datetime
    status: int | None
    error_code: int | None
    seconds: float


@dataclass(frozen=True, slots=True)
class Reply:
    data: dict[str, Any]
    usage: Usage


class GraphClient:
    def __init__(
        self,
        base_url: str,
        version: str,
        *,
        timeout: float = 10.0,
        budget: CallBudget | None = None,
        transport: httpx.BaseTransport | None = None,
        on_call: Callable[[Call], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.root = f"{base_url.rstrip('/')}/{version}"
        self.budget = budget
        self.clock, self.sleep, self.on_call = clock, sleep, on_call
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def get(
        self,
        path: str,
        token: str,
        *,
        params: Mapping[str, str] | None = None,
        waba_id: str | None = None,
    ) -> Reply:
        return self._get(f"{self.root}/{path.lstrip('/')}", token, params or {}, waba_id)

    def pages(
        self,
        path: str,
        token: str,
        *,
        params: Mapping[str, str] | None = None,
        waba_id: str | None = None,
    ) -> Iterator[Reply]:
        """Every page of a list, following ``paging.next`` until it is absent."""
        url: str | None = f"{self.root}/{path.lstrip('/')}"
        query: Mapping[str, str] = params or {}
        seen: set[str] = set()
        while url is not None:
            reply = self._get(url, token, query, waba_id)
            yield reply
            url, query = self._next(reply.data)
            if url is not None:
                page = f"{url}?{sorted(query.items())}"
                if page in seen:  # a cursor that points back: stop rather than loop forever
                    raise GraphError(ErrorKind.OTHER, "paging returned a cursor already seen")
                seen.add(page)

    def _next(self, data: dict[str, Any]) -> tuple[str | None, dict[str, str]]:
        paging = data.get("paging")
        following = paging.get("next") if isinstance(paging, dict) else None
        if not isinstance(following, str) or not following:
            return None, {}
        parts, root = urlsplit(following), urlsplit(self.root)
        if (parts.scheme, parts.netloc) != (root.scheme, root.netloc):
            raise GraphError(ErrorKind.OTHER, "paging points to another host; not followed")
        query = {k: v for k, v in parse_qsl(parts.query) if k != "access_token"}
        return f"{parts.scheme}://{parts.netloc}{parts.path}", query

    def _get(self, url: str, token: str, params: Mapping[str, str], waba_id: str | None) -> Reply:
        for attempt in range(RETRIES + 1):
            try:
                return self._once(url, token, params, waba_id)
            except GraphError as exc:
                if exc.kind != ErrorKind.TRANSIENT or attempt == RETRIES:
                    raise
                delay = RETRY_BASE * 2**attempt * random.uniform(0.5, 1.5)
                log.info("graph call failed (%s); retrying in %.1fs", exc.message, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _once(self, url: str, token: str, params: Mapping[str, str], waba_id: str | None) -> Reply:
        now = self.clock()
        if self.budget is not None and waba_id is not None:
            self.budget.take(waba_id, now)
        path = urlsplit(url).path.removeprefix(urlsplit(self.root).path)
        started = time.perf_counter()
        status: int | None = None
        code: int | None = None
        try:
            response = self._http.get(
                url, params=params, headers={"Authorization": f"Bearer {token}"}
            )
            status = response.status_code
            usage = parse_usage(response.headers)
            data = _body(response)
            error = data.get("error") if isinstance(data, dict) else None
            if status >= 400 or isinstance(error, dict):
                code = _int((error or {}).get("code")) if isinstance(error, dict) else None
                raise _graph_error(status, error, usage, token)
            if not isinstance(data, dict):
                raise GraphError(ErrorKind.TRANSIENT, "answer is not a JSON object", status=status)
            return Reply(data, usage)
        except httpx.TimeoutException:
            raise GraphError(ErrorKind.TRANSIENT, f"timed out: GET {path}") from None
        except httpx.HTTPError as exc:
            raise GraphError(
                ErrorKind.TRANSIENT, f"cannot reach the Graph API: {type(exc).__name__}"
            ) from None
        finally:
            if self.on_call is not None:
                seconds = time.perf_counter() - started
                self.on_call(Call(waba_id, path[:256], now, status, code, seconds))


def _body(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        kind = classify(None, response.status_code)
        if response.status_code < 400:
            kind = ErrorKind.TRANSIENT
        raise GraphError(
            kind,
            f"HTTP {response.status_code} with a body that is not JSON",
            status=response.status_code,
        ) from None


def _graph_error(status: int, error: Any, usage: Usage, token: str) -> GraphError:
    if not isinstance(error, dict):
        return GraphError(classify(None, status), f"HTTP {status}", status=status)
    code = _int(error.get("code"))
    message = str(error.get("message") or f"HTTP {status}")
    # Meta's message may quote the token ("Malformed access token EAAG..."); the message goes
    # to logs, the API, the CLI and alert receivers.
    if token.strip():
        message = message.replace(token.strip(), REDACTED)
    message = message[:300]
    kind = classify(code, status)
    if kind == ErrorKind.OTHER and error.get("is_transient") is True:
        kind = ErrorKind.TRANSIENT
    return GraphError(kind, message, code=code, status=status, retry_after=usage.regain_seconds)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None
