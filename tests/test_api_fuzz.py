"""Property-based: the API, fuzzed from its own OpenAPI document over real HTTP, never answers 500.

Every operation gets generated requests, valid and invalid, against a real server on loopback
holding a little data; the answers must use documented status codes, content types and bodies.
Without the token every operation answers 401.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from builders import envelope, phone_quality, template_status
from conftest import API_TOKEN, LiveServer, make_settings, run_server

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
WATCHED = "104996122399160"
# derandomize: the same examples on every run; database=None: nothing written to .hypothesis/.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    # Requests go over the network to a server with a database: slow by Hypothesis' standards.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _seed(live: LiveServer) -> None:
    bodies = [
        envelope(template_status(806312974732579, "APPROVED", 1751247548)),
        envelope(template_status(806312974732579, "PAUSED", 1751251148, title="Paused")),
        envelope(phone_quality("FLAGGED", 1751247548, current_limit="TIER_2K")),
        b"{not json",  # quarantined
    ]
    for body in bodies:
        assert live.post_webhook(body).status_code == 200
    live.wait_processed()
    created = live.client.post("/api/v1/watched-wabas", json={"waba_id": WATCHED}, headers=AUTH)
    assert created.status_code == 201, created.text


@pytest.fixture
def live(database_url: str) -> Iterator[LiveServer]:
    # Polls of the watched WABAs go to a closed local port, never to the internet.
    for server in run_server(make_settings(database_url, graph_url="http://127.0.0.1:9")):
        _seed(server)
        yield server


def _load(live: LiveServer) -> OpenApiSchema:
    schema = schemathesis.openapi.from_url(f"{live.url}/api/v1/openapi.json", headers=AUTH)
    schema.config.update(base_url=live.url)
    schema.config.generation.update(
        # The token is the real one (or none at all), never a generated one.
        with_security_parameters=False,
        # Unknown query parameters are ignored, as HTTP APIs usually do.
        allow_extra_parameters=False,
    )
    return schema


@pytest.fixture
def authorized_schema(live: LiveServer) -> OpenApiSchema:
    schema = _load(live)
    schema.config.checks.update(
        # Cursors, times and durations are strings whose syntax the document describes in words
        # only: a schema-valid but meaningless one is rightly a 400.
        excluded_check_names=["positive_data_acceptance"]
    )
    return schema


@pytest.fixture
def anonymous_schema(live: LiveServer) -> OpenApiSchema:
    return _load(live)


authorized = schemathesis.pytest.from_fixture("authorized_schema")
anonymous = schemathesis.pytest.from_fixture("anonymous_schema")


@authorized.parametrize()
@settings(FUZZ, max_examples=30)
def test_no_request_fails(case: Case[Any]) -> None:
    # Passed here rather than in the settings, so the auth check knows the token is the real one
    # and also tries the request without it and with a wrong one.
    case.call_and_validate(headers=AUTH)


@anonymous.parametrize()
@settings(FUZZ, max_examples=5)
def test_every_operation_requires_the_token(case: Case[Any]) -> None:
    response = case.call()
    headers = {name.lower(): values for name, values in response.headers.items()}
    if case.method.upper() != case.operation.method.upper():
        # An undocumented method on a documented path: routing answers before authentication.
        assert response.status_code == 405, (case.method, case.formatted_path, response.text)
        assert case.operation.method.upper() in headers["allow"][0].split(", ")
        return
    assert response.status_code == 401, (case.method, case.formatted_path, response.text)
    assert headers["www-authenticate"] == ["Bearer"]
    assert response.json()["error"]["code"] == "unauthorized"
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )


# -- inputs at the edges, which random generation rarely reaches -------------------------------

NUL = "a\x00b"
# (method, path, query, JSON body, expected status)
EDGES: list[tuple[str, str, dict[str, str], Any, int]] = [
    ("GET", "/api/v1/events", {"since": "0001-01-01T00:00:00+01:00"}, None, 400),
    ("GET", "/api/v1/events", {"until": "9999-12-31T23:30:00-05:00"}, None, 400),
    ("GET", "/api/v1/events", {"since": "99999999999999999999"}, None, 400),
    ("GET", "/api/v1/events", {"waba_id": NUL}, None, 400),
    ("GET", "/api/v1/events", {"since": NUL}, None, 400),
    ("GET", "/api/v1/templates", {"name": NUL}, None, 400),
    ("GET", "/api/v1/phone-numbers", {"cursor": NUL}, None, 400),
    ("GET", "/api/v1/phone-numbers/a%00b/history", {}, None, 400),
    ("GET", "/api/v1/templates/a%00b/history", {}, None, 400),
    ("GET", "/api/v1/wabas/a%00b/history", {}, None, 400),
    ("DELETE", "/api/v1/watched-wabas/a%00b", {}, None, 400),
    ("POST", "/api/v1/watched-wabas/a%00b/poll", {}, None, 400),
    ("GET", "/api/v1/quarantine/99999999999999999999", {}, None, 400),
    ("GET", "/api/v1/quarantine/9223372036854775807", {}, None, 400),
    ("GET", "/api/v1/quarantine/0", {}, None, 400),
    ("DELETE", "/api/v1/silences/99999999999999999999", {}, None, 400),
    ("POST", "/api/v1/silences", {}, {"matchers": {"a": "b"}, "duration": "9" * 20 + "d"}, 400),
    ("POST", "/api/v1/silences", {}, {"matchers": {"a": "b"}, "duration": "9" * 12}, 400),
    (
        "POST",
        "/api/v1/silences",
        {},
        {"matchers": {"a": "b"}, "duration": "1h", "comment": NUL},
        400,
    ),
    ("POST", "/api/v1/silences", {}, {"matchers": {NUL: "b"}, "duration": "1h"}, 400),
    ("POST", "/api/v1/silences", {}, {"matchers": {"a": NUL}, "duration": "1h"}, 400),
    ("POST", "/api/v1/watched-wabas", {}, {"waba_id": "1", "access_token": NUL}, 400),
    ("POST", "/api/v1/watched-wabas", {}, {"waba_id": "\u0663"}, 400),  # an Arabic-Indic 3
]


def _send(live: LiveServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request on its own connection (a server error cannot spoil the next request)."""
    with httpx.Client(base_url=live.url, timeout=30) as client:
        return client.request(method, path, **kwargs)


def test_edge_inputs_are_refused_cleanly(live: LiveServer) -> None:
    failures = []
    for method, path, params, body, expected in EDGES:
        response = _send(live, method, path, params=params, json=body, headers=AUTH)
        if response.status_code != expected or "error" not in response.json():
            failures.append(
                f"{method} {path} {params} {body}: {response.status_code} {response.text}"
            )
    assert not failures, "\n".join(failures)


def test_malformed_bodies_without_the_token_are_unauthorized(live: LiveServer) -> None:
    for path in ("/api/v1/silences", "/api/v1/watched-wabas"):
        for body in (b"{", b"\x00", b"\x00" * 5, b"\xff\xfe", b"[]"):
            response = _send(
                live, "POST", path, content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 401, (path, body, response.text)
            assert response.json()["error"]["code"] == "unauthorized"


def _cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def test_forged_cursors_with_out_of_range_values_are_refused(live: LiveServer) -> None:
    forged: list[tuple[str, list[Any]]] = [
        ("/api/v1/quarantine", [2**64 - 1]),
        ("/api/v1/quarantine", [2**63]),
        ("/api/v1/events", ["0001-01-01T00:00:00+01:00", 1]),
        ("/api/v1/templates", [NUL]),
    ]
    answers = {
        (path, str(values)): _send(
            live, "GET", path, params={"cursor": _cursor(values)}, headers=AUTH
        ).status_code
        for path, values in forged
    }
    assert set(answers.values()) == {400}, answers
