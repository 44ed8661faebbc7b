"""The dashboard's wiring: what it needs (database, sessions, templates, settings), how a page is
answered (security headers, the session's CSRF token, the filters), and :func:`install`, which
adds its pages, login and static files to the API's application."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from waquality.api.auth import Authenticator
from waquality.config import Settings
from waquality.domain.responses import duration_label
from waquality.store.database import Database
from waquality.store.tracker import Tracker
from waquality.web import formats
from waquality.web.auth import (
    ANONYMOUS_LIFETIME,
    COOKIE,
    SESSION_LIFETIME,
    Session,
    Sessions,
    Throttle,
)
from waquality.web.filters import DEFAULT_RANGE

HERE = Path(__file__).parent
MAX_FORM = 16 * 1024  # bytes: far above any form of the dashboard
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
R = TypeVar("R", bound=Response)
DEFAULT_TARGETS = {"1m": 60.0, "5m": 300.0, "1h": 3600.0}


class LoginRequired(Exception):
    """A page asked for without a signed-in session."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


class PageError(Exception):
    """A page that cannot be shown (not found, a refused form): answered with an error page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def environment(zone: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["default_range"] = DEFAULT_RANGE
    env.filters.update(
        when=lambda value: formats.time_tag(value, zone),
        moment=lambda value: formats.moment(value, zone),
        duration=formats.duration,
        percent=formats.percent,
        count=formats.number,
        tier=formats.tier,
        quality_word=formats.quality_word,
        phone_label=formats.phone_label,
        template_label=formats.template_label,
        labels=formats.labels,
        span=formats.span,
    )
    return env


class Dashboard:
    def __init__(
        self,
        db: Database,
        auth: Authenticator,
        settings: Settings | None,
        tracker: Tracker | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.zone, self.targets = "UTC", dict(DEFAULT_TARGETS)
        if settings is not None:
            self.zone = settings.time_zone
            self.targets = {duration_label(t): t.total_seconds() for t in settings.response_targets}
        elif tracker is not None:  # the same figures as the API's
            self.zone, self.targets = tracker.config.zone, dict(tracker.config.targets)
        public_url = settings.public_url if settings else None
        self.public_https = bool(public_url and public_url.startswith("https://"))
        self.sessions = Sessions(db, auth, settings.dashboard_password if settings else None)
        self.throttle = Throttle()
        self.templates = environment(self.zone)
        self.clock = clock or (lambda: datetime.now(UTC))

    # -- sessions -----------------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        return self.sessions.load(request.cookies.get(COOKIE))

    def signed_in(self, request: Request) -> Session:
        """The signed-in session, or :class:`LoginRequired`."""
        session = self.session(request)
        if session is None or not session.signed_in:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(target)
        return session

    def set_session(self, request: Request, response: Response, session: Session) -> None:
        lifetime = SESSION_LIFETIME if session.signed_in else ANONYMOUS_LIFETIME
        response.set_cookie(
            COOKIE,
            self.sessions.dump(session),
            max_age=int(lifetime.total_seconds()),
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https" or self.public_https,
        )

    # -- answers ------------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        *,
        session: Session | None,
        status: int = 200,
    ) -> HTMLResponse:
        page = self.templates.get_template(template).render(
            {
                "request_path": request.url.path,
                "session": session,
                "csrf": session.csrf if session else "",
                "zone": self.zone,
                "now": self.clock(),
                **context,
            }
        )
        return secure(HTMLResponse(page, status))

    def redirect(self, target: str) -> RedirectResponse:
        return secure(RedirectResponse(local_target(target), 303))


def secure(response: R) -> R:
    """Headers every dashboard answer carries."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def local_target(target: str | None) -> str:
    """``target`` when it is a path of this site, else ``/`` (no open redirect)."""
    text = str(target or "")
    if (
        not text.startswith("/")
        or text.startswith(("//", "/\\"))
        or any(c in text for c in "\r\n\\\x00")
    ):
        return "/"
    return text[:2000]


async def read_form(request: Request) -> dict[str, str]:
    """A URL-encoded form (the only kind the dashboard sends), at most ``MAX_FORM`` bytes."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise PageError(415, "Forms are sent URL-encoded.")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_FORM:
        raise PageError(413, "That form is too large.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise PageError(413, "That form is too large.")
    try:
        pairs = parse_qsl(body.decode("utf-8"), max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise PageError(400, "That form cannot be read.") from None
    return {k: v for k, v in pairs if "\x00" not in k + v}


def login_url(target: str) -> str:
    return "/login?" + urlencode({"next": local_target(target)})


def install(
    api: FastAPI,
    db: Database,
    auth: Authenticator,
    settings: Settings | None = None,
    tracker: Tracker | None = None,
) -> Dashboard:
    """Add the dashboard to ``api``: its pages, login and ``/static``. Without ``settings`` it
    takes the time zone and targets from ``tracker``, and only the API token signs in."""
    from waquality.web import pages

    dashboard = Dashboard(db, auth, settings, tracker)
    api.state.dashboard = dashboard
    api.include_router(pages.router)
    # Not checked at start: whatever happens to the dashboard's files, webhooks are received.
    api.mount("/static", StaticFiles(directory=HERE / "static", check_dir=False), name="static")

    async def login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        cross_site = request.headers.get("sec-fetch-site") == "cross-site"
        if cross_site and COOKIE not in request.cookies and request.method == "GET":
            # A link from elsewhere (an alert in a chat) arrives without the SameSite=Strict
            # cookie: look again from this site, where the browser sends it.
            target = local_target(exc.target)
            return dashboard.render(request, "again.html", {"target": target}, session=None)
        return dashboard.redirect(login_url(exc.target))

    async def page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        session = dashboard.session(request)
        return dashboard.render(
            request,
            "error.html",
            {"status": exc.status, "message": exc.message},
            session=session if session and session.signed_in else None,
            status=exc.status,
        )

    api.add_exception_handler(LoginRequired, login_required)
    api.add_exception_handler(PageError, page_error)
    return dashboard
