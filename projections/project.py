"""Pure projection: `project(position, event) -> {table: [row, ...]}`. No I/O.

A row is a tuple in the column order of `COLUMNS[table]` (the DDL's order, `position` last), ready for a
columnar insert. The same (position, event) always gives the same rows, and every row names the position of
the event that made it, so the sink can write a batch and its checkpoint and a replay changes nothing.

Forks stay append-only (schemas/events.py, Forks): every block event writes a `blocks` row, and a block's
latest row by position says whether it is canonical. BlockApplied and BlockReapplied write the same rows (a
canonical block, its txs and receipts, its balance deltas and flows, the head moved up to it); BlockReverted
writes them again with every tx 'reverted' (original reason kept) and every delta and flow negated;
BlockRecorded writes only a non-canonical `blocks` row (a block never canonical has no receipts);
ChainReorganized writes a `reorgs` row and moves the head down to the common ancestor. So at every position,
the rows at heights up to the head are the canonical chain, and a balance is still a plain sum of deltas.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from projections.family import Family, Row, Rows, merge_rows
from projections.family import families as _families
from schemas.canonical import EMPTY_ROOT, ZERO_HASH
from schemas.events import (
    TX_SUMMARY_FIELDS,
    BlockApplied,
    BlockFinalized,
    BlockReapplied,
    BlockRecorded,
    BlockReverted,
    ChainReorganized,
    GenesisAccepted,
    LedgerEvent,
    VoteAccepted,
    block_summary,
)

# Column order of every table, as schemas/clickhouse/*.sql create them. The order of this mapping is
# the sink's write order: `chain_head` comes last, so a reader that sees a head sees every row up to it.
_CORE_COLUMNS: dict[str, tuple[str, ...]] = {
    "chains": ("chain_id", "genesis_hash", "timestamp_ms", "params", "position"),
    "blocks": (
        "chain_id", "height", "hash", "parent", "proposer", "operator", "timestamp_ms", "tx_root",
        "tx_count", "applied_count", "rejected_count", "reward", "fees", "canonical", "position",
    ),
    "transactions": (
        "chain_id", "height", "tx_index", "block_hash", "tx_id", "kind", "signer", "from_address",
        "to_address", "asset", "amount", "fee", "nonce", "status", "reason", "position",
    ),
    "receipts": ("tx_id", "chain_id", "height", "tx_index", "block_hash", "status", "reason", "position"),
    "account_txs": (
        "chain_id", "address", "height", "tx_index", "block_hash", "tx_id", "kind", "signer", "from_address",
        "to_address", "asset", "amount", "fee", "nonce", "status", "reason", "position",
    ),
    "balance_deltas": ("chain_id", "address", "asset", "height", "delta", "position"),
    "votes": ("chain_id", "height", "block_hash", "node_id", "position"),
    "finality": (
        "chain_id", "height", "hash", "head_height", "head_timestamp_ms", "voting_stake", "total_stake",
        "position",
    ),
    "asset_flows": ("chain_id", "height", "asset", "minted", "burned", "volume", "fees", "position"),
    "reorgs": (
        "chain_id", "cause", "depth", "ancestor_height", "ancestor_hash", "old_tip_height", "old_tip_hash",
        "new_tip_height", "new_tip_hash", "reverted", "applied", "position",
    ),
    "projection_errors": ("chain_id", "topic", "error", "position"),
}
_HEAD_COLUMNS = {"chain_head": ("chain_id", "kind", "height", "hash", "timestamp_ms", "position")}
FAMILIES: tuple[Family, ...] = _families()
COLUMNS: dict[str, tuple[str, ...]] = {
    **_CORE_COLUMNS,
    **{table: columns for family in FAMILIES for table, columns in family.columns.items()},
    **_HEAD_COLUMNS,
}

NATIVE_ASSET = "CELL"
# The account's next nonce rides in balance_deltas under this key: no asset symbol starts with '#'.
NONCE_KEY = "#nonce"
HEAD, FINALIZED = "head", "finalized"
APPLIED, REJECTED, REVERTED = "applied", "rejected", "reverted"
_TX = {name: i for i, name in enumerate(TX_SUMMARY_FIELDS)}
ERROR_TEXT_MAX = 2_000  # an error row keeps the start of the message: enough to diagnose, bounded in size


def project(position: int, event: LedgerEvent) -> Rows:
    """Rows of one event. Raises KeyError for an event kind no projector knows (the caller records it)."""
    return _PROJECTORS[event.KIND](position, event)


def _with_families(rows: Rows, more: list[Rows]) -> Rows:
    for extra in more:
        merge_rows(rows, extra)
    return rows


def project_error(position: int, topic: str, error: str, chain_id: str = "") -> Rows:
    """The row recording an event that could not be decoded or projected."""
    return {"projection_errors": [(chain_id, topic, error[:ERROR_TEXT_MAX], position)]}


def _genesis(position: int, e: GenesisAccepted) -> Rows:
    return _with_families(_genesis_rows(position, e), [f.genesis(position, e) for f in FAMILIES])


def _genesis_rows(position: int, e: GenesisAccepted) -> Rows:
    c, ts = e.chain_id, e.timestamp_ms
    stakes = sum(v["stake"] for v in e.validators)
    allocated = sum(amount for _, amount in e.allocations)
    params = json.dumps(e.params, sort_keys=True, separators=(",", ":"))
    return {
        "chains": [(c, e.block_hash, ts, params, position)],
        "blocks": [(c, 0, e.block_hash, ZERO_HASH, "", "", ts, EMPTY_ROOT, 0, 0, 0, 0, 0, 1, position)],
        "balance_deltas": [(c, a, NATIVE_ASSET, 0, amount, position) for a, amount in e.allocations if amount],
        # Genesis stakes are minted as bonded stake, so they count in supply but in no balance.
        "asset_flows": [(c, 0, NATIVE_ASSET, allocated + stakes, 0, 0, 0, position)],
        # The genesis block is final by definition, with all of the genesis stake behind it.
        "finality": [(c, 0, e.block_hash, 0, ts, stakes, stakes, position)],
        "chain_head": [(c, HEAD, 0, e.block_hash, ts, position), (c, FINALIZED, 0, e.block_hash, ts, position)],
    }


def _applied(position: int, e: BlockApplied | BlockReapplied) -> Rows:
    """A block put on the canonical chain: by extending it, or by a reorganization (the same rows)."""
    b = block_summary(e)
    return _with_families(_block_rows(position, b, reverted=False), [f.block(position, b, False) for f in FAMILIES])


def _reverted(position: int, e: BlockReverted) -> Rows:
    b = block_summary(e)
    return _with_families(_block_rows(position, b, reverted=True), [f.block(position, b, True) for f in FAMILIES])


def _recorded(position: int, e: BlockRecorded) -> Rows:
    """A side block: recorded, not canonical, and without receipts (it was never canonical)."""
    return {"blocks": [_block_row(position, block_summary(e), canonical=False)]}


def _block_row(position: int, b: Mapping[str, Any], *, canonical: bool) -> Row:
    # The counts are the block's own receipts, as computed on its branch when it was accepted.
    applied = sum(status == APPLIED for status, _ in b["receipts"])
    fx = b["effects"]
    return (
        b["chain_id"], b["height"], b["block_hash"], b["parent"], b["proposer"], b["operator"], b["timestamp_ms"],
        b["tx_root"], len(b["txs"]), applied, len(b["txs"]) - applied, fx["reward"], fx["fees"], int(canonical),
        position,
    )


def _block_rows(position: int, b: Mapping[str, Any], *, reverted: bool) -> Rows:
    """Rows of a block summary put on the canonical chain, or (`reverted`) taken off it."""
    c, h, bh = b["chain_id"], b["height"], b["block_hash"]
    fx = b["effects"]
    sign = -1 if reverted else 1
    transactions, receipts, account_txs = [], [], []
    for i, (tx, tx_id, (status, reason)) in enumerate(zip(b["txs"], b["tx_ids"], b["receipts"], strict=True)):
        status = REVERTED if reverted else status  # a reverted receipt keeps its original reason
        signer, sender, to = tx[_TX["signer"]], tx[_TX["from"]], tx[_TX["to"]]
        fields = (
            tx_id, tx[_TX["kind"]], signer, sender, to, tx[_TX["asset"]], tx[_TX["amount"]], tx[_TX["fee"]],
            tx[_TX["nonce"]], status, reason, position,
        )
        transactions.append((c, h, i, bh, *fields))
        receipts.append((tx_id, c, h, i, bh, status, reason, position))
        # One row per distinct party, in a fixed order so that the rows are deterministic.
        for address in dict.fromkeys((signer, sender, to)):
            if address:
                account_txs.append((c, address, h, i, bh, *fields))
    rows = {
        "blocks": [_block_row(position, b, canonical=not reverted)],
        "transactions": transactions,
        "receipts": receipts,
        "account_txs": account_txs,
        # effects.balances is the block's complete net change (txs, reward and fees, releases), so a balance
        # is a plain sum and a revert is the same rows negated; likewise the nonces, as after - before.
        "balance_deltas": [(c, a, asset, h, sign * delta, position) for a, asset, delta in fx["balances"]]
        + [
            (c, a, NONCE_KEY, h, sign * (after - before), position)
            for a, before, after in fx["nonces"]
            if after != before
        ],
        "asset_flows": _flows(c, h, fx, position, sign),
    }
    # A revert leaves the head where the reorganization put it (the common ancestor).
    if not reverted:
        rows["chain_head"] = [(c, HEAD, h, bh, b["timestamp_ms"], position)]
    return rows


def _flows(c: str, h: int, fx: Mapping[str, Any], position: int, sign: int = 1) -> list[Row]:
    """One row per asset the block moved; CELL always (the reward is minted even in an empty block)."""
    volume = {asset: amount for asset, amount in fx["volume"]}
    cell = (fx["minted"], fx["burned"], volume.pop(NATIVE_ASSET, 0), fx["fees"])
    rows = [(c, h, NATIVE_ASSET, *(sign * x for x in cell), position)]
    rows += [(c, h, asset, 0, 0, sign * amount, 0, position) for asset, amount in sorted(volume.items())]
    return rows


def _reorganized(position: int, e: ChainReorganized) -> Rows:
    c = e.chain_id
    (old_height, old_hash), (new_height, new_hash) = e.old_tip, e.new_tip
    return {
        "reorgs": [(
            c, e.cause, e.depth, e.ancestor_height, e.ancestor_hash, old_height, old_hash, new_height, new_hash,
            [h for _, h in e.reverted], [h for _, h in e.applied], position,
        )],
        # Down to the common ancestor: the reverts that follow are above it, and each block put on the
        # canonical chain afterwards moves the head up again.
        "chain_head": [(c, HEAD, e.ancestor_height, e.ancestor_hash, e.ancestor_timestamp_ms, position)],
    }


def _vote(position: int, e: VoteAccepted) -> Rows:
    return {"votes": [(e.chain_id, e.height, e.block_hash, e.node_id, position)]}


def _finalized(position: int, e: BlockFinalized) -> Rows:
    c = e.chain_id
    rows = [
        (c, height, hash_, e.head_height, e.head_timestamp_ms, e.voting_stake, e.total_stake, position)
        for height, hash_ in e.finalized
    ]
    # The event does not carry the finalized block's timestamp; readers take it from `blocks`.
    newest_height, newest_hash = e.finalized[-1]
    return {"finality": rows, "chain_head": [(c, FINALIZED, newest_height, newest_hash, 0, position)]}


_PROJECTORS: dict[str, Callable[[int, Any], Rows]] = {
    GenesisAccepted.KIND: _genesis,
    BlockApplied.KIND: _applied,
    BlockRecorded.KIND: _recorded,
    ChainReorganized.KIND: _reorganized,
    BlockReverted.KIND: _reverted,
    BlockReapplied.KIND: _applied,
    VoteAccepted.KIND: _vote,
    BlockFinalized.KIND: _finalized,
    **{kind: projector for family in FAMILIES for kind, projector in family.events.items()},
}
