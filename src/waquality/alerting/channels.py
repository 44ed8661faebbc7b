"""Where notifications go: Apprise URLs (Slack, Teams, email, Telegram, json://, ...) and our own
structured JSON webhook (``webhook+https://...``), shaped like Alertmanager's."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import apprise
import httpx

from waquality import __version__

WEBHOOK_PREFIX = "webhook+"
_APPRISE_HEADER_SCHEMES = ("json", "jsons", "xml", "xmls", "form", "forms")


class DeliveryError(Exception):
    """A receiver did not take the notification (it is retried)."""


class Channel(Protocol):
    def send(self, payloads: Sequence[Mapping[str, Any]], idempotency_key: str) -> None:
        """Deliver one message about one alert or a group of them."""

    def close(self) -> None: ...


def receiver_name(url: str) -> str:
    """A stable name for a receiver URL that reveals nothing of it (URLs hold tokens)."""
    scheme = url.split("://", 1)[0][:20]
    return f"{scheme}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def _state(payload: Mapping[str, Any]) -> str:
    return "RESOLVED" if payload["status"] == "resolved" else str(payload["severity"]).upper()


def title(payloads: Sequence[Mapping[str, Any]]) -> str:
    if len(payloads) == 1:
        return f"[{_state(payloads[0])}] {payloads[0]['summary']}"
    firing = sum(p["status"] == "firing" for p in payloads)
    resolved = len(payloads) - firing
    counts = ", ".join(
        part
        for part in (
            f"{firing} firing" if firing else "",
            f"{resolved} resolved" if resolved else "",
        )
        if part
    )
    return f"[{_state(payloads[0])}] {len(payloads)} alerts ({counts})"


def body(payloads: Sequence[Mapping[str, Any]]) -> str:
    return "\n\n".join(_body(p) for p in payloads)


def _body(payload: Mapping[str, Any]) -> str:
    lines = [str(payload["summary"])]
    if payload.get("description"):
        lines.append(str(payload["description"]))
    since = payload.get("endsAt") if payload["status"] == "resolved" else payload.get("startsAt")
    lines.append(f"{'Resolved' if payload['status'] == 'resolved' else 'Since'}: {since}")
    labels = payload.get("labels") or {}
    lines.append(", ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    if payload.get("url"):
        lines.append(str(payload["url"]))
    return "\n".join(lines)


class WebhookChannel:
    """POSTs the alert as JSON (Alertmanager's webhook shape) with an ``Idempotency-Key``."""

    def __init__(self, url: str, name: str, timeout: float = 10.0) -> None:
        self.url, self.name = url.removeprefix(WEBHOOK_PREFIX), name
        self._http = httpx.Client(timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def send(self, payloads: Sequence[Mapping[str, Any]], idempotency_key: str) -> None:
        labels = [{**p["labels"], "severity": p["severity"]} for p in payloads]
        common = {k: v for k, v in labels[0].items() if all(x.get(k) == v for x in labels)}
        message = {
            "version": "4",
            "receiver": self.name,
            "status": "firing" if any(p["status"] == "firing" for p in payloads) else "resolved",
            "alerts": [
                {
                    "status": p["status"],
                    "labels": x,
                    "annotations": {"summary": p["summary"], "description": p["description"]},
                    "startsAt": p["startsAt"],
                    "endsAt": p["endsAt"],
                    "fingerprint": p["fingerprint"],
                    "generatorURL": p.get("url"),
                }
                for p, x in zip(payloads, labels, strict=True)
            ],
            "commonLabels": common,
        }
        headers = {
            "Idempotency-Key": idempotency_key,
            "User-Agent": f"waquality/{__version__}",
        }
        try:
            response = self._http.post(self.url, json=message, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}") from None
        if response.status_code >= 300:
            raise DeliveryError(f"HTTP {response.status_code}")


class AppriseChannel:
    """Any Apprise URL; JSON/XML/form URLs also carry the ``Idempotency-Key`` header."""

    def __init__(self, url: str) -> None:
        self.url = url

    def close(self) -> None:
        """Apprise opens a session per notification: nothing stays open."""

    def send(self, payloads: Sequence[Mapping[str, Any]], idempotency_key: str) -> None:
        url = self.url
        if urlsplit(url).scheme.lower() in _APPRISE_HEADER_SCHEMES:
            joiner = "&" if "?" in url else "?"
            url += joiner + urlencode({"+Idempotency-Key": idempotency_key})
        notifier = apprise.Apprise()
        if not notifier.add(url):
            raise DeliveryError("Apprise does not understand this URL")
        firing = [p for p in payloads if p["status"] == "firing"]
        kind = (
            apprise.NotifyType.SUCCESS
            if not firing
            else apprise.NotifyType.FAILURE
            if any(p["severity"] == "critical" for p in firing)
            else apprise.NotifyType.WARNING
        )
        if not notifier.notify(title=title(payloads), body=body(payloads), notify_type=kind):
            raise DeliveryError("the receiver did not accept it")


def channels(urls: Sequence[str]) -> dict[str, Channel]:
    found: dict[str, Channel] = {}
    for url in urls:
        name = receiver_name(url)
        found[name] = (
            WebhookChannel(url, name) if url.startswith(WEBHOOK_PREFIX) else AppriseChannel(url)
        )
    return found
