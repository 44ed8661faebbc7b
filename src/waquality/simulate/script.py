"""One conversation as it unfolds: what the business sends (with the statuses Meta will report
for it), what the customer answers, and when. Pure: the clock is the conversation's own.

The rules that make the figures plausible live here: a message is ``sent`` a moment after the
send and ``delivered`` soon after (later when the customer's phone is offline); it is ``read``
just before the customer answers, unless they switched read receipts off; an unreachable
customer's messages fail with 131026; a free-form message more than 24 hours after the
customer last wrote fails with 131047 (a template is needed then).
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from waquality.simulate.world import Customer, Phone, Template

WINDOW = timedelta(hours=24)  # the customer-service window
# Opening hours of the agents (local time): weekday → (opens, closes) in hours.
OPENING = {0: (8, 18), 1: (8, 18), 2: (8, 18), 3: (8, 18), 4: (8, 18), 5: (9, 13)}
StatusRecord = tuple[str, datetime, int | None]  # (status, time, error code)


@dataclass(slots=True)
class Out:
    """A message the business sent (or tried to: ``refused`` is the Graph API's error)."""

    wamid: str
    at: datetime
    phone: Phone
    customer: Customer
    sender: str  # bot, agent, campaign
    journey: str | None
    step: str | None
    experiments: tuple[tuple[str, str], ...]
    kind: str  # text, interactive, template, document
    text: str
    template: Template | None = None
    logged: bool = True  # the sending system logs it through the API
    refused: int | None = None
    statuses: list[StatusRecord] = field(default_factory=list)

    @property
    def delivered_at(self) -> datetime | None:
        return next((t for s, t, _ in self.statuses if s == "delivered"), None)

    def read_at(self, moment: datetime) -> None:
        self.statuses = [s for s in self.statuses if s[0] != "read"]
        self.statuses.append(("read", moment, None))


@dataclass(frozen=True, slots=True)
class In:
    """A message the customer sent; ``content`` is the object of its type."""

    wamid: str
    at: datetime
    phone: Phone
    customer: Customer
    kind: str  # text, interactive, button, image, reaction, unsupported
    content: dict[str, Any]
    replies_to: str | None = None


@dataclass(frozen=True, slots=True)
class Preference:
    """The customer stopped (or resumed) marketing messages in WhatsApp itself."""

    at: datetime
    phone: Phone
    customer: Customer
    value: str  # stop, resume


Item = Out | In | Preference


def wamid(key: str) -> str:
    """A message id shaped like Meta's, the same for the same key."""
    digest = hashlib.blake2b(key.encode(), digest_size=27).digest()
    return "wamid.HBgM" + base64.b64encode(digest).decode()


def lognormal(rng: random.Random, median: float, spread: float) -> float:
    return median * math.exp(rng.gauss(0.0, spread))


def bot_delay(rng: random.Random) -> float:
    """Seconds a bot takes to answer."""
    return 0.6 + lognormal(rng, 0.9, 0.5)


def is_open(moment: datetime, zone: str) -> bool:
    local = moment.astimezone(ZoneInfo(zone))
    hours = OPENING.get(local.weekday())
    return hours is not None and hours[0] <= local.hour < hours[1]


def next_opening(moment: datetime, zone: str) -> datetime:
    local = moment.astimezone(ZoneInfo(zone))
    for days in range(8):
        day = (local + timedelta(days=days)).date()
        hours = OPENING.get(day.weekday())
        if hours is None:
            continue
        opens = datetime(day.year, day.month, day.day, hours[0], tzinfo=local.tzinfo)
        if opens > local:
            return opens.astimezone(moment.tzinfo)
    raise AssertionError("the business opens every week")  # pragma: no cover


def agent_delay(rng: random.Random, moment: datetime, zone: str) -> float:
    """Seconds until an agent answers a customer who wrote at ``moment``: minutes in opening
    hours (longer at busy times, now and then much longer), the next opening otherwise."""
    if not is_open(moment, zone):
        opens = next_opening(moment, zone)
        return (opens - moment).total_seconds() + rng.uniform(120, 2700)
    local = moment.astimezone(ZoneInfo(zone))
    busy = 1.7 if local.hour in (10, 11, 14, 15) else 1.0
    if rng.random() < 0.05:
        return rng.uniform(1200, 5400)
    return 20 + lognormal(rng, 140 * busy, 0.9)


class Conversation:
    """Builds the items of one exchange between a business number and a customer."""

    def __init__(
        self,
        key: str,
        rng: random.Random,
        phone: Phone,
        customer: Customer,
        start: datetime,
        journey: str | None = None,
    ) -> None:
        self.key, self.rng, self.phone, self.customer = key, rng, phone, customer
        self.now = start
        self.journey = journey
        self.experiments: tuple[tuple[str, str], ...] = ()
        self.items: list[Item] = []
        self.last_customer_at: datetime | None = None
        self.unreachable = False
        self._count = 0
        self._unread: list[Out] = []

    def _id(self) -> str:
        self._count += 1
        return wamid(f"{self.key}/{self._count}")

    def wait(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    # -- the business ---------------------------------------------------------------------------

    def send(
        self,
        sender: str,
        step: str | None,
        text: str,
        *,
        delay: float = 0.0,
        kind: str = "text",
        template: Template | None = None,
        logged: bool = True,
        failure: int | None = None,
    ) -> Out:
        """The business sends a message ``delay`` seconds from now; ``failure``: it fails with
        this code instead of being delivered."""
        self.wait(delay)
        out = self._out(sender, step, "template" if template else kind, text, template, logged)
        rng = self.rng
        sent = self.now + timedelta(seconds=0.3 + rng.random() * 1.2)
        outside = self.last_customer_at is None or self.now - self.last_customer_at > WINDOW
        if template is None and outside:
            failure = 131047
        if failure is None and not self.customer.reachable:
            failure = 131026
        if failure is not None:
            if failure == 131026 and rng.random() < 0.5:
                out.statuses.append(("sent", sent, None))
            out.statuses.append(("failed", sent + timedelta(seconds=rng.uniform(0.2, 3)), failure))
            self.unreachable = failure == 131026
            return out
        out.statuses.append(("sent", sent, None))
        lag = rng.uniform(0.3, 3.0) if rng.random() < 0.9 else rng.uniform(60, 5400)
        out.statuses.append(("delivered", sent + timedelta(seconds=lag), None))
        self._unread.append(out)
        return out

    def refuse(self, sender: str, step: str | None, template: Template, code: int) -> Out:
        """A send the Graph API refused: no message left, the business logs the attempt."""
        return self._out(sender, step, "template", "", template, True, code)

    def _out(
        self,
        sender: str,
        step: str | None,
        kind: str,
        text: str,
        template: Template | None,
        logged: bool,
        refused: int | None = None,
    ) -> Out:
        """A business message of this conversation, now, in its items."""
        out = Out(
            self._id(),
            self.now,
            self.phone,
            self.customer,
            sender,
            self.journey,
            step,
            self.experiments,
            kind,
            text,
            template,
            logged,
            refused,
        )
        self.items.append(out)
        return out

    # -- the customer ---------------------------------------------------------------------------

    def _act(self, delay: float) -> None:
        """The customer reads what is waiting, then acts ``delay`` seconds from now."""
        self.wait(delay)
        for out in self._unread:
            delivered = out.delivered_at
            if delivered is None:
                continue
            if delivered >= self.now - timedelta(seconds=1.5):  # came online to answer
                delivered = self.now - timedelta(seconds=self.rng.uniform(1.5, 3.0))
                out.statuses = [s for s in out.statuses if s[0] != "delivered"]
                sent = next(t for s, t, _ in out.statuses if s == "sent")
                out.statuses.append(("delivered", max(delivered, sent), None))
                delivered = max(delivered, sent)
            if self.customer.receipts:
                think = self.rng.uniform(1.0, max(1.0, min(40.0, delay * 0.6)))
                out.read_at(
                    max(delivered + timedelta(seconds=0.5), self.now - timedelta(seconds=think))
                )
        self._unread = []
        self.last_customer_at = self.now

    def _inbound(self, kind: str, content: dict[str, Any], replies_to: str | None) -> In:
        message = In(self._id(), self.now, self.phone, self.customer, kind, content, replies_to)
        self.items.append(message)
        return message

    def says(self, delay: float, text: str) -> In:
        self._act(delay)
        return self._inbound("text", {"body": text}, None)

    def taps(self, delay: float, out: Out, reply_id: str, title: str, *, row: bool = False) -> In:
        """Taps a reply button (or a list row) of an interactive message."""
        self._act(delay)
        kind = "list_reply" if row else "button_reply"
        content = {"type": kind, kind: {"id": reply_id, "title": title}}
        return self._inbound("interactive", content, out.wamid)

    def presses(self, delay: float, out: Out, payload: str, title: str) -> In:
        """Presses a quick-reply button of a template."""
        self._act(delay)
        return self._inbound("button", {"payload": payload, "text": title}, out.wamid)

    def sends_image(self, delay: float, caption: str) -> In:
        self._act(delay)
        digest = hashlib.sha256(f"{self.key}/{self._count}".encode()).hexdigest()
        content = {
            "caption": caption,
            "mime_type": "image/jpeg",
            "sha256": digest,
            "id": str(int(digest[:14], 16)),
        }
        return self._inbound("image", content, None)

    def reacts(self, delay: float, out: Out, emoji: str) -> In:
        self._act(delay)
        return self._inbound("reaction", {"message_id": out.wamid, "emoji": emoji}, None)

    def sends_unsupported(self, delay: float) -> In:
        self._act(delay)
        return self._inbound("unsupported", {}, None)

    def stops_marketing(self, delay: float) -> None:
        self.wait(delay)
        self.items.append(Preference(self.now, self.phone, self.customer, "stop"))

    def finish(self, read_chance: float, median_wait: float = 900.0) -> list[Item]:
        """The conversation is over: what is still unread is read later (or never)."""
        for out in self._unread:
            delivered = out.delivered_at
            if delivered is None or not self.customer.receipts:
                continue
            if self.rng.random() < read_chance:
                wait = lognormal(self.rng, median_wait, 1.2)
                out.read_at(delivered + timedelta(seconds=min(wait, 3 * 86400)))
        self._unread = []
        return self.items
