"""``/webhooks/whatsapp`` as a bare ASGI endpoint: the hot path does the least it can.

GET answers Meta's verification handshake. POST checks the body size, the signature over the
raw bytes, makes the body durable (group commit) and only then answers 200. Failures: 401 no
signature, 403 wrong signature, 413 too large, 503 when the store cannot commit within the write
timeout (Meta retries).

A replay or backfill (signed like Meta's own POSTs) may add ``?quiet=1`` together with the API
token (``Authorization: Bearer ...``): its bodies change state and history as usual, but nothing
they carry notifies anyone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qs

from waquality import metrics
from waquality.errors import StoreUnavailable
from waquality.ingest.signature import same_token, verify

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Store = Callable[[bytes, bool], Awaitable[None]]
Authorized = Callable[[str | None], bool]

MAX_BODY = 4 * 1024 * 1024
SIGNATURE_HEADER = b"x-hub-signature-256"
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


class WebhookReceiver:
    def __init__(
        self,
        secrets: Sequence[bytes],
        verify_token: bytes | None,
        store: Store,
        *,
        max_body: int = MAX_BODY,
        authorized: Authorized = lambda _: False,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.secrets = list(secrets)
        self.verify_token = verify_token
        self.store = store
        self.max_body = max_body
        self.authorized = authorized
        self.on_refused = on_refused
        self._accepted = metrics.WEBHOOK_REQUESTS.labels(result="accepted")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method == "POST":
            status, text = await self._post(scope, receive)
        elif method in ("GET", "HEAD"):
            status, text = self._handshake(scope)
        else:
            status, text = 405, b"method not allowed"
        await send({"type": "http.response.start", "status": status, "headers": _TEXT})
        await send({"type": "http.response.body", "body": text})

    def _handshake(self, scope: Scope) -> tuple[int, bytes]:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        mode = query.get("hub.mode", [""])[0]
        token = query.get("hub.verify_token", [""])[0].encode()
        challenge = query.get("hub.challenge", [""])[0]
        if (
            self.verify_token is not None
            and mode == "subscribe"
            and same_token(self.verify_token, token)
            and challenge
        ):
            return 200, challenge.encode()
        return 403, b"verification failed"

    async def _post(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        signature = b""
        authorization: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                return self._refuse("too_large", 413, b"body too large")
            if name == SIGNATURE_HEADER:
                signature = value
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        quiet = _wants_quiet(scope.get("query_string", b""))
        if quiet is None:
            return self._refuse("bad_request", 400, b"quiet must be 1, true, 0 or false")
        body = await self._read(receive)
        if body is None:
            return self._refuse("too_large", 413, b"body too large")
        if not self.secrets:
            return self._refuse("unavailable", 503, b"no app secret configured")
        if not signature:
            return self._refuse("unsigned", 401, b"missing X-Hub-Signature-256")
        if not verify(self.secrets, body, signature):
            return self._refuse("bad_signature", 403, b"invalid signature")
        if quiet and not self.authorized(authorization):
            return self._refuse(
                "unauthorized", 401, b"quiet=1 needs 'Authorization: Bearer <API token>'"
            )
        try:
            await self.store(body, quiet)
        except StoreUnavailable:
            return self._refuse("unavailable", 503, b"store unavailable, retry later")
        self._accepted.inc()
        return 200, b"OK"

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _refuse(self, result: str, status: int, text: bytes) -> tuple[int, bytes]:
        metrics.WEBHOOK_REQUESTS.labels(result=result).inc()
        if self.on_refused is not None:
            self.on_refused(result)
        return status, text


def _wants_quiet(query_string: bytes) -> bool | None:
    """``quiet`` from the query string: False when absent, ``None`` when not understood."""
    if b"quiet" not in query_string:
        return False
    values = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("quiet", [""])
    value = values[-1].strip().lower()
    if value in ("1", "true", "yes", ""):
        return True
    if value in ("0", "false", "no"):
        return False
    return None
