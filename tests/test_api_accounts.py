"""WABA and business-portfolio state through the API."""

from __future__ import annotations

from builders import WABA, entry, envelope
from conftest import API_TOKEN, LiveServer, webhook

T0 = 1_760_000_000
BUSINESS = "506914307656634"


def test_wabas_and_businesses(server: LiveServer) -> None:
    alert = entry(
        "account_alerts",
        {
            "entity_type": "BUSINESS",
            "entity_id": BUSINESS,
            "alert_info": {
                "alert_severity": "WARNING",
                "alert_status": "ACTIVE",
                "alert_type": "OBA_APPROVED",
            },
        },
        time=T0,
    )
    limit = entry(
        "business_capability_update",
        {"max_daily_conversations_per_business": "TIER_10K"},
        time=T0 + 10,
    )
    for body in (
        envelope(alert, limit),
        webhook("account_update/account_restriction.json"),
        webhook("account_update/disabled_update_schedule_for_disable.json"),
    ):
        assert server.post_webhook(body).status_code == 200
    server.wait_processed()

    wabas = {w["id"]: w for w in server.api("/api/v1/wabas")["items"]}
    waba = wabas[WABA]
    assert (waba["business_id"], waba["messaging_limit"]) == (BUSINESS, "TIER_10K")
    assert "RESTRICTED_BIZ_INITIATED_MESSAGING" in waba["restrictions"]
    assert waba["ban_state"] == "SCHEDULE_FOR_DISABLE"
    assert waba["last_webhook_at"].endswith("Z")
    assert server.api("/api/v1/wabas", business_id=BUSINESS)["items"] == [waba]
    assert server.api("/api/v1/wabas", business_id="nope")["items"] == []

    [business] = server.api("/api/v1/businesses")["items"]
    assert (business["id"], business["messaging_limit"]) == (BUSINESS, "TIER_10K")

    history = server.api(f"/api/v1/wabas/{WABA}/history", field="messaging_limit")["items"]
    assert [(h["old_value"], h["new_value"]) for h in history] == [(None, "TIER_10K")]


def test_unknown_waba_and_auth(server: LiveServer) -> None:
    missing = server.client.get(
        "/api/v1/wabas/123/history", headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    for path in ("/api/v1/wabas", "/api/v1/businesses", f"/api/v1/wabas/{WABA}/history"):
        assert server.client.get(path).status_code == 401
