"""Security properties, on real components: a real server on loopback with its processing child,
the fake Graph API over HTTP, real receivers for notifications, the real CLI and database.

* No secret (app secrets, verify token, API token, access tokens, the database password, tokens
  inside alert URLs) reaches a log record, an exception, an API answer or the CLI's output.
* No customer identifier (phone numbers, names, message text) reaches a log record.
* Text from Meta is data everywhere: exact in JSON, escaped by Apprise for HTML or Markdown.
* Oversized and deeply nested input is refused or quarantined; the server stays up.
* SQL is built from constants and bound parameters only.

Logs are read in two places: every record of this process (webhook receiver, API, uvicorn)
through caplog at DEBUG, and the output of the child process ``serve`` spawns (processing,
polling, alert delivery), which logs to the inherited stderr at its settings' level (DEBUG here).
"""

from __future__ import annotations

import ast
import gc
import logging
import os
import re
import socket
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson
import pytest
import uvicorn
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, make_url

from builders import WABA, entry, envelope, template_status
from conftest import (
    API_TOKEN,
    OTHER_SECRET,
    SECRET,
    VERIFY_TOKEN,
    LiveServer,
    free_port,
    make_settings,
    run_server,
)
from receiver import Receiver, receiving
from waquality.alerting.channels import receiver_name
from waquality.cli import main
from waquality.config import Settings, load_settings
from waquality.errors import ConfigError, StoreUnavailable
from waquality.graph.fake import FakeGraph, Scenario, serve_app
from waquality.ingest.receiver import MAX_BODY, Receive, Scope, Send
from waquality.store.database import Database

SRC = Path(__file__).parent.parent / "src" / "waquality"
WEBHOOK = "/webhooks/whatsapp"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
T0 = 1_772_000_000

WRONG_SECRET = "forged-app-secret-5e1f07"
WRONG_VERIFY_TOKEN = "guessed-verify-token-77aa19"
WRONG_API_TOKEN = "guessed-api-token-9c3d42"
DEFAULT_ACCESS_TOKEN = "EAAdefaultAccessToken0a1b2c3d4e5f"
POSTED_ACCESS_TOKEN = "EAApostedThroughTheApi6f7e8d9c0b1a"
POSTED_WABA = "190000000000001"  # unknown to the fake: its token is refused
DB_PASSWORD = "dbPassw0rd-7d3c9b51"

CUSTOMER_PHONE = "16505550147"
CUSTOMER_DISPLAY = "+1 650-555-0147"
CUSTOMER_NAME = "Quintessa Marlowe-Iyer"
CUSTOMER_TEXT = "my parcel 7741 never arrived, ring me tonight"
RECIPIENT_PHONE = "16505550198"
PREFERENCE_DETAIL = "Quintessa asked to stop marketing messages"

SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = '"><img src=x onerror=alert(1)>'
MARKUP = (
    "*bold* _it_ ~strike~ `code` [click](http://evil.example) <!channel> @here "
    "<http://evil.example|click> # head " + ATTRIBUTE
)


# -- helpers ------------------------------------------------------------------------------------


@dataclass
class Logs:
    """Everything logged during a test: this process's records and the child's output."""

    caplog: pytest.LogCaptureFixture
    capfd: pytest.CaptureFixture[str]
    own_urls: list[str] = field(default_factory=list)
    output: str = ""
    _attached: list[logging.Logger] = field(default_factory=list)

    def watch(self, live: LiveServer) -> None:
        """Also take uvicorn's records (its loggers do not propagate) at DEBUG. Called once
        every uvicorn server of the test has started: each start reconfigures those loggers.
        Access logs stay off, as ``serve`` runs them (a handler on ``uvicorn.access`` would
        turn them on): see test_serve_runs_without_access_logs."""
        self.own_urls.append(live.url)
        for name in ("uvicorn.error", "uvicorn.asgi"):
            self.caplog.set_level(logging.DEBUG, logger=name)
        logger = logging.getLogger("uvicorn")
        logger.addHandler(self.caplog.handler)
        self._attached.append(logger)

    def close(self) -> None:
        for logger in self._attached:
            logger.removeHandler(self.caplog.handler)

    def _own(self, record: logging.LogRecord) -> bool:
        # This test's own HTTP client logs the requests it sends (verify token included, as
        # Meta's handshake puts it in the query): those records are not the server's.
        return record.name == "httpx" and any(u in record.getMessage() for u in self.own_urls)

    def text(self) -> str:
        captured = self.capfd.readouterr()
        self.output += captured.out + captured.err
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        records = [formatter.format(r) for r in self.caplog.records if not self._own(r)]
        return "\n".join([*records, self.output])


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Iterator[Logs]:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="waquality")
    watched = Logs(caplog, capfd)
    yield watched
    watched.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a command is given count (the CLI runner adds them to these)."""
    for name in list(os.environ):
        if name.startswith("WAQUALITY_"):
            monkeypatch.delenv(name)


def assert_absent(needles: Mapping[str, str], **places: str) -> None:
    """None of ``needles`` (name → value) occurs in any of ``places`` (name → text)."""
    found = [
        f"{name} in {place}: {line.strip()[:300]}"
        for name, needle in needles.items()
        for place, text in places.items()
        for line in text.splitlines()
        if needle in line
    ]
    assert not found, "found:\n" + "\n".join(found[:20])


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def serving(settings: Settings) -> Iterator[LiveServer]:
    yield from run_server(settings)


def local(database_url: str, **overrides: str) -> Settings:
    """Settings whose polls, if any, go to a closed local port, never to the internet."""
    return make_settings(database_url, **{"graph_url": "http://127.0.0.1:9", **overrides})


def get(live: LiveServer, path: str, **params: Any) -> httpx.Response:
    response = live.client.get(path, params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return response


def run_cli(args: list[str], env: Mapping[str, str]) -> Result:
    result = CliRunner().invoke(main, args, env=dict(env), catch_exceptions=True)
    # A command leaves its connection pool to the process exit; here the process goes on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    return result


def environment(settings: Settings, config: Path | None = None) -> dict[str, str]:
    """The ``WAQUALITY_*`` variables of ``settings`` (secrets included), for the CLI."""
    env = {
        "WAQUALITY_DATABASE_URL": settings.database_url.get_secret_value(),
        "WAQUALITY_APP_SECRET": ",".join(s.get_secret_value() for s in settings.app_secret),
        "WAQUALITY_CONFIG": str(config or Path(__file__).parent / "data" / "empty.toml"),
        "WAQUALITY_GRAPH_URL": settings.graph_url,
        "WAQUALITY_LOG_LEVEL": settings.log_level,
    }
    for name in ("verify_token", "api_token", "access_token"):
        value = getattr(settings, name)
        if value is not None:
            env[f"WAQUALITY_{name.upper()}"] = value.get_secret_value()
    if settings.waba_ids:
        env["WAQUALITY_WABA_IDS"] = ",".join(settings.waba_ids)
    if settings.alert_urls:
        env["WAQUALITY_ALERT_URLS"] = " ".join(u.get_secret_value() for u in settings.alert_urls)
    return env


def with_password(url: str) -> tuple[str, str | None]:
    """The test database's URL with a password in it, so that the password travels wherever the
    URL does: the one it has, else one the server ignores (PostgreSQL trusting loopback), else
    none (SQLite, or a server that would refuse it)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url, None
    if parsed.password:
        return url, str(parsed.password)
    candidate = parsed.set(password=DB_PASSWORD).render_as_string(hide_password=False)
    engine = create_engine(candidate)
    try:
        with engine.connect():
            pass
    except Exception:
        return url, None
    finally:
        engine.dispose()
    return candidate, DB_PASSWORD


def echoing(app: Any, token: str) -> Any:
    """The fake Graph API, except that ``token`` is refused the way Meta refuses a malformed
    token: code 190, the token quoted in the message."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        sent = dict(scope.get("headers") or [])
        if scope["type"] == "http" and sent.get(b"authorization") == f"Bearer {token}".encode():
            error = {
                "message": f"Malformed access token {token}",
                "type": "OAuthException",
                "code": 190,
                "fbtrace_id": "AbCdEfGhIjKlMnOp",
            }
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": orjson.dumps({"error": error})})
            return
        await app(scope, receive, send)

    return wrapped


def formatted(exc: BaseException) -> str:
    """An exception as a traceback prints it: chained causes and their messages included."""
    return "".join(traceback.format_exception(exc))


# -- 1. secrets ---------------------------------------------------------------------------------


def test_no_secret_reaches_logs_answers_or_command_output(
    database_url: str, tmp_path: Path, logs: Logs, clean_env: None
) -> None:
    scenario = Scenario.generate(wabas=3, phones=2, templates=2, seed=5, businesses=0)
    good, expired, echoed = scenario.wabas.values()
    scenario.expired_tokens.add(expired.token)
    db_url, db_password = with_password(database_url)
    secrets = {
        "app secret": SECRET,
        "rotated app secret": OTHER_SECRET,
        "forged app secret": WRONG_SECRET,
        "verify token": VERIFY_TOKEN,
        "wrong verify token": WRONG_VERIFY_TOKEN,
        "API token": API_TOKEN,
        "wrong API token": WRONG_API_TOKEN,
        "default access token": DEFAULT_ACCESS_TOKEN,
        "posted access token": POSTED_ACCESS_TOKEN,
        "working access token": good.token,
        "expired access token": expired.token,
        "echoed access token": echoed.token,
        "hook token (up)": "hookQueryToken-up-4b1d9a",
        "hook token (down)": "hookQueryToken-down-8e2a3c",
        "hook password (up)": "hookUserPass-up-a11ce5",
        "hook password (closed)": "hookUserPass-closed-d00d42",
        "json password (up)": "jsonBasicPass-up-c0ffee1",
        "json password (down)": "jsonBasicPass-down-be1157",
        "json password (closed)": "jsonBasicPass-closed-f00d99",
    }
    if db_password is not None:
        secrets["database password"] = db_password
    config = tmp_path / "waquality.toml"
    tokens = "".join(f'"{w.id}" = "{w.token}"\n' for w in (good, expired, echoed))
    config.write_text(f"[access_tokens]\n{tokens}")
    with (
        serve_app(echoing(FakeGraph(scenario).app, echoed.token)) as graph_url,
        receiving(Receiver()) as up,
        receiving(Receiver(refuse=10**9)) as down,
    ):
        closed = f"127.0.0.1:{free_port()}"
        urls = {
            "up": f"webhook+http://{up.url}/hook?token={secrets['hook token (up)']}",
            "up basic": f"webhook+http://hook:{secrets['hook password (up)']}@{up.url}/basic",
            "up json": f"json://alerts:{secrets['json password (up)']}@{up.url}/json",
            "down": f"webhook+http://{down.url}/hook?token={secrets['hook token (down)']}",
            "down json": f"json://alerts:{secrets['json password (down)']}@{down.url}/json",
            "closed": f"webhook+http://hook:{secrets['hook password (closed)']}@{closed}/h",
            "closed json": f"json://alerts:{secrets['json password (closed)']}@{closed}/j",
        }
        settings = make_settings(
            db_url,
            config=str(config),
            graph_url=graph_url,
            waba_ids=",".join(scenario.wabas),
            access_token=DEFAULT_ACCESS_TOKEN,
            alert_urls=" ".join(urls.values()),
            log_level="DEBUG",
        )
        answers: list[str] = []
        with serving(settings) as live:
            logs.watch(live)
            # webhooks: signed with either configured secret, forged, unsigned
            approved = envelope(template_status(41, "APPROVED", T0))
            paused = envelope(template_status(41, "PAUSED", T0 + 60, title="FIRST_PAUSE"))
            assert live.post_webhook(approved).status_code == 200
            assert live.post_webhook(paused, OTHER_SECRET).status_code == 200
            forged = live.post_webhook(paused, WRONG_SECRET)
            unsigned = live.client.post(WEBHOOK, content=paused)
            assert (forged.status_code, unsigned.status_code) == (403, 401)
            # the verification handshake, right and wrong token
            hello = {"hub.mode": "subscribe", "hub.challenge": "1158201444"}
            right = live.client.get(WEBHOOK, params={**hello, "hub.verify_token": VERIFY_TOKEN})
            wrong = live.client.get(
                WEBHOOK, params={**hello, "hub.verify_token": WRONG_VERIFY_TOKEN}
            )
            assert (right.status_code, right.text, wrong.status_code) == (200, "1158201444", 403)
            # the API: right, wrong and no token; a WABA added with its own token
            refused = [
                live.client.get("/api/v1/status", headers={"Authorization": f"Bearer {t}"})
                for t in (WRONG_API_TOKEN, SECRET, VERIFY_TOKEN)
            ] + [live.client.get("/api/v1/watched-wabas")]
            assert {r.status_code for r in refused} == {401}
            added = live.client.post(
                "/api/v1/watched-wabas",
                json={"waba_id": POSTED_WABA, "access_token": POSTED_ACCESS_TOKEN},
                headers=AUTH,
            )
            assert added.status_code == 201, added.text
            answers += [forged.text, unsigned.text, wrong.text, added.text]
            answers += [r.text for r in refused]

            def polled() -> dict[str, str]:
                rows = get(live, "/api/v1/watched-wabas").json()
                return {row["waba_id"]: row["poll_state"] for row in rows}

            failing = {expired.id, echoed.id, POSTED_WABA}
            expected = {good.id: "ok", **dict.fromkeys(failing, "auth_failed")}
            eventually(lambda: polled() == expected, "polls: one working token, three refused")

            def hooked() -> set[str]:
                bodies = [r.body for r in up.received if r.path == "/hook"]
                return {a["labels"].get("waba_id", "") for b in bodies for a in b["alerts"]}

            eventually(lambda: failing <= hooked(), "the polling alerts at the receiver")
            eventually(
                lambda: {"/json", "/basic"} <= {r.path for r in up.received},
                "notifications through Apprise and through a webhook with a password",
            )
            names = {receiver_name(urls[k]) for k in ("down", "down json", "closed", "closed json")}

            def failed() -> set[str]:
                rows = get(live, "/api/v1/notifications").json()
                return {n["receiver"] for n in rows if n["attempts"] and n["last_error"]}

            eventually(lambda: names <= failed(), "failed deliveries to every refusing receiver")
            for path in (
                "/api/v1/status",
                "/api/v1/watched-wabas",
                "/api/v1/notifications",
                "/api/v1/alerts",
                "/api/v1/wabas",
                "/api/v1/templates",
                "/api/v1/events",
                "/metrics",
            ):
                answers.append(get(live, path).text)
            watched = {row["waba_id"]: row for row in get(live, "/api/v1/watched-wabas").json()}
            # Meta's message quoted the token: what is kept says so without it
            assert "Malformed access token [redacted]" in watched[echoed.id]["last_error"]
            assert "Session has expired" in watched[expired.id]["last_error"]
        received = orjson.dumps([r.body for r in up.received]).decode()
    outputs = []
    for args in (["status"], ["wabas", "list"]):
        result = run_cli(args, environment(settings, config))
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert "Malformed access token [redacted]" in outputs[1]
    logged = logs.text()
    # the child's output was read: it logged the refused polls, and the deliveries (httpx logs
    # each request's URL: the tokens in it are replaced)
    assert f"polling WABA {expired.id}" in logs.output
    assert "?token=[redacted]" in logs.output
    assert_absent(
        secrets,
        logs=logged,
        answers="\n".join(answers),
        notifications=received,
        cli="\n".join(outputs),
    )


def test_a_database_password_stays_out_of_errors_logs_and_output(
    logs: Logs, clean_env: None
) -> None:
    url = f"postgresql+psycopg://waquality:{DB_PASSWORD}@127.0.0.1:{free_port()}/waquality"
    db = Database(url, write_timeout=1.0)
    with pytest.raises(StoreUnavailable) as refused, db.read():
        pass
    db.dispose()
    settings = make_settings(url)
    result = run_cli(["status"], environment(settings))
    assert result.exit_code == 1 and "database unavailable" in result.output
    with pytest.raises(ConfigError) as invalid:
        make_settings(url, port="eighty", poll_interval="often")
    with pytest.raises(ConfigError) as wrong_scheme:
        make_settings(url.replace("postgresql+psycopg", "mysql"))
    assert "WAQUALITY_PORT" in str(invalid.value)
    assert_absent(
        {"database password": DB_PASSWORD},
        error=formatted(refused.value),
        url=f"{db.url!r} {db.url}",
        settings=f"{settings!r} {settings} {settings.model_dump_json()}",
        cli=result.output,
        config=formatted(invalid.value) + formatted(wrong_scheme.value),
        logs=logs.text(),
    )


def test_config_errors_name_the_setting_never_the_secret(tmp_path: Path) -> None:
    secrets = {
        "database password": DB_PASSWORD,
        "app secret": "appSecret-0f3a9c2b7d",
        "verify token": "verifyToken-19ab77",
        "API token": "apiToken-5c5e21",
        "access token": DEFAULT_ACCESS_TOKEN,
        "alert URL token": "slackTokenCCC-41d2",
        "file access token": POSTED_ACCESS_TOKEN,
    }
    env = {
        "WAQUALITY_DATABASE_URL": f"postgresql+psycopg://u:{DB_PASSWORD}@db.internal/waq",
        "WAQUALITY_APP_SECRET": secrets["app secret"],
        "WAQUALITY_VERIFY_TOKEN": secrets["verify token"],
        "WAQUALITY_API_TOKEN": secrets["API token"],
        "WAQUALITY_ACCESS_TOKEN": secrets["access token"],
        "WAQUALITY_ALERT_URLS": f"slack://TAAA/BBBB/{secrets['alert URL token']}",
    }
    config = tmp_path / "waquality.toml"
    config.write_text(f'[access_tokens]\n"104996122399160" = "{POSTED_ACCESS_TOKEN}"\n')
    env["WAQUALITY_CONFIG"] = str(config)
    problems = [
        {"WAQUALITY_PORT": "eighty", "WAQUALITY_POLL_INTERVAL": "often"},
        {"WAQUALITY_DATABASE_URL": f"mysql://u:{DB_PASSWORD}@db.internal/waq"},
        {"WAQUALITY_API_TOKEN": "  ", "WAQUALITY_GRAPH_VERSION": "latest"},
        {"WAQUALITY_NO_SUCH_SETTING": "1"},
    ]
    broken = tmp_path / "broken.toml"
    broken.write_text(f'api_token = "{secrets["API token"]}\nport = 1\n')
    wrong_types = tmp_path / "types.toml"
    wrong_types.write_text(
        f'database_url = ["{DB_PASSWORD}"]\n'
        f'[access_tokens]\n"1" = {{ token = "{POSTED_ACCESS_TOKEN}" }}\n'
    )
    messages = []
    for extra in [
        *problems,
        {"WAQUALITY_CONFIG": str(broken)},
        {"WAQUALITY_CONFIG": str(wrong_types)},
    ]:
        with pytest.raises(ConfigError) as caught:
            load_settings({**env, **extra})
        messages.append(formatted(caught.value))
    settings = load_settings(env)
    shown = f"{settings!r} {settings} {settings.model_dump_json()}"
    assert "WAQUALITY_PORT" in messages[0] and "WAQUALITY_DATABASE_URL" in messages[1]
    assert_absent(secrets, errors="\n".join(messages), settings=shown)


def test_serve_runs_without_access_logs(
    database_url: str, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    """Meta's handshake carries the verify token in the query string, which an access log
    would write down: ``waquality serve`` runs uvicorn without one, whatever the log level."""
    started: list[uvicorn.Config] = []
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda server, sockets=None: started.append(server.config)
    )
    settings = local(database_url, log_level="DEBUG")
    result = run_cli(["serve", "--port", str(free_port())], environment(settings))
    assert result.exit_code == 0, result.output
    [config] = started
    assert config.access_log is False
    assert_absent({"API token": API_TOKEN, "app secret": SECRET}, cli=result.output)


# -- 2. customer identifiers --------------------------------------------------------------------


def customer_message() -> dict[str, Any]:
    inbound = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": CUSTOMER_NAME}, "wa_id": CUSTOMER_PHONE}],
        "messages": [
            {
                "from": CUSTOMER_PHONE,
                "id": "wamid.HBgLMTY1MDU1NTAxNDcVAgASGBQzQUI5",
                "timestamp": str(T0),
                "type": "text",
                "text": {"body": CUSTOMER_TEXT},
            }
        ],
        "statuses": [
            {
                "id": "wamid.HBgLMTY1MDU1NTAxOTgVAgARGBI",
                "status": "failed",
                "timestamp": str(T0),
                "recipient_id": RECIPIENT_PHONE,
                "errors": [{"code": 131049, "title": f"not delivered to {CUSTOMER_DISPLAY}"}],
            }
        ],
    }
    return entry("messages", inbound, time=T0)


def preference(item: Any) -> dict[str, Any]:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"wa_id": CUSTOMER_PHONE}],
        "user_preferences": [item],
    }
    return entry("user_preferences", value, time=T0)


CUSTOMER = {
    "phone number": CUSTOMER_PHONE,
    "display number": CUSTOMER_DISPLAY,
    "profile name": CUSTOMER_NAME,
    "message text": CUSTOMER_TEXT,
    "recipient": RECIPIENT_PHONE,
    "preference detail": PREFERENCE_DETAIL,
}
STOP = {
    "wa_id": CUSTOMER_PHONE,
    "detail": PREFERENCE_DETAIL,
    "category": "marketing_messages",
    "value": "stop",
    "timestamp": T0,
}


def test_customer_identifiers_never_reach_the_logs(database_url: str, logs: Logs) -> None:
    whole = envelope(customer_message())
    bodies = [
        whole,
        envelope(preference(STOP)),
        whole[: len(whole) // 2],  # cut: not JSON, quarantined whole
        whole.replace(b"whatsapp_business_account", CUSTOMER_TEXT.encode(), 1),  # wrong object
        envelope(entry("messages", [CUSTOMER_PHONE, CUSTOMER_TEXT])),  # type: ignore[arg-type]
        envelope(preference(f"{CUSTOMER_PHONE} {PREFERENCE_DETAIL}")),  # item not an object
        envelope(preference({**STOP, "timestamp": f"at {CUSTOMER_PHONE}"})),
        CUSTOMER_TEXT.encode("utf-16"),  # not UTF-8 either
        orjson.dumps([CUSTOMER_PHONE, CUSTOMER_NAME]),
    ]
    settings = local(database_url, log_level="DEBUG")
    with serving(settings) as live:
        logs.watch(live)
        for body in bodies:
            assert live.post_webhook(body).status_code == 200
        counts = live.wait_processed()
        assert counts["quarantined"] >= 5, counts
        assert len(get(live, "/api/v1/quarantine").json()["items"]) >= 6
        assert live.post_webhook(whole, WRONG_SECRET).status_code == 403
    assert_absent(CUSTOMER, logs=logs.text())


def test_customer_identifiers_stay_out_of_the_logs_beside_text_postgresql_refuses(
    database_url: str, logs: Logs
) -> None:
    """JSON allows NUL in strings; PostgreSQL's text columns do not. A batch that fails on one
    is logged with its exception, which must not carry the batch's customer data (SQLAlchemy
    puts a failed statement's bound parameters in its message)."""
    nul = "\0"
    alert = {
        "entity_type": "WABA",
        "entity_id": WABA,
        "alert_info": {
            "alert_severity": "CRITICAL",
            "alert_status": "ACTIVE",
            "alert_type": f"X{nul}Y",
            "alert_description": nul,
        },
    }
    changes = [
        {"field": "zz_future", "value": {"event": f"X{nul}Y"}},
        {"field": f"zz{nul}future", "value": {"event": "X"}},
        template_status(61, "APPROVED", T0, message_template_name=f"a{nul}b")["changes"][0],
        {
            "field": "account_update",
            "value": {
                "event": "ACCOUNT_VIOLATION",
                "violation_info": {"violation_type": f"A{nul}B"},
            },
        },
        {"field": "account_alerts", "value": alert},
    ]
    bodies = []
    for change in changes:
        document = orjson.loads(envelope(preference(STOP)))
        document["entry"][0]["changes"] += [customer_message()["changes"][0], change]
        bodies.append(orjson.dumps(document))
    with serving(local(database_url, log_level="DEBUG")) as live:
        logs.watch(live)
        for body in bodies:
            assert live.post_webhook(body).status_code == 200
        live.wait_processed()
    assert_absent(CUSTOMER, logs=logs.text())


# -- 3. text from Meta is data ------------------------------------------------------------------


def is_json(response: httpx.Response) -> bool:
    kind = response.headers.get("content-type", "")
    return kind.startswith("application/json") and "html" not in kind


def test_text_from_meta_stays_data_in_the_api_and_in_notifications(database_url: str) -> None:
    template = {"message_template_name": SCRIPT, "reason": ATTRIBUTE}
    account_alert = {
        "entity_type": "PHONE_NUMBER",
        "entity_id": "106540352242922",
        "alert_info": {
            "alert_severity": "CRITICAL",
            "alert_status": "ACTIVE",
            "alert_type": MARKUP,
            "alert_description": MARKUP,
        },
    }
    bodies = [
        envelope(template_status(51, "APPROVED", T0, **template)),
        envelope(
            template_status(
                51, "PAUSED", T0 + 60, title="FIRST_PAUSE", description=MARKUP, **template
            )
        ),
        envelope(entry("account_alerts", account_alert, time=T0 + 120)),
    ]
    with receiving(Receiver()) as r:
        formats = {"text": "", "html": "?format=html", "markdown": "?format=markdown"}
        urls = [f"webhook+http://{r.url}/hook"]
        urls += [f"json://{r.url}/{name}{query}" for name, query in formats.items()]
        settings = local(database_url, alert_urls=" ".join(urls), alert_group_wait="0s")
        with serving(settings) as live:
            for body in bodies:
                assert live.post_webhook(body).status_code == 200
            live.wait_processed()

            def arrived() -> bool:
                paths = [x.path for x in r.received]
                return all(paths.count(f"/{p}") >= 2 for p in ("hook", *formats))

            eventually(arrived, "both alerts at every receiver")
            answers = {
                "templates": get(live, "/api/v1/templates"),
                "events": get(live, "/api/v1/events"),
                "alerts": get(live, "/api/v1/alerts"),
            }
            missing = live.client.get(
                f"/api/v1/templates/{quote(ATTRIBUTE, safe='')}/history", headers=AUTH
            )
            handshake = live.client.get(
                WEBHOOK,
                params={
                    "hub.mode": "subscribe",
                    "hub.verify_token": VERIFY_TOKEN,
                    "hub.challenge": SCRIPT,
                },
            )
    # the API: JSON, and the strings come back exactly
    assert all(is_json(a) for a in answers.values()) and is_json(missing)
    [named] = [t for t in answers["templates"].json()["items"] if t["id"] == "51"]
    assert named["name"] == SCRIPT
    events = answers["events"].json()["items"]
    values = [e["value"] for e in events if e["field"] == "message_template_status_update"]
    assert [v["reason"] for v in values] == [ATTRIBUTE, ATTRIBUTE]
    assert MARKUP in {v.get("other_info", {}).get("description") for v in values}
    [alerted] = [e["value"] for e in events if e["field"] == "account_alerts"]
    assert alerted["alert_info"] == account_alert["alert_info"]
    alerts = {a["rule"]: a for a in answers["alerts"].json()}
    assert SCRIPT in alerts["template_status"]["summary"]
    account_summary = f"WABA {WABA}: account alert {MARKUP} (PHONE_NUMBER 106540352242922)"
    assert alerts["account_alert_critical"]["summary"] == account_summary
    assert missing.status_code == 404 and ATTRIBUTE[:20] in missing.json()["error"]["message"]
    # the handshake echoes its challenge as plain text, never as HTML
    assert handshake.text == SCRIPT
    assert handshake.headers["content-type"].startswith("text/plain")
    # the JSON webhook: the strings as data
    hooks = [x for x in r.received if x.path == "/hook"]
    assert all(x.headers["content-type"] == "application/json" for x in hooks)
    annotations = [a["annotations"] for x in hooks for a in x.body["alerts"]]
    assert any(SCRIPT in a["summary"] for a in annotations)
    assert account_summary in [a["summary"] for a in annotations]
    # Apprise: declared plain text, so kept as is where the service takes text, and escaped
    # by Apprise where it renders HTML or Markdown (what Slack, e-mail, Teams... get)
    messages = {
        name: "\n".join(x.body["message"] for x in r.received if x.path == f"/{name}")
        for name in formats
    }
    assert SCRIPT in messages["text"] and MARKUP in messages["text"]
    html = messages["html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html and "<img" not in html and "<!channel>" not in html
    markdown = messages["markdown"]
    assert r"\[click\]\(http://evil\.example\)" in markdown and r"\*bold\*" in markdown
    assert "[click](http://evil.example)" not in markdown and "*bold*" not in markdown


# -- 4. limits ----------------------------------------------------------------------------------


def answer_while_sending(url: str, head: bytes, chunks: Iterator[bytes], wait: float) -> bytes:
    """Send ``head`` and ``chunks`` on a raw connection, never finishing the body; the status
    line of the answer that arrives meanwhile (or within ``wait`` seconds after), else b""."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "", parts.port or 80), timeout=wait) as s:
        s.sendall(head)
        for chunk in chunks:
            s.setblocking(False)
            try:
                if s.recv(1, socket.MSG_PEEK):
                    break  # answered before the body was all sent
            except BlockingIOError:
                pass
            s.settimeout(wait)
            try:
                s.sendall(chunk)
            except OSError:  # answered and closed meanwhile
                break
        s.settimeout(wait)
        try:
            return s.recv(4096).split(b"\r\n", 1)[0]
        except (TimeoutError, ConnectionResetError):
            return b""


def post_head(path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def nested(depth: int, inner: bytes = b"1") -> bytes:
    return b'{"a":' * depth + inner + b"}" * depth


FIVE_MIB = 5 << 20


def test_oversized_and_deeply_nested_input_is_refused_or_quarantined(database_url: str) -> None:
    with serving(local(database_url)) as live:
        # a declared length over 4 MiB: answered at once, before the body is sent
        head = post_head(WEBHOOK, **{"Content-Length": str(FIVE_MIB)})
        started = time.monotonic()
        assert answer_while_sending(live.url, head, iter([b"{"]), 5.0).endswith(
            b" 413 Request Entity Too Large"
        )
        assert time.monotonic() - started < 3
        # streamed without a length: refused once 4 MiB are passed, the rest never sent
        head = post_head(WEBHOOK, **{"Transfer-Encoding": "chunked"})
        piece = b"x" * (64 << 10)
        chunks = (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(MAX_BODY // len(piece) + 16))
        assert answer_while_sending(live.url, head, chunks, 5.0).endswith(
            b" 413 Request Entity Too Large"
        )
        # 100,000 levels, correctly signed: stored, then quarantined whole
        deep = b"[" * 100_000 + b"]" * 100_000
        assert live.post_webhook(deep).status_code == 200
        # under the parser's depth limit, but too deep to store as JSON: that part quarantined
        change = b'{"field":"zz_future","value":' + nested(1000) + b"}"
        document = (
            b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":['
            + change
            + b"]}]}"
        )
        assert live.post_webhook(document).status_code == 200
        live.wait_processed()
        items = get(live, "/api/v1/quarantine").json()["items"]
        assert {i["path"] for i in items} == {"", "entry[0].changes[0]"}
        # API bodies: huge or deep, with or without the token: a 4xx, never a 500
        big = b"1" * FIVE_MIB
        bad_bodies = {
            "/api/v1/watched-wabas": [
                b"[" * 100_000 + b"]" * 100_000,
                nested(100_000),
                b'{"waba_id":"' + big + b'"}',
                b'{"waba_id":' + big + b"}",
                b"{" + b" " * FIVE_MIB,
            ],
            "/api/v1/silences": [
                nested(100_000),
                b'{"matchers":' + nested(100_000) + b',"duration":"1h"}',
                b'{"matchers":{"a":"b"},"duration":"1h","comment":"' + big + b'"}',
                b'{"matchers":{"a":"b"},"duration":"' + big + b'"}',
                b'{"matchers":{"a":"b"},"duration":' + big + b"}",
            ],
        }
        for path, bodies in bad_bodies.items():
            for body in bodies:
                for headers in (AUTH, {}, {"Authorization": "Bearer wrong"}):
                    answer = live.client.post(
                        path, content=body, headers={**headers, "Content-Type": "application/json"}
                    )
                    expected = {400, 413} if headers is AUTH else {401}
                    assert answer.status_code in expected, (path, body[:40], answer.text[:200])
                    assert is_json(answer)
            assert live.client.get("/healthz").text == "ok"
        assert get(live, "/api/v1/status").json()["webhooks"]["quarantined"] == 2


def test_api_bodies_of_5_mib_are_refused(database_url: str) -> None:
    big = "x" * FIVE_MIB
    with serving(local(database_url)) as live:
        silence = {"matchers": {"waba_id": big}, "duration": "1h"}
        watched = {"waba_id": "104996122399160", "access_token": big}
        for path, body in (("/api/v1/silences", silence), ("/api/v1/watched-wabas", watched)):
            answer = live.client.post(path, json=body, headers=AUTH)
            assert 400 <= answer.status_code < 500, (path, answer.status_code)


def test_api_refuses_an_oversized_body_before_reading_it(database_url: str) -> None:
    with serving(local(database_url)) as live:
        head = post_head(
            "/api/v1/silences",
            **{"Content-Length": str(50 << 20), "Content-Type": "application/json"},
        )
        status = answer_while_sending(live.url, head, iter([b"{"]), 2.0)
        assert status.split(b" ")[1:2] in ([b"401"], [b"413"]), status


# -- 5. SQL --------------------------------------------------------------------------------------

# Raw SQL enters through these calls: SQLAlchemy's text() and exec_driver_sql(), Alembic's
# op.execute() and the DB-API cursors' execute(); a Connection.execute() takes constructs only.
SQL_CALLS = frozenset({"text", "exec_driver_sql", "execute", "executemany", "executescript"})
SQL_START = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|PRAGMA|CREATE|DROP|ALTER|BEGIN|TRUNCATE|WITH|VACUUM)\b"
)
# SQL made at run time: (file under src/waquality, the expression as ast.unparse writes it) →
# why it is safe. The test checks the reasons it can: what an f-string here interpolates is an
# int, and a name here only ever holds constants or f-strings listed here.
DYNAMIC_SQL = {
    ("store/database.py", "f'PRAGMA busy_timeout={left}'"): (
        "PRAGMA takes no bound parameters; left is max(0, int(...)), milliseconds left"
    ),
    ("store/database.py", "f'PRAGMA busy_timeout={busy_timeout_ms}'"): (
        "PRAGMA takes no bound parameters; busy_timeout_ms is an int parameter"
    ),
    ("store/database.py", "pragma"): (
        "iterates SQLITE_PRAGMAS (constant strings) and the busy_timeout f-string above"
    ),
    (
        "store/inbox.py",
        "'INSERT INTO raw_webhooks (body, received_at, quiet) VALUES (?, ?, ?)' + "
        "', (?, ?, ?)' * (rows - 1)",
    ): "a constant row of placeholders repeated an int number of times; values are bound",
    ("store/bulk.py", "prepared.sql"): (
        "SQLAlchemy's compilation of an INSERT or UPDATE of a schema table, its columns checked "
        "against the table's; every value is a bound parameter"
    ),
}


def _constant(node: ast.AST) -> bool:
    match node:
        case ast.Constant(value=str()):
            return True
        case ast.IfExp(body=body, orelse=orelse):
            return _constant(body) and _constant(orelse)
    return False


def _built(node: ast.AST) -> bool:
    """Whether ``node`` builds text at run time: f-string, ``%``, ``+``, ``.format()``."""
    match node:
        case ast.JoinedStr() | ast.BinOp():
            return True
        case (
            ast.Call(func=ast.Attribute(attr="format" | "join")) | ast.Call(func=ast.Name(id="str"))
        ):
            return True
    return False


def _literal(node: ast.AST) -> str:
    """The constant text of a built string, in order (where its SQL keywords would be)."""
    match node:
        case ast.Constant(value=str(text)):
            return text
        case ast.JoinedStr(values=values):
            return "".join(_literal(v) for v in values)
        case ast.BinOp(left=left, right=right):
            return _literal(left) + _literal(right)
        case ast.Call(func=ast.Attribute(value=value, attr="format")):
            return _literal(value)
    return ""


def _bindings(scope: ast.AST, name: str) -> list[ast.AST | None]:
    """What ``name`` is bound to in ``scope`` (None: a parameter)."""
    found: list[ast.AST | None] = []
    for node in ast.walk(scope):
        match node:
            case ast.Assign(targets=targets, value=value) if any(
                isinstance(t, ast.Name) and t.id == name for t in targets
            ):
                found.append(value)
            case ast.AnnAssign(target=ast.Name(id=n), value=value) if n == name:
                found.append(value)
            case ast.For(target=ast.Name(id=n), iter=value) if n == name:
                found.append(value)
            case ast.arg(arg=n) if n == name:
                found.append(None)
    return found


def _dynamic(argument: ast.AST, scope: ast.AST) -> bool:
    """Whether the SQL given to a raw-SQL call may be made at run time (a SQLAlchemy construct,
    such as select(...), is not raw SQL)."""
    if _constant(argument):
        return False
    if isinstance(argument, ast.Name):
        bound = _bindings(scope, argument.id)
        return not bound or any(
            b is None or _built(b) or isinstance(b, ast.Tuple | ast.List | ast.Constant)
            for b in bound
        )
    return _built(argument) or not isinstance(argument, ast.Call)


def _int_valued(node: ast.AST, scope: ast.AST) -> bool:
    match node:
        case ast.Constant(value=int()) | ast.Call(func=ast.Name(id="int")):
            return True
        case ast.Call(func=ast.Name(id="max" | "min"), args=args):
            return all(_int_valued(a, scope) for a in args)
        case ast.Name(id=name):
            params = [a for a in ast.walk(scope) if isinstance(a, ast.arg) and a.arg == name]
            if any(a.annotation is not None and ast.unparse(a.annotation) == "int" for a in params):
                return True
            bound = [b for b in _bindings(scope, name) if b is not None]
            return bool(bound) and all(_int_valued(b, scope) for b in bound)
    return False


def _only_listed_sql(value: ast.AST, module: ast.Module, file: str) -> bool:
    """Whether every SQL string ``value`` (a sequence a name iterates) can hold is a constant or
    an expression listed in DYNAMIC_SQL."""
    if not isinstance(value, ast.Tuple | ast.List):
        return False
    for element in value.elts:
        if isinstance(element, ast.Starred) and isinstance(element.value, ast.Name):
            top = [
                n.value
                for n in module.body
                if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == element.value.id for t in n.targets)
            ]
            if not top or not all(_only_listed_sql(t, module, file) for t in top):
                return False
        elif not _constant(element) and (file, ast.unparse(element)) not in DYNAMIC_SQL:
            return False
    return True


def test_sql_is_only_built_from_constants_and_bound_parameters() -> None:
    seen: set[tuple[str, str]] = set()
    unexplained: set[str] = set()
    constant_calls = 0
    for path in sorted(SRC.rglob("*.py")):
        file = path.relative_to(SRC).as_posix()
        module = ast.parse(path.read_text(), str(path))
        functions = [
            n for n in ast.walk(module) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]

        def scope_of(
            node: ast.AST, module: ast.AST = module, functions: list[Any] = functions
        ) -> Any:
            """The outermost function around ``node`` (closures see their parents' names)."""
            around = [f for f in functions if any(n is node for n in ast.walk(f))]
            return max(around, key=lambda f: (f.end_lineno or f.lineno) - f.lineno, default=module)

        for node in ast.walk(module):
            candidates: list[ast.AST] = []
            if isinstance(node, ast.Call) and node.args:
                called = node.func
                if isinstance(called, ast.Attribute):
                    called_name = called.attr
                else:
                    called_name = getattr(called, "id", "")
                if called_name in SQL_CALLS:
                    if _dynamic(node.args[0], scope_of(node)):
                        candidates.append(node.args[0])
                    elif _constant(node.args[0]):
                        constant_calls += 1
            if _built(node) and SQL_START.match(_literal(node)):
                candidates.append(node)
            for candidate in candidates:
                key = (file, ast.unparse(candidate))
                seen.add(key)
                if key not in DYNAMIC_SQL:
                    unexplained.add(f"{file}:{getattr(candidate, 'lineno', '?')}: {key[1]}")
                    continue
                scope = scope_of(candidate)
                if isinstance(candidate, ast.Name):
                    for bound in _bindings(scope, candidate.id):
                        assert bound is not None and _only_listed_sql(bound, module, file), key
                for value in ast.walk(candidate):
                    if isinstance(value, ast.FormattedValue):
                        assert _int_valued(value.value, scope), key
    assert not unexplained, "SQL made at run time, not explained: " + "; ".join(sorted(unexplained))
    assert set(DYNAMIC_SQL) <= seen, f"no longer in the code: {set(DYNAMIC_SQL) - seen}"
    assert constant_calls >= 10  # the scan sees the code: text("SELECT 1"), migrations...
