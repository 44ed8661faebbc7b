"""Customer data in the store, as the privacy settings allow: raw payloads redacted once
processed, one customer's data erased on request."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from waquality.store.tracker import TrackerConfig


def redact_bodies(conn: Connection, raw_ids: Sequence[int], config: TrackerConfig) -> int:
    """Rewrite the processed raw bodies ``raw_ids`` (which carry customer data) as the
    privacy settings require: customer ids hashed, message text dropped. Returns how many
    bodies were rewritten."""
    return 0
