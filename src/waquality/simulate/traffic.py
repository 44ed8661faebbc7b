"""The traffic of the simulated business as a time-ordered stream of deliveries. Pure: from
the world, the story and a seed; no clock and no I/O (the caller says how far to go).

Time runs in hour slots from the story's start. Each slot draws its sessions (order support,
bookings, notifications) from rates that follow the time of day and the weekday, and sends the
campaigns scheduled in it; every session is drawn from a random state of its own, so a slot
gives the same sessions however the time range is cut. :meth:`Traffic.until` returns what
reaches the endpoint before a moment: webhook POSTs, the sending system's logs (every
:data:`LOG_EVERY`) and Graph API changes.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from waquality.simulate import journeys, story, wire
from waquality.simulate.records import Delivery, GraphChange, Logged, Post
from waquality.simulate.script import In, Item, Out, Preference
from waquality.simulate.world import Customer, World

SLOT = timedelta(hours=1)
LOG_EVERY = timedelta(minutes=5)  # the sending system posts its log this often
# Relative activity per local hour, for what customers start themselves.
_HOURLY = (1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 2, 4, 6, 7, 7, 6.5, 6, 6, 6, 6, 6, 6.5, 7, 6, 5, 3.5, 2)
_WEEKDAY = (1.0, 1.0, 1.0, 1.0, 1.05, 0.9, 0.7)
# Sessions per customer per day.
RATES = {
    "order_support": 0.035,
    "booking": 0.018,
    "payment_receipt": 0.012,
    "verification_code": 0.008,
    "order_confirmation": 0.012,
    "unsupported": 0.0006,
}
# Campaigns: (local time, template, share of the audience); spring_sale twice a day while
# the campaign is doubled, plus the story's extra push.
_CAMPAIGNS = ((10, 0, "spring_sale", 0.08), (12, 30, "new_arrivals", 0.03))
_DOUBLED = ((18, 0, "spring_sale", 0.1),)
CAMPAIGN_SPREAD = timedelta(minutes=30)  # how long the marketing tool takes to send one
PUSH_SPREAD = timedelta(minutes=90)  # the extra push goes out slowly: the pause cuts it short


def poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


@dataclass(slots=True)
class Counts:
    """What the stream holds so far (for people and tests)."""

    sessions: Counter[str] = field(default_factory=Counter)
    outbound: int = 0
    inbound: int = 0
    refused: int = 0
    opt_outs: int = 0
    posts: int = 0
    changes: int = 0
    logged: int = 0
    graph: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sessions": dict(sorted(self.sessions.items())),
            "outbound": self.outbound,
            "inbound": self.inbound,
            "refused": self.refused,
            "opt_outs": self.opt_outs,
            "posts": self.posts,
            "changes": self.changes,
            "logged": self.logged,
            "graph": self.graph,
        }


class Traffic:
    def __init__(self, world: World, plot: story.Story, seed: int) -> None:
        self.world, self.story, self.seed = world, plot, seed
        self.zone = ZoneInfo(world.zone)
        self.counts = Counts()
        self._slot = 0
        self._seq = 0
        self._changes: list[tuple[datetime, int, wire.Change]] = []
        self._posts: list[tuple[datetime, int, Post]] = []
        self._logs: list[tuple[datetime, int, dict[str, Any]]] = []
        self._graph: list[tuple[datetime, int, GraphChange]] = []
        self._wire = random.Random(f"{seed}:wire")
        self._batching = random.Random(f"{seed}:batches")
        self._unsubscribed: set[str] = set()  # asked the business for no more promotions
        # stopped marketing messages in WhatsApp (the business's list does not know)
        self._stopped = {c.wa_id for c in world.customers if c.stopped}
        self._marketing = [c for c in world.customers if c.marketing]
        for happening in story.happenings(world, plot):
            if isinstance(happening, GraphChange):
                self._push(self._graph, happening.at, happening)
            else:
                change = wire.management_change(happening, self._wire)
                self._push(self._changes, change.arrive, change)

    def _push(self, heap: list[Any], at: datetime, item: Any) -> None:
        self._seq += 1
        heapq.heappush(heap, (at, self._seq, item))

    @staticmethod
    def _pop(heap: list[tuple[datetime, int, Any]], moment: datetime) -> list[Any]:
        found = []
        while heap and heap[0][0] < moment:
            found.append(heapq.heappop(heap)[2])
        return found

    def until(self, moment: datetime) -> list[Delivery]:
        """Everything that reaches the endpoint before ``moment`` and was not returned yet, in
        time order."""
        while self.story.start + SLOT * self._slot < moment:
            self._generate(self._slot)
            self._slot += 1
        out: list[tuple[datetime, int, Delivery]] = []
        order = 0

        def emit(delivery: Delivery) -> None:
            nonlocal order
            order += 1
            out.append((delivery.at, order, delivery))

        for change in self._pop(self._graph, moment):
            emit(change)
            self.counts.graph += 1
        posts: list[Post] = []
        while ready := self._pop(self._changes, moment):  # again: re-batched copies
            made, later, again = wire.batches(ready, self._batching)
            posts += made
            for post in later:
                self._push(self._posts, post.at, post)
            for change in again:
                self._push(self._changes, change.arrive, change)
        for post in [*posts, *self._pop(self._posts, moment)]:
            emit(post)
            self.counts.posts += 1
            self.counts.changes += post.changes
        flushed = self._pop_logs(moment)
        for at, entries in flushed:
            emit(Logged(at, tuple(entries)))
            self.counts.logged += len(entries)
        out.sort(key=lambda item: (item[0], item[1]))
        return [delivery for _, _, delivery in out]

    def _pop_logs(self, moment: datetime) -> list[tuple[datetime, list[dict[str, Any]]]]:
        """Log entries by :data:`LOG_EVERY` window, for the windows that ended before
        ``moment``."""
        windows: dict[int, list[dict[str, Any]]] = {}
        while self._logs:
            at, _, entry = self._logs[0]
            index = (at - self.story.start) // LOG_EVERY
            flush = self.story.start + LOG_EVERY * (index + 1)
            if flush >= moment:
                break
            heapq.heappop(self._logs)
            windows.setdefault(index, []).append(entry)
        return [
            (self.story.start + LOG_EVERY * (index + 1), entries)
            for index, entries in sorted(windows.items())
        ]

    # -- generation ---------------------------------------------------------------------------

    def _add(self, items: list[Item]) -> None:
        for item in items:
            for change in wire.changes(item, self._wire):
                self._push(self._changes, change.arrive, change)
            if isinstance(item, Out):
                self.counts.outbound += item.refused is None
                self.counts.refused += item.refused is not None
                entry = wire.logged(item)
                if entry is not None:
                    self._push(self._logs, item.at, entry)
            elif isinstance(item, In):
                self.counts.inbound += 1
            elif isinstance(item, Preference):
                self.counts.opt_outs += 1

    def _generate(self, index: int) -> None:
        start = self.story.start + SLOT * index
        local = (start + SLOT / 2).astimezone(self.zone)
        activity = _HOURLY[local.hour] / sum(_HOURLY) * _WEEKDAY[local.weekday()]
        customers = self.world.customers
        for stream, rate in RATES.items():
            rng = random.Random(f"{self.seed}:{stream}:{index}")
            for number in range(poisson(rng, rate * len(customers) * activity)):
                at = start + timedelta(seconds=rng.random() * SLOT.total_seconds())
                customer = rng.choice(customers)
                key = f"{self.seed}/{stream}/{index}/{number}"
                self.counts.sessions[stream] += 1
                self._add(self._session(stream, key, customer, at))
        for at, name, share, spread in self._campaigns(start, start + SLOT):
            self._campaign(at, name, share, spread)

    def _session(self, stream: str, key: str, customer: Customer, at: datetime) -> list[Item]:
        world, plot, rng = self.world, self.story, random.Random(key)
        run: dict[str, Callable[[], list[Item]]] = {
            "order_support": lambda: journeys.order_support(world, plot, key, rng, customer, at),
            "booking": lambda: journeys.booking(world, plot, key, rng, customer, at, self.seed),
            "unsupported": lambda: journeys.unsupported(world, key, rng, customer, at),
        }
        if stream in run:
            return run[stream]()
        items = journeys.notification(world, key, rng, customer, at, stream)
        if stream == "order_confirmation":
            shipped = at + timedelta(hours=rng.uniform(16, 40))
            items += journeys.notification(
                world, key + "/shipped", rng, customer, shipped, "shipping_notice"
            )
        return items

    def _campaigns(
        self, start: datetime, end: datetime
    ) -> list[tuple[datetime, str, float, timedelta]]:
        found = []
        first, last = start.astimezone(self.zone).date(), end.astimezone(self.zone).date()
        day = first
        while day <= last:
            for hour, minute, name, share in _CAMPAIGNS + _DOUBLED:
                moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=self.zone)
                at = moment.astimezone(start.tzinfo)
                doubled = (hour, minute, name, share) in _DOUBLED
                if start <= at < end and (not doubled or self.story.doubled(at)):
                    found.append((at, name, share, CAMPAIGN_SPREAD))
            day += timedelta(days=1)
        if start <= self.story.push_at < end:
            found.append((self.story.push_at, "spring_sale", 0.15, PUSH_SPREAD))
        return sorted(found)

    def _campaign(self, at: datetime, name: str, share: float, spread: timedelta) -> None:
        rng = random.Random(f"{self.seed}:campaign:{name}:{at.isoformat()}")
        audience = [c for c in self._marketing if c.wa_id not in self._unsubscribed]
        chosen = rng.sample(audience, min(len(audience), round(share * len(self._marketing))))
        self.counts.sessions[name] += 1
        step = spread / max(1, len(chosen))
        for number, customer in enumerate(chosen):
            key = f"{self.seed}/campaign/{name}/{at.isoformat()}/{number}"
            items, unsubscribed = journeys.campaign(
                self.world,
                self.story,
                key,
                random.Random(key),
                customer,
                at + step * number,
                name,
                customer.wa_id in self._stopped,
            )
            if unsubscribed:
                self._unsubscribed.add(customer.wa_id)
            if any(isinstance(item, Preference) for item in items):
                self._stopped.add(customer.wa_id)
            self._add(items)


def generate(
    seed: int, customers: int, start: datetime, end: datetime
) -> tuple[World, story.Story, Traffic, list[Delivery]]:
    """The backfill of ``[start, end)``: the world, its story, the traffic (to go on from
    ``end``) and what it delivered."""
    from waquality.simulate import world as world_module

    made = world_module.build(seed, customers)
    plot = story.build(start, end, made.zone)
    traffic = Traffic(made, plot, seed)
    return made, plot, traffic, traffic.until(end)
