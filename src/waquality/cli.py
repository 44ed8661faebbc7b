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
    uvicorn.Server(config).run()


@main.command()
def worker() -> None:
    """Process stored webhooks without the HTTP server (several may run on PostgreSQL)."""
    from waquality.process.worker import BackgroundWorker, Processor
    from waquality.runtime import Runtime

    settings = _settings()
    _logging(settings)
    with _guard():
        runtime = Runtime(settings)
    _prepare(runtime)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    background = BackgroundWorker(
        Processor(runtime.db, batch_size=settings.batch_size), idle_poll=0.5
    )
    background.start()
    click.echo("worker running; Ctrl-C stops it")
    stop.wait()
    background.stop()


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
    """Replay quarantined bodies (or the given RAW_IDS) through processing."""
    from waquality.process.worker import Processor, utcnow
    from waquality.reprocess import requeue_quarantined

    with _runtime() as runtime:
        count = _run(lambda: requeue_quarantined(runtime.db, utcnow(), raw_ids))
        click.echo(f"requeued {count} bodies")
        if process and count:
            result = _run(lambda: Processor(runtime.db).drain())
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
    """Counts of received, pending, processed and quarantined webhooks."""
    from waquality.store import inbox

    with _runtime() as runtime:
        for name, value in _run(lambda: inbox.counts(runtime.db)).items():
            click.echo(f"{name:12} {value}")


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
