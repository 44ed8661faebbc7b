"""A server with the dashboard on loopback, on a database seeded the way production fills it:
polls applied through the poller's own path (state, history, alerts), signed webhooks through
the receiver (template events, a Flagged number, messages and their statuses).

Meta's and customers' text is hostile on purpose: a verified name and a template name carry
``<script>``, so every page shows whether it escapes them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from builders import envelope, inbound_message, messages_status, phone_quality, template_status
from conftest import API_TOKEN, LiveServer, make_settings, run_server
from waquality.alerting.book import Alerting
from waquality.config import Settings
from waquality.domain.enums import Source
from waquality.domain.tags import Tags, encode
from waquality.graph import snapshot
from waquality.store import schema
from waquality.store.database import Database
from waquality.store.state import StateWriter, TimedChange, join_phone

PASSWORD = "a dashboard password"
WABA = "102290129340398"
OTHER_WABA = "524126980791429"
HOSTILE_NAME = 'Shop <script>window.hacked = "name"</script>'
HOSTILE_TEMPLATE = '<script>window.hacked = "template"</script>'


@dataclass(frozen=True, slots=True)
class Number:
    phone_number_id: str
    display: str
    waba: str


N1 = Number("106540352242922", "15550783881", WABA)  # YELLOW, CONNECTED, hostile name
N2 = Number("106540352242923", "15550783882", WABA)  # FLAGGED, quality back to Medium
N3 = Number("106540352242924", "15550783883", OTHER_WABA)  # GREEN
T_ORDER = "806312974732579"  # order_update: GREEN, then YELLOW
T_PAUSED = "1304694804498707"  # promo_paused: paused (first pause)
T_HOSTILE = "1689556908129870"  # a hostile name, RED
T_DISABLED = "1689556908129871"
T_WELCOME = "1689556908129872"  # the other WABA's


def dashboard_settings(database_url: str, **overrides: str) -> Settings:
    return make_settings(database_url, dashboard_password=PASSWORD, **overrides)


def serve(settings: Settings) -> Iterator[LiveServer]:
    """``waquality serve`` on loopback (the dashboard gets the settings, its password too)."""
    yield from run_server(settings)


@pytest.fixture(scope="module")
def module_database_url(
    _postgres_url: str | None, _sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated, empty database for one test module."""
    if _postgres_url is None:
        path = tmp_path_factory.mktemp("dashboard") / "waquality.db"
        shutil.copyfile(_sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    engine = create_engine(_postgres_url)
    tables = ", ".join(t.name for t in schema.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    yield _postgres_url


@pytest.fixture(scope="module")
def seeded_server(module_database_url: str) -> Iterator[LiveServer]:
    """A dashboard server with seeded numbers, templates, alerts and conversations."""
    settings = dashboard_settings(module_database_url)
    for live in serve(settings):
        seed(live, datetime.now(UTC))
        yield live


def poll(
    db: Database,
    at: datetime,
    waba: str,
    phones: list[dict[str, Any]] = (),  # type: ignore[assignment]
    templates: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> None:
    """What a poll of ``waba`` that read these Graph items writes (the poller's own path)."""
    joins, changes = [], []
    for item in phones:
        found = snapshot.phone(item, waba, at)
        assert found is not None
        join, phone_changes = found
        joins += [join] if join else []
        changes += phone_changes
    for item in templates:
        changes += snapshot.template(item, waba, at) or []
    with db.write() as conn:
        for join in joins:
            join_phone(db, conn, join, at)
        writer = StateWriter(db, conn, at, Source.POLL.value, keep_confirmations=False)
        writer.apply([TimedChange(change, at, None) for change in changes])
        Alerting(receivers=("ops-chat",)).apply(db, conn, writer.changed, at)


def phone_item(number: Number, quality: str, status: str = "CONNECTED", **extra: Any) -> Any:
    return {
        "id": number.phone_number_id,
        "display_phone_number": f"+{number.display}",
        "verified_name": extra.pop("verified_name", f"Number {number.display[-2:]}"),
        "quality_rating": quality,
        "status": status,
        "whatsapp_business_manager_messaging_limit": extra.pop("limit", "TIER_1K"),
        "throughput": {"level": "STANDARD"},
        **extra,
    }


def template_item(template_id: str, name: str, status: str, quality: str, **extra: Any) -> Any:
    return {
        "id": template_id,
        "name": name,
        "language": "en_US",
        "status": status,
        "category": extra.pop("category", "MARKETING"),
        "quality_score": {"score": quality},
        **extra,
    }


def seed(server: LiveServer, now: datetime) -> None:
    db = server.runtime.db
    days = [now - timedelta(days=d) for d in (40, 20, 6, 2)]
    # numbers: a history of polls
    poll(db, days[0], WABA, [phone_item(N1, "GREEN", verified_name=HOSTILE_NAME)])
    poll(db, days[1], WABA, [phone_item(N1, "GREEN", verified_name=HOSTILE_NAME, limit="TIER_2K")])
    poll(db, days[2], WABA, [phone_item(N1, "YELLOW", verified_name=HOSTILE_NAME, limit="TIER_2K")])
    poll(db, days[0], WABA, [phone_item(N2, "GREEN")])
    poll(db, days[1], WABA, [phone_item(N2, "RED")])
    poll(db, days[0], OTHER_WABA, [phone_item(N3, "GREEN", limit="TIER_10K")])
    poll(
        db,
        days[0],
        WABA,
        templates=[
            template_item(T_ORDER, "order_update", "APPROVED", "GREEN", category="UTILITY"),
            template_item(T_PAUSED, "promo_paused", "APPROVED", "GREEN"),
            template_item(T_HOSTILE, HOSTILE_TEMPLATE, "APPROVED", "RED"),
            template_item(T_DISABLED, "old_offer", "APPROVED", "YELLOW"),
        ],
    )
    poll(
        db,
        days[0],
        OTHER_WABA,
        templates=[template_item(T_WELCOME, "welcome", "APPROVED", "GREEN")],
    )
    poll(
        db, days[2], WABA, templates=[template_item(T_ORDER, "order_update", "APPROVED", "YELLOW")]
    )
    # webhooks: the Flagged number (legacy event), its quality back to Medium since; a pause
    flagged_at = now - timedelta(days=3)
    hour = int(now.timestamp()) // 3600 * 3600
    bodies = [
        envelope(phone_quality("FLAGGED", int(flagged_at.timestamp()), display=N2.display)),
        envelope(
            template_status(
                int(T_PAUSED),
                "PAUSED",
                int((now - timedelta(hours=1)).timestamp()),
                title="FIRST_PAUSE",
                description="Your template has been paused for 3 hours.",
            )
        ),
        envelope(template_status(int(T_DISABLED), "DISABLED", int(days[3].timestamp()))),
    ]
    order = encode(Tags(template="order_update"))
    t = hour - 3 * 3600
    for index, customer in enumerate(("16505550101", "16505550102", "16505550103")):
        start = t + index * 600
        wamid = f"wamid.out{index}"
        bodies += [
            envelope(inbound_message(f"wamid.in{index}", customer, start)),
            envelope(
                messages_status(
                    wamid=wamid,
                    status="sent",
                    time=start + 30 + 60 * index,
                    recipient=customer,
                    callback=order,
                )
            ),
            envelope(
                messages_status(
                    wamid=wamid,
                    status="failed" if index == 2 else "read",
                    time=start + 200,
                    recipient=customer,
                    error=131049 if index == 2 else None,
                )
            ),
        ]
    for body in bodies:
        response = server.post_webhook(body)
        assert response.status_code == 200, response.text
    server.wait_processed()
    poll(db, now - timedelta(days=1), WABA, [phone_item(N2, "YELLOW", status="FLAGGED")])


def sign_in(client: httpx.Client, secret: str = API_TOKEN, target: str = "/") -> httpx.Response:
    """Sign in through the form as a browser does (its anonymous session first)."""
    page = client.get("/login", params={"next": target})
    assert page.status_code == 200, page.text
    return client.post(
        "/login",
        data={"csrf": csrf_of(page.text), "secret": secret, "next": target},
        follow_redirects=False,
    )


def csrf_of(html: str) -> str:
    marker = 'name="csrf" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]
