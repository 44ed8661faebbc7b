"""``X-Hub-Signature-256`` verification: HMAC-SHA256 of the raw body, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

PREFIX = b"sha256="


def sign(secret: bytes, body: bytes) -> str:
    """The header value Meta would send for ``body`` (used by tests, the simulator and replay)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secrets: Sequence[bytes], body: bytes, header: bytes) -> bool:
    """True when ``header`` is ``sha256=<hex>`` for ``body`` under any of ``secrets``.

    Every secret is tried (no early exit), each comparison is constant-time.
    """
    if not header.startswith(PREFIX):
        return False
    given = header[len(PREFIX) :].strip().lower()
    matched = False
    for secret in secrets:
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        matched |= hmac.compare_digest(expected, given)
    return matched


def same_token(expected: bytes, given: bytes) -> bool:
    return hmac.compare_digest(expected, given)
