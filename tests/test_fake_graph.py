"""The fake Graph API over real HTTP: paging, fields, tokens, usage headers, limits, faults."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from waquality.graph.fake import (
    FakeGraph,
    FakeWaba,
    Fault,
    Scenario,
    decode_cursor,
    parse_fields,
    serve,
)

T0 = 1_760_000_000.0
PHONE_DEFAULTS = {"id", "display_phone_number", "verified_name", "quality_rating"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Graph:
    fake: FakeGraph
    scenario: Scenario
    clock: Clock
    http: httpx.Client
    url: str

    @property
    def waba(self) -> FakeWaba:
        return next(iter(self.scenario.wabas.values()))

    def get(self, path: str, token: str | None = None, **params: Any) -> httpx.Response:
        """GET ``/v24.0/<path>`` with the first WABA's token unless another is given."""
        token = self.waba.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.get(f"/v24.0/{path.lstrip('/')}", params=params, headers=headers)


def start(**options: Any) -> Iterator[Graph]:
    scenario = Scenario.generate(wabas=3, phones=4, templates=250)
    clock = Clock()
    fake = FakeGraph(scenario, clock=clock, **options)
    with serve(fake) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield Graph(fake, scenario, clock, http, url)


@pytest.fixture
def graph() -> Iterator[Graph]:
    yield from start()


@pytest.fixture
def tight() -> Iterator[Graph]:
    """WABA allowance of 5 calls an hour, app allowance of 8."""
    yield from start(waba_calls_per_hour=5, app_calls_per_hour=8)


def error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    assert body["message"].startswith(f"(#{body['code']}) ")
    assert body["error_data"]["messaging_product"] == "whatsapp"
    assert body["fbtrace_id"].startswith("A")
    return body


def business_usage(response: httpx.Response) -> dict[str, Any]:
    usage: dict[str, list[dict[str, Any]]] = orjson.loads(
        response.headers["X-Business-Use-Case-Usage"]
    )
    ((figures,),) = usage.values()
    assert figures["type"] == "whatsapp_business_management"
    return figures


# -- scenario -------------------------------------------------------------------------------


def test_generated_scenario_is_deterministic_realistic_and_mostly_healthy() -> None:
    scenario = Scenario.generate(wabas=3, phones=25, templates=250)
    assert scenario == Scenario.generate(wabas=3, phones=25, templates=250)
    assert scenario != Scenario.generate(wabas=3, phones=25, templates=250, seed=2)
    phones = [p for w in scenario.wabas.values() for p in w.phones.values()]
    templates = [t for w in scenario.wabas.values() for t in w.templates.values()]
    ids = [*scenario.wabas, *scenario.businesses, *(p.id for p in phones)]
    ids += [t.id for t in templates]
    assert len(ids) == len(set(ids)) == 3 + 1 + 75 + 750
    assert all(i.isdigit() and 15 <= len(i) <= 16 for i in ids)
    assert len({p.display_phone_number for p in phones}) == 75
    for waba in scenario.wabas.values():
        assert len({t.name for t in waba.templates.values()}) == 250
    assert sum(p.status == "CONNECTED" for p in phones) > 50
    assert sum(p.quality_rating == "GREEN" for p in phones) > 50
    assert sum(t.status == "APPROVED" for t in templates) > 500
    assert {t.category for t in templates} == {"MARKETING", "UTILITY", "AUTHENTICATION"}
    assert len({t.language for t in templates}) > 1
    (business,) = scenario.businesses.values()
    assert len(business.owned) == 2 and len(business.client) == 1


def test_field_lists_and_cursors() -> None:
    assert parse_fields("id, throughput{level},quality_score{score,date},x.limit(5)") == [
        "id",
        "throughput",
        "quality_score",
        "x",
    ]
    assert parse_fields(None) is None and parse_fields(" ") is None
    with pytest.raises(ValueError):
        decode_cursor("bm90LW91cnM")


# -- reads, fields, paging ------------------------------------------------------------------


def test_templates_page_through_with_next_each_exactly_once(graph: Graph) -> None:
    response = graph.get(f"{graph.waba.id}/message_templates", limit=100, fields="id,name")
    seen: list[str] = []
    sizes = []
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        sizes.append(len(body["data"]))
        seen += [item["id"] for item in body["data"]]
        assert all(set(item) == {"id", "name"} for item in body["data"])
        cursors = body["paging"]["cursors"]
        assert not cursors["after"].isdigit() and "100" not in cursors["after"]
        if "next" not in body["paging"]:
            break
        following = body["paging"]["next"]
        assert following.startswith(graph.url + "/v24.0/")
        assert "fields=id%2Cname" in following and "limit=100" in following
        response = graph.http.get(
            following, headers={"Authorization": f"Bearer {graph.waba.token}"}
        )
    assert sizes == [100, 100, 50]
    assert seen == list(graph.waba.templates)

    back = graph.get(f"{graph.waba.id}/message_templates", limit=100, before=cursors["before"])
    assert [t["id"] for t in back.json()["data"]] == seen[100:200]
    assert "previous" in back.json()["paging"]


def test_default_limit_cap_and_bad_cursor(graph: Graph) -> None:
    path = f"{graph.waba.id}/message_templates"
    assert len(graph.get(path).json()["data"]) == 25
    assert len(graph.get(path, limit=500).json()["data"]) == 100
    bad = graph.get(path, after="garbage!")
    assert bad.status_code == 400 and error(bad)["code"] == 100


def test_next_keeps_access_token_in_the_query(graph: Graph) -> None:
    path = f"/v24.0/{graph.waba.id}/phone_numbers"
    first = graph.http.get(path, params={"access_token": graph.waba.token, "limit": 3}).json()
    second = graph.http.get(first["paging"]["next"]).json()
    assert len(first["data"]) == 3 and len(second["data"]) == 1
    assert "next" not in second["paging"]


def test_field_selection(graph: Graph) -> None:
    phone = next(iter(graph.waba.phones.values()))
    phone.throughput, phone.can_send_message = "HIGH", "BLOCKED"
    fields = "status,throughput{level},health_status,no_such_field"
    body = graph.get(phone.id, fields=fields).json()
    assert set(body) == {"id", "status", "throughput", "health_status"}
    assert body["throughput"] == {"level": "HIGH"}
    health = body["health_status"]
    assert health["can_send_message"] == "BLOCKED"
    entity = health["entities"][0]
    assert entity["entity_type"] == "PHONE_NUMBER" and entity["id"] == phone.id
    assert entity["errors"][0]["error_code"] == 141002

    template = next(iter(graph.waba.templates.values()))
    body = graph.get(template.id, fields="name,quality_score{score,date}").json()
    assert body == {
        "name": template.name,
        "quality_score": {"score": template.quality_score, "date": template.quality_date},
        "id": template.id,
    }


def test_phone_numbers_default_fields(graph: Graph) -> None:
    listed = graph.get(f"{graph.waba.id}/phone_numbers").json()["data"]
    assert len(listed) == 4
    assert all(set(item) == PHONE_DEFAULTS for item in listed)
    phone = next(iter(graph.waba.phones.values()))
    assert graph.get(phone.id).json() == {
        "id": phone.id,
        "display_phone_number": phone.display_phone_number,
        "verified_name": phone.verified_name,
        "quality_rating": phone.quality_rating,
    }


def test_single_objects_and_changes_between_reads(graph: Graph) -> None:
    waba = graph.waba
    for each in waba.phones.values():
        each.can_send_message = "AVAILABLE"
    phone = next(iter(waba.phones.values()))
    phone.quality_rating, phone.status, phone.can_send_message = "YELLOW", "FLAGGED", "LIMITED"
    phone.messaging_limit_tier = None
    fields = "quality_rating,status,messaging_limit_tier,whatsapp_business_manager_messaging_limit"
    body = graph.get(phone.id, fields=fields).json()
    assert body["quality_rating"] == "YELLOW" and body["status"] == "FLAGGED"
    assert "messaging_limit_tier" not in body
    assert body["whatsapp_business_manager_messaging_limit"] == phone.messaging_limit

    template = next(iter(waba.templates.values()))
    template.status = "PAUSED"
    body = graph.get(template.id, fields="status,category,language,rejected_reason").json()
    assert body["status"] == "PAUSED" and body["rejected_reason"] == template.rejected_reason

    fields = "id,name,whatsapp_business_manager_messaging_limit,health_status"
    body = graph.get(waba.id, fields=fields).json()
    assert body["name"] == waba.name
    assert body["whatsapp_business_manager_messaging_limit"] == waba.messaging_limit
    assert body["health_status"]["can_send_message"] == "LIMITED"
    entities = body["health_status"]["entities"]
    assert [e["entity_type"] for e in entities] == ["WABA"] + ["PHONE_NUMBER"] * 4
    limited = next(e for e in entities if e["id"] == phone.id)
    assert limited["additional_info"]
    assert graph.get(waba.id).json() == {"id": waba.id, "name": waba.name}


def test_subscribed_apps(graph: Graph) -> None:
    path = f"{graph.waba.id}/subscribed_apps"
    (app,) = graph.get(path).json()["data"]
    data = app["whatsapp_business_api_data"]
    assert data["id"] == graph.scenario.app_id and data["name"] == graph.scenario.app_name
    assert data["link"].startswith("https://")
    graph.waba.subscribed = False
    assert graph.get(path).json() == {"data": []}


def test_business_lists_its_owned_and_client_wabas(graph: Graph) -> None:
    (business,) = graph.scenario.businesses.values()
    owned = graph.get(f"{business.id}/owned_whatsapp_business_accounts", business.token).json()
    client = graph.get(f"{business.id}/client_whatsapp_business_accounts", business.token)
    assert [w["id"] for w in owned["data"]] == business.owned
    assert [w["id"] for w in client.json()["data"]] == business.client
    assert all(w["name"] == graph.scenario.wabas[w["id"]].name for w in owned["data"])
    assert graph.get(business.id, business.token).json()["id"] == business.id
    # The business's token reads its WABAs; a WABA's token does not read the business.
    assert graph.get(f"{business.client[0]}/phone_numbers", business.token).status_code == 200
    refused = graph.get(f"{business.id}/owned_whatsapp_business_accounts")
    assert refused.status_code == 403 and error(refused)["code"] == 200


def test_unknown_objects_edges_and_paths(graph: Graph) -> None:
    unknown = graph.get("999999999999999")
    body = error(unknown)
    assert unknown.status_code == 400 and body["code"] == 100
    assert body["type"] == "GraphMethodException"
    assert "Object with ID '999999999999999' does not exist" in body["message"]
    edge = graph.get(f"{graph.waba.id}/no_such_edge")
    assert edge.status_code == 400 and error(edge)["code"] == 100
    unversioned = graph.http.get(f"/{graph.waba.id}")
    assert unversioned.status_code == 400 and error(unversioned)["code"] == 2500
    assert graph.get(f"{graph.waba.id}").status_code == 200
    assert graph.http.get(f"/v19.0/{graph.waba.id}?access_token={graph.waba.token}").is_success


# -- tokens ---------------------------------------------------------------------------------


def test_auth_failures(graph: Graph) -> None:
    path = f"{graph.waba.id}/phone_numbers"
    missing = graph.get(path, token="")
    assert missing.status_code == 401 and error(missing)["code"] == 190
    wrong = graph.get(path, token="EAAnot-a-token")
    assert wrong.status_code == 401
    assert error(wrong)["code"] == 190 and error(wrong)["type"] == "OAuthException"

    other = list(graph.scenario.wabas.values())[1]
    denied = graph.get(path, token=other.token)
    assert denied.status_code == 403 and error(denied)["code"] == 200
    phone = next(iter(graph.waba.phones.values()))
    assert graph.get(phone.id, token=other.token).status_code == 403

    graph.scenario.expired_tokens.add(graph.waba.token)
    expired = graph.get(path)
    assert expired.status_code == 401 and error(expired)["code"] == 190
    assert "Session has expired" in error(expired)["message"]
    assert graph.get(f"{other.id}/phone_numbers", token=other.token).status_code == 200


# -- usage and limits -----------------------------------------------------------------------


def test_usage_headers_report_percentages(tight: Graph) -> None:
    for n in range(1, 5):
        response = tight.get(f"{tight.waba.id}/phone_numbers")
        figures = business_usage(response)
        assert figures["call_count"] == n * 100 // 5
        assert figures["estimated_time_to_regain_access"] == 0
        assert 0 <= figures["total_cputime"] <= figures["call_count"]
        assert 0 <= figures["total_time"] <= figures["call_count"]
        app = orjson.loads(response.headers["X-App-Usage"])
        assert app["call_count"] == n * 100 // 8
        assert "Retry-After" not in response.headers
    (business,) = tight.scenario.businesses.values()
    response = tight.get(business.id, business.token)
    assert "X-Business-Use-Case-Usage" not in response.headers
    assert orjson.loads(response.headers["X-App-Usage"])["call_count"] == 5 * 100 // 8


def test_waba_rate_limit_and_recovery_when_the_hour_passes(tight: Graph) -> None:
    path = f"{tight.waba.id}/phone_numbers"
    for _ in range(5):
        assert tight.get(path).status_code == 200
        tight.clock.now += 600  # calls at T0, T0+10min, ..., T0+40min
    refused = tight.get(path)  # at T0+50min: the call at T0 leaves the window at T0+60min
    assert refused.status_code == 400 and error(refused)["code"] == 80007
    figures = business_usage(refused)
    assert figures["call_count"] >= 100 and figures["estimated_time_to_regain_access"] == 10

    other = list(tight.scenario.wabas.values())[1]
    assert tight.get(f"{other.id}/phone_numbers", other.token).status_code == 200
    phone = next(iter(tight.waba.phones.values()))
    assert error(tight.get(phone.id))["code"] == 80007  # the phone counts against its WABA

    tight.clock.now = T0 + 3600 + 1
    recovered = tight.get(path)
    assert recovered.status_code == 200
    assert business_usage(recovered)["call_count"] == 100
    assert [c.error_code for c in tight.fake.calls_for(tight.waba.id)] == [None] * 5 + [
        80007,
        80007,
        None,
    ]


def test_waba_limit_code_can_be_80008() -> None:
    for graph in start(waba_calls_per_hour=1, waba_limit_code=80008):
        graph.get(graph.waba.id)
        assert error(graph.get(graph.waba.id))["code"] == 80008


def test_app_rate_limit(tight: Graph) -> None:
    wabas = list(tight.scenario.wabas.values())
    for i in range(8):
        waba = wabas[i % 3]
        assert tight.get(waba.id, waba.token).status_code == 200
    refused = tight.get(wabas[2].id, wabas[2].token)
    assert refused.status_code == 400 and error(refused)["code"] == 4
    assert error(refused)["message"] == "(#4) Application request limit reached"
    assert orjson.loads(refused.headers["X-App-Usage"])["call_count"] >= 100
    tight.clock.now += 3600
    assert tight.get(wabas[2].id, wabas[2].token).status_code == 200


def test_rate_limit_until_a_clock_time(graph: Graph) -> None:
    graph.fake.rate_limit(graph.waba.id, until=T0 + 3600)
    refused = graph.get(graph.waba.id)
    assert error(refused)["code"] == 80007
    assert business_usage(refused)["estimated_time_to_regain_access"] == 60
    graph.clock.now = T0 + 1799
    assert business_usage(graph.get(graph.waba.id))["estimated_time_to_regain_access"] == 31
    graph.clock.now = T0 + 3600
    assert graph.get(graph.waba.id).status_code == 200


# -- faults ---------------------------------------------------------------------------------


INJECTED_ERRORS = [  # fault, HTTP status, Graph error code
    (Fault.RATE_LIMIT, 400, 80007),
    (Fault.APP_RATE_LIMIT, 400, 4),
    (Fault.EXPIRED_TOKEN, 401, 190),
    (Fault.PERMISSION, 403, 200),
    (Fault.SERVER_ERROR, 500, 2),
    (Fault.TRANSIENT, 500, 131000),
    (Fault.NOT_FOUND, 400, 100),
]


def test_injected_graph_errors_once_each(graph: Graph) -> None:
    path = f"{graph.waba.id}/message_templates"
    for fault, status, code in INJECTED_ERRORS:
        graph.fake.inject(fault)
        response = graph.get(path)
        assert response.status_code == status, fault
        body = error(response)
        assert body["code"] == code, fault
        assert body["is_transient"] is (fault in (Fault.SERVER_ERROR, Fault.TRANSIENT)), fault
        if fault is Fault.EXPIRED_TOKEN:
            assert "Session has expired" in body["message"]
        if fault is Fault.RATE_LIMIT:
            assert business_usage(response)["estimated_time_to_regain_access"] >= 1
        assert graph.get(path).status_code == 200, fault  # used up
    assert "X-Business-Use-Case-Usage" in response.headers


def test_bad_gateway_is_html(graph: Graph) -> None:
    graph.fake.inject(Fault.BAD_GATEWAY)
    response = graph.get(graph.waba.id)
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<html>")


def test_malformed_is_a_truncated_json_body(graph: Graph) -> None:
    graph.fake.inject(Fault.MALFORMED)
    response = graph.get(f"{graph.waba.id}/phone_numbers")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.content.startswith(b'{"data":[')
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.content)


def test_slow_delays_the_normal_answer(graph: Graph) -> None:
    graph.fake.inject(Fault.SLOW, delay=0.3)
    started = time.monotonic()
    response = graph.get(graph.waba.id)
    assert time.monotonic() - started >= 0.25
    assert response.json()["id"] == graph.waba.id
    started = time.monotonic()
    graph.get(graph.waba.id)
    assert time.monotonic() - started < 0.25


def test_times_match_and_clear(graph: Graph) -> None:
    templates, phones = f"{graph.waba.id}/message_templates", f"{graph.waba.id}/phone_numbers"
    graph.fake.inject(Fault.SERVER_ERROR, match="/message_templates", times=2)
    assert graph.get(phones).status_code == 200
    assert graph.get(templates).status_code == 500
    assert graph.get(templates).status_code == 500
    assert graph.get(templates).status_code == 200

    graph.fake.inject(Fault.TRANSIENT, times=3)
    graph.fake.inject(Fault.PERMISSION, match="/phone_numbers")
    assert error(graph.get(phones))["code"] == 131000  # oldest first, one fault per request
    graph.fake.clear_faults()
    assert graph.get(phones).status_code == 200
    assert graph.get(templates).status_code == 200


# -- recorded calls -------------------------------------------------------------------------


def test_calls_are_recorded_with_their_waba(graph: Graph) -> None:
    waba, other = list(graph.scenario.wabas.values())[:2]
    phone = next(iter(waba.phones.values()))
    template = next(iter(waba.templates.values()))
    (business,) = graph.scenario.businesses.values()
    graph.get(phone.id, fields="quality_rating")
    graph.get(template.id)
    graph.get(f"{waba.id}/message_templates", limit=5)
    graph.get(f"{other.id}/phone_numbers", other.token)
    graph.get(f"{other.id}/phone_numbers", waba.token)
    graph.get(business.id, business.token)
    graph.get("123456789012345")

    calls = graph.fake.calls
    assert [(c.path, c.waba_id, c.status, c.error_code) for c in calls] == [
        (f"/{phone.id}", waba.id, 200, None),
        (f"/{template.id}", waba.id, 200, None),
        (f"/{waba.id}/message_templates", waba.id, 200, None),
        (f"/{other.id}/phone_numbers", other.id, 200, None),
        (f"/{other.id}/phone_numbers", other.id, 403, 200),
        (f"/{business.id}", None, 200, None),
        ("/123456789012345", None, 400, 100),
    ]
    assert calls[0].method == "GET" and calls[0].at == T0
    assert calls[0].query == {"fields": "quality_rating"}
    assert calls[2].query == {"limit": "5"}
    assert [c.path for c in graph.fake.calls_for(waba.id)] == [
        f"/{phone.id}",
        f"/{template.id}",
        f"/{waba.id}/message_templates",
    ]


def test_serve_stops_on_exit() -> None:
    fake = FakeGraph(Scenario.generate(wabas=1, phones=1, templates=1))
    with serve(fake) as url:
        assert httpx.get(f"{url}/v24.0/1").status_code == 401
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v24.0/1")
