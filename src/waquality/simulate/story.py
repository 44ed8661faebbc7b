"""The scripted quality story, placed over the simulated days.

The marketing team doubles the ``spring_sale`` campaign; its read rate falls and opt-outs rise;
the template's quality goes YELLOW, an extra push turns it RED and Meta pauses it (first pause,
3 hours: sends are refused with 132015); it comes back YELLOW; the offers number's rating drops
(seen by the poller only: webhooks no longer carry it); the portfolio's request for a higher
limit is deferred. Meanwhile an A/B test of the booking question starts, and order support
rewords its confusing question. After the backfill, the story goes on live: another
template's quality drops, the offers number recovers.

Times are fractions of the backfill window ``[start, end)`` (the push goes out in office hours
when the window allows), so any number of days tells the whole story. Pure: no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from waquality.simulate.records import GraphChange
from waquality.simulate.world import ZONE, World


@dataclass(frozen=True, slots=True)
class Management:
    """A management webhook change (a field other than ``messages``)."""

    at: datetime
    waba_id: str
    field: str
    value: dict[str, Any]


Happening = Management | GraphChange


@dataclass(frozen=True, slots=True)
class Story:
    start: datetime
    end: datetime
    experiment_start: datetime
    campaign_doubled: datetime
    wording_change: datetime
    yellow_at: datetime
    push_at: datetime  # an extra campaign that tips the template over
    red_at: datetime
    paused_at: datetime
    unpaused_at: datetime

    def paused(self, moment: datetime) -> bool:
        return self.paused_at <= moment < self.unpaused_at

    def doubled(self, moment: datetime) -> bool:
        return self.campaign_doubled <= moment < self.unpaused_at

    def _ramp(self, moment: datetime, before: float, worst: float, after: float) -> float:
        if moment < self.campaign_doubled:
            return before
        if moment < self.push_at:
            share = (moment - self.campaign_doubled) / (self.push_at - self.campaign_doubled)
            return before + (worst - before) * share
        if moment < self.unpaused_at:
            return worst
        return after

    def read_rate(self, moment: datetime) -> float:
        """Chance that a delivered ``spring_sale`` message is read."""
        return self._ramp(moment, 0.68, 0.34, 0.47)

    def opt_out_rate(self, moment: datetime) -> float:
        """Chance that a customer who reads ``spring_sale`` stops marketing messages."""
        return self._ramp(moment, 0.008, 0.06, 0.02)

    def timeline(self) -> list[tuple[datetime, str]]:
        """What happens when, for people."""
        return [
            (self.experiment_start, "A/B test booking_question starts (single vs split)"),
            (self.campaign_doubled, "spring_sale campaign doubled: read rate falls"),
            (self.wording_change, "order support rewords its order-number question"),
            (self.yellow_at, "spring_sale quality YELLOW"),
            (self.red_at, "spring_sale quality RED after an extra push"),
            (self.paused_at, "spring_sale paused for 3 hours (sends refused: 132015)"),
            (self.paused_at + timedelta(hours=1), "portfolio limit increase deferred"),
            (self.paused_at + timedelta(hours=1, minutes=25), "offers number rating YELLOW"),
            (self.unpaused_at, "spring_sale unpaused, quality YELLOW"),
            (self.end + timedelta(minutes=10), "live: new_arrivals quality YELLOW"),
            (self.end + timedelta(minutes=30), "live: offers number rating GREEN again"),
        ]


def _push(earliest: datetime, latest: datetime, zone: str) -> datetime | None:
    """The first whole hour from ``earliest`` that is office time (10:00 to 16:00 local),
    before ``latest``."""
    moment = earliest.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    while moment < latest:
        if 10 <= moment.astimezone(ZoneInfo(zone)).hour < 16:
            return moment
        moment += timedelta(hours=1)
    return None


def build(start: datetime, end: datetime, zone: str = ZONE) -> Story:
    if end - start < timedelta(hours=12):
        raise ValueError("the story needs at least 12 hours")

    def at(fraction: float) -> datetime:
        moment = start + (end - start) * fraction
        return moment.replace(second=0, microsecond=0)

    push = _push(at(0.45), end - timedelta(hours=6), zone) or at(0.55)
    paused = push + timedelta(minutes=35)
    return Story(
        start=start,
        end=end,
        experiment_start=at(0.2),
        campaign_doubled=at(0.25),
        wording_change=at(0.35),
        yellow_at=at(0.4),
        push_at=push,
        red_at=push + timedelta(minutes=30),
        paused_at=paused,
        unpaused_at=paused + timedelta(hours=3),
    )


def _until(moment: datetime) -> str:
    """Meta's way of saying when a pause ends: ``Apr 25 at 8:07 AM UTC``."""
    return f"{moment:%b} {moment.day} at {moment.hour % 12 or 12}:{moment:%M %p} UTC"


def happenings(world: World, story: Story) -> list[Happening]:
    """Every management webhook and Graph API change of the story, in time order."""
    shop, care, pay = world.wabas
    offers = world.phone("offers")
    found: list[Happening] = []

    def at(fraction: float) -> datetime:
        moment = story.start + (story.end - story.start) * fraction
        return moment.replace(microsecond=0)

    def status(moment: datetime, name: str, event: str, **extra: Any) -> None:
        template = world.template(name)
        value = {
            "event": event,
            "message_template_id": int(template.id),
            "message_template_name": template.name,
            "message_template_language": template.language,
            "reason": extra.pop("reason", "NONE"),
            "message_template_category": template.category,
            **extra,
        }
        found.append(Management(moment, template.waba_id, "message_template_status_update", value))
        graph_status = "APPROVED" if event in ("APPROVED", "REINSTATED") else event
        found.append(
            GraphChange(moment, "template", template.waba_id, template.id, "status", graph_status)
        )
        if event == "REJECTED":
            reason = str(value["reason"])
            found.append(
                GraphChange(
                    moment, "template", template.waba_id, template.id, "rejected_reason", reason
                )
            )

    def quality(moment: datetime, name: str, previous: str, new: str) -> None:
        template = world.template(name)
        value = {
            "previous_quality_score": previous,
            "new_quality_score": new,
            "message_template_id": int(template.id),
            "message_template_name": template.name,
            "message_template_language": template.language,
        }
        found.append(Management(moment, template.waba_id, "message_template_quality_update", value))
        found.append(
            GraphChange(moment, "template", template.waba_id, template.id, "quality_score", new)
        )

    status(at(0.02), "spring_sale", "APPROVED")
    quality(at(0.06), "spring_sale", "UNKNOWN", "GREEN")
    status(
        at(0.05),
        "weekend_flash",
        "REJECTED",
        reason="INVALID_FORMAT",
        rejection_info={
            "reason": "Your template has parameters placed next to each other (like {{1}}{{2}}) "
            "without text or punctuation between them.",
            "recommendation": "Separate parameters with descriptive text.",
        },
    )
    status(at(0.08), "weekend_flash_v2", "APPROVED")
    upgrade = at(0.1)
    for waba in world.wabas:
        found.append(
            Management(
                upgrade,
                waba.id,
                "business_capability_update",
                {"max_daily_conversations_per_business": 10000, "max_phone_numbers_per_waba": 25},
            )
        )
        found.append(GraphChange(upgrade, "waba", waba.id, waba.id, "messaging_limit", "TIER_10K"))
        for phone in waba.phones:
            value = {
                "display_phone_number": phone.display,
                "event": "UPGRADE",
                "old_limit": "TIER_2K",
                "current_limit": "TIER_10K",
                "max_daily_conversations_per_business": "TIER_10K",
            }
            found.append(Management(upgrade, waba.id, "phone_number_quality_update", value))
            found.append(
                GraphChange(upgrade, "phone", waba.id, phone.id, "messaging_limit", "TIER_10K")
            )
    alerts = world.phone("alerts")
    found.append(
        Management(
            at(0.15),
            pay.id,
            "phone_number_name_update",
            {
                "display_phone_number": alerts.display,
                "decision": "APPROVED",
                "requested_verified_name": alerts.name,
                "rejection_reason": None,
            },
        )
    )
    found.append(GraphChange(at(0.15), "phone", pay.id, alerts.id, "name_status", "APPROVED"))
    notice = world.template("shipping_notice")
    announced = at(0.3)
    switch = announced + timedelta(hours=24)
    identity = {
        "message_template_id": int(notice.id),
        "message_template_name": notice.name,
        "message_template_language": notice.language,
    }
    found.append(
        Management(
            announced,
            shop.id,
            "template_category_update",
            {
                **identity,
                "new_category": "UTILITY",
                "correct_category": "MARKETING",
                "category_update_timestamp": int(switch.timestamp()),
            },
        )
    )
    found.append(
        Management(
            switch,
            shop.id,
            "template_category_update",
            {**identity, "previous_category": "UTILITY", "new_category": "MARKETING"},
        )
    )
    found.append(GraphChange(switch, "template", shop.id, notice.id, "category", "MARKETING"))
    quality(story.yellow_at, "spring_sale", "GREEN", "YELLOW")
    quality(story.red_at, "spring_sale", "YELLOW", "RED")
    until = story.paused_at + timedelta(hours=3)
    status(
        story.paused_at,
        "spring_sale",
        "PAUSED",
        other_info={
            "title": "FIRST_PAUSE",
            "description": "Your WhatsApp message template has been paused for 3 hours until "
            f"{_until(until)} because it had issues.",
        },
    )
    found.append(
        Management(
            story.push_at + timedelta(minutes=4),
            shop.id,
            "messages",
            {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": offers.display, "phone_number_id": offers.id},
                "errors": [
                    {
                        "code": 130429,
                        "title": "Rate limit hit",
                        "message": "Rate limit hit",
                        "error_data": {
                            "details": "Message failed to send because there were too many "
                            "messages sent from this phone number in a short period of time"
                        },
                        "href": "/documentation/business-messaging/whatsapp/support/error-codes",
                    }
                ],
            },
        )
    )
    deferred = story.paused_at + timedelta(hours=1)
    found.append(
        Management(
            deferred,
            shop.id,
            "account_alerts",
            {
                "entity_type": "BUSINESS",
                "entity_id": world.business_id,
                "alert_info": {
                    "alert_severity": "WARNING",
                    "alert_status": "ACTIVE",
                    "alert_type": "INCREASED_CAPABILITIES_ELIGIBILITY_DEFERRED",
                    "alert_description": "Your messaging quality was too low to unlock more "
                    f"capabilities at this time for {world.business_name}. Keep using the "
                    "WhatsApp Business Platform and follow our messaging policies.",
                },
            },
        )
    )
    dropped = story.paused_at + timedelta(hours=1, minutes=25)
    found.append(GraphChange(dropped, "phone", shop.id, offers.id, "quality_rating", "YELLOW"))
    status(
        story.unpaused_at,
        "spring_sale",
        "APPROVED",
        other_info={
            "title": "UNPAUSE",
            "description": "Your WhatsApp message template has been unpaused.",
        },
    )
    quality(story.unpaused_at + timedelta(seconds=20), "spring_sale", "RED", "YELLOW")
    clinic = world.phone("clinic")
    found.append(
        Management(
            at(0.8),
            care.id,
            "security",
            {"display_phone_number": clinic.display, "event": "PIN_CHANGED"},
        )
    )
    # live: after the backfill
    quality(story.end + timedelta(minutes=10), "new_arrivals", "GREEN", "YELLOW")
    found.append(
        GraphChange(
            story.end + timedelta(minutes=30),
            "phone",
            shop.id,
            offers.id,
            "quality_rating",
            "GREEN",
        )
    )
    return sorted(found, key=lambda h: h.at)
