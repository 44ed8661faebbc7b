"""The simulator: deterministic, plausible traffic, shaped as the platform sends it; and
``simulate`` + ``replay`` into a running server."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from conftest import API_TOKEN, DATA, SECRET, LiveServer
from waquality.cli import main
from waquality.domain import tags
from waquality.domain.messages import Inbound, Status
from waquality.process.parse import parse_body
from waquality.simulate import records, story, traffic, world
from waquality.simulate.records import GraphChange, Logged, Post

END = datetime(2026, 3, 4, 6, 0, tzinfo=UTC)  # a Wednesday morning: two campaigns before the push
START = END - timedelta(days=2)


@cache
def backfill() -> tuple[world.World, story.Story, tuple[records.Delivery, ...]]:
    made, plot, _, deliveries = traffic.generate(7, 1500, START, END)
    return made, plot, tuple(deliveries)


def lines(deliveries: Any) -> list[bytes]:
    return [records.dumps(d) for d in deliveries]


def test_the_same_seed_gives_the_same_bytes() -> None:
    first = lines(backfill()[2])
    again = lines(traffic.generate(7, 1500, START, END)[3])
    other = lines(traffic.generate(8, 1500, START, END)[3])
    assert first == again
    assert first != other
    assert all(records.dumps(records.loads(line)) == line for line in first[:500])


def test_the_world_is_plausible() -> None:
    made = world.build(3, 2000)
    assert made == world.build(3, 2000)
    assert len(made.wabas) == 3 and len(made.phones) == 5
    assert len(made.templates) >= 30
    assert {t.category for t in made.templates} == {"MARKETING", "UTILITY", "AUTHENTICATION"}
    assert len({c.wa_id for c in made.customers}) == 2000
    assert len({p.id for p in made.phones} | {t.id for t in made.templates}) == 5 + len(
        made.templates
    )
    assert 0.6 < sum(c.marketing for c in made.customers) / 2000 < 0.8
    assert 0 < sum(not c.reachable for c in made.customers) < 60
    assert made.experiment.journey == world.BOOKING
    assert made.experiment.step in next(j for j in made.journeys if j.name == world.BOOKING).steps


def _parsed() -> dict[str, Any]:
    """Every delivery read back: the items the platform would report and the logs."""
    deliveries = backfill()[2]
    found: dict[str, Any] = {
        "statuses": [],
        "inbound": [],
        "events": [],
        "logged": [],
        "posts": [],
        "graph": [],
        "broken": [],
    }
    for delivery in deliveries:
        if isinstance(delivery, Post):
            parsed = parse_body(delivery.body)
            found["broken"] += parsed.broken
            found["events"] += parsed.events
            found["statuses"] += [m for m in parsed.messages if isinstance(m, Status)]
            found["inbound"] += [m for m in parsed.messages if isinstance(m, Inbound)]
            found["posts"].append(delivery)
        elif isinstance(delivery, Logged):
            found["logged"] += delivery.messages
        else:
            found["graph"].append(delivery)
    return found


def test_the_traffic_reads_as_the_platform_sends_it() -> None:
    deliveries = backfill()[2]
    found = _parsed()
    assert found["broken"] == []
    assert [d.at for d in deliveries] == sorted(d.at for d in deliveries)
    assert all(START <= d.at < END for d in deliveries)
    statuses: list[Status] = found["statuses"]
    assert len(statuses) > 1500
    decoded = [tags.decode(s.callback) for s in statuses]
    assert all(t is not None for t in decoded)
    senders = Counter(t.sender.value for t in decoded if t is not None)
    assert set(senders) == {"bot", "agent", "campaign"}
    failures = Counter(code for s in statuses for code in s.error_codes)
    assert {131026, 131049, 131050}.issubset(failures)
    refused = Counter(m["error"]["code"] for m in found["logged"] if "error" in m)
    assert refused[132015] > 10
    kinds = Counter(m.kind for m in found["inbound"])
    expected = {"text", "interactive:button_reply", "interactive:list_reply", "button"}
    assert expected.issubset(kinds)
    assert kinds["text"] > 100
    fields = Counter(e.field for e in found["events"])
    for name in (
        "message_template_status_update",
        "message_template_quality_update",
        "account_alerts",
        "user_preferences",
        "business_capability_update",
        "phone_number_quality_update",
    ):
        assert fields[name] > 0, name
    # batched, sometimes sent twice, sometimes out of order
    posts: list[Post] = found["posts"]
    assert any(p.changes > 1 for p in posts)
    assert any(p.redelivery for p in posts)
    seen = Counter((s.wamid, s.status) for s in statuses)
    assert any(n > 1 for n in seen.values())
    order: dict[str, list[str]] = defaultdict(list)
    for s in statuses:
        order[s.wamid].append(s.status.value)
    assert any(o.index("sent") > 0 for o in order.values() if "sent" in o)
    # the fake Graph API changes with the story
    graph: list[GraphChange] = found["graph"]
    assert any(g.field == "quality_rating" and g.value == "YELLOW" for g in graph)
    assert any(g.field == "status" and g.value == "PAUSED" for g in graph)


def _rate(numerator: int, denominator: int) -> float:
    assert denominator > 0
    return numerator / denominator


def test_the_story_is_in_the_figures() -> None:
    made, plot, _ = backfill()
    found = _parsed()
    statuses: list[Status] = found["statuses"]
    # spring_sale: the read rate falls, opt-outs rise
    sale = [s for s in statuses if (t := tags.decode(s.callback)) and t.template == "spring_sale"]
    reads: dict[bool, Counter[str]] = {True: Counter(), False: Counter()}
    sent_at = {s.wamid: s.at for s in sale if s.status.value == "sent"}
    for s in sale:
        if s.wamid in sent_at and sent_at[s.wamid] < plot.unpaused_at:
            reads[sent_at[s.wamid] >= plot.push_at][s.status.value] += 1
    before = _rate(reads[False]["read"], reads[False]["sent"])
    pushed = _rate(reads[True]["read"], reads[True]["sent"])
    assert before > pushed + 0.15
    stops = [e for e in found["events"] if e.field == "user_preferences"]
    assert sum(e.occurred_at >= plot.campaign_doubled for e in stops) > sum(
        e.occurred_at < plot.campaign_doubled for e in stops
    )
    # the split question does better than the single one
    exposed: dict[str, set[str]] = defaultdict(set)
    booked: dict[str, set[str]] = defaultdict(set)
    for message in found["logged"]:
        arm = message.get("experiments", {}).get(made.experiment.name)
        if arm is None:
            continue
        exposed[arm].add(message["to"])
        if message.get("step") == "booked":
            booked[arm].add(message["to"])
    assert set(exposed) == {"single", "split"}
    single = _rate(len(booked["single"]), len(exposed["single"]))
    split = _rate(len(booked["split"]), len(exposed["split"]))
    assert split > single + 0.1
    # the reworded question confuses fewer people
    asked: dict[bool, Counter[str]] = {True: Counter(), False: Counter()}
    for message in found["logged"]:
        if message.get("step") == "ask_order_number":
            moment = datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00"))
            asked[moment >= plot.wording_change][message["to"]] += 1
    repeats = {
        reworded: _rate(sum(n > 1 for n in c.values()), len(c)) for reworded, c in asked.items()
    }
    assert repeats[False] > repeats[True]


def test_traffic_cut_anywhere_is_the_same_traffic() -> None:
    made, plot, whole = backfill()
    pieces = traffic.Traffic(made, plot, 7)
    cut: list[records.Delivery] = []
    moment = START
    while moment < END:
        moment = min(END, moment + timedelta(hours=5, minutes=17))
        cut += pieces.until(moment)

    def content(deliveries: Any) -> tuple[set[bytes], list[Any], list[Any]]:
        changes = {
            orjson.dumps(change, option=orjson.OPT_SORT_KEYS)
            for d in deliveries
            if isinstance(d, Post)
            for entry in orjson.loads(d.body)["entry"]
            for change in entry["changes"]
        }
        logged = sorted(
            orjson.dumps(m) for d in deliveries if isinstance(d, Logged) for m in d.messages
        )
        graph = [d for d in deliveries if isinstance(d, GraphChange)]
        return changes, logged, graph

    assert content(cut) == content(whole)


def test_simulate_then_replay(server: LiveServer, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "traffic.jsonl"
    end = datetime.now(UTC).replace(microsecond=0)
    args = ["simulate", "--days", "1", "--customers", "300", "--seed", "4", "--out", str(out)]
    result = runner.invoke(main, [*args, "--end", end.isoformat()])
    assert result.exit_code == 0, result.output
    assert "webhook POSTs" in result.output
    deliveries = [records.loads(line) for line in out.read_bytes().splitlines()]
    posts = [d for d in deliveries if isinstance(d, Post)]
    logged = sum(len(d.messages) for d in deliveries if isinstance(d, Logged))
    env = {
        "WAQUALITY_APP_SECRET": SECRET,
        "WAQUALITY_API_TOKEN": API_TOKEN,
        "WAQUALITY_CONFIG": str(DATA / "empty.toml"),
    }
    result = runner.invoke(main, ["replay", str(out), "--url", server.url], env=env)
    assert result.exit_code == 0, result.output
    assert f"webhook POSTs: {len(posts):,} acknowledged" in result.output
    assert f"outbound messages logged: {logged:,} acknowledged" in result.output
    assert "Graph API changes skipped: " in result.output
    counts = server.wait_processed()
    assert counts["received"] == len(posts)
    assert counts["quarantined"] == 0
    # what the server counts is what the file holds: every customer message, once
    items = [m for p in posts for m in parse_body(p.body).messages]
    inbound = {m.wamid for m in items if isinstance(m, Inbound)}
    delivery = server.api("/api/v1/delivery", **{"from": (end - timedelta(days=3)).isoformat()})
    statuses = [m for m in items if isinstance(m, Status)]
    logs = [m for d in deliveries if isinstance(d, Logged) for m in d.messages]
    outbound = {m.wamid for m in statuses} | {m["id"] for m in logs if "id" in m}
    refused = sum("error" in m for m in logs)
    assert inbound and delivery["inbound"] == len(inbound)
    assert delivery["outbound"] == len(outbound) + refused
    messages = server.api("/api/v1/messages", limit=1000)["items"]
    assert {m["sender_kind"] for m in messages} >= {"bot", "campaign"}
    # signed with another secret, nothing is accepted: refused, counted, exit status 1
    few = tmp_path / "few.jsonl"
    few.write_bytes(b"\n".join(records.dumps(p) for p in posts[:3]) + b"\n")
    wrong = {**env, "WAQUALITY_APP_SECRET": "not-the-secret"}
    args = ["replay", str(few), "--url", server.url, "--rate", "50"]
    result = runner.invoke(main, args, env=wrong)
    assert result.exit_code == 1
    assert "0 acknowledged" in result.output and "3 refused" in result.output


def test_replay_needs_its_secrets_from_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "empty.jsonl"
    file.write_bytes(b"")
    env = {"WAQUALITY_CONFIG": str(DATA / "empty.toml"), "WAQUALITY_API_TOKEN": API_TOKEN}
    result = CliRunner().invoke(main, ["replay", str(file), "--url", "http://127.0.0.1:9"], env=env)
    assert result.exit_code == 1
    assert "WAQUALITY_APP_SECRET" in result.output


@pytest.mark.parametrize("days", [1, 3])
def test_the_story_fits_any_number_of_days(days: int) -> None:
    plot = story.build(END - timedelta(days=days), END)
    assert plot.start < plot.experiment_start < plot.yellow_at < plot.red_at < plot.paused_at
    assert plot.paused_at < plot.unpaused_at < plot.end
    made = world.build(1, 50)
    moments = [h.at for h in story.happenings(made, plot)]
    assert moments == sorted(moments)
    assert sum(m >= plot.end for m in moments) >= 2  # the live part
