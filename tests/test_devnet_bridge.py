"""The devnet's bridge (writes/devnet.py): genesis relayers derived from the seed, deposits now and then (the CLI's
reserved accounts included), withdrawal requests by devnet accounts, and a relayer that confirms or rejects every
withdrawal that waited its turn (the CLI's too), so that reserves move and attestations follow in `tally up`. Every
other devnet behaviour (forks, validators, the pool) runs beside it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accelerators.verify import BatchVerifier
from schemas import build
from schemas.canonical import tx_id
from schemas.events import BlockApplied, ReservesAttested
from schemas.settings import Settings
from writes.devnet import (
    BRIDGED_ASSETS,
    DEPOSIT_PERIOD_BLOCKS,
    RELAYERS,
    SEED_FILE,
    SETTLE_AFTER_BLOCKS,
    SETTLEMENTS_PER_BLOCK_MAX,
    WITHDRAW_PERIOD_BLOCKS,
    Devnet,
    derive_keys,
    devnet_genesis,
    plan_settlements,
    relayer_key,
    reserved_accounts,
)
from writes.service import LedgerService
from writes.state import ChainState
from writes.txpool import TxPool

SEED = bytes.fromhex("5e" * 32)
BRIDGE = {"deposit_period_blocks": DEPOSIT_PERIOD_BLOCKS, "withdraw_period_blocks": WITHDRAW_PERIOD_BLOCKS}
BRIDGE_KINDS = {"bridge_deposit", "withdraw_request", "withdraw_confirm", "withdraw_reject"}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[LedgerService]:
    svc = LedgerService(Settings(data_dir=tmp_path / "ledger", verify_workers=1, reserves_every_blocks=5),
                        verifier=BatchVerifier(1))
    yield svc
    svc.close()


def seeded(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / SEED_FILE).write_text(SEED.hex() + "\n")
    return data


def liabilities_equal_escrow(chain: ChainState) -> bool:
    for asset, (deposited, withdrawn, pending) in chain.bridge.items():
        balances = sum(v for (_, a), v in chain.balances.items() if a == asset)
        if balances + pending != deposited - withdrawn or min(balances, pending, deposited - withdrawn) < 0:
            return False
    return True


def test_the_genesis_names_the_relayers_derived_from_the_seed() -> None:
    genesis, _ = devnet_genesis(SEED, timestamp_ms=1_000)
    assert genesis["relayers"] == [
        {"relayer_id": f"devnet-relayer-{i}", "key": relayer_key(SEED, i).key} for i in range(RELAYERS)
    ]
    assert relayer_key(SEED, 0).address != relayer_key(bytes(32), 0).address


def test_the_relayer_settles_what_waited_oldest_first_and_a_bounded_number() -> None:
    relayers = [relayer_key(SEED, 0)]
    pending = [{"reserve_id": f"w{i:02d}", "height": 10 - i % 3, "status": "pending"} for i in range(12)]
    height = 10 + SETTLE_AFTER_BLOCKS - 1  # the withdrawals requested at 10 wait one block more
    ops = plan_settlements(SEED, relayers, pending, chain_id="devnet", height=height)
    waited = sorted((r["height"], r["reserve_id"]) for r in pending if r["height"] < 10)
    assert [op.tx["reserve_id"] for op in ops] == [rid for _, rid in waited][:SETTLEMENTS_PER_BLOCK_MAX]
    assert {op.kind for op in ops} <= {"withdraw_confirm", "withdraw_reject"} and all(op.sender == -1 for op in ops)
    later = plan_settlements(SEED, relayers, pending, chain_id="devnet", height=100)
    assert len(later) == SETTLEMENTS_PER_BLOCK_MAX


def test_reserves_move_beside_forks_validators_and_the_pool(service: LedgerService, tmp_path: Path) -> None:
    pool = TxPool("devnet")
    devnet = Devnet(
        service, seeded(tmp_path), txs_per_block=4, rng=random.Random(7), fork_period_blocks=7,
        enroll_period_blocks=4, unenroll_period_blocks=9, equivocation_period_blocks=6, pool=pool, **BRIDGE,
    )  # fmt: skip
    devnet.step()
    # A CLI user (a reserved account) asks to withdraw what a deposit gave it: the relayer settles it too.
    user = reserved_accounts(derive_keys(SEED))[0]
    chain = service.ledger.chains["devnet"]
    for _ in range(40):
        devnet.step()
        chain = service.ledger.chains["devnet"]
        assert liabilities_equal_escrow(chain)
        held = [(a, chain.balance(user.address, a)) for a in BRIDGED_ASSETS if chain.balance(user.address, a)]
        if held and not any(r["owner"] == user.address and r["kind"] == "withdrawal" for r in chain.reserves.values()):
            asset, amount = held[0]
            request = build.withdraw_request("devnet", user, "cli:withdrawal:1", asset, amount,
                                             nonce=chain.next_nonce(user.address))
            assert pool.offer([request])[0]["status"] == "queued"
    assert devnet.errors == devnet.blocks_rejected == devnet.unexpected_receipts == devnet.unfinalized == 0
    assert devnet.reorgs == devnet.forks >= 3 and devnet.enrollments >= 2 and devnet.slashes_applied >= 1
    assert devnet.deposits >= 12 and devnet.withdrawal_requests >= 8
    assert devnet.withdrawals_confirmed >= 3 and devnet.withdrawals_rejected >= 1
    assert chain.finalized_height == chain.tip.height
    mine = chain.reserves["cli:withdrawal:1"]
    assert mine["status"] in ("confirmed", "rejected") and mine["relayer"] in {
        relayer_key(SEED, i).address for i in range(RELAYERS)
    }
    events = [service.app.mapper.to_domain_event(n) for n in service.notifications()]
    kinds = {tx["kind"] for e in events if isinstance(e, BlockApplied) for tx in e.block["txs"]}
    assert BRIDGE_KINDS <= kinds
    # Deposits reach the CLI's accounts too (they never sign for the devnet: only for themselves, via the pool).
    reserved = {k.address for k in reserved_accounts(derive_keys(SEED))}
    credited = {tx["to"] for e in events if isinstance(e, BlockApplied) for tx in e.block["txs"]
                if tx["kind"] == "bridge_deposit"}
    assert credited & reserved
    devnet_signed = {tx["signer"] for e in events if isinstance(e, BlockApplied) for tx in e.block["txs"]
                     if tx_id(tx) != tx_id(request)}
    assert not devnet_signed & reserved
    # Attestations follow finality: every 5 final blocks, per bridged asset.
    attested = [e for e in events if isinstance(e, ReservesAttested)]
    assert {e.asset for e in attested} == set(BRIDGED_ASSETS)
    assert all(e.height % 5 == 0 and e.ratio == "1.000000" for e in attested)


def test_a_devnet_made_before_its_relayers_keeps_going_without_a_bridge(
    service: LedgerService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    genesis, _ = devnet_genesis(SEED, timestamp_ms=1_000)
    assert service.submit({**genesis, "relayers": []})["status"] == "accepted"
    devnet = Devnet(service, seeded(tmp_path), txs_per_block=3, fork_period_blocks=0, **BRIDGE)
    with caplog.at_level(logging.WARNING, logger="tally.devnet"):
        results: list[dict[str, Any]] = [devnet.step() for _ in range(6)]
    assert all(r["status"] == "accepted" for r in results) and devnet.errors == devnet.deposits == 0
    assert sum("none of the devnet's relayers" in r.getMessage() for r in caplog.records) == 1
