"""The tracker's commands: reports, rebuild and tags."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from test_cli import cli_env, ok, run
from waquality.cli_tracker import seconds
from waquality.domain.enums import MessageStatus
from waquality.domain.messages import Inbound, Item, Status
from waquality.domain.tags import decode
from waquality.store.database import Database
from waquality.store.tracker import Tracker

PHONE = "106540352242922"
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
T = NOW - timedelta(days=2)


@pytest.fixture(autouse=True)
def _no_stray_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WAQUALITY_"):
            monkeypatch.delenv(name)


def seed(db: Database) -> None:
    items: list[Item] = []
    for c, delay in enumerate((30, 90, 600)):
        customer = f"1650555900{c}"
        items.append(Inbound(f"wamid.in{c}", PHONE, customer, T, "text", None, None))
        sent = T + timedelta(seconds=delay)
        items.append(Status(f"wamid.out{c}", PHONE, customer, MessageStatus.SENT, sent))
    items.append(
        Status("wamid.f", PHONE, "16505559009", MessageStatus.FAILED, T, (131049,), "marketing")
    )
    with db.write() as conn:
        Tracker(db).apply(conn, items, NOW)


def test_response_times_report(db: Database, database_url: str) -> None:
    seed(db)
    out = ok(["report", "response-times", "--from", "7d"], cli_env(database_url))
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["start", "first", "mean"]
    total = next(line for line in lines if line.startswith("total")).split()
    assert total[1] == "3"  # three first responses
    assert total[2:4] == ["4m", "00s"]  # mean of 30 s, 90 s and 600 s
    day = T.strftime("%Y-%m-%d")
    assert any(line.startswith(day) for line in lines)
    out = ok(["report", "response-times", "--from", "7d", "--number", "1"], cli_env(database_url))
    assert next(line for line in out.splitlines() if line.startswith("total")).split()[1] == "0"


def test_delivery_report(db: Database, database_url: str) -> None:
    seed(db)
    out = ok(["report", "delivery", "--from", "7d", "--bucket", "hour"], cli_env(database_url))
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split()[1:7] == ["4", "3", "0", "0", "1", "0"]
    assert "131049×1" in total


def test_rebuild_gives_the_same_report(db: Database, database_url: str) -> None:
    seed(db)
    env = cli_env(database_url)
    before = ok(["report", "response-times", "--from", "7d"], env)
    out = ok(["tracker", "rebuild"], env)
    assert "7 messages, 3 conversations, 3 responses" in out  # a failed message is none
    assert ok(["report", "response-times", "--from", "7d"], env) == before


def test_a_bad_range_is_refused(database_url: str) -> None:
    result = run(["report", "response-times", "--from", "1d", "--to", "2d"], cli_env(database_url))
    assert result.exit_code == 1 and "--from must be before --to" in result.output
    result = run(["report", "delivery", "--from", "tomorrow"], cli_env(database_url))
    assert result.exit_code == 1 and "--from" in result.output


def test_tag_prints_the_callback_value(database_url: str) -> None:
    args = ["tag", "--sender", "agent", "--journey", "order support", "--experiment", "x=B"]
    value = ok(args, cli_env(database_url)).strip()
    tags = decode(value)
    assert (
        tags is not None and tags.journey == "order support" and tags.experiments == (("x", "B"),)
    )
    assert run(["tag", "--experiment", "nope"], cli_env(database_url)).exit_code == 2


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.25, "250ms"), (4.25, "4.2s"), (42, "42s"), (190, "3m 10s"), (7500, "2h 05m"), (None, "-")],
)
def test_durations_read_well(value: float | None, text: str) -> None:
    assert seconds(value) == text


def test_erase_one_customer(db: Database, database_url: str) -> None:
    seed(db)
    env = cli_env(database_url)
    out = ok(["customers", "erase", "16505559001"], env)
    assert out.startswith("erased: 2 messages, 1 conversations, 1 responses")
    again = run(["customers", "erase", "16505559001"], env)
    assert again.exit_code == 1 and "no data of this customer" in again.output
    assert "16505559001" not in again.output
