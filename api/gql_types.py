"""GraphQL object types and the pure conversions from the read model's plain dicts.

Amounts: DOMAIN.md amounts reach 2**63 - 1 and totals go beyond, while GraphQL `Int` is 32-bit and JSON numbers
above 2**53 lose precision in JavaScript. Every amount, total, nonce, timestamp in milliseconds and log position is
therefore the custom scalar `BigInt`, serialized as a decimal string ("9223372036854775807") and accepted as a
decimal string or an integer literal. Heights, indexes and per-block counts stay `Int`.

Forks: `Block.status` is CANONICAL, FINALIZED (canonical and at or below the newest final block: it can no longer
change) or ORPHANED (recorded but not canonical: a side block, or one a reorganization took off). A `Finality`
argument picks the head that head-relative reads use: LATEST (the canonical tip, the default) or FINALIZED.

Pages: `blocks`, `transactions` and `reorgs` return a Relay-style connection, newest first:
`{ edges { cursor node { ... } } pageInfo { hasNextPage endCursor } }`. Pass `pageInfo.endCursor` as `after` to
get the next (older) page; cursors are opaque (api/cursors.py).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any, NewType

import strawberry
from graphql import IntValueNode, StringValueNode, ValueNode
from strawberry.types.scalar import ScalarDefinition

BigInt = NewType("BigInt", int)

_DECIMAL_RE = re.compile(r"-?(0|[1-9][0-9]{0,77})")


def _serialize_bigint(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"BigInt cannot represent {value!r}: not an integer")
    return str(value)


def _parse_bigint(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _DECIMAL_RE.fullmatch(value):
        return int(value)
    raise ValueError(f"BigInt must be an integer or a decimal string, got {value!r}")


def _parse_bigint_literal(node: ValueNode, _variables: dict[str, Any] | None = None) -> int:
    if isinstance(node, (IntValueNode, StringValueNode)):
        return _parse_bigint(int(node.value) if isinstance(node, IntValueNode) else node.value)
    raise ValueError("BigInt must be an integer or a decimal string literal")


BIGINT_SCALAR: ScalarDefinition = strawberry.scalar(
    name="BigInt",
    description="An integer of any size, serialized as a decimal string (GraphQL Int is only 32-bit).",
    serialize=_serialize_bigint,
    parse_value=_parse_bigint,
    parse_literal=_parse_bigint_literal,
)


@strawberry.enum(description="Which head a read is relative to.")
class Finality(enum.Enum):
    LATEST = strawberry.enum_value("latest", description="the canonical tip (default): may still be reorganized")
    FINALIZED = strawberry.enum_value("finalized", description="the newest final block: can no longer change")


@strawberry.enum(description="Where a block stands.")
class BlockStatus(enum.Enum):
    CANONICAL = strawberry.enum_value("canonical", description="on the canonical chain, not final yet")
    FINALIZED = strawberry.enum_value("finalized", description="on the canonical chain and final")
    ORPHANED = strawberry.enum_value(
        "orphaned", description="recorded but not canonical: a side block, or one a reorganization reverted"
    )


@strawberry.type(description="An amount of one asset, in micro-units.")
class AssetAmount:
    asset: str
    amount: BigInt


@strawberry.type(description="A recorded block (height 0 is the genesis): canonical, final, or orphaned.")
class Block:
    chain_id: str
    height: int
    hash: str
    parent: str | None
    proposer: str | None = strawberry.field(description="node_id of the validator that proposed the block")
    operator: str | None = strawberry.field(description="address paid the reward and the fees")
    timestamp_ms: BigInt
    tx_root: str
    tx_count: int
    applied_count: int
    rejected_count: int
    reward: BigInt
    fees: BigInt
    finalized: bool
    canonical: bool = strawberry.field(description="on the canonical chain (FINALIZED blocks included)")
    status: BlockStatus
    position: BigInt = strawberry.field(
        description="log position of the block's latest event (applied, recorded, reverted or reapplied)"
    )


@strawberry.type(description="The canonical tip of a chain and its newest finalized block.")
class Head:
    chain_id: str
    height: int
    hash: str
    timestamp_ms: BigInt
    finalized_height: int | None
    finalized_hash: str | None
    tip: Block | None = strawberry.field(description="the canonical tip")
    finalized: Block | None = strawberry.field(description="the newest final block")


@strawberry.type(description="A block named by height and hash.")
class BlockRef:
    height: int
    hash: str


@strawberry.type(description="A reorganization: canonical blocks reverted down to a common ancestor, a branch applied.")
class Reorg:
    chain_id: str
    position: BigInt = strawberry.field(description="log position of the reorganization")
    cause: str = strawberry.field(description="longer_branch | finality")
    depth: int = strawberry.field(description="number of blocks reverted")
    height: int = strawberry.field(description="height of the common ancestor")
    ancestor_hash: str
    old_tip: BlockRef
    new_tip: BlockRef
    reverted: list[str] = strawberry.field(description="hashes of the reverted blocks, newest first")
    applied: list[str] = strawberry.field(description="hashes of the blocks put on the chain, oldest first")


@strawberry.type(description="Balances and next nonce of an address, after the block at `height`.")
class Account:
    address: str
    height: int
    balances: list[AssetAmount] = strawberry.field(description="non-zero balances, one per asset")
    nonce: BigInt = strawberry.field(description="the nonce the account's next transaction must carry")


@strawberry.type(description="A transaction as recorded in a canonical block, with its receipt.")
class Transaction:
    tx_id: str
    height: int
    index: int
    block_hash: str
    kind: str
    signer: str
    from_: str | None = strawberry.field(name="from")
    to: str | None
    asset: str | None
    amount: BigInt | None
    fee: BigInt | None
    nonce: BigInt | None
    status: str = strawberry.field(description="applied | rejected | reverted")
    reason: str | None = strawberry.field(description="rejection reason code; null when applied")


@strawberry.type(description="The outcome of a transaction: DOMAIN.md's receipt.")
class Receipt:
    tx_id: str
    status: str = strawberry.field(description="applied | rejected | reverted")
    reason: str | None = strawberry.field(description="rejection reason code; null when applied")
    height: int
    index: int
    block_hash: str
    chain_id: str


@strawberry.type(description="Chain totals and rolling figures over the newest `windowBlocks` blocks.")
class Stats:
    chain_id: str
    total_blocks: int
    txs_applied: BigInt
    txs_rejected: BigInt
    volume: list[AssetAmount] = strawberry.field(description="sum of applied transfer amounts per asset")
    fees: list[AssetAmount] = strawberry.field(description="sum of fees of applied transactions per asset")
    supply: list[AssetAmount] = strawberry.field(description="circulating supply per asset")
    rolling_tps: float | None
    rolling_block_time_ms: float | None
    window_blocks: int
    finality_delay_ms: float | None = strawberry.field(description="mean, over blocks of the window made final")
    finality_delay_blocks: float | None = strawberry.field(description="mean, over blocks of the window made final")
    last_block_height: int | None
    last_block_timestamp_ms: BigInt | None


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None = strawberry.field(description="pass as `after` to get the next, older page")


@strawberry.type
class BlockEdge:
    cursor: str
    node: Block


@strawberry.type(description="Blocks, newest first.")
class BlockConnection:
    edges: list[BlockEdge]
    page_info: PageInfo


@strawberry.type
class ReorgEdge:
    cursor: str
    node: Reorg


@strawberry.type(description="Reorganizations, newest first.")
class ReorgConnection:
    edges: list[ReorgEdge]
    page_info: PageInfo


@strawberry.type
class TransactionEdge:
    cursor: str
    node: Transaction


@strawberry.type(description="Transactions, newest first (by height, then index).")
class TransactionConnection:
    edges: list[TransactionEdge]
    page_info: PageInfo


# Conversions from the read model's rows. Integers pass through int() so a wide ClickHouse type
# (Int128, UInt64) arrives as a plain int; text reasons "" mean "no reason".


def _int(value: Any) -> int:
    return int(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _amounts(rows: Any) -> list[AssetAmount]:
    return [AssetAmount(asset=r["asset"], amount=BigInt(_int(r["amount"]))) for r in rows or ()]


def head_of(row: Mapping[str, Any]) -> Head:
    tip, final = row.get("tip"), row.get("finalized")
    return Head(
        chain_id=row["chain_id"],
        height=_int(row["height"]),
        hash=row["hash"],
        timestamp_ms=BigInt(_int(row["timestamp_ms"])),
        finalized_height=_opt_int(row.get("finalized_height")),
        finalized_hash=row.get("finalized_hash") or None,
        tip=None if tip is None else block_of(tip),
        finalized=None if final is None else block_of(final),
    )


def block_of(row: Mapping[str, Any]) -> Block:
    return Block(
        chain_id=row["chain_id"],
        height=_int(row["height"]),
        hash=row["hash"],
        parent=row.get("parent") or None,
        proposer=row.get("proposer") or None,
        operator=row.get("operator") or None,
        timestamp_ms=BigInt(_int(row["timestamp_ms"])),
        tx_root=row["tx_root"],
        tx_count=_int(row["tx_count"]),
        applied_count=_int(row["applied_count"]),
        rejected_count=_int(row["rejected_count"]),
        reward=BigInt(_int(row["reward"])),
        fees=BigInt(_int(row["fees"])),
        finalized=bool(row["finalized"]),
        canonical=bool(row["canonical"]),
        status=BlockStatus(row["status"]),
        position=BigInt(_int(row["position"])),
    )


def account_of(row: Mapping[str, Any]) -> Account:
    return Account(
        address=row["address"],
        height=_int(row["height"]),
        balances=_amounts(row["balances"]),
        nonce=BigInt(_int(row["nonce"])),
    )


def transaction_of(row: Mapping[str, Any]) -> Transaction:
    def big(key: str) -> BigInt | None:
        value = _opt_int(row.get(key))
        return None if value is None else BigInt(value)

    return Transaction(
        tx_id=row["tx_id"],
        height=_int(row["height"]),
        index=_int(row["index"]),
        block_hash=row["block_hash"],
        kind=row["kind"],
        signer=row["signer"],
        from_=row.get("from") or None,
        to=row.get("to") or None,
        asset=row.get("asset") or None,
        amount=big("amount"),
        fee=big("fee"),
        nonce=big("nonce"),
        status=row["status"],
        reason=row.get("reason") or None,
    )


def receipt_of(row: Mapping[str, Any]) -> Receipt:
    return Receipt(
        tx_id=row["tx_id"],
        status=row["status"],
        reason=row.get("reason") or None,
        height=_int(row["height"]),
        index=_int(row["index"]),
        block_hash=row["block_hash"],
        chain_id=row["chain_id"],
    )


def reorg_of(row: Mapping[str, Any]) -> Reorg:
    def ref(tip: Mapping[str, Any]) -> BlockRef:
        return BlockRef(height=_int(tip["height"]), hash=tip["hash"])

    return Reorg(
        chain_id=row["chain_id"],
        position=BigInt(_int(row["position"])),
        cause=row["cause"],
        depth=_int(row["depth"]),
        height=_int(row["height"]),
        ancestor_hash=row["ancestor_hash"],
        old_tip=ref(row["old_tip"]),
        new_tip=ref(row["new_tip"]),
        reverted=list(row["reverted"]),
        applied=list(row["applied"]),
    )


def stats_of(chain_id: str, row: Mapping[str, Any]) -> Stats:
    last_ts = _opt_int(row.get("last_block_timestamp_ms"))
    return Stats(
        chain_id=chain_id,
        total_blocks=_int(row["total_blocks"]),
        txs_applied=BigInt(_int(row["txs_applied"])),
        txs_rejected=BigInt(_int(row["txs_rejected"])),
        volume=_amounts(row.get("volume")),
        fees=_amounts(row.get("fees")),
        supply=_amounts(row.get("supply")),
        rolling_tps=_opt_float(row.get("rolling_tps")),
        rolling_block_time_ms=_opt_float(row.get("rolling_block_time_ms")),
        window_blocks=_int(row["window_blocks"]),
        finality_delay_ms=_opt_float(row.get("finality_delay_ms")),
        finality_delay_blocks=_opt_float(row.get("finality_delay_blocks")),
        last_block_height=_opt_int(row.get("last_block_height")),
        last_block_timestamp_ms=None if last_ts is None else BigInt(last_ts),
    )
