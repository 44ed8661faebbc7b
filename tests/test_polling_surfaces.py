"""Polling through its surfaces: the watched-WABA API, `poll --once` and `wabas`."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from builders import envelope, template_status
from conftest import API_TOKEN, LiveServer, make_settings, run_server, wait_for
from test_cli import cli_env, ok, run
from waquality.graph.fake import FakeGraph, Fault, Scenario, serve
from waquality.store import watch
from waquality.store.database import Database

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SHARED_TOKEN = "shared-test-token"


def test_watched_wabas_api(server: LiveServer) -> None:
    c = server.client
    created = c.post(
        "/api/v1/watched-wabas",
        json={"waba_id": "104996122399160", "access_token": "EAAG-secret"},
        headers=AUTH,
    )
    assert created.status_code == 201, created.text
    assert created.json()["origin"] == "api" and created.json()["poll_state"] == "new"
    assert "EAAG-secret" not in created.text
    again = c.post("/api/v1/watched-wabas", json={"waba_id": "104996122399160"}, headers=AUTH)
    assert again.status_code == 200
    listed = c.get("/api/v1/watched-wabas", headers=AUTH)
    assert [w["waba_id"] for w in listed.json()] == ["104996122399160"]
    assert "access_token" not in listed.text and "EAAG-secret" not in listed.text
    soon = c.post("/api/v1/watched-wabas/104996122399160/poll", headers=AUTH)
    assert soon.status_code == 202 and soon.json()["next_poll_at"] is None
    bad = c.post("/api/v1/watched-wabas", json={"waba_id": "12a"}, headers=AUTH)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    assert c.post("/api/v1/watched-wabas", json={"waba_id": "1"}).status_code == 401
    assert c.delete("/api/v1/watched-wabas/104996122399160", headers=AUTH).status_code == 204
    missing = c.delete("/api/v1/watched-wabas/104996122399160", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert c.post("/api/v1/watched-wabas/1/poll", headers=AUTH).status_code == 404


def test_settings_wabas_cannot_be_removed_through_the_api(database_url: str) -> None:
    db = Database(database_url)
    try:
        watch.ensure_configured(db, ["555000111"], datetime.now(UTC))
    finally:
        db.dispose()
    for live in run_server(make_settings(database_url, waba_ids="555000111")):
        answer = live.client.delete("/api/v1/watched-wabas/555000111", headers=AUTH)
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "conflict"


@pytest.fixture
def graph() -> Iterator[tuple[FakeGraph, str]]:
    scenario = Scenario.generate(wabas=2, phones=3, templates=5, seed=11)
    for waba in scenario.wabas.values():
        waba.token = SHARED_TOKEN
    fake = FakeGraph(scenario)
    with serve(fake) as url:
        yield fake, url


def test_poll_once_reports_every_waba(database_url: str, graph: tuple[FakeGraph, str]) -> None:
    fake, url = graph
    ids = sorted(fake.scenario.wabas)
    env = cli_env(
        database_url,
        waba_ids=",".join(ids),
        access_token=SHARED_TOKEN,
        graph_url=url,
    )
    output = ok(["poll", "--once"], env)
    for waba_id in ids:
        assert re.search(
            rf"WABA {waba_id}: 3 phone numbers, 5 templates, \d+ changes, 3 calls, .* ok", output
        ), output
    listed = ok(["wabas", "list"], env)
    assert all(re.search(rf"{w}\s+settings\s+ok", listed) for w in ids), listed
    assert re.search(r"^polling\s+2 ok$", ok(["status"], env), re.MULTILINE)


def test_poll_once_fails_with_the_reason(database_url: str, graph: tuple[FakeGraph, str]) -> None:
    fake, url = graph
    ids = sorted(fake.scenario.wabas)
    fake.inject(Fault.EXPIRED_TOKEN, match=ids[1], times=10)
    env = cli_env(database_url, waba_ids=",".join(ids), access_token=SHARED_TOKEN, graph_url=url)
    result = run(["poll", "--once"], env)
    assert result.exit_code == 1
    assert f"1 of 2 WABAs could not be read (WABA {ids[1]}:" in result.output
    assert SHARED_TOKEN not in result.output
    only = run(["poll", "--once", "--waba", ids[0]], env)
    assert only.exit_code == 0, only.output
    unknown = run(["poll", "--once", "--waba", "999"], env)
    assert unknown.exit_code == 1 and "not watched: 999" in unknown.output


def test_poll_once_without_wabas_says_what_to_do(database_url: str) -> None:
    result = run(["poll", "--once"], cli_env(database_url))
    assert result.exit_code == 1 and "WAQUALITY_WABA_IDS" in result.output


def test_wabas_add_and_remove(database_url: str, tmp_path: Path) -> None:
    env = cli_env(database_url, waba_ids="700000001")
    token = tmp_path / "token"
    token.write_text("EAAG-file-token\n")
    assert "added" in ok(["wabas", "add", "700000002", "--token-file", str(token)], env)
    assert "already watched" in ok(["wabas", "add", "700000002"], env)
    listed = ok(["wabas", "list"], env)
    assert "700000002" in listed and "EAAG" not in listed
    assert "removed" in ok(["wabas", "remove", "700000002"], env)
    refused = run(["wabas", "remove", "700000001"], env)
    assert refused.exit_code == 1 and "remove it there" in refused.output
    assert run(["wabas", "add", "abc"], env).exit_code == 1


def test_serve_polls_and_rereads_after_a_webhook(
    database_url: str, graph: tuple[FakeGraph, str]
) -> None:
    fake, url = graph
    waba = fake.scenario.wabas[sorted(fake.scenario.wabas)[0]]
    template = next(iter(waba.templates.values()))
    settings = make_settings(
        database_url,
        waba_ids=waba.id,
        access_token=SHARED_TOKEN,
        graph_url=url,
        reread_delay="1s",
    )
    with contextmanager(run_server)(settings) as live:
        watched = wait_for(
            lambda: [w for w in live.api("/api/v1/watched-wabas") if w["poll_state"] == "ok"]
        )
        assert watched[0]["waba_id"] == waba.id and watched[0]["last_success_at"]
        templates = live.api("/api/v1/templates", waba_id=waba.id)["items"]
        assert len(templates) == 5 and all(t["confirmed_at"] for t in templates)
        before = len(fake.calls)
        template.status = "PAUSED"
        posted = datetime.now(UTC)
        body = envelope(template_status(int(template.id), "PAUSED", int(time.time()), waba=waba.id))
        assert live.post_webhook(body).status_code == 200

        def reread_applied() -> bool:
            [row] = [
                t
                for t in live.api("/api/v1/templates", waba_id=waba.id)["items"]
                if t["id"] == template.id
            ]
            confirmed = datetime.fromisoformat(row["confirmed_at"].replace("Z", "+00:00"))
            return confirmed > posted

        wait_for(reread_applied)
        assert [c.path for c in fake.calls[before:]] == [f"/{template.id}"]
