"""The alerting a process applies, from the settings: every process that writes state (``serve``'s
child, ``waquality worker``, ``waquality reprocess``) raises the same alerts for the same
receivers, whichever of them processed the webhook."""

from __future__ import annotations

from collections.abc import Callable

from waquality.alerting.book import Alerting
from waquality.alerting.channels import receiver_name
from waquality.alerting.event_rules import configured_rules
from waquality.config import Settings


def receiver_urls(settings: Settings) -> tuple[list[str], list[list[str]]]:
    """The default receivers' URLs, and each route's."""
    defaults = [url.get_secret_value() for url in settings.alert_urls]
    routes = [[url.get_secret_value() for url in r.urls] for r in settings.alert_routes]
    return defaults, routes


def configured(settings: Settings, on_queued: Callable[[], None] | None = None) -> Alerting:
    """``on_queued`` wakes a dispatcher in this process; without one, the notifications wait in
    the outbox for the dispatcher of a ``serve`` process on the same database."""
    defaults, routes = receiver_urls(settings)
    return Alerting(
        tuple(receiver_name(url) for url in defaults),
        settings.public_url,
        on_queued,
        group_by=tuple(settings.alert_group_by),
        group_wait=settings.alert_group_wait,
        group_interval=settings.alert_group_interval,
        event_rules=configured_rules(settings),
        routes=tuple(
            (dict(r.match), tuple(receiver_name(url) for url in urls), r.continue_)
            for r, urls in zip(settings.alert_routes, routes, strict=True)
        ),
    )
