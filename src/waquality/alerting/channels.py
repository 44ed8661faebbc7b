"""Where notifications go: Apprise URLs (Slack, Teams, email, Telegram, json://, ...) and our own
structured JSON webhook (``webhook+https://...``), shaped like Alertmanager's.

Receiver URLs hold tokens, and the libraries that deliver notifications log the URLs they call
(httpx at INFO, urllib3 and some Apprise plugins at DEBUG): every channel registers its URL's
secret parts with a filter on those loggers, which replaces them in each record.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import apprise
import httpx

from waquality import __version__

WEBHOOK_PREFIX = "webhook+"
_APPRISE_HEADER_SCHEMES = ("json", "jsons", "xml", "xmls", "form", "forms")
# Schemes whose host is a host; other Apprise schemes may keep a token there (tgram://TOKEN/...).
_HOST_SCHEMES = frozenset({"http", "https", *_APPRISE_HEADER_SCHEMES})
# The loggers of the libraries that carry notifications (their records may name the URL).
_DELIVERY_LOGGERS = ("httpx", "urllib3.connectionpool", "urllib3.util.retry", "apprise")
_SHORTEST_SECRET = 4  # shorter URL parts ("v1", "api") are left in the records
REDACTED = "[redacted]"


def url_secrets(url: str) -> set[str]:
    """The parts of a receiver URL that may be credentials, as written and percent-decoded:
    user and password, path segments, query values, fragment, and the host of schemes that are
    not plain HTTP (Apprise keeps tokens there: ``tgram://BOT_TOKEN/CHAT``)."""
    raw = url.removeprefix(WEBHOOK_PREFIX)
    scheme, _, rest = raw.partition("://")
    try:
        parts = urlsplit(raw)
    except ValueError:  # not a URL urllib can read: every piece of it counts
        candidates = re.split(r"[/?&=#@:]+", rest)
    else:
        userinfo, _, host = parts.netloc.rpartition("@")
        candidates = [*userinfo.split(":"), parts.fragment, *parts.path.split("/")]
        candidates += [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
        if scheme.lower() not in _HOST_SCHEMES:
            candidates += [host, *host.split(":")]
    found: set[str] = set()
    for candidate in candidates:
        plain = unquote(candidate)
        found |= {candidate, plain, quote(plain, safe="")}
    return {secret for secret in found if len(secret) >= _SHORTEST_SECRET}


class _Redactor(logging.Filter):
    """Replaces registered secrets in the records of the delivery libraries' loggers."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()  # longest first: a secret may contain another
        self._lock = threading.Lock()
        self._installed = False

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            known = set(self._secrets) | set(secrets)
            self._secrets = tuple(sorted(known, key=len, reverse=True))
            if not self._installed:
                for name in _DELIVERY_LOGGERS:
                    logging.getLogger(name).addFilter(self)
                self._installed = True

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's to report
            return True
        clean = self._clean(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        return True


_redactor = _Redactor()


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
        _redactor.add(url_secrets(url))
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
        _redactor.add(url_secrets(url))

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
        # Summaries and descriptions carry text from Meta (template names, alert descriptions):
        # declared as plain text, Apprise escapes it for services that render HTML or Markdown
        # (and Slack's <!channel> stays literal) instead of passing it through as markup.
        sent = notifier.notify(
            title=title(payloads),
            body=body(payloads),
            notify_type=kind,
            body_format=apprise.NotifyFormat.TEXT,
        )
        if not sent:
            raise DeliveryError("the receiver did not accept it")


def channels(urls: Sequence[str]) -> dict[str, Channel]:
    found: dict[str, Channel] = {}
    for url in urls:
        name = receiver_name(url)
        found[name] = (
            WebhookChannel(url, name) if url.startswith(WEBHOOK_PREFIX) else AppriseChannel(url)
        )
    return found
