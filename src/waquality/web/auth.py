"""Dashboard logins: a signed session cookie, a CSRF token in every form, and a brake on
guessing.

A session is a cookie signed with a key kept in the database (made on first use, shared by
every process), HttpOnly and SameSite=Strict, valid for ``SESSION_LIFETIME``. It carries the
session's CSRF token: every POST form repeats it and is refused without it. A browser that has
not signed in gets an anonymous session too, so that the login form itself is CSRF-safe. The
login takes the API token (the API's own check) or the configured dashboard password; a wrong
one is refused without saying which it was meant to be, and ``MAX_FAILURES`` wrong logins from
one address within ``FAILURE_WINDOW`` make it wait.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import SecretStr
from sqlalchemy import select

from waquality.api.auth import Authenticator
from waquality.store import schema
from waquality.store.database import Database

COOKIE = "waquality_session"
SESSION_LIFETIME = timedelta(hours=12)
ANONYMOUS_LIFETIME = timedelta(hours=2)
KEY_ROW = "dashboard_session_key"
MAX_FAILURES = 10
FAILURE_WINDOW = 600.0  # seconds


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str
    signed_in: bool

    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), self.csrf.encode())


class Sessions:
    """Makes, signs and reads session cookies; checks logins."""

    def __init__(self, db: Database, auth: Authenticator, password: SecretStr | None) -> None:
        self._db = db
        self._auth = auth
        self._password = (
            hashlib.sha256(password.get_secret_value().encode()).digest() if password else None
        )
        # A new password ends the sessions signed in with the old one.
        fingerprint = self._password.hex()[:16] if self._password else "token"
        self._salt = f"waquality.dashboard.session/{fingerprint}"
        self._signer: URLSafeTimedSerializer | None = None
        self._lock = threading.Lock()

    def _serializer(self) -> URLSafeTimedSerializer:
        with self._lock:
            if self._signer is None:
                self._signer = URLSafeTimedSerializer(_session_key(self._db), salt=self._salt)
            return self._signer

    def new(self, *, signed_in: bool) -> Session:
        return Session(csrf=secrets.token_urlsafe(24), signed_in=signed_in)

    def dump(self, session: Session) -> str:
        payload = {"c": session.csrf, "in": session.signed_in}
        return str(self._serializer().dumps(payload))

    def load(self, cookie: str | None) -> Session | None:
        """The session a cookie holds, or ``None`` when it is missing, forged or expired."""
        if not cookie or len(cookie) > 1024:
            return None
        try:
            payload: Any
            payload, signed_at = self._serializer().loads(
                cookie, max_age=int(SESSION_LIFETIME.total_seconds()), return_timestamp=True
            )
        except BadSignature:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("c"), str):
            return None
        session = Session(csrf=payload["c"], signed_in=payload.get("in") is True)
        if not session.signed_in and datetime.now(UTC) - signed_at > ANONYMOUS_LIFETIME:
            return None  # an anonymous session lasts less
        return session

    def credentials_ok(self, secret: str) -> bool:
        """The API token or the dashboard password (both are always compared)."""
        secret = secret.strip()
        if not secret:
            return False
        token = self._auth.check(f"Bearer {secret}")
        given = hashlib.sha256(secret.encode()).digest()
        password = self._password is not None and hmac.compare_digest(given, self._password)
        return token or password


def _session_key(db: Database) -> str:
    """The signing key, made once and kept in the database for every process."""
    t = schema.instance
    query = select(t.c.value).where(t.c.key == KEY_ROW)
    with db.read() as conn:
        found = conn.execute(query).scalar()
    if found is None:
        with db.write() as conn:
            statement = db.insert(t).on_conflict_do_nothing(index_elements=[t.c.key])
            conn.execute(statement.values(key=KEY_ROW, value=secrets.token_hex(32)))
            found = conn.execute(query).scalar_one()
    return str(found)


class Throttle:
    """Wrong logins per client address within a sliding window."""

    def __init__(self, limit: int = MAX_FAILURES, window: float = FAILURE_WINDOW) -> None:
        self._limit, self._window = limit, window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, who: str, now: float) -> deque[float]:
        found = self._failures.setdefault(who, deque())
        while found and found[0] <= now - self._window:
            found.popleft()
        return found

    def blocked(self, who: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            return len(self._recent(who, now)) >= self._limit

    def failed(self, who: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._recent(who, now).append(now)
            if len(self._failures) > 10_000:  # forget the quietest addresses
                for key in [k for k, v in self._failures.items() if not v]:
                    del self._failures[key]
