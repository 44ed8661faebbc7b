"""The ``waquality`` command: thin wrappers that parse arguments and call the library."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from waquality import __version__
from waquality.config import Settings, load_settings
from waquality.errors import ConfigError, StoreUnavailable, WaqualityError


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="waquality")
def main() -> None:
    """Watch the quality of a WhatsApp Business Platform presence."""


@main.command()
@click.option("--host", help="Address to listen on [default: 127.0.0.1 or WAQUALITY_HOST].")
@click.option("--port", type=int, help="Port to listen on [default: 8000 or WAQUALITY_PORT].")
def serve(host: str | None, port: int | None) -> None:
    """Receive webhooks, serve the API and process events (in a child process it supervises)."""
    import uvicorn

    from waquality.heap import freeze_startup_objects
    from waquality.runtime import Runtime

    settings = _settings()
    _logging(settings)
    with _guard():
        runtime = Runtime(settings)
    token = _prepare(runtime)
    if not settings.app_secret:
        click.echo(
            "warning: WAQUALITY_APP_SECRET is not set: webhook deliveries are refused "
            "(503, Meta retries) until it is.",
            err=True,
        )
    if token:
        click.echo(f"Generated an API token (shown once; store it): {token}")
    config = uvicorn.Config(
        runtime.application(),
        host=host or settings.host,
        port=port or settings.port,
        access_log=False,
        log_level=settings.log_level.lower(),
        lifespan="on",
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    freeze_startup_objects()
    uvicorn.Server(config).run()


@main.command()
def worker() -> None:
    """Process stored webhooks without the HTTP server (several may run on PostgreSQL)."""
    from waquality.alerting import setup
    from waquality.heap import freeze_startup_objects
    from waquality.process.worker import BackgroundWorker, Processor
    from waquality.runtime import Runtime
    from waquality.store import tracker

    settings = _settings()
    _logging(settings)
    with _guard():
        runtime = Runtime(settings)
    _prepare(runtime)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    background = BackgroundWorker(
        Processor(
            runtime.db,
            batch_size=settings.batch_size,
            reread_delay=settings.reread_delay,
            alerting=setup.configured(settings),  # told by a serve process's dispatcher
            tracker=tracker.configured(runtime.db, settings),
        ),
        idle_poll=0.5,
    )
    freeze_startup_objects()
    background.start()
    click.echo("worker running; Ctrl-C stops it")
    stop.wait()
    background.stop()


@main.command()
@click.option("--once", is_flag=True, help="Poll every watched WABA once, report and exit.")
@click.option("--waba", "waba_ids", multiple=True, help="Only this WABA (repeatable; with --once).")
def poll(once: bool, waba_ids: tuple[str, ...]) -> None:
    """Read phone numbers, templates and webhook subscriptions from the Graph API.

    `serve` polls on its own; this runs one round (--once) or polls in the foreground where
    `serve` runs without processing (WAQUALITY_WORKERS=0).
    """
    from waquality.graph.poller import Poller
    from waquality.periodic import Periodic
    from waquality.store import watch

    with _runtime() as runtime:
        poller = Poller(runtime.db, runtime.settings)
        if not once:
            loop = Periodic(
                poller.step, interval=1.0, name="waquality-poller", on_stop=poller.close
            )
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            loop.start()
            click.echo("polling; Ctrl-C stops it")
            stop.wait()
            loop.stop()
            return
        try:
            for problem in _run(poller.start):
                click.echo(f"warning: {problem}", err=True)
            targets = _run(lambda: watch.watched(runtime.db, waba_ids or None))
            missing = sorted(set(waba_ids) - {w.waba_id for w in targets})
            if missing:
                raise click.ClickException(f"not watched: {', '.join(missing)}")
            if not targets:
                raise click.ClickException(
                    "no WABA to poll: set WAQUALITY_WABA_IDS or WAQUALITY_BUSINESS_IDS, "
                    "or add one with `waquality wabas add`"
                )
            reports = []
            with click.progressbar(
                targets,
                label="polling",
                item_show_func=lambda w: w.waba_id if w else "",
                file=sys.stderr,
            ) as bar:
                for target in bar:
                    with _guard():
                        reports.append(poller.poll(target))
        finally:
            poller.close()
    for r in reports:
        outcome = "ok" if r.error is None else f"{r.state.value}: {r.error}"
        click.echo(
            f"WABA {r.waba_id}: {r.phones} phone numbers, {r.templates} templates, "
            f"{r.history} changes, {r.calls} calls, usage {r.usage_percent}% — {outcome}"
        )
    failed = [r for r in reports if r.error is not None]
    if failed:
        first = failed[0]
        raise click.ClickException(
            f"{len(failed)} of {len(reports)} WABAs could not be read "
            f"(WABA {first.waba_id}: {first.error})"
        )


@main.group()
def wabas() -> None:
    """The WABAs that are polled."""


@wabas.command("list")
def wabas_list() -> None:
    """Watched WABAs with how their polling goes."""
    from waquality.process.worker import utcnow
    from waquality.store import watch

    with _runtime() as runtime:
        _run(lambda: watch.ensure_configured(runtime.db, runtime.settings.waba_ids, utcnow()))
        rows = _run(lambda: watch.rows(runtime.db))
    if not rows:
        click.echo("no WABA is watched")
    for row in rows:
        since = row["last_success_at"]
        confirmed = f"{since:%Y-%m-%d %H:%M:%S}Z" if since else "never"
        error = f" ({row['last_error']})" if row["last_error"] else ""
        click.echo(
            f"{row['waba_id']:20} {row['origin']:9} {row['poll_state']:13} "
            f"last read {confirmed}{error}"
        )


@wabas.command("add")
@click.argument("waba_id")
@click.option(
    "--token-file",
    type=click.File("r"),
    help="A file holding this WABA's access token (default: WAQUALITY_ACCESS_TOKEN).",
)
def wabas_add(waba_id: str, token_file: Any) -> None:
    """Watch a WABA from now on (a running server picks it up at once)."""
    from waquality.process.worker import utcnow
    from waquality.store import watch

    if not waba_id.isdigit():
        raise click.ClickException("a WABA id is a number")
    token = token_file.read().strip() if token_file else None
    with _runtime() as runtime:
        created = _run(lambda: watch.add(runtime.db, waba_id, token or None, utcnow()))
    click.echo(f"WABA {waba_id} {'added' if created else 'already watched'}")


@wabas.command("remove")
@click.argument("waba_id")
def wabas_remove(waba_id: str) -> None:
    """Stop watching a WABA added with `wabas add` or the API."""
    from waquality.domain.enums import WatchOrigin
    from waquality.process.worker import utcnow
    from waquality.store import watch

    with _runtime() as runtime:
        _run(lambda: watch.ensure_configured(runtime.db, runtime.settings.waba_ids, utcnow()))
        origin = _run(lambda: watch.remove(runtime.db, waba_id))
    if origin is None:
        raise click.ClickException(f"WABA {waba_id} is not watched")
    if origin is not WatchOrigin.API:
        raise click.ClickException(
            f"WABA {waba_id} comes from the settings ({origin.value}); remove it there"
        )
    click.echo(f"WABA {waba_id} removed")


@main.command()
@click.option("--state", type=click.Choice(["firing", "resolved"]), help="Only these.")
@click.option("--limit", default=50, show_default=True)
def alerts(state: str | None, limit: int) -> None:
    """Alerts, latest change first."""
    from waquality.alerting import book

    with _runtime() as runtime:
        found = _run(lambda: book.alerts(runtime.db, state, limit))
    if not found:
        click.echo("no alerts")
    for alert in found:
        when = alert["resolved_at"] or alert["started_at"]
        click.echo(
            f"{alert['state']:8} {alert['severity']:8} {when:%Y-%m-%d %H:%M:%S}Z {alert['summary']}"
        )


@main.group()
def silence() -> None:
    """Silence alerts for a while."""


@silence.command("add")
@click.option("--match", "matchers", multiple=True, required=True, help="LABEL=VALUE, repeatable.")
@click.option("--for", "duration", required=True, help="How long: 30m, 2h, 7d.")
@click.option("--comment", default="", help="Why.")
def silence_add(matchers: tuple[str, ...], duration: str, comment: str) -> None:
    """Silence the alerts whose labels match all of --match."""
    from waquality.alerting import book
    from waquality.config import parse_duration
    from waquality.process.worker import utcnow

    pairs = [m.split("=", 1) for m in matchers]
    if any(len(p) != 2 or not p[0] for p in pairs):
        raise click.ClickException("--match takes LABEL=VALUE")
    try:
        length = parse_duration(duration)
    except ValueError as exc:
        raise click.ClickException(f"--for: {exc}") from None
    now = utcnow()
    with _runtime() as runtime:
        row = _run(lambda: book.add_silence(runtime.db, dict(pairs), comment, now + length, now))
    click.echo(f"silence {row['id']} until {row['expires_at']:%Y-%m-%d %H:%M:%S}Z")


@silence.command("list")
@click.option("--all", "include_expired", is_flag=True, help="Include expired silences.")
def silence_list(include_expired: bool) -> None:
    """Active silences."""
    from waquality.alerting import book
    from waquality.process.worker import utcnow

    with _runtime() as runtime:
        found = _run(lambda: book.silences(runtime.db, utcnow(), include_expired=include_expired))
    if not found:
        click.echo("no silences")
    for row in found:
        match = ",".join(f"{k}={v}" for k, v in sorted(row["matchers"].items()))
        click.echo(
            f"{row['id']:5} until {row['expires_at']:%Y-%m-%d %H:%M:%S}Z {match} {row['comment']}"
        )


@silence.command("expire")
@click.argument("silence_id", type=int)
def silence_expire(silence_id: int) -> None:
    """End a silence now."""
    from waquality.alerting import book
    from waquality.process.worker import utcnow

    with _runtime() as runtime:
        if not _run(lambda: book.expire_silence(runtime.db, silence_id, utcnow())):
            raise click.ClickException(f"no active silence {silence_id}")
    click.echo(f"silence {silence_id} expired")


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations."""
    from waquality.store import migrate
    from waquality.store.database import Database

    settings = _settings()
    database = Database(settings.database_url.get_secret_value())
    try:
        _run(lambda: migrate.upgrade(database))
        click.echo(f"schema at revision {_run(lambda: migrate.current_revision(database))}")
    finally:
        database.dispose()


@main.command()
@click.argument("raw_ids", nargs=-1, type=int)
@click.option(
    "--process/--no-process",
    default=True,
    show_default=True,
    help="Process the requeued bodies now (otherwise a running worker will).",
)
def reprocess(raw_ids: tuple[int, ...], process: bool) -> None:
    """Replay quarantined bodies (or the given RAW_IDS) through processing.

    Processed here, a replay sends no notification (its alerts are recorded); left to a running
    server (--no-process), it notifies as any new webhook would.
    """
    from dataclasses import replace

    from waquality.alerting import setup
    from waquality.process.worker import Processor, utcnow
    from waquality.reprocess import requeue_quarantined
    from waquality.store import tracker

    with _runtime() as runtime:
        count = _run(lambda: requeue_quarantined(runtime.db, utcnow(), raw_ids))
        click.echo(f"requeued {count} bodies")
        if process and count:
            found = tracker.configured(runtime.db, runtime.settings)
            # the configured rules, and no receiver: its alerts are recorded, nobody is told
            alerting = replace(setup.configured(runtime.settings), receivers=(), routes=())
            processor = Processor(runtime.db, alerting=alerting, tracker=found)
            result = _run(processor.drain)
            click.echo(
                f"processed {result.bodies} bodies: {result.events} new events, "
                f"{result.duplicates} duplicates, {result.quarantined} quarantined again"
            )


@main.command()
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved items.")
@click.option("--limit", default=50, show_default=True)
@click.option("--show", "item_id", type=int, help="Print one item with its raw body.")
def quarantine(include_resolved: bool, limit: int, item_id: int | None) -> None:
    """List payloads (or parts) that could not be parsed."""
    from waquality.store import queries

    with _runtime() as runtime, _guard(), runtime.db.read() as conn:
        page = queries.quarantine(
            conn,
            include_resolved=include_resolved or item_id is not None,
            limit=limit if item_id is None else 10_000,
            cursor=None,
        )
        items = [i for i in page.items if item_id is None or i["id"] == item_id]
        if item_id is not None:
            if not items:
                raise click.ClickException(f"no quarantined item {item_id}")
            body = queries.raw_body(conn, items[0]["raw_id"]) or b""
            _print_item(items[0])
            click.echo(body.decode("utf-8", errors="replace"))
            return
    if not items:
        click.echo("nothing quarantined")
    for item in items:
        _print_item(item)


def _print_item(item: dict[str, Any]) -> None:
    state = "resolved" if item["resolved_at"] else "open"
    where = item["path"] or "(whole body)"
    click.echo(
        f"#{item['id']} raw {item['raw_id']} {state} {item['received_at']:%Y-%m-%d %H:%M:%S}"
        f" {where} {item['field'] or ''}: {item['error']}"
    )


@main.command()
def status() -> None:
    """Counts of webhooks (received, pending, processed, quarantined), polling and alerts."""
    from waquality.alerting import book
    from waquality.store import inbox, watch

    with _runtime() as runtime:
        for name, value in _run(lambda: inbox.counts(runtime.db)).items():
            click.echo(f"{name:12} {value}")
        polling = _run(lambda: watch.states(runtime.db))
        firing = _run(lambda: book.firing_counts(runtime.db))
    click.echo(
        f"{'polling':12} "
        + (", ".join(f"{n} {s}" for s, n in sorted(polling.items())) or "no WABA watched")
    )
    click.echo(
        f"{'firing':12} " + (", ".join(f"{n} {s}" for s, n in sorted(firing.items())) or "none")
    )


@main.group()
def token() -> None:
    """API token commands."""


@token.command("reset")
def token_reset() -> None:
    """Replace the generated API token (when WAQUALITY_API_TOKEN is not set) and print it."""
    from waquality.api.auth import reset_api_token

    settings = _settings()
    if settings.api_token is not None:
        raise click.ClickException("WAQUALITY_API_TOKEN is set; change it there instead")
    with _runtime(settings) as runtime:
        click.echo(_run(lambda: reset_api_token(runtime.db)))


def _prepare(runtime: Any) -> str | None:
    return _run(runtime.prepare)  # type: ignore[no-any-return]


@contextmanager
def _runtime(settings: Settings | None = None) -> Iterator[Any]:
    """A prepared :class:`Runtime` whose connections are closed on the way out."""
    from waquality.runtime import Runtime

    runtime = Runtime(settings or _settings())
    try:
        _prepare(runtime)
        yield runtime
    finally:
        runtime.db.dispose()


@contextmanager
def _guard() -> Iterator[None]:
    """Turn our errors into one clean line (and exit status 1)."""
    try:
        yield
    except StoreUnavailable as exc:
        raise click.ClickException(f"database unavailable: {exc}") from None
    except WaqualityError as exc:
        raise click.ClickException(str(exc)) from None


def _run(action: Any) -> Any:
    with _guard():
        return action()


# The tracker's and the simulator's commands live in modules of their own; importing them adds
# them to ``main``.
from waquality import cli_demo, cli_tracker  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
