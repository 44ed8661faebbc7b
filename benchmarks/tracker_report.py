"""The report of ``tracker.py``: a Markdown table with a column per database, then one line per
check and per target. Works on the JSON-ready dictionary the runner collects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
SUMMARY_TARGET_MS = 100.0
OVERHEAD_TARGET = 0.10


def _n(value: float) -> str:
    return f"{value:,.0f}"


def report(data: dict[str, Any]) -> tuple[str, bool]:
    """The Markdown table, checks and targets; and whether every check passed."""
    stores = {s["database"]: s for s in data["stores"]}
    processing = {p["database"]: p for p in data["processing"]}
    databases = [d for d in ("sqlite", "postgres") if d in stores or d in processing]
    shape, described = data["shape"], data["set"]
    duck = data["duckdb"]
    lines = [f"Command: `{data['command']}`", f"Machine: {data['machine']}", ""]
    if stores:
        lines += [
            f"Message set: {described['messages']:,} messages ({described['inbound']:,} from "
            f"customers), {described['conversations_generated']:,} conversations generated, "
            f"{described['pairs']:,} customers, {shape['numbers']} numbers, {shape['days']} "
            f"days, seed {shape['seed']}; generated in {data['generate_seconds']:.1f} s.",
            "",
        ]
    if processing:
        first = next(iter(processing.values()))
        lines += [
            f"Processing: {first['bodies']:,} webhook bodies ({first['items']:,} message items), "
            f"one worker, batches of {data['options']['batch_size']}, each batch at the time "
            "its last body came, each database fresh; "
            f"medians of {data['options']['repeats']} runs each way.",
            "",
        ]
    lines += [
        "| | " + " | ".join(LABELS[d] for d in databases) + " |",
        "|---|" + "---|" * len(databases),
    ]

    def row(label: str, cell: Callable[[str], str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(d) for d in databases) + " |")

    def store(d: str) -> dict[str, Any]:
        found: dict[str, Any] = stores.get(d, {})
        return found

    if stores:
        row(
            "bulk import into `messages`",
            lambda d: (
                f"{store(d)['import']['load_seconds'] + store(d)['import']['index_seconds']:.1f}"
                f" s ({_n(store(d)['import']['rows_per_second'])} rows/s)"
                if store(d)
                else "—"
            ),
        )
        row(
            "full rebuild (conversations, responses, aggregates)",
            lambda d: (
                f"{store(d)['rebuild']['seconds']:.1f} s "
                f"({_n(store(d)['rebuild']['messages_per_second'])} messages/s)"
                if store(d)
                else "—"
            ),
        )
        row(
            f"same first responses in DuckDB, in memory, one figure for both ({duck['threads']}"
            f" threads, median of {len(duck['runs'])})",
            lambda d: f"{duck['median']:.2f} s",
        )
        row(
            "same first responses, plain window-function SQL",
            lambda d: (
                f"{store(d)['window_sql']['seconds']:.1f} s" if store(d).get("window_sql") else "—"
            ),
        )
        labels = [s["label"] for s in next(iter(stores.values()))["summaries"]]
        for index, label in enumerate(labels):

            def summary_cell(d: str, i: int = index) -> str:
                return f"{store(d)['summaries'][i]['median_ms']:.1f} ms" if store(d) else "—"

            row(f"{label}, 30 days (median of {data['options']['runs']})", summary_cell)
        row(
            "rows: conversations / responses / response_stats",
            lambda d: (
                " / ".join(
                    _n(store(d)["rows"][t])
                    for t in ("conversations", "responses", "response_stats")
                )
                if store(d)
                else "—"
            ),
        )
    if processing:
        for state in ("off", "on"):

            def rate_cell(d: str, s: str = state) -> str:
                if d not in processing:
                    return "—"
                found = processing[d]
                per_body, per_item = found[f"{s}_bodies_per_second"], found[f"{s}_items_per_second"]
                return f"{_n(per_body)} / {_n(per_item)}"

            row(f"processing, tracker {state} (bodies/s, message items/s)", rate_cell)
        row(
            "tracker's cost in processing throughput",
            lambda d: f"{processing[d]['overhead']:.0%}" if d in processing else "—",
        )
    row(
        "other processes' CPU during the runs (cores)",
        lambda d: " / ".join(
            f"{x['other_cores_busy']:.1f}" for x in (stores.get(d), processing.get(d)) if x
        ),
    )
    ok = True
    lines += ["", "Checks:"]
    for d in databases:
        found = stores.get(d)
        if found:
            check = found["check"]
            word = "OK  " if check["agrees"] else "FAIL"
            ok &= check["agrees"]
            stored = check["responses"]
            lines.append(
                f"{word} {LABELS[d]}: the tracker's first responses (responses and conversations)"
                f" equal DuckDB's: {stored['count']:,} first responses, "
                f"{stored['seconds']:,.0f} s in all (DuckDB: {check['duckdb']['count']:,}, "
                f"{check['duckdb']['seconds']:,.0f} s)"
            )
            window = found.get("window_sql")
            if window:
                ok &= window["agrees"]
                word = "OK  " if window["agrees"] else "FAIL"
                lines.append(
                    f"{word} {LABELS[d]}: plain window-function SQL gives the same "
                    f"({window['firsts']['count']:,}, {window['firsts']['seconds']:,.0f} s)"
                )
        proc = processing.get(d)
        if proc and proc["check"]:
            check = proc["check"]
            ok &= check["agrees"]
            word = "OK  " if check["agrees"] else "FAIL"
            lines.append(
                f"{word} {LABELS[d]}: processing with the tracker = a rebuild of what it stored "
                f"({check['incremental']['count']:,} first responses, "
                f"{check['incremental']['seconds']:,.0f} s)"
            )
    lines += ["", "Targets:"]
    for d in databases:
        found = stores.get(d)
        if found:
            worst = max(
                (s for s in found["summaries"] if s["kind"] == "response_times"),
                key=lambda s: s["median_ms"],
            )
            word = "PASS" if worst["median_ms"] < SUMMARY_TARGET_MS else "FAIL"
            lines.append(
                f"{word}  {LABELS[d]} 30-day response-time summary: slowest median "
                f"{worst['median_ms']:.1f} ms ({worst['label']}; target < 100 ms) with "
                f"{found['import']['rows']:,} messages stored"
            )
        proc = processing.get(d)
        if proc:
            word = "PASS" if proc["overhead"] < OVERHEAD_TARGET else "FAIL"
            lines.append(
                f"{word}  {LABELS[d]} tracker's cost: {proc['overhead']:.0%} of processing "
                f"throughput (target < 10%)"
            )
        if found:
            ratio = found["rebuild"]["seconds"] / duck["median"] if duck["median"] else 0.0
            lines.append(
                f"INFO  {LABELS[d]} full rebuild {found['rebuild']['seconds']:.1f} s, "
                f"{ratio:,.0f}x DuckDB's {duck['median']:.2f} s for the first responses alone"
            )
    return "\n".join(lines), ok
