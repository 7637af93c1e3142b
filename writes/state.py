"""The write side's in-memory state: a fold of the log (`evolve`), never written anywhere but the log.

`decide` reads it; only `evolve` changes it, and only with events that were saved. Everything a block
changed is in its BlockApplied event, so `evolve` applies recorded effects instead of re-running txs.

Forks: `balances`, `nonces`, `validators` ... are the state after the canonical tip. Every valid block is in
`blocks` (canonical or not); the ones that can still be reverted or made canonical (not final, on a branch that
contains every final block) keep their summary (`BlockInfo.summary`, with the effects), so that a reorganization
can undo and redo them exactly, and `BranchView` can show the state after any such block without copying.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import singledispatch
from typing import Any

from schemas.canonical import ZERO_HASH, address_of
from schemas.events import (
    BlockApplied,
    BlockFinalized,
    BlockReapplied,
    BlockRecorded,
    BlockReverted,
    ChainReorganized,
    GenesisAccepted,
    LedgerEvent,
    ReservesAttested,
    VoteAccepted,
    block_summary,
)

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
    unbond_at_ms: int | None = None  # may pass 2**63 (DOMAIN.md: not bounded)
    enrolled_height: int = 0
    revoked: bool = False  # auto-revoked by a slash that left the stake below min_stake

    @property
    def binds_gpu(self) -> bool:
        """DOMAIN.md: gpu_uuid binds to one enrollment until it is released or auto-revoked."""
        return self.phase != RELEASED and not self.revoked

    def record(self) -> dict[str, Any]:
        """The validator as BlockApplied.effects records it (before and after a change)."""
        return {
            "node_id": self.node_id, "operator": self.operator, "key": {"alg": self.alg, "pk": self.pk.hex()},
            "gpu_uuid": self.gpu_uuid, "stake": self.stake, "phase": self.phase, "unbond_at_ms": self.unbond_at_ms,
            "enrolled_height": self.enrolled_height, "revoked": self.revoked,
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Validator:
        return cls(
            r["node_id"], r["operator"], r["key"]["alg"], bytes.fromhex(r["key"]["pk"]), r["gpu_uuid"], r["stake"],
            r["phase"], r["unbond_at_ms"], r["enrolled_height"], r["revoked"],
        )


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
    order: int = 0  # acceptance order within the chain: fork choice keeps the tip accepted first on ties
    # The block's summary (schemas/events.py) while it may still be reverted or made canonical; None once it
    # is final or off every branch that contains the final blocks.
    summary: dict[str, Any] | None = None

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
    relayer_addresses: dict[str, str] = field(default_factory=dict)  # address of a relayer key -> relayer_id
    # Bridge reserves: per reserve_id its record (see writes/txs.py), per bridged asset [deposited, withdrawn,
    # pending]. A bridged asset exists once a deposit of it was applied (on this branch).
    reserves: dict[str, dict[str, Any]] = field(default_factory=dict)
    bridge: dict[str, list[int]] = field(default_factory=dict)
    blocks: dict[str, BlockInfo] = field(default_factory=dict)
    canonical: list[str] = field(default_factory=list)  # block hash by height
    finalized_height: int = 0
    # Votes for blocks not seen yet: block_hash -> {(node_id, voted height)}. A node may have voted for one
    # unseen hash at two heights; only the pair whose height turns out to be the block's counts.
    pending_votes: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    minted: int = 0
    burned: int = 0
    active_stakes: dict[str, int] = field(default_factory=dict)
    gpu_bindings: dict[str, str] = field(default_factory=dict)  # gpu_uuid -> node_id of its live enrollment
    attested: set[tuple[str, int]] = field(default_factory=set)  # (asset, height) of reserves attestations
    offences: set[tuple[str, int]] = field(default_factory=set)  # (node_id, height) of applied slashes
    accepted: int = 0  # blocks accepted so far (BlockInfo.order)
    unsettled: set[str] = field(default_factory=set)  # hashes of blocks that keep their summary
    reorganizations: int = 0

    @property
    def tip(self) -> BlockInfo:
        return self.blocks[self.canonical[-1]]

    def is_canonical(self, block: BlockInfo) -> bool:
        return block.height < len(self.canonical) and self.canonical[block.height] == block.hash

    def descends_from(self, block: BlockInfo, ancestor: BlockInfo) -> bool:
        """Whether `ancestor` is `block` or one of its ancestors."""
        while block.height > ancestor.height:
            block = self.blocks[block.parent]
        return block.hash == ancestor.hash

    def path(self, target: BlockInfo) -> tuple[list[BlockInfo], BlockInfo, list[BlockInfo]]:
        """How to make `target` the tip: the canonical blocks to revert (newest first), the newest block both
        branches share, and the blocks to apply (oldest first, `target` last)."""
        redo = []
        cursor = target
        while not self.is_canonical(cursor):
            redo.append(cursor)
            cursor = self.blocks[cursor.parent]
        undo = [self.blocks[h] for h in reversed(self.canonical[cursor.height + 1:])]
        redo.reverse()
        return undo, cursor, redo

    @property
    def finalized(self) -> BlockInfo:
        return self.blocks[self.canonical[self.finalized_height]]

    def balance(self, address: str, asset: str) -> int:
        return self.balances.get((address, asset), 0)

    def next_nonce(self, address: str) -> int:
        return self.nonces.get(address, 0)

    def has_asset(self, asset: str) -> bool:
        return asset == "CELL" or self.bridge_totals(asset)[0] > 0

    def bridge_totals(self, asset: str) -> list[int]:
        """[deposited, withdrawn, pending] of a bridged asset."""
        return self.bridge.get(asset, [0, 0, 0])

    def refresh_active_stakes(self) -> None:
        self.active_stakes = stakes_of(self.validators.values())

    # The state after the tip moves with the canonical chain: a block's effects are done when it becomes
    # canonical and undone, exactly, when it is reverted.

    def do_effects(self, fx: dict[str, Any]) -> None:
        balances = self.balances
        for address, asset, delta in fx["balances"]:
            balances[(address, asset)] = balances.get((address, asset), 0) + delta
        for address, _before, after in fx["nonces"]:
            self.nonces[address] = after
        self.minted += fx["minted"]
        self.burned += fx["burned"]
        changes = fx.get("validators", ())
        for node_id, before, after in changes:
            self._set_validator(node_id, before, after)
        for node_id, height in fx.get("offences", ()):
            self.offences.add((node_id, height))
        for reserve_id, _before, after in fx.get("reserves", ()):
            self.reserves[reserve_id] = after
        self._move_bridge(fx, 1)
        if changes:
            self.refresh_active_stakes()

    def _move_bridge(self, fx: dict[str, Any], sign: int) -> None:
        for asset, *deltas in fx.get("bridge", ()):
            totals = [t + sign * d for t, d in zip(self.bridge_totals(asset), deltas, strict=True)]
            if any(totals):
                self.bridge[asset] = totals
            else:
                self.bridge.pop(asset, None)

    def undo_effects(self, fx: dict[str, Any]) -> None:
        balances = self.balances
        for address, asset, delta in fx["balances"]:
            amount = balances[(address, asset)] - delta
            if amount:
                balances[(address, asset)] = amount
            else:
                del balances[(address, asset)]
        for address, before, _after in fx["nonces"]:
            if before:
                self.nonces[address] = before
            else:
                self.nonces.pop(address, None)
        self.minted -= fx["minted"]
        self.burned -= fx["burned"]
        changes = fx.get("validators", ())
        for node_id, before, after in reversed(changes):
            self._set_validator(node_id, after, before)
        for node_id, height in fx.get("offences", ()):
            self.offences.discard((node_id, height))
        for reserve_id, before, _after in reversed(fx.get("reserves", ())):
            if before is None:
                del self.reserves[reserve_id]
            else:
                self.reserves[reserve_id] = before
        self._move_bridge(fx, -1)
        if changes:
            self.refresh_active_stakes()

    def _set_validator(self, node_id: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Replace a validator's record (None: not enrolled), keeping the gpu_uuid bindings in step."""
        if old is not None and self.gpu_bindings.get(old["gpu_uuid"]) == node_id:
            del self.gpu_bindings[old["gpu_uuid"]]
        if new is None:
            del self.validators[node_id]
            return
        validator = self.validators[node_id] = Validator.from_record(new)
        if validator.binds_gpu:
            self.gpu_bindings[validator.gpu_uuid] = node_id

    def settle(self) -> None:
        """Forget the summaries of blocks that can no longer move: final ones, and those off the final branch."""
        final = self.finalized
        for block_hash in list(self.unsettled):
            block = self.blocks[block_hash]
            if block.height <= final.height or not self.descends_from(block, final):
                block.summary = None
                self.unsettled.discard(block_hash)


class BranchView:
    """The chain state after `parent` on its own branch, read through the canonical state without copying it:
    the canonical blocks above the common ancestor undone, the branch's blocks up to `parent` done.

    It answers what `decide` asks of a state (balances, nonces, validators, active stakes); for the canonical tip
    it is the canonical state itself.
    """

    def __init__(self, chain: ChainState, parent: BlockInfo) -> None:
        self.chain = chain
        self.params = chain.params
        self.relayer_addresses = chain.relayer_addresses
        self._balances: dict[tuple[str, str], int] = {}
        self._nonces: dict[str, int] = {}
        self._validators: dict[str, Validator | None] = {}
        self._gpu: dict[str, str | None] = {}
        self._offences: dict[tuple[str, int], bool] = {}
        self._reserves: dict[str, dict[str, Any] | None] = {}
        self._bridge: dict[str, list[int]] = {}
        if parent.hash != chain.tip.hash:
            undo, _ancestor, redo = chain.path(parent)
            for block in undo:
                self._move(_summary(block)["effects"], undo=True)
            for block in redo:
                self._move(_summary(block)["effects"], undo=False)
        if self._validators:
            self.active_stakes = stakes_of(self.validators())
        else:
            self.active_stakes = chain.active_stakes

    def _move(self, fx: dict[str, Any], *, undo: bool) -> None:
        sign = -1 if undo else 1
        for address, asset, delta in fx["balances"]:
            self._balances[(address, asset)] = self.balance(address, asset) + sign * delta
        for address, before, after in fx["nonces"]:
            self._nonces[address] = before if undo else after
        changes = fx.get("validators", ())
        for node_id, before, after in reversed(changes) if undo else changes:
            old, new = (after, before) if undo else (before, after)
            if old is not None and self.gpu_holder(old["gpu_uuid"]) == node_id:
                self._gpu[old["gpu_uuid"]] = None
            validator = None if new is None else Validator.from_record(new)
            self._validators[node_id] = validator
            if validator is not None and validator.binds_gpu:
                self._gpu[validator.gpu_uuid] = node_id
        for node_id, height in fx.get("offences", ()):
            self._offences[(node_id, height)] = not undo
        for reserve_id, before, after in fx.get("reserves", ()):
            self._reserves[reserve_id] = before if undo else after  # newest undone first: the oldest wins
        for asset, *deltas in fx.get("bridge", ()):
            self._bridge[asset] = [t + sign * d for t, d in zip(self.bridge_totals(asset), deltas, strict=True)]

    def balance(self, address: str, asset: str) -> int:
        key = (address, asset)
        return self._balances[key] if key in self._balances else self.chain.balances.get(key, 0)

    def next_nonce(self, address: str) -> int:
        return self._nonces[address] if address in self._nonces else self.chain.nonces.get(address, 0)

    def validator(self, node_id: str) -> Validator | None:
        if node_id in self._validators:
            return self._validators[node_id]
        return self.chain.validators.get(node_id)

    def validators(self) -> Iterator[Validator]:
        for node_id, validator in self.chain.validators.items():
            if node_id not in self._validators:
                yield validator
        for validator in self._validators.values():
            if validator is not None:
                yield validator

    def gpu_holder(self, gpu_uuid: str) -> str | None:
        """The node_id whose live enrollment binds `gpu_uuid`, if any."""
        if gpu_uuid in self._gpu:
            return self._gpu[gpu_uuid]
        return self.chain.gpu_bindings.get(gpu_uuid)

    def has_offence(self, node_id: str, height: int) -> bool:
        if (node_id, height) in self._offences:
            return self._offences[(node_id, height)]
        return (node_id, height) in self.chain.offences

    def reserve(self, reserve_id: str) -> dict[str, Any] | None:
        if reserve_id in self._reserves:
            return self._reserves[reserve_id]
        return self.chain.reserves.get(reserve_id)

    def bridge_totals(self, asset: str) -> list[int]:
        if asset in self._bridge:
            return self._bridge[asset]
        return self.chain.bridge_totals(asset)

    def has_asset(self, asset: str) -> bool:
        return asset == "CELL" or self.bridge_totals(asset)[0] > 0

    def bridged_assets(self) -> list[str]:
        return sorted(a for a in set(self.chain.bridge) | set(self._bridge) if self.bridge_totals(a)[0] > 0)

    def holdings(self, asset: str) -> dict[str, int]:
        """Every account's balance of `asset` (zeros included where the branch emptied an account)."""
        held = {address: amount for (address, a), amount in self.chain.balances.items() if a == asset}
        held.update({address: amount for (address, a), amount in self._balances.items() if a == asset})
        return held


def stakes_of(validators: Iterable[Validator]) -> dict[str, int]:
    """Who counts toward finality, and with how much: the active validators' stakes."""
    return {v.node_id: v.stake for v in validators if v.phase == ACTIVE}


def stakes_after(stakes: dict[str, int], fx: dict[str, Any]) -> dict[str, int]:
    """The active stakes after a block with effects `fx`, from those before it (shared when unchanged)."""
    changes = fx.get("validators", ())
    if not changes:
        return stakes
    stakes = dict(stakes)
    for node_id, _before, after in changes:
        if after is not None and after["phase"] == ACTIVE:
            stakes[node_id] = after["stake"]
        else:
            stakes.pop(node_id, None)
    return stakes


def _summary(block: BlockInfo) -> dict[str, Any]:
    if block.summary is None:
        raise AssertionError(f"block {block.hash} has no summary: it is final or off the final branch")
    return block.summary


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
        chain.gpu_bindings[v["gpu_uuid"]] = v["node_id"]
    for r in event.relayers:
        alg, pk = r["key"]["alg"], bytes.fromhex(r["key"]["pk"])
        chain.relayers[r["relayer_id"]] = (alg, pk)
        chain.relayer_addresses[address_of(alg, pk)] = r["relayer_id"]
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
    if chain.canonical[-1] != event.parent:
        raise ValueError(f"block {event.block_hash} applied on {event.parent}, which is not the canonical tip")
    chain.do_effects(event.effects)
    info = _record(chain, event, chain.active_stakes)
    chain.canonical.append(info.hash)


@evolve.register
def _(event: BlockRecorded, ledger: Ledger) -> None:
    chain = ledger.chains[event.chain_id]
    stakes = stakes_after(BranchView(chain, chain.blocks[event.parent]).active_stakes, event.effects)
    _record(chain, event, stakes)


def _record(chain: ChainState, event: BlockApplied | BlockRecorded, stakes: dict[str, int]) -> BlockInfo:
    """A newly accepted block, with the stakes active after it on its branch."""
    chain.accepted += 1
    info = BlockInfo(
        event.block_hash, event.height, event.parent, event.timestamp_ms, event.proposer,
        stakes, sum(stakes.values()), order=chain.accepted, summary=block_summary(event),
    )
    # Votes that arrived before the block count now if their height is the block's; others are dropped.
    for node_id, height in chain.pending_votes.pop(info.hash, set()):
        if height == info.height:
            info.voters.add(node_id)
    chain.blocks[info.hash] = info
    chain.unsettled.add(info.hash)
    return info


@evolve.register
def _(event: ChainReorganized, ledger: Ledger) -> None:
    ledger.chains[event.chain_id].reorganizations += 1


@evolve.register
def _(event: BlockReverted, ledger: Ledger) -> None:
    chain = ledger.chains[event.chain_id]
    if chain.canonical[-1] != event.block_hash:
        raise ValueError(f"revert of {event.block_hash}, which is not the canonical tip")
    chain.undo_effects(event.effects)
    chain.canonical.pop()


@evolve.register
def _(event: BlockReapplied, ledger: Ledger) -> None:
    chain = ledger.chains[event.chain_id]
    if chain.canonical[-1] != event.parent:
        raise ValueError(f"reapply of {event.block_hash}, whose parent is not the canonical tip")
    chain.do_effects(event.effects)
    chain.canonical.append(event.block_hash)


@evolve.register
def _(event: ReservesAttested, ledger: Ledger) -> None:
    ledger.chains[event.chain_id].attested.add((event.asset, event.height))


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
    chain.settle()


def fold(ledger: Ledger, event: LedgerEvent, event_hash: str) -> None:
    """Apply one saved event and advance the log position."""
    evolve(event, ledger)
    ledger.seq = event.originator_version
    ledger.last_hash = event_hash
