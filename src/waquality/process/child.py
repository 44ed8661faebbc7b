"""Processing in a child process that ``serve`` starts and supervises.

Parsing and applying state are CPU work; in the receiver's own process they would compete with
acknowledgements for the interpreter lock. In a child process they run on another core. The
parent tells the child four things through shared primitives: *wake* (new bodies were
committed), *busy* (the receiver is short of CPU: defer, the backlog is durable), *arrivals*
(webhooks acknowledged per second: more than processing takes is a burst) and *stop*.
The Graph API poller and the alert dispatcher run here too, each on a thread of its own.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from typing import Any

from waquality.config import Settings
from waquality.store.database import WriteGate
from waquality.sync import SharedEvent

log = logging.getLogger(__name__)
RESTART_DELAY = 1.0
IDLE_CHECK = 60.0  # seconds between two looks for conversations whose gap has passed
SIGNAL_CHECK = 60.0  # seconds between two judgements of the signal rules


class ProcessingChild:
    def __init__(self, settings: Settings, gate: WriteGate | None = None) -> None:
        self.settings = settings
        self.gate = gate
        context = multiprocessing.get_context("spawn")
        self._context = context
        self.wake = SharedEvent(context)
        self._stop = SharedEvent(context)
        self._busy: Any = context.Value("b", 0, lock=False)
        self._arrivals: Any = context.Value("d", 0.0, lock=False)
        self._process: Any = None
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()

    def set_load(self, *, busy: bool, arrivals: float) -> None:
        self._busy.value = 1 if busy else 0
        self._arrivals.value = arrivals

    def start(self) -> None:
        self._spawn()
        self._supervisor = threading.Thread(
            target=self._supervise, name="waquality-processing-supervisor", daemon=True
        )
        self._supervisor.start()

    def _spawn(self) -> None:
        self._process = self._context.Process(
            target=_child_main,
            args=(self.settings, self.gate, self.wake, self._stop, self._busy, self._arrivals),
            name="waquality-processing",
            daemon=True,
        )
        self._process.start()

    def _supervise(self) -> None:
        """Restart the child if it dies: the work it had claimed is still pending."""
        while not self._stopping.is_set():
            self._process.join(0.5)
            if self._process.is_alive() or self._stopping.is_set():
                continue
            log.error("processing child exited (code %s); restarting", self._process.exitcode)
            if self.gate is not None:  # a hold on the write gate died with the child
                self.gate.reset()
            if self._stopping.wait(RESTART_DELAY):
                return
            self._spawn()

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        self._stop.set()
        self.wake.set()
        if self._process is not None:
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(5)
        if self._supervisor is not None:
            self._supervisor.join(5)


def spawn_context() -> Any:
    return multiprocessing.get_context("spawn")


def _child_main(
    settings: Settings,
    gate: WriteGate | None,
    wake: SharedEvent,
    stop: SharedEvent,
    busy: Any,
    arrivals: Any,
) -> None:
    from waquality.alerting import setup
    from waquality.alerting.channels import channels
    from waquality.alerting.dispatch import Dispatcher, HealthChecks
    from waquality.alerting.signal_check import SignalEvaluator
    from waquality.graph.poller import Poller
    from waquality.heap import freeze_startup_objects
    from waquality.periodic import Periodic
    from waquality.process.worker import (
        BURST_BACKLOG,
        BURST_BATCH,
        BURST_DEFER,
        BackgroundWorker,
        Processor,
        utcnow,
    )
    from waquality.store import tracker
    from waquality.store.database import Database

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    db = Database(
        settings.database_url.get_secret_value(),
        write_timeout=settings.write_timeout.total_seconds(),
        gate=gate,
        checkpoints=False,  # serve's housekeeping does it (see Runtime)
    )
    default_urls, route_urls = setup.receiver_urls(settings)
    receivers = channels(default_urls + [url for urls in route_urls for url in urls])
    dispatcher = Dispatcher(
        db,
        receivers,
        repeat_interval=settings.alert_repeat_interval,
        public_url=settings.public_url,
        health=HealthChecks(
            settings.webhook_silence_alert,
            settings.signature_alert_threshold,
            settings.signature_alert_window,
        ),
    )
    delivery = Periodic(
        dispatcher.run_once, interval=1.0, name="waquality-alerts", on_stop=dispatcher.close
    )
    alerting = setup.configured(settings, delivery.wake.set)
    dispatcher.alerting = alerting
    conversations = tracker.configured(db, settings)
    workers = [
        BackgroundWorker(
            Processor(
                db,
                batch_size=settings.batch_size,
                reread_delay=settings.reread_delay,
                alerting=alerting,
                tracker=conversations,
            ),
            name=f"waquality-worker-{i}",
            busy=lambda: bool(busy.value),
            arrivals=lambda: float(arrivals.value),
            # On SQLite a processing transaction stops every acknowledgement (one writer): a
            # burst makes batches short. On PostgreSQL acknowledgements never wait for one, and
            # short batches cost throughput: full batches, further apart.
            burst_batch=BURST_BATCH if db.is_sqlite else None,
            burst_defer=None if db.is_sqlite else BURST_DEFER,
            burst_backlog=BURST_BACKLOG * settings.batch_size,
            wake=wake,
        )
        for i in range(settings.workers)
    ]
    poller = Poller(db, settings, alerting=alerting)
    polling = Periodic(poller.step, interval=1.0, name="waquality-poller", on_stop=poller.close)
    loops = [polling, delivery]
    if conversations is not None and settings.workers:
        ending = conversations.end_idle
        loops.append(
            Periodic(lambda: ending(utcnow()), interval=IDLE_CHECK, name="waquality-conversations")
        )
    if conversations is not None:
        evaluator = SignalEvaluator(db, settings.signal_rules, alerting, settings.time_zone)
        loops.append(
            Periodic(
                lambda: evaluator.run(utcnow()), interval=SIGNAL_CHECK, name="waquality-signals"
            )
        )
    freeze_startup_objects()
    for worker in workers:
        worker.start()
    for loop in loops:
        loop.start()
    stop.wait()
    for loop in loops[:1] + loops[2:]:
        loop.stop()
    for worker in workers:
        worker.stop()
    delivery.stop()
    db.dispose()
