"""Conversations and response times of one (business number, customer) pair."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waquality.domain.enums import SenderKind
from waquality.domain.responses import (
    Bucket,
    BucketOf,
    BusinessHours,
    Message,
    bucket_start,
    track,
)
from waquality.store.stats import Deltas

T = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday
LATER = T + timedelta(days=30)


def at(minutes: float) -> datetime:
    return T + timedelta(minutes=minutes)


def customer(minutes: float) -> Message:
    return Message(at(minutes), inbound=True)


def reply(minutes: float, sender: SenderKind = SenderKind.AGENT, failed: bool = False) -> Message:
    return Message(at(minutes), inbound=False, sender=sender, failed=failed)


def test_a_reply_answers_the_whole_run_and_the_first_is_the_first_response() -> None:
    messages = [customer(0), customer(2), reply(5), customer(10), reply(11), reply(12)]
    outcome = track(reversed(messages), LATER)  # any order
    assert [(r.asked_at, r.seconds, r.first) for r in outcome.responses] == [
        (at(0), 300.0, True),
        (at(10), 60.0, False),
    ]
    [conversation] = outcome.conversations
    assert conversation.by_customer and conversation.answered and conversation.ended
    assert outcome.unanswered == 0 and outcome.unanswered_runs == 0


def test_failed_messages_are_no_reply_and_only_counted_senders_answer() -> None:
    messages = [customer(0), reply(1, failed=True), reply(2, SenderKind.BOT), reply(9)]
    agents = track(messages, LATER, counts=lambda s: s is SenderKind.AGENT)
    assert [(r.seconds, r.sender) for r in agents.responses] == [(540.0, SenderKind.AGENT)]
    everyone = track(messages, LATER)
    assert [(r.seconds, r.sender) for r in everyone.responses] == [(120.0, SenderKind.BOT)]


def test_the_gap_splits_conversations_and_unanswered_is_counted_apart() -> None:
    day = 24 * 60
    messages = [
        customer(0),  # never answered: an unanswered conversation
        customer(2 * day),
        reply(2 * day + 3),
        customer(2 * day + 60),  # a run left waiting when that conversation ended
        reply(5 * day, SenderKind.CAMPAIGN),  # the business starts a conversation
        customer(5 * day + 10),
        reply(5 * day + 12),
    ]
    outcome = track(messages, LATER)
    assert [c.by_customer for c in outcome.conversations] == [True, True, False]
    assert outcome.unanswered == 1 and outcome.unanswered_runs == 1
    firsts = [(r.asked_at, r.seconds) for r in outcome.responses if r.first]
    assert firsts == [(at(2 * day), 180.0), (at(5 * day + 10), 120.0)]


def test_an_open_conversation_is_waiting_not_unanswered() -> None:
    outcome = track([customer(0), customer(1)], now=at(60))
    [conversation] = outcome.conversations
    assert not conversation.ended and conversation.waiting_since == at(0)
    assert outcome.unanswered == 0 and outcome.responses == []


def test_business_hours_pause_the_clock() -> None:
    hours = BusinessHours("Europe/Paris", time(9), time(17))
    friday_evening = datetime(2026, 3, 6, 17, 30, tzinfo=UTC)  # 18:30 in Paris: closed
    monday = datetime(2026, 3, 9, 8, 15, tzinfo=UTC)  # 09:15 in Paris
    outcome = track(
        [Message(friday_evening, True), Message(monday, False, SenderKind.AGENT)],
        LATER,
        gap=timedelta(days=7),
        hours=hours,
    )
    assert [r.seconds for r in outcome.responses] == [15 * 60.0]


def brute_force(hours: BusinessHours, start: datetime, end: datetime) -> float:
    """Open seconds counted minute by minute (the moments given on whole minutes)."""
    from zoneinfo import ZoneInfo

    tz, total, moment = ZoneInfo(hours.zone), 0.0, start
    while moment < end:
        local = moment.astimezone(tz)
        if local.weekday() in hours.days and hours.opens <= local.time() < hours.closes:
            total += 60
        moment += timedelta(minutes=1)
    return total


@settings(max_examples=60, derandomize=True, database=None, deadline=None)
@given(
    st.integers(0, 14 * 24 * 60),
    st.integers(0, 4 * 24 * 60),
    st.sampled_from(["UTC", "Europe/Paris", "America/Sao_Paulo", "Asia/Kolkata"]),
)
def test_business_seconds_match_a_minute_by_minute_count(
    start: int, length: int, zone: str
) -> None:
    hours = BusinessHours(zone, time(8, 30), time(18))
    begin = datetime(2026, 3, 25, tzinfo=UTC) + timedelta(minutes=start)  # spans a DST change
    end = begin + timedelta(minutes=length)
    assert hours.seconds_between(begin, end) == brute_force(hours, begin, end)


def test_random_histories_keep_the_invariants() -> None:
    rng = random.Random(7)
    for _ in range(200):
        messages = []
        moment = 0.0
        for _ in range(rng.randint(1, 30)):
            moment += rng.expovariate(1 / 300)
            inbound = rng.random() < 0.5
            messages.append(Message(at(moment), inbound, SenderKind.AGENT, rng.random() < 0.1))
        outcome = track(messages, LATER, gap=timedelta(hours=5))
        assert all(r.seconds >= 0 and r.answered_at >= r.asked_at for r in outcome.responses)
        answered = [c for c in outcome.conversations if c.answered]
        assert sum(r.first for r in outcome.responses) == len(answered)
        assert outcome == track(list(reversed(messages)), LATER, gap=timedelta(hours=5))


def test_buckets_follow_the_configured_time_zone() -> None:
    from waquality.domain.responses import Bucket, bucket_start

    moment = datetime(2026, 3, 29, 22, 30, tzinfo=UTC)  # Monday 00:30 in Paris (summer time)
    assert bucket_start(moment, Bucket.HOUR, "Europe/Paris").isoformat() == (
        "2026-03-30T00:00:00+02:00"
    )
    day = bucket_start(moment, Bucket.DAY, "Europe/Paris")
    assert day.isoformat() == "2026-03-30T00:00:00+02:00"
    week = bucket_start(datetime(2026, 4, 1, 12, tzinfo=UTC), Bucket.WEEK, "Europe/Paris")
    assert week.isoformat() == "2026-03-30T00:00:00+02:00"
    # the week holding the change to summer time starts at winter midnight
    before = bucket_start(datetime(2026, 3, 29, 12, tzinfo=UTC), Bucket.WEEK, "Europe/Paris")
    assert before.isoformat() == "2026-03-23T00:00:00+01:00"
    assert bucket_start(moment, Bucket.DAY).isoformat() == "2026-03-29T00:00:00+00:00"


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Asia/Kolkata", "America/St_Johns"])
@pytest.mark.parametrize("bucket", [Bucket.HOUR, Bucket.DAY, Bucket.WEEK])
def test_buckets_of_hours_in_order_or_not_match_bucket_start(zone: str, bucket: Bucket) -> None:
    hours = [
        bucket_start(datetime(2026, 3, 20, tzinfo=UTC) + timedelta(hours=h), Bucket.HOUR, zone)
        for h in range(24 * 30)  # across a clock change
    ]
    random.Random(2).shuffle(half := hours[: len(hours) // 2])
    of = BucketOf(bucket, zone)
    for hour in hours + half:
        assert of(hour) == bucket_start(hour, bucket, zone)


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(
    st.lists(st.integers(0, 10 * 365 * 24 * 3600 * 1000), min_size=1, max_size=20),
    st.sampled_from(["UTC", "Europe/Paris", "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns"]),
)
def test_the_hour_a_change_counts_in_is_the_zones_hour_start(millis: list[int], zone: str) -> None:
    deltas = Deltas(zone=zone)  # one remembers the hours it met: each is asked again
    for moment in [datetime(2020, 1, 1, tzinfo=UTC) + timedelta(milliseconds=m) for m in millis]:
        for _ in range(2):
            found, expected = deltas.hour(moment), bucket_start(moment, Bucket.HOUR, zone)
            assert found == expected and found.utcoffset() == expected.utcoffset()
            assert found <= moment < found + timedelta(hours=1)
