"""Merkle trees, inclusion proofs and hash-chain links with the blake3 package: the reference for the JAX kernels.

Every tree here is binary over its leaves in order, pairs adjacent nodes level by level and carries an odd last
node up unchanged (DOMAIN.md's `tx_root` rule). One-byte domain tags keep the kinds of node apart:

    tx tree     leaf   blake3(0x00 || tx_id (32))                        = tx_root's rule
                parent blake3(0x01 || left (32) || right (32))
    sum tree    leaf   blake3(0x02 || blinded_id (32) || balance (16, big-endian))          sum = balance
                parent blake3(0x03 || left.hash (32) || left.sum (16, big-endian)
                                   || right.hash (32) || right.sum (16, big-endian))    sum = left.sum + right.sum

Sums are unsigned 128-bit: every balance is below 2**63, so no tree of fewer than 2**65 leaves overflows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from blake3 import blake3

EMPTY_ROOT = blake3(b"").hexdigest()
ZERO_HASH = "00" * 32
TX_LEAF, TX_PARENT, SUM_LEAF, SUM_PARENT = b"\x00", b"\x01", b"\x02", b"\x03"
SUM_MAX = 2**128 - 1

# One step of an inclusion proof: (the sibling is on the left, the sibling's hash).
Step = tuple[bool, bytes]
SumNode = tuple[bytes, int]  # (hash, sum)
Node = TypeVar("Node")


def hash_many(messages: Sequence[bytes]) -> list[bytes]:
    return [blake3(m).digest() for m in messages]


def tx_levels(tx_ids_hex: Sequence[str]) -> list[list[bytes]]:
    """Every level of the tx tree, leaves first, root last; [] for no txs."""
    if not tx_ids_hex:
        return []
    level = [blake3(TX_LEAF + bytes.fromhex(t)).digest() for t in tx_ids_hex]
    levels = [level]
    while len(level) > 1:
        nxt = [blake3(TX_PARENT + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(level := nxt)
    return levels


def tx_root(tx_ids_hex: Sequence[str]) -> str:
    levels = tx_levels(tx_ids_hex)
    return levels[-1][0].hex() if levels else EMPTY_ROOT


def proof_from_levels(levels: Sequence[Sequence[Node]], index: int) -> list[tuple[bool, Node]]:
    """The siblings from leaf `index` up (either tree); a level where the node is carried up adds no step."""
    steps: list[tuple[bool, Node]] = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            steps.append((sibling < index, level[sibling]))
        index //= 2
    return steps


def inclusion_proof(tx_ids_hex: Sequence[str], index: int) -> list[Step]:
    return proof_from_levels(tx_levels(tx_ids_hex), index)


def verify_inclusion(tx_id_hex: str, proof: Sequence[Step], root_hex: str) -> bool:
    node = blake3(TX_LEAF + bytes.fromhex(tx_id_hex)).digest()
    for left, sibling in proof:
        node = blake3(TX_PARENT + (sibling + node if left else node + sibling)).digest()
    return node.hex() == root_hex


def verify_inclusion_many(items: Sequence[tuple[str, Sequence[Step], str]]) -> list[bool]:
    return [verify_inclusion(tx_id, proof, root) for tx_id, proof, root in items]


def sum_leaf(blinded_id: bytes, balance: int) -> SumNode:
    if len(blinded_id) != 32 or not 0 <= balance <= SUM_MAX:
        raise ValueError("a sum-tree leaf is a 32-byte blinded id and a balance in [0, 2**128)")
    return blake3(SUM_LEAF + blinded_id + balance.to_bytes(16, "big")).digest(), balance


def sum_parent(left: SumNode, right: SumNode) -> SumNode:
    total = left[1] + right[1]
    if total > SUM_MAX:
        raise ValueError("sum-tree total overflows 128 bits")
    message = SUM_PARENT + left[0] + left[1].to_bytes(16, "big") + right[0] + right[1].to_bytes(16, "big")
    return blake3(message).digest(), total


def merkle_sum_levels(leaves: Sequence[tuple[bytes, int]]) -> list[list[SumNode]]:
    """Every level of the sum tree over (blinded id, balance) leaves, leaves first; [] for no leaves."""
    if not leaves:
        return []
    level = [sum_leaf(i, b) for i, b in leaves]
    levels = [level]
    while len(level) > 1:
        nxt = [sum_parent(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(level := nxt)
    return levels


def verify_sum_inclusion(
    blinded_id: bytes, balance: int, proof: Sequence[tuple[bool, SumNode]], root: SumNode
) -> bool:
    """An account holder's check: needs only its leaf, the proof (siblings with their sums) and the root."""
    node = sum_leaf(blinded_id, balance)
    for left, sibling in proof:
        node = sum_parent(sibling, node) if left else sum_parent(node, sibling)
    return node == root


def check_hash_chain(prev_hashes: Sequence[str], event_hashes: Sequence[str], first_prev: str = ZERO_HASH) -> list[int]:
    """Indices i whose prev_hashes[i] is not event_hashes[i - 1] (first_prev for i = 0): the broken links."""
    if len(prev_hashes) != len(event_hashes):
        raise ValueError("one prev_hash per event")
    expected = [first_prev, *event_hashes[:-1]] if event_hashes else []
    return [i for i, (p, e) in enumerate(zip(prev_hashes, expected, strict=True)) if p != e]
