"""Property-based: whatever authentic bytes arrive, the parser never raises and loses nothing,
and processing keeps every body and quarantines what it cannot read.

Bodies are real golden payloads, mutated: wrong types at any path, missing keys, huge strings,
deep and pathologically deep nesting, invalid UTF-8, lone surrogates, NUL characters, type
drift (numbers as strings and back, floats for integers), integers beyond 64 bits, duplicate
keys, empty ``entry``/``changes`` arrays and bodies that are not objects.

"Loses nothing" is checked against an independent reading of the same bytes (the standard
library's JSON decoder): every change is either represented by a typed event whose value is
that change's value, counted (``messages``), or reported in ``broken`` at its own path.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from conftest import manifest, webhook
from waquality.domain.enums import RawStatus
from waquality.process.parse import ParsedBody, parse_body
from waquality.process.worker import Processor
from waquality.store import inbox, schema
from waquality.store.database import Database
from waquality.store.tracker import Tracker

NOW = datetime(2026, 1, 1, tzinfo=UTC)
OBJECT = "whatsapp_business_account"

GOLDEN = [
    orjson.loads(webhook(c["file"]))
    for c in manifest()
    if c["file"].endswith(".json")
    and not c["file"].startswith("broken/")
    and "large" not in c["file"]
]


def fuzz_settings(examples: int, *checks: HealthCheck) -> settings:
    """Few examples, the same ones on every run (CI is reproducible), no example database."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, *checks],
    )


# -- building bodies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is: what a Python value cannot express (invalid UTF-8, lone
    surrogate escapes, nesting deeper than any encoder goes, non-finite number literals)."""

    text: bytes


@dataclass(frozen=True)
class Dup:
    """An object whose keys may repeat (the last one wins when read)."""

    items: tuple[tuple[str | Raw, Any], ...]


def emit(value: Any) -> bytes:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Dup | dict):
        pairs = value.items if isinstance(value, Dup) else value.items()
        return b"{" + b",".join(emit(k) + b":" + emit(v) for k, v in pairs) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(emit(v) for v in value) + b"]"
    return json.dumps(value).encode()  # the standard encoder: big integers, \u0000, \ud800


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new) if path[1:] else new  # or a new key
    return copy


def _delete(value: Any, path: tuple[Any, ...]) -> Any:
    parent = _at(value, path[:-1])
    copy = dict(parent) if isinstance(parent, dict) else list(parent)
    del copy[path[-1]]
    return _replace(value, path[:-1], copy)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50)
    | st.sampled_from(["", "TIER_2K", "-1", "NA", "en-US", "1751247548", "2025-06-30T01:39:08Z"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

BIG_INTEGERS = [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30, -(10**30), 10**400]
INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\x80", b"\xf8"]
LONE_SURROGATES = [b"\\ud800", b"\\udfff", b"\\ud83d", b"\\ude00", b"\\ud800\\u0041"]


def _string(draw: st.DrawFn, middle: bytes) -> Raw:
    head, tail = draw(st.sampled_from([(b"", b""), (b"ab", b""), (b"", b"cd"), (b"x ", b" y")]))
    return Raw(b'"' + head + middle + tail + b'"')


def _nest(depth: int, inner: Any, shape: str) -> Any:
    for level in range(depth):
        wrap_list = shape == "list" or (shape == "mixed" and level % 2 == 0)
        inner = [inner] if wrap_list else {"k": inner}
    return inner


Mutation = Callable[[st.DrawFn, Any, tuple[Any, ...]], Any]


def wrong_type(draw: st.DrawFn, node: Any, path: tuple[Any, ...]) -> Any:
    return draw(json_values)


def huge_string(draw: st.DrawFn, node: Any, path: tuple[Any, ...]) -> Any:
    size = draw(st.integers(100_000, 1_000_000))
    unit = draw(st.sampled_from(["x", "9", "ab ", "é", "\x00", "😀"]))
    return unit * (size // (len(json.dumps(unit)) - 2))


def deep(draw: st.DrawFn, node: Any, path: tuple[Any, ...]) -> Any:
    depth = draw(st.integers(150, 260))  # about orjson's encoder limit (254 levels)
    depth = max(1, min(depth, 270 - len(path)))  # not compounded by a second deep mutation
    return _nest(depth, node, draw(st.sampled_from(["list", "dict", "mixed"])))


def abyss(draw: st.DrawFn, node: Any, path: tuple[Any, ...]) -> Any:
    depth = draw(st.sampled_from([1_100, 100_000]))  # orjson refuses past 1024
    if draw(st.booleans()):
        return Raw(b"[" * depth + b"]" * depth)
    return Raw(b'{"a":' * depth + b"null" + b"}" * depth)


def invalid_utf8(draw: st.DrawFn, node: Any, path: tuple[Any, ...]) -> Any:
    return _string(draw, draw(st.sampled_from(INVALID_UTF8)))


def lone_surrogate(draw: st.DrawFn, node: Any, path: tuple[Any, ...]) -> Any:
    escape = draw(st.sampled_from(LONE_SURROGATES))
    if isinstance(node, dict) and node and draw(st.booleans()):  # in a key of this object
        return Dup(((_string(draw, escape), 1), *node.items()))
    return _string(draw, escape)


def nul(draw: st.DrawFn, node: Any, path: tuple[Any, ...]) -> Any:
    if draw(st.integers(0, 4)) == 0:
        return Raw(b'"a\x00b"')  # a raw control character: not JSON
    text = node if isinstance(node, str) else str(node)
    at = draw(st.integers(0, len(text)))
    return text[:at] + "\x00" + text[at:]


def retype(draw: st.DrawFn, node: Any, path: tuple[Any, ...]) -> Any:
    """Numbers as strings, strings as numbers (ids, timestamps, counts)."""
    if isinstance(node, int | float) and not isinstance(node, bool):
        return draw(st.sampled_from([str(node), f" {node} ", f"{node}.0"]))
    if isinstance(node, str) and node.strip().lstrip("-").isdigit():
        digits = node.strip()
        return int(digits) if len(digits) < 400 else Raw(digits.encode())  # a huge literal
    return draw(st.integers() | st.integers().map(str))


def big_integer(draw: st.DrawFn, node: Any, path: tuple[Any, ...]) -> Any:
    return draw(st.sampled_from(BIG_INTEGERS))


def floaty(draw: st.DrawFn, node: Any, path: tuple[Any, ...]) -> Any:
    if isinstance(node, int) and not isinstance(node, bool) and abs(node) < 10**300:
        return draw(st.sampled_from([float(node), node + 0.5, node / 3]))
    return draw(st.floats(allow_nan=False, allow_infinity=False))


def not_a_number(draw: st.DrawFn, node: Any, path: tuple[Any, ...]) -> Any:
    return Raw(draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])))


def duplicate_key(draw: st.DrawFn, node: Any, path: tuple[Any, ...]) -> Any:
    if not isinstance(node, dict) or not node:
        return Dup((("k", node), ("k", draw(json_values))))
    key = draw(st.sampled_from(sorted(node)))
    extra = (key, draw(json_values))
    items = tuple(node.items())
    return Dup((extra, *items) if draw(st.booleans()) else (*items, extra))


# Weighted: the mutations that leave no JSON at all (abyss, invalid_utf8, not_a_number) are rare,
# so that most bodies keep a readable envelope around what is wrong.
MUTATIONS: list[Mutation] = [
    *[wrong_type, retype] * 3,
    *[nul, lone_surrogate, huge_string, deep, floaty, big_integer, duplicate_key] * 2,
    abyss,
    invalid_utf8,
    not_a_number,
]


def _scalar_paths(document: Any) -> list[tuple[Any, ...]]:
    return [p for p in _paths(document) if not isinstance(_at(document, p), dict | list)]


OPERATIONS = ["mutate"] * 6 + ["delete"] * 2 + ["empty"]
TYPED = (retype, big_integer, floaty, nul)  # mutations of a scalar: ids, times, counts, text


def _pick(draw: st.DrawFn, paths: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """A path, three times in four inside a change (where one change, not the body, breaks);
    deepest first, as the first choices are the likeliest."""
    inner = [p for p in paths if len(p) > 4]
    if draw(st.integers(0, 3)) and inner:
        paths = inner
    return draw(st.sampled_from(sorted(paths, key=len, reverse=True)))


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    document = draw(st.sampled_from(GOLDEN))
    for _ in range(draw(st.integers(1, 3))):
        if not isinstance(document, dict | list):
            break
        operation = draw(st.sampled_from(OPERATIONS))
        event(operation)
        paths = _paths(document)
        if operation == "empty":  # empty entry or changes arrays
            lists = [p for p in paths if p and p[-1] in ("entry", "changes")]
            if lists:
                document = _replace(document, draw(st.sampled_from(lists)), [])
        elif operation == "delete":  # a missing key or item
            if len(paths) > 1:
                document = _delete(document, _pick(draw, paths[1:]))
        else:
            mutation = draw(st.sampled_from(MUTATIONS))
            event(mutation.__name__)
            if mutation in TYPED:
                paths = _scalar_paths(document) or paths
            path = _pick(draw, paths)
            document = _replace(document, path, mutation(draw, _at(document, path), path))
    return document


mutated_bodies = mutated_documents().map(emit)
non_objects = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(BIG_INTEGERS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
    st.just(OBJECT),
    st.lists(json_values, max_size=4),
    st.sampled_from(GOLDEN).map(lambda document: [document]),
).map(emit)


# -- the accounting oracle ------------------------------------------------------------------------


def _reference_int(text: str) -> int:
    number = int(text)  # more than 4300 digits: ValueError, not JSON this reader accepts
    if abs(number) > sys.float_info.max:
        raise ValueError("integer beyond any double")
    return number


def _reference_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("number beyond any double")
    return number


def _not_json(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


MAX_DEPTH = 1024  # the nesting a JSON reader may refuse beyond (orjson's documented limit)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _depth(body: bytes) -> int:
    brackets = _STRING.sub(b"", body).translate(None, delete=bytes(set(range(256)) - set(b"[]{}")))
    return max(accumulate(1 if b in b"[{" else -1 for b in brackets), default=0)


def reference(body: bytes) -> Any:
    """The standard library's reading: the JSON grammar, strict UTF-8, finite numbers, nesting
    up to ``MAX_DEPTH``. Lone surrogate escapes are read as they are."""
    text = body.decode("utf-8")
    if _depth(body) > MAX_DEPTH:
        raise ValueError("nested too deep")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * MAX_DEPTH))
    try:
        return json.loads(
            text, parse_int=_reference_int, parse_float=_reference_float, parse_constant=_not_json
        )
    finally:
        sys.setrecursionlimit(limit)


def same(a: Any, b: Any) -> bool:
    """JSON equality; an integer read as a float by one reader equals its rounding."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b or float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def assert_accounted(body: bytes, parsed: ParsedBody) -> None:
    """Every change of the body is a typed event, a counted message change, or broken."""
    paths = [b.path for b in parsed.broken]
    assert len(paths) == len(set(paths)), paths
    for e in parsed.events:
        assert len(e.dedupe_key) == 64
    assert len({e.dedupe_key for e in parsed.events}) == len(parsed.events)
    try:
        document = reference(body)
    except (ValueError, RecursionError):
        assert paths == [""] and not parsed.events
        return
    whole = None
    if not isinstance(document, dict):
        whole = ""
    elif document.get("object") != OBJECT:
        whole = "object"
    elif not isinstance(document.get("entry"), list):
        whole = "entry"
    if whole is not None:
        assert paths == [whole] and not parsed.events and not parsed.changes
        return

    must: set[str] = set()  # what cannot be read: broken, always
    may: set[str] = set()  # changes whose decoding may fail
    counted: Counter[str] = Counter()
    items: Counter[str] = Counter()
    wanted: list[tuple[str, str, Any]] = []  # (path, field, value) an event must carry
    may_items: set[str] = set()  # messages changes, whose items may be broken one by one
    for e_index, entry in enumerate(document["entry"]):
        path = f"entry[{e_index}]"
        if not isinstance(entry, dict):
            must.add(path)
            continue
        changes = entry.get("changes")
        if not isinstance(changes, list):
            must.add(f"{path}.changes")
            continue
        for c_index, change in enumerate(changes):
            change_path = f"{path}.changes[{c_index}]"
            name = change.get("field") if isinstance(change, dict) else None
            value = change.get("value") if isinstance(change, dict) else None
            readable = isinstance(name, str) and name and name.isprintable()
            if not readable or not isinstance(value, dict):
                must.add(change_path)
                continue
            assert isinstance(name, str)
            counted[name] += 1
            may.add(change_path)
            if name.strip() == "messages":
                lists = ("messages", "statuses", "errors")
                if change_path not in paths:
                    items[name] += sum(len(v) for k in lists if isinstance(v := value.get(k), list))
                may_items.add(change_path)  # an unreadable message or status is broken alone
                errors = value.get("errors")
                for index, error in enumerate(errors if isinstance(errors, list) else []):
                    if isinstance(error, dict):
                        wanted.append((change_path, "messages", error))
                    else:
                        must.add(f"{change_path}.errors[{index}]")
            elif name.strip() == "user_preferences":
                prefs = value.get("user_preferences")
                if not isinstance(prefs, list):
                    must.add(change_path)
                    continue
                wanted += [(change_path, "user_preferences", item) for item in prefs]
            else:
                wanted.append((change_path, name, value))

    item_paths = {p for p in paths if any(p.startswith(f"{c}.") for c in may_items)}
    assert must <= set(paths) <= must | may | item_paths, (sorted(must), paths)
    assert dict(parsed.changes) == dict(counted)
    for name, count in items.items():
        assert parsed.items.get(name, 0) == count, name
    live = [(name, value) for path, name, value in wanted if path not in paths]
    for name, value in live:  # nothing readable was dropped...
        assert any(e.field_name == name and same(e.value, value) for e in parsed.events), name
    for e in parsed.events:  # ...and nothing was invented
        assert any(e.field_name == n and same(e.value, v) for n, v in live), e


# -- the parser alone ---------------------------------------------------------------------------


@fuzz_settings(250)
@given(mutated_bodies)
def test_mutated_payloads_never_raise_and_lose_nothing(body: bytes) -> None:
    parsed = parse_body(body)
    assert_accounted(body, parsed)
    whole = any(b.path in ("", "object", "entry") for b in parsed.broken)
    event("body broken" if whole else "changes broken" if parsed.broken else "all read")
    event("with events" if parsed.events else "no events")


@fuzz_settings(60)
@given(non_objects)
def test_valid_json_that_is_not_an_object_is_one_broken_item(body: bytes) -> None:
    parsed = parse_body(body)
    assert [b.path for b in parsed.broken] == [""] and not parsed.events


@fuzz_settings(200)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_quarantined_not_raised(body: bytes) -> None:
    assert_accounted(body, parse_body(body))


def _golden(name: str) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(webhook(name))
    return document


def _body(name: str, path: tuple[Any, ...], new: Any) -> bytes:
    return emit(_replace(_golden(name), path, new))


STATUS = "message_template_status_update/approved.json"
PAUSED = "message_template_status_update/paused_first_pause.json"
MIXED = "batching/multi_waba_mixed_fields.json"
INBOUND = "messages/inbound_text.json"
CAPABILITY = "business_capability_update/v24_int_2000.json"
VALUE = ("entry", 0, "changes", 0, "value")
NAME = "message_template_name"
CHANGE0 = ("entry", 0, "changes", 0)


def _edge_bodies() -> dict[str, bytes]:
    deepest = 100_000
    status = _golden(STATUS)
    value = _at(status, VALUE)
    bodies = {
        "abyss_of_arrays": _body(STATUS, (*VALUE, "x"), Raw(b"[" * deepest + b"]" * deepest)),
        "abyss_of_objects": _body(
            STATUS, (*VALUE, "x"), Raw(b'{"a":' * deepest + b"1" + b"}" * deepest)
        ),
        "whole_body_abyss": b"[" * deepest + b"]" * deepest,
        "deep_200_in_a_value": _body(STATUS, (*VALUE, "x"), _nest(200, 1, "mixed")),
        "deep_300_in_a_value": _body(MIXED, (*VALUE, "x"), _nest(300, 1, "list")),
        "object_nested_1000_deep": b'{"object":' + b"[" * 1000 + b"]" * 1000 + b',"entry":[]}',
        "lone_surrogate_in_one_change": _body(MIXED, (*VALUE, "note"), Raw(b'"\\ud800"')),
        "lone_surrogate_in_a_message": _body(
            INBOUND, (*VALUE, "messages", 0, "text", "body"), Raw(b'"hi \\ud83d"')
        ),
        "lone_surrogate_field_name": _body(MIXED, (*CHANGE0, "field"), Raw(b'"x\\udc00"')),
        "invalid_utf8_in_a_string": _body(STATUS, (*VALUE, "event"), Raw(b'"\xed\xa0\x80"')),
        "raw_nul_byte": _body(STATUS, (*VALUE, "event"), Raw(b'"A\x00"')),
        "nul_in_template_name": _body(
            STATUS, VALUE, {**value, "message_template_id": 7, NAME: "a\x00b"}
        ),
        "nul_in_language": _body(STATUS, (*VALUE, "message_template_language"), "en\x00US"),
        "nul_in_field_name": _body(MIXED, (*CHANGE0, "field"), "account_update\x00"),
        "nul_in_unknown_event": _body(
            STATUS, CHANGE0, {"field": "some_future_field", "value": {"event": "E\x00"}}
        ),
        "megabyte_template_name": _body(STATUS, (*VALUE, "message_template_name"), "n" * 2**20),
        "huge_language": _body(STATUS, (*VALUE, "message_template_language"), "e" * 200_000),
        "huge_field_name": _body(STATUS, (*CHANGE0, "field"), "f" * 300_000),
        "huge_object_value": emit({"object": "o" * 500_000, "entry": []}),
        "ids_and_times_as_strings": _body(
            STATUS,
            ("entry", 0),
            {**status["entry"][0], "id": "102290129340398", "time": "1751247548"},
        ),
        "template_id_as_float": _body(
            STATUS, (*VALUE, "message_template_id"), 1.689556908129832e15
        ),
        "template_id_beyond_64_bits": _body(STATUS, (*VALUE, "message_template_id"), 2**64),
        "entry_id_beyond_64_bits": _body(STATUS, ("entry", 0, "id"), 10**30),
        "time_beyond_64_bits": _body(STATUS, ("entry", 0, "time"), 2**70),
        "time_in_year_9999": _body(PAUSED, ("entry", 0, "time"), "9999-12-31T23:00:00Z"),
        "time_in_year_1": _body(PAUSED, ("entry", 0, "time"), "0001-01-01T00:00:00Z"),
        "phone_count_beyond_32_bits": _body(
            CAPABILITY, (*VALUE, "max_phone_numbers_per_waba"), 3_000_000_000
        ),
        "phone_count_beyond_64_bits": _body(
            CAPABILITY, (*VALUE, "max_phone_numbers_per_waba"), "9" * 40
        ),
        "phone_count_superscript": _body(CAPABILITY, (*VALUE, "max_phone_numbers_per_waba"), "²"),
        "duplicate_object_key": emit(Dup((("object", "x"), *status.items()))),
        "duplicate_changes_key": _body(
            STATUS, ("entry", 0), Dup((*status["entry"][0].items(), ("changes", 5)))
        ),
        "empty_entry": emit({"object": OBJECT, "entry": []}),
        "empty_changes": _body(STATUS, ("entry", 0, "changes"), []),
        "non_finite_number": _body(STATUS, ("entry", 0, "time"), Raw(b"1e999")),
        "byte_order_mark": b"\xef\xbb\xbf" + webhook(STATUS),
    }
    for literal in (b"[]", b"null", b'"whatsapp_business_account"', b"42", b"true", b"[{}]"):
        bodies[f"not_an_object_{literal.decode()}"] = literal
    return bodies


EDGE_BODIES = _edge_bodies()


@pytest.mark.parametrize("name", sorted(EDGE_BODIES))
def test_edge_bodies_are_accounted_for(name: str) -> None:
    assert_accounted(EDGE_BODIES[name], parse_body(EDGE_BODIES[name]))


def test_a_lone_surrogate_costs_only_its_own_change() -> None:
    whole = parse_body(webhook(MIXED))
    parsed = parse_body(EDGE_BODIES["lone_surrogate_in_one_change"])
    assert [b.path for b in parsed.broken] == ["entry[0].changes[0]"]
    assert len(parsed.events) == len(whole.events) - 1
    message = parse_body(EDGE_BODIES["lone_surrogate_in_a_message"])
    assert not message.broken and message.items == {"messages": 1}


# -- processing on a real database ------------------------------------------------------------


def _process(db: Database, bodies: list[bytes]) -> list[int]:
    raw = schema.raw_webhooks
    with db.read() as conn:
        before = conn.execute(select(func.coalesce(func.max(raw.c.id), 0))).scalar_one()
    with db.write(priority=True) as conn:
        inbox.insert_bodies(conn, [inbox.Body(body, NOW) for body in bodies])
    Processor(db, clock=lambda: NOW, tracker=Tracker(db)).drain()  # never raises
    with db.read() as conn:
        rows = conn.execute(select(raw).where(raw.c.id > before).order_by(raw.c.id)).all()
    assert [bytes(r.body) for r in rows] == bodies  # every body kept, byte for byte
    assert {r.status for r in rows} == {RawStatus.PROCESSED.value}
    assert inbox.counts(db)["pending"] == 0
    return [r.id for r in rows]


def assert_quarantined(db: Database, raw_id: int, body: bytes) -> None:
    """The body's unreadable parts, exactly as the parser reports them, point at the body."""
    q = schema.quarantine
    with db.read() as conn:
        rows = conn.execute(
            select(q.c.path, q.c.field, q.c.error).where(q.c.raw_id == raw_id).order_by(q.c.id)
        ).all()
    expected = [
        (b.path[:128], b.field[:64] if b.field else None, b.error[:2000])
        for b in parse_body(body).broken
    ]
    assert [tuple(r) for r in rows] == expected  # and never "internal error while processing"


@fuzz_settings(40, HealthCheck.function_scoped_fixture)
@given(st.lists(mutated_bodies, min_size=1, max_size=3))
def test_processing_keeps_every_body_and_quarantines_the_unreadable(
    db: Database, bodies: list[bytes]
) -> None:
    for raw_id, body in zip(_process(db, bodies), bodies, strict=True):
        assert_quarantined(db, raw_id, body)


def test_edge_bodies_are_processed_and_quarantined(db: Database) -> None:
    bodies = [EDGE_BODIES[name] for name in sorted(EDGE_BODIES)]
    for raw_id, body in zip(_process(db, bodies), bodies, strict=True):
        assert_quarantined(db, raw_id, body)
    events = schema.events
    with db.read() as conn:
        kinds = set(conn.execute(select(events.c.kind)).scalars())
        template = conn.execute(select(schema.templates).where(schema.templates.c.id == "7")).one()
    assert "UNKNOWN" in kinds and template.name == "a\ufffdb"  # NUL replaced, the rest kept


def test_nul_in_alert_fields_is_processed(db: Database) -> None:
    """Event rules render raw values into alert text: NUL must not reach PostgreSQL's text."""
    name = "account_alerts/business_critical_increased_capabilities_failed.json"
    alert = _at(_golden(name), VALUE)
    info = {k: f"{v}\x00" for k, v in alert["alert_info"].items() if k != "alert_severity"}
    value = {**alert, "entity_id": "5\x006", "alert_info": {**alert["alert_info"], **info}}
    violation = "account_update/account_violation.json"
    bodies = [
        _body(name, VALUE, value),
        _body(violation, (*VALUE, "violation_info", "violation_type"), "\x00X"),
    ]
    for raw_id, body in zip(_process(db, bodies), bodies, strict=True):
        assert_quarantined(db, raw_id, body)
    with db.read() as conn:
        alerts = conn.execute(select(schema.alerts.c.rule, schema.alerts.c.summary)).all()
    assert {rule for rule, _ in alerts} == {"account_alert_critical", "account_violation"}
