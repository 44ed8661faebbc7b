"""The conversation tracker's commands: reports, rebuild, callback tags, erasure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import click

from waquality.cli import _run, _runtime, _settings, main
from waquality.config import parse_duration

WHEN = "ISO 8601 or Unix seconds, or a duration back from now (7d, 12h) [default: --to minus 30d]."


def _moment(value: str | None, name: str, now: datetime) -> datetime | None:
    from waquality.api.params import parse_time

    if value is None:
        return None
    try:
        return now - parse_duration(value)
    except (ValueError, OverflowError):
        return parse_time(value, name)


def _window(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    until = _run(lambda: _moment(end, "--to", now)) or now
    since = _run(lambda: _moment(start, "--from", now)) or until - timedelta(days=30)
    if since >= until:
        raise click.ClickException("--from must be before --to")
    return since, until


def seconds(value: float | None) -> str:
    """A duration for people: 850ms, 42s, 3m 10s, 2h 05m, 3d 4h."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.0f}s" if value >= 10 else f"{value:.1f}s"
    whole = round(value)
    for size, unit, small, small_unit in (
        (86400, "d", 3600, "h"),
        (3600, "h", 60, "m"),
        (60, "m", 1, "s"),
    ):
        if whole >= size:
            return f"{whole // size}{unit} {whole % size // small:02d}{small_unit}"
    return f"{whole}s"  # pragma: no cover


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


@main.group()
def report() -> None:
    """Tables of the tracker's figures."""


@report.command("response-times")
@click.option("--from", "start", help=WHEN)
@click.option("--to", "end", help="Same forms as --from [default: now].")
@click.option("--number", "phone_number_id", help="Only this phone-number ID.")
@click.option("--sender", type=click.Choice(["bot", "agent", "campaign", "unknown"]))
@click.option(
    "--bucket", type=click.Choice(["hour", "day", "week"]), default="day", show_default=True
)
def report_response_times(
    start: str | None, end: str | None, phone_number_id: str | None, sender: str | None, bucket: str
) -> None:
    """First and all response times per bucket, and unanswered conversations."""
    from waquality.analyse import response_times
    from waquality.domain.enums import SenderKind
    from waquality.domain.responses import Bucket
    from waquality.store.tracker import tracker_config

    settings = _settings()
    config = tracker_config(settings)
    since, until = _window(start, end)
    query = response_times.Query(
        since,
        until,
        phone_number_id,
        SenderKind(sender) if sender else None,
        Bucket(bucket),
        config.zone,
        dict(config.targets),
    )
    with _runtime(settings) as runtime:

        def read() -> dict[str, Any]:
            with runtime.db.read() as conn:
                return response_times.summary(conn, query)

        found = _run(read)
    labels = list(dict(config.targets))
    header = (
        f"{'start':16} {'first':>6} {'mean':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"
        + "".join(f" {'≤' + label:>6}" for label in labels)
        + f" {'all':>6} {'all p90':>8} {'unansw.':>7}"
    )
    click.echo(header)
    rows = [
        (p["start"].astimezone(_zone(config.zone)).strftime("%Y-%m-%d %H:%M"), p)
        for p in found["series"]
    ]
    for label, point in [*rows, ("total", found)]:
        first, every = point["first_response"], point["all_responses"]
        click.echo(
            f"{label:16} {first['count']:>6} {seconds(first['mean']):>8} {seconds(first['p50']):>8}"
            f" {seconds(first['p90']):>8} {seconds(first['p99']):>8} {seconds(first['max']):>8}"
            + "".join(
                f" {_rate(first['within'].get(t) if first['count'] else None):>6}" for t in labels
            )
            + f" {every['count']:>6} {seconds(every['p90']):>8} {point['unanswered']:>7}"
        )
    click.echo(
        f"{found['conversations']['started']} conversations, {found['waiting']} waiting for a "
        f"reply now; percentiles within {found['relative_error']:.0%}; times in {config.zone}"
    )


def _zone(name: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


@report.command("delivery")
@click.option("--from", "start", help=WHEN)
@click.option("--to", "end", help="Same forms as --from [default: now].")
@click.option("--number", "phone_number_id", help="Only this phone-number ID.")
@click.option("--template", help="Only this template (by name).")
@click.option(
    "--bucket", type=click.Choice(["hour", "day", "week"]), default="day", show_default=True
)
def report_delivery(
    start: str | None,
    end: str | None,
    phone_number_id: str | None,
    template: str | None,
    bucket: str,
) -> None:
    """Sent, delivered, read and failed messages, error codes and opt-outs per bucket."""
    from waquality.analyse import delivery
    from waquality.domain.responses import Bucket
    from waquality.store.tracker import tracker_config

    settings = _settings()
    zone = tracker_config(settings).zone
    since, until = _window(start, end)
    query = delivery.Query(since, until, phone_number_id, template, Bucket(bucket), zone)
    with _runtime(settings) as runtime:

        def read() -> dict[str, Any]:
            with runtime.db.read() as conn:
                return delivery.summary(conn, query)

        found = _run(read)
    click.echo(
        f"{'start':16} {'outbound':>8} {'sent':>8} {'deliv.':>8} {'read':>8} {'failed':>7}"
        f" {'refused':>7} {'read %':>7} {'opt-outs':>8}  errors"
    )
    rows = [
        (p["start"].astimezone(_zone(zone)).strftime("%Y-%m-%d %H:%M"), p) for p in found["series"]
    ]
    for label, point in [*rows, ("total", found)]:
        errors = ", ".join(f"{e['code']}×{e['count']}" for e in point["errors"][:4])
        click.echo(
            f"{label:16} {point['outbound']:>8} {point['sent']:>8} {point['delivered']:>8}"
            f" {point['read']:>8} {point['failed']:>7} {point['refused']:>7}"
            f" {_rate(point['read_rate']):>7} {point['opt_outs']:>8}  {errors}"
        )


@main.group()
def tracker() -> None:
    """Conversation tracker maintenance."""


@tracker.command("rebuild")
def tracker_rebuild() -> None:
    """Recompute conversations, responses and figures from the stored messages.

    Needed after changing the gap, counted senders, business hours or time zone. Figures of
    hours whose messages retention has deleted are kept. On SQLite the database is locked for
    writing meanwhile (webhooks are answered 503 and redelivered): stop the server or pick a
    quiet hour.
    """
    from waquality.store.rebuild import count_messages, rebuild
    from waquality.store.tracker import tracker_config

    settings = _settings()
    with _runtime(settings) as runtime:
        total = _run(lambda: count_messages(runtime.db))
        with click.progressbar(
            length=total, label="messages", file=click.get_text_stream("stderr")
        ) as bar:
            result = _run(
                lambda: rebuild(runtime.db, tracker_config(settings), datetime.now(UTC), bar.update)
            )
    since = f" from {result.since:%Y-%m-%d %H:%M}Z" if result.since else ""
    click.echo(
        f"rebuilt{since}: {result.messages} messages, {result.conversations} conversations, "
        f"{result.responses} responses"
    )


@main.command()
@click.option("--sender", type=click.Choice(["bot", "agent", "campaign"]))
@click.option("--journey")
@click.option("--step")
@click.option("--experiment", "experiments", multiple=True, help="NAME=ARM, repeatable.")
@click.option("--template", help="The template's name.")
def tag(
    sender: str | None,
    journey: str | None,
    step: str | None,
    experiments: tuple[str, ...],
    template: str | None,
) -> None:
    """Print the biz_opaque_callback_data value that carries these tags (see README)."""
    from waquality.domain.enums import SenderKind
    from waquality.domain.tags import TagError, Tags, encode

    pairs = []
    for item in experiments:
        name, _, arm = item.partition("=")
        if not name or not arm or ":" in name:
            raise click.BadParameter(f"{item!r}: expected NAME=ARM (no ':' in NAME)")
        pairs.append((name, arm))
    tags = Tags(
        SenderKind(sender) if sender else SenderKind.UNKNOWN, journey, step, tuple(pairs), template
    )
    try:
        click.echo(encode(tags))
    except TagError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def customers() -> None:
    """One customer's data."""


@customers.command("erase")
@click.argument("customer_id")
def customers_erase(customer_id: str) -> None:
    """Erase one customer's data on request: messages, conversations, responses, their items in
    stored payloads and their id in opt-out events (the hourly figures stay).

    CUSTOMER_ID is a wa_id (digits, or a phone number as written), a business-scoped user id,
    or a stored hash (h:...).
    """
    from waquality.store.privacy import erase_customer
    from waquality.store.tracker import tracker_config

    settings = _settings()
    with _runtime(settings) as runtime:
        erased = _run(
            lambda: erase_customer(
                runtime.db, customer_id, tracker_config(settings), datetime.now(UTC)
            )
        )
    if not erased.found:
        raise click.ClickException("no data of this customer")
    click.echo(
        f"erased: {erased.messages} messages, {erased.conversations} conversations, "
        f"{erased.responses} responses, {erased.payloads} payloads, {erased.events} events"
    )
