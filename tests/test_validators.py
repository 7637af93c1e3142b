"""Validators on the write side (DOMAIN.md: Transactions, Validators, Votes and finality, Slashing; Precise rules:
Inside a block, Validators and slashing, Branch-local state): enroll, unenroll, release, slash with auto-revoke,
every rejection reason in order, stakes feeding finality, exact reverts, and the CELL invariant over random
sequences.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schemas import build
from schemas.limits import PARAM_DEFAULTS
from schemas.signing import KeyPair
from tests.chain import ALICE, BOB, CAROL, CELL, FUNDS, STAKE, Chain, genesis_command, keypair, open_service, validators
from writes.state import ACTIVE, RELEASED, UNBONDING, ChainState

REWARD = PARAM_DEFAULTS["block_reward"]
UNBOND_MS = PARAM_DEFAULTS["unbond_ms"]
NEW_KEY = keypair("node-new")
HASH_A, HASH_B, HASH_C = "aa" * 32, "bb" * 32, "cc" * 32


def receipts(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["status"], r["reason"]) for r in result["receipts"]]


def enroll(ledger: Chain, operator: KeyPair = ALICE, node_id: str = "node-new", gpu: str = "GPU-NEW",
           stake: int = STAKE, *, key: KeyPair = NEW_KEY, nonce: int | None = None) -> dict[str, Any]:
    nonce = ledger.nonce(operator.address) if nonce is None else nonce
    return build.enroll(ledger.chain_id, operator, node_id, gpu, stake, key, nonce=nonce)


def unenroll(ledger: Chain, operator: KeyPair, node_id: str, *, nonce: int | None = None) -> dict[str, Any]:
    nonce = ledger.nonce(operator.address) if nonce is None else nonce
    return build.unenroll(ledger.chain_id, operator, node_id, nonce=nonce)


def evidence(ledger: Chain, voter: int, height: int = 7, hashes: tuple[str, str] = (HASH_A, HASH_B),
             key: KeyPair | None = None) -> list[dict[str, Any]]:
    v = ledger.vals[voter]
    return build.evidence(ledger.chain_id, v.node_id, key or v.key, height, hashes)


def slash(ledger: Chain, reporter: KeyPair, node_id: str, votes: list[dict[str, Any]], *,
          nonce: int | None = None) -> dict[str, Any]:
    nonce = ledger.nonce(reporter.address) if nonce is None else nonce
    return build.slash(ledger.chain_id, reporter, node_id, votes, nonce=nonce)


def cell_total(chain: ChainState) -> int:
    balances = sum(amount for (_, asset), amount in chain.balances.items() if asset == "CELL")
    return balances + sum(v.stake for v in chain.validators.values() if v.phase in (ACTIVE, UNBONDING))


def operator_key(ledger: Chain, i: int) -> KeyPair:
    return ledger.vals[i].operator


# ================================================================================================ enroll


def test_an_enrollment_bonds_the_stake_and_the_validator_is_active(ledger: Chain) -> None:
    result = ledger.apply([enroll(ledger, stake=12 * CELL)])
    assert receipts(result) == [("applied", "")]
    v = ledger.state.validators["node-new"]
    assert (v.phase, v.stake, v.operator, v.gpu_uuid, v.enrolled_height) == (ACTIVE, 12 * CELL, ALICE.address,
                                                                             "GPU-NEW", 1)
    assert ledger.balance(ALICE.address) == FUNDS - 12 * CELL and ledger.nonce(ALICE.address) == 1
    assert ledger.state.gpu_bindings["GPU-NEW"] == "node-new"
    assert cell_total(ledger.state) == ledger.state.minted - ledger.state.burned
    # It proposes and votes from the next block on, and its stake counts toward finality there.
    b2 = ledger.apply(proposer=0)["hash"]
    assert ledger.state.blocks[b2].total_stake == 3 * STAKE + 12 * CELL
    vote = build.vote(ledger.chain_id, "node-new", NEW_KEY, 2, b2)
    assert ledger.submit(vote)["status"] == "accepted"
    header = build.block(ledger.chain_id, 3, b2, "node-new", NEW_KEY, ledger.state.tip.timestamp_ms + 1)
    assert ledger.submit(header)["status"] == "accepted"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"nonce": 1}, "bad_nonce"),
        ({"stake": STAKE - 1}, "stake_below_minimum"),
        ({"node_id": "node-0"}, "node_id_taken"),
        ({"gpu": "GPU-0001"}, "gpu_uuid_bound"),
        ({"stake": FUNDS + 1}, "insufficient_funds"),
        # The first reason in DOMAIN.md's order wins.
        ({"nonce": 5, "stake": 1, "node_id": "node-0"}, "bad_nonce"),
        ({"stake": 1, "node_id": "node-0", "gpu": "GPU-0001"}, "stake_below_minimum"),
        ({"node_id": "node-0", "gpu": "GPU-0001", "stake": FUNDS + 1}, "node_id_taken"),
        ({"gpu": "GPU-0001", "stake": FUNDS + 1}, "gpu_uuid_bound"),
    ],
)
def test_enrollment_rejections(ledger: Chain, change: dict[str, Any], reason: str) -> None:
    before = ledger.balance(ALICE.address)
    result = ledger.apply([enroll(ledger, **change)])
    assert receipts(result) == [("rejected", reason)]
    assert ledger.balance(ALICE.address) == before and ledger.nonce(ALICE.address) == 0
    assert "node-new" not in ledger.state.validators or change.get("node_id") == "node-0"


def test_two_enrollments_in_one_block_see_each_other(ledger: Chain) -> None:
    result = ledger.apply([
        enroll(ledger, ALICE, "node-a", "GPU-X", nonce=0),
        enroll(ledger, BOB, "node-a", "GPU-Y", nonce=0),
        enroll(ledger, CAROL, "node-c", "GPU-X", nonce=0),
    ])
    assert receipts(result) == [("applied", ""), ("rejected", "node_id_taken"), ("rejected", "gpu_uuid_bound")]


# ======================================================================================= unenroll, release


def test_an_unenrollment_starts_the_unbond_window_and_the_release_pays_the_operator(make_ledger: Any) -> None:
    ledger = make_ledger(params={"unbond_ms": 1_500})
    op = operator_key(ledger, 1)
    result = ledger.apply([unenroll(ledger, op, "node-1")])
    assert receipts(result) == [("applied", "")]
    v = ledger.state.validators["node-1"]
    assert (v.phase, v.unbond_at_ms) == (UNBONDING, ledger.state.tip.timestamp_ms + 1_500)
    assert ledger.state.gpu_bindings["GPU-0001"] == "node-1"  # bound until release
    assert "node-1" not in ledger.state.active_stakes
    ledger.apply()  # 1,000 ms later: not yet
    assert ledger.state.validators["node-1"].phase == UNBONDING
    ledger.apply()  # 2,000 ms after the unenroll: released, first block past unbond_at_ms
    v = ledger.state.validators["node-1"]
    assert (v.phase, v.stake) == (RELEASED, 0)
    assert ledger.balance(op.address) == STAKE
    assert "GPU-0001" not in ledger.state.gpu_bindings
    # The gpu_uuid is free again; the node_id never is.
    result = ledger.apply([enroll(ledger, gpu="GPU-0001"), enroll(ledger, BOB, node_id="node-1", gpu="GPU-Z")])
    assert receipts(result) == [("applied", ""), ("rejected", "node_id_taken")]
    assert cell_total(ledger.state) == ledger.state.minted - ledger.state.burned


def test_with_unbond_ms_zero_an_unenrollment_is_released_by_its_own_block(make_ledger: Any) -> None:
    ledger = make_ledger(params={"unbond_ms": 0})
    op = operator_key(ledger, 2)
    result = ledger.submit(ledger.block([unenroll(ledger, op, "node-2")], proposer=2))
    assert receipts(result) == [("applied", "")]
    assert ledger.state.validators["node-2"].phase == RELEASED
    # The proposer unenrolled in its own block and is still paid the reward, then its stake.
    assert ledger.balance(op.address) == REWARD + STAKE


@pytest.mark.parametrize(
    ("who", "node_id", "nonce", "reason"),
    [
        (1, "node-1", 3, "bad_nonce"),
        (1, "node-9", None, "unknown_validator"),
        (0, "node-1", None, "not_operator"),
    ],
)
def test_unenrollment_rejections(ledger: Chain, who: int, node_id: str, nonce: int | None, reason: str) -> None:
    result = ledger.apply([unenroll(ledger, operator_key(ledger, who), node_id, nonce=nonce)])
    assert receipts(result) == [("rejected", reason)]
    assert ledger.state.validators["node-1"].phase == ACTIVE


def test_unenrolling_twice_is_not_active(ledger: Chain) -> None:
    op = operator_key(ledger, 1)
    result = ledger.apply([unenroll(ledger, op, "node-1", nonce=0), unenroll(ledger, op, "node-1", nonce=1)])
    assert receipts(result) == [("applied", ""), ("rejected", "not_active")]


def test_an_unbonding_validator_can_neither_vote_nor_propose(ledger: Chain) -> None:
    ledger.apply([unenroll(ledger, operator_key(ledger, 1), "node-1")])
    b2 = ledger.apply()["hash"]
    ledger.reject(ledger.vote(1, b2, 2), "not_active")
    ledger.reject(ledger.block(proposer=1), "proposer_not_active")


# ================================================================================================= slash


def test_a_slash_burns_pays_the_reporter_and_auto_revokes(ledger: Chain) -> None:
    result = ledger.apply([slash(ledger, BOB, "node-1", evidence(ledger, 1))])
    assert receipts(result) == [("applied", "")]
    slashed = STAKE * 5000 // 10_000
    to_reporter = slashed * 1000 // 10_000
    v = ledger.state.validators["node-1"]
    assert (v.stake, v.phase, v.revoked) == (STAKE - slashed, UNBONDING, True)
    assert v.unbond_at_ms == ledger.state.tip.timestamp_ms + UNBOND_MS
    assert ledger.balance(BOB.address) == FUNDS + to_reporter
    assert ledger.state.burned == slashed - to_reporter
    assert "GPU-0001" not in ledger.state.gpu_bindings  # released at once on auto-revoke
    assert ("node-1", 7) in ledger.state.offences
    assert cell_total(ledger.state) == ledger.state.minted - ledger.state.burned
    # The slash figures are in the block's effects, for the views.
    event = ledger.service.app.mapper.to_domain_event(list(ledger.service.notifications())[-1])
    assert event.effects["slashes"] == [[0, "node-1", 7, slashed, to_reporter, slashed - to_reporter, True]]


def test_a_slash_that_leaves_enough_stake_does_not_revoke(make_ledger: Any) -> None:
    ledger = make_ledger(stakes=(STAKE, 4 * STAKE, STAKE), params={"slash_bps": 1000})
    ledger.apply([slash(ledger, BOB, "node-1", evidence(ledger, 1))])
    v = ledger.state.validators["node-1"]
    assert (v.stake, v.phase, v.revoked) == (4 * STAKE - 4 * STAKE // 10, ACTIVE, False)
    assert ledger.state.active_stakes["node-1"] == v.stake
    assert ledger.state.gpu_bindings["GPU-0001"] == "node-1"


def test_a_slash_that_rounds_to_zero_is_applied_and_still_revokes(make_ledger: Any) -> None:
    ledger = make_ledger(stakes=(1, 1, 1), params={"min_stake": 1, "slash_bps": 1})
    result = ledger.apply([slash(ledger, BOB, "node-0", evidence(ledger, 0))])
    assert receipts(result) == [("applied", "")]
    v = ledger.state.validators["node-0"]
    assert (v.stake, v.revoked) == (1, False)  # 1 >= min_stake: nothing to revoke
    assert ("node-0", 7) in ledger.state.offences
    ledger = make_ledger(stakes=(3, 3, 3), params={"min_stake": 3, "slash_bps": 4000, "reporter_bps": 0},
                         chain_id="second")
    ledger.apply([slash(ledger, BOB, "node-0", evidence(ledger, 0))])
    v = ledger.state.validators["node-0"]
    assert (v.stake, v.revoked, v.phase) == (2, True, UNBONDING)  # 3 * 4000 // 10000 = 1 slashed


def test_a_self_report_is_allowed(ledger: Chain) -> None:
    op = operator_key(ledger, 1)
    assert receipts(ledger.apply([slash(ledger, op, "node-1", evidence(ledger, 1))])) == [("applied", "")]


def test_the_offence_is_the_unordered_pair(ledger: Chain) -> None:
    first = evidence(ledger, 1)
    result = ledger.apply([
        slash(ledger, BOB, "node-1", first, nonce=0),
        slash(ledger, CAROL, "node-1", list(reversed(first)), nonce=0),
        slash(ledger, ALICE, "node-1", evidence(ledger, 1, hashes=(HASH_A, HASH_C)), nonce=0),
        slash(ledger, ALICE, "node-1", evidence(ledger, 1, height=8), nonce=0),  # the rejected one used no nonce
    ])
    assert receipts(result) == [
        ("applied", ""), ("rejected", "duplicate_offence"), ("rejected", "duplicate_offence"), ("applied", ""),
    ]
    # The second slash took half of what was left.
    assert ledger.state.validators["node-1"].stake == STAKE // 4


def test_an_unbonding_validator_is_slashable_and_keeps_its_window(ledger: Chain) -> None:
    op = operator_key(ledger, 1)
    ledger.apply([unenroll(ledger, op, "node-1")])
    window = ledger.state.validators["node-1"].unbond_at_ms
    ledger.apply([slash(ledger, BOB, "node-1", evidence(ledger, 1))])
    v = ledger.state.validators["node-1"]
    assert (v.phase, v.unbond_at_ms, v.revoked) == (UNBONDING, window, True)
    assert "GPU-0001" not in ledger.state.gpu_bindings


def _invalid_evidence_cases(ledger: Chain) -> list[list[dict[str, Any]]]:
    v1, v2 = ledger.vals[1], ledger.vals[2]
    same = build.vote(ledger.chain_id, v1.node_id, v1.key, 7, HASH_A)
    return [
        [same, same],  # the same block hash
        [same, build.vote(ledger.chain_id, v1.node_id, v1.key, 8, HASH_B)],  # different heights
        [same, build.vote(ledger.chain_id, v2.node_id, v2.key, 7, HASH_B)],  # different node_ids
        evidence(ledger, 1, key=keypair("intruder")),  # signatures that fail under node-1's key
        [same, build.vote("other-chain", v1.node_id, v1.key, 7, HASH_B)],  # a vote of another chain
        evidence(ledger, 2),  # votes by node-2, reported as node-1's
    ]


def test_invalid_evidence(ledger: Chain) -> None:
    cases = _invalid_evidence_cases(ledger)
    result = ledger.apply([slash(ledger, BOB, "node-1", votes, nonce=0) for votes in cases])
    assert receipts(result) == [("rejected", "invalid_evidence")] * len(cases)
    assert ledger.state.validators["node-1"].stake == STAKE and ledger.nonce(BOB.address) == 0


def test_slash_rejections_in_order(make_ledger: Any) -> None:
    ledger = make_ledger(params={"unbond_ms": 0})
    op = operator_key(ledger, 1)
    ledger.apply([unenroll(ledger, op, "node-1")])  # released at once: stake 0
    bad = evidence(ledger, 1, key=keypair("intruder"))
    result = ledger.apply([
        slash(ledger, BOB, "node-9", bad, nonce=4),
        slash(ledger, BOB, "node-9", bad, nonce=0),
        slash(ledger, BOB, "node-1", bad, nonce=0),
        slash(ledger, BOB, "node-0", bad, nonce=0),
    ])
    assert receipts(result) == [
        ("rejected", "bad_nonce"), ("rejected", "unknown_validator"), ("rejected", "not_slashable"),
        ("rejected", "invalid_evidence"),
    ]


def test_a_slash_in_the_block_changes_finality_from_that_block(ledger: Chain) -> None:
    b1 = ledger.apply([slash(ledger, BOB, "node-1", evidence(ledger, 1))])["hash"]
    block = ledger.state.blocks[b1]
    assert block.total_stake == 2 * STAKE and "node-1" not in block.stakes
    # node-0 and node-2 alone now hold all of the active stake at height 1.
    ledger.submit(ledger.vote(0, b1, 1))
    assert ledger.submit(ledger.vote(2, b1, 1))["finalized_height"] == 1


# ================================================================================================ reorgs


def test_a_reorg_undoes_enrollments_and_slashes_and_the_other_branch_may_reuse_them(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    before = (dict(ledger.state.balances), dict(ledger.state.gpu_bindings), set(ledger.state.offences),
              {n: v.record() for n, v in ledger.state.validators.items()}, ledger.state.burned)
    ledger.apply([enroll(ledger), slash(ledger, BOB, "node-1", evidence(ledger, 1))])
    # A branch without them: node-new and the offence are free there, with another key and gpu.
    other_key = keypair("node-new-other")
    s2 = ledger.submit(ledger.block([], parent=b1, proposer=2))["hash"]
    assert ledger.state.validators["node-new"].pk == NEW_KEY.pk
    s3 = ledger.submit(ledger.block([], parent=s2, proposer=2))
    assert s3["reorg"]["depth"] == 1
    state = ledger.state
    balances = {k: v for k, v in state.balances.items() if v}
    before_balances = {k: v for k, v in before[0].items() if v}
    operator2 = ledger.vals[2].operator.address
    assert balances == {**before_balances, (operator2, "CELL"): 2 * REWARD}
    assert (state.gpu_bindings, state.offences) == (before[1], before[2])
    assert {n: v.record() for n, v in state.validators.items()} == before[3] and state.burned == before[4]
    result = ledger.apply([
        build.enroll(ledger.chain_id, BOB, "node-new", "GPU-OTHER", STAKE, other_key, nonce=0),
        slash(ledger, CAROL, "node-1", evidence(ledger, 1)),
    ])
    assert receipts(result) == [("applied", ""), ("applied", "")]
    assert ledger.state.validators["node-new"].pk == other_key.pk


# ========================================================================================= property test

actions = st.lists(
    st.one_of(
        st.tuples(st.just("transfer"), st.integers(0, 2), st.integers(0, 2), st.integers(1, 40)),
        st.tuples(st.just("enroll"), st.integers(0, 2), st.integers(0, 5), st.integers(5, 30)),
        st.tuples(st.just("unenroll"), st.integers(0, 2), st.integers(0, 5), st.sampled_from([0, 1, 1])),
        st.tuples(st.just("slash"), st.integers(0, 2), st.integers(0, 5), st.integers(0, 3)),
    ),
    max_size=4,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(st.tuples(st.integers(0, 2), actions), min_size=1, max_size=6),
       unbond_ms=st.sampled_from([0, 1_000, 2_500]), slash_bps=st.sampled_from([0, 2500, 5000, 10_000]))
def test_the_cell_invariant_holds_over_random_validator_activity(blocks: list[Any], unbond_ms: int,
                                                                 slash_bps: int) -> None:
    """sum of balances + stakes (active and unbonding) = minted - burned after every block, no figure is
    negative, and the gpu bindings are exactly the live enrollments."""
    accounts = (ALICE, BOB, CAROL)
    vals = validators((STAKE, 2 * STAKE, 3 * STAKE))
    with tempfile.TemporaryDirectory() as tmp:
        service = open_service(Path(tmp))
        try:
            ledger = Chain(service, genesis_command(vals=vals, params={"unbond_ms": unbond_ms,
                                                                       "slash_bps": slash_bps}), vals)
            nodes = [v.node_id for v in vals] + ["node-x", "node-y", "node-z"]
            keys = {k.address: k for k in accounts} | {v.operator.address: v.operator for v in vals}
            for proposer, plan in blocks:
                active = [n for n in ledger.state.active_stakes]
                if not active:
                    return  # nobody may propose any more
                nonces = {a: ledger.nonce(a) for a in keys}
                txs = []
                for kind, who, target, amount in plan:
                    signer = accounts[who]
                    node_id = nodes[target]
                    current = ledger.state.validators.get(node_id)
                    if kind == "unenroll" and amount and current is not None:
                        signer = keys[current.operator]  # mostly its own operator
                    nonce = nonces[signer.address]
                    nonces[signer.address] += 1
                    if kind == "transfer":
                        txs.append(build.transfer(ledger.chain_id, signer, accounts[target % 3].address,
                                                  amount * CELL, nonce=nonce, fee=1))
                    elif kind == "enroll":
                        txs.append(build.enroll(ledger.chain_id, signer, node_id, f"GPU-{target % 4}",
                                                amount * CELL, keypair(node_id), nonce=nonce))
                    elif kind == "unenroll":
                        txs.append(build.unenroll(ledger.chain_id, signer, node_id, nonce=nonce))
                    else:
                        key = vals[target].key if target < 3 else keypair(node_id)
                        votes = build.evidence(ledger.chain_id, node_id, key, amount, (HASH_A, HASH_B))
                        txs.append(build.slash(ledger.chain_id, signer, node_id, votes, nonce=nonce))
                # Enrolled validators propose with their own keys.
                proposer_id = sorted(active)[proposer % len(active)]
                key = vals[int(proposer_id[-1])].key if proposer_id in {v.node_id for v in vals} else keypair(
                    proposer_id)
                tip = ledger.state.tip
                block = build.block(ledger.chain_id, tip.height + 1, tip.hash, proposer_id, key,
                                    tip.timestamp_ms + 1_000, txs)
                result = ledger.submit(block)
                assert result["status"] == "accepted", result
                for tx, receipt in zip(txs, result["receipts"], strict=True):
                    event(f"{tx['kind']} {receipt['status']}")
                state = ledger.state
                assert cell_total(state) == state.minted - state.burned
                assert all(amount >= 0 for amount in state.balances.values())
                assert all(v.stake >= 0 for v in state.validators.values())
                live = {v.gpu_uuid: v.node_id for v in state.validators.values() if v.binds_gpu}
                assert state.gpu_bindings == live
        finally:
            service.close()
