"""Forks and reorgs on the write side (DOMAIN.md, Forks and reorgs; Precise rules: Fork choice, Branch-local
state): side blocks validated on their own branch, fork choice, exact reverts, finality, and a property test
that after any sequence of blocks and votes the state equals a fresh fold of the canonical branch alone.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hypothesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelerators.verify import BatchVerifier
from schemas import build
from schemas.canonical import block_hash
from schemas.events import (
    BlockApplied,
    BlockFinalized,
    BlockReapplied,
    BlockRecorded,
    BlockReverted,
    ChainReorganized,
    LedgerEvent,
    VoteAccepted,
)
from schemas.limits import PARAM_DEFAULTS
from tests.chain import ALICE, BOB, CAROL, CELL, STAKE, Chain, genesis_command, keypair, open_service, validators
from writes.decide import decide
from writes.service import LedgerService, seal
from writes.state import ACTIVE, UNBONDING, BranchView, ChainState, Ledger, fold

REWARD = PARAM_DEFAULTS["block_reward"]
RELAYER = keypair("relayer-a")


def events_since(service: LedgerService, position: int) -> list[LedgerEvent]:
    app = service.app
    return [app.mapper.to_domain_event(n) for n in service.notifications(position + 1)]  # type: ignore[misc]


def kinds_since(service: LedgerService, position: int) -> list[type]:
    return [type(e) for e in events_since(service, position)]


def view(chain: ChainState) -> dict[str, Any]:
    """What must agree between two folds of the same canonical branch (zero entries are absent entries)."""
    return {
        "balances": {k: v for k, v in chain.balances.items() if v},
        "nonces": {k: v for k, v in chain.nonces.items() if v},
        "validators": {n: (v.phase, v.stake, v.unbond_at_ms) for n, v in chain.validators.items()},
        "minted": chain.minted, "burned": chain.burned, "canonical": list(chain.canonical),
        "active_stakes": dict(chain.active_stakes), "gpu_bindings": dict(chain.gpu_bindings),
        "offences": set(chain.offences), "reserves": dict(chain.reserves), "bridge": dict(chain.bridge),
    }


def fresh_fold(verifier: BatchVerifier, commands: Sequence[dict[str, Any]]) -> Ledger:
    """The ledger after submitting `commands` in order to an empty ledger, in memory (no event store)."""
    ledger = Ledger()
    for command in commands:
        decision = decide(ledger, command, verifier)
        for event, ehash in seal(ledger, decision.events):
            fold(ledger, event, ehash)
    return ledger


def cell_total(chain: ChainState) -> int:
    balances = sum(amount for (_, asset), amount in chain.balances.items() if asset == "CELL")
    return balances + sum(v.stake for v in chain.validators.values() if v.phase in (ACTIVE, UNBONDING))


# ============================================================================================ side blocks


def test_a_sibling_of_the_tip_is_recorded_not_applied(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    b2 = ledger.apply([ledger.transfer(ALICE, BOB.address, 5 * CELL)])["hash"]
    position, before = ledger.service.max_position(), view(ledger.state)
    # Alice's nonce 0 was used on the canonical branch; on the side branch it is still free.
    side = ledger.block([ledger.transfer(ALICE, CAROL.address, 7 * CELL, nonce=0)], parent=b1, proposer=1)
    result = ledger.submit(side)
    assert result["status"] == "accepted" and result["canonical"] is False and result["reorg"] is None
    assert result["receipts"] == []  # blocks that were never canonical have no receipts
    assert kinds_since(ledger.service, position) == [BlockRecorded]
    assert view(ledger.state) == before and ledger.state.tip.hash == b2
    recorded = events_since(ledger.service, position)[0]
    assert isinstance(recorded, BlockRecorded) and recorded.receipts == [["applied", ""]]


def test_a_side_block_is_checked_against_its_own_branch(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    ledger.apply([ledger.transfer(ALICE, BOB.address, 5 * CELL)])
    # Nonce 1 is alice's next on the canonical branch, not on the branch through b1.
    side = ledger.submit(ledger.block([ledger.transfer(ALICE, BOB.address, 1, nonce=1)], parent=b1))
    wins = ledger.submit(ledger.block([], parent=side["hash"]))
    assert wins["reorg"]["depth"] == 1
    receipts = [e for e in events_since(ledger.service, 0) if isinstance(e, BlockReapplied)][0].receipts
    assert receipts == [["rejected", "bad_nonce"]]
    assert ledger.nonce(ALICE.address) == 0


def test_a_tie_keeps_the_tip_accepted_first(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    b2 = ledger.apply()["hash"]
    ledger.submit(ledger.block(parent=b1, proposer=1))
    assert ledger.state.tip.hash == b2


def test_the_proposer_must_be_active_on_its_own_branch(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    ledger.apply()
    ledger.reject(ledger.block(parent=b1, node_id="node-9"), "proposer_not_active")


# ================================================================================================ reorgs


def test_a_longer_branch_reorganizes_exactly(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    c2 = ledger.block([ledger.transfer(ALICE, BOB.address, 5 * CELL, fee=2)])
    ledger.submit(c2)
    s2 = ledger.block([ledger.transfer(BOB, CAROL.address, 3 * CELL, nonce=0)], parent=b1, proposer=1)
    ledger.submit(s2)
    position = ledger.service.max_position()
    s3 = ledger.block([], parent=block_hash(s2), proposer=2)
    result = ledger.submit(s3)
    assert result["canonical"] is True
    assert result["reorg"] == {
        "cause": "longer_branch", "depth": 1, "ancestor_height": 1, "ancestor_hash": b1,
        "old_tip": [2, block_hash(c2)], "new_tip": [3, block_hash(s3)],
    }
    events = events_since(ledger.service, position)
    assert [type(e) for e in events] == [ChainReorganized, BlockReverted, BlockReapplied, BlockApplied]
    header = events[0]
    assert isinstance(header, ChainReorganized)
    assert header.reverted == [[2, block_hash(c2)]] and header.applied == [[2, block_hash(s2)], [3, block_hash(s3)]]
    # Exactly as if c2 had never been applied: alice untouched, bob paid carol on the new branch.
    assert ledger.balance(ALICE.address) == 100 * CELL and ledger.nonce(ALICE.address) == 0
    assert ledger.balance(BOB.address) == 97 * CELL and ledger.balance(CAROL.address) == 103 * CELL
    fresh = fresh_fold(ledger.service.verifier, [genesis_command(), ledger_block(ledger, b1), s2, s3])
    assert view(ledger.state) == view(fresh.chains[ledger.chain_id])


def ledger_block(ledger: Chain, block_hash_: str) -> dict[str, Any]:
    """The block as submitted, from the log."""
    for event in events_since(ledger.service, 0):
        if isinstance(event, (BlockApplied, BlockRecorded)) and event.block_hash == block_hash_:
            return event.block
    raise KeyError(block_hash_)


def test_a_reorg_back_to_the_first_branch(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    c2 = ledger.apply([ledger.transfer(ALICE, BOB.address, CELL)])["hash"]
    s2 = ledger.submit(ledger.block(parent=b1, proposer=1))["hash"]
    s3 = ledger.submit(ledger.block(parent=s2, proposer=1))["hash"]
    assert ledger.state.tip.hash == s3
    c3 = ledger.submit(ledger.block(parent=c2))["hash"]  # a tie: s3 stays
    assert ledger.state.tip.hash == s3
    result = ledger.submit(ledger.block(parent=c3))
    assert result["reorg"]["depth"] == 2 and result["reorg"]["old_tip"] == [3, s3]
    assert ledger.state.canonical == [ledger.genesis_hash, b1, c2, c3, result["hash"]]
    assert ledger.balance(BOB.address) == 101 * CELL and ledger.nonce(ALICE.address) == 1


def test_a_reorg_pays_the_reward_to_the_new_branch_proposers(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    ledger.apply(proposer=0)
    s2 = ledger.submit(ledger.block(parent=b1, proposer=1))["hash"]
    ledger.submit(ledger.block(parent=s2, proposer=1))
    operators = [v.operator.address for v in ledger.vals]
    assert [ledger.balance(a) for a in operators] == [REWARD, 2 * REWARD, 0]
    assert ledger.state.minted - ledger.state.burned == cell_total(ledger.state)


def test_votes_for_a_side_block_count_for_it_and_finality_reorganizes(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    c2 = ledger.apply()["hash"]
    c3 = ledger.apply()["hash"]
    s2 = ledger.submit(ledger.block(parent=b1, proposer=1))["hash"]
    ledger.submit(ledger.vote(0, s2, 2))
    ledger.submit(ledger.vote(1, s2, 2))
    position = ledger.service.max_position()
    result = ledger.submit(ledger.vote(2, s2, 2))
    assert result["finalized_height"] == 2
    assert result["reorg"] == {
        "cause": "finality", "depth": 2, "ancestor_height": 1, "ancestor_hash": b1,
        "old_tip": [3, c3], "new_tip": [2, s2],
    }
    assert kinds_since(ledger.service, position) == [
        VoteAccepted, ChainReorganized, BlockReverted, BlockReverted, BlockReapplied, BlockFinalized,
    ]
    # A shorter branch is canonical now: it holds the final block.
    assert ledger.state.canonical == [ledger.genesis_hash, b1, s2]
    # And the old branch can never come back.
    ledger.reject(ledger.block(parent=c3), "conflicts_with_finality")
    ledger.reject(ledger.block(parent=c2), "conflicts_with_finality")


def test_finality_reorganizes_onto_the_longest_branch_through_the_final_block(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    for _ in range(3):
        ledger.apply()
    s2 = ledger.submit(ledger.block(parent=b1, proposer=1))["hash"]
    s3a = ledger.submit(ledger.block(parent=s2, proposer=1))["hash"]
    ledger.submit(ledger.block(parent=s2, proposer=2))  # same height as s3a, accepted later
    s4 = ledger.submit(ledger.block(parent=s3a, proposer=1))["hash"]
    assert ledger.state.tip.height == 4 and ledger.state.tip.hash != s4  # a tie at 4: the first stays
    result = ledger.finalize(s2, 2)
    assert result["reorg"]["new_tip"] == [4, s4]
    assert ledger.state.tip.hash == s4 and ledger.state.finalized_height == 2


def test_early_votes_finalize_a_side_block_on_arrival(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    ledger.apply()
    c3 = ledger.apply()["hash"]
    side = ledger.block(parent=b1, proposer=1)
    for i in range(3):
        assert ledger.submit(ledger.vote(i, block_hash(side), 2))["counted"] is False
    result = ledger.submit(side)
    assert result["canonical"] is True and result["finalized_height"] == 2
    assert result["reorg"]["cause"] == "finality" and result["reorg"]["old_tip"] == [3, c3]
    assert ledger.state.tip.hash == block_hash(side)


def test_votes_for_a_block_off_the_final_branch_never_count(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    c2 = ledger.apply()["hash"]
    s2 = ledger.submit(ledger.block(parent=b1, proposer=1))["hash"]
    ledger.finalize(c2, 2)
    result = ledger.finalize(s2, 2)  # accepted (the validators are active), never counted toward finality
    assert result["finalized_height"] == 2 and result["reorg"] is None
    assert ledger.state.tip.hash == c2


def test_a_reorg_below_the_finalized_height_is_refused(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    c2 = ledger.apply()["hash"]
    s2 = ledger.submit(ledger.block(parent=b1, proposer=1))["hash"]
    ledger.finalize(c2, 2)
    ledger.reject(ledger.block(parent=s2, proposer=1), "conflicts_with_finality")


def test_summaries_are_forgotten_once_blocks_cannot_move(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    c2 = ledger.apply()["hash"]
    s2 = ledger.submit(ledger.block(parent=b1, proposer=1))["hash"]
    assert ledger.state.unsettled == {b1, c2, s2}
    ledger.finalize(c2, 2)
    assert ledger.state.unsettled == set()
    assert all(ledger.state.blocks[h].summary is None for h in (b1, c2, s2))


def test_a_restart_folds_the_same_state_after_reorgs(tmp_path: Path) -> None:
    vals = validators()
    service = open_service(tmp_path)
    ledger = Chain(service, genesis_command(vals=vals), vals)
    b1 = ledger.apply([ledger.transfer(ALICE, BOB.address, CELL)])["hash"]
    ledger.apply([ledger.transfer(BOB, CAROL.address, CELL)])
    s2 = ledger.submit(ledger.block([ledger.transfer(CAROL, ALICE.address, 2 * CELL)], parent=b1, proposer=1))
    ledger.submit(ledger.block(parent=s2["hash"], proposer=2))
    live = service.ledger
    service.close()
    reopened = open_service(tmp_path)
    try:
        assert view(reopened.ledger.chains[ledger.chain_id]) == view(live.chains[ledger.chain_id])
        assert reopened.ledger.seq == live.seq and reopened.ledger.last_hash == live.last_hash
        assert reopened.ledger.chains[ledger.chain_id].unsettled == live.chains[ledger.chain_id].unsettled
    finally:
        reopened.close()


# ====================================================================================== property test

# A step is a block (parent picked among the known blocks, proposer, txs) or a vote. A tx is a transfer, an
# enrollment of node-x<r> or a slash of node-<r> (genesis validators), by account s.
transfers = st.lists(
    st.tuples(
        st.integers(0, 2), st.integers(0, 2), st.integers(1, 60), st.sampled_from([0, 0, 0, 1]),
        st.sampled_from(["transfer", "transfer", "enroll", "slash", "deposit", "withdraw"]),
    ),
    max_size=2,
)
block_steps = st.tuples(st.just("block"), st.integers(0, 10**6), st.integers(0, 2), transfers)
# A vote step's voter 3 means every validator votes (enough to finalize: all three stakes are equal).
vote_steps = st.tuples(st.just("vote"), st.integers(0, 10**6), st.sampled_from([0, 1, 2, 3, 3, 3]), st.just([]))
steps = st.lists(st.one_of(block_steps, block_steps, vote_steps), min_size=3, max_size=14)
ACCOUNTS_ = (ALICE, BOB, CAROL)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps)
def test_any_tree_of_blocks_folds_like_its_canonical_branch(steps: list[Any]) -> None:
    """Random trees of blocks and votes, submitted in random orders: after every command the state equals a
    fresh fold of the canonical branch alone, the CELL invariant holds at every height of it, and a refused
    block is refused for finality only."""
    vals = validators((2 * STAKE,) * 3)  # a slash halves a stake to min_stake; a second one revokes
    genesis = genesis_command(vals=vals, relayers=[("relayer-a", RELAYER)])
    with tempfile.TemporaryDirectory() as tmp:
        service = open_service(Path(tmp))
        try:
            ledger = Chain(service, genesis, vals)
            submitted: dict[str, dict[str, Any]] = {}
            for kind, pick, who, plan in steps:
                chain = ledger.state
                known = sorted(chain.blocks.values(), key=lambda b: b.order)
                target = known[pick % len(known)]
                if kind == "vote":
                    for voter in range(3) if who == 3 else [who]:
                        result = ledger.submit(ledger.vote(voter, target.hash, target.height))
                        if chain.validators[vals[voter].node_id].phase == ACTIVE:
                            assert result["status"] == "accepted", result
                        else:
                            assert result["reason"] == "not_active", result
                else:
                    branch = BranchView(chain, target) if chain.descends_from(target, chain.finalized) else None
                    nonces = {k.address: branch.next_nonce(k.address) if branch else 0 for k in ACCOUNTS_}
                    txs = []
                    for s, r, amount, skew, tx_kind in plan:
                        sender = ACCOUNTS_[s]
                        nonce = nonces[sender.address] + skew
                        nonces[sender.address] += 1
                        if tx_kind == "enroll":
                            txs.append(build.enroll(ledger.chain_id, sender, f"node-x{r}", f"GPU-X{amount % 2}",
                                                    STAKE, keypair(f"node-x{r}"), nonce=nonce))
                        elif tx_kind == "deposit":
                            txs.append(build.bridge_deposit(ledger.chain_id, RELAYER, f"r{amount % 4}", "USDC",
                                                            ACCOUNTS_[r].address, amount))
                        elif tx_kind == "withdraw":
                            txs.append(build.withdraw_request(ledger.chain_id, sender, f"r{amount % 4}", "USDC",
                                                              amount // 2 + 1, nonce=nonce))
                        elif tx_kind == "slash":
                            votes = build.evidence(ledger.chain_id, vals[r].node_id, vals[r].key, amount % 3,
                                                   ("aa" * 32, "bb" * 32))
                            txs.append(build.slash(ledger.chain_id, sender, vals[r].node_id, votes, nonce=nonce))
                        else:
                            txs.append(ledger.transfer(sender, ACCOUNTS_[r].address, amount * CELL, nonce=nonce))
                    proposers = [i for i, v in enumerate(vals) if branch and v.node_id in branch.active_stakes]
                    if branch is not None and not proposers:
                        continue  # every validator was revoked on this branch
                    command = ledger.block(txs, parent=target.hash, proposer=proposers[who % len(proposers)]
                                           if proposers else who % 3)
                    result = ledger.submit(command)
                    if result.get("reason") == "duplicate_block":  # the same parent, proposer and txs again
                        assert block_hash(command) in chain.blocks
                        continue
                    if branch is None:
                        assert result["reason"] == "conflicts_with_finality", result
                        continue
                    assert result["status"] == "accepted", result
                    submitted[result["hash"]] = command
                chain = ledger.state
                assert chain.is_canonical(chain.finalized)
                canonical = [submitted[h] for h in chain.canonical[1:]]
                fresh = fresh_fold(service.verifier, [genesis])
                for command in canonical:
                    for sealed, ehash in seal(fresh, decide(fresh, command, service.verifier).events):
                        fold(fresh, sealed, ehash)
                    state = fresh.chains[ledger.chain_id]
                    assert cell_total(state) == state.minted - state.burned
                    assert all(amount >= 0 for amount in state.balances.values())
                    for asset, (deposited, withdrawn, pending) in state.bridge.items():  # liabilities = escrow
                        held = sum(v for (_, a), v in state.balances.items() if a == asset)
                        assert held + pending == deposited - withdrawn
                hypothesis.event(f"reorganizations: {min(chain.reorganizations, 3)}")
                hypothesis.event(f"finalized height: {min(chain.finalized_height, 2)}")
                ours, theirs = view(chain), view(fresh.chains[ledger.chain_id])
                assert ours == theirs
                # The tip is the highest block on the final branch, the first accepted on ties.
                alive = [b for b in chain.blocks.values() if chain.descends_from(b, chain.finalized)]
                best = max(alive, key=lambda b: (b.height, -b.order))
                assert chain.tip.height == best.height
        finally:
            service.close()
