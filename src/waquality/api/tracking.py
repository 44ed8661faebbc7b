"""The conversation tracker's endpoints: messages the business logs, response times and
delivery signals."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from waquality.analyse import delivery, response_times
from waquality.api.params import Cursor, Limit, Text, TimeParam, parse_time
from waquality.api.routes import Db, utcnow
from waquality.api.schemas import (
    NO_NUL,
    ConversationOut,
    ErrorOut,
    ListPage,
    LoggedBatch,
    LoggedMessage,
    LoggedOut,
    MessageOut,
    ResponseTimes,
)
from waquality.api.schemas import Delivery as DeliveryOut
from waquality.domain.enums import SenderKind
from waquality.domain.messages import Outbound
from waquality.domain.privacy import pseudonym
from waquality.domain.responses import Bucket
from waquality.domain.tags import Tags
from waquality.errors import BadRequest, Conflict
from waquality.store import queries
from waquality.store.tracker import Tracker

router = APIRouter(prefix="/api/v1")
DEFAULT_RANGE = timedelta(days=30)
MAX_RANGE = timedelta(days=3660)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
BucketParam = Annotated[Bucket, Query(description="Series step: hour, day or week.")]
PhoneParam = Annotated[str | None, Query(pattern=r"^[0-9]{1,32}$")]
CustomerParam = Annotated[
    str | None,
    Query(min_length=1, max_length=128, pattern=NO_NUL, description="wa_id or user id."),
]
SenderParam = Annotated[
    str | None,
    Query(pattern="^(bot|agent|campaign|unknown)$", description="Only replies of this sender."),
]


def _tracker(request: Request) -> Tracker | None:
    tracker: Tracker | None = request.app.state.tracker
    return tracker


@router.post(
    "/messages",
    response_model=LoggedOut,
    summary="Log messages the business sent, or sends the Graph API refused",
    responses={409: {"model": ErrorOut, "description": "Conversation tracking is off."}},
)
def log_messages(db: Db, request: Request, body: LoggedBatch | LoggedMessage) -> dict[str, Any]:
    tracker = _tracker(request)
    if tracker is None:
        raise Conflict("conversation tracking is off (WAQUALITY_TRACKER=false)")
    logged = body.messages if isinstance(body, LoggedBatch) else [body]
    now = utcnow()
    items = [_outbound(message, now, index) for index, message in enumerate(logged)]
    with db.write() as conn:
        changed = tracker.apply(conn, items, now)
    return {"received": len(items), "changed": changed, "ids": [item.wamid for item in items]}


def _outbound(message: LoggedMessage, now: datetime, index: int) -> Outbound:
    where = f"messages[{index}]"
    at = parse_time(str(message.timestamp), f"{where}.timestamp") if message.timestamp else now
    assert at is not None
    _in_range(at, f"{where}.timestamp")
    code = message.error.code if message.error else None
    wamid = message.id
    if wamid is None:
        if code is None:
            raise BadRequest(f"{where}.id: required unless the send was refused (error)")
        attempt = "|".join(
            [message.phone_number_id, message.to, at.isoformat(), message.template or "", str(code)]
        )
        wamid = "refused:" + hashlib.sha256(attempt.encode()).hexdigest()[:40]
    return Outbound(
        wamid=wamid,
        phone_number_id=message.phone_number_id,
        customer=message.to,
        at=at,
        kind="template" if message.template and message.type == "text" else message.type,
        template=message.template,
        text=message.text,
        tags=Tags(
            SenderKind.parse(message.sender) or SenderKind.UNKNOWN,
            message.journey,
            message.step,
            tuple(message.experiments.items()),
            message.template,
        ),
        error_code=code,
    )


def _in_range(moment: datetime, name: str) -> None:
    if not EARLIEST <= moment < LATEST:
        raise BadRequest(f"{name}: out of range ({EARLIEST.year}–{LATEST.year - 1})")


def _window(
    start: Annotated[TimeParam, Query(alias="from")] = None,
    end: Annotated[TimeParam, Query(alias="to")] = None,
) -> tuple[datetime, datetime]:
    """``from`` and ``to``: the range of a summary (default: the 30 days before now)."""
    until = parse_time(end, "to") or utcnow()
    since = parse_time(start, "from") or (until - DEFAULT_RANGE if until > EARLIEST else until)
    _in_range(since, "from")
    _in_range(until, "to")
    if since >= until:
        raise BadRequest("from: must be before to")
    if until - since > MAX_RANGE:
        raise BadRequest("the range may span at most ten years")
    return since, until


Window = Annotated[tuple[datetime, datetime], Depends(_window)]


def _zone(request: Request) -> str:
    tracker = _tracker(request)
    return tracker.config.zone if tracker is not None else "UTC"


def _customer(request: Request, customer: str | None) -> str | None:
    """The customer as stored (their keyed hash when ids are hashed)."""
    config = request.app.state.tracker_config
    return pseudonym(customer, config.customer_key) if customer else None


@router.get(
    "/conversations",
    response_model=ListPage[ConversationOut],
    summary="Conversations, latest first (a number's, a customer's, the unanswered ones)",
)
def list_conversations(
    db: Db,
    request: Request,
    phone_number_id: PhoneParam = None,
    customer: CustomerParam = None,
    since: TimeParam = None,
    until: TimeParam = None,
    unanswered: Annotated[bool | None, Query(description="Only (un)answered ones.")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    with db.read() as conn:
        page = queries.conversations(
            conn,
            phone_number_id=phone_number_id,
            customer=_customer(request, customer),
            since=parse_time(since, "since"),
            until=parse_time(until, "until"),
            unanswered=unanswered,
            limit=limit,
            cursor=cursor,
        )
    return {"items": page.items, "next": page.next}


@router.get(
    "/messages",
    response_model=ListPage[MessageOut],
    summary="Messages in time order, with their tags, context and reply ids",
)
def list_messages(
    db: Db,
    request: Request,
    phone_number_id: PhoneParam = None,
    customer: CustomerParam = None,
    since: TimeParam = None,
    until: TimeParam = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    with db.read() as conn:
        page = queries.messages(
            conn,
            phone_number_id=phone_number_id,
            customer=_customer(request, customer),
            since=parse_time(since, "since"),
            until=parse_time(until, "until"),
            limit=limit,
            cursor=cursor,
        )
    return {"items": page.items, "next": page.next}


@router.get(
    "/response-times",
    response_model=ResponseTimes,
    response_model_by_alias=True,
    summary="First and all response times, unanswered conversations, per bucket",
)
def get_response_times(
    db: Db,
    request: Request,
    window: Window,
    phone_number_id: PhoneParam = None,
    sender: SenderParam = None,
    bucket: BucketParam = Bucket.DAY,
) -> dict[str, Any]:
    since, until = window
    tracker = _tracker(request)
    query = response_times.Query(
        since,
        until,
        phone_number_id,
        SenderKind(sender) if sender else None,
        bucket,
        _zone(request),
        dict(tracker.config.targets) if tracker is not None else {},
    )
    with db.read() as conn:
        return response_times.summary(conn, query)


@router.get(
    "/delivery",
    response_model=DeliveryOut,
    response_model_by_alias=True,
    summary="Sent, delivered, read, failed; error codes; opt-outs — per number or template",
)
def get_delivery(
    db: Db,
    request: Request,
    window: Window,
    phone_number_id: PhoneParam = None,
    template: Text = None,
    bucket: BucketParam = Bucket.DAY,
) -> dict[str, Any]:
    since, until = window
    query = delivery.Query(since, until, phone_number_id, template, bucket, _zone(request))
    with db.read() as conn:
        return delivery.summary(conn, query)
