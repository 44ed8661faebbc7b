"""Shared fixtures: a real database (SQLite file, or PostgreSQL when TEST_DATABASE_URL is set),
and a real server on loopback.

The whole suite runs once per database: ``pytest`` (SQLite) and
``TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres pytest``.
With PostgreSQL a fresh database is created for the session and dropped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, make_url, text

from waquality.config import Settings, load_settings
from waquality.ingest.signature import sign
from waquality.runtime import Runtime
from waquality.store import migrate, schema
from waquality.store.database import Database

DATA = Path(__file__).parent / "data"
WEBHOOKS = DATA / "webhooks"
SECRET = "test-app-secret"
OTHER_SECRET = "rotated-app-secret"
API_TOKEN = "test-api-token"
VERIFY_TOKEN = "test-verify-token"


def manifest() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads((WEBHOOKS / "manifest.json").read_text())
    return items


def webhook(name: str) -> bytes:
    return (WEBHOOKS / name).read_bytes()


def signed_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": sign(secret.encode(), body), "Content-Type": "application/json"}


@pytest.fixture(scope="session")
def _postgres_url() -> Iterator[str | None]:
    admin_url = os.environ.get("TEST_DATABASE_URL")
    if not admin_url:
        yield None
        return
    name = f"waquality_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    database = Database(url)
    migrate.upgrade(database)
    database.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db)
    db.dispose()
    return path


@pytest.fixture
def database_url(
    _postgres_url: str | None, _sqlite_template: Path, tmp_path: Path
) -> Iterator[str]:
    """A migrated, empty database for this test."""
    if _postgres_url is None:
        path = tmp_path / "waquality.db"
        shutil.copyfile(_sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    engine = create_engine(_postgres_url)
    tables = ", ".join(t.name for t in schema.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    yield _postgres_url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def make_settings(database_url: str, **overrides: str) -> Settings:
    env = {
        "WAQUALITY_DATABASE_URL": database_url,
        "WAQUALITY_APP_SECRET": f"{SECRET},{OTHER_SECRET}",
        "WAQUALITY_VERIFY_TOKEN": VERIFY_TOKEN,
        "WAQUALITY_API_TOKEN": API_TOKEN,
        "WAQUALITY_CONFIG": str(DATA / "empty.toml"),
    }
    env.update({f"WAQUALITY_{k.upper()}": v for k, v in overrides.items()})
    return load_settings({k: v for k, v in env.items() if v != ""})


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """The first truthy result of ``check``, polled until ``timeout`` (then fail)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LiveServer:
    url: str
    runtime: Runtime
    client: httpx.Client

    def post_webhook(self, body: bytes, secret: str = SECRET) -> httpx.Response:
        return self.client.post(
            "/webhooks/whatsapp", content=body, headers=signed_headers(body, secret)
        )

    def api(self, path: str, **params: Any) -> Any:
        response = self.client.get(
            path, params=params, headers={"Authorization": f"Bearer {API_TOKEN}"}
        )
        assert response.status_code == 200, response.text
        return response.json()

    def wait_processed(self, timeout: float = 20.0) -> dict[str, int]:
        """Wait until every stored body is processed (polls the database, bounded)."""
        from waquality.store import inbox

        deadline = time.monotonic() + timeout
        while True:
            counts = inbox.counts(self.runtime.db)
            if counts["pending"] == 0:
                return counts
            if time.monotonic() > deadline:
                raise AssertionError(f"still pending after {timeout}s: {counts}")
            time.sleep(0.02)


def run_server(settings: Settings) -> Iterator[LiveServer]:
    runtime = Runtime(settings)
    runtime.prepare()
    port = free_port()
    config = uvicorn.Config(
        runtime.application(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=30) as client:
        try:
            yield LiveServer(url, runtime, client)
        finally:
            server.should_exit = True
            thread.join(15)


@pytest.fixture
def server(database_url: str) -> Iterator[LiveServer]:
    """``waquality serve`` on loopback with one processing worker."""
    yield from run_server(make_settings(database_url))
