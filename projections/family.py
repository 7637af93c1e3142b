"""The parts of the domain that add their own read tables (validators, bridge reserves) plug into the pure
projection here, so that `project` stays the one function every path calls (embedded follower, Faust workers,
replay).

A family names its tables (column order = its DDL's, `position` last) and projects: the genesis, a block summary
(schemas/events.py) put on the canonical chain or (`reverted`) taken off it, and its own event kinds. Like every
projector it is pure, and a revert must leave its views as if the block had never been applied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Row = tuple[Any, ...]
Rows = dict[str, list[Row]]


def _nothing(*_: Any) -> Rows:
    return {}


@dataclass(frozen=True)
class Family:
    name: str
    columns: dict[str, tuple[str, ...]]
    genesis: Callable[[int, Any], Rows] = _nothing
    block: Callable[[int, Mapping[str, Any], bool], Rows] = _nothing
    events: dict[str, Callable[[int, Any], Rows]] = field(default_factory=dict)


def merge_rows(into: Rows, more: Rows) -> Rows:
    for table, rows in more.items():
        into.setdefault(table, []).extend(rows)
    return into


def families() -> tuple[Family, ...]:
    """Every family, in a fixed order (their tables are written in this order, before `chain_head`)."""
    from projections import bridge, validators

    return (validators.FAMILY, bridge.FAMILY)
