"""Group commit: concurrent requests share transactions; failures reach every waiter."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Sequence

import pytest

from waquality.errors import StoreUnavailable
from waquality.ingest import committer as committer_module
from waquality.ingest.committer import GroupCommitter
from waquality.ingest.signature import sign, verify
from waquality.store.inbox import Body


class SlowWriter:
    """Records batches; each write takes a while, as an fsync does."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[bytes]] = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, batch: Sequence[Body]) -> None:
        threading.Event().wait(0.005)
        if self.fail:
            raise StoreUnavailable("disk full")
        with self.lock:
            self.batches.append([b.body for b in batch])


async def _store_all(committer: GroupCommitter, n: int) -> list[BaseException | None]:
    return await asyncio.gather(
        *(committer.store(str(i).encode()) for i in range(n)), return_exceptions=True
    )


def test_concurrent_requests_share_commits() -> None:
    writer = SlowWriter()
    committer = GroupCommitter(writer)
    try:
        results = asyncio.run(_store_all(committer, 500))
    finally:
        committer.close()
    assert results == [None] * 500
    written = [body for batch in writer.batches for body in batch]
    assert sorted(written) == sorted(str(i).encode() for i in range(500))
    assert len(writer.batches) < 100  # far fewer transactions than requests


def test_a_failed_commit_fails_every_waiter() -> None:
    committer = GroupCommitter(SlowWriter(fail=True))
    try:
        results = asyncio.run(_store_all(committer, 50))
    finally:
        committer.close()
    assert all(isinstance(r, StoreUnavailable) for r in results)


def test_an_unexpected_error_becomes_unavailable() -> None:
    def broken(_: Sequence[Body]) -> None:
        raise ValueError("bug")

    committer = GroupCommitter(broken)
    try:
        with pytest.raises(StoreUnavailable):
            asyncio.run(committer.store(b"x"))
    finally:
        committer.close()


def test_a_hanging_store_is_answered_in_time_and_the_commit_goes_on() -> None:
    release = threading.Event()
    written: list[bytes] = []

    def hanging(batch: Sequence[Body]) -> None:
        release.wait(30)  # a database that neither answers nor fails
        written.extend(b.body for b in batch)

    committer = GroupCommitter(hanging, wait_limit=0.2)

    async def one() -> float:
        began = time.monotonic()
        with pytest.raises(StoreUnavailable, match="in time"):
            await committer.store(b"x")
        return time.monotonic() - began

    try:
        waited = asyncio.run(one())
        release.set()
    finally:
        committer.close()
    assert 0.2 <= waited < 5
    assert written == [b"x"]  # stored though refused: the redelivery is deduplicated


def test_closed_committer_refuses() -> None:
    committer = GroupCommitter(SlowWriter())
    committer.close()
    with pytest.raises(StoreUnavailable):
        asyncio.run(committer.store(b"x"))


def test_signature_helpers() -> None:
    body = b'{"a":1}'
    header = sign(b"one", body).encode()
    assert verify([b"zero", b"one"], body, header)
    assert not verify([b"zero"], body, header)
    assert not verify([b"one"], body + b" ", header)
    assert not verify([b"one"], body, header.replace(b"sha256=", b""))
    assert not verify([], body, header)


def test_the_rate_of_acknowledgements_is_averaged_and_decays() -> None:
    committer = GroupCommitter(SlowWriter())
    try:
        assert committer.rate(time.monotonic()) == 0.0
        before = time.monotonic()
        results = asyncio.run(_store_all(committer, 300))
        after = time.monotonic()
    finally:
        committer.close()
    assert results == [None] * 300
    # Every body counts once; what decayed meanwhile is at most the time the stores took.
    window = committer_module.RATE_WINDOW
    assert 300 / window * math.exp(-(after - before) / window) <= committer.rate(after)
    assert committer.rate(after) <= 300 / window
    later = committer.rate(after + window)
    assert later == pytest.approx(committer.rate(after) / math.e)
