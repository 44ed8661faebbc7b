"""The dashboard in headless Chromium (the system's, driven by Playwright) against a seeded
server: each page's figures against the API's answers, filters and drill-downs clicked through,
hostile text shown as text, no console error (a CSP refusal would be one). Screenshots are kept
in ``test-artifacts/dashboard/``."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from seeded import (
    HOSTILE_NAME,
    HOSTILE_TEMPLATE,
    N1,
    N2,
    OTHER_WABA,
    T_ORDER,
    T_PAUSED,
    T_WELCOME,
    module_database_url,
    seeded_server,
)

from conftest import API_TOKEN, LiveServer
from waquality.web import formats

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("WAQUALITY_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
__all__ = ["module_database_url", "seeded_server"]  # fixtures used by these tests

if not Path(CHROMIUM).exists():  # pragma: no cover (CI installs it)
    if os.environ.get("CI"):  # in CI a missing browser is a failure, never a quiet skip
        raise RuntimeError(f"no Chromium at {CHROMIUM}: .ci/run installs it")
    pytest.skip(f"no Chromium at {CHROMIUM}", allow_module_level=True)


class Tab:
    """A browser page signed in to the dashboard, collecting console errors."""

    def __init__(self, page: Any, server: LiveServer, name: str) -> None:
        self.page, self.server, self.name = page, server, name
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def go(self, path: str) -> Any:
        self.page.goto(self.server.url + path)
        self.check()
        return self.page

    def check(self) -> None:
        """Nothing ran that the page did not bring, and nothing was refused."""
        assert self.page.evaluate("typeof window.hacked") == "undefined"
        assert not self.errors, self.errors

    def shot(self, label: str) -> None:
        folder = ARTIFACTS / os.environ.get("WAQUALITY_TEST_ARTIFACT_SET", database_kind())
        folder.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(folder / f"{self.name}-{label}.png"), full_page=True)


def database_kind() -> str:
    return "postgresql" if os.environ.get("TEST_DATABASE_URL") else "sqlite"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    folder = ARTIFACTS / database_kind()
    shutil.rmtree(folder, ignore_errors=True)
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


def open_tab(browser: Any, server: LiveServer, name: str, **context: Any) -> Tab:
    page = browser.new_context(**context).new_page()
    tab = Tab(page, server, name)
    page.goto(server.url + "/numbers")
    assert page.url.startswith(server.url + "/login?next=%2Fnumbers")
    page.fill("#secret", API_TOKEN)
    page.click("form[action='/login'] button")
    page.wait_for_url(server.url + "/numbers")
    tab.check()
    return tab


@pytest.fixture
def tab(browser: Any, seeded_server: LiveServer) -> Iterator[Tab]:
    opened = open_tab(browser, seeded_server, "desktop")
    yield opened
    opened.page.context.close()


def cell(page: Any, row: str, key: str) -> Any:
    return page.locator(f"{row} [data-k='{key}']")


def value_of(page: Any, row: str, key: str) -> str:
    found = page.locator(f"{row} [data-k='{key}'] [data-value]").first
    return str(found.get_attribute("data-value"))


def api_range() -> dict[str, str]:
    now = datetime.now(UTC)
    return {"from": (now - timedelta(days=30)).isoformat(), "to": now.isoformat()}


def test_a_wrong_login_is_refused_then_the_token_opens_the_overview(
    browser: Any, seeded_server: LiveServer
) -> None:
    page = browser.new_context().new_page()
    page.goto(seeded_server.url + "/alerts")
    page.fill("#secret", "not the token")
    page.click("form[action='/login'] button")
    assert page.locator("[role=alert]").inner_text() == "That token or password is not right."
    page.fill("#secret", API_TOKEN)
    page.click("form[action='/login'] button")
    page.wait_for_url(seeded_server.url + "/alerts")
    page.context.close()


def test_the_overview_shows_what_needs_attention_as_the_api_does(
    tab: Tab, seeded_server: LiveServer
) -> None:
    page = tab.go("/")
    phones = seeded_server.api("/api/v1/phone-numbers")["items"]
    by_quality = Counter(p["quality_rating"] or "UNKNOWN" for p in phones)
    for quality, count in by_quality.items():
        shown = page.locator(f"[data-counts=quality] [data-k='{quality}']").inner_text()
        assert int(shown) == count
    firing = seeded_server.api("/api/v1/alerts", state="firing")
    assert int(page.locator(".tile [data-k=firing]").inner_text()) == len(firing)
    assert page.locator("table[data-table=firing] tbody tr").count() == len(firing)
    # numbers not GREEN: the YELLOW one and the FLAGGED one, with its countdown
    rows = page.locator("table[data-table=attention-numbers] tbody tr")
    assert {rows.nth(i).get_attribute("data-number") for i in range(rows.count())} == {
        N1.phone_number_id,
        N2.phone_number_id,
    }
    countdown = page.locator(f"tr[data-number='{N2.phone_number_id}'] [data-countdown]")
    assert "back to CONNECTED around" in countdown.inner_text()
    paused = page.locator(f"table[data-table=paused] tr[data-template='{T_PAUSED}']")
    assert "in 1 h" in paused.inner_text() or "in 2 h" in paused.inner_text()
    # Meta's and customers' text is shown, not run
    assert page.get_by_text(HOSTILE_TEMPLATE, exact=False).count() > 0
    assert page.get_by_text(HOSTILE_NAME, exact=False).count() > 0
    tab.shot("overview")


def test_the_numbers_match_the_api_and_drill_down(tab: Tab, seeded_server: LiveServer) -> None:
    page = tab.go("/numbers")
    phones = seeded_server.api("/api/v1/phone-numbers")["items"]
    assert page.locator("table[data-table=numbers] tbody tr").count() == len(phones)
    for phone in phones:
        row = f"tr[data-number='{phone['id']}']"
        assert value_of(page, row, "quality_rating") == (phone["quality_rating"] or "")
        assert value_of(page, row, "status") == (phone["status"] or "")
        limit = cell(page, row, "messaging_limit").get_attribute("data-value")
        assert limit == (phone["messaging_limit"] or "")
        assert cell(page, row, "throughput").get_attribute("data-value") == phone["throughput"]
    # what lies behind a rating, on hover
    row = f"tr[data-number='{N1.phone_number_id}']"
    page.hover(f"{row} .behind-toggle")
    behind = page.locator(f"{row} .behind")
    assert behind.is_visible()
    assert "quality_rating GREEN → YELLOW" in behind.inner_text()
    tab.shot("numbers-hover")
    # drill down to the Flagged number, then widen the range from the filter bar
    page.click(f"tr[data-number='{N2.phone_number_id}'] [data-k=number] a")
    page.wait_for_url(f"**/numbers/{N2.phone_number_id}")
    tab.check()
    assert "back to CONNECTED around" in page.locator("[data-countdown]").inner_text()
    chart = page.locator("[data-chart=history] svg")
    assert chart.locator("rect.seg.quality").count() >= 3  # GREEN, RED, YELLOW
    history = seeded_server.api(f"/api/v1/phone-numbers/{N2.phone_number_id}/history")["items"]
    recent = [h for h in history if h["occurred_at"] >= api_range()["from"]]
    assert page.locator("[data-history] tbody tr").count() == len(recent)
    page.select_option("select[name=range]", "all")
    page.wait_for_url("**range=all")
    tab.check()
    assert page.locator("[data-history] tbody tr").count() == len(history)
    tab.shot("number-all-history")


def test_a_number_shows_its_delivery_as_the_api_does(tab: Tab, seeded_server: LiveServer) -> None:
    page = tab.go(f"/numbers/{N1.phone_number_id}")
    figures = seeded_server.api(
        "/api/v1/delivery", phone_number_id=N1.phone_number_id, **api_range()
    )
    assert figures["sent"] > 0
    for key in ("sent", "delivered", "read", "failed", "refused"):
        shown = page.locator(f"[data-figures] [data-k={key}]").inner_text()
        assert int(shown.replace(",", "")) == figures[key], key
    assert page.locator("[data-chart=delivery] svg rect.bar").count() > 0
    tab.shot("number-delivery")


def test_templates_match_the_api_filter_and_drill_down(tab: Tab, seeded_server: LiveServer) -> None:
    page = tab.go("/templates")
    templates = seeded_server.api("/api/v1/templates")["items"]
    assert page.locator("table[data-table=templates] tbody tr").count() == len(templates)
    for template in templates:
        row = f"tr[data-template='{template['id']}']"
        assert value_of(page, row, "status") == template["status"]
        assert value_of(page, row, "quality_score") == (template["quality_score"] or "")
        pauses = cell(page, row, "pause_count").get_attribute("data-value")
        assert int(str(pauses)) == template["pause_count"]
    page.select_option("select[name=status]", "PAUSED")
    page.wait_for_url("**status=PAUSED")
    tab.check()
    rows = page.locator("table[data-table=templates] tbody tr")
    assert rows.count() == 1 and rows.first.get_attribute("data-template") == T_PAUSED
    assert "1st pause" in rows.first.locator(".ladder li.done").inner_text()
    tab.shot("templates-paused")
    # the template with delivery figures
    page = tab.go("/templates")
    page.click(f"tr[data-template='{T_ORDER}'] [data-k=name] a")
    page.wait_for_url(f"**/templates/{T_ORDER}")
    tab.check()
    figures = seeded_server.api("/api/v1/delivery", template="order_update", **api_range())
    for key in ("sent", "delivered", "read", "failed"):
        shown = page.locator(f"[data-figures] [data-k={key}]").inner_text()
        assert int(shown.replace(",", "")) == figures[key], key
    codes = page.locator("[data-errors] tbody tr")
    assert [codes.nth(i).locator("[data-k=code]").inner_text() for i in range(codes.count())] == [
        str(e["code"]) for e in figures["errors"]
    ]
    history = seeded_server.api(f"/api/v1/templates/{T_ORDER}/history", since=api_range()["from"])[
        "items"
    ]
    assert page.locator("[data-history] tbody tr").count() == len(history)
    tab.shot("template")


def test_alerts_are_silenced_and_the_silence_expired_from_the_page(
    tab: Tab, seeded_server: LiveServer
) -> None:
    page = tab.go("/alerts")
    firing = seeded_server.api("/api/v1/alerts", state="firing")
    rows = page.locator("table[data-table=firing] tbody tr")
    assert {rows.nth(i).get_attribute("data-fingerprint") for i in range(rows.count())} == {
        a["fingerprint"] for a in firing
    }
    notes = seeded_server.api("/api/v1/notifications")
    assert page.locator("table[data-table=notifications] tbody tr").count() == len(notes)
    target = next(a for a in firing if a["labels"].get("template_id") == T_PAUSED)
    page.click(f"tr[data-fingerprint='{target['fingerprint']}'] a")
    page.wait_for_url("**silence=*")
    matchers = page.input_value("#matchers")
    assert f"template_id={T_PAUSED}" in matchers
    page.fill("#comment", "new wording goes out tonight")
    page.click(".silence-form button")
    page.wait_for_url("**/alerts")
    tab.check()
    [silence] = seeded_server.api("/api/v1/silences")
    assert silence["matchers"] == target["labels"]
    assert silence["comment"] == "new wording goes out tonight"
    assert page.locator(f"tr[data-silence='{silence['id']}']").count() == 1
    tab.shot("alerts-silenced")
    page.click(f"tr[data-silence='{silence['id']}'] button")
    page.wait_for_url("**/alerts")
    tab.check()
    assert seeded_server.api("/api/v1/silences") == []
    assert page.locator("table[data-table=silences]").count() == 0


def test_response_times_match_the_api(tab: Tab, seeded_server: LiveServer) -> None:
    page = tab.go(f"/response-times?number={N1.phone_number_id}")
    found = seeded_server.api(
        "/api/v1/response-times", phone_number_id=N1.phone_number_id, **api_range()
    )
    for kind, name in (("first", "first_response"), ("all", "all_responses")):
        card = f"[data-summary={kind}]"
        summary = found[name]
        assert int(page.locator(f"{card} [data-k=count]").inner_text()) == summary["count"]
        for key in ("mean", "p50", "p90", "max"):
            shown = page.locator(f"{card} [data-k={key}]").inner_text()
            assert shown == formats.duration(summary[key]), (kind, key)
    conversations = page.locator("[data-summary=conversations]")
    assert (
        int(conversations.locator("[data-k=started]").inner_text())
        == (found["conversations"]["started"])
    )
    assert int(conversations.locator("[data-k=waiting]").inner_text()) == found["waiting"]
    assert page.locator("[data-chart=response-times] svg circle").count() > 0
    tab.shot("response-times")
    page.select_option("select[name=sender]", "agent")
    page.wait_for_url("**sender=agent*")
    tab.check()
    agents = seeded_server.api(
        "/api/v1/response-times", phone_number_id=N1.phone_number_id, sender="agent", **api_range()
    )
    shown = page.locator("[data-summary=first] [data-k=count]").inner_text()
    assert int(shown) == agents["first_response"]["count"]


def test_filters_live_in_the_url_and_the_pages_work_on_a_phone(
    browser: Any, seeded_server: LiveServer
) -> None:
    tab = open_tab(
        browser,
        seeded_server,
        "phone",
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
    )
    page = tab.page
    page.select_option("select[name=waba]", OTHER_WABA)
    page.wait_for_url(f"**/numbers?waba={OTHER_WABA}")
    tab.check()
    rows = page.locator("table[data-table=numbers] tbody tr")
    assert rows.count() == 1
    # the link is the view: opened afresh, it shows the same
    page.goto(page.url)
    assert page.locator("table[data-table=numbers] tbody tr").count() == 1
    tab.shot("numbers-one-waba")
    page.click("nav a:has-text('Templates')")
    page.wait_for_url(f"**/templates?waba={OTHER_WABA}")
    tab.check()
    rows = page.locator("table[data-table=templates] tbody tr")
    assert rows.count() == 1 and rows.first.get_attribute("data-template") == T_WELCOME
    # a tap on a rating shows what lies behind it
    tab.go(f"/numbers?number={N1.phone_number_id}")
    page.tap("td[data-k=quality_rating] .behind-toggle")
    assert page.locator(".behind").first.is_visible()
    tab.shot("numbers-tap")
    tab.go("/")
    tab.shot("overview")
    page.context.close()
