"""Pure projection: `project(position, event) -> {table: [row, ...]}`. No I/O.

A row is a tuple in the column order of `COLUMNS[table]` (the DDL's order, `position` last), ready for a
columnar insert. The same (position, event) always gives the same rows, and every row names the position of
the event that made it, so the sink can write a batch and its checkpoint and a replay changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from schemas.canonical import EMPTY_ROOT, ZERO_HASH
from schemas.events import BlockApplied, BlockFinalized, GenesisAccepted, LedgerEvent, VoteAccepted

Row = tuple[Any, ...]
Rows = dict[str, list[Row]]

# Column order of every table, as schemas/clickhouse/001_core.sql creates them. The order of this mapping is
# the sink's write order: `chain_head` comes last, so a reader that sees a head sees every row up to it.
COLUMNS: dict[str, tuple[str, ...]] = {
    "chains": ("chain_id", "genesis_hash", "timestamp_ms", "params", "position"),
    "blocks": (
        "chain_id", "height", "hash", "parent", "proposer", "operator", "timestamp_ms", "tx_root",
        "tx_count", "applied_count", "rejected_count", "reward", "fees", "position",
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
    "projection_errors": ("chain_id", "topic", "error", "position"),
    "chain_head": ("chain_id", "kind", "height", "hash", "timestamp_ms", "position"),
}

NATIVE_ASSET = "CELL"
# The account's next nonce rides in balance_deltas under this key: no asset symbol starts with '#'.
NONCE_KEY = "#nonce"
HEAD, FINALIZED = "head", "finalized"
ERROR_TEXT_MAX = 2_000  # an error row keeps the start of the message: enough to diagnose, bounded in size


def project(position: int, event: LedgerEvent) -> Rows:
    """Rows of one event. Raises KeyError for an event kind no projector knows (the caller records it)."""
    return _PROJECTORS[event.KIND](position, event)


def project_error(position: int, topic: str, error: str, chain_id: str = "") -> Rows:
    """The row recording an event that could not be decoded or projected."""
    return {"projection_errors": [(chain_id, topic, error[:ERROR_TEXT_MAX], position)]}


def _genesis(position: int, e: GenesisAccepted) -> Rows:
    c, ts = e.chain_id, e.timestamp_ms
    stakes = sum(v["stake"] for v in e.validators)
    allocated = sum(amount for _, amount in e.allocations)
    params = json.dumps(e.params, sort_keys=True, separators=(",", ":"))
    return {
        "chains": [(c, e.block_hash, ts, params, position)],
        "blocks": [(c, 0, e.block_hash, ZERO_HASH, "", "", ts, EMPTY_ROOT, 0, 0, 0, 0, 0, position)],
        "balance_deltas": [(c, a, NATIVE_ASSET, 0, amount, position) for a, amount in e.allocations if amount],
        # Genesis stakes are minted as bonded stake, so they count in supply but in no balance.
        "asset_flows": [(c, 0, NATIVE_ASSET, allocated + stakes, 0, 0, 0, position)],
        # The genesis block is final by definition, with all of the genesis stake behind it.
        "finality": [(c, 0, e.block_hash, 0, ts, stakes, stakes, position)],
        "chain_head": [(c, HEAD, 0, e.block_hash, ts, position), (c, FINALIZED, 0, e.block_hash, ts, position)],
    }


def _block(position: int, e: BlockApplied) -> Rows:
    c, h, bh = e.chain_id, e.height, e.block_hash
    fx = e.effects
    txs: Sequence[Mapping[str, Any]] = e.block["txs"]
    transactions, receipts, account_txs = [], [], []
    applied = 0
    for i, (tx, tx_id, (status, reason)) in enumerate(zip(txs, e.tx_ids, e.receipts, strict=True)):
        applied += status == "applied"
        signer, sender, to = tx["signer"], _sender(tx), tx.get("to", "")
        fields = (
            tx_id, tx["kind"], signer, sender, to, _asset(tx), _amount(tx), tx.get("fee", 0), tx.get("nonce"),
            status, reason, position,
        )
        transactions.append((c, h, i, bh, *fields))
        receipts.append((tx_id, c, h, i, bh, status, reason, position))
        # One row per distinct party, in a fixed order so that the rows are deterministic.
        for address in dict.fromkeys((signer, sender, to)):
            if address:
                account_txs.append((c, address, h, i, bh, *fields))
    return {
        "blocks": [(
            c, h, bh, e.parent, e.proposer, e.operator, e.timestamp_ms, e.block["tx_root"], len(txs), applied,
            len(txs) - applied, fx["reward"], fx["fees"], position,
        )],
        "transactions": transactions,
        "receipts": receipts,
        "account_txs": account_txs,
        # effects.balances is the block's complete net change (txs, reward and fees, releases), so a balance
        # is a plain sum and a revert is the same rows negated; likewise the nonces, as after - before.
        "balance_deltas": [(c, a, asset, h, delta, position) for a, asset, delta in fx["balances"]]
        + [(c, a, NONCE_KEY, h, after - before, position) for a, before, after in fx["nonces"] if after != before],
        "asset_flows": _flows(c, h, fx, position),
        "chain_head": [(c, HEAD, h, bh, e.timestamp_ms, position)],
    }


def _sender(tx: Mapping[str, Any]) -> str:
    """The account that pays: `from` for a transfer; the signer (operator, reporter, owner, ...) otherwise."""
    return str(tx.get("from", tx["signer"]))


def _asset(tx: Mapping[str, Any]) -> str:
    if "asset" in tx:
        return str(tx["asset"])
    return NATIVE_ASSET if "stake" in tx else ""


def _amount(tx: Mapping[str, Any]) -> int:
    return int(tx.get("amount", tx.get("stake", 0)))


def _flows(c: str, h: int, fx: Mapping[str, Any], position: int) -> list[Row]:
    """One row per asset the block moved; CELL always (the reward is minted even in an empty block)."""
    volume = {asset: amount for asset, amount in fx["volume"]}
    rows = [(c, h, NATIVE_ASSET, fx["minted"], fx["burned"], volume.pop(NATIVE_ASSET, 0), fx["fees"], position)]
    rows += [(c, h, asset, 0, 0, amount, 0, position) for asset, amount in sorted(volume.items())]
    return rows


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
    BlockApplied.KIND: _block,
    VoteAccepted.KIND: _vote,
    BlockFinalized.KIND: _finalized,
}
