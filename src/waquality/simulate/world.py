"""The simulated business, all of it from a seed: a portfolio of three WABAs (a shop, an
optician's care service, a payments service), their phone numbers and dozens of templates, the
customers, the journeys they move through and the A/B experiment that runs on one of them."""

from __future__ import annotations

import random
from dataclasses import dataclass

ZONE = "Europe/London"  # where the business and most of its customers live
BUSINESS_NAME = "Lumen Retail Group"

# Journeys and their steps, as the bot tags its messages (``j`` and ``t`` of the callback tags).
ORDER_SUPPORT = "order_support"
BOOKING = "appointment_booking"
PROMOTIONS = "promotions"
NOTIFICATIONS = "notifications"


@dataclass(frozen=True, slots=True)
class Journey:
    name: str
    phone_role: str  # the number it runs on
    steps: tuple[str, ...]  # in the order the business planned them
    goal: str  # the step that means the customer did what the business wanted


@dataclass(frozen=True, slots=True)
class Experiment:
    """An A/B test: ``arms[0]`` asks ``step`` as one question, ``arms[1]`` splits it in two."""

    name: str
    journey: str
    step: str
    arms: tuple[str, str]


JOURNEYS = (
    Journey(
        ORDER_SUPPORT,
        "support",
        (
            "menu",
            "ask_order_number",
            "order_status",
            "return_reason",
            "return_label",
            "handoff",
            "agent_reply",
            "close",
        ),
        "close",
    ),
    Journey(
        BOOKING,
        "bookings",
        (
            "invite",
            "choose_service",
            "ask_day_time",
            "choose_day",
            "choose_time",
            "confirm",
            "booked",
            "reminder",
        ),
        "booked",
    ),
    Journey(PROMOTIONS, "offers", ("offer", "shop_link", "unsubscribed"), "shop_link"),
)
EXPERIMENT = Experiment("booking_question", BOOKING, "ask_day_time", ("single", "split"))


@dataclass(frozen=True, slots=True)
class Phone:
    id: str
    display: str  # digits, as webhooks carry it
    formatted: str  # as the Graph API prints it
    name: str  # the verified name
    waba_id: str
    role: str  # support, offers, bookings, clinic, alerts


@dataclass(frozen=True, slots=True)
class Template:
    id: str
    name: str
    language: str
    category: str  # MARKETING, UTILITY, AUTHENTICATION
    waba_id: str
    status: str  # at the start of the simulation
    quality: str  # GREEN, YELLOW, RED, UNKNOWN


@dataclass(frozen=True, slots=True)
class Waba:
    id: str
    name: str
    phones: tuple[Phone, ...]
    templates: tuple[Template, ...]


@dataclass(frozen=True, slots=True)
class Customer:
    wa_id: str
    name: str
    reachable: bool  # False: no longer on WhatsApp (messages fail with 131026)
    receipts: bool  # read receipts switched on
    marketing: bool  # in the marketing audience
    patience: float  # 0..1: how readily they wait, retry and answer again
    stopped: bool = False  # stopped marketing messages in WhatsApp before the simulation


@dataclass(frozen=True, slots=True)
class World:
    seed: int
    zone: str
    business_id: str
    business_name: str
    wabas: tuple[Waba, ...]
    customers: tuple[Customer, ...]
    journeys: tuple[Journey, ...] = JOURNEYS
    experiment: Experiment = EXPERIMENT

    def phone(self, role: str) -> Phone:
        found = [p for p in self.phones if p.role == role]
        if not found:
            raise KeyError(f"no phone number for {role!r}")
        return found[0]

    def template(self, name: str, language: str = "en_GB") -> Template:
        found = [t for t in self.templates if t.name == name and t.language == language]
        if not found:
            raise KeyError(f"no template {name!r} in {language!r}")
        return found[0]

    def waba(self, waba_id: str) -> Waba:
        found = [w for w in self.wabas if w.id == waba_id]
        if not found:
            raise KeyError(f"no WABA {waba_id!r}")
        return found[0]

    @property
    def phones(self) -> tuple[Phone, ...]:
        return tuple(p for w in self.wabas for p in w.phones)

    @property
    def templates(self) -> tuple[Template, ...]:
        return tuple(t for w in self.wabas for t in w.templates)


# (name, category, languages, status and quality at the start)
_TemplateSpec = tuple[str, str, tuple[str, ...], str, str]
_GB = ("en_GB",)
_WABAS: tuple[tuple[str, tuple[tuple[str, str], ...], tuple[_TemplateSpec, ...]], ...] = (
    (
        "Lumen Shop",
        (("support", "Lumen Shop Support"), ("offers", "Lumen Shop Offers")),
        (
            ("spring_sale", "MARKETING", _GB, "PENDING", "UNKNOWN"),
            ("new_arrivals", "MARKETING", ("en_GB", "es", "de"), "APPROVED", "GREEN"),
            ("weekend_flash", "MARKETING", _GB, "PENDING", "UNKNOWN"),
            ("weekend_flash_v2", "MARKETING", _GB, "PENDING", "UNKNOWN"),
            ("back_in_stock", "MARKETING", ("en_GB", "de"), "APPROVED", "GREEN"),
            ("feedback_request", "MARKETING", _GB, "APPROVED", "GREEN"),
            ("order_confirmation", "UTILITY", ("en_GB", "es", "de", "fr"), "APPROVED", "GREEN"),
            ("shipping_notice", "UTILITY", ("en_GB", "es", "de", "fr"), "APPROVED", "GREEN"),
            ("delivery_delayed", "UTILITY", ("en_GB", "es"), "APPROVED", "GREEN"),
            ("return_label", "UTILITY", _GB, "APPROVED", "GREEN"),
            ("agent_followup", "UTILITY", _GB, "APPROVED", "GREEN"),
        ),
    ),
    (
        "Lumen Care",
        (("bookings", "Lumen Care Bookings"), ("clinic", "Lumen Care Clinic")),
        (
            ("appointment_reminder", "UTILITY", ("en_GB", "es"), "APPROVED", "GREEN"),
            ("booking_invite", "UTILITY", _GB, "APPROVED", "GREEN"),
            ("appointment_confirmed", "UTILITY", ("en_GB", "es"), "APPROVED", "GREEN"),
            ("appointment_cancelled", "UTILITY", _GB, "APPROVED", "GREEN"),
            ("eye_test_due", "MARKETING", _GB, "APPROVED", "YELLOW"),
            ("login_code", "AUTHENTICATION", _GB, "APPROVED", "GREEN"),
        ),
    ),
    (
        "Lumen Pay",
        (("alerts", "Lumen Pay Alerts"),),
        (
            ("payment_receipt", "UTILITY", ("en_GB", "es", "de"), "APPROVED", "GREEN"),
            ("card_blocked", "UTILITY", _GB, "APPROVED", "GREEN"),
            (
                "verification_code",
                "AUTHENTICATION",
                ("en_GB", "es", "de", "fr", "pt_BR"),
                "APPROVED",
                "GREEN",
            ),
            ("cashback_offer", "MARKETING", _GB, "REJECTED", "UNKNOWN"),
        ),
    ),
)

# Customers' numbers: country prefixes with the digits that follow, weighted.
_REGIONS = (("447", 9, 60), ("346", 8, 12), ("4915", 9, 10), ("3538", 8, 10), ("5511", 9, 8))
_FIRST = (
    "Amelia Oliver Isla George Ava Noah Mia Leo Ivy Arthur Freya Oscar Lily Harry Grace Jack "
    "Sofia Charlie Ella Henry Aisha Mohammed Zara Ravi Chloe Lucas Emily Mateo Hannah Jonas "
    "Lucía Pablo Niamh Seán Ana João Beatriz Priya Tom Ruby"
)
_LAST = "ABCDEFGHJKLMNOPRSTW"


def build(seed: int = 1, customers: int = 3000) -> World:
    """The business and ``customers`` customers, the same for the same arguments."""
    if customers < 10:
        raise ValueError("at least 10 customers")
    rng = random.Random(f"world:{seed}")
    used: set[str] = set()

    def new_id(digits: int = 15) -> str:
        while (value := str(rng.randrange(10 ** (digits - 1), 10**digits))) in used:
            pass
        used.add(value)
        return value

    business_id = new_id()
    wabas = []
    number = 100
    for name, phones, specs in _WABAS:
        waba_id = new_id()
        made_phones = []
        for role, verified in phones:
            number += rng.randrange(1, 40)
            made_phones.append(
                Phone(
                    id=new_id(),
                    display=f"447700900{number:03d}",
                    formatted=f"+44 7700 900{number:03d}",
                    name=verified,
                    waba_id=waba_id,
                    role=role,
                )
            )
        templates = [
            Template(new_id(16), t_name, language, category, waba_id, status, quality)
            for t_name, category, languages, status, quality in specs
            for language in languages
        ]
        wabas.append(Waba(waba_id, name, tuple(made_phones), tuple(templates)))
    return World(
        seed=seed,
        zone=ZONE,
        business_id=business_id,
        business_name=BUSINESS_NAME,
        wabas=tuple(wabas),
        customers=_customers(rng, customers),
    )


def _customers(rng: random.Random, count: int) -> tuple[Customer, ...]:
    seen: set[str] = set()
    found: list[Customer] = []
    prefixes = [r[0] for r in _REGIONS]
    weights = [r[2] for r in _REGIONS]
    lengths = {r[0]: r[1] for r in _REGIONS}
    names = _FIRST.split()
    while len(found) < count:
        prefix = rng.choices(prefixes, weights)[0]
        wa_id = prefix + "".join(str(rng.randrange(10)) for _ in range(lengths[prefix]))
        if wa_id in seen:
            continue
        seen.add(wa_id)
        marketing = rng.random() < 0.7
        found.append(
            Customer(
                wa_id=wa_id,
                name=f"{rng.choice(names)} {rng.choice(_LAST)}.",
                reachable=rng.random() > 0.012,
                receipts=rng.random() > 0.12,
                marketing=marketing,
                patience=rng.betavariate(4, 2),
                stopped=marketing and rng.random() < 0.03,
            )
        )
    return tuple(found)
