"""Which Kafka topic and key every event kind travels under: the one table of the scaled log's routing. Pure.

Each event goes to exactly one topic, its kind's family, so each log position is projected by exactly one
partition's consumer (streams/sink.py relies on it). The key decides the partition; Kafka keeps a partition in
order, so events under one key are consumed in log order:

- **blocks**: a chain's genesis, blocks (applied, recorded, reverted, reapplied), reorganizations and finality,
  keyed by chain. A block event carries its transactions and their effects (balances, nonces, validator and
  reserve records), so every account's and every validator's transactions on a chain are in order.
- **votes**: keyed by chain and validator, so each validator's votes are in order.
- **attestations**: proof-of-reserves attestations, keyed by chain and asset.
- **transactions**, **validators**, **bridge**: created with the others; no event kind travels there today
  (transfers, enrollments, slashes and bridge transfers are inside the block events that applied them). A kind
  added for them gets a line in `ROUTES` and a key on the account, the validator or the reserve.

A kind without a line here makes the relay refuse to start (`check_routes`) and fail loudly on the event
(`UnroutableEvent`): an event that no topic carries would be lost to every worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from schemas.events import EVENT_TYPES

FAMILIES = ("blocks", "transactions", "votes", "validators", "bridge", "attestations")
RELAY_PROGRESS = "relay"  # the relay's own progress (one partition)
DEAD_LETTER = "dead-letter"  # messages a worker could not decode


class UnroutableEvent(Exception):
    """An event kind with no family: deploy the relay and workers of the version that knows it."""


def _chain(payload: Mapping[str, Any]) -> str:
    return str(payload["chain_id"])


def _validator(payload: Mapping[str, Any]) -> str:
    return f"{payload['chain_id']}/{payload['node_id']}"


def _asset(payload: Mapping[str, Any]) -> str:
    return f"{payload['chain_id']}/{payload['asset']}"


# kind -> (family, key of its payload)
ROUTES: dict[str, tuple[str, Callable[[Mapping[str, Any]], str]]] = {
    "genesis_accepted": ("blocks", _chain),
    "block_applied": ("blocks", _chain),
    "block_recorded": ("blocks", _chain),
    "block_reverted": ("blocks", _chain),
    "block_reapplied": ("blocks", _chain),
    "chain_reorganized": ("blocks", _chain),
    "block_finalized": ("blocks", _chain),
    "vote_accepted": ("votes", _validator),
    "reserves_attested": ("attestations", _asset),
}


def check_routes(kinds: Iterable[str] = EVENT_TYPES) -> None:
    """Raises UnroutableEvent naming every kind without a family, and every family that is not a topic."""
    missing = sorted(set(kinds) - set(ROUTES))
    if missing:
        raise UnroutableEvent(f"event kinds without a family in streams/families.py: {missing}")
    strays = sorted({family for family, _ in ROUTES.values()} - set(FAMILIES))
    if strays:
        raise UnroutableEvent(f"families that are not topics: {strays}")


def route(kind: str, payload: Mapping[str, Any] | None) -> tuple[str, bytes]:
    """(family, key) of an event. `payload` None (its state could not be decoded): the family's topic with an
    empty key, so that a worker records the same projection error as the embedded follower would."""
    try:
        family, key = ROUTES[kind]
    except KeyError:
        raise UnroutableEvent(f"event kind {kind!r} has no family in streams/families.py") from None
    if payload is None:
        return family, b""
    try:
        return family, key(payload).encode("utf-8")
    except (KeyError, TypeError):
        return family, b""  # a payload without its key field: the worker's projection records why


def topic_name(prefix: str, family: str) -> str:
    return f"{prefix}.{family}"


def data_topics(prefix: str) -> list[str]:
    """The topics that carry events (each gets the relay's watermarks)."""
    return [topic_name(prefix, family) for family in FAMILIES]


def all_topics(prefix: str) -> list[str]:
    return [*data_topics(prefix), topic_name(prefix, RELAY_PROGRESS), topic_name(prefix, DEAD_LETTER)]
