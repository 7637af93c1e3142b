"""Ledger events: what the log records. Frozen, versioned, hash-chained.

Every event is one entry of a single totally ordered stream (one eventsourcing originator, versions 1..N),
shared by every chain the ledger serves. Each carries `prev_hash`, the hash of the event before it
(ZERO_HASH for the first), and `schema_version`. An event's own hash is `event_hash(kind, seq, payload)`:
blake3 of the canonical JSON of {"kind", "seq", "data"} where data is every payload field (prev_hash
included). The wall-clock `timestamp` eventsourcing adds is recording metadata, outside the hash.

Payload shapes (all integers exact; totals may exceed 2**63):

GenesisAccepted    chain_id, block_hash (the genesis block, height 0), genesis (as submitted),
                   params (defaults filled), timestamp_ms, allocations [[address, amount]] (merged per
                   address, CELL), validators [{node_id, operator, key, gpu_uuid, stake}],
                   relayers [{relayer_id, key}]
BlockApplied       chain_id, block_hash, height, parent, proposer, operator (the proposer's operator, who is paid),
                   timestamp_ms, block (as submitted, txs included), tx_ids [..], receipts [[status, reason]]
                   aligned with txs (reason "" when applied), effects (see below)
VoteAccepted       chain_id, node_id, height, block_hash, vote (as submitted)
BlockFinalized     chain_id, block_hash, height, voting_stake, total_stake, finalized [[height, hash], ...]
                   (every block newly final, ascending, this one last), head_height, head_timestamp_ms

BlockApplied.effects records everything the block changed, so that a block can be reverted exactly:
  balances  [[address, asset, delta]]  net change per (address, asset), first-touched order, no zeros
  nonces    [[address, before, after]] next-nonce per account before and after the block
  reward    minted block reward paid to `operator`
  fees      sum of fees of applied txs, paid to `operator`
  minted    CELL minted by the block (reward)
  burned    CELL burned by the block
  releases  [[node_id, stake]]         unbonding stakes released to their operators
  volume    [[asset, amount]]          sum of amounts of applied transfers per asset
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from eventsourcing.domain import DomainEvent

from schemas.canonical import canonical_bytes, hash_hex

SCHEMA_VERSION = 1
# The single stream of the ledger log.
LOG_ID = uuid.uuid5(uuid.NAMESPACE_URL, "tally:ledger-log")
# Fields eventsourcing adds that are not part of an event's payload.
_ENVELOPE = ("originator_id", "originator_version", "timestamp")


class LedgerEvent(DomainEvent):
    KIND: ClassVar[str] = ""
    chain_id: str
    prev_hash: str
    schema_version: int

    @property
    def seq(self) -> int:
        return self.originator_version

    def payload(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _ENVELOPE}

    def hash(self) -> str:
        return event_hash(self.KIND, self.seq, self.payload())


class GenesisAccepted(LedgerEvent):
    KIND = "genesis_accepted"
    block_hash: str
    genesis: dict[str, Any]
    params: dict[str, int]
    timestamp_ms: int
    allocations: list[list[Any]]
    validators: list[dict[str, Any]]
    relayers: list[dict[str, Any]]


class BlockApplied(LedgerEvent):
    KIND = "block_applied"
    block_hash: str
    height: int
    parent: str
    proposer: str
    operator: str
    timestamp_ms: int
    block: dict[str, Any]
    tx_ids: list[str]
    receipts: list[list[str]]
    effects: dict[str, Any]


class VoteAccepted(LedgerEvent):
    KIND = "vote_accepted"
    node_id: str
    height: int
    block_hash: str
    vote: dict[str, Any]


class BlockFinalized(LedgerEvent):
    KIND = "block_finalized"
    block_hash: str
    height: int
    voting_stake: int
    total_stake: int
    finalized: list[list[Any]]
    head_height: int
    head_timestamp_ms: int


EVENT_TYPES: dict[str, type[LedgerEvent]] = {
    cls.KIND: cls for cls in (GenesisAccepted, BlockApplied, VoteAccepted, BlockFinalized)
}


def event_hash(kind: str, seq: int, payload: dict[str, Any]) -> str:
    """The hash the next event records as its `prev_hash`."""
    return hash_hex(canonical_bytes({"kind": kind, "seq": seq, "data": payload}))
