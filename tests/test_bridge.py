"""Bridge reserves on the write side (DOMAIN.md: Transactions (bridge kinds), Bridge reserves, Invariants; Precise
rules): deposits, withdrawal requests, confirmations and rejections, every rejection reason in order, reserve_id
idempotency, exact reverts, and liabilities = escrow over random sequences.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import build
from schemas.limits import AMOUNT_MAX
from tests.chain import ALICE, BOB, CAROL, FUNDS, Chain, genesis_command, keypair, open_service, validators
from writes.state import ChainState

RELAYER = keypair("relayer-a")
RELAYER_B = keypair("relayer-b", "ml-dsa-87")
RELAYERS = [("relayer-a", RELAYER), ("relayer-b", RELAYER_B)]


@pytest.fixture
def bridge(make_ledger: Any) -> Chain:
    return make_ledger(relayers=RELAYERS)


def receipts(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["status"], r["reason"]) for r in result["receipts"]]


def deposit(ledger: Chain, reserve_id: str, to: str = ALICE.address, amount: int = 500, asset: str = "USDC",
            relayer: Any = RELAYER) -> dict[str, Any]:
    return build.bridge_deposit(ledger.chain_id, relayer, reserve_id, asset, to, amount)


def request(ledger: Chain, reserve_id: str, amount: int = 200, owner: Any = ALICE, asset: str = "USDC",
            nonce: int | None = None) -> dict[str, Any]:
    nonce = ledger.nonce(owner.address) if nonce is None else nonce
    return build.withdraw_request(ledger.chain_id, owner, reserve_id, asset, amount, nonce=nonce)


def liabilities_equal_escrow(chain: ChainState) -> bool:
    for asset, (deposited, withdrawn, pending) in chain.bridge.items():
        balances = sum(v for (_, a), v in chain.balances.items() if a == asset)
        if balances + pending != deposited - withdrawn or min(deposited, withdrawn, pending) < 0:
            return False
    return True


def test_a_deposit_credits_the_account_and_creates_the_asset(bridge: Chain) -> None:
    assert receipts(bridge.apply([bridge.transfer(ALICE, BOB.address, 1, asset="USDC")])) == [
        ("rejected", "unknown_asset")
    ]
    result = bridge.apply([deposit(bridge, "dep-1"), bridge.transfer(ALICE, BOB.address, 100, asset="USDC")])
    assert receipts(result) == [("applied", ""), ("applied", "")]
    assert bridge.balance(ALICE.address, "USDC") == 400 and bridge.balance(BOB.address, "USDC") == 100
    assert bridge.state.bridge["USDC"] == [500, 0, 0]
    record = bridge.state.reserves["dep-1"]
    assert (record["kind"], record["status"], record["owner"], record["amount"]) == ("deposit", "deposited",
                                                                                       ALICE.address, 500)
    assert bridge.nonce(RELAYER.address) == 0  # relayer txs never touch nonces


def test_deposit_rejections(bridge: Chain) -> None:
    bridge.apply([deposit(bridge, "dep-1")])
    result = bridge.apply([
        build.bridge_deposit(bridge.chain_id, BOB, "dep-2", "USDC", ALICE.address, 5),  # not a relayer key
        deposit(bridge, "dep-1", relayer=RELAYER_B),  # a repeat, by any relayer
        deposit(bridge, "dep-3", to=BOB.address, amount=AMOUNT_MAX),  # deposited would reach 2**63
    ])
    assert receipts(result) == [("rejected", "not_relayer"), ("rejected", "duplicate_reserve_id"),
                                ("rejected", "amount_overflow")]
    assert bridge.state.bridge["USDC"] == [500, 0, 0]


def test_a_withdrawal_is_pending_then_confirmed(bridge: Chain) -> None:
    bridge.apply([deposit(bridge, "dep-1")])
    assert receipts(bridge.apply([request(bridge, "wd-1")])) == [("applied", "")]
    assert bridge.balance(ALICE.address, "USDC") == 300 and bridge.nonce(ALICE.address) == 1
    assert bridge.state.bridge["USDC"] == [500, 0, 200]
    assert bridge.state.reserves["wd-1"]["status"] == "pending"
    assert liabilities_equal_escrow(bridge.state)
    result = bridge.apply([build.withdraw_confirm(bridge.chain_id, RELAYER_B, "wd-1", "0xpaid")])
    assert receipts(result) == [("applied", "")]
    assert bridge.state.bridge["USDC"] == [500, 200, 0]
    record = bridge.state.reserves["wd-1"]
    assert (record["status"], record["external_tx"], record["relayer"]) == ("confirmed", "0xpaid", RELAYER_B.address)
    assert liabilities_equal_escrow(bridge.state)


def test_a_rejected_withdrawal_refunds_the_owner(bridge: Chain) -> None:
    bridge.apply([deposit(bridge, "dep-1"), request(bridge, "wd-1")])
    result = bridge.apply([build.withdraw_reject(bridge.chain_id, RELAYER, "wd-1", "address on a sanctions list")])
    assert receipts(result) == [("applied", "")]
    assert bridge.balance(ALICE.address, "USDC") == 500 and bridge.state.bridge["USDC"] == [500, 0, 0]
    assert bridge.state.reserves["wd-1"]["reason"] == "address on a sanctions list"


def test_withdraw_request_rejections_in_order(bridge: Chain) -> None:
    bridge.apply([deposit(bridge, "dep-1")])
    result = bridge.apply([
        request(bridge, "dep-1", nonce=3),  # bad_nonce before duplicate_reserve_id
        request(bridge, "dep-1", nonce=0),  # a reserve_id is unique across deposits and withdrawals
        request(bridge, "wd-1", asset="EURC", nonce=0),
        request(bridge, "wd-1", amount=501, nonce=0),
        request(bridge, "wd-1", amount=500, nonce=0),
        request(bridge, "wd-1", amount=1, nonce=1),  # now taken
    ])
    assert receipts(result) == [
        ("rejected", "bad_nonce"), ("rejected", "duplicate_reserve_id"), ("rejected", "unknown_asset"),
        ("rejected", "insufficient_funds"), ("applied", ""), ("rejected", "duplicate_reserve_id"),
    ]


@pytest.mark.parametrize("confirm", [True, False])
def test_confirm_and_reject_rejections(bridge: Chain, confirm: bool) -> None:
    make = build.withdraw_confirm if confirm else build.withdraw_reject
    bridge.apply([deposit(bridge, "dep-1"), request(bridge, "wd-1")])
    result = bridge.apply([
        make(bridge.chain_id, ALICE, "wd-1"),  # not a relayer
        make(bridge.chain_id, RELAYER, "wd-9"),
        make(bridge.chain_id, RELAYER, "dep-1"),  # a deposit is never pending
        make(bridge.chain_id, RELAYER, "wd-1"),
        make(bridge.chain_id, RELAYER, "wd-1"),  # a repeat: no longer pending
        build.withdraw_reject(bridge.chain_id, RELAYER, "wd-1"),
        build.withdraw_confirm(bridge.chain_id, RELAYER, "wd-1"),
    ])
    assert receipts(result) == [
        ("rejected", "not_relayer"), ("rejected", "unknown_reserve_id"), ("rejected", "not_pending"),
        ("applied", ""), ("rejected", "not_pending"), ("rejected", "not_pending"), ("rejected", "not_pending"),
    ]
    assert liabilities_equal_escrow(bridge.state)


def test_a_reorg_undoes_bridge_effects_and_frees_the_reserve_id(bridge: Chain) -> None:
    b1 = bridge.apply([deposit(bridge, "dep-1")])["hash"]
    bridge.apply([request(bridge, "wd-1"), deposit(bridge, "dep-2", asset="EURC")])
    s2 = bridge.submit(bridge.block([], parent=b1, proposer=1))["hash"]
    assert bridge.submit(bridge.block([], parent=s2, proposer=1))["reorg"]["depth"] == 1
    state = bridge.state
    assert state.bridge == {"USDC": [500, 0, 0]} and set(state.reserves) == {"dep-1"}
    assert not state.has_asset("EURC") and state.balance(ALICE.address, "USDC") == 500
    # On this branch wd-1 and dep-2 were never used.
    result = bridge.apply([request(bridge, "wd-1", amount=5), deposit(bridge, "dep-2", asset="EURC")])
    assert receipts(result) == [("applied", ""), ("applied", "")]


def test_a_side_branch_sees_its_own_reserves(bridge: Chain) -> None:
    b1 = bridge.apply()["hash"]
    bridge.apply([deposit(bridge, "dep-1")])
    # On the branch through b1 there is no USDC yet and dep-1 is free.
    side = bridge.block([deposit(bridge, "dep-1", to=BOB.address, amount=7), request(bridge, "wd-1", nonce=0)],
                        parent=b1, proposer=1)
    s2 = bridge.submit(side)["hash"]
    wins = bridge.submit(bridge.block([], parent=s2, proposer=1))
    assert wins["reorg"]["depth"] == 1
    assert bridge.state.bridge == {"USDC": [7, 0, 0]}
    assert bridge.balance(BOB.address, "USDC") == 7 and bridge.balance(ALICE.address, "USDC") == 0


# ========================================================================================= property test

ops = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), st.integers(0, 2), st.integers(1, 900), st.integers(0, 5)),
        st.tuples(st.just("request"), st.integers(0, 2), st.integers(1, 900), st.integers(0, 5)),
        st.tuples(st.just("confirm"), st.integers(0, 2), st.just(0), st.integers(0, 5)),
        st.tuples(st.just("reject"), st.integers(0, 2), st.just(0), st.integers(0, 5)),
        st.tuples(st.just("transfer"), st.integers(0, 2), st.integers(1, 900), st.integers(0, 2)),
    ),
    max_size=5,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(st.tuples(ops, st.sampled_from(["USDC", "EURC"])), min_size=1, max_size=6))
def test_liabilities_equal_escrow_over_random_bridge_sequences(blocks: list[Any]) -> None:
    accounts = (ALICE, BOB, CAROL)
    vals = validators()
    with tempfile.TemporaryDirectory() as tmp:
        service = open_service(Path(tmp))
        try:
            ledger = Chain(service, genesis_command(vals=vals, relayers=RELAYERS), vals)
            for plan, asset in blocks:
                nonces = {k.address: ledger.nonce(k.address) for k in accounts}
                txs = []
                for op, who, amount, rid in plan:
                    account = accounts[who]
                    if op == "deposit":
                        txs.append(build.bridge_deposit(ledger.chain_id, RELAYER, f"r{rid}", asset, account.address,
                                                        amount))
                    elif op == "request":
                        txs.append(build.withdraw_request(ledger.chain_id, account, f"r{rid}", asset, amount,
                                                          nonce=nonces[account.address]))
                        nonces[account.address] += 1
                    elif op == "confirm":
                        txs.append(build.withdraw_confirm(ledger.chain_id, RELAYER_B, f"r{rid}"))
                    elif op == "reject":
                        txs.append(build.withdraw_reject(ledger.chain_id, RELAYER, f"r{rid}"))
                    else:
                        txs.append(ledger.transfer(account, accounts[rid].address, amount, asset=asset,
                                                   nonce=nonces[account.address]))
                        nonces[account.address] += 1
                result = ledger.apply(txs)
                assert len(result["receipts"]) == len(txs)
                state = ledger.state
                assert liabilities_equal_escrow(state)
                assert all(v >= 0 for v in state.balances.values())
                # CELL is untouched by the bridge.
                cell = sum(v for (_, a), v in state.balances.items() if a == "CELL")
                assert cell + sum(v.stake for v in state.validators.values()) == state.minted - state.burned
                # No bridge tx pays or charges CELL (and the transfers here move bridged assets without a fee).
                assert [state.balance(k.address, "CELL") for k in accounts] == [FUNDS] * 3
        finally:
            service.close()
