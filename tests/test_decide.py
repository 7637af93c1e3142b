"""DOMAIN.md's rules for genesis, blocks, transfers, votes and finality, through the service.

Every rejection is checked with `Chain.reject` (tests/conftest.py): the reason, and that nothing was appended
and the in-memory state did not change.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import build
from schemas.canonical import EMPTY_ROOT, block_hash, genesis_hash, tx_id, tx_root
from schemas.events import BlockFinalized
from schemas.limits import AMOUNT_MAX, PARAM_DEFAULTS
from schemas.signing import sign
from tests.chain import (
    ACCOUNTS,
    ALICE,
    BOB,
    CAROL,
    CELL,
    CHAIN_ID,
    FUNDS,
    STAKE,
    Chain,
    genesis_command,
    keypair,
    open_service,
    validators,
)
from tests.malformed import BLOCK_CASES, GENESIS_CASES, TX_CASES, VOTE_CASES, Case
from writes.state import ACTIVE, UNBONDING

REWARD = PARAM_DEFAULTS["block_reward"]
OPERATORS = [v.operator.address for v in validators()]
MakeLedger = Callable[..., Chain]


def statuses(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["status"], r["reason"]) for r in result["receipts"]]


def operator(ledger: Chain, i: int) -> str:
    return ledger.vals[i].operator.address


def mismatched_tx(ledger: Chain, nonce: int = 0) -> dict[str, Any]:
    """Signed by alice with alice's key, but naming bob as signer (and from): signer_mismatch."""
    tx = {
        "kind": "transfer", "chain_id": ledger.chain_id, "signer": BOB.address, "key": ALICE.key,
        "from": BOB.address, "to": CAROL.address, "asset": "CELL", "amount": 1, "fee": 0, "nonce": nonce,
    }
    return sign(tx, ALICE)


def forged_tx(ledger: Chain, nonce: int = 0) -> dict[str, Any]:
    """Alice's key and address, bob's signature: bad_tx_signature."""
    return sign(ledger.transfer(ALICE, BOB.address, 1, nonce=nonce), BOB)


# ============================================================================================== genesis


def test_genesis_is_recorded(ledger: Chain) -> None:
    state = ledger.state
    assert ledger.genesis_hash == genesis_hash(ledger.genesis)
    assert state.params == PARAM_DEFAULTS
    assert [state.balance(k.address, "CELL") for k in ACCOUNTS] == [FUNDS] * 3
    assert {n: (v.stake, v.phase) for n, v in state.validators.items()} == {
        "node-0": (STAKE, ACTIVE), "node-1": (STAKE, ACTIVE), "node-2": (STAKE, ACTIVE),
    }
    assert state.minted == 3 * FUNDS + 3 * STAKE and state.burned == 0
    assert state.tip.height == 0 and state.tip.hash == ledger.genesis_hash
    assert state.blocks[ledger.genesis_hash].finalized and state.finalized_height == 0
    assert ledger.service.max_position() == 1


def test_genesis_result(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    g = genesis_command("second-chain")
    assert ledger.submit(g) == {
        "status": "accepted", "kind": "genesis", "chain_id": "second-chain", "hash": genesis_hash(g), "height": 0,
    }


def test_genesis_allocations_to_one_address_add_up(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(allocations=[(ALICE.address, 5), (BOB.address, 7), (ALICE.address, 11)])
    assert ledger.balance(ALICE.address) == 16 and ledger.balance(BOB.address) == 7
    assert ledger.state.minted == 23 + 3 * STAKE


def test_genesis_params_are_taken(make_ledger: MakeLedger) -> None:
    params = {"min_stake": 5, "block_reward": 7, "slash_bps": 10_000, "max_block_txs": 4}
    ledger = make_ledger(stakes=(5, 6, 7), params=params)
    assert ledger.state.params == {**PARAM_DEFAULTS, **params}
    ledger.apply(proposer=1)
    assert ledger.balance(operator(ledger, 1)) == 7


@pytest.mark.parametrize("case", GENESIS_CASES, ids=[c.id for c in GENESIS_CASES])
def test_invalid_genesis(ledger: Chain, case: Case) -> None:
    relayers = [("relayer-a", keypair("relayer-a")), ("relayer-b", keypair("relayer-b"))]
    ledger.reject(case.mutate(genesis_command("other-chain", relayers=relayers)), "invalid_genesis")


def test_genesis_exists_even_if_identical(ledger: Chain) -> None:
    ledger.reject(ledger.genesis, "genesis_exists")
    ledger.reject(genesis_command(allocations=[]), "genesis_exists")


# ====================================================================================== block rejections


def test_a_valid_block_is_applied(ledger: Chain) -> None:
    tx = ledger.transfer(ALICE, BOB.address, 5 * CELL, fee=3)
    block = ledger.block([tx], proposer=2)  # node-2 signs with ML-DSA-87
    result = ledger.submit(block)
    assert result == {
        "status": "accepted", "kind": "block", "chain_id": CHAIN_ID, "hash": block_hash(block), "height": 1,
        "tx_ids": [tx_id(tx)],
        "receipts": [{"tx_id": tx_id(tx), "status": "applied", "reason": "", "height": 1, "index": 0}],
        "finalized_height": 0, "canonical": True, "reorg": None,
    }
    assert ledger.state.tip.hash == block_hash(block)
    assert ledger.service.max_position() == 2


@pytest.mark.parametrize("case", BLOCK_CASES, ids=[c.id for c in BLOCK_CASES])
def test_malformed_block(ledger: Chain, case: Case) -> None:
    ledger.reject(case.mutate(ledger.block([ledger.transfer(ALICE, BOB.address, 1)])), "malformed_block")


def test_unknown_chain(ledger: Chain) -> None:
    ledger.reject(ledger.block(chain_id="other-chain"), "unknown_chain")


def test_duplicate_block(ledger: Chain) -> None:
    block = ledger.block([ledger.transfer(ALICE, BOB.address, 1)])
    ledger.submit(block)
    ledger.reject(block, "duplicate_block")
    ledger.apply()
    ledger.apply()
    ledger.reject(block, "duplicate_block")  # not a side block: the earlier reason


def test_unknown_parent(ledger: Chain) -> None:
    ledger.reject(ledger.block(parent="cd" * 32), "unknown_parent")
    ledger.reject(ledger.block(parent=EMPTY_ROOT), "unknown_parent")


def test_unknown_parent_from_another_chain(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    ledger.submit(genesis_command("second-chain"))
    other_genesis = genesis_hash(genesis_command("second-chain"))
    ledger.reject(ledger.block(parent=other_genesis), "unknown_parent")


def _three_blocks(ledger: Chain) -> list[str]:
    return [ledger.apply()["hash"] for _ in range(3)]


def test_conflicts_with_finality_below_the_finalized_height(ledger: Chain) -> None:
    b1, b2, _ = _three_blocks(ledger)
    assert ledger.finalize(b2, 2)["finalized_height"] == 2
    ledger.reject(ledger.block(parent=b1, height=2), "conflicts_with_finality")
    ledger.reject(ledger.block(parent=ledger.genesis_hash, height=1), "conflicts_with_finality")


def test_conflicts_with_finality_comes_before_bad_height_and_bad_timestamp(ledger: Chain) -> None:
    b1, b2, _ = _three_blocks(ledger)
    ledger.finalize(b2, 2)
    ledger.reject(ledger.block(parent=b1, height=9, timestamp_ms=0), "conflicts_with_finality")


def test_a_block_on_the_finalized_tip_is_applied(ledger: Chain) -> None:
    _, _, b3 = _three_blocks(ledger)
    ledger.finalize(b3, 3)
    assert ledger.apply()["height"] == 4


@pytest.mark.parametrize("height", [0, 2, 3, 1 + 2**32])
def test_bad_height(ledger: Chain, height: int) -> None:
    ledger.reject(ledger.block(height=height), "bad_height")


def test_bad_height_on_a_later_tip(ledger: Chain) -> None:
    ledger.apply()
    ledger.reject(ledger.block(height=1), "bad_height")
    ledger.reject(ledger.block(height=3), "bad_height")


def test_bad_timestamp(ledger: Chain) -> None:
    ledger.apply()
    tip_ms = ledger.state.tip.timestamp_ms
    ledger.reject(ledger.block(timestamp_ms=tip_ms - 1), "bad_timestamp")
    ledger.reject(ledger.block(timestamp_ms=0), "bad_timestamp")
    assert ledger.apply(timestamp_ms=tip_ms)["height"] == 2  # equal to the parent's is not earlier


def test_proposer_not_active(ledger: Chain) -> None:
    ledger.reject(ledger.block(node_id="node-9"), "proposer_not_active")
    ledger.reject(ledger.block(node_id="NODE-0"), "proposer_not_active")  # identifiers are case-sensitive


def test_bad_signature_other_validators_key(ledger: Chain) -> None:
    ledger.reject(ledger.block(proposer=0, key=ledger.vals[1].key), "bad_signature")


def test_bad_signature_changed_after_signing(ledger: Chain) -> None:
    block = ledger.block()
    ledger.reject({**block, "timestamp_ms": block["timestamp_ms"] + 1}, "bad_signature")


def test_bad_signature_flipped_truncated_or_empty(ledger: Chain) -> None:
    block = ledger.block(proposer=2)
    sig = block["sig"]
    ledger.reject({**block, "sig": sig[:-2] + f"{int(sig[-2:], 16) ^ 1:02x}"}, "bad_signature")
    ledger.reject({**block, "sig": sig[:-2]}, "bad_signature")
    ledger.reject({**block, "sig": ""}, "bad_signature")


def test_the_header_signature_excludes_txs(ledger: Chain) -> None:
    """The proposer signs the header; txs are bound by tx_root, so swapping them is bad_tx_root."""
    block = ledger.block([ledger.transfer(ALICE, BOB.address, 1)])
    other = ledger.transfer(ALICE, BOB.address, 2)
    ledger.reject({**block, "txs": [other]}, "bad_tx_root")


def test_too_many_txs(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(params={"max_block_txs": 2})
    txs = [ledger.transfer(ALICE, BOB.address, 1, nonce=n) for n in range(3)]
    ledger.reject(ledger.block(txs), "too_many_txs")
    assert statuses(ledger.apply(txs[:2])) == [("applied", "")] * 2


def test_too_many_txs_with_a_limit_of_zero(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(params={"max_block_txs": 0})
    ledger.reject(ledger.block([ledger.transfer(ALICE, BOB.address, 1)]), "too_many_txs")
    assert ledger.apply()["receipts"] == []


@pytest.mark.parametrize("case", TX_CASES, ids=[c.id for c in TX_CASES])
def test_malformed_tx(ledger: Chain, case: Case) -> None:
    good = ledger.transfer(ALICE, BOB.address, 1, nonce=0)
    bad = case.mutate(ledger.transfer(ALICE, BOB.address, 1, nonce=1))
    result = ledger.reject(ledger.block([good, bad]), "malformed_tx")
    assert "tx 1" in result["message"]


def test_a_bare_transfer_is_unknown_command(ledger: Chain) -> None:
    ledger.reject(ledger.transfer(ALICE, BOB.address, 1), "unknown_command")


@pytest.mark.parametrize("root", ["empty", "reversed", "missing_tx", "other"])
def test_bad_tx_root(ledger: Chain, root: str) -> None:
    txs = [ledger.transfer(ALICE, BOB.address, 1, nonce=n) for n in range(2)]
    ids = [tx_id(t) for t in txs]
    roots = {"empty": EMPTY_ROOT, "reversed": tx_root(ids[::-1]), "missing_tx": tx_root(ids[:1]), "other": "00" * 32}
    ledger.reject(ledger.block(txs, root=roots[root]), "bad_tx_root")


def test_bad_tx_root_of_an_empty_block(ledger: Chain) -> None:
    ledger.reject(ledger.block([], root=tx_root(["00" * 32])), "bad_tx_root")


def test_signer_mismatch(ledger: Chain) -> None:
    result = ledger.reject(ledger.block([ledger.transfer(ALICE, BOB.address, 1), mismatched_tx(ledger)]),
                           "signer_mismatch")
    assert "tx 1" in result["message"]


@pytest.mark.parametrize("how", ["other_key", "changed_after_signing", "flipped", "truncated", "empty", "ml_dsa_87"])
def test_bad_tx_signature(ledger: Chain, how: str) -> None:
    tx = ledger.transfer(CAROL if how == "ml_dsa_87" else ALICE, BOB.address, 1)
    sig = tx["sig"]
    bad = {
        "other_key": forged_tx(ledger),
        "changed_after_signing": {**tx, "amount": 2},
        "flipped": {**tx, "sig": f"{int(sig[:2], 16) ^ 0x80:02x}" + sig[2:]},
        "truncated": {**tx, "sig": sig[:-2]},
        "empty": {**tx, "sig": ""},
        "ml_dsa_87": {**tx, "sig": sig[:-2] + f"{int(sig[-2:], 16) ^ 1:02x}"},
    }[how]
    ledger.reject(ledger.block([bad]), "bad_tx_signature")


def test_a_key_named_with_the_other_alg_is_malformed(ledger: Chain) -> None:
    tx = ledger.transfer(CAROL, BOB.address, 1)
    ledger.reject(ledger.block([{**tx, "key": {**tx["key"], "alg": "ml-dsa-65"}}]), "malformed_tx")  # pk length


def test_block_amount_overflow_from_the_reward(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(allocations=[(OPERATORS[0], AMOUNT_MAX - REWARD + 1)])
    ledger.reject(ledger.block(proposer=0), "amount_overflow")
    ledger.apply(proposer=1)  # another proposer's operator is fine


def test_block_amount_overflow_from_fees(make_ledger: MakeLedger) -> None:
    op0 = OPERATORS[0]
    ledger = make_ledger(allocations=[(op0, AMOUNT_MAX - REWARD), (ALICE.address, FUNDS)])
    ledger.reject(ledger.block([ledger.transfer(ALICE, BOB.address, 1, fee=1)]), "amount_overflow")
    # A rejected tx pays no fee, so it cannot overflow the operator.
    result = ledger.apply([ledger.transfer(ALICE, BOB.address, 1, fee=1, nonce=5)])
    assert statuses(result) == [("rejected", "bad_nonce")]
    assert ledger.balance(op0) == AMOUNT_MAX


def test_block_amount_overflow_boundary(make_ledger: MakeLedger) -> None:
    op0 = OPERATORS[0]
    ledger = make_ledger(allocations=[(op0, AMOUNT_MAX - REWARD - 1), (ALICE.address, FUNDS)])
    ledger.apply([ledger.transfer(ALICE, BOB.address, 1, fee=1)])
    assert ledger.balance(op0) == AMOUNT_MAX


# ------------------------------------------------------------------------------------- block precedence

# (earlier reason, later reason, build) where build(make_ledger) -> (ledger, block with both faults).
Build = Callable[[MakeLedger], tuple[Chain, Any]]


def _pair_malformed_block_unknown_chain(make: MakeLedger) -> tuple[Chain, Any]:
    ledger = make()
    return ledger, {**ledger.block(chain_id="other-chain"), "height": "1"}


def _pair_unknown_chain_unknown_parent(make: MakeLedger) -> tuple[Chain, Any]:
    ledger = make()
    return ledger, ledger.block(chain_id="other-chain", parent="cd" * 32)


def _pair_duplicate_block_conflicts(make: MakeLedger) -> tuple[Chain, Any]:
    ledger = make()
    b1 = ledger.block()
    ledger.submit(b1)
    b2 = ledger.apply()["hash"]
    ledger.finalize(b2, 2)
    return ledger, b1


def _pair_unknown_parent_bad_height(make: MakeLedger) -> tuple[Chain, Any]:
    ledger = make()
    return ledger, ledger.block(parent="cd" * 32, height=7, timestamp_ms=0)


def _pair_conflicts_bad_height(make: MakeLedger) -> tuple[Chain, Any]:
    ledger = make()
    b1 = ledger.apply()["hash"]
    b2 = ledger.apply()["hash"]
    ledger.finalize(b2, 2)
    return ledger, ledger.block(parent=b1, height=5, node_id="node-9")


def _pair_bad_height_bad_timestamp(make: MakeLedger) -> tuple[Chain, Any]:
    ledger = make()
    ledger.apply()
    return ledger, ledger.block(height=5, timestamp_ms=0)


def _pair_bad_timestamp_proposer(make: MakeLedger) -> tuple[Chain, Any]:
    ledger = make()
    ledger.apply()
    return ledger, ledger.block(timestamp_ms=0, node_id="node-9")


def _pair_proposer_bad_signature(make: MakeLedger) -> tuple[Chain, Any]:
    ledger = make()
    return ledger, ledger.block(node_id="node-9", key=keypair("nobody"))


def _pair_bad_signature_too_many(make: MakeLedger) -> tuple[Chain, Any]:
    ledger = make(params={"max_block_txs": 1})
    txs = [ledger.transfer(ALICE, BOB.address, 1, nonce=n) for n in range(2)]
    return ledger, ledger.block(txs, key=ledger.vals[1].key)


def _pair_too_many_malformed_tx(make: MakeLedger) -> tuple[Chain, Any]:
    ledger = make(params={"max_block_txs": 1})
    return ledger, ledger.block([ledger.transfer(ALICE, BOB.address, 1), {"kind": "transfer"}])


def _pair_malformed_tx_bad_root(make: MakeLedger) -> tuple[Chain, Any]:
    ledger = make()
    return ledger, ledger.block([{**ledger.transfer(ALICE, BOB.address, 1), "fee": -1}], root=EMPTY_ROOT)


def _pair_malformed_tx_after_bad_signatures(make: MakeLedger) -> tuple[Chain, Any]:
    """Every tx's shape is checked before any tx's signer or signature."""
    ledger = make()
    return ledger, ledger.block([forged_tx(ledger), mismatched_tx(ledger), {"kind": "transfer"}])


def _pair_bad_root_signer_mismatch(make: MakeLedger) -> tuple[Chain, Any]:
    ledger = make()
    return ledger, ledger.block([mismatched_tx(ledger)], root=EMPTY_ROOT)


def _pair_signer_mismatch_then_bad_sig(make: MakeLedger) -> tuple[Chain, Any]:
    ledger = make()
    return ledger, ledger.block([mismatched_tx(ledger), forged_tx(ledger)])


def _pair_bad_sig_then_signer_mismatch(make: MakeLedger) -> tuple[Chain, Any]:
    """Per tx in order: tx 0's bad signature comes before tx 1's signer mismatch."""
    ledger = make()
    return ledger, ledger.block([forged_tx(ledger), mismatched_tx(ledger)])


def _pair_bad_sig_overflow(make: MakeLedger) -> tuple[Chain, Any]:
    ledger = make(allocations=[(OPERATORS[0], AMOUNT_MAX), (ALICE.address, FUNDS)])
    return ledger, ledger.block([forged_tx(ledger)], proposer=0)


PRECEDENCE: list[tuple[str, str, Build]] = [
    ("malformed_block", "unknown_chain", _pair_malformed_block_unknown_chain),
    ("unknown_chain", "unknown_parent", _pair_unknown_chain_unknown_parent),
    ("duplicate_block", "conflicts_with_finality", _pair_duplicate_block_conflicts),
    ("unknown_parent", "bad_height", _pair_unknown_parent_bad_height),
    ("conflicts_with_finality", "bad_height", _pair_conflicts_bad_height),
    ("bad_height", "bad_timestamp", _pair_bad_height_bad_timestamp),
    ("bad_timestamp", "proposer_not_active", _pair_bad_timestamp_proposer),
    ("proposer_not_active", "bad_signature", _pair_proposer_bad_signature),
    ("bad_signature", "too_many_txs", _pair_bad_signature_too_many),
    ("too_many_txs", "malformed_tx", _pair_too_many_malformed_tx),
    ("malformed_tx", "bad_tx_root", _pair_malformed_tx_bad_root),
    ("malformed_tx", "bad_tx_signature", _pair_malformed_tx_after_bad_signatures),
    ("bad_tx_root", "signer_mismatch", _pair_bad_root_signer_mismatch),
    ("signer_mismatch", "bad_tx_signature", _pair_signer_mismatch_then_bad_sig),
    ("bad_tx_signature", "signer_mismatch", _pair_bad_sig_then_signer_mismatch),
    ("bad_tx_signature", "amount_overflow", _pair_bad_sig_overflow),
]


@pytest.mark.parametrize(("first", "second", "build"), PRECEDENCE, ids=[f"{a}>{b}" for a, b, _ in PRECEDENCE])
def test_the_earlier_block_reason_wins(make_ledger: MakeLedger, first: str, second: str, build: Build) -> None:
    ledger, block = build(make_ledger)
    ledger.reject(block, first)


# ============================================================================================ transfers


def test_an_applied_transfer(ledger: Chain) -> None:
    op1 = operator(ledger, 1)
    result = ledger.apply([ledger.transfer(ALICE, BOB.address, 5 * CELL, fee=7)], proposer=1)
    assert statuses(result) == [("applied", "")]
    assert ledger.balance(ALICE.address) == FUNDS - 5 * CELL - 7
    assert ledger.balance(BOB.address) == FUNDS + 5 * CELL
    assert ledger.balance(op1) == REWARD + 7
    assert ledger.nonce(ALICE.address) == 1 and ledger.nonce(BOB.address) == 0


def test_nonces_advance_within_a_block_and_only_when_applied(ledger: Chain) -> None:
    txs = [ledger.transfer(ALICE, BOB.address, 1, nonce=n) for n in (0, 2, 1, 1, 2)]
    result = ledger.apply(txs)
    assert statuses(result) == [
        ("applied", ""), ("rejected", "bad_nonce"), ("applied", ""), ("rejected", "bad_nonce"), ("applied", ""),
    ]
    assert [r["index"] for r in result["receipts"]] == [0, 1, 2, 3, 4]
    assert {r["height"] for r in result["receipts"]} == {1}
    assert ledger.nonce(ALICE.address) == 3
    assert ledger.balance(BOB.address) == FUNDS + 3


def test_bad_nonce_for_a_replayed_tx(ledger: Chain) -> None:
    tx = ledger.transfer(ALICE, BOB.address, 1)
    ledger.apply([tx])
    before = ledger.balance(ALICE.address)
    assert statuses(ledger.apply([tx])) == [("rejected", "bad_nonce")]
    assert statuses(ledger.apply([tx, tx])) == [("rejected", "bad_nonce")] * 2
    assert ledger.balance(ALICE.address) == before


def test_the_same_tx_twice_in_one_block(ledger: Chain) -> None:
    tx = ledger.transfer(ALICE, BOB.address, 1)
    result = ledger.apply([tx, tx])
    assert statuses(result) == [("applied", ""), ("rejected", "bad_nonce")]
    assert result["tx_ids"] == [tx_id(tx)] * 2


def test_unknown_asset(ledger: Chain) -> None:
    assert statuses(ledger.apply([ledger.transfer(ALICE, BOB.address, 1, asset="USDC")])) == [
        ("rejected", "unknown_asset")
    ]


@pytest.mark.parametrize(
    ("amount", "fee", "status"),
    [
        (1, FUNDS + 1, ("rejected", "insufficient_funds")),  # the fee alone
        (FUNDS + 1, 0, ("rejected", "insufficient_funds")),  # the amount alone
        (FUNDS - 5, 6, ("rejected", "insufficient_funds")),  # each fits, not both
        (FUNDS - 5, 5, ("applied", "")),  # exactly everything
        (1, FUNDS - 1, ("applied", "")),
    ],
    ids=["fee", "amount", "both", "exact", "exact_fee"],
)
def test_insufficient_funds_in_cell(ledger: Chain, amount: int, fee: int, status: tuple[str, str]) -> None:
    assert statuses(ledger.apply([ledger.transfer(ALICE, BOB.address, amount, fee=fee)])) == [status]
    if status[0] == "applied":
        assert ledger.balance(ALICE.address) == 0


def test_insufficient_funds_of_an_empty_account(ledger: Chain) -> None:
    nobody = keypair("nobody")
    assert statuses(ledger.apply([ledger.transfer(nobody, BOB.address, 1)])) == [("rejected", "insufficient_funds")]
    assert ledger.nonce(nobody.address) == 0


def test_funds_are_spent_in_order_within_a_block(ledger: Chain) -> None:
    txs = [ledger.transfer(ALICE, BOB.address, 60 * CELL, nonce=n) for n in (0, 1)]
    txs.append(ledger.transfer(BOB, ALICE.address, 150 * CELL, nonce=0))  # bob received 60 from alice
    assert statuses(ledger.apply(txs)) == [("applied", ""), ("rejected", "insufficient_funds"), ("applied", "")]
    assert ledger.balance(ALICE.address) == FUNDS - 60 * CELL + 150 * CELL
    assert ledger.balance(BOB.address) == FUNDS + 60 * CELL - 150 * CELL


def test_tx_amount_overflow(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(allocations=[(ALICE.address, FUNDS), (BOB.address, AMOUNT_MAX), (CAROL.address, 1)])
    txs = [ledger.transfer(ALICE, BOB.address, 1, fee=1, nonce=0), ledger.transfer(CAROL, ALICE.address, 1)]
    assert statuses(ledger.apply(txs)) == [("rejected", "amount_overflow"), ("applied", "")]
    assert ledger.balance(ALICE.address) == FUNDS + 1 and ledger.nonce(ALICE.address) == 0
    assert ledger.balance(BOB.address) == AMOUNT_MAX


def test_tx_amount_overflow_boundary(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(allocations=[(ALICE.address, FUNDS), (BOB.address, AMOUNT_MAX - 1)])
    assert statuses(ledger.apply([ledger.transfer(ALICE, BOB.address, 1)])) == [("applied", "")]
    assert ledger.balance(BOB.address) == AMOUNT_MAX
    # A self-transfer at the limit changes nothing but the fee: no overflow.
    assert statuses(ledger.apply([ledger.transfer(BOB, BOB.address, 5, fee=2)])) == [("applied", "")]
    assert ledger.balance(BOB.address) == AMOUNT_MAX - 2


@pytest.mark.parametrize(
    ("make_tx", "reason"),
    [
        (lambda ld: ld.transfer(ALICE, BOB.address, 1, nonce=1, asset="USDC"), "bad_nonce"),
        (lambda ld: ld.transfer(ALICE, BOB.address, FUNDS * 2, asset="USDC"), "unknown_asset"),
        (lambda ld: ld.transfer(ALICE, BOB.address, FUNDS * 2, nonce=3), "bad_nonce"),
        (lambda ld: ld.transfer(ALICE, CAROL.address, FUNDS + 1), "insufficient_funds"),
    ],
    ids=["bad_nonce>unknown_asset", "unknown_asset>insufficient_funds", "bad_nonce>insufficient_funds",
         "insufficient_funds>amount_overflow"],
)
def test_the_earlier_transfer_reason_wins(
    make_ledger: MakeLedger, make_tx: Callable[[Chain], dict[str, Any]], reason: str
) -> None:
    ledger = make_ledger(allocations=[(ALICE.address, FUNDS), (CAROL.address, AMOUNT_MAX)])
    assert statuses(ledger.apply([make_tx(ledger)])) == [("rejected", reason)]


def test_a_rejected_tx_has_no_effect_and_pays_no_fee(ledger: Chain) -> None:
    op0 = operator(ledger, 0)
    before = {k.address: ledger.balance(k.address) for k in ACCOUNTS}
    txs = [
        ledger.transfer(ALICE, BOB.address, 1, fee=5, nonce=1),  # bad_nonce
        ledger.transfer(ALICE, BOB.address, 1, fee=5, asset="USDC"),  # unknown_asset
        ledger.transfer(ALICE, BOB.address, FUNDS, fee=5),  # insufficient_funds
    ]
    result = ledger.apply(txs, proposer=0)
    assert [s for s, _ in statuses(result)] == ["rejected"] * 3
    assert {k.address: ledger.balance(k.address) for k in ACCOUNTS} == before
    assert ledger.nonce(ALICE.address) == 0
    assert ledger.balance(op0) == REWARD
    assert ledger.balance(ALICE.address, "USDC") == 0 and ledger.balance(BOB.address, "USDC") == 0


def test_a_self_transfer_costs_only_the_fee(ledger: Chain) -> None:
    result = ledger.apply([ledger.transfer(ALICE, ALICE.address, 30 * CELL, fee=2)])
    assert statuses(result) == [("applied", "")]
    assert ledger.balance(ALICE.address) == FUNDS - 2 and ledger.nonce(ALICE.address) == 1


def test_a_self_transfer_needs_funds_for_amount_and_fee(ledger: Chain) -> None:
    """DOMAIN's funds check has no self-transfer exception: CELL >= fee + amount."""
    result = ledger.apply([ledger.transfer(ALICE, ALICE.address, FUNDS, fee=1)])
    assert statuses(result) == [("rejected", "insufficient_funds")]


def test_ml_dsa_87_sender(ledger: Chain) -> None:
    assert statuses(ledger.apply([ledger.transfer(CAROL, ALICE.address, 3, fee=1)], proposer=2)) == [("applied", "")]
    assert ledger.balance(CAROL.address) == FUNDS - 4 and ledger.balance(ALICE.address) == FUNDS + 3


def test_reward_and_fees_of_applied_txs_go_to_the_proposers_operator(ledger: Chain) -> None:
    op1 = operator(ledger, 1)
    minted = ledger.state.minted
    txs = [
        ledger.transfer(ALICE, BOB.address, 1, fee=3),
        ledger.transfer(BOB, CAROL.address, 1, fee=4),
        ledger.transfer(CAROL, ALICE.address, 1, fee=100, nonce=9),  # rejected: its fee is not paid
        ledger.transfer(ALICE, op1, 10, fee=5, nonce=1),  # a transfer to the operator counts as usual
    ]
    result = ledger.apply(txs, proposer=1)
    assert [s for s, _ in statuses(result)] == ["applied", "applied", "rejected", "applied"]
    assert ledger.balance(op1) == REWARD + 3 + 4 + 5 + 10
    assert ledger.balance(operator(ledger, 0)) == 0 and ledger.balance(operator(ledger, 2)) == 0
    assert ledger.state.minted == minted + REWARD  # fees move, only the reward is minted


def test_the_reward_is_minted_with_no_txs(ledger: Chain) -> None:
    minted = ledger.state.minted
    for proposer in (2, 2, 0):
        ledger.apply(proposer=proposer)
    assert ledger.balance(operator(ledger, 2)) == 2 * REWARD
    assert ledger.balance(operator(ledger, 0)) == REWARD
    assert ledger.state.minted == minted + 3 * REWARD


def test_the_reward_and_fees_are_paid_after_the_txs(ledger: Chain) -> None:
    """The proposer's operator cannot spend, inside the block, the reward or fees that block pays it."""
    op0 = keypair("operator-0")
    txs = [ledger.transfer(ALICE, BOB.address, 1, fee=5), ledger.transfer(op0, BOB.address, 1)]
    assert statuses(ledger.apply(txs, proposer=0)) == [("applied", ""), ("rejected", "insufficient_funds")]
    assert ledger.balance(op0.address) == REWARD + 5 and ledger.nonce(op0.address) == 0
    assert statuses(ledger.apply([ledger.transfer(op0, BOB.address, REWARD + 5)])) == [("applied", "")]


def test_a_zero_reward(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(params={"block_reward": 0})
    ledger.apply([ledger.transfer(ALICE, BOB.address, 1, fee=2)])
    assert ledger.balance(operator(ledger, 0)) == 2


# ================================================================================================ votes


@pytest.mark.parametrize("case", VOTE_CASES, ids=[c.id for c in VOTE_CASES])
def test_malformed_vote(ledger: Chain, case: Case) -> None:
    ledger.reject(case.mutate(ledger.vote(0, ledger.genesis_hash, 0)), "malformed_vote")


def test_vote_unknown_chain(ledger: Chain) -> None:
    v = ledger.vals[0]
    ledger.reject(build.vote("other-chain", v.node_id, v.key, 0, ledger.genesis_hash), "unknown_chain")


def test_vote_unknown_validator(ledger: Chain) -> None:
    ledger.reject(build.vote(CHAIN_ID, "node-9", keypair("node-9"), 0, ledger.genesis_hash), "unknown_validator")


def test_vote_bad_signature(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    ledger.reject(ledger.vote(0, b1, 1, key=ledger.vals[1].key), "bad_signature")
    vote = ledger.vote(2, b1, 1)
    ledger.reject({**vote, "height": 2}, "bad_signature")  # changed after signing
    ledger.reject({**vote, "sig": vote["sig"][:-2]}, "bad_signature")


def test_vote_height_mismatch(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    ledger.reject(ledger.vote(0, b1, 2), "height_mismatch")
    ledger.reject(ledger.vote(0, b1, 0), "height_mismatch")
    ledger.reject(ledger.vote(0, ledger.genesis_hash, 1), "height_mismatch")


def test_a_vote_is_accepted_and_counted(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    position = ledger.service.max_position()
    assert ledger.submit(ledger.vote(1, b1, 1)) == {
        "status": "accepted", "kind": "vote", "chain_id": CHAIN_ID, "node_id": "node-1", "height": 1,
        "block_hash": b1, "counted": True, "duplicate": False, "finalized_height": 0, "reorg": None,
    }
    assert ledger.service.max_position() == position + 1
    assert ledger.state.blocks[b1].voters == {"node-1"}


def test_a_repeated_vote_is_counted_once_and_not_appended_twice(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    vote = ledger.vote(0, b1, 1)
    assert ledger.submit(vote)["duplicate"] is False
    position, before = ledger.snapshot()
    for _ in range(3):
        again = ledger.submit(vote)
        assert again["status"] == "accepted" and again["duplicate"] is True
    assert ledger.service.max_position() == position and ledger.service.ledger == before
    # Two of three equal stakes are not more than 2/3, however often one of them votes.
    assert ledger.submit(ledger.vote(1, b1, 1))["finalized_height"] == 0
    assert ledger.submit(vote)["finalized_height"] == 0
    assert ledger.state.blocks[b1].voting_stake() == 2 * STAKE


def test_a_vote_for_an_unknown_block_is_kept_and_counts_when_it_arrives(ledger: Chain) -> None:
    block = ledger.block()
    b1 = block_hash(block)
    for voter in range(3):
        result = ledger.submit(ledger.vote(voter, b1, 1))
        assert result["status"] == "accepted" and result["counted"] is False
        assert result["finalized_height"] == 0
    assert ledger.service.max_position() == 4
    result = ledger.submit(block)
    assert result["finalized_height"] == 1
    assert ledger.state.blocks[b1].finalized and ledger.state.finalized_height == 1
    assert ledger.service.max_position() == 6  # BlockApplied and BlockFinalized
    assert ledger.submit(ledger.vote(0, b1, 1))["duplicate"] is True


def test_a_repeated_vote_for_an_unknown_block_is_not_appended_twice(ledger: Chain) -> None:
    b1 = block_hash(ledger.block())
    ledger.submit(ledger.vote(0, b1, 1))
    position = ledger.service.max_position()
    assert ledger.submit(ledger.vote(0, b1, 1))["duplicate"] is True
    assert ledger.service.max_position() == position


def test_a_kept_vote_whose_height_differs_is_discarded_when_the_block_arrives(ledger: Chain) -> None:
    block = ledger.block()
    b1 = block_hash(block)
    ledger.submit(ledger.vote(0, b1, 1))
    ledger.submit(ledger.vote(1, b1, 1))
    ledger.submit(ledger.vote(2, b1, 7))  # wrong height: discarded on arrival
    assert ledger.submit(block)["finalized_height"] == 0
    assert ledger.state.blocks[b1].voters == {"node-0", "node-1"}
    result = ledger.submit(ledger.vote(2, b1, 1))  # the right vote still counts
    assert result["duplicate"] is False and result["finalized_height"] == 1


def test_votes_for_an_unknown_block_at_two_heights_are_both_kept(ledger: Chain) -> None:
    """DOMAIN: a *repeated (node_id, height, block_hash)* is counted once; the same node and block at another
    height is a different vote, kept until the block arrives, when the one whose height differs is discarded
    and the other counts."""
    block = ledger.block()
    b1 = block_hash(block)
    for voter in range(3):
        assert ledger.submit(ledger.vote(voter, b1, 5))["status"] == "accepted"
        second = ledger.submit(ledger.vote(voter, b1, 1))
        assert second["status"] == "accepted" and second["duplicate"] is False
    assert ledger.submit(block)["finalized_height"] == 1


def test_two_votes_at_one_height_for_different_blocks_are_both_recorded(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    position = ledger.service.max_position()
    assert ledger.submit(ledger.vote(0, "ee" * 32, 1))["counted"] is False
    assert ledger.submit(ledger.vote(0, b1, 1))["counted"] is True
    assert ledger.service.max_position() == position + 2


def test_a_vote_for_a_final_block_is_recorded_without_new_finality(ledger: Chain) -> None:
    result = ledger.submit(ledger.vote(0, ledger.genesis_hash, 0))
    assert result["counted"] is True and result["finalized_height"] == 0
    b1 = ledger.apply()["hash"]
    ledger.finalize(b1, 1)
    position = ledger.service.max_position()
    assert ledger.submit(ledger.vote(0, ledger.genesis_hash, 0))["duplicate"] is True
    assert ledger.service.max_position() == position


@pytest.mark.parametrize(
    ("stakes", "voters", "final"),
    [
        ((1, 1, 1), (0,), False),
        ((1, 1, 1), (0, 1), False),  # 3 * 2 > 2 * 3 is false: exactly 2/3 is not enough
        ((1, 1, 1), (0, 1, 2), True),
        ((1, 1, 1, 1), (0, 1), False),
        ((1, 1, 1, 1), (0, 1, 3), True),  # 9 > 8
        ((2, 1, 1), (0, 1), True),  # 3 * 3 > 2 * 4
        ((2, 1, 1), (1, 2), False),  # 6 > 8 is false
        ((4, 1, 1), (0,), False),  # 12 > 12 is false
        ((5, 1, 1), (0,), True),  # 15 > 14
    ],
)
def test_finality_needs_more_than_two_thirds_of_the_stake(
    make_ledger: MakeLedger, stakes: tuple[int, ...], voters: tuple[int, ...], final: bool
) -> None:
    ledger = make_ledger(stakes=stakes, params={"min_stake": 1})
    b1 = ledger.apply()["hash"]
    results = [ledger.submit(ledger.vote(v, b1, 1)) for v in voters]
    assert [r["finalized_height"] for r in results[:-1]] == [0] * (len(voters) - 1)
    assert results[-1]["finalized_height"] == (1 if final else 0)
    assert ledger.state.blocks[b1].finalized is final
    assert ledger.state.finalized_height == (1 if final else 0)


def test_finalizing_a_block_finalizes_its_ancestors(ledger: Chain) -> None:
    hashes = [ledger.apply()["hash"] for _ in range(4)]
    ledger.submit(ledger.vote(0, hashes[0], 1))  # block 1 has a vote but is not final
    result = ledger.finalize(hashes[2], 3)
    assert result["finalized_height"] == 3
    assert [ledger.state.blocks[h].finalized for h in hashes] == [True, True, True, False]
    assert ledger.state.finalized_height == 3
    # Block 2 never got a vote of its own: an older block's own votes change nothing now.
    ledger.submit(ledger.vote(1, hashes[0], 1))
    ledger.submit(ledger.vote(2, hashes[0], 1))
    assert ledger.state.finalized_height == 3
    assert ledger.finalize(hashes[3], 4)["finalized_height"] == 4


def test_finality_records_the_newly_final_blocks(ledger: Chain) -> None:
    hashes = [ledger.apply()["hash"] for _ in range(3)]
    ledger.finalize(hashes[0], 1)
    ledger.finalize(hashes[2], 3)
    app = ledger.service.app
    finalized = [
        event for n in ledger.service.notifications()
        if isinstance(event := app.mapper.to_domain_event(n), BlockFinalized)
    ]
    assert [e.finalized for e in finalized] == [[[1, hashes[0]]], [[2, hashes[1]], [3, hashes[2]]]]
    assert [(e.voting_stake, e.total_stake) for e in finalized] == [(3 * STAKE, 3 * STAKE)] * 2
    assert [e.head_height for e in finalized] == [3, 3]


def test_a_validator_set_with_no_stake_never_finalizes(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(stakes=(0,), params={"min_stake": 0})
    b1 = ledger.apply()["hash"]
    assert ledger.submit(ledger.vote(0, b1, 1))["finalized_height"] == 0


# ======================================================================================= CELL invariant

SENDERS = (*ACCOUNTS, keypair("operator-0"))

plans = st.tuples(
    st.integers(0, len(SENDERS) - 1),  # sender
    st.integers(0, len(SENDERS)),  # receiver (the last is an account that never sends)
    st.integers(1, 70),  # amount
    st.integers(0, 4),  # fee
    st.sampled_from([0, 0, 0, 0, 1, -1]),  # nonce offset from the sender's next nonce
)
blocks = st.lists(st.tuples(st.integers(0, 2), st.lists(plans, max_size=4)), min_size=1, max_size=4)


def cell_total(ledger: Chain) -> int:
    state = ledger.state
    balances = sum(amount for (_, asset), amount in state.balances.items() if asset == "CELL")
    stakes = sum(v.stake for v in state.validators.values() if v.phase in (ACTIVE, UNBONDING))
    return balances + stakes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=blocks, funds=st.lists(st.integers(0, 100), min_size=len(SENDERS), max_size=len(SENDERS)))
def test_cell_supply_invariant_and_a_reference_model(blocks: list[Any], funds: list[int]) -> None:
    """sum of balances + stakes = minted - burned after every block, and receipts and balances equal a
    few-line model of DOMAIN.md's transfer rules."""
    receivers = [k.address for k in SENDERS] + [keypair("sink").address]
    vals = validators((STAKE, 2 * STAKE, 3 * STAKE))
    with tempfile.TemporaryDirectory() as tmp:
        service = open_service(Path(tmp))
        try:
            ledger = Chain(service, genesis_command(vals=vals, allocations=[
                (k.address, f) for k, f in zip(SENDERS, funds, strict=True)]), vals)
            model = {a: f for a, f in zip(receivers, funds + [0], strict=True)}
            nonces = dict.fromkeys(receivers, 0)
            issued = sum(funds) + 6 * STAKE
            for proposer, block_plans in blocks:
                txs, offsets = [], dict.fromkeys(receivers, 0)
                for s, r, amount, fee, delta in block_plans:
                    sender = SENDERS[s]
                    nonce = nonces[sender.address] + offsets[sender.address] + delta
                    offsets[sender.address] += 1
                    txs.append(ledger.transfer(sender, receivers[r], amount, fee=fee, nonce=max(nonce, 0)))
                result = ledger.apply(txs, proposer=proposer)
                expected, fees = [], 0
                for tx in txs:
                    src = tx["from"]
                    if tx["nonce"] != nonces[src]:
                        expected.append(("rejected", "bad_nonce"))
                    elif model[src] < tx["amount"] + tx["fee"]:
                        expected.append(("rejected", "insufficient_funds"))
                    else:
                        model[src] -= tx["amount"] + tx["fee"]
                        model[tx["to"]] += tx["amount"]
                        nonces[src] += 1
                        fees += tx["fee"]
                        expected.append(("applied", ""))
                op = vals[proposer].operator.address
                model[op] = model.get(op, 0) + REWARD + fees
                issued += REWARD
                assert statuses(result) == expected
                assert cell_total(ledger) == ledger.state.minted - ledger.state.burned == issued
                assert {a: ledger.balance(a) for a in model} == model
                assert all(amount >= 0 for amount in ledger.state.balances.values())
                assert {a: ledger.nonce(a) for a in receivers} == nonces
        finally:
            service.close()
