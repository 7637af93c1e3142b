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
                   (the canonical head once the command's events are applied)

Forks (DOMAIN.md, Forks and reorgs). A valid block that extends the canonical tip is a BlockApplied. A valid
block on a side branch that does not become canonical is a BlockRecorded: same payload as BlockApplied, its
receipts and effects computed on its own branch's state, and no effect on the canonical state. When a branch
becomes canonical (it grew longer, or a block on it was finalized), one command's events are, in this order:

ChainReorganized   chain_id, cause ("longer_branch" | "finality"), ancestor_height, ancestor_hash,
                   ancestor_timestamp_ms (the newest block both branches share), old_tip [height, hash],
                   new_tip [height, hash], depth (number of blocks reverted), reverted [[height, hash], ...]
                   (newest first), applied [[height, hash], ...] (oldest first, the new block included
                   when it caused the reorganization)
BlockReverted      one per reverted canonical block, newest first: the block's summary (below)
BlockReapplied     one per recorded side block that becomes canonical, oldest first: the block's summary
BlockApplied       the new block, when it is what made its branch canonical
BlockFinalized     when the reorganization was caused by finality

ReservesAttested   chain_id, asset, height, block_hash (a final block), scheme ("tally-por-v1"), root (hex),
                   total (sum of balances: the tree's root sum), pending, liabilities (total + pending),
                   deposited, withdrawn, escrow (deposited - withdrawn), ratio (escrow / liabilities, decimal
                   string, 6 digits, truncated; None when liabilities are 0), leaf_count (padded to a power of
                   two), cause ("schedule": finality passed a multiple of the attestation period | "request")
                   Follows the BlockFinalized that made `height` final, one per bridged asset existing there.

A block's summary is what the views need without the signatures: chain_id, block_hash, height, parent,
proposer, operator, timestamp_ms, tx_root, txs [[kind, signer, from, to, asset, amount, fee, nonce], ...]
(`tx_summary`: from is the paying account, to/asset "" and amount/fee 0 when the kind has none, nonce None
when it has none), tx_ids, receipts, effects, exactly as recorded when the block was first accepted. A revert
undoes `effects`; a reapply redoes them.

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
    """A valid block that extends the canonical chain."""

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


class BlockRecorded(LedgerEvent):
    """A valid block on a side branch: recorded, not canonical (its receipts and effects are its branch's)."""

    KIND = "block_recorded"
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


class ChainReorganized(LedgerEvent):
    KIND = "chain_reorganized"
    cause: str
    ancestor_height: int
    ancestor_hash: str
    ancestor_timestamp_ms: int
    old_tip: list[Any]
    new_tip: list[Any]
    depth: int
    reverted: list[list[Any]]
    applied: list[list[Any]]


class _BlockSummaryEvent(LedgerEvent):
    block_hash: str
    height: int
    parent: str
    proposer: str
    operator: str
    timestamp_ms: int
    tx_root: str
    txs: list[list[Any]]
    tx_ids: list[str]
    receipts: list[list[str]]
    effects: dict[str, Any]


class BlockReverted(_BlockSummaryEvent):
    """A canonical block taken off the canonical chain by a reorganization: its effects are undone."""

    KIND = "block_reverted"


class BlockReapplied(_BlockSummaryEvent):
    """A recorded side block put on the canonical chain by a reorganization: its effects are done."""

    KIND = "block_reapplied"


class ReservesAttested(LedgerEvent):
    """A proof-of-reserves attestation of one bridged asset at a final height (writes/reserves.py)."""

    KIND = "reserves_attested"
    asset: str
    height: int
    block_hash: str
    scheme: str
    root: str
    total: int
    pending: int
    liabilities: int
    deposited: int
    withdrawn: int
    escrow: int
    ratio: str | None
    leaf_count: int
    cause: str


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
    cls.KIND: cls
    for cls in (
        GenesisAccepted, BlockApplied, BlockRecorded, ChainReorganized, BlockReverted, BlockReapplied,
        VoteAccepted, BlockFinalized, ReservesAttested,
    )
}
# Events that carry a whole signed block, and events that carry a block's summary.
SIGNED_BLOCK_EVENTS = (BlockApplied, BlockRecorded)
SUMMARY_EVENTS = (BlockReverted, BlockReapplied)

# Field order of a tx summary.
TX_SUMMARY_FIELDS = ("kind", "signer", "from", "to", "asset", "amount", "fee", "nonce")

def tx_summary(tx: dict[str, Any]) -> list[Any]:
    """What the views need of a tx, in TX_SUMMARY_FIELDS order: the paying account (`from` for a transfer, the
    signer for every other kind), the counterparty, asset and amount when the kind has them (an enroll moves
    its stake in CELL), the fee, and the nonce (None for kinds without one)."""
    signer = tx["signer"]
    if "asset" in tx:
        asset, amount = str(tx["asset"]), int(tx.get("amount", 0))
    elif "stake" in tx:
        asset, amount = "CELL", int(tx["stake"])
    else:
        asset, amount = "", 0
    return [
        tx["kind"], signer, str(tx.get("from", signer)), str(tx.get("to", "")), asset, amount,
        int(tx.get("fee", 0)), tx.get("nonce"),
    ]


def block_summary(event: LedgerEvent) -> dict[str, Any]:
    """The summary payload (see the module docstring) of a BlockApplied, BlockRecorded or summary event."""
    if isinstance(event, SUMMARY_EVENTS):
        fields = {k: v for k, v in event.payload().items() if k not in ("prev_hash", "schema_version")}
        return fields
    assert isinstance(event, SIGNED_BLOCK_EVENTS), type(event).__name__
    return {
        "chain_id": event.chain_id, "block_hash": event.block_hash, "height": event.height,
        "parent": event.parent, "proposer": event.proposer, "operator": event.operator,
        "timestamp_ms": event.timestamp_ms, "tx_root": event.block["tx_root"],
        "txs": [tx_summary(tx) for tx in event.block["txs"]], "tx_ids": list(event.tx_ids),
        "receipts": [list(r) for r in event.receipts], "effects": event.effects,
    }


def event_hash(kind: str, seq: int, payload: dict[str, Any]) -> str:
    """The hash the next event records as its `prev_hash`."""
    return hash_hex(canonical_bytes({"kind": kind, "seq": seq, "data": payload}))
