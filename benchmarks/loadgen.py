"""Running wrk with the replay scripts and reading its result.

Both scripts print one ``WRKJSON {...}`` line from wrk's ``done()`` hook;
:func:`run_wrk` parses it into a :class:`WrkResult`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bodies import PoolInfo

HERE = Path(__file__).resolve().parent
REPLAY_SCRIPT = HERE / "replay.lua"
PACED_SCRIPT = HERE / "paced.lua"
WRK_TIMEOUT_S = 10
"""wrk's per-request timeout: slower answers count as timeout errors."""


class LoadError(RuntimeError):
    """wrk could not run, or printed no result."""


@dataclass(frozen=True, slots=True)
class Latency:
    """wrk's latency distribution, in milliseconds."""

    mean: float
    stdev: float
    max: float
    percentiles: dict[str, float]

    def p(self, percentile: str) -> float:
        return self.percentiles.get(percentile, float("nan"))


@dataclass(frozen=True, slots=True)
class WrkResult:
    duration_s: float
    requests: int
    errors: dict[str, int]
    latency: Latency
    consumed: int
    exhausted: bool
    output: str

    @property
    def rate(self) -> float:
        """Completed requests (any status) per second."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def non_2xx(self) -> int:
        """Answers with a status above 399 (the only ones wrk counts)."""
        return self.errors.get("status", 0)

    @property
    def socket_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "status")

    @property
    def acked(self) -> int:
        return self.requests - self.non_2xx

    @property
    def ack_rate(self) -> float:
        return self.acked / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def has_errors(self) -> bool:
        return self.non_2xx > 0 or self.socket_errors > 0

    def error_text(self) -> str:
        parts = [f"{k} {v}" for k, v in self.errors.items() if v]
        if self.exhausted:
            parts.append("request pool exhausted")
        return ", ".join(parts) if parts else "none"

    def as_json(self) -> dict[str, Any]:
        return {
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "acked": self.acked,
            "rate": round(self.rate, 1),
            "ack_rate": round(self.ack_rate, 1),
            "errors": self.errors,
            "latency_ms": {
                "mean": self.latency.mean,
                "stdev": self.latency.stdev,
                "max": self.latency.max,
                "percentiles": self.latency.percentiles,
            },
            "pool_consumed": self.consumed,
            "pool_exhausted": self.exhausted,
        }


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise LoadError("wrk is not installed (Debian: apt-get install wrk)")
    return path


def wrk_version() -> str:
    done = subprocess.run(
        [wrk_binary(), "-v"], capture_output=True, text=True, timeout=10, check=False
    )
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"


def run_wrk(
    url: str,
    pool: PoolInfo,
    *,
    seconds: int,
    connections: int,
    threads: int,
    rate: int | None = None,
) -> WrkResult:
    """Post pool requests to ``url`` for ``seconds``; paced when ``rate`` is given."""
    script = REPLAY_SCRIPT if rate is None else PACED_SCRIPT
    argv = [
        wrk_binary(),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={seconds}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        "--latency",
        f"--script={script}",
        url,
        "--",
        pool.directory,
        str(pool.shards),
        str(threads),
    ]
    if rate is not None:
        argv.append(str(rate))
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"wrk did not finish within {seconds + 60} s") from exc
    return parse_output(done.stdout, done.stderr, done.returncode)


def parse_output(stdout: str, stderr: str, returncode: int) -> WrkResult:
    line = next((ln for ln in stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if returncode != 0 or line is None:
        detail = (stderr.strip() or stdout.strip())[-2000:]
        raise LoadError(f"wrk failed (exit {returncode}): {detail}")
    data = json.loads(line.removeprefix("WRKJSON "))
    lat = data["latency_us"]
    latency = Latency(
        mean=round(lat["mean"] / 1000, 3),
        stdev=round(lat["stdev"] / 1000, 3),
        max=round(lat["max"] / 1000, 3),
        percentiles={k: round(v / 1000, 3) for k, v in lat["percentiles"].items()},
    )
    threads = data["threads"]
    return WrkResult(
        duration_s=data["duration_us"] / 1e6,
        requests=int(data["requests"]),
        errors={k: int(v) for k, v in data["errors"].items()},
        latency=latency,
        consumed=sum(int(t["consumed"]) for t in threads),
        exhausted=any(bool(t["exhausted"]) for t in threads),
        output="\n".join(ln for ln in stdout.splitlines() if not ln.startswith("WRKJSON ")),
    )
