"""A checking ASGI app for the load generator itself, not a benchmark target.

For every POST it verifies ``X-Hub-Signature-256`` against the app secret
and remembers a digest of the body; ``GET /stats`` answers how many requests
came in, how many distinct bodies, and how many had a wrong signature. The
runner uses it to prove that wrk really sends distinct, correctly signed
bodies (``ingest.py --check-bodies``, and always with ``--quick``)::

    python benchmarks/check_app.py --port 8000 --secret SECRET
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
from dataclasses import dataclass, field

from bare_app import Receive, Scope, Send, lifespan, serve


@dataclass(slots=True)
class BodyCounter:
    secret: bytes
    requests: int = 0
    bad_signature: int = 0
    body_bytes: int = 0
    digests: set[bytes] = field(default_factory=set)

    def add(self, body: bytes, signature: str) -> bool:
        self.requests += 1
        self.body_bytes += len(body)
        self.digests.add(hashlib.blake2b(body, digest_size=16).digest())
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            self.bad_signature += 1
            return False
        return True

    def stats(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "distinct": len(self.digests),
            "bad_signature": self.bad_signature,
            "body_bytes": self.body_bytes,
        }


class CheckApp:
    def __init__(self, secret: str) -> None:
        self.counter = BodyCounter(secret.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(bytes(message.get("body", b"")))
            more_body = bool(message.get("more_body", False))
        if scope["method"] == "POST":
            headers = dict(scope["headers"])
            signature = bytes(headers.get(b"x-hub-signature-256", b"")).decode()
            ok = self.counter.add(b"".join(chunks), signature)
            await _respond(send, 200 if ok else 403, b"{}")
        elif scope["path"] == "/stats":
            await _respond(send, 200, json.dumps(self.counter.stats()).encode())
        else:
            await _respond(send, 200, b"{}")


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description="Counts distinct, correctly signed bodies.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    serve(CheckApp(args.secret), args.host, args.port)


if __name__ == "__main__":
    main()
