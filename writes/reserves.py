"""Proof of reserves (DOMAIN.md, Proof of reserves): a Merkle sum tree per bridged asset at a height, over the
balances of the accounts holding it, with blinded leaf ids. Pure: the same secret, chain state and height always
give the same tree.

Scheme `tally-por-v1` (docs/proof-of-reserves.md is the customer-facing description):

    account secret   s_a  = blake3(key = ledger secret, "tally-por-v1:account:" chain_id ":" address)
    blinded id       id_a = blake3(s_a || "tally-por-v1:leaf:" chain_id ":" asset ":" height ":" address)
    padding id       id_i = blake3(key = ledger secret, "tally-por-v1:pad:" chain_id ":" asset ":" height ":" i)
    leaves           (id, balance) for every account holding the asset (balance > 0) and padding leaves of
                     balance 0 up to the next power of two (at least 1), sorted by id
    nodes            accelerators/merkle_cpu.py's sum tree: leaf blake3(0x02 || id || balance 16 BE),
                     parent blake3(0x03 || left hash || left sum 16 BE || right hash || right sum 16 BE)

The account secret is what an account holder obtains (by a request signed with the account's key) to recompute
its own blinded id at every attested height: the id depends on its address, so no two accounts can be given the
same leaf, and without the secret a leaf reveals no address. Padding to a power of two hides the number of
accounts; sibling sums reveal what Maxwell-style trees reveal (the sum of a subtree), no more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from blake3 import blake3

from accelerators import backend
from accelerators.merkle_cpu import SumNode

SCHEME = "tally-por-v1"
RATIO_DIGITS = 6


def account_secret(ledger_secret: bytes, chain_id: str, address: str) -> bytes:
    return blake3(f"{SCHEME}:account:{chain_id}:{address}".encode(), key=ledger_secret).digest()


def blinded_id(secret_of_account: bytes, chain_id: str, asset: str, height: int, address: str) -> bytes:
    """What an account holder recomputes from its account secret to find its own leaf."""
    return blake3(secret_of_account + f"{SCHEME}:leaf:{chain_id}:{asset}:{height}:{address}".encode()).digest()


def _padding_id(ledger_secret: bytes, chain_id: str, asset: str, height: int, i: int) -> bytes:
    return blake3(f"{SCHEME}:pad:{chain_id}:{asset}:{height}:{i}".encode(), key=ledger_secret).digest()


@dataclass(frozen=True)
class ReservesTree:
    chain_id: str
    asset: str
    height: int
    leaves: list[tuple[bytes, int]]  # (blinded id, balance), sorted by id, padding included
    levels: list[list[SumNode]]  # leaves first, root last
    index: dict[str, int]  # address -> its leaf's index

    @property
    def root(self) -> SumNode:
        return self.levels[-1][0]

    def proof(self, address: str) -> list[tuple[bool, SumNode]]:
        """The siblings from the account's leaf up to the root: (the sibling is on the left, (hash, sum))."""
        i = self.index[address]
        steps = []
        for level in self.levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):
                steps.append((sibling < i, level[sibling]))
            i //= 2
        return steps


def build_tree(
    ledger_secret: bytes, chain_id: str, asset: str, height: int, holdings: Iterable[tuple[str, int]]
) -> ReservesTree:
    """The sum tree over the accounts holding `asset` (balance > 0) at `height`."""
    ids: list[tuple[bytes, int, str]] = []
    for address, balance in holdings:
        if balance > 0:
            secret = account_secret(ledger_secret, chain_id, address)
            ids.append((blinded_id(secret, chain_id, asset, height, address), balance, address))
    width = 1
    while width < len(ids):
        width *= 2
    ids += [(_padding_id(ledger_secret, chain_id, asset, height, i), 0, "") for i in range(width - len(ids))]
    ids.sort()
    leaves = [(i, b) for i, b, _ in ids]
    index = {address: n for n, (_, _, address) in enumerate(ids) if address}
    return ReservesTree(chain_id, asset, height, leaves, backend.merkle_sum_levels(leaves), index)


def ratio(escrow: int, liabilities: int) -> str | None:
    """escrow / liabilities as a decimal string, truncated to RATIO_DIGITS digits; None when nothing is owed."""
    if liabilities == 0:
        return None
    scaled = escrow * 10**RATIO_DIGITS // liabilities
    return f"{scaled // 10**RATIO_DIGITS}.{scaled % 10**RATIO_DIGITS:0{RATIO_DIGITS}d}"


def attestation(
    tree: ReservesTree, block_hash: str, totals: list[int], cause: str
) -> dict[str, Any]:
    """The ReservesAttested payload: root, total of balances, pending, liabilities, escrow and their ratio."""
    deposited, withdrawn, pending = totals
    root_hash, total = tree.root
    liabilities = total + pending
    escrow = deposited - withdrawn
    return {
        "chain_id": tree.chain_id, "asset": tree.asset, "height": tree.height, "block_hash": block_hash,
        "scheme": SCHEME, "root": root_hash.hex(), "total": total, "pending": pending, "liabilities": liabilities,
        "deposited": deposited, "withdrawn": withdrawn, "escrow": escrow, "ratio": ratio(escrow, liabilities),
        "leaf_count": len(tree.leaves), "cause": cause,
    }


def holdings_of(balances: Mapping[tuple[str, str], int], asset: str) -> list[tuple[str, int]]:
    return [(address, amount) for (address, a), amount in balances.items() if a == asset and amount > 0]
