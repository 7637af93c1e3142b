"""The write side's test chain: deterministic ML-DSA keys, a default genesis, and `Chain`, a LedgerService on
a fresh SQLite file with helpers that build, sign and submit blocks, transfers and votes on its canonical tip.

tests/conftest.py turns it into the `ledger` and `make_ledger` fixtures.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerators.verify import BatchVerifier
from schemas import build
from schemas.canonical import genesis_hash
from schemas.settings import Settings
from schemas.signing import KeyPair
from writes.service import LedgerService
from writes.state import ChainState, Ledger

CHAIN_ID = "tally-test"
GENESIS_MS = 1_700_000_000_000
BLOCK_MS = 1_000
CELL = 1_000_000  # micro-units per unit
STAKE = 10 * CELL  # the default min_stake
FUNDS = 100 * CELL


@functools.cache
def keypair(name: str, alg: str = "ml-dsa-65") -> KeyPair:
    """A deterministic key per name (the seed is hashed down to 32 bytes)."""
    return KeyPair.from_seed(f"tally-test:{name}".encode(), alg)


ALICE = keypair("alice")
BOB = keypair("bob")
CAROL = keypair("carol", "ml-dsa-87")
ACCOUNTS = (ALICE, BOB, CAROL)


@dataclass(frozen=True)
class ValidatorKeys:
    node_id: str
    key: KeyPair
    operator: KeyPair
    gpu_uuid: str
    stake: int


def validators(stakes: Sequence[int] = (STAKE, STAKE, STAKE)) -> list[ValidatorKeys]:
    """node-0, node-1, ...; node-2 signs with ML-DSA-87, the others with ML-DSA-65."""
    return [
        ValidatorKeys(
            f"node-{i}", keypair(f"node-{i}", "ml-dsa-87" if i == 2 else "ml-dsa-65"), keypair(f"operator-{i}"),
            f"GPU-{i:04d}", stake,
        )
        for i, stake in enumerate(stakes)
    ]


def genesis_command(
    chain_id: str = CHAIN_ID,
    *,
    vals: Sequence[ValidatorKeys] | None = None,
    allocations: Sequence[tuple[str, int]] | None = None,
    params: dict[str, int] | None = None,
    relayers: Sequence[tuple[str, KeyPair]] = (),
) -> dict[str, Any]:
    vals = validators() if vals is None else vals
    allocations = [(k.address, FUNDS) for k in ACCOUNTS] if allocations is None else allocations
    return build.genesis(
        chain_id, GENESIS_MS, allocations=allocations,
        validators=[(v.node_id, v.operator.address, v.key, v.gpu_uuid, v.stake) for v in vals],
        relayers=relayers, params=params,
    )


class Chain:
    """One chain on a LedgerService: builds commands on the current tip and submits them."""

    def __init__(
        self, service: LedgerService, genesis: dict[str, Any], vals: Sequence[ValidatorKeys], *, resume: bool = False
    ) -> None:
        """Submits the genesis, unless `resume` (the service already holds this chain)."""
        self.service = service
        self.genesis = genesis
        self.chain_id: str = genesis["chain_id"]
        self.vals = list(vals)
        self.genesis_hash = genesis_hash(genesis)
        if not resume:
            result = service.submit(genesis)
            assert result["status"] == "accepted", result

    @property
    def state(self) -> ChainState:
        return self.service.ledger.chains[self.chain_id]

    def balance(self, address: str, asset: str = "CELL") -> int:
        return self.state.balance(address, asset)

    def nonce(self, address: str) -> int:
        return self.state.next_nonce(address)

    def transfer(
        self, sender: KeyPair, to: str, amount: int, *, fee: int = 0, nonce: int | None = None,
        asset: str = "CELL", chain_id: str | None = None,
    ) -> dict[str, Any]:
        """A signed transfer; the nonce defaults to the sender's next nonce in the ledger."""
        nonce = self.nonce(sender.address) if nonce is None else nonce
        return build.transfer(chain_id or self.chain_id, sender, to, amount, nonce=nonce, fee=fee, asset=asset)

    def block(
        self, txs: Sequence[Any] = (), *, proposer: int = 0, parent: str | None = None, height: int | None = None,
        timestamp_ms: int | None = None, root: str | None = None, key: KeyPair | None = None,
        node_id: str | None = None, chain_id: str | None = None,
    ) -> dict[str, Any]:
        """A signed block on the tip (or on `parent`); every header field can be overridden."""
        tip = self.state.tip if parent is None else self.state.blocks.get(parent, self.state.tip)
        v = self.vals[proposer]
        return build.block(
            chain_id or self.chain_id,
            tip.height + 1 if height is None else height,
            tip.hash if parent is None else parent,
            v.node_id if node_id is None else node_id,
            v.key if key is None else key,
            tip.timestamp_ms + BLOCK_MS if timestamp_ms is None else timestamp_ms,
            list(txs), root=root,
        )

    def vote(self, voter: int, block_hash: str, height: int, *, key: KeyPair | None = None) -> dict[str, Any]:
        v = self.vals[voter]
        return build.vote(self.chain_id, v.node_id, v.key if key is None else key, height, block_hash)

    def submit(self, command: Any) -> dict[str, Any]:
        return self.service.submit(command)

    def apply(self, txs: Sequence[Any] = (), **header: Any) -> dict[str, Any]:
        """Submit a block on the tip and require that it is accepted."""
        result = self.submit(self.block(txs, **header))
        assert result["status"] == "accepted", result
        return result

    def finalize(self, block_hash: str, height: int) -> dict[str, Any]:
        """Every validator votes for the block; returns the last vote's result."""
        result: dict[str, Any] = {}
        for i in range(len(self.vals)):
            result = self.submit(self.vote(i, block_hash, height))
            assert result["status"] == "accepted", result
        return result

    def snapshot(self) -> tuple[int, Ledger]:
        return self.service.max_position(), copy.deepcopy(self.service.ledger)

    def reject(self, command: Any, reason: str) -> dict[str, Any]:
        """Submit, require a rejection with `reason`, and that nothing was appended or changed."""
        position, before = self.snapshot()
        result = self.submit(command)
        assert result["status"] == "rejected", result
        assert result["reason"] == reason, result
        assert isinstance(result["message"], str) and result["message"]
        assert self.service.max_position() == position
        assert self.service.ledger == before
        return result


def open_service(data_dir: Path, workers: int = 1) -> LedgerService:
    return LedgerService(Settings(data_dir=data_dir, verify_workers=workers), verifier=BatchVerifier(workers))
