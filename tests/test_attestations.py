"""Proof-of-reserves attestations on the write side (DOMAIN.md, Proof of reserves; writes/reserves.py): recorded in
the log when finality passes a multiple of the period and on request, over the final state, and every account's
inclusion checks out against the recorded root with nothing but its account secret, its balance and the proof.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from accelerators.merkle_cpu import verify_sum_inclusion
from schemas import build
from schemas.canonical import block_hash
from schemas.events import ReservesAttested
from schemas.settings import Settings
from tests.chain import ALICE, BOB, CAROL, Chain, genesis_command, keypair, validators
from writes import reserves
from writes.service import LedgerService, load_reserves_secret

RELAYER = keypair("relayer-a")


@pytest.fixture
def chain(tmp_path: Path) -> Any:
    service = LedgerService(Settings(data_dir=tmp_path, verify_workers=1, reserves_every_blocks=2))
    vals = validators()
    yield Chain(service, genesis_command(vals=vals, relayers=[("relayer-a", RELAYER)]), vals)
    service.close()


def attestations(ledger: Chain) -> list[ReservesAttested]:
    app = ledger.service.app
    events = [app.mapper.to_domain_event(n) for n in ledger.service.notifications()]
    return [e for e in events if isinstance(e, ReservesAttested)]


def deposit(ledger: Chain, rid: str, to: str, amount: int, asset: str = "USDC") -> dict[str, Any]:
    return build.bridge_deposit(ledger.chain_id, RELAYER, rid, asset, to, amount)


def test_finality_past_a_multiple_of_the_period_attests_every_bridged_asset(chain: Chain) -> None:
    b1 = chain.apply([deposit(chain, "d1", ALICE.address, 700), deposit(chain, "d2", BOB.address, 300)])["hash"]
    request = build.withdraw_request(chain.chain_id, ALICE, "w1", "USDC", 100, nonce=0)
    b2 = chain.apply([request, deposit(chain, "d3", CAROL.address, 5, "EURC")])["hash"]
    chain.apply([deposit(chain, "d4", CAROL.address, 1_000)])  # height 3: not attested (final at 2 only)
    chain.finalize(b1, 1)
    assert attestations(chain) == []  # 1 is not a multiple of 2
    chain.finalize(b2, 2)
    found = attestations(chain)
    assert [(a.asset, a.height, a.block_hash, a.cause) for a in found] == [
        ("EURC", 2, b2, "schedule"), ("USDC", 2, b2, "schedule"),
    ]
    usdc = found[1]
    assert (usdc.total, usdc.pending, usdc.liabilities) == (900, 100, 1_000)
    assert (usdc.deposited, usdc.withdrawn, usdc.escrow, usdc.ratio) == (1_000, 0, 1_000, "1.000000")
    assert usdc.leaf_count == 2 and usdc.scheme == "tally-por-v1"
    # Each holder checks its own leaf with its account secret, its balance, the proof and the recorded root.
    secret = load_reserves_secret(chain.service.settings.reserves_secret_path)
    tree = reserves.build_tree(secret, chain.chain_id, "USDC", 2, [(ALICE.address, 600), (BOB.address, 300)])
    root = (bytes.fromhex(usdc.root), usdc.total)
    for address, balance in ((ALICE.address, 600), (BOB.address, 300)):
        account_secret = reserves.account_secret(secret, chain.chain_id, address)
        leaf_id = reserves.blinded_id(account_secret, chain.chain_id, "USDC", 2, address)
        assert verify_sum_inclusion(leaf_id, balance, tree.proof(address), root)
        assert not verify_sum_inclusion(leaf_id, balance + 1, tree.proof(address), root)
    # Nothing in a leaf is the address.
    assert all(ALICE.address.encode() not in leaf for leaf, _ in tree.leaves)


def test_an_attestation_on_request_and_its_repeat(chain: Chain) -> None:
    b1 = chain.apply([deposit(chain, "d1", ALICE.address, 10)])["hash"]
    chain.finalize(b1, 1)
    command = {"kind": "attest_reserves", "chain_id": chain.chain_id, "asset": "USDC"}
    first = chain.submit(command)
    assert first["status"] == "accepted" and first["height"] == 1 and first["duplicate"] is False
    assert first["ratio"] == "1.000000" and len(first["root"]) == 64
    again = chain.submit(command)
    assert again["duplicate"] is True and len(attestations(chain)) == 1
    assert attestations(chain)[0].cause == "request"


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ({"kind": "attest_reserves", "chain_id": "tally-test", "asset": "EURC"}, "unknown_asset"),
        ({"kind": "attest_reserves", "chain_id": "elsewhere", "asset": "USDC"}, "unknown_chain"),
        ({"kind": "attest_reserves", "chain_id": "tally-test", "asset": "CELL"}, "malformed_command"),
        ({"kind": "attest_reserves", "chain_id": "tally-test"}, "malformed_command"),
        ({"kind": "attest_reserves", "chain_id": "tally-test", "asset": "USDC", "x": 1}, "malformed_command"),
    ],
)
def test_attestation_request_rejections(chain: Chain, command: dict[str, Any], reason: str) -> None:
    chain.finalize(chain.apply([deposit(chain, "d1", ALICE.address, 10)])["hash"], 1)
    chain.reject(command, reason)


def test_an_asset_deposited_after_the_final_height_is_not_attested_there(chain: Chain) -> None:
    chain.apply()
    b2 = chain.apply()["hash"]
    chain.apply([deposit(chain, "d1", ALICE.address, 10)])
    chain.finalize(b2, 2)
    assert attestations(chain) == []
    chain.reject({"kind": "attest_reserves", "chain_id": chain.chain_id, "asset": "USDC"}, "unknown_asset")


def test_a_block_final_on_arrival_is_attested_with_its_own_effects(chain: Chain) -> None:
    b1 = chain.apply([deposit(chain, "d1", ALICE.address, 10)])["hash"]
    chain.finalize(b1, 1)
    block = chain.block([deposit(chain, "d2", BOB.address, 5)])
    for i in range(3):
        chain.submit(chain.vote(i, block_hash(block), 2))
    assert chain.submit(block)["finalized_height"] == 2
    (found,) = attestations(chain)
    assert (found.height, found.total, found.leaf_count) == (2, 15, 2)


def test_the_secret_survives_restarts_and_must_be_32_bytes(tmp_path: Path) -> None:
    path = tmp_path / "reserves.key"
    first = load_reserves_secret(path)
    assert load_reserves_secret(path) == first and len(first) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        load_reserves_secret(path)


def test_ratio_is_truncated_and_absent_when_nothing_is_owed() -> None:
    assert reserves.ratio(2, 3) == "0.666666"
    assert reserves.ratio(5, 4) == "1.250000"
    assert reserves.ratio(0, 0) is None
