"""The ``waquality`` command, through click's runner, on the test database."""

from __future__ import annotations

import gc
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner, Result

from conftest import API_TOKEN, DATA, SECRET, make_settings, manifest, run_server, webhook
from waquality.cli import main
from waquality.process.worker import Processor
from waquality.store import inbox, migrate
from waquality.store.database import Database

EMPTY_TOML = str(DATA / "empty.toml")
BROKEN = [m for m in manifest() if m["file"].startswith("broken/")]
VALID = [
    "message_template_status_update/approved.json",
    "phone_number_quality_update/legacy_flagged.json",
    "account_update/account_violation.json",
]
COMMANDS = [
    ["serve"],
    ["worker"],
    ["db", "upgrade"],
    ["reprocess"],
    ["quarantine"],
    ["status"],
    ["token", "reset"],
]


@pytest.fixture(autouse=True)
def _no_stray_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test gives count (the runner adds them to this environment)."""
    for name in list(os.environ):
        if name.startswith("WAQUALITY_"):
            monkeypatch.delenv(name)


def cli_env(database_url: str, **settings: str | None) -> dict[str, str]:
    """The environment of one command; a setting given as None is left out."""
    env: dict[str, str | None] = {
        "WAQUALITY_DATABASE_URL": database_url,
        "WAQUALITY_CONFIG": EMPTY_TOML,
        "WAQUALITY_APP_SECRET": SECRET,
        "WAQUALITY_API_TOKEN": API_TOKEN,
        "WAQUALITY_LOG_LEVEL": "WARNING",
    }
    env.update({f"WAQUALITY_{k.upper()}": v for k, v in settings.items()})
    return {name: value for name, value in env.items() if value is not None}


def run(args: list[str], env: Mapping[str, str]) -> Result:
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=True)
    # A command is a short-lived process: it leaves its connection pool to the exit. Here the
    # process goes on, so collect what the command dropped now, quietly, instead of letting a
    # ResourceWarning surface in whichever test happens to trigger the garbage collector.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    return result


def ok(args: list[str], env: Mapping[str, str]) -> str:
    result = run(args, env)
    assert result.exception is None, (result.output, result.exc_info)
    assert result.exit_code == 0, result.output
    return result.stdout


def store(db: Database, names: list[str]) -> None:
    now = datetime.now(UTC)
    with db.write() as conn:
        inbox.insert_bodies(conn, [inbox.Body(webhook(name), now) for name in names])


def stored_and_processed(db: Database, names: list[str]) -> None:
    store(db, names)
    Processor(db).drain()


def counts_from(output: str) -> dict[str, int]:
    found = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", output, re.MULTILINE))
    return {name: int(value) for name, value in found.items()}


def expected_events(names: list[str]) -> int:
    by_file = {m["file"]: m for m in manifest()}
    return sum(int(by_file[name]["management_events"]) for name in names)


# -- help and version ---------------------------------------------------------------------------


def all_commands() -> Iterator[list[str]]:
    def walk(command: click.Command, path: list[str]) -> Iterator[list[str]]:
        yield path
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])

    yield from walk(main, [])


def test_every_command_is_known_to_this_test() -> None:
    listed = {tuple(path) for path in all_commands()}
    for command in COMMANDS:
        assert tuple(command) in listed


@pytest.mark.parametrize("command", list(all_commands()), ids=lambda c: " ".join(c) or "main")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_of_every_command(command: list[str], flag: str) -> None:
    result = run([*command, flag], {})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    assert "Traceback" not in result.output


def test_help_lists_the_commands() -> None:
    text = run(["--help"], {}).stdout
    for name in ("serve", "worker", "db", "reprocess", "quarantine", "status", "token"):
        assert re.search(rf"^\s+{name}\b", text, re.MULTILINE), text


def test_serve_help_shows_host_and_port() -> None:
    text = run(["serve", "--help"], {}).stdout
    assert "--host" in text
    assert "--port" in text


def test_version() -> None:
    import waquality

    result = run(["--version"], {})
    assert result.exit_code == 0
    assert waquality.__version__ in result.stdout


# -- configuration errors -----------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_invalid_configuration_gives_one_clear_message(
    command: list[str], database_url: str
) -> None:
    env = cli_env(database_url, port="not-a-port", customer_data_retention="soon")
    result = run(command, env)
    assert result.exit_code not in (0, None)
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    assert result.output.count("Error:") == 1, result.output
    assert "invalid configuration" in result.output
    assert "WAQUALITY_PORT" in result.output
    assert "WAQUALITY_CUSTOMER_DATA_RETENTION" in result.output
    assert API_TOKEN not in result.output
    assert SECRET not in result.output


def test_unknown_variable_is_refused(database_url: str) -> None:
    result = run(["status"], cli_env(database_url, databse_url="sqlite:///typo.db"))
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "WAQUALITY_DATABSE_URL" in result.output


def test_missing_config_file_is_refused(database_url: str, tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    result = run(["status"], cli_env(database_url, config=str(missing)))
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert str(missing) in result.output


@pytest.mark.parametrize("command", [["status"], ["db", "upgrade"], ["quarantine"]], ids=" ".join)
def test_unusable_database_gives_a_clear_message(command: list[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'w.db'}"
    result = run(command, cli_env(url))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert result.output.startswith("Error:"), result.output
    assert "Traceback" not in result.output


# -- db upgrade ---------------------------------------------------------------------------------


def test_db_upgrade_creates_the_schema_on_a_fresh_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    database = Database(url)
    try:
        assert migrate.current_revision(database) is None
        out = ok(["db", "upgrade"], cli_env(url))
        head = migrate.head_revision()
        assert head is not None
        assert head in out
        assert migrate.current_revision(database) == head
        assert migrate.is_current(database)
        assert inbox.counts(database)["received"] == 0
    finally:
        database.dispose()


def test_db_upgrade_is_idempotent(database_url: str, db: Database) -> None:
    head = migrate.head_revision()
    assert head is not None
    first = ok(["db", "upgrade"], cli_env(database_url))
    second = ok(["db", "upgrade"], cli_env(database_url))
    assert head in first
    assert head in second
    assert migrate.is_current(db)


# -- status -------------------------------------------------------------------------------------


def test_status_on_an_empty_database(database_url: str) -> None:
    counts = counts_from(ok(["status"], cli_env(database_url)))
    assert counts == {"received": 0, "pending": 0, "processed": 0, "quarantined": 0, "events": 0}


def test_status_counts(database_url: str, db: Database) -> None:
    stored_and_processed(db, VALID)
    store(db, ["account_review_update/approved.json"])  # stored, not processed yet
    counts = counts_from(ok(["status"], cli_env(database_url)))
    assert counts["received"] == len(VALID) + 1
    assert counts["pending"] == 1
    assert counts["processed"] == len(VALID)
    assert counts["quarantined"] == 0
    assert counts["events"] == expected_events(VALID)

    stored_and_processed(db, [m["file"] for m in BROKEN])
    counts = counts_from(ok(["status"], cli_env(database_url)))
    assert counts["received"] == len(VALID) + 1 + len(BROKEN)
    assert counts["pending"] == 0
    assert counts["quarantined"] == len(BROKEN)
    assert counts["events"] == expected_events(VALID) + 1 + sum(
        int(m["management_events"]) for m in BROKEN
    )


# -- quarantine ---------------------------------------------------------------------------------


def quarantine_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("#")]


def test_quarantine_when_nothing_is_quarantined(database_url: str, db: Database) -> None:
    stored_and_processed(db, VALID)
    out = ok(["quarantine"], cli_env(database_url))
    assert quarantine_lines(out) == []
    assert "nothing quarantined" in out


def test_quarantine_lists_the_broken_bodies(database_url: str, db: Database) -> None:
    stored_and_processed(db, VALID)
    stored_and_processed(db, [m["file"] for m in BROKEN])
    lines = quarantine_lines(ok(["quarantine"], cli_env(database_url)))
    assert len(lines) == sum(int(m["broken_changes"]) for m in BROKEN)
    assert all(" open " in line for line in lines)
    text = "\n".join(lines)
    assert "(whole body)" in text  # not_json, truncated, ...
    assert "entry[0].changes[1]" in text  # mixed_valid_and_broken_change
    assert "message_template_status_update" in text
    assert "not valid JSON" in text


def test_quarantine_limit(database_url: str, db: Database) -> None:
    stored_and_processed(db, [m["file"] for m in BROKEN])
    assert len(quarantine_lines(ok(["quarantine", "--limit", "3"], cli_env(database_url)))) == 3


def test_quarantine_show_prints_the_raw_body(database_url: str, db: Database) -> None:
    name = "broken/template_status_missing_template_id.json"
    stored_and_processed(db, [*VALID, name])
    lines = quarantine_lines(ok(["quarantine"], cli_env(database_url)))
    assert len(lines) == 1
    item_id = re.match(r"#(\d+) ", lines[0])
    assert item_id is not None
    out = ok(["quarantine", "--show", item_id.group(1)], cli_env(database_url))
    assert quarantine_lines(out)[0] == lines[0]
    assert webhook(name).decode() in out
    assert "message_template_id is missing" in out


def test_quarantine_show_invalid_utf8_body(database_url: str, db: Database) -> None:
    name = "broken/invalid_utf8.bin"
    stored_and_processed(db, [name])
    lines = quarantine_lines(ok(["quarantine"], cli_env(database_url)))
    item_id = re.match(r"#(\d+) ", lines[0])
    assert item_id is not None
    out = ok(["quarantine", "--show", item_id.group(1)], cli_env(database_url))
    assert webhook(name).decode("utf-8", errors="replace") in out


def test_quarantine_show_unknown_item(database_url: str) -> None:
    result = run(["quarantine", "--show", "424242"], cli_env(database_url))
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "424242" in result.output
    assert "Traceback" not in result.output


# -- reprocess ----------------------------------------------------------------------------------


def reprocess_numbers(output: str) -> tuple[int, dict[str, int]]:
    requeued = re.search(r"requeued (\d+) bodies", output)
    assert requeued is not None, output
    processed = re.search(
        r"processed (\d+) bodies: (\d+) new events, (\d+) duplicates, (\d+) quarantined again",
        output,
    )
    numbers: dict[str, int] = {}
    if processed:
        numbers = dict(
            zip(
                ("bodies", "events", "duplicates", "quarantined"),
                map(int, processed.groups()),
                strict=True,
            )
        )
    return int(requeued.group(1)), numbers


def test_reprocess_with_nothing_quarantined(database_url: str, db: Database) -> None:
    stored_and_processed(db, VALID)
    requeued, numbers = reprocess_numbers(ok(["reprocess"], cli_env(database_url)))
    assert requeued == 0
    assert numbers == {}
    assert inbox.counts(db)["pending"] == 0


def test_reprocess_requeues_and_processes_quarantined_bodies(
    database_url: str, db: Database
) -> None:
    stored_and_processed(db, VALID)
    broken_files = [m["file"] for m in BROKEN]
    stored_and_processed(db, broken_files)
    before = inbox.counts(db)
    assert before["quarantined"] == len(BROKEN)
    events_in_broken = sum(int(m["management_events"]) for m in BROKEN)

    requeued, numbers = reprocess_numbers(ok(["reprocess"], cli_env(database_url)))
    assert requeued == len(BROKEN)
    # Still unparseable: quarantined again; what parsed the first time is a duplicate now.
    assert numbers == {
        "bodies": len(BROKEN),
        "events": 0,
        "duplicates": events_in_broken,
        "quarantined": sum(int(m["broken_changes"]) for m in BROKEN),
    }
    after = inbox.counts(db)
    assert after["pending"] == 0
    assert after["events"] == before["events"]
    assert after["quarantined"] == len(BROKEN)

    open_lines = quarantine_lines(ok(["quarantine"], cli_env(database_url)))
    all_lines = quarantine_lines(ok(["quarantine", "--all"], cli_env(database_url)))
    assert len(open_lines) == len(BROKEN)
    assert len(all_lines) == 2 * len(BROKEN)
    assert sum(" resolved " in line for line in all_lines) == len(BROKEN)


def test_reprocess_no_process_leaves_bodies_pending(database_url: str, db: Database) -> None:
    stored_and_processed(db, [m["file"] for m in BROKEN])
    out = ok(["reprocess", "--no-process"], cli_env(database_url))
    requeued, numbers = reprocess_numbers(out)
    assert requeued == len(BROKEN)
    assert numbers == {}
    assert inbox.counts(db)["pending"] == len(BROKEN)
    status = counts_from(ok(["status"], cli_env(database_url)))
    assert status["pending"] == len(BROKEN)
    result = Processor(db).drain()
    assert result.bodies == len(BROKEN)
    assert inbox.counts(db)["quarantined"] == len(BROKEN)


def test_reprocess_given_raw_ids(database_url: str, db: Database) -> None:
    stored_and_processed(db, VALID)
    with db.read() as conn:
        from sqlalchemy import select

        from waquality.store import schema

        raw_ids = list(
            conn.execute(
                select(schema.raw_webhooks.c.id).order_by(schema.raw_webhooks.c.id)
            ).scalars()
        )
    assert len(raw_ids) == len(VALID)
    out = ok(["reprocess", str(raw_ids[0])], cli_env(database_url))
    requeued, numbers = reprocess_numbers(out)
    assert requeued == 1
    assert numbers["bodies"] == 1
    assert numbers["events"] == 0
    assert numbers["duplicates"] == expected_events(VALID[:1])
    assert inbox.counts(db)["events"] == expected_events(VALID)


# -- token reset --------------------------------------------------------------------------------


def test_token_reset_is_refused_when_the_token_is_configured(database_url: str) -> None:
    result = run(["token", "reset"], cli_env(database_url))
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "WAQUALITY_API_TOKEN" in result.output
    assert API_TOKEN not in result.output


def status_code(url: str, token: str) -> int:
    response = httpx.get(
        f"{url}/api/v1/status", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    return response.status_code


def test_token_reset_prints_a_token_that_the_api_accepts(database_url: str) -> None:
    env = cli_env(database_url, api_token=None)
    first = ok(["token", "reset"], env).strip()
    second = ok(["token", "reset"], env).strip()
    for token in (first, second):
        assert token
        assert len(token) >= 32
        assert "\n" not in token
    assert first != second

    settings = make_settings(database_url, api_token="")
    assert settings.api_token is None
    live = run_server(settings)
    server = next(live)
    try:
        assert status_code(server.url, second) == 200
        assert status_code(server.url, first) == 401
        assert status_code(server.url, API_TOKEN) == 401
    finally:
        next(live, None)  # stops the server


def test_token_reset_replaces_a_generated_token(database_url: str) -> None:
    from waquality.runtime import Runtime

    runtime = Runtime(make_settings(database_url, api_token=""))
    try:
        generated = runtime.prepare()
    finally:
        runtime.db.dispose()
    assert generated
    token = ok(["token", "reset"], cli_env(database_url, api_token=None)).strip()
    assert token != generated
    live = run_server(make_settings(database_url, api_token=""))
    server = next(live)
    try:
        assert status_code(server.url, token) == 200
        assert status_code(server.url, generated) == 401
    finally:
        next(live, None)  # stops the server
