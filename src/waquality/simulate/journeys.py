"""How customers move through the business's journeys, one session at a time.

Order support (a bot menu, then an order-number question that confuses people until it is
reworded, hand-offs to agents who work opening hours), appointment booking (the A/B test:
one free-text day-and-time question against a day list and a time choice), campaigns
(marketing templates with quick replies: shop, or stop promotions) and notifications (receipts,
codes, shipping notices). Each function is pure: the same key, random state and customer give
the same items.
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta

from waquality.simulate.script import (
    Conversation,
    Item,
    agent_delay,
    bot_delay,
    lognormal,
)
from waquality.simulate.story import Story
from waquality.simulate.world import (
    BOOKING,
    EXPERIMENT,
    NOTIFICATIONS,
    ORDER_SUPPORT,
    PROMOTIONS,
    Customer,
    Template,
    World,
)

_LANGUAGES = {"346": "es", "4915": "de", "5511": "pt_BR"}


def language(customer: Customer) -> str:
    for prefix, code in _LANGUAGES.items():
        if customer.wa_id.startswith(prefix):
            return code
    return "en_GB"


def template_for(world: World, name: str, customer: Customer) -> Template:
    """The customer's language version of a template, English when there is none."""
    try:
        return world.template(name, language(customer))
    except KeyError:
        return world.template(name)


def arm(seed: int, customer: Customer) -> str:
    """The customer's arm of the booking experiment: sticky, half and half."""
    digest = hashlib.sha256(f"{seed}:{EXPERIMENT.name}:{customer.wa_id}".encode()).digest()
    return EXPERIMENT.arms[digest[0] % 2]


def first(customer: Customer) -> str:
    return customer.name.split()[0]


def _think(rng: random.Random, median: float = 12.0) -> float:
    return 2.0 + lognormal(rng, median, 0.8)


def _typing(rng: random.Random) -> float:
    return 5.0 + lognormal(rng, 22.0, 0.7)


def _hesitation(rng: random.Random) -> float:
    return rng.uniform(300, 2400)


def _confused(
    rng: random.Random, customer: Customer, weights: tuple[int, int, int], leave: int
) -> str:
    """What a confused customer does: asks back, asks for a person, hesitates long, or
    leaves (the impatient ones more often)."""
    leaving = leave * 2 * (1 - customer.patience) + 2
    return rng.choices(("ask", "human", "hesitate", "leave"), (*weights, leaving))[0]


# -- order support ---------------------------------------------------------------------------

_OPENINGS = (
    "Hi, where is my order?",
    "hello",
    "Hi! My parcel hasn't arrived yet",
    "I need help with an order",
    "Hey, can you check my delivery?",
    "I want to return something",
    "good morning",
)
_MENU = (("track", "Track my order"), ("return", "Return an item"), ("agent", "Talk to someone"))
_MENU_TYPED = ("track", "where is my package", "return pls", "menu", "?", "the first one")
_ASK_BEFORE = "Order no.?"
_ASK_AFTER = (
    "Please type the 8-digit order number from your confirmation email (for example 40123456)."
)
_ASK_AGAIN = "It's the 8-digit number in your confirmation email, starting with 4."
_CONFUSED_ORDER = (
    "which number?",
    "where do I find it?",
    "?",
    "I don't have a number",
    "what do you mean",
    "the tracking number or the order one?",
)
_HUMAN = ("can I talk to a person", "agent please", "human", "I want to speak to someone")
_REASONS = (
    ("damaged", "Arrived damaged"),
    ("wrong_size", "Wrong size"),
    ("changed_mind", "Changed my mind"),
    ("other", "Something else"),
)
_AGENT_REPLIES = (
    "Hi {name}, I've checked with the courier: your parcel is at the local depot and goes out "
    "tomorrow morning.",
    "Hi {name}, sorry about that! I've sent a replacement, you'll get a tracking link today.",
    "Hi {name}, thanks for waiting. Your refund was issued and shows in 3-5 working days.",
    "Hi {name}, I can see the problem. I've reordered it at no cost and upgraded the delivery.",
)
_THANKS = ("thanks!", "thank you", "great, thanks", "ok", "perfect 👍", "cheers")


def order_support(
    world: World, story: Story, key: str, rng: random.Random, customer: Customer, start: datetime
) -> list[Item]:
    conv = Conversation(key, rng, world.phone("support"), customer, start, ORDER_SUPPORT)
    conv.says(0, rng.choice(_OPENINGS))
    text = f"Hi {first(customer)}! How can we help?"
    menu = conv.send("bot", "menu", text, delay=bot_delay(rng), kind="interactive")
    choice = None
    for attempt in range(3):
        roll = rng.random()
        if roll < 0.80 - 0.1 * attempt:
            choice = rng.choices(_MENU, (62, 23, 15))[0]
            conv.taps(_think(rng), menu, *choice)
            break
        if roll < 0.95:
            conv.says(_typing(rng), rng.choice(_MENU_TYPED))
            menu = conv.send(
                "bot",
                "menu",
                "Sorry, I didn't get that. Please pick one of the options below.",
                delay=bot_delay(rng),
                kind="interactive",
            )
            continue
        return conv.finish(0.7)
    if choice is None or conv.unreachable:
        return conv.finish(0.6)
    if choice[0] == "track":
        _track(world, story, conv)
    elif choice[0] == "return":
        _return(conv)
    else:
        _handoff(world, conv)
    return conv.finish(0.8)


def _track(world: World, story: Story, conv: Conversation) -> None:
    rng = conv.rng
    reworded = conv.now >= story.wording_change
    confusion = 0.07 if reworded else 0.38
    question = _ASK_AFTER if reworded else _ASK_BEFORE
    conv.send("bot", "ask_order_number", question, delay=bot_delay(rng))
    for attempt in range(3):
        if rng.random() < confusion / (attempt + 1):
            what = _confused(rng, conv.customer, (45, 15, 20), 20)
            if what == "ask":
                conv.says(_typing(rng), rng.choice(_CONFUSED_ORDER))
                conv.send("bot", "ask_order_number", _ASK_AGAIN, delay=bot_delay(rng))
                continue
            if what == "human":
                conv.says(_typing(rng), rng.choice(_HUMAN))
                _handoff(world, conv)
                return
            if what == "leave":
                return
            conv.wait(_hesitation(rng))
        number = f"4{rng.randrange(10**7):07d}"
        conv.says(_typing(rng), rng.choice((number, f"#{number}", f"order {number}")))
        break
    else:
        conv.says(_typing(rng), rng.choice(_HUMAN))
        _handoff(world, conv)
        return
    day = rng.choice(("Tuesday", "Wednesday", "Thursday", "Friday", "Monday"))
    status = conv.send(
        "bot",
        "order_status",
        f"Your order is with the courier and arrives on {day}. Anything else?",
        delay=bot_delay(rng),
        kind="interactive",
    )
    roll = rng.random()
    if roll < 0.72:
        conv.taps(_think(rng), status, "done", "That's all, thanks")
        _close(conv)
    elif roll < 0.86:
        conv.taps(_think(rng), status, "agent", "Talk to someone")
        _handoff(world, conv)


def _return(conv: Conversation) -> None:
    rng = conv.rng
    reasons = conv.send(
        "bot", "return_reason", "Sorry to hear that. Why are you returning it?",
        delay=bot_delay(rng), kind="interactive",
    )  # fmt: skip
    roll = rng.random()
    if roll < 0.05:
        return
    if roll < 0.16:
        conv.sends_image(_typing(rng), rng.choice(("this is how it arrived", "look at this")))
    conv.taps(_think(rng), reasons, *rng.choice(_REASONS), row=True)
    text = "Here is your prepaid return label. Drop the parcel at any post office."
    conv.send("bot", "return_label", text, delay=bot_delay(rng), kind="document")
    _close(conv)


def _close(conv: Conversation) -> None:
    rng = conv.rng
    done = conv.send("bot", "close", "Glad we could help!", delay=bot_delay(rng))
    roll = rng.random()
    if roll < 0.2:
        conv.reacts(_think(rng), done, rng.choice(("👍", "❤️", "🙏")))
    elif roll < 0.38:
        conv.says(_typing(rng), rng.choice(_THANKS))


def _handoff(world: World, conv: Conversation) -> None:
    rng = conv.rng
    text = "I'm passing you to a colleague. We answer Mon-Fri 8-18 and Sat 9-13."
    conv.send("bot", "handoff", text, delay=bot_delay(rng))
    if rng.random() < 0.5:
        conv.says(_typing(rng), rng.choice(("It was due on Monday", "still nothing", "ok")))
    if rng.random() < 0.04:
        return  # nobody picks it up
    conv.wait(agent_delay(rng, conv.now, world.zone))
    reply = rng.choice(_AGENT_REPLIES).format(name=first(conv.customer))
    out = conv.send("agent", "agent_reply", reply)
    if any(s == "failed" and code == 131047 for s, _, code in out.statuses):
        text = "We have an update about your request. Reply to this message to continue."
        template = world.template("agent_followup")
        out = conv.send("agent", "agent_reply", text, delay=rng.uniform(40, 300), template=template)
    if conv.unreachable or rng.random() < 0.35:
        return
    conv.says(_think(rng, 120), rng.choice(_THANKS))
    if rng.random() < 0.5:
        conv.send("agent", "close", "You're welcome, have a nice day!", delay=rng.uniform(20, 200))


# -- appointment booking: the A/B test ------------------------------------------------------

_SERVICES = (
    ("svc_eye", "Eye test"),
    ("svc_lens", "Contact lens fitting"),
    ("svc_repair", "Glasses repair"),
)
_CONFUSED_BOOKING = (
    "what times do you have?",
    "tomorrow?",
    "is Saturday open?",
    "whenever",
    "I don't know, what's free?",
    "?",
)
_DAY_TIME = ("Tuesday 3pm", "tomorrow at 10", "Friday morning", "Monday 11:30", "Thu 4pm")
_TIMES = (("t_0930", "Morning"), ("t_1300", "Afternoon"), ("t_1700", "Evening"))


def booking(
    world: World,
    story: Story,
    key: str,
    rng: random.Random,
    customer: Customer,
    start: datetime,
    seed: int,
) -> list[Item]:
    conv = Conversation(key, rng, world.phone("bookings"), customer, start, BOOKING)
    if rng.random() < 0.35:  # the business invites, the customer may take it up
        invite = template_for(world, "booking_invite", customer)
        text = f"Hi {first(customer)}, it's time for your yearly eye test. Book a visit?"
        out = conv.send("bot", "invite", text, template=invite, logged=False)
        if conv.unreachable or rng.random() > 0.45:
            return conv.finish(0.75, 3600)
        conv.presses(lognormal(rng, 1800, 1.2), out, "book_now", "Book now")
    else:
        conv.says(0, rng.choice(("Hi, I'd like to book an eye test", "appointment please", "hi")))
    services = conv.send(
        "bot", "choose_service", "What would you like to book?",
        delay=bot_delay(rng), kind="interactive",
    )  # fmt: skip
    roll = rng.random()
    if roll < 0.04:
        return conv.finish(0.6)
    if roll < 0.1:
        conv.says(_typing(rng), "eye test")
        services = conv.send(
            "bot", "choose_service", "Please choose from the list.",
            delay=bot_delay(rng), kind="interactive",
        )  # fmt: skip
    service = rng.choice(_SERVICES)
    conv.taps(_think(rng), services, *service, row=True)
    chosen = arm(seed, customer) if conv.now >= story.experiment_start else None
    if chosen is not None:
        conv.experiments = ((EXPERIMENT.name, chosen),)
    split = chosen == EXPERIMENT.arms[1]
    answered = _day_and_time_split(world, conv) if split else _day_and_time_single(world, conv)
    if not answered:
        return conv.finish(0.6)
    when = start + timedelta(days=rng.randrange(1, 6))
    confirm = conv.send(
        "bot", "confirm", f"{service[1]} on {when:%a %d %b} at {answered}. Shall we book it?",
        delay=bot_delay(rng), kind="interactive",
    )  # fmt: skip
    roll = rng.random()
    if roll < 0.05:
        return conv.finish(0.6)
    conv.taps(_think(rng), confirm, "confirm_yes", "Yes, book it")
    conv.send(
        "bot", "booked", "You're booked! We'll remind you the day before.", delay=bot_delay(rng)
    )
    if rng.random() < 0.25:
        conv.says(_typing(rng), rng.choice(_THANKS))
    items = conv.finish(0.8)
    reminder = (when - timedelta(days=1)).replace(hour=9, minute=0)
    if reminder <= conv.now:  # booked for tomorrow: no reminder
        return items
    return items + _reminder(world, key, rng, customer, reminder, conv.experiments)


def _day_and_time_single(world: World, conv: Conversation) -> str | None:
    """The badly worded variant: one free-text question for the day and the time."""
    rng = conv.rng
    conv.send("bot", "ask_day_time", "When would you like to come in?", delay=bot_delay(rng))
    for attempt in range(3):
        if rng.random() < 0.45 / (1 + attempt * 0.5):
            what = _confused(rng, conv.customer, (50, 10, 15), 25)
            if what == "ask":
                conv.says(_typing(rng), rng.choice(_CONFUSED_BOOKING))
                text = "Please tell us a day and a time, for example Tuesday 3pm."
                conv.send("bot", "ask_day_time", text, delay=bot_delay(rng))
                continue
            if what == "human":
                conv.says(_typing(rng), "can someone call me?")
                _handoff(world, conv)
                return None
            if what == "leave":
                return None
            conv.wait(_hesitation(rng))
        conv.says(_typing(rng), rng.choice(_DAY_TIME))
        return rng.choice(("10:00", "11:30", "15:00", "16:00"))
    return None


def _day_and_time_split(world: World, conv: Conversation) -> str | None:
    """The split variant: a list of days, then three time buttons."""
    rng = conv.rng
    days = conv.send(
        "bot", "choose_day", "Which day suits you?", delay=bot_delay(rng), kind="interactive"
    )
    if rng.random() < 0.05:
        return None
    day = conv.now + timedelta(days=rng.randrange(1, 6))
    conv.taps(_think(rng), days, f"day_{day:%Y%m%d}", f"{day:%A %d %b}", row=True)
    times = conv.send(
        "bot", "choose_time", "Morning, afternoon or evening?",
        delay=bot_delay(rng), kind="interactive",
    )  # fmt: skip
    if rng.random() < 0.04:
        return None
    chosen = rng.choice(_TIMES)
    conv.taps(_think(rng), times, *chosen)
    return f"{chosen[0][2:4]}:{chosen[0][4:]}"


def _reminder(
    world: World,
    key: str,
    rng: random.Random,
    customer: Customer,
    at: datetime,
    experiments: tuple[tuple[str, str], ...],
) -> list[Item]:
    moment = at + timedelta(seconds=rng.uniform(0, 1800))
    conv = Conversation(key + "/reminder", rng, world.phone("bookings"), customer, moment, BOOKING)
    conv.experiments = experiments
    template = template_for(world, "appointment_reminder", customer)
    out = conv.send("bot", "reminder", "Reminder: your appointment is tomorrow.", template=template)
    if not conv.unreachable and rng.random() < 0.55:
        conv.presses(lognormal(rng, 1500, 1.0), out, "confirm", "I'll be there")
        conv.send("bot", "reminder", "Thanks, see you tomorrow!", delay=bot_delay(rng))
    return conv.finish(0.85, 2400)


# -- campaigns and notifications -------------------------------------------------------------


def campaign(
    world: World,
    story: Story,
    key: str,
    rng: random.Random,
    customer: Customer,
    at: datetime,
    name: str,
    stopped: bool,
) -> tuple[list[Item], bool]:
    """One campaign message to one customer; returns its items and whether the customer now
    wants no more promotions. ``stopped``: they already stopped marketing messages in WhatsApp
    (the business's list still has them: the send fails with 131050)."""
    conv = Conversation(key, rng, world.phone("offers"), customer, at, PROMOTIONS)
    template = template_for(world, name, customer)
    sale = name == "spring_sale"
    if sale and story.paused(at):
        conv.refuse("campaign", "offer", template, 132015)
        return conv.items, False
    if rng.random() < (0.004 if story.push_at <= at < story.push_at + timedelta(hours=1) else 0):
        conv.refuse("campaign", "offer", template, 130429)
        return conv.items, False
    failure = None
    pressure = sale and story.doubled(at)
    if stopped:
        failure = 131050
    elif rng.random() < (0.055 if pressure else 0.025):
        failure = 131049
    elif pressure and at >= story.push_at and rng.random() < 0.015:
        failure = 131048
    text = "Spring sale: 30% off everything until Sunday!" if sale else "New in: our summer range"
    out = conv.send("campaign", "offer", text, template=template, logged=False, failure=failure)
    if failure is not None or conv.unreachable:
        return conv.items, False
    read = story.read_rate(at) if sale else 0.7
    quits = story.opt_out_rate(at) if sale else 0.004
    if rng.random() >= read:
        return conv.finish(0.0), False
    roll = rng.random()
    wait = lognormal(rng, 1500, 1.3)
    if roll < quits:
        conv.presses(wait, out, "stop_promos", "Stop promotions")
        text = "Done: you won't get promotions from us any more."
        conv.send("bot", "unsubscribed", text, delay=bot_delay(rng))
        return conv.finish(0.9), True
    if roll < quits * 3:  # most who are fed up use WhatsApp's own control
        conv.wait(wait)
        out.read_at(conv.now)
        conv.stops_marketing(rng.uniform(3, 40))
        return conv.items, False
    if roll < quits * 3 + 0.07:
        conv.presses(wait, out, "shop_now", "Shop now")
        text = "Here you go: https://shop.lumen.example/spring"
        conv.send("bot", "shop_link", text, delay=bot_delay(rng))
        return conv.finish(0.9), False
    conv.wait(wait)
    out.read_at(conv.now)
    return conv.items, False


_NOTICES = {
    "payment_receipt": ("alerts", "Payment of £{amount} to {shop} received."),
    "verification_code": ("alerts", "{code} is your verification code."),
    "order_confirmation": ("support", "Thanks for your order {order}!"),
    "shipping_notice": ("support", "Your order {order} has shipped."),
}
_SHOPS = ("Lumen Shop", "Corner Café", "City Books", "Metro Transport", "Fresh Market")


def notification(
    world: World, key: str, rng: random.Random, customer: Customer, at: datetime, name: str
) -> list[Item]:
    role, text = _NOTICES[name]
    conv = Conversation(key, rng, world.phone(role), customer, at, NOTIFICATIONS)
    body = text.format(
        amount=f"{rng.uniform(3, 180):.2f}",
        shop=rng.choice(_SHOPS),
        code=f"{rng.randrange(10**6):06d}",
        order=f"4{rng.randrange(10**7):07d}",
    )
    template = template_for(world, name, customer)
    conv.send("bot", name, body, template=template, logged=rng.random() < 0.5)
    if not conv.unreachable and name == "shipping_notice" and rng.random() < 0.04:
        conv.says(lognormal(rng, 1200, 1.0), rng.choice(("thanks", "when will it arrive?")))
        return conv.finish(0.9)
    return conv.finish(0.82 if name != "verification_code" else 0.97, 300)


def unsupported(
    world: World, key: str, rng: random.Random, customer: Customer, at: datetime
) -> list[Item]:
    """A customer sends something the platform cannot pass on (a poll, a new message kind)."""
    conv = Conversation(key, rng, world.phone("support"), customer, at, ORDER_SUPPORT)
    conv.sends_unsupported(0)
    conv.send(
        "bot", "menu", "Sorry, we can't open that here. How can we help?",
        delay=bot_delay(rng), kind="interactive",
    )  # fmt: skip
    return conv.finish(0.7)
