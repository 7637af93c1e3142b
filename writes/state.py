"""The write side's in-memory state: a fold of the log (`evolve`), never written anywhere but the log.

`decide` reads it; only `evolve` changes it, and only with events that were saved. Everything a block
changed is in its BlockApplied event, so `evolve` applies recorded effects instead of re-running txs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import singledispatch

from schemas.canonical import ZERO_HASH
from schemas.events import BlockApplied, BlockFinalized, GenesisAccepted, LedgerEvent, VoteAccepted

ACTIVE, UNBONDING, RELEASED = "active", "unbonding", "released"


@dataclass
class Validator:
    node_id: str
    operator: str
    alg: str
    pk: bytes
    gpu_uuid: str
    stake: int
    phase: str = ACTIVE
    unbond_at_ms: int | None = None
    enrolled_height: int = 0


@dataclass
class BlockInfo:
    hash: str
    height: int
    parent: str
    timestamp_ms: int
    proposer: str
    # Stakes of the validators active after this block: who may count toward its finality, and how much.
    # Shared between blocks until the validator set changes.
    stakes: dict[str, int]
    total_stake: int
    voters: set[str] = field(default_factory=set)
    finalized: bool = False

    def voting_stake(self) -> int:
        return sum(self.stakes.get(node_id, 0) for node_id in self.voters)

    def is_final_by_votes(self) -> bool:
        """DOMAIN: 3 * voting_stake > 2 * total_stake, and a total of 0 never finalizes."""
        return self.total_stake > 0 and 3 * self.voting_stake() > 2 * self.total_stake


@dataclass
class ChainState:
    chain_id: str
    params: dict[str, int]
    genesis_hash: str
    balances: dict[tuple[str, str], int] = field(default_factory=dict)
    nonces: dict[str, int] = field(default_factory=dict)  # next nonce per account
    validators: dict[str, Validator] = field(default_factory=dict)
    relayers: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    assets: set[str] = field(default_factory=lambda: {"CELL"})
    blocks: dict[str, BlockInfo] = field(default_factory=dict)
    canonical: list[str] = field(default_factory=list)  # block hash by height
    finalized_height: int = 0
    # Votes for blocks not seen yet: block_hash -> {(node_id, voted height)}. A node may have voted for one
    # unseen hash at two heights; only the pair whose height turns out to be the block's counts.
    pending_votes: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    minted: int = 0
    burned: int = 0
    active_stakes: dict[str, int] = field(default_factory=dict)

    @property
    def tip(self) -> BlockInfo:
        return self.blocks[self.canonical[-1]]

    @property
    def finalized(self) -> BlockInfo:
        return self.blocks[self.canonical[self.finalized_height]]

    def balance(self, address: str, asset: str) -> int:
        return self.balances.get((address, asset), 0)

    def next_nonce(self, address: str) -> int:
        return self.nonces.get(address, 0)

    def refresh_active_stakes(self) -> None:
        self.active_stakes = {v.node_id: v.stake for v in self.validators.values() if v.phase == ACTIVE}


@dataclass
class Ledger:
    """Every chain the ledger serves, and where the log stands."""

    chains: dict[str, ChainState] = field(default_factory=dict)
    seq: int = 0  # version of the last event folded
    last_hash: str = ZERO_HASH  # hash of the last event folded: the next event's prev_hash


@singledispatch
def evolve(event: LedgerEvent, ledger: Ledger) -> None:
    raise TypeError(f"no evolve rule for {type(event).__name__}")


@evolve.register
def _(event: GenesisAccepted, ledger: Ledger) -> None:
    chain = ChainState(chain_id=event.chain_id, params=dict(event.params), genesis_hash=event.block_hash)
    for address, amount in event.allocations:
        chain.balances[(address, "CELL")] = amount
        chain.minted += amount
    for v in event.validators:
        key = v["key"]
        chain.validators[v["node_id"]] = Validator(
            v["node_id"], v["operator"], key["alg"], bytes.fromhex(key["pk"]), v["gpu_uuid"], v["stake"]
        )
        chain.minted += v["stake"]
    for r in event.relayers:
        chain.relayers[r["relayer_id"]] = (r["key"]["alg"], bytes.fromhex(r["key"]["pk"]))
    chain.refresh_active_stakes()
    genesis = BlockInfo(
        event.block_hash, 0, ZERO_HASH, event.timestamp_ms, "", chain.active_stakes,
        sum(chain.active_stakes.values()), finalized=True,  # the genesis block is final
    )
    chain.blocks[genesis.hash] = genesis
    chain.canonical.append(genesis.hash)
    ledger.chains[event.chain_id] = chain


@evolve.register
def _(event: BlockApplied, ledger: Ledger) -> None:
    chain = ledger.chains[event.chain_id]
    fx = event.effects
    for address, asset, delta in fx["balances"]:
        chain.balances[(address, asset)] = chain.balances.get((address, asset), 0) + delta
    for address, _before, after in fx["nonces"]:
        chain.nonces[address] = after
    chain.minted += fx["minted"]
    chain.burned += fx["burned"]
    if fx["releases"]:
        for node_id, _stake in fx["releases"]:
            validator = chain.validators[node_id]
            validator.phase, validator.stake = RELEASED, 0
        chain.refresh_active_stakes()
    info = BlockInfo(
        event.block_hash, event.height, event.parent, event.timestamp_ms, event.proposer,
        chain.active_stakes, sum(chain.active_stakes.values()),
    )
    # Votes that arrived before the block count now if their height is the block's; others are dropped.
    for node_id, height in chain.pending_votes.pop(info.hash, set()):
        if height == info.height:
            info.voters.add(node_id)
    chain.blocks[info.hash] = info
    chain.canonical.append(info.hash)


@evolve.register
def _(event: VoteAccepted, ledger: Ledger) -> None:
    chain = ledger.chains[event.chain_id]
    block = chain.blocks.get(event.block_hash)
    if block is not None:
        block.voters.add(event.node_id)
    else:
        chain.pending_votes.setdefault(event.block_hash, set()).add((event.node_id, event.height))


@evolve.register
def _(event: BlockFinalized, ledger: Ledger) -> None:
    chain = ledger.chains[event.chain_id]
    for _height, block_hash in event.finalized:
        chain.blocks[block_hash].finalized = True
    chain.finalized_height = max(chain.finalized_height, event.height)


def fold(ledger: Ledger, event: LedgerEvent, event_hash: str) -> None:
    """Apply one saved event and advance the log position."""
    evolve(event, ledger)
    ledger.seq = event.originator_version
    ledger.last_hash = event_hash
