"""Messages in the database: one row per wamid, merged item by item (see
:func:`waquality.domain.messages.merge`), in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, select

from waquality.domain.messages import Item, Row, merge
from waquality.store import bulk, schema

m = schema.messages
_COLUMNS = [c.key for c in m.c if c.key not in ("wamid", "updated_at")]
_STORED = ("wamid", *_COLUMNS)


Change = tuple[Row | None, Row]  # a message's row before (None: new) and after


def record(conn: Connection, items: Sequence[Item], now: datetime) -> int:
    """Merge ``items`` into their messages' rows; returns how many rows changed."""
    return len(merge_items(conn, items, now))


def merge_items(conn: Connection, items: Sequence[Item], now: datetime) -> list[Change]:
    """Merge ``items`` into their messages' rows; returns the rows that changed."""
    if not items:
        return []
    wamids = sorted({item.wamid for item in items})
    query = select(m).where(m.c.wamid.in_(wamids)).order_by(m.c.wamid).with_for_update()
    before: dict[str, Row] = {row["wamid"]: dict(row) for row in conn.execute(query).mappings()}
    after = dict(before)
    for item in items:
        after[item.wamid] = merge(after.get(item.wamid), item)
    fresh: list[Row] = []
    # rows that changed, by the columns that changed (a status changes two or three of them)
    changed: dict[tuple[str, ...], list[Row]] = {}
    changes: list[Change] = []
    for wamid, row in after.items():
        full = _full(row, now)
        old = before.get(wamid)
        if old is None:
            fresh.append(full)
            changes.append((None, full))
        else:  # a stored row: every column there already
            columns = tuple(c for c in _COLUMNS if full[c] != old[c])
            if columns:
                changed.setdefault(columns, []).append(full)
                changes.append((old, full))
    bulk.insert(conn, m, fresh, conflict=("wamid",))
    for columns, rows in changed.items():
        written = ("wamid", *columns, "updated_at")
        bulk.update(conn, m, [{c: r[c] for c in written} for r in rows], by=("wamid",))
    return changes


_EMPTY: Row = dict.fromkeys(_STORED)


def _full(row: Row, now: datetime) -> Row:
    """``row`` with every stored column (``row`` holds no other)."""
    full = {**_EMPTY, **row, "updated_at": now}
    full["sender_kind"] = full["sender_kind"] or "unknown"
    return full
