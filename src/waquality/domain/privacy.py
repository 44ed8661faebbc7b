"""Customer identifiers as keyed hashes. Pure.

With a key configured, a customer's ``wa_id`` or business-scoped user id is stored as
``h:`` + the first 32 hex digits of HMAC-SHA256(key, id): the same customer always gets the
same pseudonym (so conversations still join up), nobody without the key can tell who it is,
and erasure finds a customer by hashing the id asked for. A pseudonym is never hashed again.
"""

from __future__ import annotations

import hashlib
import hmac
import re

PREFIX = "h:"
_PSEUDONYM = re.compile(r"^h:[0-9a-f]{32}$")


def is_pseudonym(value: str) -> bool:
    return _PSEUDONYM.match(value) is not None


def pseudonym(customer: str, key: bytes | None) -> str:
    """``customer`` as stored: its keyed hash, or itself when no key is configured."""
    if key is None or is_pseudonym(customer):
        return customer
    return PREFIX + hmac.new(key, customer.encode(), hashlib.sha256).hexdigest()[:32]
