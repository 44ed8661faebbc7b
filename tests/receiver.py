"""A local HTTP receiver for notifications: records every request; can refuse for a while."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conftest import free_port


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
    port = free_port()
    config = uvicorn.Config(receiver.app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("receiver did not start")
        time.sleep(0.005)
    receiver.url = f"127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(10)
