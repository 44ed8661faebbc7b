"""The WABAs we poll, the re-reads webhooks asked for, and the Graph API calls we made."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from waquality.domain.enums import PollState, SubjectKind, WatchOrigin
from waquality.graph.client import Call
from waquality.store import schema
from waquality.store.database import Database

w, r, c = schema.watched_wabas, schema.poll_requests, schema.graph_calls


@dataclass(frozen=True, slots=True)
class Watched:
    waba_id: str
    origin: WatchOrigin
    business_id: str | None
    access_token: str | None
    poll_state: PollState
    failures: int
    next_poll_at: datetime | None
    last_success_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Watched:
        return cls(
            row.waba_id,
            WatchOrigin(row.origin),
            row.business_id,
            row.access_token,
            PollState(row.poll_state),
            row.failures,
            row.next_poll_at,
            row.last_success_at,
        )


@dataclass(frozen=True, slots=True)
class Reread:
    subject_kind: SubjectKind
    subject_id: str
    waba_id: str | None


def sync_configured(
    db: Database,
    configured: dict[str, WatchOrigin | tuple[WatchOrigin, str]],
    now: datetime,
    *,
    retry_auth: bool = False,
) -> None:
    """Make the settings' WABAs (and those discovered from its portfolios) watched; forget
    those the settings no longer name. ``retry_auth`` (at start-up, when the settings' tokens
    may have changed) retries WABAs whose token failed."""
    with db.write() as conn:
        rows = {row.waba_id: row for row in conn.execute(select(w))}
        for waba_id, origin in configured.items():
            kind, business = origin if isinstance(origin, tuple) else (origin, None)
            if waba_id not in rows:
                _insert(db, conn, waba_id, kind, business, None, now)
            elif rows[waba_id].origin != WatchOrigin.API.value:
                conn.execute(
                    update(w)
                    .where(w.c.waba_id == waba_id)
                    .values(origin=kind.value, business_id=business)
                )
        stale = [
            waba_id
            for waba_id, row in rows.items()
            if row.origin != WatchOrigin.API.value and waba_id not in configured
        ]
        if stale:
            conn.execute(delete(w).where(w.c.waba_id.in_(stale)))
        if retry_auth:
            conn.execute(
                update(w)
                .where(w.c.poll_state == PollState.AUTH_FAILED.value)
                .values(poll_state=PollState.NEW.value, next_poll_at=None)
            )


def ensure_configured(db: Database, waba_ids: Sequence[str], now: datetime) -> None:
    """Register the settings' WABAs that are not watched yet (the poller does the rest)."""
    if waba_ids:
        with db.write() as conn:
            for waba_id in waba_ids:
                _insert(db, conn, waba_id, WatchOrigin.SETTINGS, None, None, now)


def _insert(
    db: Database,
    conn: Connection,
    waba_id: str,
    origin: WatchOrigin,
    business_id: str | None,
    token: str | None,
    now: datetime,
) -> None:
    row = {
        "waba_id": waba_id,
        "origin": origin.value,
        "business_id": business_id,
        "access_token": token,
        "added_at": now,
        "poll_state": PollState.NEW.value,
        "failures": 0,
    }
    conn.execute(db.insert(w).on_conflict_do_nothing(index_elements=[w.c.waba_id]), [row])


def add(db: Database, waba_id: str, token: str | None, now: datetime) -> bool:
    """Watch a WABA from now on (``True`` if it was new); a new token clears an auth failure."""
    with db.write() as conn:
        existing = conn.execute(select(w.c.waba_id).where(w.c.waba_id == waba_id)).first()
        if existing is None:
            _insert(db, conn, waba_id, WatchOrigin.API, None, token, now)
            return True
        if token is not None:
            conn.execute(
                update(w)
                .where(w.c.waba_id == waba_id)
                .values(access_token=token, poll_state=PollState.NEW.value, next_poll_at=None)
            )
        return False


def remove(db: Database, waba_id: str) -> WatchOrigin | None:
    """Stop watching an API-added WABA; returns the origin of the row found (``None``: none).
    WABAs from the settings stay (the settings are the place to remove them)."""
    with db.write() as conn:
        row = conn.execute(select(w.c.origin).where(w.c.waba_id == waba_id)).first()
        if row is None:
            return None
        origin = WatchOrigin(row.origin)
        if origin is WatchOrigin.API:
            conn.execute(delete(w).where(w.c.waba_id == waba_id))
            conn.execute(delete(r).where(r.c.waba_id == waba_id))
        return origin


def claim_poll(db: Database, item: Watched, until: datetime) -> bool:
    """Take this WABA's due poll for this poller: true unless another poller on the same
    database took it first. A poller that dies leaves it due again at ``until``."""
    was = item.next_poll_at
    unchanged = w.c.next_poll_at.is_(None) if was is None else w.c.next_poll_at == was
    with db.write() as conn:
        result = conn.execute(
            update(w).where(w.c.waba_id == item.waba_id, unchanged).values(next_poll_at=until)
        )
        return bool(result.rowcount)


def poll_soon(db: Database, waba_id: str) -> bool:
    with db.write() as conn:
        result = conn.execute(update(w).where(w.c.waba_id == waba_id).values(next_poll_at=None))
        return bool(result.rowcount)


def watched(db: Database, waba_ids: Iterable[str] | None = None) -> list[Watched]:
    query = select(w).order_by(w.c.waba_id)
    if waba_ids is not None:
        query = query.where(w.c.waba_id.in_(list(waba_ids)))
    with db.read() as conn:
        return [Watched.from_row(row) for row in conn.execute(query)]


def rows(db: Database) -> list[dict[str, Any]]:
    """Every watched WABA with its polling state, for the API (never the token)."""
    with db.read() as conn:
        found = conn.execute(select(w).order_by(w.c.waba_id)).mappings().all()
    return [{k: v for k, v in row.items() if k != "access_token"} for row in found]


def states(db: Database) -> dict[str, int]:
    """How many watched WABAs are in each polling state."""
    query = select(w.c.poll_state, func.count()).group_by(w.c.poll_state)
    with db.read() as conn:
        return {state: int(n) for state, n in conn.execute(query)}


def record_poll(
    db: Database,
    waba_id: str,
    *,
    state: PollState,
    now: datetime,
    next_poll_at: datetime | None,
    error: str | None = None,
    usage_percent: int | None = None,
) -> None:
    values: dict[str, Any] = {
        "poll_state": state.value,
        "last_poll_at": now,
        "next_poll_at": next_poll_at,
        "last_error": error,
        "usage_percent": usage_percent,
    }
    if state is PollState.OK:
        values.update(last_success_at=now, failures=0)
    else:
        values["failures"] = w.c.failures + 1
    with db.write() as conn:
        conn.execute(update(w).where(w.c.waba_id == waba_id).values(**values))


# -- re-reads asked by webhooks -----------------------------------------------------------------


def request_rereads(
    db: Database, conn: Connection, wanted: Sequence[Reread], due: datetime
) -> None:
    """Ask for a re-read of each object; one already asked for keeps its (earlier) time."""
    if not wanted:
        return
    unique = {(x.subject_kind, x.subject_id): x for x in wanted}
    statement = db.insert(r).on_conflict_do_nothing(
        index_elements=[r.c.subject_kind, r.c.subject_id]
    )
    conn.execute(
        statement,
        [
            {"subject_kind": k.value, "subject_id": i, "waba_id": x.waba_id, "due_at": due}
            for (k, i), x in sorted(unique.items())
        ],
    )


def due_rereads(db: Database, now: datetime, lease: timedelta) -> list[Reread]:
    """The re-reads due now, claimed for ``lease`` (another poller on the same database skips
    them; a poller that dies leaves them due again when the lease ends)."""
    query = select(r).where(r.c.due_at <= now).order_by(r.c.due_at)
    with db.read() as conn:
        if conn.execute(query.limit(1)).first() is None:
            return []  # the usual case costs no write
    with db.write() as conn:
        rows = list(conn.execute(query.with_for_update(skip_locked=True)))
        for kind in {row.subject_kind for row in rows}:
            ids = [row.subject_id for row in rows if row.subject_kind == kind]
            conn.execute(
                update(r)
                .where(r.c.subject_kind == kind, r.c.subject_id.in_(ids))
                .values(due_at=now + lease)
            )
    return [Reread(SubjectKind(row.subject_kind), row.subject_id, row.waba_id) for row in rows]


def forget_rereads(db: Database, done: Sequence[Reread]) -> None:
    if not done:
        return
    with db.write() as conn:
        for kind in {x.subject_kind for x in done}:
            ids = [x.subject_id for x in done if x.subject_kind is kind]
            conn.execute(delete(r).where(r.c.subject_kind == kind.value, r.c.subject_id.in_(ids)))


# -- calls ---------------------------------------------------------------------------------------


def record_calls(db: Database, calls: Sequence[Call]) -> None:
    if not calls:
        return
    with db.write() as conn:
        conn.execute(
            c.insert(),
            [
                {
                    "waba_id": call.waba_id,
                    "at": call.at,
                    "path": call.path,
                    "status": call.status,
                    "error_code": call.error_code,
                    "duration_ms": round(call.seconds * 1000),
                }
                for call in calls
            ],
        )


def calls_since(db: Database, since: datetime) -> dict[str, list[datetime]]:
    """Call times per WABA since ``since`` (the budget's memory across restarts)."""
    query = select(c.c.waba_id, c.c.at).where(c.c.at > since, c.c.waba_id.is_not(None))
    found: dict[str, list[datetime]] = {}
    with db.read() as conn:
        for waba_id, at in conn.execute(query):
            found.setdefault(waba_id, []).append(at)
    return found


def prune_calls(db: Database, before: datetime) -> int:
    with db.write() as conn:
        return conn.execute(delete(c).where(c.c.at < before)).rowcount or 0
