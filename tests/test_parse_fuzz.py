"""Property-based: whatever authentic bytes arrive, the parser never raises and loses nothing."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import manifest, webhook
from waquality.process.parse import parse_body

GOLDEN = [
    orjson.loads(webhook(c["file"]))
    for c in manifest()
    if c["file"].endswith(".json")
    and not c["file"].startswith("broken/")
    and "large" not in c["file"]
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=50)
    | st.sampled_from(["", "TIER_2K", "-1", "NA", "en-US", "1751247548"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    document = draw(st.sampled_from(GOLDEN))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(document)))
        document = _replace(document, path, draw(json_values))
    return json.dumps(document).encode()  # the standard encoder: big integers too


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_bodies())
def test_mutated_payloads_never_raise(body: bytes) -> None:
    parsed = parse_body(body)  # never raises
    for event in parsed.events:
        assert len(event.dedupe_key) == 64


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_quarantined_not_raised(body: bytes) -> None:
    parsed = parse_body(body)
    try:
        json.loads(body)
    except ValueError:
        assert parsed.broken and parsed.broken[0].path == ""
