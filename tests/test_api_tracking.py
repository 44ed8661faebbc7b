"""The tracker over HTTP: webhooks and logged messages in, response times and delivery out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from builders import PHONE_ID, envelope, inbound_message, messages_status
from conftest import API_TOKEN, LiveServer, make_settings, run_server
from waquality.domain.enums import SenderKind
from waquality.domain.tags import Tags, encode

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
T = int(time.time()) // 3600 * 3600 - 3 * 3600  # three hours ago: conversations still open
RANGE = {"from": T - 86_400, "to": T + 86_400}


def log(server: LiveServer, body: Any) -> Any:
    response = server.client.post("/api/v1/messages", headers=AUTH, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_response_times_from_webhooks_and_logged_messages(server: LiveServer) -> None:
    agent = encode(Tags(SenderKind.AGENT, template="order_update"))
    bodies = [
        envelope(inbound_message("wamid.c1", "16505550101", T)),
        envelope(inbound_message("wamid.c2", "16505550101", T + 20)),  # same run
        # the reply known from its status alone (tagged agent through the callback data)
        envelope(
            messages_status(
                wamid="wamid.r1",
                status="sent",
                time=T + 65,
                recipient="16505550101",
                callback=agent,
            )
        ),
        envelope(
            messages_status(wamid="wamid.r1", status="read", time=T + 90, recipient="16505550101")
        ),
        envelope(inbound_message("wamid.d1", "16505550202", T + 5)),
        envelope(inbound_message("wamid.e1", "16505550303", T + 7)),  # nobody answers yet
    ]
    for body in bodies:
        assert server.post_webhook(body).status_code == 200
    # a bot reply logged by the business (its webhook statuses may come later or never)
    log(
        server,
        {
            "id": "wamid.r2",
            "phone_number_id": PHONE_ID,
            "to": "16505550202",
            "timestamp": T + 8,
            "sender": "bot",
            "text": "Hi! How can I help?",
        },
    )
    server.wait_processed()
    found = server.api("/api/v1/response-times", **RANGE)
    first = found["first_response"]
    assert first["count"] == 2
    assert first["mean"] == pytest.approx((65 + 3) / 2)
    assert first["max"] == 65.0
    assert first["p50"] == pytest.approx(3.0, rel=0.01)
    assert first["within"] == {"1m": 0.5, "5m": 1.0, "1h": 1.0}
    assert found["conversations"] == {
        "started": 3,
        "by_customer": 3,
        "answered": 2,
        "unanswered": 0,
    }
    assert found["waiting"] == 1
    [day] = [p for p in found["series"] if p["first_response"]["count"]]
    assert day["first_response"]["count"] == 2 and day["conversations"] == 3
    agents = server.api("/api/v1/response-times", sender="agent", **RANGE)
    assert agents["first_response"]["count"] == 1 and agents["first_response"]["max"] == 65.0
    by_hour = server.api("/api/v1/response-times", bucket="hour", **RANGE)
    assert sum(p["all_responses"]["count"] for p in by_hour["series"]) == 2
    other = server.api("/api/v1/response-times", phone_number_id="999", **RANGE)
    assert other["first_response"]["count"] == 0 and other["series"] == []


def test_delivery_figures_and_refused_sends(server: LiveServer) -> None:
    promo = encode(Tags(SenderKind.CAMPAIGN, template="spring_sale"))
    for i, status in enumerate(("sent", "delivered", "read")):
        body = envelope(
            messages_status(
                wamid="wamid.p1", status=status, time=T + i, recipient="16505550404", callback=promo
            )
        )
        assert server.post_webhook(body).status_code == 200
    body = envelope(
        messages_status(
            wamid="wamid.p2",
            status="failed",
            time=T + 3,
            recipient="16505550405",
            callback=promo,
            error=131049,
        )
    )
    assert server.post_webhook(body).status_code == 200
    refusal = {
        "phone_number_id": PHONE_ID,
        "to": "16505550406",
        "timestamp": T + 4,
        "template": "spring_sale",
        "sender": "campaign",
        "error": {"code": 132015},
    }
    first = log(server, {"messages": [refusal]})
    again = log(server, refusal)  # logged twice: one attempt
    assert first["ids"] == again["ids"] and again["changed"] == 0
    assert first["ids"][0].startswith("refused:")
    server.wait_processed()
    found = server.api("/api/v1/delivery", template="spring_sale", **RANGE)
    assert {
        k: found[k] for k in ("outbound", "sent", "delivered", "read", "failed", "refused")
    } == {
        "outbound": 3,
        "sent": 1,
        "delivered": 1,
        "read": 1,
        "failed": 1,
        "refused": 1,
    }
    assert found["read_rate"] == 1.0 and found["failure_rate"] == pytest.approx(2 / 3)
    codes = {e["code"]: e for e in found["errors"]}
    assert codes[131049]["quality"] and codes[132015]["count"] == 1
    everything = server.api("/api/v1/delivery", **RANGE)
    assert everything["outbound"] == 3
    assert server.api("/api/v1/delivery", template="other", **RANGE)["outbound"] == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"phone_number_id": PHONE_ID, "to": "1"}, "id: required"),
        ({"id": "w", "phone_number_id": PHONE_ID, "to": "1", "sender": "robot"}, "sender"),
        ({"id": "w", "phone_number_id": "abc", "to": "1"}, "phone_number_id"),
        ({"id": "w", "phone_number_id": PHONE_ID, "to": "1", "timestamp": "soon"}, "timestamp"),
        ({"id": "w", "phone_number_id": PHONE_ID, "to": "1", "timestamp": 1}, "out of range"),
        ({"messages": []}, "messages"),
    ],
)
def test_bad_logged_messages_are_refused(server: LiveServer, body: Any, fragment: str) -> None:
    response = server.client.post("/api/v1/messages", headers=AUTH, json=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"from": T, "to": T}, "before"),
        ({"from": "yesterday"}, "from"),
        ({"bucket": "month"}, "bucket"),
        ({"sender": "robot"}, "sender"),
        ({"from": 0, "to": T}, "out of range"),
    ],
)
def test_bad_summary_parameters(server: LiveServer, params: dict[str, Any], fragment: str) -> None:
    for path in ("/api/v1/response-times", "/api/v1/delivery"):
        if path.endswith("delivery") and "sender" in params:
            continue
        response = server.client.get(path, headers=AUTH, params=params)
        assert response.status_code == 400, (path, response.text)
        assert fragment in response.json()["error"]["message"]


@pytest.fixture
def untracked(database_url: str) -> Iterator[LiveServer]:
    yield from run_server(make_settings(database_url, tracker="false"))


def test_logging_needs_the_tracker(untracked: LiveServer) -> None:
    body = {"id": "w", "phone_number_id": PHONE_ID, "to": "1"}
    response = untracked.client.post("/api/v1/messages", headers=AUTH, json=body)
    assert response.status_code == 409


def test_the_endpoints_need_the_token(server: LiveServer) -> None:
    assert server.client.get("/api/v1/response-times").status_code == 401
    assert server.client.get("/api/v1/delivery").status_code == 401
    assert server.client.post("/api/v1/messages", json={}).status_code == 401


def test_a_customers_messages_and_conversations(server: LiveServer) -> None:
    tagged = encode(Tags(SenderKind.BOT, "order_support", "ask_size", (("wording", "B"),)))
    bodies = [
        envelope(inbound_message("wamid.m1", "16505550707", T, "Where is my order?")),
        envelope(
            messages_status(
                wamid="wamid.m2",
                status="sent",
                time=T + 3,
                recipient="16505550707",
                callback=tagged,
            )
        ),
        envelope(inbound_message("wamid.m3", "16505550808", T + 1)),  # someone else
    ]
    for body in bodies:
        assert server.post_webhook(body).status_code == 200
    server.wait_processed()
    found = server.api("/api/v1/messages", customer="16505550707")["items"]
    assert [m["wamid"] for m in found] == ["wamid.m1", "wamid.m2"]  # time order
    assert found[0]["inbound"] and found[0]["body"] == "Where is my order?"
    assert (found[1]["sender_kind"], found[1]["journey"], found[1]["step"]) == (
        "bot",
        "order_support",
        "ask_size",
    )
    assert found[1]["experiments"] == [["wording", "B"]]
    page = server.api("/api/v1/messages", limit=1)
    assert len(page["items"]) == 1 and page["next"]
    rest = server.api("/api/v1/messages", limit=10, cursor=page["next"])["items"]
    assert [m["wamid"] for m in page["items"] + rest] == ["wamid.m1", "wamid.m3", "wamid.m2"]
    [conversation] = server.api("/api/v1/conversations", customer="16505550707")["items"]
    assert conversation["first_response_seconds"] == 3.0 and conversation["messages"] == 2
    waiting = server.api("/api/v1/conversations", unanswered="true")["items"]
    assert [c["customer"] for c in waiting] == ["16505550808"]
