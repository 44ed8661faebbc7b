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
    def send(self, payload: Mapping[str, Any], idempotency_key: str) -> None: ...
    def close(self) -> None: ...


def receiver_name(url: str) -> str:
    """A stable name for a receiver URL that reveals nothing of it (URLs hold tokens)."""
    scheme = url.split("://", 1)[0][:20]
    return f"{scheme}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def title(payload: Mapping[str, Any]) -> str:
    state = "RESOLVED" if payload["status"] == "resolved" else str(payload["severity"]).upper()
    return f"[{state}] {payload['summary']}"


def body(payload: Mapping[str, Any]) -> str:
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

    def send(self, payload: Mapping[str, Any], idempotency_key: str) -> None:
        message = {
            "version": "4",
            "receiver": self.name,
            "status": payload["status"],
            "alerts": [
                {
                    "status": payload["status"],
                    "labels": {**payload["labels"], "severity": payload["severity"]},
                    "annotations": {
                        "summary": payload["summary"],
                        "description": payload["description"],
                    },
                    "startsAt": payload["startsAt"],
                    "endsAt": payload["endsAt"],
                    "fingerprint": payload["fingerprint"],
                    "generatorURL": payload.get("url"),
                }
            ],
            "commonLabels": payload["labels"],
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

    def send(self, payload: Mapping[str, Any], idempotency_key: str) -> None:
        url = self.url
        if urlsplit(url).scheme.lower() in _APPRISE_HEADER_SCHEMES:
            joiner = "&" if "?" in url else "?"
            url += joiner + urlencode({"+Idempotency-Key": idempotency_key})
        notifier = apprise.Apprise()
        if not notifier.add(url):
            raise DeliveryError("Apprise does not understand this URL")
        severity = payload["severity"]
        kind = (
            apprise.NotifyType.SUCCESS
            if payload["status"] == "resolved"
            else apprise.NotifyType.FAILURE
            if severity == "critical"
            else apprise.NotifyType.WARNING
        )
        if not notifier.notify(title=title(payload), body=body(payload), notify_type=kind):
            raise DeliveryError("the receiver did not accept it")


def channels(urls: Sequence[str]) -> dict[str, Channel]:
    found: dict[str, Channel] = {}
    for url in urls:
        name = receiver_name(url)
        found[name] = (
            WebhookChannel(url, name) if url.startswith(WEBHOOK_PREFIX) else AppriseChannel(url)
        )
    return found
