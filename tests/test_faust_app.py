"""The Faust worker's names and choices that operators see (streams/faust_app.py); the worker itself runs in
tests/test_scaled_e2e.py."""

from __future__ import annotations

import pytest

from schemas.settings import Settings
from streams import families
from streams.faust_app import group_id, served_families


def test_workers_serving_every_family_share_one_group_however_they_say_it() -> None:
    """No --families and all six listed, in any order, are the same consumer group (before, the default was
    named after the families in declaration order and a full list after them sorted: two groups that each
    projected everything)."""
    every = ",".join(reversed(families.FAMILIES))
    assert group_id(Settings(topic_prefix="tally")) == "tally-views"
    assert group_id(Settings(topic_prefix="tally", stream_families=every)) == "tally-views"


def test_a_subset_of_families_is_a_group_of_its_own() -> None:
    assert group_id(Settings(topic_prefix="p", stream_families="votes, blocks")) == "p-views-blocks+votes"
    assert group_id(Settings(topic_prefix="p", stream_families="blocks,votes")) == "p-views-blocks+votes"
    assert group_id(Settings(topic_prefix="p", stream_group_suffix="gen2")) == "p-views-gen2"


def test_unknown_families_are_refused_by_name() -> None:
    assert served_families(Settings(stream_families=" votes ,votes")) == ["votes"]
    with pytest.raises(ValueError, match="no such families \\['block'\\]"):
        served_families(Settings(stream_families="block,votes"))
