"""Shared fixtures. Each block below belongs to one part of the suite; keep them separate."""

from __future__ import annotations

# ================================================================================ chain fixtures (write side)
# Deterministic ML-DSA keys, a default genesis, and `Chain`: a LedgerService on a fresh SQLite file with
# helpers that build, sign and submit blocks, transfers and votes on its canonical tip.
import copy
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from accelerators.verify import BatchVerifier
from schemas import build
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

    def __init__(self, service: LedgerService, genesis: dict[str, Any], vals: Sequence[ValidatorKeys]) -> None:
        self.service = service
        self.genesis = genesis
        self.chain_id: str = genesis["chain_id"]
        self.vals = list(vals)
        result = service.submit(genesis)
        assert result["status"] == "accepted", result
        self.genesis_hash: str = result["hash"]

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


@pytest.fixture
def make_ledger(tmp_path: Path) -> Iterator[Callable[..., Chain]]:
    """make_ledger(stakes=..., allocations=..., params=..., chain_id=...) -> a Chain on its own service."""
    services: list[LedgerService] = []

    def make(stakes: Sequence[int] = (STAKE, STAKE, STAKE), **genesis: Any) -> Chain:
        service = open_service(tmp_path / f"ledger-{len(services)}")
        services.append(service)
        vals = validators(stakes)
        return Chain(service, genesis_command(vals=vals, **genesis), vals)

    yield make
    for service in services:
        service.close()


@pytest.fixture
def ledger(make_ledger: Callable[..., Chain]) -> Chain:
    """The default chain: three validators of 10 CELL, alice, bob and carol with 100 CELL each."""
    return make_ledger()


# ============================================================================ end of chain fixtures


# ============================================================ chdb projection engine (projections/, streams/)
# chdb opens one engine path per process: every test here shares `chdb_dsn` and gets a fresh *database* in it
# (`projection_store`), and closes its clients afterwards so that another engine path can open later.
# `EventLog` builds hash-chained ledger events by hand, for projections tested apart from writes/.
import uuid  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from projections.store import ProjectionStore  # noqa: E402
from schemas.canonical import ZERO_HASH, tx_id, tx_root  # noqa: E402
from schemas.events import (  # noqa: E402
    LOG_ID,
    SCHEMA_VERSION,
    BlockApplied,
    BlockFinalized,
    GenesisAccepted,
    LedgerEvent,
    VoteAccepted,
)
from writes.service import LedgerApplication  # noqa: E402

EVENT_TIME = datetime(2025, 1, 1, tzinfo=UTC)  # recording metadata, outside the hash: fixed for determinism


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The one chdb engine path of this test process, as a DSN (`chdb:///abs/path`)."""
    return f"chdb://{tmp_path_factory.mktemp('chdb').resolve().as_posix()}"


@pytest.fixture
def projection_store(chdb_dsn: str) -> Iterator[ProjectionStore]:
    """A ProjectionStore on a fresh database with every table; dropped and closed afterwards."""
    store = ProjectionStore(chdb_dsn, database=f"test_{uuid.uuid4().hex[:16]}")
    yield store
    store.drop()
    store.close()


@pytest.fixture
def chdb_client(projection_store: ProjectionStore) -> Any:
    """A clickhouse-connect client whose database is `projection_store`'s."""
    return projection_store.client


@pytest.fixture
def sqlite_log_app(tmp_path: Path) -> Iterator[LedgerApplication]:
    """The ledger's eventsourcing application on a fresh SQLite file (nothing in it)."""
    app = LedgerApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "events.sqlite")}
    )
    yield app
    app.close()


class EventLog:
    """Ledger events built by hand: one stream (LOG_ID), consecutive versions, each naming the previous hash.

    Payloads are taken as given (the test states the effects it expects), so it can describe any history.
    """

    def __init__(self) -> None:
        self.events: list[LedgerEvent] = []

    def add(self, cls: type[LedgerEvent], **payload: Any) -> LedgerEvent:
        prev = self.events[-1].hash() if self.events else ZERO_HASH
        event = cls(
            originator_id=LOG_ID, originator_version=len(self.events) + 1, timestamp=EVENT_TIME,
            prev_hash=prev, schema_version=SCHEMA_VERSION, **payload,
        )
        self.events.append(event)
        return event

    def genesis(
        self, chain_id: str, timestamp_ms: int, allocations: Sequence[tuple[str, int]],
        validators: Sequence[tuple[str, str, int]],
    ) -> LedgerEvent:
        """validators: (node_id, operator, stake)."""
        vals = [
            {"node_id": n, "operator": op, "key": {"alg": "ml-dsa-65", "pk": "00"}, "gpu_uuid": f"GPU-{n}",
             "stake": stake}
            for n, op, stake in validators
        ]
        genesis = {"kind": "genesis", "chain_id": chain_id, "timestamp_ms": timestamp_ms}
        return self.add(
            GenesisAccepted, chain_id=chain_id, block_hash=f"{len(self.events) + 1:064x}", genesis=genesis,
            params={"block_reward": 2_000_000}, timestamp_ms=timestamp_ms,
            allocations=[[a, n] for a, n in allocations], validators=vals, relayers=[],
        )

    def block(
        self, chain_id: str, height: int, parent: str, proposer: str, operator: str, timestamp_ms: int,
        txs: Sequence[dict[str, Any]] = (), receipts: Sequence[tuple[str, str]] = (), *,
        balances: Sequence[tuple[str, str, int]] = (), nonces: Sequence[tuple[str, int, int]] = (),
        fees: int = 0, reward: int = 2_000_000, volume: Sequence[tuple[str, int]] = (),
    ) -> LedgerEvent:
        ids = [tx_id(tx) for tx in txs]
        block = {
            "kind": "block", "chain_id": chain_id, "height": height, "parent": parent, "proposer": proposer,
            "timestamp_ms": timestamp_ms, "tx_root": tx_root(ids), "txs": list(txs), "sig": "",
        }
        effects = {
            "balances": [list(b) for b in balances], "nonces": [list(n) for n in nonces], "reward": reward,
            "fees": fees, "minted": reward, "burned": 0, "releases": [], "volume": [list(v) for v in volume],
        }
        return self.add(
            BlockApplied, chain_id=chain_id, block_hash=f"{len(self.events) + 1:064x}", height=height,
            parent=parent, proposer=proposer, operator=operator, timestamp_ms=timestamp_ms, block=block,
            tx_ids=ids, receipts=[list(r) for r in receipts], effects=effects,
        )

    def vote(self, chain_id: str, node_id: str, height: int, block_hash: str) -> LedgerEvent:
        vote = {"kind": "vote", "chain_id": chain_id, "node_id": node_id, "height": height,
                "block_hash": block_hash, "sig": ""}
        return self.add(VoteAccepted, chain_id=chain_id, node_id=node_id, height=height, block_hash=block_hash,
                        vote=vote)

    def finalized(
        self, chain_id: str, blocks: Sequence[tuple[int, str]], head_height: int, head_timestamp_ms: int,
        voting_stake: int, total_stake: int,
    ) -> LedgerEvent:
        height, block_hash = blocks[-1]
        return self.add(
            BlockFinalized, chain_id=chain_id, block_hash=block_hash, height=height, voting_stake=voting_stake,
            total_stake=total_stake, finalized=[list(b) for b in blocks], head_height=head_height,
            head_timestamp_ms=head_timestamp_ms,
        )


def transfer_tx(chain_id: str, sender: str, to: str, amount: int, *, fee: int = 0, nonce: int = 0,
                asset: str = "CELL") -> dict[str, Any]:
    """An unsigned transfer in wire shape (projections never verify; its tx_id is still its canonical hash)."""
    return {
        "kind": "transfer", "chain_id": chain_id, "signer": sender, "key": {"alg": "ml-dsa-65", "pk": "00"},
        "from": sender, "to": to, "asset": asset, "amount": amount, "fee": fee, "nonce": nonce, "sig": "",
    }


@pytest.fixture
def event_log() -> EventLog:
    return EventLog()


@pytest.fixture(scope="session")
def event_log_class() -> type[EventLog]:
    """EventLog itself, for module-scoped fixtures (conftest is not importable)."""
    return EventLog


@pytest.fixture(scope="session")
def make_transfer() -> Callable[..., dict[str, Any]]:
    """transfer_tx(chain_id, sender, to, amount, fee=, nonce=, asset=) as a fixture (conftest is not imported)."""
    return transfer_tx


# ======================================================================== end of chdb projection engine
