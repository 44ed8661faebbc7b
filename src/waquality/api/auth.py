"""Bearer-token authentication for the API: always on.

Only a SHA-256 of the token is kept in memory and in the database; comparison is constant-time.
When no token is configured, one is generated on first start, stored (hashed) and shown once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select

from waquality.config import Settings
from waquality.store import schema
from waquality.store.database import Database

TOKEN_KEY = "api_token_sha256"  # noqa: S105 (a row key, not a secret)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Authenticator:
    def __init__(self, token_digest: bytes) -> None:
        self._digest = token_digest

    def check(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return hmac.compare_digest(digest(token.strip()), self._digest)


def ensure_api_token(db: Database, settings: Settings) -> tuple[Authenticator, str | None]:
    """The authenticator, and the new token when one was generated now (show it once)."""
    if settings.api_token is not None:
        return Authenticator(digest(settings.api_token.get_secret_value())), None
    with db.write() as conn:
        stored = conn.execute(
            select(schema.instance.c.value).where(schema.instance.c.key == TOKEN_KEY)
        ).scalar()
        if stored is not None:
            return Authenticator(bytes.fromhex(stored)), None
        token = secrets.token_urlsafe(32)
        conn.execute(schema.instance.insert().values(key=TOKEN_KEY, value=digest(token).hex()))
    return Authenticator(digest(token)), token


def reset_api_token(db: Database) -> str:
    """Replace the stored token with a new one and return it."""
    token = secrets.token_urlsafe(32)
    with db.write() as conn:
        conn.execute(schema.instance.delete().where(schema.instance.c.key == TOKEN_KEY))
        conn.execute(schema.instance.insert().values(key=TOKEN_KEY, value=digest(token).hex()))
    return token
