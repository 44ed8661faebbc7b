"""The ``/api/v1`` endpoints. Handlers parse parameters and call :mod:`waquality.store.queries`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy import Connection

from waquality import __version__
from waquality.alerting import book
from waquality.api.params import Cursor, Key, Limit, RowId, Text, TimeParam, parse_time
from waquality.api.schemas import (
    NO_NUL,
    AlertOut,
    Business,
    ErrorOut,
    EventOut,
    HistoryRow,
    ListPage,
    NotificationOut,
    PhoneNumber,
    QuarantineDetail,
    QuarantineItem,
    SilenceOut,
    SilenceRequest,
    Status,
    Template,
    Waba,
    WatchedWaba,
    WatchRequest,
)
from waquality.config import parse_duration
from waquality.domain.enums import SubjectKind, WatchOrigin
from waquality.errors import BadRequest, Conflict, NotFound
from waquality.store import inbox, queries, schema, watch
from waquality.store.database import Database

router = APIRouter(prefix="/api/v1")
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such item."}
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


Db = Annotated[Database, Depends(database)]


@dataclass(frozen=True, slots=True)
class HistoryParams:
    field: str | None
    since: datetime | None
    until: datetime | None
    limit: int
    cursor: str | None


def history_params(
    field: Text = None,
    since: TimeParam = None,
    until: TimeParam = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> HistoryParams:
    return HistoryParams(
        field, parse_time(since, "since"), parse_time(until, "until"), limit, cursor
    )


HistoryQuery = Annotated[HistoryParams, Depends(history_params)]


def _history(conn: Connection, kind: SubjectKind, key: str, q: HistoryParams) -> dict[str, Any]:
    page = queries.history(
        conn,
        kind=kind,
        key=key,
        field=q.field,
        since=q.since,
        until=q.until,
        limit=q.limit,
        cursor=q.cursor,
    )
    return _page(page)


def _page(page: queries.Page, transform: Any = None) -> dict[str, Any]:
    items = [transform(i) for i in page.items] if transform else page.items
    return {"items": items, "next": page.next}


def _phone(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "id": row["phone_number_id"]}


@router.get("/status", response_model=Status, summary="Ingestion, polling and alert counters")
def status(db: Db) -> dict[str, Any]:
    counts = inbox.counts(db)
    events = counts.pop("events")
    return {
        "version": __version__,
        "database": db.dialect,
        "webhooks": counts,
        "events": events,
        "fields": inbox.field_counts(db),
        "polling": watch.states(db),
        "alerts_firing": book.firing_counts(db),
    }


@router.get("/phone-numbers", response_model=ListPage[PhoneNumber])
def list_phone_numbers(
    db: Db, waba_id: Text = None, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    with db.read() as conn:
        page = queries.phone_numbers(conn, waba_id=waba_id, limit=limit, cursor=cursor)
    return _page(page, _phone)


@router.get(
    "/phone-numbers/{number}/history", response_model=ListPage[HistoryRow], responses=NOT_FOUND
)
def phone_number_history(
    db: Db,
    number: Annotated[str, Path(pattern=NO_NUL, description="Phone-number ID or display number.")],
    q: HistoryQuery,
) -> dict[str, Any]:
    with db.read() as conn:
        row = queries.find_phone_number(conn, number)
        if row is None:
            raise NotFound(f"no phone number {number[:40]!r}")
        return _history(conn, SubjectKind.PHONE_NUMBER, str(row["key"]), q)


@router.get("/templates", response_model=ListPage[Template])
def list_templates(
    db: Db,
    waba_id: Text = None,
    status: Text = None,
    quality_score: Text = None,
    name: Text = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    with db.read() as conn:
        page = queries.templates(
            conn,
            waba_id=waba_id,
            status=status and status.upper(),
            quality_score=quality_score and quality_score.upper(),
            name=name,
            limit=limit,
            cursor=cursor,
        )
    return _page(page)


@router.get(
    "/templates/{template_id}/history", response_model=ListPage[HistoryRow], responses=NOT_FOUND
)
def template_history(db: Db, template_id: Key, q: HistoryQuery) -> dict[str, Any]:
    with db.read() as conn:
        if queries.find_template(conn, template_id) is None:
            raise NotFound(f"no template {template_id[:40]!r}")
        return _history(conn, SubjectKind.TEMPLATE, template_id, q)


@router.get("/wabas", response_model=ListPage[Waba], summary="WhatsApp Business Accounts")
def list_wabas(
    db: Db, business_id: Text = None, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    with db.read() as conn:
        page = queries.wabas(conn, business_id=business_id, limit=limit, cursor=cursor)
    return _page(page)


@router.get("/wabas/{waba_id}/history", response_model=ListPage[HistoryRow], responses=NOT_FOUND)
def waba_history(db: Db, waba_id: Key, q: HistoryQuery) -> dict[str, Any]:
    with db.read() as conn:
        if not queries.exists(conn, schema.wabas, waba_id):
            raise NotFound(f"no WABA {waba_id[:40]!r}")
        return _history(conn, SubjectKind.WABA, waba_id, q)


@router.get("/watched-wabas", response_model=list[WatchedWaba], summary="WABAs that are polled")
def list_watched(db: Db) -> list[dict[str, Any]]:
    return watch.rows(db)


@router.post(
    "/watched-wabas",
    response_model=WatchedWaba,
    status_code=201,
    summary="Poll a WABA from now on (or give it a new token)",
    responses={200: {"model": WatchedWaba, "description": "Already watched (token updated)"}},
)
def add_watched(db: Db, request: WatchRequest, response: Response) -> dict[str, Any]:
    if not watch.add(db, request.waba_id, request.access_token, utcnow()):
        response.status_code = 200
    return _watched_row(db, request.waba_id)


@router.delete(
    "/watched-wabas/{waba_id}",
    status_code=204,
    summary="Stop polling a WABA",
    responses={
        **NOT_FOUND,
        409: {"model": ErrorOut, "description": "It comes from the settings, not the API."},
    },
)
def remove_watched(db: Db, waba_id: Key) -> Response:
    origin = watch.remove(db, waba_id)
    if origin is None:
        raise NotFound(f"WABA {waba_id[:40]!r} is not watched")
    if origin is not WatchOrigin.API:
        raise Conflict(f"WABA {waba_id[:40]!r} comes from the settings ({origin.value})")
    return Response(status_code=204)


@router.post(
    "/watched-wabas/{waba_id}/poll",
    response_model=WatchedWaba,
    status_code=202,
    summary="Poll a WABA as soon as possible",
    responses=NOT_FOUND,
)
def poll_watched(db: Db, waba_id: Key) -> dict[str, Any]:
    if not watch.poll_soon(db, waba_id):
        raise NotFound(f"WABA {waba_id[:40]!r} is not watched")
    return _watched_row(db, waba_id)


def _watched_row(db: Database, waba_id: str) -> dict[str, Any]:
    row = next((row for row in watch.rows(db) if row["waba_id"] == waba_id), None)
    if row is None:  # removed by another request in between
        raise NotFound(f"WABA {waba_id[:40]!r} is not watched")
    return row


@router.get("/alerts", response_model=list[AlertOut], summary="Alerts, latest change first")
def list_alerts(
    db: Db,
    state: Annotated[str | None, Query(pattern="^(firing|resolved)$")] = None,
    limit: Limit = 100,
) -> list[dict[str, Any]]:
    return book.alerts(db, state, limit)


@router.get(
    "/notifications", response_model=list[NotificationOut], summary="Delivery log, newest first"
)
def list_notifications(db: Db, limit: Limit = 100) -> list[dict[str, Any]]:
    return book.notifications(db, limit)


@router.get("/silences", response_model=list[SilenceOut], summary="Silences, newest first")
def list_silences(db: Db, include_expired: bool = False) -> list[dict[str, Any]]:
    return book.silences(db, utcnow(), include_expired=include_expired)


@router.post("/silences", response_model=SilenceOut, status_code=201, summary="Silence alerts")
def add_silence(db: Db, request: SilenceRequest) -> dict[str, Any]:
    try:
        duration = parse_duration(request.duration)
    except ValueError as exc:
        raise BadRequest(f"duration: {exc}") from None
    except OverflowError:
        raise BadRequest("duration: too long") from None
    if duration.total_seconds() <= 0:
        raise BadRequest("duration: must be more than zero")
    now = utcnow()
    try:
        expires_at = now + duration
    except OverflowError:
        raise BadRequest("duration: too long") from None
    return book.add_silence(db, request.matchers, request.comment, expires_at, now)


@router.delete(
    "/silences/{silence_id}",
    status_code=204,
    summary="Expire a silence now",
    responses=NOT_FOUND,
)
def expire_silence(db: Db, silence_id: RowId) -> Response:
    if not book.expire_silence(db, silence_id, utcnow()):
        raise NotFound(f"no active silence {silence_id}")
    return Response(status_code=204)


@router.get("/businesses", response_model=ListPage[Business], summary="Business portfolios")
def list_businesses(db: Db, limit: Limit = 100, cursor: Cursor = None) -> dict[str, Any]:
    with db.read() as conn:
        page = queries.businesses(conn, limit=limit, cursor=cursor)
    return _page(page)


@router.get("/events", response_model=ListPage[EventOut], summary="Typed events, newest first")
def list_events(
    db: Db,
    field: Text = None,
    waba_id: Text = None,
    kind: Text = None,
    subject_kind: SubjectKind | None = None,
    subject_id: Text = None,
    since: TimeParam = None,
    until: TimeParam = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    with db.read() as conn:
        page = queries.events(
            conn,
            field=field,
            waba_id=waba_id,
            kind=kind,
            subject_kind=subject_kind.value if subject_kind else None,
            subject_id=subject_id,
            since=parse_time(since, "since"),
            until=parse_time(until, "until"),
            limit=limit,
            cursor=cursor,
        )
    return _page(page)


@router.get("/quarantine", response_model=ListPage[QuarantineItem])
def list_quarantine(
    db: Db,
    include_resolved: Annotated[bool, Query(description="Also show resolved items.")] = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    with db.read() as conn:
        page = queries.quarantine(
            conn, include_resolved=include_resolved, limit=limit, cursor=cursor
        )
    return _page(page)


@router.get("/quarantine/{item_id}", response_model=QuarantineDetail, responses=NOT_FOUND)
def quarantine_item(db: Db, item_id: RowId) -> dict[str, Any]:
    with db.read() as conn:
        page = queries.quarantine(
            conn, include_resolved=True, limit=1, cursor=queries.encode_cursor([item_id + 1])
        )
        if not page.items or page.items[0]["id"] != item_id:
            raise NotFound(f"no quarantined item {item_id}")
        item = page.items[0]
        body = queries.raw_body(conn, item["raw_id"]) or b""
    return {**item, "body": body.decode("utf-8", errors="replace")}
