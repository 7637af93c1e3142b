"""Shared fixtures. Each block below belongs to one part of the suite; keep them separate."""

from __future__ import annotations

# ================================================================================ chain fixtures (write side)
# `ledger`: the default Chain (tests/chain.py) on its own LedgerService; `make_ledger(...)`: more of them.
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.chain import STAKE, Chain, genesis_command, open_service, validators
from writes.service import LedgerService


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


@pytest.fixture(scope="session")
def rich_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data directory of tests/rich_log.py's log (every kind of event), built once: read it, or copy it."""
    from tests.rich_log import build_rich_log

    path = tmp_path_factory.mktemp("rich-log") / "data"
    build_rich_log(path)
    return path


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
    BlockReapplied,
    BlockRecorded,
    BlockReverted,
    ChainReorganized,
    GenesisAccepted,
    LedgerEvent,
    VoteAccepted,
    block_summary,
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
        cls: type[BlockApplied] | type[BlockRecorded] = BlockApplied,
    ) -> LedgerEvent:
        """A BlockApplied (or, with `cls=BlockRecorded`, a side block), its hash named after its position."""
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
            cls, chain_id=chain_id, block_hash=f"{len(self.events) + 1:064x}", height=height,
            parent=parent, proposer=proposer, operator=operator, timestamp_ms=timestamp_ms, block=block,
            tx_ids=ids, receipts=[list(r) for r in receipts], effects=effects,
        )

    def reorganized(
        self, chain_id: str, cause: str, ancestor: LedgerEvent, reverted: Sequence[LedgerEvent],
        applied: Sequence[LedgerEvent], new_tip: tuple[int, str] | None = None,
    ) -> LedgerEvent:
        """A ChainReorganized from the ancestor's event and the blocks' events (reverted newest first, applied
        oldest first); `new_tip` names a new block not logged yet (its BlockApplied follows the reapplies)."""
        applied_pairs = [[b.height, b.block_hash] for b in applied] + ([list(new_tip)] if new_tip else [])
        return self.add(
            ChainReorganized, chain_id=chain_id, cause=cause, ancestor_height=getattr(ancestor, "height", 0),
            ancestor_hash=ancestor.block_hash, ancestor_timestamp_ms=ancestor.timestamp_ms,
            old_tip=[reverted[0].height, reverted[0].block_hash], new_tip=applied_pairs[-1], depth=len(reverted),
            reverted=[[b.height, b.block_hash] for b in reverted], applied=applied_pairs,
        )

    def reverted(self, block: LedgerEvent) -> LedgerEvent:
        """The BlockReverted of a block logged before (by its BlockApplied or BlockRecorded event)."""
        return self.add(BlockReverted, **block_summary(block))

    def reapplied(self, block: LedgerEvent) -> LedgerEvent:
        return self.add(BlockReapplied, **block_summary(block))

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
