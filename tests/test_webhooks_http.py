"""The webhook endpoint over real HTTP on loopback: handshake, signatures, limits, durability."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import orjson
from sqlalchemy import create_engine, select, text

from builders import envelope, template_status
from conftest import (
    OTHER_SECRET,
    SECRET,
    VERIFY_TOKEN,
    LiveServer,
    make_settings,
    manifest,
    run_server,
    signed_headers,
    webhook,
)
from waquality.store import schema
from waquality.store.database import Database

PATH = "/webhooks/whatsapp"
BODY = envelope(template_status(1689556908129832, "APPROVED", 1_751_247_548))


def stored_bodies(database_url: str) -> list[bytes]:
    """Read the inbox through a fresh connection: what is there is committed."""
    fresh = Database(database_url)
    try:
        with fresh.read() as conn:
            r = schema.raw_webhooks
            return [bytes(b) for b in conn.execute(select(r.c.body).order_by(r.c.id)).scalars()]
    finally:
        fresh.dispose()


def test_handshake(server: LiveServer) -> None:
    ok = server.client.get(
        PATH,
        params={
            "hub.mode": "subscribe",
            "hub.challenge": "1158201444",
            "hub.verify_token": VERIFY_TOKEN,
        },
    )
    assert (ok.status_code, ok.text) == (200, "1158201444")
    for params in (
        {"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": "nope"},
        {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN},
        {"hub.mode": "unsubscribe", "hub.challenge": "1", "hub.verify_token": VERIFY_TOKEN},
        {},
    ):
        assert server.client.get(PATH, params=params).status_code == 403


def test_signed_body_is_durable_before_the_ack(server: LiveServer, database_url: str) -> None:
    response = server.post_webhook(BODY)
    assert (response.status_code, response.text) == (200, "OK")
    assert stored_bodies(database_url) == [BODY]  # byte for byte


def test_every_configured_secret_is_accepted(server: LiveServer, database_url: str) -> None:
    assert server.post_webhook(BODY, SECRET).status_code == 200
    assert server.post_webhook(BODY + b" ", OTHER_SECRET).status_code == 200
    assert len(stored_bodies(database_url)) == 2


def test_bad_signatures_are_refused_and_counted(server: LiveServer, database_url: str) -> None:
    headers = signed_headers(BODY)
    assert server.client.post(PATH, content=BODY).status_code == 401
    assert (
        server.client.post(
            PATH,
            content=BODY,
            headers={
                "X-Hub-Signature-256": headers["X-Hub-Signature-256"].replace("sha256=", "sha1=")
            },
        ).status_code
        == 403
    )
    wrong = signed_headers(BODY, "not-the-secret")
    assert server.client.post(PATH, content=BODY, headers=wrong).status_code == 403
    # the signature covers the raw bytes: the same JSON re-serialised does not verify
    reserialised = orjson.dumps(orjson.loads(BODY), option=orjson.OPT_INDENT_2)
    assert server.client.post(PATH, content=reserialised, headers=headers).status_code == 403
    assert stored_bodies(database_url) == []
    metrics = server.client.get("/metrics", headers={"Authorization": "Bearer test-api-token"})
    assert 'waquality_webhook_requests_total{result="bad_signature"}' in metrics.text
    assert 'waquality_webhook_requests_total{result="unsigned"}' in metrics.text


def test_uppercase_hex_signature_is_accepted(server: LiveServer) -> None:
    header = signed_headers(BODY)["X-Hub-Signature-256"]
    upper = "sha256=" + header.removeprefix("sha256=").upper()
    assert (
        server.client.post(PATH, content=BODY, headers={"X-Hub-Signature-256": upper}).status_code
        == 200
    )


def test_body_over_4_mib_is_refused(server: LiveServer, database_url: str) -> None:
    big = b'{"object":"whatsapp_business_account","entry":[],"pad":"' + b"x" * (4 << 20) + b'"}'
    assert server.client.post(PATH, content=big, headers=signed_headers(big)).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        for start in range(0, len(big), 1 << 16):
            yield big[start : start + (1 << 16)]

    streamed = server.client.post(PATH, content=chunks(), headers=signed_headers(big))
    assert streamed.status_code == 413
    assert stored_bodies(database_url) == []


def test_other_methods(server: LiveServer) -> None:
    assert server.client.put(PATH, content=BODY).status_code == 405


def test_authentic_garbage_is_kept_and_quarantined(server: LiveServer) -> None:
    garbage = b"\xff\xfe not json at all"
    assert server.post_webhook(garbage).status_code == 200
    server.wait_processed()
    items = server.api("/api/v1/quarantine")["items"]
    assert len(items) == 1 and items[0]["path"] == ""


def test_concurrent_golden_deliveries_end_to_end(server: LiveServer) -> None:
    bodies = [webhook(case["file"]) for case in manifest()]
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda b: server.post_webhook(b).status_code, bodies * 2))
    assert statuses == [200] * len(bodies) * 2
    counts = server.wait_processed()
    assert counts["received"] == 2 * len(bodies)
    status = server.api("/api/v1/status")
    assert status["events"] == sum(c["management_events"] for c in manifest()) - 1
    assert status["webhooks"]["quarantined"] == 2 * sum(c["broken_changes"] for c in manifest())


class Blocker:
    """Another client holding the inbox locked, as a long migration or a stuck writer would."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url

    def __enter__(self) -> Blocker:
        if self.url.startswith("sqlite"):
            self.sqlite = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
            self.sqlite.execute("BEGIN EXCLUSIVE")
        else:
            self.engine = create_engine(self.url)
            self.conn = self.engine.connect()
            self.conn.execute(text("LOCK TABLE raw_webhooks IN ACCESS EXCLUSIVE MODE"))
        return self

    def __exit__(self, *_: object) -> None:
        if self.url.startswith("sqlite"):
            self.sqlite.execute("ROLLBACK")
            self.sqlite.close()
        else:
            self.conn.rollback()
            self.conn.close()
            self.engine.dispose()


def test_locked_store_answers_503_then_recovers(database_url: str) -> None:
    for server in run_server(make_settings(database_url, write_timeout="0.2s")):
        with Blocker(database_url):
            assert server.post_webhook(BODY).status_code == 503
        assert server.post_webhook(BODY).status_code == 200
        assert stored_bodies(database_url) == [BODY]


def test_no_app_secret_means_no_acknowledgement(database_url: str) -> None:
    for server in run_server(make_settings(database_url, app_secret="")):
        response = server.post_webhook(BODY)
        assert response.status_code == 503
        assert stored_bodies(database_url) == []


def test_health_endpoints(server: LiveServer) -> None:
    assert server.client.get("/healthz").text == "ok"
    ready = server.client.get("/readyz")
    assert (ready.status_code, ready.text) == (200, "ready")
