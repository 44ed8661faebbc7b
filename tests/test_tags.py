"""The tags carried in biz_opaque_callback_data: compact, round-tripping, within Meta's limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waquality.domain.enums import SenderKind
from waquality.domain.tags import MAX_LENGTH, TagError, Tags, decode, encode


def test_the_documented_example() -> None:
    tags = Tags(
        SenderKind.AGENT, "order_support", "ask_address", (("split_question", "B"),), "order_update"
    )
    documented = "wq1;s=agent;j=order_support;t=ask_address;x=split_question:B;m=order_update"
    assert encode(tags) == documented
    assert decode(encode(tags)) == tags


def test_values_of_others_and_unknown_keys() -> None:
    assert decode("campaign-42") is None and decode(None) is None and decode("wq1") == Tags()
    assert decode("wq1;z=later;s=bot") == Tags(SenderKind.BOT)
    assert decode("wq1;s=robot").sender is SenderKind.UNKNOWN  # type: ignore[union-attr]


def test_too_long_is_refused() -> None:
    with pytest.raises(TagError, match="512"):
        encode(Tags(journey="j" * 600))


text = st.text(min_size=1, max_size=30)


@settings(max_examples=300, derandomize=True, database=None)
@given(
    st.sampled_from(list(SenderKind)),
    st.none() | text,
    st.none() | text,
    st.lists(st.tuples(text, text), max_size=3),
    st.none() | text,
)
def test_any_tags_round_trip(
    sender: SenderKind,
    journey: str | None,
    step: str | None,
    experiments: list[tuple[str, str]],
    template: str | None,
) -> None:
    tags = Tags(sender, journey, step, tuple(experiments), template)
    try:
        encoded = encode(tags)
    except TagError:
        return
    assert len(encoded) <= MAX_LENGTH
    assert decode(encoded) == tags
