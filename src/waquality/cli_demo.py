"""The simulator's commands: demo, simulate, replay."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from waquality.api.params import parse_time
from waquality.cli import _run, _settings, main


@contextmanager
def _interruptible() -> Iterator[threading.Event]:
    """Ctrl-C (or SIGTERM) sets the event instead of raising, so every step ends cleanly."""
    stop = threading.Event()
    handlers = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield stop
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


_SEED = click.option(
    "--seed", type=int, default=1, show_default=True, help="The same seed, the same business."
)
_CUSTOMERS = click.option(
    "--customers",
    type=click.IntRange(10, 100_000),
    default=3000,
    show_default=True,
    help="How many customers the business has (the traffic grows with them).",
)


def _warn(tally: Any) -> None:
    for problem in tally.problems:
        click.echo(f"  warning: {problem}", err=True)


def _describe(world: Any) -> str:
    return (
        f"{world.business_name}: {len(world.wabas)} WABAs, {len(world.phones)} phone numbers, "
        f"{len(world.templates)} templates, {len(world.customers):,} customers"
    )


@main.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Where the dashboard and the API listen, on 127.0.0.1 (0: any free port).",
)
@click.option(
    "--days", type=click.IntRange(1, 60), default=7, show_default=True, help="History to backfill."
)
@_SEED
@click.option(
    "--speed",
    type=click.FloatRange(0.1, 86400),
    default=1.0,
    show_default=True,
    help="Simulated seconds per second after the backfill (above 1, times run ahead of the clock).",
)
@_CUSTOMERS
def demo(port: int, days: int, seed: int, speed: float, customers: int) -> None:
    """Run the whole system on a simulated business, in one command.

    A temporary SQLite database, the server, a fake Graph API and a simulated business (three
    WABAs, their numbers and templates, customers moving through order support, bookings and
    campaigns, an A/B test, a template that gets paused). The last --days days are backfilled
    quietly with their historical times, then the traffic goes on live. Prints the dashboard's
    address and the login token (WAQUALITY_API_TOKEN when set, else a generated one);
    Ctrl-C stops everything and removes the temporary files.
    """
    from waquality.simulate.demo import Demo, DemoError, Options, Stopped, summary

    settings = _settings()
    token = settings.api_token.get_secret_value() if settings.api_token else None
    options = Options(
        port=port, days=days, seed=seed, customers=customers, speed=speed, api_token=token
    )
    with _interruptible() as stop:
        try:
            with Demo(options) as running:
                click.echo(f"waquality demo, seed {seed}: {_describe(running.world)}")
                click.echo(f"  dashboard  {running.url}/")
                click.echo(f"  token      {running.token}  (the login, and the API's bearer token)")
                began = time.monotonic()
                with click.progressbar(
                    length=len(running.sending),
                    label=f"backfilling {days} days",
                    file=click.get_text_stream("stderr"),
                ) as bar:
                    tally = running.backfill(bar.update, stop)
                took = time.monotonic() - began
                click.echo(f"backfilled and processed in {took:.1f}s: {summary(tally)}")
                _warn(tally)
                running.watch(stop=stop)
                click.echo(f"polling the fake Graph API ({len(running.world.wabas)} WABAs)")
                click.echo(
                    f"the story, {running.story.start:%a %d %b %H:%M} to "
                    f"{running.story.end:%a %d %b %H:%M} UTC, then live:"
                )
                for moment, what in running.story.timeline():
                    click.echo(f"  {moment:%a %d %b %H:%M}  {what}")
                pace = "in real time" if speed == 1 else f"{speed:g} simulated seconds a second"
                click.echo(f"live, {pace}; Ctrl-C stops")
                running.live(stop, on_tally=_warn)
        except Stopped:
            pass
        except DemoError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo("stopped; temporary files removed")


@main.command()
@click.option(
    "--days", type=click.IntRange(1, 60), default=7, show_default=True, help="How much to simulate."
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True, path_type=Path),
    required=True,
    help="The JSON-lines file to write ('-': standard output).",
)
@_SEED
@_CUSTOMERS
@click.option(
    "--end", help="When the traffic ends, ISO 8601 [default: now]; fixed, the file is too."
)
def simulate(days: int, out: Path, seed: int, customers: int, end: str | None) -> None:
    """Write the simulated business's traffic of --days days to a file, one delivery a line.

    Webhook POSTs (their exact bytes, unsigned), outbound messages the business logs and Graph
    API changes, in time order with their times. The same seed, days, customers and end give
    the same bytes. `waquality replay` sends the file to a running instance.
    """
    from waquality.simulate import records, traffic

    until = _run(lambda: parse_time(end, "--end")) or datetime.now(UTC).replace(microsecond=0)
    since = until - timedelta(days=days)
    made, _, flow, deliveries = traffic.generate(seed, customers, since, until)
    stream = sys.stdout.buffer if str(out) == "-" else out.open("wb")
    try:
        for delivery in deliveries:
            stream.write(records.dumps(delivery) + b"\n")
    finally:
        if stream is not sys.stdout.buffer:
            stream.close()
    counts = flow.counts
    click.echo(
        f"{len(deliveries):,} deliveries from {since:%Y-%m-%d %H:%M} to "
        f"{until:%Y-%m-%d %H:%M} UTC ({_describe(made)}): {counts.posts:,} webhook POSTs "
        f"({counts.changes:,} changes), {counts.logged:,} outbound messages logged, "
        f"{counts.graph} Graph API changes",
        err=True,
    )


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--url", required=True, help="The instance's base URL, such as http://127.0.0.1:8000."
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1),
    help="Requests per second at most [default: no limit].",
)
@click.option(
    "--connections",
    type=click.IntRange(1, 64),
    default=16,
    show_default=True,
    help="POSTs in flight at once.",
)
@click.option(
    "--notify",
    is_flag=True,
    help="Let the replayed webhooks notify alert receivers (by default they are sent with "
    "?quiet=1: state, history and alerts change, nobody is told).",
)
@click.option(
    "--no-settle",
    is_flag=True,
    help="Do not wait for the instance to process what it received before each management "
    "change (faster; alerts that fire and resolve within one processing batch leave no trace).",
)
def replay(
    file: Path, url: str, rate: float | None, connections: int, notify: bool, no_settle: bool
) -> None:
    """Send a `waquality simulate` file to a running instance.

    Webhooks are signed with the app secret (WAQUALITY_APP_SECRET, or the file named by
    WAQUALITY_APP_SECRET_FILE; the first of several); outbound messages are logged, and quiet
    webhooks authorised, with the API token (WAQUALITY_API_TOKEN or _FILE). Graph API changes
    are skipped: the instance reads its own Graph API. Before each management change (a
    template paused, a quality changed...) it waits until the instance has processed what it
    received, so the history's alerts fire and resolve in order. Exits non-zero when anything
    was refused or failed.
    """
    from waquality.simulate import deliver, records

    settings = _settings()
    if not settings.app_secret:
        raise click.ClickException(
            "no app secret: set WAQUALITY_APP_SECRET or WAQUALITY_APP_SECRET_FILE"
        )
    if settings.api_token is None:
        raise click.ClickException(
            "no API token: set WAQUALITY_API_TOKEN or WAQUALITY_API_TOKEN_FILE (the instance's)"
        )
    endpoint = deliver.Endpoint(
        url.rstrip("/"), settings.app_secrets[0], settings.api_token.get_secret_value()
    )
    with file.open("rb") as lines:
        total = sum(1 for line in lines if line.strip())

    def deliveries() -> Iterator[records.Delivery]:
        with file.open("rb") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    yield records.loads(line)
                except records.RecordError as exc:
                    raise click.ClickException(f"{file}:{number}: {exc}") from None

    warned = threading.Event()

    def settle(stop: threading.Event) -> None:
        if warned.is_set():
            return  # it could not tell once: do not wait at every change
        if not deliver.processed(endpoint, stop) and not stop.is_set():
            warned.set()
            click.echo(
                "\nwarning: cannot tell whether the instance processes what it receives "
                "(see its /api/v1/status); sending on without waiting",
                err=True,
            )

    try:
        sender = deliver.Sender(endpoint, connections=connections)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    with (
        _interruptible() as stop,
        sender,
        click.progressbar(
            length=total, label="replaying", file=click.get_text_stream("stderr")
        ) as bar,
    ):
        tally = deliver.send(
            deliveries(),
            sender,
            quiet=not notify,
            rate=rate,
            progress=bar.update,
            stop=stop,
            settle=None if no_settle else lambda: settle(stop),
        )
    web, logged = tally.webhooks, tally.messages
    requests = sum(web.values())
    click.echo(
        f"webhook POSTs: {web[deliver.Outcome.ACKNOWLEDGED]:,} acknowledged "
        f"({tally.changes:,} changes), {web[deliver.Outcome.REFUSED]:,} refused, "
        f"{web[deliver.Outcome.FAILED]:,} failed"
    )
    click.echo(
        f"outbound messages logged: {logged[deliver.Outcome.ACKNOWLEDGED]:,} acknowledged, "
        f"{logged[deliver.Outcome.REFUSED]:,} refused, {logged[deliver.Outcome.FAILED]:,} failed"
    )
    if tally.skipped:
        click.echo(f"Graph API changes skipped: {tally.skipped}")
    speed = requests / tally.seconds if tally.seconds else 0.0
    click.echo(f"{tally.seconds:.1f}s, {speed:,.0f} webhook POSTs a second")
    for problem in tally.problems:
        click.echo(f"  {problem}", err=True)
    if stop.is_set():
        raise click.ClickException("interrupted")
    bad = web[deliver.Outcome.REFUSED] + web[deliver.Outcome.FAILED]
    bad += logged[deliver.Outcome.REFUSED] + logged[deliver.Outcome.FAILED]
    if bad:
        raise click.ClickException(f"{bad} deliveries were refused or failed")
