"""Signal rules: the config file's tables, the built-in rules, and the evaluator end to end on a
real database — messages through the tracker, alerts, notifications and events out."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select

from receiver import Receiver, receiving
from waquality.alerting.book import Alerting, Timed, alerts, record
from waquality.alerting.channels import channels
from waquality.alerting.dispatch import Dispatcher
from waquality.alerting.rules import Severity, Signal
from waquality.alerting.signal_check import SignalEvaluator
from waquality.alerting.signal_rules import BUILT_IN_NAMES, SignalRuleConfig
from waquality.analyse.signals import Metric
from waquality.api.schemas import EventOut
from waquality.config import Settings, load_settings
from waquality.domain.enums import MessageStatus
from waquality.domain.messages import Inbound, Item, Outbound, Status
from waquality.errors import ConfigError
from waquality.store import queries, schema
from waquality.store.database import Database
from waquality.store.tracker import Tracker, TrackerConfig

PHONE = "106540352242922"
OTHER_PHONE = "106540352242923"
WABA = "102290129340398"
TODAY = datetime(2026, 3, 9, tzinfo=UTC)  # a Monday
H = timedelta(hours=1)
M = timedelta(minutes=1)


def settings_with(tmp_path: Path, toml: str = "") -> Settings:
    config = tmp_path / "waquality.toml"
    config.write_text(toml)
    return load_settings({"WAQUALITY_CONFIG": str(config)})


def rules_of(tmp_path: Path, toml: str) -> dict[str, SignalRuleConfig]:
    return {r.name: r for r in settings_with(tmp_path, toml).signal_rules}


def problem(tmp_path: Path, toml: str) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_with(tmp_path, toml)
    return str(caught.value)


# -- the config file -----------------------------------------------------------------------------


def test_the_built_in_rules_are_on_by_default(tmp_path: Path) -> None:
    rules = rules_of(tmp_path, "")
    assert (
        set(rules)
        == BUILT_IN_NAMES
        == {
            "response_time_peak",
            "spam_rate_failures",
            "marketing_limit_rising",
            "read_rate_falling",
            "opt_outs_peak",
        }
    )
    assert all(r.enabled and r.per == ["phone_number_id"] for r in rules.values())
    assert rules["spam_rate_failures"].severity == "critical"
    peak = rules["response_time_peak"].rule()
    assert (peak.metric, peak.factor, peak.above, peak.window, peak.lag) == (
        Metric.FIRST_RESPONSE_P90,
        2.0,
        300.0,
        1,
        1,
    )
    read = rules["read_rate_falling"].rule()
    assert (read.factor, read.window, read.lag, read.least) == (0.7, 3, 2, 100)
    assert all(rules[name].description for name in rules)


def test_built_in_rules_are_turned_off_or_changed_by_name(tmp_path: Path) -> None:
    rules = rules_of(
        tmp_path,
        """
[[signal_rules]]
name = "read_rate_falling"
enabled = false

[[signal_rules]]
name = "response_time_peak"
factor = 3
above = "10m"
severity = "critical"

[[signal_rules]]
name = "slow_agents"
metric = "response_p90"
above = "10m"
for = "1h"
sender = "agent"
per = ["phone_number_id"]
min_count = 30
labels = { team = "support" }
summary = "{scope}: agents answer in {value} ({count} replies)"
""",
    )
    assert not rules["read_rate_falling"].enabled
    changed = rules["response_time_peak"]
    assert (changed.metric, changed.factor, changed.above, changed.severity) == (
        Metric.FIRST_RESPONSE_P90,
        3.0,
        600.0,
        "critical",
    )
    own = rules["slow_agents"].rule()
    assert (own.above, own.held, own.window, own.least) == (600.0, 1, 1, 30)
    assert rules["slow_agents"].dimensions == ("phone_number_id", "sender")
    # validated rules read back to themselves (turned-off ones stay off)
    assert SignalRuleConfig.effective(list(rules.values())) == list(rules.values())


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('metric = "response_p95"\nabove = 1', "unknown metric 'response_p95': expected one of"),
        ('metric = "response_p90"\nabove = "10m"\nwindow = "30m"', "must be whole hours"),
        ('metric = "response_p90"\nabove = "10m"\nfor = "90m"', "must be whole hours"),
        ('metric = "response_p90"\nabove = "10m"\nwindow = "8d"', "window must be from 1h to 7d"),
        ('metric = "response_p90"\nabove = "10m"\ntemplate = "promo"', "has no template"),
        ('metric = "opt_outs"\nabove = 5\nper = ["template"]', "opt_outs has no template"),
        ('metric = "read_rate"\nbelow = 0.5\nsender = "bot"', "read_rate has no sender"),
        ('metric = "read_rate"\nbelow = 0.5\nsender = "robot"', "sender: expected one of"),
        ('metric = "errors"\nabove = 0', "needs code"),
        ('metric = "read_rate"\nbelow = 0.5\ncode = 131049', "code is only for"),
        ('metric = "read_rate"', "give above or below"),
        ('metric = "read_rate"\nabove = 0.9\nbelow = 0.5', "give above or below"),
        ('metric = "read_rate"\nbelow = 5', "expected a share between 0 and 1"),
        ('metric = "read_rate"\nfactor = 1', "factor must be above 1"),
        ('metric = "read_rate"\nfactor = 0.5\nabove = 0.2', "a fall (factor below 1)"),
        ('metric = "read_rate"\nbelow = 0.5\nbaseline_days = 7', "baseline_days goes with"),
        ('metric = "opt_outs"\nfactor = 0.5', "opt_outs is a count"),
        (
            'metric = "read_rate"\nbelow = 0.5\nper = ["phone_number_id"]\nphone_number_id = "1"',
            "both in per and given",
        ),
        (
            'metric = "read_rate"\nbelow = 0.5\nsummary = "{scope} {p95}"',
            "unknown placeholders p95",
        ),
        ('metric = "read_rate"\nbelow = 0.5\nlabels = { rule = "x" }', "labels may not set rule"),
        ('metric = "read_rate"\nbelow = 0.5\nthreshold = 2', "threshold: unknown field"),
        ('metric = ["read_rate"]\nbelow = 0.5', "unknown metric ['read_rate']"),
        (
            'metric = "read_rate"\nbelow = 0.5\nenabled = "yes"',
            "enabled: Input should be a valid boolean",
        ),
        ('metric = "read_rate"\nbelow = 0.5\nper = ["waba_id"]', "per.0: Input should be"),
    ],
)
def test_a_wrong_rule_stops_start_up_with_its_name(
    tmp_path: Path, table: str, expected: str
) -> None:
    message = problem(tmp_path, f'[[signal_rules]]\nname = "mine"\n{table}\n')
    assert "WAQUALITY_SIGNAL_RULES" in message and "rule 'mine'" in message
    assert expected in message


def test_thresholds_are_read_in_the_metric_unit_and_names_are_unique(tmp_path: Path) -> None:
    rules = rules_of(
        tmp_path,
        """
[[signal_rules]]
name = "failing"
metric = "failure_rate"
above = "2.5%"

[[signal_rules]]
name = "slow"
metric = "first_response_mean"
above = 90
""",
    )
    assert rules["failing"].above == pytest.approx(0.025)
    assert rules["slow"].above == 90.0
    twice = '[[signal_rules]]\nname = "a"\nmetric = "read_rate"\nbelow = 0.5\n'
    assert "rule names must be unique: a" in problem(tmp_path, twice * 2)
    broken = '[[signal_rules]]\nname = "response_time_peak"\nmetric = "nope"\n'
    assert "rule 'response_time_peak'" in problem(tmp_path, broken)


# -- end to end ----------------------------------------------------------------------------------


def conversations(day: datetime, hour: int, reply: timedelta, count: int, tag: str) -> list[Item]:
    """``count`` customers who write in that hour and get a first reply after ``reply``."""
    items: list[Item] = []
    for i in range(count):
        at = day + hour * H + timedelta(minutes=i % 50, seconds=i)
        customer = f"1650{tag}{i:04d}"
        items.append(Inbound(f"wamid.{tag}.{i}.in", PHONE, customer, at, "text", None, None))
        items.append(
            Status(f"wamid.{tag}.{i}.out", PHONE, customer, MessageStatus.SENT, at + reply)
        )
    return items


def feed(db: Database, items: list[Item], now: datetime, zone: str = "UTC") -> None:
    with db.write() as conn:
        Tracker(db, TrackerConfig(zone=zone)).apply(conn, items, now)


def add_phone(db: Database) -> None:
    with db.write() as conn:
        conn.execute(
            insert(schema.phone_numbers).values(
                phone_number_id=PHONE,
                display_phone_number="15550783881",
                waba_id=WABA,
                verified_name="Lucky Shrub",
                updated_at=TODAY,
                as_of={},
            )
        )


def outbox(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        n = schema.notifications
        return [dict(r._mapping) for r in conn.execute(select(n).order_by(n.c.id))]


def tracker_events(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        page = queries.events(  # what GET /api/v1/events answers
            conn,
            field="signals",
            waba_id=None,
            kind=None,
            subject_kind=None,
            subject_id=None,
            since=None,
            until=None,
            limit=100,
            cursor=None,
        )
    return list(reversed(page.items))


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def alerting_to(
    receiver: Receiver, clock: Clock, db: Database
) -> Iterator[tuple[Alerting, Dispatcher]]:
    receivers = channels([f"json://{receiver.url}/hook"])
    dispatcher = Dispatcher(db, receivers, clock=clock)
    try:
        yield Alerting(tuple(receivers), "https://waq.example"), dispatcher
    finally:
        dispatcher.close()


def test_a_response_time_peak_fires_notifies_and_resolves(db: Database, tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    add_phone(db)
    # a week of normal mornings: first replies within one to two minutes, at 10:00 and 11:00
    for day in range(1, 8):
        past = TODAY - day * timedelta(days=1)
        for hour in (10, 11):
            feed(
                db,
                conversations(past, hour, timedelta(seconds=60 + 8 * day), 30, f"{day}{hour}"),
                past + 12 * H,
            )
    # this morning at 10:00, the replies take a quarter of an hour
    feed(db, conversations(TODAY, 10, timedelta(minutes=15), 30, "0010"), TODAY + 11 * H)
    clock = Clock(TODAY + 11 * H + timedelta(minutes=5))
    with receiving(Receiver()) as r, alerting_to(r, clock, db) as (alerting, dispatcher):
        evaluator = SignalEvaluator(db, settings.signal_rules, alerting, settings.time_zone)
        assert evaluator.run(clock.now) == 1
        [alert] = alerts(db)
        assert alert["state"] == "firing" and alert["severity"] == "warning"
        assert alert["labels"] == {"rule": "response_time_peak", "phone_number_id": PHONE}
        summary = alert["summary"]
        assert summary.startswith("+15550783881 (Lucky Shrub): first-response p90 15m")
        assert "in the hour to 11:00 UTC" in summary
        assert "× the 7-day median of 1m" in summary and summary.endswith("(30 first responses)")
        assert alert["description"].startswith("First replies take longer than usual (15m")
        assert "against 1m 33s, the same hours over the last 7 days" in alert["description"]
        [note] = outbox(db)
        assert (note["status"], note["state"]) == ("firing", "pending")
        [fired] = tracker_events(db)
        assert fired["source"] == "tracker" and fired["kind"] == "response_time_peak:firing"
        assert (fired["waba_id"], fired["subject_kind"], fired["subject_id"]) == (
            WABA,
            "phone_number",
            PHONE,
        )
        assert fired["value"]["summary"] == summary and fired["value"]["count"] == 30
        assert fired["value"]["ratio"] > 7
        EventOut.model_validate(fired)
        # the next minutes change nothing: no second alert, notification or event
        clock.now += timedelta(minutes=1)
        assert evaluator.run(clock.now) == 0
        assert len(outbox(db)) == 1 and len(tracker_events(db)) == 1
        # the warning waits for its group, then goes out
        clock.now += timedelta(seconds=30)
        assert dispatcher.run_once() == 1
        [told] = r.wait(1)
        assert told.body["title"] == f"[WARNING] {summary}"
        # the 11:00 hour is back to normal: resolved once that hour is judged
        feed(db, conversations(TODAY, 11, timedelta(seconds=75), 30, "0011"), TODAY + 12 * H)
        clock.now = TODAY + 12 * H + timedelta(minutes=2)
        assert evaluator.run(clock.now) == 1
        [alert] = alerts(db)
        assert alert["state"] == "resolved" and alert["resolved_at"] == clock.now
        assert alert["summary"].startswith("+15550783881 (Lucky Shrub): first-response p90 1m")
        assert "(7-day median 1m" in alert["summary"]
        assert [n["status"] for n in outbox(db)] == ["firing", "resolved"]
        assert [e["kind"] for e in tracker_events(db)] == [
            "response_time_peak:firing",
            "response_time_peak:resolved",
        ]
        assert evaluator.run(clock.now + timedelta(minutes=1)) == 0
        assert dispatcher.run_once() == 1
        assert r.wait(2)[1].body["title"].startswith("[RESOLVED] +15550783881")


def test_spam_rate_failures_page_at_once_and_resolve_a_day_later(
    db: Database, tmp_path: Path
) -> None:
    settings = settings_with(tmp_path)
    failed_at = TODAY + 10 * H + timedelta(minutes=3)
    items: list[Item] = [
        Status("wamid.s1", OTHER_PHONE, "16505550001", MessageStatus.SENT, failed_at),
        Status("wamid.s1", OTHER_PHONE, "16505550001", MessageStatus.FAILED, failed_at, (131048,)),
        Outbound(
            "refused-1",
            OTHER_PHONE,
            "16505550002",
            failed_at,
            "template",
            "promo",
            error_code=131048,
        ),
    ]
    feed(db, items, failed_at)
    clock = Clock(failed_at + timedelta(minutes=1))
    with receiving(Receiver()) as r, alerting_to(r, clock, db) as (alerting, dispatcher):
        evaluator = SignalEvaluator(db, settings.signal_rules, alerting, settings.time_zone)
        assert evaluator.run(clock.now) == 1
        [alert] = alerts(db)
        assert alert["rule"] == "spam_rate_failures" and alert["severity"] == "critical"
        assert alert["labels"]["phone_number_id"] == OTHER_PHONE
        assert alert["summary"] == (
            f"number {OTHER_PHONE}: 2 failures with 131048 over the last 24 hours"
        )
        assert dispatcher.run_once() == 1  # critical: no group wait
        assert r.wait(1)[0].body["title"].startswith("[CRITICAL] number")
        [fired] = tracker_events(db)
        assert fired["waba_id"] is None and fired["kind"] == "spam_rate_failures:firing"
        assert evaluator.run(failed_at + 23 * H) == 0
        assert evaluator.run(TODAY + 34 * H + timedelta(minutes=1)) == 1
        [alert] = alerts(db)
        assert alert["state"] == "resolved"
        assert alert["summary"] == (
            f"number {OTHER_PHONE}: 0 failures with 131048 over the last 24 hours"
        )
    assert [e["kind"] for e in tracker_events(db)] == [
        "spam_rate_failures:firing",
        "spam_rate_failures:resolved",
    ]


def test_windows_are_hours_of_the_configured_time_zone(db: Database, tmp_path: Path) -> None:
    zone = "Asia/Kolkata"  # UTC+05:30: its hours start at half past, in UTC
    settings = settings_with(
        tmp_path,
        """
time_zone = "Asia/Kolkata"
[[signal_rules]]
name = "failing"
metric = "failure_rate"
above = "20%"
delay = "1h"
min_count = 2
""",
    )
    sent = TODAY + 10 * H + 40 * M  # 16:10 in Kolkata
    items: list[Item] = [
        Outbound(f"r-{i}", PHONE, "16505550002", sent, "template", "promo", error_code=132015)
        for i in range(3)
    ]
    feed(db, items, sent, zone)
    evaluator = SignalEvaluator(db, settings.signal_rules, Alerting(), settings.time_zone)
    assert evaluator.run(TODAY + 11 * H + 25 * M) == 0  # 16:55: the 16:00 hour is in progress
    assert evaluator.run(TODAY + 11 * H + 35 * M) == 1  # 17:05: it is complete
    [alert] = alerts(db)
    assert alert["summary"] == (
        "all numbers: failure rate 100.0% in the hour to 17:00 IST, above 20.0% "
        "(3 outbound messages)"
    )
    assert alert["labels"] == {"rule": "failing"}
    assert evaluator.run(TODAY + 12 * H + 35 * M) == 1  # 18:05: the 17:00 hour sent nothing
    assert "too few outbound messages in the hour to 18:00 IST" in alerts(db)[0]["summary"]


def test_a_rule_turned_off_resolves_its_alerts(db: Database, tmp_path: Path) -> None:
    failed_at = TODAY + 10 * H
    feed(
        db,
        [Outbound("r-1", PHONE, "16505550002", failed_at, "template", "promo", error_code=131048)],
        failed_at,
    )
    alerting = Alerting()
    on = settings_with(tmp_path).signal_rules
    assert SignalEvaluator(db, on, alerting).run(failed_at + H) == 1
    off = settings_with(
        tmp_path, '[[signal_rules]]\nname = "spam_rate_failures"\nenabled = false\n'
    ).signal_rules
    assert SignalEvaluator(db, off, alerting).run(failed_at + 2 * H) == 1
    [alert] = alerts(db)
    assert alert["state"] == "resolved" and "no longer evaluated" in alert["summary"]
    assert [e["kind"] for e in tracker_events(db)][-1] == "spam_rate_failures:resolved"


def test_a_rule_removed_from_the_configuration_resolves_its_alerts(
    db: Database, tmp_path: Path
) -> None:
    failed_at = TODAY + 10 * H
    items: list[Item] = [
        Outbound(f"r-{i}", PHONE, "16505550002", failed_at, "template", "promo", error_code=132015)
        for i in range(3)
    ]
    feed(db, items, failed_at)
    mine = '[[signal_rules]]\nname = "failing"\nmetric = "failure_rate"\nabove = "20%"\n'
    alerting = Alerting()
    with_it = settings_with(tmp_path, mine + 'delay = "1h"\nmin_count = 2\n').signal_rules
    assert SignalEvaluator(db, with_it, alerting).run(failed_at + H + 5 * M) == 1
    # an alert of an event rule is none of the evaluator's business
    paused = Signal("template_status", {"rule": "template_status"}, True, Severity.CRITICAL, "", "")
    with db.write() as conn:
        record(db, conn, [Timed(paused, failed_at)], failed_at, alerting)
    without = settings_with(tmp_path).signal_rules
    assert SignalEvaluator(db, without, alerting).run(failed_at + H + 10 * M) == 1
    states = {a["rule"]: a["state"] for a in alerts(db)}
    assert states == {"failing": "resolved", "template_status": "firing"}
    assert [e["kind"] for e in tracker_events(db)][-1] == "failing:resolved"


def test_one_query_per_rule_and_scope(db: Database, tmp_path: Path) -> None:
    """The evaluator stays cheap: scopes come from the hours judged, each read once."""
    at = TODAY + 10 * H
    items: list[Item] = []
    for phone in range(3):
        for template in range(40):
            refused = 132015 if template < 4 else None  # four paused templates
            number = f"10654035224{phone:04d}"
            wamid = f"wamid.{phone}.{template}"
            customer = "16505550001"
            items.append(
                Outbound(
                    wamid, number, customer, at, "template", f"t{template}", error_code=refused
                )
            )
    feed(db, items, at)
    toml = """
[[signal_rules]]
name = "template_failures"
metric = "failure_rate"
above = "20%"
min_count = 3
per = ["template"]
"""
    for name in sorted(BUILT_IN_NAMES):
        toml += f'[[signal_rules]]\nname = "{name}"\nenabled = false\n'
    settings = settings_with(tmp_path, toml)
    evaluator = SignalEvaluator(db, settings.signal_rules, Alerting())
    assert evaluator.run(at + 30 * M) == 4
    summaries = sorted(a["summary"] for a in alerts(db))
    assert summaries[0] == (
        "template t0: failure rate 100.0% over the last hour, above 20.0% (3 outbound messages)"
    )
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        assert evaluator.run(at + 31 * M) == 0
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # the firing alerts, the scopes, then one delivery summary (two tables) per template
    assert len(selects) == 1 + 1 + 40 * 2
    assert all(s.strip().upper() in ("BEGIN", "") or s in selects for s in statements)  # no write
