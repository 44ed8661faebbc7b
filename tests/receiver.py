"""A local HTTP receiver for notifications: records every request; can refuse for a while."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from waquality.graph.fake import serve_app


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    refuse: int = 0  # answer 503 to this many requests first
    received: list[Received] = field(default_factory=list)
    refused: int = 0
    url: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        with self._lock:
            if self.refused < self.refuse:
                self.refused += 1
                return Response(status_code=503)
            self.received.append(
                Received(request.url.path, dict(request.headers), orjson.loads(raw))
            )
        return Response(status_code=200)

    def wait(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} of {count} notifications arrived")
            time.sleep(0.01)
        return list(self.received)


@contextmanager
def receiving(receiver: Receiver) -> Iterator[Receiver]:
    with serve_app(receiver.app) as url:
        receiver.url = url.removeprefix("http://")
        yield receiver
