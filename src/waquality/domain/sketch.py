"""A mergeable histogram of durations with a stated relative error (the DDSketch mapping).

A duration ``x`` (seconds) goes to bin ``ceil(log(x) / log(GAMMA))``; every value in a bin lies
within ``RELATIVE_ERROR`` of the bin's representative value, so any quantile read from the bins
is within ``RELATIVE_ERROR`` of a true sample quantile. Durations under ``SMALLEST`` share bin
``ZERO_BIN`` (read back as 0). Histograms merge by adding counts bin by bin — in SQL, a ``SUM``
grouped by bin over any time range — so a summary costs the same however many durations are
stored. The mapping and :func:`pack`'s layout are part of the storage format: they never
change.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

RELATIVE_ERROR = 0.01
GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(GAMMA)
SMALLEST = 0.001  # seconds: shorter durations count as 0
ZERO_BIN = -(2**31)


def bin_of(seconds: float) -> int:
    if not seconds >= SMALLEST:  # also NaN
        return ZERO_BIN
    return math.ceil(math.log(seconds) / _LOG_GAMMA)


def value_of(index: int) -> float:
    """The bin's representative value: within ``RELATIVE_ERROR`` of every value in the bin."""
    if index == ZERO_BIN:
        return 0.0
    return 2 * GAMMA**index / (GAMMA + 1)


def histogram(durations: Iterable[float]) -> Counter[int]:
    return Counter(bin_of(d) for d in durations)


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    within: dict[str, float]  # target label → share answered within it


def quantile(bins: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile (lower: the value at rank ``floor(q * (n - 1))``, 0-based)."""
    total = sum(bins.values())
    if total == 0:
        return None
    rank = math.floor(q * (total - 1))
    seen = 0
    for index in sorted(bins):
        seen += bins[index]
        if seen > rank:
            return value_of(index)
    return value_of(max(bins))  # pragma: no cover (rank < total)


def share_within(bins: Mapping[int, int], seconds: float) -> float:
    """The share of durations at most ``seconds``, to the sketch's relative error (the target's
    own bin counts as within)."""
    total = sum(bins.values())
    if total == 0:
        return 0.0
    limit = bin_of(seconds)
    return sum(n for index, n in bins.items() if index <= limit) / total


def summarise(
    bins: Mapping[int, int],
    total_seconds: float,
    maximum: float | None,
    targets: Mapping[str, float],
) -> Summary:
    """A summary from merged bins plus the exact sum and maximum kept beside them."""
    count = sum(bins.values())
    return Summary(
        count=count,
        mean=total_seconds / count if count else None,
        p50=quantile(bins, 0.5),
        p90=quantile(bins, 0.9),
        p99=quantile(bins, 0.99),
        max=maximum if count else None,
        within={label: share_within(bins, s) for label, s in targets.items()},
    )


def pack(bins: Mapping[int, int]) -> bytes:
    """Bins as stored: little-endian int32s — the zero bin's count, the first bin's index, then
    the counts of every bin from there to the last (dense: a handful of kilobytes at most)."""
    zero = bins.get(ZERO_BIN, 0)
    indexes = [i for i, count in bins.items() if i != ZERO_BIN and count]
    if not indexes:
        return struct.pack("<2i", zero, 0)
    low, high = min(indexes), max(indexes)
    dense = [0] * (high - low + 1)
    for index in indexes:
        dense[index - low] = bins[index]
    return struct.pack(f"<{2 + len(dense)}i", zero, low, *dense)


def add(data: bytes | None, change: Mapping[int, int]) -> bytes:
    """Stored bins (``None``: none yet) plus ``change`` (counts per bin, negative to take back),
    stored again: ``pack(unpack(data) + change)`` at array speed, for the rows a processing batch
    reads and writes back by the hundred."""
    indexes = [i for i, count in change.items() if i != ZERO_BIN and count]
    extra: list[tuple[int, npt.NDArray[np.int64]]] = []
    if indexes:
        low = min(indexes)
        counts = np.zeros(max(indexes) - low + 1, dtype=np.int64)
        for index in indexes:
            counts[index - low] = change[index]
        extra.append((low, counts))
    total = merged([data] if data is not None else [], change.get(ZERO_BIN, 0), extra)
    return total.packed()


def unpack(data: bytes) -> Counter[int]:
    values = struct.unpack(f"<{len(data) // 4}i", data)
    bins: Counter[int] = Counter()
    if values[0]:
        bins[ZERO_BIN] = values[0]
    low = values[1]
    for offset, count in enumerate(values[2:]):
        if count:
            bins[low + offset] = count
    return bins


@dataclass(frozen=True, slots=True)
class Dense:
    """Merged bins as one array (``counts[i]`` is bin ``low + i``): what a summary of many
    stored rows is computed from, at array speed."""

    zero: int
    low: int
    counts: npt.NDArray[np.int64]

    @property
    def total(self) -> int:
        return self.zero + int(self.counts.sum())

    def quantile(self, q: float) -> float | None:
        total = self.total
        if total == 0:
            return None
        rank = math.floor(q * (total - 1))
        if rank < self.zero:
            return 0.0
        position = int(np.searchsorted(np.cumsum(self.counts), rank - self.zero, side="right"))
        return value_of(self.low + position)

    def share_within(self, seconds: float) -> float:
        total = self.total
        if total == 0:
            return 0.0
        limit = bin_of(seconds)
        if limit == ZERO_BIN:
            return self.zero / total
        upto = min(max(limit - self.low + 1, 0), len(self.counts))
        return (self.zero + int(self.counts[:upto].sum())) / total

    def packed(self) -> bytes:
        """As :func:`pack` stores the same bins."""
        kept = np.flatnonzero(self.counts)
        if not len(kept):
            return struct.pack("<2i", self.zero, 0)
        first, last = int(kept[0]), int(kept[-1])
        counts = self.counts[first : last + 1]
        if counts.min() < _INT32.min or counts.max() > _INT32.max:
            raise OverflowError("a bin's count does not fit the stored format")
        return struct.pack("<2i", self.zero, self.low + first) + counts.astype("<i4").tobytes()

    def summary(
        self, total_seconds: float, maximum: float | None, targets: Mapping[str, float]
    ) -> Summary:
        count = self.total
        return Summary(
            count=count,
            mean=total_seconds / count if count else None,
            p50=self.quantile(0.5),
            p90=self.quantile(0.9),
            p99=self.quantile(0.99),
            max=maximum if count else None,
            within={label: self.share_within(s) for label, s in targets.items()},
        )


_INT32 = np.iinfo(np.int32)


def merged(
    packed: Iterable[bytes],
    zero: int = 0,
    parts: Sequence[tuple[int, npt.NDArray[np.int64]]] = (),
) -> Dense:
    """Add stored bins up (see :func:`pack`), with ``zero`` more in the zero bin and ``parts``
    (dense counts from a first bin's index) more."""
    found: list[tuple[int, npt.NDArray[Any]]] = list(parts)
    for data in packed:
        values = np.frombuffer(data, dtype="<i4")
        zero += int(values[0])
        if len(values) > 2:
            found.append((int(values[1]), values[2:]))
    if not found:
        return Dense(zero, 0, np.zeros(0, dtype=np.int64))
    low = min(start for start, _ in found)
    high = max(start + len(counts) for start, counts in found)
    total = np.zeros(high - low, dtype=np.int64)
    for start, counts in found:
        total[start - low : start - low + len(counts)] += counts
    return Dense(zero, low, total)


def summaries(
    groups: Sequence[Sequence[bytes]],
    totals: Sequence[float],
    maxima: Sequence[float | None],
    targets: Mapping[str, float],
    combined: Sequence[Sequence[int]] = (),
) -> list[dict[str, Any]]:
    """The summary of each group of stored bins (as :meth:`Dense.summary` gives it, as a
    dict), all groups at once: the bins go into one matrix, one row per group, and every
    quantile and share is read from its running sums in a few array operations. Each of
    ``combined`` (indexes of groups) adds one more summary: of those groups together (its sum
    and maximum from theirs)."""
    if not groups and not combined:
        return []
    parsed = [[np.frombuffer(data, dtype="<i4") for data in group] for group in groups]
    zero = np.array([sum(int(v[0]) for v in group) for group in parsed], dtype=np.int64)
    spans = [(int(v[1]), len(v) - 2) for group in parsed for v in group if len(v) > 2]
    low = min((start for start, _ in spans), default=0)
    width = max((start + n - low for start, n in spans), default=0)
    matrix = np.zeros((len(groups) + len(combined), max(width, 1)), dtype=np.int64)
    for row, group in enumerate(parsed):
        for values in group:
            if len(values) > 2:
                start = int(values[1]) - low
                matrix[row, start : start + len(values) - 2] += values[2:]
    totals, maxima = list(totals), list(maxima)
    zeros = list(zero)
    for row, members in enumerate(combined, start=len(groups)):
        chosen = list(members)
        if chosen:
            matrix[row] = matrix[chosen].sum(axis=0)
        zeros.append(int(zero[chosen].sum()) if chosen else 0)
        totals.append(sum(totals[i] for i in chosen))
        present = [m for i in chosen if (m := maxima[i]) is not None]
        maxima.append(max(present) if present else None)
    zero = np.array(zeros, dtype=np.int64)
    running = np.cumsum(matrix, axis=1)
    counts = zero + running[:, -1]
    found: dict[str, Any] = {}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        rank = np.floor(q * (counts - 1)).astype(np.int64) - zero
        position = (running <= rank[:, None]).sum(axis=1)
        found[name] = np.where(rank < 0, ZERO_BIN, low + position)
    shares: dict[str, Any] = {}
    for label, seconds in targets.items():
        limit = bin_of(seconds)
        upto = 0 if limit == ZERO_BIN else min(max(limit - low + 1, 0), matrix.shape[1])
        within = zero + (running[:, upto - 1] if upto > 0 else 0)
        shares[label] = within / np.maximum(counts, 1)
    result: list[dict[str, Any]] = []
    for row in range(len(matrix)):
        count = int(counts[row])
        if count == 0:
            result.append(
                {
                    "count": 0,
                    "mean": None,
                    "p50": None,
                    "p90": None,
                    "p99": None,
                    "max": None,
                    "within": dict.fromkeys(targets, 0.0),
                }
            )
            continue
        result.append(
            {
                "count": count,
                "mean": totals[row] / count,
                "p50": value_of(int(found["p50"][row])),
                "p90": value_of(int(found["p90"][row])),
                "p99": value_of(int(found["p99"][row])),
                "max": maxima[row],
                "within": {label: float(shares[label][row]) for label in targets},
            }
        )
    return result
