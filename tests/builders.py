"""Small builders for webhook bodies shaped as the platform sends them."""

from __future__ import annotations

from typing import Any

import orjson

WABA = "102290129340398"
DISPLAY = "15550783881"
PHONE_ID = "106540352242922"


def envelope(*entries: dict[str, Any]) -> bytes:
    return orjson.dumps({"object": "whatsapp_business_account", "entry": list(entries)})


def entry(
    field: str, value: dict[str, Any], *, time: int | None = None, waba: str = WABA
) -> dict[str, Any]:
    item: dict[str, Any] = {"id": waba, "changes": [{"field": field, "value": value}]}
    if time is not None:
        item["time"] = time
    return item


def template_status(
    template_id: int,
    event: str,
    time: int,
    *,
    title: str | None = None,
    description: str | None = None,
    waba: str = WABA,
    **extra: Any,
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "event": event,
        "message_template_id": template_id,
        "message_template_name": f"template_{template_id}",
        "message_template_language": "en-US",
        "reason": "NONE",
        "message_template_category": "MARKETING",
        **extra,
    }
    if title:
        value["other_info"] = {"title": title, "description": description or ""}
    return entry("message_template_status_update", value, time=time, waba=waba)


def template_quality(template_id: int, previous: str, new: str, time: int) -> dict[str, Any]:
    return entry(
        "message_template_quality_update",
        {
            "previous_quality_score": previous,
            "new_quality_score": new,
            "message_template_id": template_id,
            "message_template_name": f"template_{template_id}",
            "message_template_language": "en_US",
        },
        time=time,
    )


def phone_quality(
    event: str, time: int, *, display: str = DISPLAY, **limits: Any
) -> dict[str, Any]:
    return entry(
        "phone_number_quality_update",
        {"display_phone_number": display, "event": event, **limits},
        time=time,
    )


def messages_status(
    *,
    display: str = DISPLAY,
    phone_id: str = PHONE_ID,
    wamid: str = "wamid.X",
    status: str = "delivered",
    time: int = 1750030073,
    recipient: str = "16505551234",
    callback: str | None = None,
    error: int | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(time),
        "recipient_id": recipient,
    }
    if callback is not None:
        item["biz_opaque_callback_data"] = callback
    if error is not None:
        item["errors"] = [{"code": error, "title": "failed", "message": "failed"}]
    return entry(
        "messages",
        {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": display, "phone_number_id": phone_id},
            "statuses": [item],
        },
    )


def inbound_message(
    wamid: str,
    customer: str,
    time: int,
    text: str = "hello",
    *,
    display: str = DISPLAY,
    phone_id: str = PHONE_ID,
) -> dict[str, Any]:
    return entry(
        "messages",
        {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": display, "phone_number_id": phone_id},
            "contacts": [{"profile": {"name": "Customer"}, "wa_id": customer}],
            "messages": [
                {
                    "from": customer,
                    "id": wamid,
                    "timestamp": str(time),
                    "type": "text",
                    "text": {"body": text},
                }
            ],
        },
    )
