"""The dashboard's pure parts: the Flagged countdown, the URL filters, charts, silence forms,
and the session signer and login brake (on a real database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from waquality.api.auth import Authenticator, digest
from waquality.domain.responses import Bucket
from waquality.store.database import Database
from waquality.web import charts, formats
from waquality.web.auth import Sessions, Throttle
from waquality.web.filters import CUSTOM, parse_view
from waquality.web.flagged import countdown
from waquality.web.silences import parse_matchers

T = datetime(2026, 3, 2, 9, tzinfo=UTC)
DAY = timedelta(days=1)


# -- the Flagged countdown ----------------------------------------------------------------------


def test_flagged_while_low_the_count_has_not_started() -> None:
    found = countdown(T, "RED", [], T + 2 * DAY)
    assert not found.running and found.due_at is None and found.remaining is None


def test_the_seven_days_count_from_the_rise_out_of_low() -> None:
    found = countdown(T, "RED", [(T + DAY, "YELLOW"), (T + 2 * DAY, "GREEN")], T + 3 * DAY)
    # YELLOW → GREEN keeps the run going: it started with YELLOW
    assert found.streak_since == T + DAY
    assert found.due_at == T + 8 * DAY
    assert found.remaining == 5 * DAY


def test_low_again_starts_the_count_over() -> None:
    changes = [(T + DAY, "GREEN"), (T + 3 * DAY, "RED"), (T + 4 * DAY, "YELLOW")]
    found = countdown(T, "RED", changes, T + 5 * DAY)
    assert found.streak_since == T + 4 * DAY and found.due_at == T + 11 * DAY
    assert not countdown(T, "RED", changes[:2], T + 5 * DAY).running


def test_good_quality_at_flagging_counts_from_the_flagging_and_the_past_is_zero() -> None:
    found = countdown(T, "GREEN", [], T + 9 * DAY)
    assert found.streak_since == T and found.due_at == T + 7 * DAY
    assert found.remaining == timedelta(0)


# -- filters ------------------------------------------------------------------------------------


def test_the_default_view_is_the_last_30_days_and_links_carry_only_what_differs() -> None:
    view = parse_view({}, T)
    assert (view.start, view.end, view.range) == (T - 30 * DAY, T, "30d")
    assert view.query() == ""
    assert parse_view({"range": "all", "waba": "123"}, T).query() == "?waba=123&range=all"
    assert parse_view({"range": "all"}, T).start is None


def test_a_custom_range_takes_whole_days_in_the_time_zone_and_round_trips() -> None:
    view = parse_view({"from": "2026-02-01", "to": "2026-02-28"}, T, "Europe/Berlin")
    assert view.range == CUSTOM
    assert view.start == datetime(2026, 1, 31, 23, tzinfo=UTC)
    assert view.end == datetime(2026, 2, 28, 23, tzinfo=UTC)  # the 28th included
    assert view.params() == {"from": "2026-02-01", "to": "2026-02-28"}
    assert view.bucket(view.start) is Bucket.DAY


def test_values_that_cannot_be_read_are_dropped_and_said() -> None:
    view = parse_view(
        {"waba": "<script>", "number": "+1 555", "range": "3y", "from": "yesterday"}, T
    )
    assert (view.waba, view.number, view.range) == (None, None, "30d")
    assert len(view.problems) == 4
    backwards = parse_view({"from": "2026-02-10", "to": "2026-02-01"}, T)
    assert backwards.range == "30d" and backwards.problems


def test_display_numbers_with_a_plus_are_read_as_digits() -> None:
    assert parse_view({"number": "+15550783881"}, T).number == "15550783881"


# -- charts -------------------------------------------------------------------------------------


def test_segments_cover_the_range_from_the_value_before_it() -> None:
    found = charts.segments("GREEN", [(T + DAY, "YELLOW"), (T + 2 * DAY, "YELLOW")], T, T + 3 * DAY)
    assert found == [
        charts.Segment(T, T + DAY, "GREEN"),
        charts.Segment(T + DAY, T + 3 * DAY, "YELLOW"),
    ]
    # changes outside the range are clamped to it
    assert charts.segments(None, [(T - DAY, "RED")], T, T + DAY) == [
        charts.Segment(T, T + DAY, "RED")
    ]


def test_chart_text_is_escaped_and_class_names_are_plain() -> None:
    hostile = '<script>alert("x")</script>'
    svg = charts.timeline(
        [charts.Lane("status", "status", [charts.Segment(T, T + DAY, hostile)])],
        [charts.Marker(T, hostile)],
        T,
        T + DAY,
    )
    assert "<script" not in svg and "&lt;script&gt;" in svg
    assert "v-OTHER" in svg  # the value cannot become a class name
    bars = charts.bars([(T, {"sent": 3, "failed": 1})], T, T + DAY, timedelta(hours=1))
    lines = charts.lines([charts.Series(hostile, "first-p50", [(T, 42.0)])], T, T + DAY)
    assert "<script" not in bars + lines


def test_axis_ticks_fall_on_round_local_moments() -> None:
    ticks = charts.ticks(T, T + 30 * DAY, "UTC")
    assert ticks and all(t.hour == 0 and t.minute == 0 for t in ticks)
    hourly = charts.ticks(T, T + timedelta(hours=12), "Asia/Kolkata")
    assert all(t.minute == 0 for t in hourly)
    yearly = charts.ticks(T, T + 400 * DAY, "UTC")
    assert all(t.day == 1 for t in yearly)


def test_durations_and_spans_read_as_people_say_them() -> None:
    assert formats.duration(42) == "42 s" and formats.duration(312) == "5.2 min"
    assert formats.span(timedelta(days=5, hours=23, minutes=10)) == "5 d 23 h"
    assert formats.quality_word("GREEN") == "High" and formats.quality_word(None) == "unknown"


# -- silences -----------------------------------------------------------------------------------


def test_matchers_are_label_value_lines() -> None:
    assert parse_matchers("waba_id=123\n\n rule = phone_quality \n") == {
        "waba_id": "123",
        "rule": "phone_quality",
    }
    for bad in ("", "no equals sign", "1abc=x", "label=", "a b=c"):
        with pytest.raises(ValueError):
            parse_matchers(bad)


# -- sessions -----------------------------------------------------------------------------------


def test_sessions_are_signed_and_the_key_is_shared_by_every_process(db: Database) -> None:
    auth = Authenticator(digest("the-token"))
    one, other = Sessions(db, auth, None), Sessions(db, auth, None)
    session = one.new(signed_in=True)
    cookie = one.dump(session)
    assert other.load(cookie) == session  # the same key from the database
    assert other.load(cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")) is None
    assert other.load("not a cookie") is None and other.load(None) is None
    # a new password ends the sessions signed in before it
    assert Sessions(db, auth, SecretStr("a new password")).load(cookie) is None


def test_the_token_or_the_password_signs_in_nothing_else(db: Database) -> None:
    sessions = Sessions(db, Authenticator(digest("the-token")), SecretStr("a password!"))
    assert sessions.credentials_ok("the-token") and sessions.credentials_ok(" a password! ")
    for wrong in ("", "   ", "the-token2", "a password", "Bearer the-token"):
        assert not sessions.credentials_ok(wrong), wrong
    assert not Sessions(db, Authenticator(digest("t")), None).credentials_ok("a password!")


def test_wrong_logins_are_braked_per_address_within_the_window() -> None:
    throttle = Throttle(limit=3, window=60)
    for moment in (0.0, 1.0, 2.0):
        assert not throttle.blocked("10.0.0.1", moment)
        throttle.failed("10.0.0.1", moment)
    assert throttle.blocked("10.0.0.1", 3.0)
    assert not throttle.blocked("10.0.0.2", 3.0)
    assert not throttle.blocked("10.0.0.1", 61.0)  # the first one left the window
