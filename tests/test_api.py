"""The HTTP API over real HTTP on loopback, after the golden webhooks went through the receiver."""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from conftest import API_TOKEN, LiveServer, manifest, webhook

# -- helpers ------------------------------------------------------------------------------------

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
TIME_FIELDS = {
    "updated_at",
    "occurred_at",
    "recorded_at",
    "received_at",
    "created_at",
    "resolved_at",
    "paused_until",
    "disable_date",
    "category_change_at",
}
TIERS = {
    "TIER_50",
    "TIER_250",
    "TIER_1K",
    "TIER_2K",
    "TIER_10K",
    "TIER_100K",
    "TIER_UNLIMITED",
    "TIER_NOT_SET",
}
QUALITY = {"GREEN", "YELLOW", "RED", "UNKNOWN"}

WABA = "102290129340398"
OTHER_WABA = "524126980791429"
PHONE_ID = "106540352242922"
DISPLAY = "15550783881"
DISPLAY_ONLY = "15550783890"  # current_onboarding.json: its phone-number ID is never seen
QUALITY_TEMPLATE = "806312974732579"  # three quality updates, all with language en-US
OUT_OF_ORDER_TEMPLATE = "1689556908129870"
PAUSED_TEMPLATE = "1304694804498707"
BROKEN = [m for m in manifest() if m["file"].startswith("broken/")]

LIST_ENDPOINTS = [
    "/api/v1/phone-numbers",
    "/api/v1/templates",
    "/api/v1/events",
    "/api/v1/quarantine",
    f"/api/v1/phone-numbers/{DISPLAY}/history",
    f"/api/v1/templates/{QUALITY_TEMPLATE}/history",
]

PHONE_FIELDS = {
    "id",
    "waba_id",
    "display_phone_number",
    "quality_rating",
    "status",
    "messaging_limit",
    "updated_at",
}


def load_golden(server: LiveServer, *, one_by_one: bool = False) -> None:
    """POST every golden body (signed) in manifest order and wait until all are processed.

    ``one_by_one`` waits after each POST, as when Meta's deliveries are spread over time: every
    body is then processed in its own batch, so a late event always meets the newer state.
    """
    for item in manifest():
        response = server.post_webhook(webhook(item["file"]))
        assert response.status_code == 200, (item["file"], response.status_code, response.text)
        if one_by_one:
            server.wait_processed()
    counts = server.wait_processed()
    assert counts["received"] == len(manifest())


def post_bodies(server: LiveServer, *bodies: bytes) -> None:
    for body in bodies:
        response = server.post_webhook(body)
        assert response.status_code == 200, response.text
    server.wait_processed()


def get(
    server: LiveServer, path: str, headers: dict[str, str] | None = None, **params: Any
) -> httpx.Response:
    return server.client.get(path, params=params, headers=AUTH if headers is None else headers)


def fresh_get(server: LiveServer, path: str, **params: Any) -> httpx.Response:
    """One request on its own connection (a server error cannot spoil the next request)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return client.get(path, params=params, headers=AUTH)


def everything(server: LiveServer, path: str, **params: Any) -> list[dict[str, Any]]:
    page = server.api(path, limit=10_000, **params)
    assert page["next"] is None, "more than 10,000 items: the test data grew"
    items: list[dict[str, Any]] = page["items"]
    return items


def walk(server: LiveServer, path: str, limit: int, **params: Any) -> Iterator[list[Any]]:
    """Every page of a list, following ``next``; checks the shape of each page."""
    cursor: str | None = None
    for _ in range(100_000):
        query = dict(params, limit=limit)
        if cursor is not None:
            query["cursor"] = cursor
        page = server.api(path, **query)
        assert set(page) == {"items", "next"}
        assert len(page["items"]) <= limit
        yield page["items"]
        cursor = page["next"]
        if cursor is None:
            return
        assert isinstance(cursor, str)
        assert cursor
        assert len(page["items"]) == limit, "a page before the last one is not full"
    raise AssertionError("paging does not end")


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error.get("code"), str)
    assert error["code"]
    assert isinstance(error.get("message"), str)
    assert error["message"]
    return error


def cursor_of(values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def at(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def envelope(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"object": "whatsapp_business_account", "entry": list(entries)}).encode()


def change(field: str, value: dict[str, Any], time: int, waba: str = WABA) -> dict[str, Any]:
    return {"id": waba, "time": time, "changes": [{"field": field, "value": value}]}


def phone_quality(display: str, time: int, **value: Any) -> dict[str, Any]:
    return change(
        "phone_number_quality_update",
        {"display_phone_number": display, "event": "UPGRADE", **value},
        time,
    )


def template_quality(template_id: int, new: str, time: int) -> dict[str, Any]:
    return change(
        "message_template_quality_update",
        {
            "previous_quality_score": "GREEN",
            "new_quality_score": new,
            "message_template_id": template_id,
            "message_template_name": f"t_{template_id}",
            "message_template_language": "en-US",
        },
        time,
    )


def template_status(template_id: int, event: str, time: int, **value: Any) -> dict[str, Any]:
    return change(
        "message_template_status_update",
        {
            "event": event,
            "message_template_id": template_id,
            "message_template_name": f"t_{template_id}",
            "message_template_language": "en-US",
            "reason": "NONE",
            "message_template_category": "UTILITY",
            **value,
        },
        time,
    )


def history_by_field(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row["field"]].append(row)
    return grouped


def transitions(rows: list[dict[str, Any]], field: str) -> list[tuple[Any, Any, str]]:
    return [(r["old_value"], r["new_value"], r["occurred_at"]) for r in rows if r["field"] == field]


# -- authentication -----------------------------------------------------------------------------

BAD_AUTHORIZATION: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {API_TOKEN}x"},
    {"Authorization": f"Bearer {API_TOKEN[:-1]}"},
    {"Authorization": f"Bearer {API_TOKEN.upper()}"},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer\t-"},
    {"Authorization": API_TOKEN},
    {"Authorization": f"Token {API_TOKEN}"},
    {"Authorization": "Basic " + base64.b64encode(f"user:{API_TOKEN}".encode()).decode()},
    {"X-Api-Token": API_TOKEN},
]


def protected_paths(server: LiveServer) -> list[str]:
    quarantined = server.api("/api/v1/quarantine")["items"]
    assert quarantined
    return [
        "/api/v1/status",
        "/api/v1/phone-numbers",
        f"/api/v1/phone-numbers/{DISPLAY}/history",
        f"/api/v1/phone-numbers/{PHONE_ID}/history",
        "/api/v1/phone-numbers/19999999999/history",
        "/api/v1/templates",
        f"/api/v1/templates/{QUALITY_TEMPLATE}/history",
        "/api/v1/templates/424242/history",
        "/api/v1/events",
        "/api/v1/quarantine",
        f"/api/v1/quarantine/{quarantined[0]['id']}",
        "/api/v1/quarantine/424242",
        "/api/v1/openapi.json",
        "/metrics",
    ]


def test_every_endpoint_requires_the_bearer_token(server: LiveServer) -> None:
    load_golden(server)
    failures = []
    for path in protected_paths(server):
        for headers in BAD_AUTHORIZATION:
            for params in ({}, {"access_token": API_TOKEN, "token": API_TOKEN}):
                response = server.client.get(path, headers=headers, params=params)
                try:
                    error = error_of(response, 401)
                    assert error["code"] == "unauthorized"
                    assert response.headers.get("www-authenticate", "").startswith("Bearer")
                    assert API_TOKEN not in response.text
                except AssertionError as exc:
                    failures.append(f"{path} {headers} {params}: {exc}")
    assert not failures, "\n".join(failures)


def test_the_right_token_opens_every_endpoint(server: LiveServer) -> None:
    load_golden(server)
    for path in protected_paths(server):
        if "424242" in path or "19999999999" in path:
            continue
        for scheme in ("Bearer", "bearer", "BEARER"):
            response = server.client.get(path, headers={"Authorization": f"{scheme} {API_TOKEN}"})
            assert response.status_code == 200, (path, scheme, response.text)


def test_health_endpoints_answer_without_the_token(server: LiveServer) -> None:
    load_golden(server)
    for path in ("/healthz", "/readyz"):
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, AUTH):
            response = server.client.get(path, headers=headers)
            assert response.status_code == 200, (path, headers, response.text)
            assert API_TOKEN not in response.text


def test_metrics_with_the_token(server: LiveServer) -> None:
    load_golden(server)
    response = get(server, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in response.text


# -- lists and paging ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", LIST_ENDPOINTS)
def test_lists_answer_items_and_next(server: LiveServer, path: str) -> None:
    load_golden(server)
    response = get(server, path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    page = response.json()
    assert set(page) == {"items", "next"}
    assert isinstance(page["items"], list)
    assert page["items"]
    assert page["next"] is None or isinstance(page["next"], str)
    assert all(isinstance(item, dict) for item in page["items"])


def test_default_page_size_is_100(server: LiveServer) -> None:
    load_golden(server)
    total = server.api("/api/v1/status")["events"]
    assert total > 100
    page = server.api("/api/v1/events")
    assert len(page["items"]) == 100
    assert page["next"] is not None


def test_list_fields(server: LiveServer) -> None:
    load_golden(server)
    phone_fields = PHONE_FIELDS
    for item in everything(server, "/api/v1/phone-numbers"):
        assert phone_fields <= set(item), item
    template_fields = {
        "id",
        "waba_id",
        "name",
        "language",
        "category",
        "status",
        "quality_score",
        "pause_count",
        "updated_at",
    }
    for item in everything(server, "/api/v1/templates"):
        assert template_fields <= set(item), item
        assert isinstance(item["pause_count"], int)
    history_fields = {"field", "old_value", "new_value", "occurred_at", "source"}
    for row in everything(server, f"/api/v1/phone-numbers/{DISPLAY}/history"):
        assert history_fields <= set(row), row
        assert row["source"] == "webhook"


PAGED = [
    ("/api/v1/phone-numbers", 3, {}),
    ("/api/v1/phone-numbers", 1, {"waba_id": WABA}),
    ("/api/v1/templates", 7, {}),
    ("/api/v1/templates", 2, {"waba_id": OTHER_WABA}),
    ("/api/v1/events", 13, {}),
    ("/api/v1/events", 100, {}),
    ("/api/v1/events", 4, {"field": "message_template_status_update"}),
    ("/api/v1/events", 3, {"since": "2025-01-01T00:00:00Z", "waba_id": WABA}),
    ("/api/v1/quarantine", 3, {}),
    (f"/api/v1/phone-numbers/{DISPLAY}/history", 2, {}),
    (f"/api/v1/phone-numbers/{PHONE_ID}/history", 5, {"field": "messaging_limit"}),
    (f"/api/v1/templates/{PAUSED_TEMPLATE}/history", 1, {}),
    (f"/api/v1/templates/{QUALITY_TEMPLATE}/history", 2, {}),
]


@pytest.mark.parametrize(("path", "limit", "params"), PAGED)
def test_paging_walks_every_item_exactly_once(
    server: LiveServer, path: str, limit: int, params: dict[str, str]
) -> None:
    load_golden(server)
    expected = everything(server, path, **params)
    assert len(expected) > limit, "too few items to page through"
    pages = list(walk(server, path, limit, **params))
    walked = [item for page in pages for item in page]
    assert walked == expected
    keys = [json.dumps(item, sort_keys=True) for item in walked]
    assert len(set(keys)) == len(keys), "an item came twice"
    assert len(pages) == -(-len(expected) // limit)


def test_paging_all_events_matches_the_event_count(server: LiveServer) -> None:
    load_golden(server)
    ids = [item["id"] for page in walk(server, "/api/v1/events", 37) for item in page]
    assert len(ids) == len(set(ids))
    assert len(ids) == server.api("/api/v1/status")["events"]
    assert len(ids) == sum(int(m["management_events"]) for m in manifest()) - 1  # one retry


def test_events_are_newest_first(server: LiveServer) -> None:
    load_golden(server)
    items = everything(server, "/api/v1/events")
    keys = [(utc(e["occurred_at"]), e["id"]) for e in items]
    assert keys == sorted(keys, reverse=True)


def test_history_is_in_time_order(server: LiveServer) -> None:
    load_golden(server)
    for path in (
        f"/api/v1/phone-numbers/{DISPLAY}/history",
        f"/api/v1/templates/{PAUSED_TEMPLATE}/history",
    ):
        times = [utc(r["occurred_at"]) for r in everything(server, path)]
        assert times == sorted(times)


@pytest.mark.parametrize("path", LIST_ENDPOINTS)
def test_limit_bounds(server: LiveServer, path: str) -> None:
    load_golden(server)
    for bad in ("0", "10001", "-1", "abc", "1.5", "100000000000000000000"):
        error = error_of(get(server, path, limit=bad), 400)
        assert "limit" in error["message"]
    assert get(server, path, limit=10_000).status_code == 200
    one = get(server, path, limit=1)
    assert one.status_code == 200
    assert len(one.json()["items"]) == 1


@pytest.mark.parametrize("path", LIST_ENDPOINTS)
def test_bad_cursor_is_refused(server: LiveServer, path: str) -> None:
    load_golden(server)
    for bad in (
        "!!!",
        "not-a-cursor",
        "e30",
        cursor_of({"a": 1}),
        cursor_of([]),
        cursor_of([1, 2, 3]),
        "%%%",
        "AAAA",
    ):
        error = error_of(get(server, path, cursor=bad), 400)
        assert "cursor" in error["message"]


FORGED_CURSORS: list[tuple[str, Any]] = [
    ("/api/v1/phone-numbers", ["abc"]),
    ("/api/v1/phone-numbers", [{"a": 1}]),
    ("/api/v1/phone-numbers", [[1]]),
    ("/api/v1/templates", [5]),
    ("/api/v1/templates", [{"a": 1}]),
    ("/api/v1/events", ["2025-01-01T00:00:00+00:00", "x"]),
    ("/api/v1/events", ["2025-01-01T00:00:00", 5]),
    ("/api/v1/events", ["2025-01-01T00:00:00+00:00", {"a": 1}]),
    ("/api/v1/quarantine", ["x"]),
    (f"/api/v1/templates/{QUALITY_TEMPLATE}/history", ["2025-01-01T00:00:00+00:00", "x"]),
    (f"/api/v1/phone-numbers/{DISPLAY}/history", ["2025-01-01T00:00:00+00:00", [1]]),
]


def test_forged_cursor_with_wrong_types_is_refused(server: LiveServer) -> None:
    """A cursor that decodes but holds values of the wrong type is a bad cursor: 400."""
    load_golden(server)
    failures = []
    for path, values in FORGED_CURSORS:
        response = fresh_get(server, path, cursor=cursor_of(values))
        try:
            assert "cursor" in error_of(response, 400)["message"]
        except AssertionError:
            failures.append(
                f"{path} cursor={values!r}: {response.status_code} {response.text[:80]!r}"
            )
    assert not failures, "\n".join(failures)


def test_a_cursor_from_one_list_keeps_the_filters_of_the_query(server: LiveServer) -> None:
    load_golden(server)
    first = server.api("/api/v1/events", limit=5, field="account_update")
    assert first["next"]
    second = server.api("/api/v1/events", limit=5, field="account_update", cursor=first["next"])
    assert {e["field"] for e in first["items"] + second["items"]} == {"account_update"}


# -- filters ------------------------------------------------------------------------------------


def test_phone_number_filter_by_waba(server: LiveServer) -> None:
    load_golden(server)
    every = everything(server, "/api/v1/phone-numbers")
    for waba in (WABA, OTHER_WABA):
        filtered = everything(server, "/api/v1/phone-numbers", waba_id=waba)
        assert filtered
        assert filtered == [p for p in every if p["waba_id"] == waba]
        assert len(filtered) < len(every)
    assert everything(server, "/api/v1/phone-numbers", waba_id="999") == []


def test_template_filters(server: LiveServer) -> None:
    load_golden(server)
    every = everything(server, "/api/v1/templates")
    cases: list[tuple[dict[str, str], Any]] = [
        ({"waba_id": OTHER_WABA}, lambda t: t["waba_id"] == OTHER_WABA),
        ({"status": "PAUSED"}, lambda t: t["status"] == "PAUSED"),
        ({"status": "paused"}, lambda t: t["status"] == "PAUSED"),
        (
            {"status": "APPROVED", "waba_id": WABA},
            lambda t: t["status"] == "APPROVED" and t["waba_id"] == WABA,
        ),
        ({"quality_score": "UNKNOWN"}, lambda t: t["quality_score"] == "UNKNOWN"),
        ({"quality_score": "green"}, lambda t: t["quality_score"] == "GREEN"),
        ({"name": "order_confirmation"}, lambda t: t["name"] == "order_confirmation"),
    ]
    for params, keep in cases:
        filtered = everything(server, "/api/v1/templates", **params)
        assert filtered, params
        assert filtered == [t for t in every if keep(t)], params
        assert len(filtered) < len(every)


def test_event_filters(server: LiveServer) -> None:
    load_golden(server)
    every = everything(server, "/api/v1/events")
    cases: list[dict[str, str]] = [
        {"field": "account_update"},
        {"field": "phone_number_quality_update"},
        {"field": "some_future_field"},
        {"waba_id": OTHER_WABA},
        {"kind": "PAUSED"},
        {"kind": "TIER_UNLIMITED"},
        {"subject_kind": "template"},
        {"subject_kind": "phone_number"},
        {"subject_kind": "business"},
        {"subject_kind": "waba", "waba_id": WABA},
        {"subject_kind": "template", "subject_id": PAUSED_TEMPLATE},
        {"field": "message_template_status_update", "kind": "APPROVED", "waba_id": WABA},
    ]
    for params in cases:
        filtered = everything(server, "/api/v1/events", **params)
        expected = [e for e in every if all(e[k] == v for k, v in params.items())]
        assert filtered, params
        assert filtered == expected, params
        assert len(filtered) < len(every)
    error_of(get(server, "/api/v1/events", subject_kind="planet"), 400)


def test_event_time_filters_accept_iso_8601_and_unix_seconds(server: LiveServer) -> None:
    load_golden(server)
    every = everything(server, "/api/v1/events")
    since, until = 1751247548, 1756684800  # 2025-06-30T01:39:08Z .. 2025-09-01T00:00:00Z
    times = [utc(e["occurred_at"]) for e in every]
    lower = datetime.fromtimestamp(since, UTC)
    upper = datetime.fromtimestamp(until, UTC)
    assert lower in times  # the lower bound is inclusive: an event sits on it
    assert upper not in times  # no doubt about the upper bound
    expected = [e for e, t in zip(every, times, strict=True) if lower <= t < upper]
    assert 0 < len(expected) < len(every)
    spellings = [
        {"since": str(since), "until": str(until)},
        {"since": f"{since}.0", "until": f"{until}"},
        {"since": "2025-06-30T01:39:08Z", "until": "2025-09-01T00:00:00Z"},
        {"since": "2025-06-30T01:39:08+00:00", "until": "2025-09-01T00:00:00.000000Z"},
        {"since": "2025-06-30T03:39:08+02:00", "until": "2025-08-31T20:00:00-04:00"},
        {"since": "2025-06-30T01:39:08", "until": "2025-09-01T00:00:00"},
        {"since": "2025-06-30T01:39:08Z", "until": "2025-09-01"},
    ]
    for params in spellings:
        assert everything(server, "/api/v1/events", **params) == expected, params
    only_since = everything(server, "/api/v1/events", since=str(since))
    assert only_since == [e for e, t in zip(every, times, strict=True) if t >= lower]
    only_until = everything(server, "/api/v1/events", until="2025-09-01T00:00:00Z")
    assert only_until == [e for e, t in zip(every, times, strict=True) if t < upper]
    combined = everything(
        server,
        "/api/v1/events",
        since=str(since),
        until=str(until),
        field="message_template_status_update",
    )
    assert combined == [e for e in expected if e["field"] == "message_template_status_update"]
    assert combined


BAD_TIMES = [
    "yesterday",
    "2025-13-01",
    "2025-06-31T00:00:00Z",
    "nan",
    "1751247548s",
    "99999999999999999999",
    "12:00",
    "2025-06-30T25:00:00Z",
    "<script>",
]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/events",
        f"/api/v1/phone-numbers/{DISPLAY}/history",
        f"/api/v1/templates/{QUALITY_TEMPLATE}/history",
    ],
)
def test_bad_time_is_refused(server: LiveServer, path: str) -> None:
    load_golden(server)
    for name in ("since", "until"):
        for bad in BAD_TIMES:
            response = server.client.get(path, params={name: bad}, headers=AUTH)
            error = error_of(response, 400)
            assert name in error["message"], (name, bad, error)


def test_history_filters(server: LiveServer) -> None:
    load_golden(server)
    path = f"/api/v1/phone-numbers/{DISPLAY}/history"
    every = everything(server, path)
    flagged_at = 1719312000  # legacy_flagged.json: 2024-06-25T10:40:00Z
    for spelling in (str(flagged_at), "2024-06-25T10:40:00Z", "2024-06-25T12:40:00+02:00"):
        since = everything(server, path, since=spelling)
        assert since == [r for r in every if utc(r["occurred_at"]) >= utc(at(flagged_at))]
        assert 0 < len(since) < len(every)
    status = everything(server, path, field="status")
    assert status == [r for r in every if r["field"] == "status"]
    assert [(r["old_value"], r["new_value"]) for r in status][:2] == [
        (None, "FLAGGED"),
        ("FLAGGED", "CONNECTED"),
    ]
    window = everything(
        server, path, field="messaging_limit", since="2025-01-01T00:00:00Z", until="1760000000"
    )
    assert window == [
        r
        for r in every
        if r["field"] == "messaging_limit"
        and utc("2025-01-01T00:00:00Z") <= utc(r["occurred_at"]) < utc(at(1760000000))
    ]
    assert window
    assert everything(server, path, field="no_such_field") == []


# -- normalised values --------------------------------------------------------------------------


def test_language_is_normalised(server: LiveServer) -> None:
    files = [
        "message_template_quality_update/green_to_yellow.json",
        "message_template_quality_update/yellow_to_red.json",
        "message_template_status_update/pending.json",
        "message_template_status_update/approved.json",
        "type_drift/template_id_string.json",
        "template_category_update/impending.json",
    ]
    for name in files:
        assert '"en-US"' in webhook(name).decode()
    post_bodies(server, *(webhook(name) for name in files))
    post_bodies(
        server,
        envelope(
            change(
                "message_template_status_update",
                {
                    "event": "APPROVED",
                    "message_template_id": 7100000000000001,
                    "message_template_name": "pedido",
                    "message_template_language": "pt-BR",
                    "reason": "NONE",
                    "message_template_category": "UTILITY",
                },
                1760000000,
            )
        ),
    )
    languages = {t["id"]: t["language"] for t in everything(server, "/api/v1/templates")}
    assert languages == {
        QUALITY_TEMPLATE: "en_US",
        "1689556908129832": "en_US",
        "1689556908129890": "en_US",
        "278077987957091": "en_US",
        "7100000000000001": "pt_BR",
    }


def test_messaging_limits_are_tier_strings(server: LiveServer) -> None:
    capability = [
        "business_capability_update/v24_int_2000.json",
        "business_capability_update/legacy_per_phone_unlimited.json",
        "business_capability_update/v24_string_unlimited.json",
        "business_capability_update/v24_string_tier_10k.json",
        "business_capability_update/legacy_per_phone_250.json",
    ]
    post_bodies(server, *(webhook(name) for name in capability))
    post_bodies(server, webhook("phone_number_quality_update/max_daily_conversations_int.json"))
    t = 1760100000
    post_bodies(
        server,
        envelope(
            phone_quality("15550009991", t, max_daily_conversations_per_business=-1),
            phone_quality("15550009992", t, max_daily_conversations_per_business="UNLIMITED"),
            phone_quality("15550009993", t, max_daily_conversations_per_business="2000"),
            phone_quality("15550009994", t, max_daily_conversations_per_business=10000),
            phone_quality("15550009995", t, current_limit="TIER_2K"),
            phone_quality("15550009996", t, max_daily_conversations_per_business="-1"),
            phone_quality("15550009997", t, max_daily_conversations_per_business=2000),
        ),
    )
    limits = {
        p["display_phone_number"]: p["messaging_limit"]
        for p in everything(server, "/api/v1/phone-numbers")
    }
    assert limits == {
        "15557741236": "TIER_2K",  # the JSON integer 2000
        "15550009991": "TIER_UNLIMITED",
        "15550009992": "TIER_UNLIMITED",
        "15550009993": "TIER_2K",
        "15550009994": "TIER_10K",
        "15550009995": "TIER_2K",
        "15550009996": "TIER_UNLIMITED",
        "15550009997": "TIER_2K",
    }
    kinds = sorted(
        e["kind"] for e in everything(server, "/api/v1/events", field="business_capability_update")
    )
    assert kinds == sorted(["TIER_2K", "TIER_UNLIMITED", "TIER_UNLIMITED", "TIER_10K", "TIER_250"])


def test_all_golden_values_use_meta_spellings(server: LiveServer) -> None:
    load_golden(server)
    for phone in everything(server, "/api/v1/phone-numbers"):
        assert phone["messaging_limit"] in TIERS | {None}, phone
        assert phone["legacy_tier"] in TIERS | {None, "UNKNOWN"}, phone
        assert phone["quality_rating"] in QUALITY | {None}, phone
        assert phone["display_phone_number"] is None or phone["display_phone_number"].isdigit()
    for template in everything(server, "/api/v1/templates"):
        assert template["quality_score"] in QUALITY | {None}, template
        language = template["language"]
        assert language is None or "-" not in language, template


def test_na_quality_is_unknown(server: LiveServer) -> None:
    post_bodies(
        server,
        envelope(
            template_quality(7200000000000001, "NA", 1760000000),
            template_quality(7200000000000002, "GREEN", 1760000000),
        ),
    )
    scores = {t["id"]: t["quality_score"] for t in everything(server, "/api/v1/templates")}
    assert scores == {"7200000000000001": "UNKNOWN", "7200000000000002": "GREEN"}
    unknown = everything(server, "/api/v1/templates", quality_score="UNKNOWN")
    assert [t["id"] for t in unknown] == ["7200000000000001"]
    history = everything(server, "/api/v1/templates/7200000000000001/history")
    assert [(r["field"], r["old_value"], r["new_value"]) for r in history] == [
        ("quality_score", None, "UNKNOWN")
    ]
    kinds = {e["subject_id"]: e["kind"] for e in everything(server, "/api/v1/events")}
    assert kinds["7200000000000001"] == "UNKNOWN"


# -- history ------------------------------------------------------------------------------------


def test_phone_number_history_by_id_and_by_display_number(server: LiveServer) -> None:
    load_golden(server)
    by_id = everything(server, f"/api/v1/phone-numbers/{PHONE_ID}/history")
    assert by_id
    for ident in (
        DISPLAY,
        "+1 555-078-3881",
        "+15550783881",
        "1 (555) 078-3881",
        "+1.555.078.3881",
    ):
        assert everything(server, f"/api/v1/phone-numbers/{ident}/history") == by_id, ident
    limits = transitions(by_id, "messaging_limit")
    # display_number_formatted.json: "+1 555-078-3881" is the same number, TIER_10K -> TIER_100K
    assert ("TIER_UNLIMITED", "TIER_100K", at(1763078400)) in limits
    assert transitions(by_id, "status")[:2] == [
        (None, "FLAGGED", at(1719312000)),
        ("FLAGGED", "CONNECTED", at(1719916800)),
    ]
    phone = next(p for p in everything(server, "/api/v1/phone-numbers") if p["id"] == PHONE_ID)
    assert phone["display_phone_number"] == DISPLAY
    assert phone["waba_id"] == WABA
    numbers = [p["display_phone_number"] for p in everything(server, "/api/v1/phone-numbers")]
    assert numbers.count(DISPLAY) == 1


def test_history_of_a_number_whose_id_is_not_known(server: LiveServer) -> None:
    load_golden(server)
    phone = next(
        p
        for p in everything(server, "/api/v1/phone-numbers")
        if p["display_phone_number"] == DISPLAY_ONLY
    )
    assert phone["id"] is None
    assert phone["messaging_limit"] == "TIER_250"
    history = everything(server, f"/api/v1/phone-numbers/{DISPLAY_ONLY}/history")
    assert transitions(history, "messaging_limit") == [(None, "TIER_250", at(1761840000))]


def test_template_history_shows_transitions_with_their_time(server: LiveServer) -> None:
    load_golden(server)
    quality = everything(server, f"/api/v1/templates/{QUALITY_TEMPLATE}/history")
    assert transitions(quality, "quality_score") == [
        (None, "YELLOW", at(1674864290)),
        ("YELLOW", "RED", at(1674950690)),
        ("RED", "UNKNOWN", at(1775692800)),
    ]
    paused = everything(server, f"/api/v1/templates/{PAUSED_TEMPLATE}/history")
    assert transitions(paused, "status") == [
        (None, "PAUSED", at(1758499200)),
        ("PAUSED", "APPROVED", at(1758510000)),
        ("APPROVED", "DISABLED", at(1758585600)),
        ("DISABLED", "PAUSED", at(1758672000)),
        ("PAUSED", "APPROVED", at(1758931200)),
    ]
    assert [(o, n) for o, n, _ in transitions(paused, "pause_count")] == [("0", "1"), ("1", "2")]
    template = next(
        t for t in everything(server, "/api/v1/templates") if t["id"] == PAUSED_TEMPLATE
    )
    assert template["status"] == "APPROVED"
    assert template["pause_count"] == 2


def test_late_event_is_history_but_not_state(server: LiveServer) -> None:
    load_golden(server)
    history = everything(server, f"/api/v1/templates/{OUT_OF_ORDER_TEMPLATE}/history")
    assert transitions(history, "status") == [
        (None, "APPROVED", at(1762527600)),
        ("APPROVED", "PAUSED", at(1762614000)),
    ]
    template = next(
        t for t in everything(server, "/api/v1/templates") if t["id"] == OUT_OF_ORDER_TEMPLATE
    )
    assert template["status"] == "PAUSED"


def all_histories(server: LiveServer) -> dict[str, list[dict[str, Any]]]:
    histories = {}
    for template in everything(server, "/api/v1/templates"):
        path = f"/api/v1/templates/{template['id']}/history"
        histories[path] = everything(server, path)
    for phone in everything(server, "/api/v1/phone-numbers"):
        ident = phone["id"] or phone["display_phone_number"]
        path = f"/api/v1/phone-numbers/{ident}/history"
        histories[path] = everything(server, path)
    return histories


def test_history_rows_chain_old_to_new(server: LiveServer) -> None:
    """Per field, each row's old value is the previous row's new value."""
    load_golden(server, one_by_one=True)
    failures = []
    for path, rows in all_histories(server).items():
        for field, chain in history_by_field(rows).items():
            for before, after in itertools.pairwise(chain):
                if after["old_value"] != before["new_value"]:
                    failures.append(f"{path} {field}: {before} then {after}")
    assert not failures, "\n".join(failures)


def test_history_rows_are_real_changes(server: LiveServer) -> None:
    """A history row records a change: its old and new values differ."""
    load_golden(server, one_by_one=True)
    failures = [
        f"{path}: {row['field']} {row['old_value']!r} -> {row['new_value']!r} "
        f"at {row['occurred_at']}"
        for path, rows in all_histories(server).items()
        for row in rows
        if row["old_value"] == row["new_value"]
    ]
    assert not failures, "\n".join(failures)


def test_a_late_event_with_the_current_value_leaves_no_empty_change(server: LiveServer) -> None:
    """Newer TIER_10K first, then an older TIER_10K: the newer one is no longer a change."""
    display = "15550009981"
    post_bodies(server, envelope(phone_quality(display, 1760000000, current_limit="TIER_10K")))
    post_bodies(server, envelope(phone_quality(display, 1750000000, current_limit="TIER_10K")))
    history = everything(server, f"/api/v1/phone-numbers/{display}/history")
    assert transitions(history, "messaging_limit") == [(None, "TIER_10K", at(1750000000))]
    assert transitions(history, "legacy_tier") == [(None, "TIER_10K", at(1750000000))]


def test_a_late_event_between_two_changes(server: LiveServer) -> None:
    display = "15550009982"
    post_bodies(server, envelope(phone_quality(display, 1750000000, current_limit="TIER_1K")))
    post_bodies(server, envelope(phone_quality(display, 1770000000, current_limit="TIER_100K")))
    post_bodies(server, envelope(phone_quality(display, 1760000000, current_limit="TIER_10K")))
    history = everything(server, f"/api/v1/phone-numbers/{display}/history")
    assert transitions(history, "messaging_limit") == [
        (None, "TIER_1K", at(1750000000)),
        ("TIER_1K", "TIER_10K", at(1760000000)),
        ("TIER_10K", "TIER_100K", at(1770000000)),
    ]
    phone = everything(server, "/api/v1/phone-numbers")[0]
    assert phone["messaging_limit"] == "TIER_100K"


def test_unknown_number_or_template_is_404_json(server: LiveServer) -> None:
    load_golden(server)
    for path in (
        "/api/v1/phone-numbers/19999999999/history",
        "/api/v1/phone-numbers/999/history",
        "/api/v1/phone-numbers/not-a-number/history",
        "/api/v1/templates/424242/history",
        "/api/v1/templates/order_confirmation/history",
        "/api/v1/quarantine/424242",
    ):
        assert error_of(get(server, path), 404)["code"] == "not_found", path


# -- quarantine ---------------------------------------------------------------------------------


def test_quarantine_lists_the_broken_golden_bodies(server: LiveServer) -> None:
    load_golden(server)
    items = everything(server, "/api/v1/quarantine")
    assert len(items) == sum(int(m["broken_changes"]) for m in BROKEN)
    assert server.api("/api/v1/status")["webhooks"]["quarantined"] == len(BROKEN)
    for item in items:
        assert item["resolved_at"] is None
        assert item["error"]
        assert isinstance(item["raw_id"], int)
    assert [i["id"] for i in items] == sorted((i["id"] for i in items), reverse=True)
    bodies = []
    for item in items:
        detail = server.api(f"/api/v1/quarantine/{item['id']}")
        assert {k: detail[k] for k in item} == item
        bodies.append(detail["body"])
    expected = [webhook(m["file"]).decode("utf-8", errors="replace") for m in BROKEN]
    assert sorted(bodies) == sorted(expected)
    by_body = dict(zip(bodies, items, strict=True))
    missing_id = by_body[webhook("broken/template_status_missing_template_id.json").decode()]
    assert missing_id["field"] == "message_template_status_update"
    assert missing_id["path"] == "entry[0].changes[0]"
    mixed = by_body[webhook("broken/mixed_valid_and_broken_change.json").decode()]
    assert mixed["path"] == "entry[0].changes[1]"
    assert by_body[webhook("broken/not_json.json").decode()]["path"] == ""


def test_quarantine_detail_shows_the_raw_body(server: LiveServer) -> None:
    body = envelope(
        change(
            "message_template_status_update",
            {"event": "APPROVED", "message_template_name": "x"},
            1760000000,
        )
    )
    post_bodies(server, body)
    [item] = everything(server, "/api/v1/quarantine")
    detail = server.api(f"/api/v1/quarantine/{item['id']}")
    assert detail["body"] == body.decode()
    assert "message_template_id" in detail["error"]
    error_of(get(server, "/api/v1/quarantine/not-an-id"), 400)


# -- safety of text that came from Meta or customers --------------------------------------------


def test_meta_and_customer_text_comes_back_as_json_data(server: LiveServer) -> None:
    load_golden(server)
    script = "<script>alert('x')</script><img src=x onerror=\"alert(1)\">&amp;"
    post_bodies(
        server,
        envelope(
            template_status(7300000000000001, "REJECTED", 1760000000, message_template_name=script)
        ),
        b'{"object": "whatsapp_business_account", "entry": "<script>alert(2)</script>"}',
    )
    raw = json.loads(webhook("account_alerts/html_script_in_description.json"))
    description = raw["entry"][0]["changes"][0]["value"]["alert_info"]["alert_description"]
    assert "<script>" in description

    response = get(server, "/api/v1/events", field="account_alerts", limit=10_000)
    assert response.headers["content-type"].startswith("application/json")
    values = [e["value"] for e in response.json()["items"]]
    assert raw["entry"][0]["changes"][0]["value"] in values
    assert any(v["alert_info"]["alert_description"] == description for v in values)

    response = get(server, "/api/v1/templates", name=script)
    assert response.headers["content-type"].startswith("application/json")
    assert [t["name"] for t in response.json()["items"]] == [script]

    quarantined = everything(server, "/api/v1/quarantine")
    response = get(server, f"/api/v1/quarantine/{quarantined[0]['id']}")
    assert response.headers["content-type"].startswith("application/json")
    assert "<script>alert(2)</script>" in response.json()["body"]

    not_found = get(server, "/api/v1/phone-numbers/<img src=x onerror=alert(1)>/history")
    error_of(not_found, 404)
    bad = get(server, "/api/v1/events", since="<script>alert(3)</script>")
    error_of(bad, 400)
    for response in (not_found, bad):
        assert "text/html" not in response.headers["content-type"]


# -- OpenAPI ------------------------------------------------------------------------------------


def test_openapi_document_lists_every_endpoint(server: LiveServer) -> None:
    load_golden(server)
    document = server.api("/api/v1/openapi.json")
    assert str(document["openapi"]).startswith("3.")
    paths = document["paths"]
    expected = {
        "/api/v1/status": set(),
        "/api/v1/phone-numbers": {"limit", "cursor", "waba_id"},
        "/api/v1/phone-numbers/{number}/history": {"limit", "cursor", "since", "until", "field"},
        "/api/v1/templates": {"limit", "cursor", "waba_id", "status", "quality_score"},
        "/api/v1/templates/{template_id}/history": {"limit", "cursor", "since", "until", "field"},
        "/api/v1/events": {
            "limit",
            "cursor",
            "since",
            "until",
            "field",
            "waba_id",
            "kind",
            "subject_kind",
        },
        "/api/v1/quarantine": {"limit", "cursor"},
        "/api/v1/quarantine/{item_id}": set(),
    }
    for path, parameters in expected.items():
        assert path in paths, f"{path} not in {sorted(paths)}"
        operation = paths[path]["get"]
        names = {p["name"] for p in operation.get("parameters", [])}
        assert parameters <= names, (path, names)
        assert "200" in operation["responses"]
        assert "401" in operation["responses"], path
    schemas = document["components"]["schemas"]
    for model in ("PhoneNumber", "Template", "HistoryRow", "EventOut", "QuarantineItem"):
        assert model in schemas
    assert set(schemas["PhoneNumber"]["properties"]) >= PHONE_FIELDS


# -- times --------------------------------------------------------------------------------------


def check_times(value: Any, where: str, failures: list[str]) -> None:
    if isinstance(value, dict):
        if value.get("field") in TIME_FIELDS and "new_value" in value:  # history of a time
            for key in ("old_value", "new_value"):
                if value[key] is not None and not ISO_Z.match(value[key]):
                    failures.append(f"{where}.{key} = {value[key]!r}")
        for key, inner in value.items():
            if (
                key in TIME_FIELDS
                and inner is not None
                and (not isinstance(inner, str) or not ISO_Z.match(inner))
            ):
                failures.append(f"{where}.{key} = {inner!r}")
            elif key != "value":  # an event's raw value is Meta's, as Meta sent it
                check_times(inner, f"{where}.{key}", failures)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            check_times(inner, f"{where}[{index}]", failures)


def test_times_are_iso_8601_utc_ending_in_z(server: LiveServer) -> None:
    load_golden(server)
    failures: list[str] = []
    answers: dict[str, Any] = {
        path: everything(server, path)
        for path in (
            "/api/v1/phone-numbers",
            "/api/v1/templates",
            "/api/v1/events",
            "/api/v1/quarantine",
        )
    }
    answers.update(all_histories(server))
    quarantined = answers["/api/v1/quarantine"]
    answers["detail"] = server.api(f"/api/v1/quarantine/{quarantined[0]['id']}")
    for where, answer in answers.items():
        check_times(answer, where, failures)
    assert not failures, "\n".join(failures[:50])
    seen = {key for answer in answers.values() for key in _set_keys(answer)}
    assert seen >= TIME_FIELDS - {"resolved_at", "category_change_at"}, "a time field unchecked"
    approved = [
        e
        for e in answers["/api/v1/events"]
        if e["field"] == "message_template_status_update"
        and e["subject_id"] == "1689556908129832"
        and e["kind"] == "APPROVED"
    ]
    assert {e["occurred_at"] for e in approved} == {at(1751247548), at(1751333948)}
    disabled = next(t for t in answers["/api/v1/templates"] if t["id"] == "1120437619865302")
    assert disabled["disable_date"] == "2025-09-30T00:00:00Z"  # "September 30, 2025"


def _set_keys(value: Any) -> Iterator[str]:
    """Keys that hold a value (not null) anywhere in an answer, outside raw event values."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if inner is not None:
                yield key
            if key != "value":
                yield from _set_keys(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _set_keys(inner)


def test_time_parameters_with_an_offset_are_converted_to_utc(server: LiveServer) -> None:
    load_golden(server)
    path = f"/api/v1/templates/{QUALITY_TEMPLATE}/history"
    utc_answer = everything(server, path, since="2023-01-29T00:04:50Z")
    offset_answer = everything(server, path, since="2023-01-28T19:04:50-05:00")
    assert utc_answer == offset_answer
    assert [r["new_value"] for r in utc_answer] == ["RED", "UNKNOWN"]


# -- status -------------------------------------------------------------------------------------


def test_status_counts(server: LiveServer) -> None:
    load_golden(server)
    status = server.api("/api/v1/status")
    assert status["webhooks"] == {
        "received": len(manifest()),
        "pending": 0,
        "processed": len(manifest()),
        "quarantined": len(BROKEN),
    }
    assert status["events"] == sum(int(m["management_events"]) for m in manifest()) - 1
    assert status["database"] in ("sqlite", "postgresql")
