"""The pages. Each reads what it shows in one read transaction and renders one template.

``/`` overview · ``/numbers`` and ``/numbers/{number}`` · ``/templates`` and
``/templates/{id}`` · ``/alerts`` (silences made and expired here) · ``/response-times`` ·
``/login`` and ``/logout``. Filters (WABA, number, time range) live in the URL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection, func, select

from waquality.alerting import book
from waquality.analyse import delivery, response_times
from waquality.domain.enums import SenderKind, SubjectKind
from waquality.domain.responses import Bucket
from waquality.store import schema
from waquality.web import charts, reads
from waquality.web.app import Dashboard, PageError, local_target, read_form
from waquality.web.auth import Session
from waquality.web.filters import View, page_key, parse_view
from waquality.web.silences import expire, silence_form, silence_page

router = APIRouter(include_in_schema=False)
BUCKET_STEP = {
    Bucket.HOUR: timedelta(hours=1),
    Bucket.DAY: timedelta(days=1),
    Bucket.WEEK: timedelta(days=7),
}
MAX_HISTORY_ROWS = 500
MAX_MARKERS = 300


def dashboard(request: Request) -> Dashboard:
    found: Dashboard = request.app.state.dashboard
    return found


Board = Annotated[Dashboard, Depends(dashboard)]


def signed_in(request: Request, board: Board) -> Session:
    return board.signed_in(request)


SignedIn = Annotated[Session, Depends(signed_in)]


def view_of(request: Request, board: Dashboard) -> View:
    return parse_view(request.query_params, board.clock(), board.zone)


# -- login --------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request, board: Board, target: Annotated[str, Query(alias="next")] = "/"
) -> Response:
    session = board.session(request)
    if session is not None and session.signed_in:
        return board.redirect(target)
    session = session or board.sessions.new(signed_in=False)
    response = board.render(
        request, "login.html", {"next": local_target(target), "refused": None}, session=session
    )
    board.set_session(request, response, session)
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, board: Board) -> Response:
    form = await read_form(request)
    target = local_target(form.get("next"))
    session = board.session(request)
    if session is None or not session.csrf_ok(form.get("csrf")):
        fresh = board.sessions.new(signed_in=False)
        refused = "The form had expired; please sign in again."
        refusal = board.render(
            request, "login.html", {"next": target, "refused": refused}, session=fresh, status=403
        )
        board.set_session(request, refusal, fresh)
        return refusal
    client = request.client.host if request.client else "unknown"
    if board.throttle.blocked(client):
        refused = "Too many wrong attempts; wait a few minutes."
        return board.render(
            request, "login.html", {"next": target, "refused": refused}, session=session, status=429
        )
    if not board.sessions.credentials_ok(form.get("secret", "")):
        board.throttle.failed(client)
        refused = "That token or password is not right."
        return board.render(
            request, "login.html", {"next": target, "refused": refused}, session=session, status=401
        )
    response: Response = board.redirect(target)
    board.set_session(request, response, board.sessions.new(signed_in=True))
    return response


@router.post("/logout")
async def logout(request: Request, board: Board) -> Response:
    form = await read_form(request)
    session = board.session(request)
    if session is None or not session.csrf_ok(form.get("csrf")):
        raise PageError(403, "The form had expired; reload the page and try again.")
    response = board.redirect("/login")
    board.set_session(request, response, board.sessions.new(signed_in=False))
    return response


# -- overview -----------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, board: Board, session: SignedIn) -> Response:
    view = view_of(request, board)
    now = view.now
    with board.db.read() as conn:
        numbers = reads.numbers(conn, view.waba)
        if view.number:
            numbers = [n for n in numbers if view.number in reads.names(n)]
        attention = reads.numbers_needing_attention(numbers)
        countdowns = {n["ident"]: reads.flagged(conn, n, now) for n in attention}
        templates, template_total = reads.templates_needing_attention(conn, view.waba, 50)
        paused = reads.paused_templates(conn, view.waba)
        changes = reads.recent_changes(conn, view.waba, numbers)
        counts = reads.counts(conn, view.waba)
        choices = reads.filter_choices(conn, view)
    firing = [
        a for a in book.alerts(board.db, "firing", 500) if reads.alert_in_view(a, view, numbers)
    ]
    context = {
        "view": view,
        "numbers": numbers,
        "attention": attention,
        "countdowns": countdowns,
        "templates": templates,
        "template_total": template_total,
        "paused": paused,
        "changes": changes,
        "counts": counts,
        "firing": firing,
        **choices,
    }
    return board.render(request, "overview.html", context, session=session)


# -- phone numbers ------------------------------------------------------------------------------


@router.get("/numbers", response_class=HTMLResponse)
def numbers_page(request: Request, board: Board, session: SignedIn) -> Response:
    view = view_of(request, board)
    with board.db.read() as conn:
        numbers = reads.numbers(conn, view.waba)
        if view.number:
            numbers = [n for n in numbers if view.number in reads.names(n)]
        behind = reads.behind(conn, numbers, view.now)
        countdowns = {n["ident"]: reads.flagged(conn, n, view.now) for n in numbers}
        choices = reads.filter_choices(conn, view)
    context = {
        "view": view,
        "numbers": numbers,
        "behind": behind,
        "countdowns": countdowns,
        **choices,
    }
    return board.render(request, "numbers.html", context, session=session)


@router.get("/numbers/{number}", response_class=HTMLResponse)
def number_page(request: Request, board: Board, session: SignedIn, number: str) -> Response:
    view = view_of(request, board)
    with board.db.read() as conn:
        row = reads.find_number(conn, number[:64]) if "\x00" not in number else None
        if row is None:
            raise PageError(404, "No such phone number.")
        key = str(row["key"])
        start = view.start_or(reads.earliest(conn, SubjectKind.PHONE_NUMBER, key))
        end = view.end
        histories = reads.field_histories(
            conn, SubjectKind.PHONE_NUMBER, key, reads.NUMBER_FIELDS, start, end
        )
        events = reads.events(
            conn, SubjectKind.PHONE_NUMBER, sorted(reads.names(row)), start, end, MAX_MARKERS
        )
        history = reads.history_rows(
            conn, SubjectKind.PHONE_NUMBER, key, start, end, MAX_HISTORY_ROWS
        )
        countdown = reads.flagged(conn, row, view.now)
        figures = None
        if row["phone_number_id"]:
            figures = delivery.summary(
                conn,
                delivery.Query(
                    start, end, row["phone_number_id"], bucket=view.bucket(start), zone=board.zone
                ),
            )
        choices = reads.filter_choices(conn, view)
    lanes = [
        charts.Lane("quality", "quality", _segments(histories["quality_rating"], start, end)),
        charts.Lane("status", "status", _segments(histories["status"], start, end)),
        charts.Lane(
            "messaging limit", "limit", _segments(histories["messaging_limit"], start, end)
        ),
    ]
    markers = [charts.Marker(ev["occurred_at"], f"{ev['field']}: {ev['kind']}") for ev in events]
    context = {
        "view": view,
        "row": row,
        "start": start,
        "end": end,
        "chart": charts.timeline(lanes, markers, start, end, board.zone, label="Number history"),
        "events": events,
        "history": history,
        "countdown": countdown,
        "figures": figures,
        "delivery_chart": _delivery_chart(figures, start, end, view, board.zone),
        **choices,
    }
    return board.render(request, "number.html", context, session=session)


def _segments(found: reads.FieldHistory, start: datetime, end: datetime) -> list[charts.Segment]:
    return charts.segments(found.before, found.changes, start, end)


def _delivery_chart(
    figures: dict[str, Any] | None, start: datetime, end: datetime, view: View, zone: str
) -> Any:
    if not figures or not figures["series"]:
        return None
    step = BUCKET_STEP[Bucket(figures["bucket"])]
    series = [(point["start"], point) for point in figures["series"]]
    return charts.bars(series, start, end, step, zone, label="Delivery per " + figures["bucket"])


# -- templates ----------------------------------------------------------------------------------


@router.get("/templates", response_class=HTMLResponse)
def templates_page(request: Request, board: Board, session: SignedIn) -> Response:
    params = request.query_params
    status, quality = page_key(params.get("status")), page_key(params.get("quality"))
    category, name = page_key(params.get("category")), (params.get("q") or "").strip()[:100]
    page = int(params["page"]) if (params.get("page") or "").isdigit() else 0
    view = view_of(request, board).with_extra(
        status=status, quality=quality, category=category, q=name or None
    )
    with board.db.read() as conn:
        rows, total = reads.templates(
            conn,
            waba=view.waba,
            status=status,
            quality=quality,
            category=category,
            name=name.replace("\x00", "") or None,
            page=min(page, 10_000),
        )
        choices = {
            "statuses": reads.template_values(conn, "status"),
            "categories": reads.template_values(conn, "category"),
            **reads.filter_choices(conn, view),
        }
    context = {
        "view": view,
        "rows": rows,
        "total": total,
        "page": page,
        "per_page": reads.TEMPLATES_PER_PAGE,
        "filters": {"status": status, "quality": quality, "category": category, "q": name},
        **choices,
    }
    return board.render(request, "templates.html", context, session=session)


@router.get("/templates/{template_id}", response_class=HTMLResponse)
def template_page(request: Request, board: Board, session: SignedIn, template_id: str) -> Response:
    view = view_of(request, board)
    with board.db.read() as conn:
        found = conn.execute(
            select(schema.templates).where(schema.templates.c.id == template_id[:64])
        ).mappings()
        row = dict(next(iter(found), None) or {}) if "\x00" not in template_id else {}
        if not row:
            raise PageError(404, "No such template.")
        key = row["id"]
        start = view.start_or(reads.earliest(conn, SubjectKind.TEMPLATE, key))
        end = view.end
        histories = reads.field_histories(
            conn, SubjectKind.TEMPLATE, key, reads.TEMPLATE_FIELDS, start, end
        )
        events = reads.events(conn, SubjectKind.TEMPLATE, [key], start, end, MAX_MARKERS)
        history = reads.history_rows(conn, SubjectKind.TEMPLATE, key, start, end, MAX_HISTORY_ROWS)
        figures = None
        if row["name"]:
            figures = delivery.summary(
                conn,
                delivery.Query(
                    start, end, template=row["name"], bucket=view.bucket(start), zone=board.zone
                ),
            )
        choices = reads.filter_choices(conn, view)
    lanes = [
        charts.Lane("status", "template", _segments(histories["status"], start, end)),
        charts.Lane("quality", "quality", _segments(histories["quality_score"], start, end)),
        charts.Lane("category", "category", _segments(histories["category"], start, end)),
    ]
    markers = [charts.Marker(ev["occurred_at"], f"{ev['field']}: {ev['kind']}") for ev in events]
    context = {
        "view": view,
        "row": row,
        "start": start,
        "end": end,
        "chart": charts.timeline(lanes, markers, start, end, board.zone, label="Template history"),
        "events": events,
        "history": history,
        "figures": figures,
        "delivery_chart": _delivery_chart(figures, start, end, view, board.zone),
        **choices,
    }
    return board.render(request, "template.html", context, session=session)


# -- alerts -------------------------------------------------------------------------------------


@router.get("/alerts", response_class=HTMLResponse)
def alerts_page(request: Request, board: Board, session: SignedIn) -> Response:
    view = view_of(request, board)
    return silence_page(board, request, session, view, None)


@router.post("/alerts/silences")
async def add_silence(request: Request, board: Board, session: SignedIn) -> Response:
    form = await read_form(request)
    return await run_in_threadpool(silence_form, board, request, session, form)


@router.post("/alerts/silences/{silence_id}/expire")
async def expire_silence(
    request: Request, board: Board, session: SignedIn, silence_id: str
) -> Response:
    form = await read_form(request)
    return await run_in_threadpool(expire, board, request, session, form, silence_id)


# -- response times -----------------------------------------------------------------------------


@router.get("/response-times", response_class=HTMLResponse)
def response_times_page(request: Request, board: Board, session: SignedIn) -> Response:
    sender_text = page_key(request.query_params.get("sender"))
    sender = SenderKind.parse(sender_text) if sender_text else None
    if sender is SenderKind.UNKNOWN and sender_text != SenderKind.UNKNOWN.value:
        sender = None
    view = view_of(request, board).with_extra(sender=sender.value if sender else None)
    with board.db.read() as conn:
        row = reads.find_number(conn, view.number) if view.number else None
        phone = row["phone_number_id"] if row else None
        if view.number and not phone:
            phone = "-"  # a number whose phone-number ID is not known has no figures
        start = view.start_or(_first_hour(conn, phone))
        bucket = view.bucket(start)
        summary = response_times.summary(
            conn,
            response_times.Query(
                start, view.end, phone, sender, bucket, board.zone, dict(board.targets)
            ),
        )
        choices = reads.filter_choices(conn, view)
    points = summary["series"]
    lines = [
        charts.Series(
            f"{title} p{q}", f"{kind}-p{q}", [(p["start"], p[name][f"p{q}"]) for p in points]
        )
        for kind, name, title in (
            ("first", "first_response", "first response"),
            ("all", "all_responses", "every response"),
        )
        for q in (50, 90)
    ]
    context = {
        "view": view,
        "row": row,
        "summary": summary,
        "senders": [s.value for s in SenderKind],
        "sender": sender.value if sender else None,
        "chart": charts.lines(lines, start, view.end, board.zone, label="Response times")
        if points
        else None,
        **choices,
    }
    return board.render(request, "response_times.html", context, session=session)


def _first_hour(conn: Connection, phone: str | None) -> datetime | None:
    rs = schema.response_stats
    query = select(func.min(rs.c.bucket_start)).where(rs.c.phone_number_id == (phone or "*"))
    found: datetime | None = conn.execute(query).scalar()
    return found
