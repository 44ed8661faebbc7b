"""ASGI wiring: the webhook receiver on its bare fast path, everything else through FastAPI."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from waquality import __version__
from waquality.api import customers, tracking
from waquality.api.auth import Authenticator
from waquality.api.routes import router
from waquality.api.schemas import ErrorOut
from waquality.config import Settings
from waquality.errors import ApiError, StoreUnavailable, Unauthorized
from waquality.ingest.receiver import Receive, Scope, Send, WebhookReceiver
from waquality.metrics import served
from waquality.store import migrate
from waquality.store.database import Database
from waquality.store.tracker import Tracker, TrackerConfig, tracker_config
from waquality.web.app import install as install_dashboard

WEBHOOK_PATH = "/webhooks/whatsapp"
TOKEN_REQUIRED = "a valid 'Authorization: Bearer <token>' header is required"  # noqa: S105
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_API_BODY = 1 << 20  # bytes: far above any request the API takes
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
# Declares the bearer scheme in the OpenAPI document; the check itself is require_token's.
BearerCredentials = Annotated[
    HTTPAuthorizationCredentials | None,
    Depends(HTTPBearer(auto_error=False, description="The API token.")),
]


class Application:
    """Routes ``/webhooks/whatsapp`` straight to the receiver; the rest to the API.

    An API request with a body is checked before the body is read: without a valid token it is
    answered 401, and a body over ``MAX_API_BODY`` 413 — nobody can make the server buffer a
    large body without the token, nor with it.
    """

    def __init__(
        self, receiver: WebhookReceiver, api: FastAPI, auth: Authenticator | None = None
    ) -> None:
        self.receiver = receiver
        self.api = api
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
        elif scope["path"] == WEBHOOK_PATH:
            await self.receiver(scope, receive, send)
        elif (
            scope["method"] in BODY_METHODS
            and scope["path"].startswith("/api/")
            and self.auth is not None
            and scope["method"] in _allowed_methods(self.api, scope).split(", ")
        ):
            await self._guarded(scope, receive, send, self.auth)
        else:
            await self.api(scope, receive, send)

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, auth: Authenticator
    ) -> None:
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        length = headers.get(b"content-length", b"")
        if not auth.check(authorization):
            refusal = _error(401, "unauthorized", TOKEN_REQUIRED, **{"WWW-Authenticate": "Bearer"})
        elif length.isdigit() and int(length) > MAX_API_BODY:
            refusal = _error(413, "too_large", f"request body over {MAX_API_BODY} bytes")
        else:
            body = await _read_body(receive, MAX_API_BODY)
            if body is not None:
                await self.api(scope, _replay(body), send)
                return
            refusal = _error(413, "too_large", f"request body over {MAX_API_BODY} bytes")
        refusal.headers["Connection"] = "close"  # the unread body stays unread
        await refusal(scope, receive, send)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or ``None`` as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def _allowed_methods(api: FastAPI, scope: Scope) -> str:
    """Every method some route serves at this path (the router names only one route's)."""
    allowed = []
    for method in HTTP_METHODS:
        probe = {
            "type": "http",
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "headers": scope.get("headers", []),
            "method": method,
        }
        if any(route.matches(probe)[0] is Match.FULL for route in api.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


def _document(api: FastAPI) -> dict[str, Any]:
    """The OpenAPI document. Invalid requests answer 400 with an :class:`ErrorOut` (see
    ``_invalid``), never FastAPI's default 422, so that response is left out."""
    document = get_openapi(
        title=api.title, version=api.version, summary=api.summary, routes=api.routes
    )
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document


def create_api(
    db: Database,
    auth: Authenticator,
    lifespan: Lifespan | None = None,
    tracker: Tracker | None = None,
    settings: Settings | None = None,
) -> FastAPI:
    def require_token(request: Request, _: BearerCredentials) -> None:
        if not auth.check(request.headers.get("authorization")):
            raise Unauthorized(TOKEN_REQUIRED)

    api = FastAPI(
        title="waquality",
        version=__version__,
        summary="Quality monitoring for the WhatsApp Business Platform.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        responses={
            400: {"model": ErrorOut, "description": "Invalid parameters or body."},
            401: {"model": ErrorOut, "description": "Missing or wrong token."},
            503: {"model": ErrorOut, "description": "The database is unavailable; retry later."},
        },
    )
    api.state.db = db
    api.state.tracker = tracker
    # the privacy settings, for erasure even when tracking is off
    api.state.tracker_config = (
        tracker_config(settings)
        if settings is not None
        else (tracker.config if tracker is not None else TrackerConfig())
    )
    secured = [Depends(require_token)]
    api.include_router(router, dependencies=secured)
    api.include_router(tracking.router, dependencies=secured)
    api.include_router(customers.router, dependencies=secured)
    install_dashboard(api, db, auth, settings, tracker)  # /, /numbers, ..., /login, /static
    served_metrics = served(db)

    @api.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        extra = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else {}
        return _error(exc.status, exc.code, exc.message, **extra)

    def _token_first(request: Request) -> JSONResponse | None:
        """FastAPI reads the body before it checks the token: a request without a valid token
        whose body cannot be read is answered 401 all the same (only secured routes take one)."""
        if auth.check(request.headers.get("authorization")):
            return None
        return _error(401, Unauthorized.code, TOKEN_REQUIRED, **{"WWW-Authenticate": "Bearer"})

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and (refused := _token_first(request)) is not None:
            return refused  # the body could not be read
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(api, request.scope)
        return _error(exc.status_code, code, str(exc.detail), **headers)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if (refused := _token_first(request)) is not None:
            return refused
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return _error(400, "bad_request", problems[:1000])

    @api.exception_handler(StoreUnavailable)
    async def _unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return _error(503, "store_unavailable", "the database is unavailable; retry later")

    @api.get("/api/v1/openapi.json", include_in_schema=False, dependencies=secured)
    def openapi() -> dict[str, Any]:
        return _document(api)

    @api.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @api.get("/readyz", include_in_schema=False)
    def readyz() -> PlainTextResponse:
        try:
            with db.read() as conn:
                conn.execute(text("SELECT 1"))
            if not migrate.is_current(db):
                return PlainTextResponse("schema is not at the latest migration", 503)
        except StoreUnavailable:
            return PlainTextResponse("database unavailable", 503)
        return PlainTextResponse("ready")

    @api.get("/metrics", include_in_schema=False, dependencies=secured)
    def metrics() -> Response:
        return Response(generate_latest(served_metrics), media_type=CONTENT_TYPE_LATEST)

    return api
