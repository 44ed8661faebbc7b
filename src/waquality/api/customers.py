"""Customer endpoints: erasure of one customer's data on request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from waquality.api.routes import NOT_FOUND, Db, utcnow
from waquality.api.schemas import NO_NUL
from waquality.errors import NotFound
from waquality.store.privacy import erase_customer
from waquality.store.tracker import TrackerConfig

router = APIRouter(prefix="/api/v1")
CustomerId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=NO_NUL,
        description="A wa_id (digits, or a phone number as written), a business-scoped user id, "
        "or a stored pseudonym (h:...).",
    ),
]


class ErasedOut(BaseModel):
    messages: int = Field(description="Message rows deleted.")
    conversations: int = Field(description="Conversation rows deleted.")
    responses: int = Field(description="Response rows deleted.")
    payloads: int = Field(description="Raw webhook bodies rewritten without them, or deleted.")
    events: int = Field(description="Opt-out events that no longer name them (they still count).")


def tracker_config(request: Request) -> TrackerConfig:
    """The privacy settings (whether customer ids are stored as keyed hashes)."""
    config: TrackerConfig = request.app.state.tracker_config
    return config


@router.delete(
    "/customers/{customer_id}",
    response_model=ErasedOut,
    summary="Erase one customer's data",
    description="Deletes the customer's messages, conversations and responses, takes their "
    "items out of the stored webhook payloads (a payload left with nothing is deleted) and "
    "their id out of opt-out events. The customer is found by the id given and, when "
    "customer ids are stored as keyed hashes, by its hash. The per-hour figures stay. Answers "
    "how many of each were removed; 404 when nothing named them.",
    responses=NOT_FOUND,
)
def delete_customer(db: Db, request: Request, customer_id: CustomerId) -> ErasedOut:
    erased = erase_customer(db, customer_id, tracker_config(request), utcnow())
    if not erased.found:
        raise NotFound("no data of this customer")  # the id is not echoed: it is personal data
    return ErasedOut(
        messages=erased.messages,
        conversations=erased.conversations,
        responses=erased.responses,
        payloads=erased.payloads,
        events=erased.events,
    )
