"""``waquality demo``: a short backfill against the real server (and the test database),
checked through the API; then a moment of live traffic."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from click.testing import CliRunner

from conftest import DATA
from waquality.cli import main
from waquality.simulate import records
from waquality.simulate.demo import Demo, Options

SEED = 5
END = datetime(2026, 3, 4, 6, 0, tzinfo=UTC)


def options(database_url: str) -> Options:
    return Options(
        port=0,
        days=3,  # ends whenever the test runs: three days always hold 10 weekday opening hours
        seed=SEED,
        customers=1500,
        speed=3600,
        api_token="demo-test-token",
        database_url=database_url,
    )


def eventually(check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_the_same_seed_gives_the_same_backfill() -> None:
    first = Demo(options("sqlite:///unused.db"), now=lambda: END)
    again = Demo(options("sqlite:///unused.db"), now=lambda: END)
    assert [records.dumps(d) for d in first.backlog] == [records.dumps(d) for d in again.backlog]
    assert len(first.backlog) > 1000


def test_the_demo_shows_every_capability(database_url: str) -> None:
    with Demo(options(database_url)) as demo:
        end = demo.story.end
        tally = demo.backfill()
        assert tally.problems == []
        demo.watch()
        api = demo.client
        window = {"from": (end - timedelta(days=3)).isoformat(), "to": end.isoformat()}

        def get(path: str, **params: Any) -> Any:
            response = api.get(path, params=params)
            assert response.status_code == 200, response.text
            return response.json()

        status = get("/api/v1/status")
        assert status["webhooks"]["pending"] == 0 and status["webhooks"]["quarantined"] == 0
        assert status["polling"] == {"ok": 3}
        # phone numbers and templates, from webhooks and polls, with history
        numbers = {n["verified_name"]: n for n in get("/api/v1/phone-numbers")["items"]}
        assert len(numbers) == 5 and all(n["confirmed_at"] for n in numbers.values())
        offers = numbers["Lumen Shop Offers"]
        assert offers["quality_rating"] == "YELLOW" and offers["messaging_limit"] == "TIER_10K"
        assert get(f"/api/v1/phone-numbers/{offers['id']}/history")["items"]
        templates = get("/api/v1/templates", limit=1000)["items"]
        assert len(templates) == len(demo.world.templates)
        sale = next(t for t in templates if t["name"] == "spring_sale")
        assert sale["status"] == "APPROVED" and sale["quality_score"] == "YELLOW"
        assert sale["pause_count"] == 1
        history = get(f"/api/v1/templates/{sale['id']}/history")["items"]
        changes = {(h["field"], h["new_value"]) for h in history}
        assert {("status", "PAUSED"), ("quality_score", "RED")} <= changes
        # alerts: recorded (the backfill was quiet), firing and resolved
        alerts = get("/api/v1/alerts")
        seen = {(a["rule"], a["state"]) for a in alerts}
        for expected in (
            ("template_status", "resolved"),  # paused, then unpaused
            ("template_quality", "firing"),
            ("phone_quality", "firing"),
            ("account_alert_warning", "firing"),
        ):
            assert expected in seen, expected
        paused = next(
            a for a in alerts if a["rule"] == "template_status" and "spring" in a["summary"]
        )
        assert paused["severity"] == "critical"
        # response times: bots answer in seconds, agents in minutes or hours
        bot = get("/api/v1/response-times", sender="bot", **window)["all_responses"]
        agent = get("/api/v1/response-times", sender="agent", **window)["all_responses"]
        assert bot["count"] > 100 and agent["count"] > 0
        assert bot["p50"] < 10 < 60 < agent["p50"]
        overall = get("/api/v1/response-times", **window)
        assert overall["first_response"]["count"] > 50
        assert overall["conversations"]["started"] > 100
        # delivery signals: rates, error codes, refusals, opt-outs
        delivery = get("/api/v1/delivery", **window)
        assert 0.95 < delivery["delivery_rate"] <= 1 and 0.4 < delivery["read_rate"] < 0.95
        codes = {e["code"] for e in delivery["errors"]}
        assert {131026, 131049, 131050, 132015} <= codes
        assert delivery["opt_outs"] > 0
        campaign = get("/api/v1/delivery", template="spring_sale", **window)
        assert campaign["refused"] > 10
        # events, and the tags journeys and experiments will read
        fields = {e["field"] for e in get("/api/v1/events", limit=1000)["items"]}
        assert {"account_alerts", "message_template_status_update", "user_preferences"} <= fields
        messages = get("/api/v1/messages", limit=5000, **window)["items"]
        assert {m["journey"] for m in messages} >= {"order_support", "appointment_booking"}
        arms = {arm for m in messages for name, arm in m["experiments"] or []}
        assert arms == {"single", "split"}
        assert any(m["reply_id"] for m in messages)
        assert get("/api/v1/conversations", unanswered="false")["items"]

        # live: the story goes on (an hour of it in about a second)
        stop = threading.Event()
        worker = threading.Thread(target=demo.live, args=(stop,))
        worker.start()
        try:
            received = status["webhooks"]["received"]
            assert eventually(lambda: get("/api/v1/status")["webhooks"]["received"] > received + 20)
            assert eventually(
                lambda: any(
                    a["rule"] == "template_quality" and "new_arrivals" in a["summary"]
                    for a in get("/api/v1/alerts", state="firing")
                )
            )
            assert eventually(
                lambda: (
                    demo.scenario.wabas[offers["waba_id"]].phones[offers["id"]].quality_rating
                    == "GREEN"
                )
            )
            api.post(f"/api/v1/watched-wabas/{offers['waba_id']}/poll")
            assert eventually(
                lambda: (
                    ("phone_quality", "resolved")
                    in {(a["rule"], a["state"]) for a in get("/api/v1/alerts")}
                )
            )
        finally:
            stop.set()
            worker.join(30)


def test_the_demo_stops_cleanly_on_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        args = ["demo", "--port", str(port), "--days", "1", "--customers", "50"]
        env = {"WAQUALITY_CONFIG": str(DATA / "empty.toml")}
        result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
