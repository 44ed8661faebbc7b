"""Alert latency: a signed webhook in → its notification at a receiver, end to end.

Starts ``python -m waquality serve`` on a fresh database (SQLite, or PostgreSQL with --db
postgres) with one receiver, a local HTTP server given as ``webhook+http://...``; posts
webhooks that each pause a different template (a critical alert), paced, optionally beside a
background load of ``messages`` webhooks; and reports the latency from just before the POST to
the notification's arrival.

    python benchmarks/alerts.py [--count 200] [--rate 20] [--background 500] [--db sqlite]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from harness import HOST, Postgres, Processes, free_port, serve_env, start_serve, wait_ready
from waquality.ingest.signature import sign

SECRET = "bench-app-secret"  # noqa: S105 (a throwaway secret for a local run)
WABA = "102290129340398"
T0 = 1_772_000_000
BACKGROUND_CONNECTIONS = 8


class Arrivals:
    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()


def receiver(arrivals: Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            now = time.perf_counter()
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            for alert in body.get("alerts", []):
                template = alert["labels"].get("template_id")
                if template and alert["status"] == "firing":
                    with arrivals.lock:
                        arrivals.at.setdefault(template, now)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer((HOST, free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def paused(template_id: int) -> bytes:
    value = {
        "event": "PAUSED",
        "message_template_id": template_id,
        "message_template_name": f"promo_{template_id}",
        "message_template_language": "en_US",
        "reason": "NONE",
        "other_info": {"title": "FIRST_PAUSE", "description": "paused for 3 hours"},
    }
    change = {"field": "message_template_status_update", "value": value}
    entry = {"id": WABA, "time": T0 + template_id, "changes": [change]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


def status(index: int) -> bytes:
    index += threading.get_ident() % 1_000_000 * 10_000_000  # unique across the connections
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "statuses": [
            {
                "id": f"wamid.bench{index}",
                "status": "delivered",
                "timestamp": str(T0 + index),
                "recipient_id": "16505551234",
            }
        ],
    }
    entry = {"id": WABA, "changes": [{"field": "messages", "value": value}]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


def post(client: httpx.Client, body: bytes) -> None:
    headers = {"X-Hub-Signature-256": sign(SECRET.encode(), body)}
    response = client.post("/webhooks/whatsapp", content=body, headers=headers)
    response.raise_for_status()


def background_load(url: str, rate: int, stop: threading.Event, sent: list[float]) -> None:
    """One connection posting ``messages`` webhooks at ``rate`` (or as fast as it can)."""
    with httpx.Client(base_url=url, timeout=10) as client:
        index, started = 0, time.perf_counter()
        while not stop.is_set():
            post(client, status(index))
            sent.append(time.perf_counter())
            index += 1
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="alerting webhooks per second")
    parser.add_argument("--background", type=int, default=500, help="messages webhooks/s beside")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    options = parser.parse_args(argv)
    arrivals = Arrivals()
    hook = receiver(arrivals)
    processes = Processes()
    with tempfile.TemporaryDirectory() as tmp:
        if options.db == "postgres":
            database = Postgres("waquality_bench_alerts")
            database.recreate()
            url = database.url
        else:
            url = f"sqlite:///{Path(tmp) / 'alerts.db'}"
        port = free_port()
        env = serve_env(
            Path(tmp),
            url,
            SECRET,
            "bench-token",
            alert_urls=f"webhook+http://{HOST}:{hook.server_port}/alerts",
        )
        server = start_serve(processes, env, port, Path(tmp) / "server.log")
        stop = threading.Event()
        try:
            wait_ready(server, "/readyz")
            background: list[float] = []
            if options.background:
                for _ in range(BACKGROUND_CONNECTIONS):
                    threading.Thread(
                        target=background_load,
                        args=(
                            server.url,
                            options.background // BACKGROUND_CONNECTIONS,
                            stop,
                            background,
                        ),
                        daemon=True,
                    ).start()
                time.sleep(1.0)  # let the background load settle
            sent: dict[str, float] = {}
            with httpx.Client(base_url=server.url, timeout=10) as client:
                began = time.perf_counter()
                background_before = len(background)
                for i in range(options.count):
                    template = 900_000 + i
                    sent[str(template)] = time.perf_counter()
                    post(client, paused(template))
                    delay = began + (i + 1) / options.rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
            window = time.perf_counter() - began
            achieved = (len(background) - background_before) / window
            deadline = time.perf_counter() + 30
            while len(arrivals.at) < options.count and time.perf_counter() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            processes.stop_all()
            hook.shutdown()
    latencies = sorted((arrivals.at[k] - t) * 1000 for k, t in sent.items() if k in arrivals.at)
    missing = options.count - len(latencies)
    if not latencies:
        print("no notification arrived", file=sys.stderr)
        return 1
    p = statistics.quantiles(latencies, n=100, method="inclusive")
    print(
        f"| {options.db} | {options.count} critical alerts at {options.rate:g}/s, "
        f"{achieved:,.0f} messages/s beside | p50 {p[49]:.0f} ms | p90 {p[89]:.0f} ms | "
        f"p99 {p[98]:.0f} ms | max {latencies[-1]:.0f} ms | missing {missing} |"
    )
    verdict = "PASS" if p[98] < 1000 and missing == 0 else "FAIL"
    print(f"{verdict}  webhook → notification p99 {p[98]:.0f} ms (target < 1,000 ms)")
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
