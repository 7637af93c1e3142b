"""The devnet builders produce what DOMAIN.md accepts; the loop resumes from the ledger with its keys; its
competing branches win, reorganize the ledger, and leave every canonical block final and the CELL supply whole."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pqcrypto
import pytest
from pqcrypto.sign import ml_dsa_65

from schemas import build
from schemas.canonical import address_of, block_hash, canonical_bytes, genesis_hash, tx_id, tx_root
from schemas.events import (
    BlockApplied,
    BlockFinalized,
    BlockRecorded,
    BlockReverted,
    ChainReorganized,
    VoteAccepted,
)
from schemas.limits import PARAM_DEFAULTS, PK_BYTES
from schemas.signing import KeyPair
from writes.devnet import (
    ACCOUNT_FUNDS,
    GENESIS_VALIDATORS,
    MICRO,
    SEED_FILE,
    TRANSFER_FEE,
    VALIDATORS_ACTIVE_MAX,
    Devnet,
    Report,
    apply_ops,
    block_on,
    build_block,
    build_chain,
    build_fork,
    build_votes,
    choose_equivocator,
    competitor_of,
    derive_keys,
    devnet_genesis,
    equivocate,
    fork_due,
    header_bytes,
    ledger_figures,
    load_or_create_seed,
    next_block,
    plan_enrollment,
    plan_reports,
    plan_transfers,
    plan_unenrollment,
    reserved_accounts,
    roster_of,
    settle,
    sign_planned,
    trading_accounts,
    validator_key,
    voters_for,
)
from writes.state import ACTIVE, UNBONDING, ChainState
from writes.txpool import TxPool

SEED = bytes(range(32))
# Forks alone: no enrollments, unenrollments or equivocations.
NO_VALIDATOR_LIFE = {"enroll_period_blocks": 0, "unenroll_period_blocks": 0, "equivocation_period_blocks": 0}


def _sig_ok(key: dict[str, str], message: bytes, sig_hex: str) -> bool:
    """pqcrypto, the reference verifier, on an ML-DSA-65 key (the devnet signs with `cryptography`)."""
    assert key["alg"] == "ml-dsa-65"
    try:
        ml_dsa_65.verify(bytes.fromhex(key["pk"]), message, bytes.fromhex(sig_hex))
    except pqcrypto.InvalidSignatureError:
        return False
    return True


def _reference_receipts(plans_txs: list[dict[str, Any]], nonces: dict[str, int], cell: dict[str, int]) -> list[str]:
    """DOMAIN.md's transfer rules for CELL, in order: bad_nonce, then insufficient_funds, else applied."""
    nonce, bal, out = dict(nonces), dict(cell), []
    for tx in plans_txs:
        sender = tx["from"]
        if tx["nonce"] != nonce[sender]:
            out.append("bad_nonce")
        elif bal[sender] < tx["fee"] + tx["amount"]:
            out.append("insufficient_funds")
        else:
            nonce[sender] += 1
            bal[sender] -= tx["fee"] + tx["amount"]
            bal[tx["to"]] += tx["amount"]
            out.append("applied")
    return out


def test_keys_are_deterministic_per_seed() -> None:
    a, b = derive_keys(SEED), derive_keys(SEED)
    assert [k.address for k in a.accounts] == [k.address for k in b.accounts]
    assert [v.key.pk for v in a.validators] == [v.key.pk for v in b.validators]
    other = derive_keys(bytes(32))
    assert a.accounts[0].address != other.accounts[0].address
    assert len({k.address for k in a.accounts}) == 20
    assert len({v.key.pk for v in a.validators}) == 4


def test_genesis_shape() -> None:
    genesis, keys = devnet_genesis(SEED, timestamp_ms=1_700_000_000_000)
    assert set(genesis) == {
        "kind",
        "chain_id",
        "timestamp_ms",
        "params",
        "allocations",
        "validators",
        "relayers",
    }
    assert genesis["kind"] == "genesis" and genesis["chain_id"] == "devnet"
    assert genesis["params"] == PARAM_DEFAULTS
    assert genesis["allocations"] == [
        {"address": k.address, "asset": "CELL", "amount": ACCOUNT_FUNDS} for k in keys.accounts
    ]
    assert len(genesis["validators"]) == 4
    for v, dv in zip(genesis["validators"], keys.validators, strict=True):
        assert set(v) == {"node_id", "operator", "key", "gpu_uuid", "stake"}
        assert v["stake"] >= PARAM_DEFAULTS["min_stake"]
        assert v["key"]["alg"] == "ml-dsa-65" and len(bytes.fromhex(v["key"]["pk"])) == PK_BYTES["ml-dsa-65"]
        assert v["operator"] in {a["address"] for a in genesis["allocations"]}
        assert v["node_id"] == dv.node_id
    assert len({v["gpu_uuid"] for v in genesis["validators"]}) == 4
    # the genesis is plain JSON
    assert canonical_bytes(genesis)


def test_block_header_signature_and_tx_root() -> None:
    keys = derive_keys(SEED)
    addresses = [k.address for k in keys.accounts]
    plans = plan_transfers(random.Random(1), addresses, [0] * 20, [ACCOUNT_FUNDS] * 20, 12)
    txs = sign_planned(keys, "devnet", plans)
    proposer = keys.proposer(5)
    block = build_block(proposer, chain_id="devnet", height=5, parent="ab" * 32, timestamp_ms=10, txs=txs)
    assert set(block) == {
        "kind",
        "chain_id",
        "height",
        "parent",
        "proposer",
        "timestamp_ms",
        "tx_root",
        "txs",
        "sig",
    }
    assert block["proposer"] == proposer.node_id == "devnet-node-1"
    assert block["tx_root"] == tx_root([tx_id(tx) for tx in txs])
    assert _sig_ok(proposer.key.key, header_bytes(block), block["sig"])
    # the signature covers the header only: txs are bound through tx_root
    assert header_bytes(block) == canonical_bytes({k: v for k, v in block.items() if k not in ("txs", "sig")})
    for tx in txs:
        assert set(tx) == {
            "kind",
            "chain_id",
            "signer",
            "key",
            "from",
            "to",
            "asset",
            "amount",
            "fee",
            "nonce",
            "sig",
        }
        assert tx["signer"] == tx["from"] == address_of(tx["key"]["alg"], bytes.fromhex(tx["key"]["pk"]))
        assert _sig_ok(tx["key"], canonical_bytes(tx, drop_sig=True), tx["sig"])
        assert 0 < tx["amount"] < 2**63 and tx["fee"] >= 0


def test_empty_block_has_the_empty_root() -> None:
    keys = derive_keys(SEED)
    block = build_block(keys.proposer(1), chain_id="devnet", height=1, parent="00" * 32, timestamp_ms=0, txs=[])
    assert block["tx_root"] == tx_root([]) and block["txs"] == []


def test_planned_rejections_are_what_the_rules_give() -> None:
    keys = derive_keys(SEED, accounts=5)
    addresses = [k.address for k in keys.accounts]
    nonces, balances = [3, 0, 1, 0, 9], [ACCOUNT_FUNDS, 50, 10**9, 1_001, 0]
    plans = plan_transfers(random.Random(7), addresses, nonces, balances, 400, bad_per_mille=200)
    intents = [p.intent for p in plans]
    assert intents.count("bad_nonce") > 5 and intents.count("insufficient_funds") > 5
    assert intents.count("applied") > 100
    txs = sign_planned(keys, "devnet", plans[:60])  # signing is the slow part: check a prefix end to end
    expected = _reference_receipts(
        txs, dict(zip(addresses, nonces, strict=True)), dict(zip(addresses, balances, strict=True))
    )
    assert expected == intents[:60]
    # and the whole plan, without signatures
    unsigned = [
        {"from": addresses[p.sender], "to": p.to, "amount": p.amount, "fee": p.fee, "nonce": p.nonce} for p in plans
    ]
    assert (
        _reference_receipts(
            unsigned, dict(zip(addresses, nonces, strict=True)), dict(zip(addresses, balances, strict=True))
        )
        == intents
    )
    for p in plans:
        assert p.to != addresses[p.sender]


def test_votes_carry_more_than_two_thirds_of_the_stake() -> None:
    keys = derive_keys(SEED)
    stake = {v.node_id: v.stake for v in keys.validators}
    for height in range(1, 9):
        votes = build_votes(keys, chain_id="devnet", height=height, block_hash="cd" * 32)
        voters = [v["node_id"] for v in votes]
        assert len(set(voters)) == len(voters)
        voting = sum(stake[n] for n in voters)
        assert 3 * voting > 2 * keys.total_stake
        # minimal: without the last voter it would not finalize
        assert 3 * (voting - stake[voters[-1]]) <= 2 * keys.total_stake
        by_node = {v.node_id: v for v in voters_for(keys, height)}
        for vote in votes:
            assert set(vote) == {"kind", "chain_id", "node_id", "height", "block_hash", "sig"}
            assert vote["kind"] == "vote" and vote["height"] == height and vote["block_hash"] == "cd" * 32
            assert _sig_ok(by_node[vote["node_id"]].key.key, canonical_bytes(vote, drop_sig=True), vote["sig"])


def test_seed_is_created_once_and_reused(tmp_path: Path) -> None:
    seed = load_or_create_seed(tmp_path / "d")
    assert len(seed) == 32
    assert (tmp_path / "d" / SEED_FILE).read_text().strip() == seed.hex()
    assert load_or_create_seed(tmp_path / "d") == seed


# ---------------------------------------------------------------- against the real ledger


@pytest.fixture
def service(tmp_path: Path) -> Any:
    service_mod = pytest.importorskip("writes.service")
    from schemas.settings import from_env

    svc = service_mod.LedgerService(from_env(data_dir=tmp_path / "data"))
    yield svc
    svc.close()


def test_ledger_accepts_devnet_blocks_and_votes(service: Any) -> None:
    genesis, keys = devnet_genesis(SEED, timestamp_ms=1_000)
    assert service.submit(genesis)["status"] == "accepted"
    rng = random.Random(3)
    for step in range(1, 4):
        block, plans = next_block(keys, service, rng, chain_id="devnet", now_ms=1_000 + step, txs_per_block=15)
        result = service.submit(block)
        assert result["status"] == "accepted", result
        assert result["height"] == step and result["hash"] == block_hash(block)
        got = [r["reason"] or r["status"] for r in result["receipts"]]
        assert got == [p.intent for p in plans]
        votes = build_votes(keys, chain_id="devnet", height=step, block_hash=result["hash"])
        results = service.submit_many(votes)
        assert all(r["status"] == "accepted" for r in results), results
        assert results[-1]["finalized_height"] == step


def test_devnet_loop_resumes_with_the_same_keys(service: Any, tmp_path: Path) -> None:
    first = Devnet(service, tmp_path / "data", fork_period_blocks=0)
    first.step()
    first.step()
    head = service.head("devnet")
    assert head is not None and head[0] == 2
    # a restart: the genesis exists, the seed file gives the keys
    again = Devnet(service, tmp_path / "data", fork_period_blocks=0)
    result = again.step()
    assert result["status"] == "accepted" and result["height"] == 3
    assert again.blocks_accepted == 1 and again.errors == 0


def test_offline_chain_links_blocks_and_plans_from_tracked_state() -> None:
    chain = build_chain(SEED, blocks=3, txs_per_block=6, rng=random.Random(5), start_ms=1_000, interval_ms=10)
    genesis, rest = chain.commands[0], chain.commands[1:]
    blocks = [c for c in rest if c["kind"] == "block"]
    assert [b["height"] for b in blocks] == [1, 2, 3]
    assert blocks[0]["parent"] == genesis_hash(genesis)
    assert [b["parent"] for b in blocks[1:]] == [block_hash(b) for b in blocks[:-1]]
    assert [b["timestamp_ms"] for b in blocks] == [1_010, 1_020, 1_030]
    votes = [c for c in rest if c["kind"] == "vote"]
    assert {(v["height"], v["block_hash"]) for v in votes} == {(b["height"], block_hash(b)) for b in blocks}
    assert [len(i) for i in chain.intents] == [len(b["txs"]) for b in blocks]


def test_ledger_accepts_an_offline_chain(service: Any) -> None:
    chain = build_chain(SEED, blocks=4, txs_per_block=12, rng=random.Random(11))
    results = service.submit_many(chain.commands)
    assert all(r["status"] == "accepted" for r in results), [r for r in results if r["status"] != "accepted"]
    receipts = [[r["reason"] or r["status"] for r in res["receipts"]] for res in results if res["kind"] == "block"]
    assert receipts == chain.intents
    assert results[-1]["finalized_height"] == 4


def test_a_lost_seed_is_named_not_hidden(service: Any, tmp_path: Path) -> None:
    genesis, _ = devnet_genesis(SEED, timestamp_ms=1_000)  # the chain was made from another seed
    assert service.submit(genesis)["status"] == "accepted"
    devnet = Devnet(service, tmp_path / "other")
    # None of the chain's validators has a key from this seed: nothing to propose with, and the message says why.
    with pytest.raises(RuntimeError, match=f"derived from .*{SEED_FILE}"):
        devnet.step()
    assert devnet.blocks_accepted == devnet.blocks_rejected == 0


# ---------------------------------------------------------------- forks


def cell_total(chain: ChainState) -> int:
    """DOMAIN.md's CELL side: balances plus stakes, active and unbonding."""
    balances = sum(amount for (_, asset), amount in chain.balances.items() if asset == "CELL")
    return balances + sum(v.stake for v in chain.validators.values() if v.phase in (ACTIVE, UNBONDING))


def assert_cell_whole(chain: ChainState) -> None:
    """The invariant, and the devnet's own account of the supply: genesis funds and stakes plus one reward per
    canonical block (it burns nothing; fees only move)."""
    keys = derive_keys(SEED)
    issued = len(keys.accounts) * ACCOUNT_FUNDS + keys.total_stake + PARAM_DEFAULTS["block_reward"] * chain.tip.height
    assert cell_total(chain) == chain.minted - chain.burned == issued


def test_forks_are_due_once_per_period_at_the_seeds_heights() -> None:
    due = [h for h in range(1, 4001) if fork_due(SEED, h, 20)]
    assert due == [h for h in range(1, 4001) if fork_due(SEED, h, 20)]
    assert [(h - 1) // 20 for h in due] == list(range(200))  # one in every window of 20 heights
    assert len({(h - 1) % 20 for h in due}) > 10  # not on a beat
    assert due != [h for h in range(1, 4001) if fork_due(bytes(32), h, 20)]
    assert not any(fork_due(SEED, h, 0) for h in range(1, 100))
    assert all(fork_due(SEED, h, 1) for h in range(1, 100))


def test_the_competitor_is_another_validator() -> None:
    keys = derive_keys(SEED)
    for height in range(1, 9):
        competitor = competitor_of(keys, height)
        assert competitor is not None and competitor.node_id != keys.proposer(height).node_id
    assert competitor_of(derive_keys(SEED, validators=1, accounts=2), 1) is None


def test_settle_follows_applied_plans_and_pays_the_operator() -> None:
    keys = derive_keys(SEED, accounts=4)
    addresses = [k.address for k in keys.accounts]
    plans = plan_transfers(random.Random(2), addresses, [0] * 4, [1_000_000] * 4, 50, bad_per_mille=300)
    nonces, balances = settle(addresses, [0] * 4, [1_000_000] * 4, plans, operator=addresses[3], reward=7)
    applied = [p for p in plans if p.intent == "applied"]
    assert nonces == [sum(1 for p in applied if p.sender == i) for i in range(4)]
    assert sum(balances) == 4 * 1_000_000 + 7  # transfers and fees move funds; only the reward adds any
    fees = sum(p.fee for p in applied)
    assert fees > 0
    without = settle(addresses, [0] * 4, [1_000_000] * 4, plans)[1]
    assert balances == [*without[:3], without[3] + 7 + fees]


def test_a_built_fork_wins_by_one_block_and_the_ledger_agrees_with_its_plans(service: Any) -> None:
    genesis, keys = devnet_genesis(SEED, timestamp_ms=1_000)
    assert service.submit(genesis)["status"] == "accepted"
    rng = random.Random(9)
    first, _ = next_block(keys, service, rng, chain_id="devnet", now_ms=2_000, txs_per_block=10)
    assert service.submit(first)["status"] == "accepted"
    service.submit_many(build_votes(keys, chain_id="devnet", height=1, block_hash=block_hash(first)))
    parent = service.head("devnet")
    nonces, balances = ledger_figures(service, "devnet", keys)
    replaced, replaced_plans = block_on(
        keys, rng, parent, nonces, balances, chain_id="devnet", now_ms=3_000, txs_per_block=10
    )
    assert service.submit(replaced)["canonical"] is True  # no votes: it is about to be replaced
    branch = build_fork(
        keys, rng, chain_id="devnet", parent=parent, nonces=nonces, balances=balances, replaced=replaced,
        replaced_plans=replaced_plans, now_ms=3_000, txs_per_block=10, block_reward=PARAM_DEFAULTS["block_reward"],
    )  # fmt: skip
    (side, side_plans), (winner, winner_plans) = branch
    assert side["parent"] == block_hash(first) and winner["parent"] == block_hash(side)
    assert side["proposer"] == winner["proposer"] != replaced["proposer"]
    assert side["txs"][:5] == replaced["txs"][:5] and side["txs"][5:] != replaced["txs"][5:]
    recorded = service.submit(side)
    assert recorded["status"] == "accepted" and recorded["canonical"] is False
    assert recorded["receipts"] == [] and recorded["reorg"] is None
    won = service.submit(winner)
    assert won["status"] == "accepted" and won["canonical"] is True, won
    assert won["reorg"] == {
        "cause": "longer_branch", "depth": 1, "ancestor_height": 1, "ancestor_hash": block_hash(first),
        "old_tip": [2, block_hash(replaced)], "new_tip": [3, block_hash(winner)],
    }  # fmt: skip
    assert [r["reason"] or r["status"] for r in won["receipts"]] == [p.intent for p in winner_plans]
    # What the devnet planned is what the ledger did: nonces and balances after the winning branch.
    addresses = [k.address for k in keys.accounts]
    reward = PARAM_DEFAULTS["block_reward"]
    operator = keys.validators[[v.node_id for v in keys.validators].index(side["proposer"])].operator
    mid = settle(addresses, nonces, balances, side_plans, operator=operator, reward=reward)
    after = settle(addresses, *mid, winner_plans, operator=operator, reward=reward)
    assert ledger_figures(service, "devnet", keys) == after
    assert_cell_whole(service.ledger.chains["devnet"])
    votes = build_votes(keys, chain_id="devnet", height=3, block_hash=block_hash(winner))
    assert service.submit_many(votes)[-1]["finalized_height"] == 3


class CheckedLedger:
    """The service as the devnet sees it, checking the CELL invariant on the canonical state after every
    command that reorganized the ledger (and keeping every result)."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.results: list[dict[str, Any]] = []
        self.checked = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.service, name)  # head, next_nonce, balance

    def submit(self, obj: Any) -> dict[str, Any]:
        return self.submit_many([obj])[0]

    def submit_many(self, objs: list[Any]) -> list[dict[str, Any]]:
        results = []
        for obj in objs:  # one by one, so that the check runs right after the reorganizing command
            result = self.service.submit(obj)
            if result.get("reorg") is not None:
                assert_cell_whole(self.service.ledger.chains["devnet"])
                self.checked += 1
            results.append(result)
        self.results += results
        return results


def expected_fork_heights(seed: bytes, period: int, steps: int) -> list[int]:
    """Where the loop forks: a fork at height h takes h and h + 1, the next step builds on h + 1."""
    heights, height = [], 1
    for _ in range(steps):
        if fork_due(seed, height, period):
            heights.append(height)
            height += 2
        else:
            height += 1
    return heights


def test_devnet_forks_win_reorganize_and_every_canonical_block_finalizes(service: Any, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / SEED_FILE).write_text(SEED.hex() + "\n")  # the fork heights follow from the seed
    ledger = CheckedLedger(service)
    devnet = Devnet(
        ledger, tmp_path / "data", txs_per_block=8, fork_period_blocks=3, rng=random.Random(4), **NO_VALIDATOR_LIFE
    )
    steps = 24
    for _ in range(steps):
        result = devnet.step()
        assert result["status"] == "accepted", result
        assert_cell_whole(service.ledger.chains["devnet"])
    forks = expected_fork_heights(SEED, 3, steps)
    assert len(forks) >= 3
    assert devnet.forks == devnet.reorgs == ledger.checked == len(forks)
    assert devnet.errors == 0 and devnet.blocks_rejected == 0
    assert devnet.blocks_accepted == steps + 2 * len(forks)

    events = [service.app.mapper.to_domain_event(n) for n in service.notifications()]
    reorgs = [e for e in events if isinstance(e, ChainReorganized)]
    assert [r.ancestor_height + 1 for r in reorgs] == forks
    chain = service.ledger.chains["devnet"]
    replaced: set[tuple[int, str]] = set()
    for r in reorgs:
        # depth 1: the replaced block goes, the two competing blocks come, the longer branch wins
        h = r.ancestor_height + 1
        assert (r.cause, r.depth) == ("longer_branch", 1)
        assert r.old_tip[0] == h and r.new_tip[0] == h + 1
        assert r.reverted == [r.old_tip] and [b[0] for b in r.applied] == [h, h + 1]
        assert [chain.canonical[h], chain.canonical[h + 1]] == [b[1] for b in r.applied]
        assert chain.canonical[h] != r.old_tip[1]
        replaced.add((h, r.old_tip[1]))
    reverted = {(e.height, e.block_hash) for e in events if isinstance(e, BlockReverted)}
    recorded = {(e.height, e.block_hash) for e in events if isinstance(e, BlockRecorded)}
    assert reverted == replaced
    assert len(recorded) == len(forks)  # each competing branch's first block waited on the side
    # Every canonical block is final, and none of the replaced ones ever was.
    tip = chain.tip.height
    assert tip == steps + len(forks) and chain.finalized_height == tip
    finalized = {tuple(b) for e in events if isinstance(e, BlockFinalized) for b in e.finalized}
    assert finalized == {(h, chain.canonical[h]) for h in range(1, tip + 1)}
    assert not finalized & replaced
    applied_hashes = {e.block_hash for e in events if isinstance(e, BlockApplied)}
    assert {h for _, h in replaced} <= applied_hashes
    # Nonces and balances were read back after each reorg: only the planned rejections happen (about 1 in 10).
    receipts = [r for res in ledger.results if res.get("kind") == "block" for r in res["receipts"]]
    reasons = [r["reason"] for r in receipts if r["status"] != "applied"]
    assert set(reasons) <= {"bad_nonce", "insufficient_funds"}
    assert len(reasons) < len(receipts) // 4


# ---------------------------------------------------------------- validators: enrollments, unenrollments, slashes


@dataclass
class FakeValidator:
    """What roster_of reads of a writes.state.Validator."""

    node_id: str
    operator: str
    alg: str
    pk: bytes
    gpu_uuid: str
    stake: int
    phase: str = ACTIVE


def fake(index: int, stake: int, phase: str = ACTIVE, *, key: KeyPair | None = None) -> FakeValidator:
    key = key or validator_key(SEED, index)
    return FakeValidator(f"devnet-node-{index}", "0x" + "11" * 20, key.alg, key.pk, f"GPU-{index}", stake, phase)


def test_the_roster_knows_its_own_keys_and_skips_taken_names() -> None:
    squatter = KeyPair.from_seed(b"someone else")
    roster = roster_of(SEED, [
        fake(0, 200), fake(1, 50, UNBONDING), fake(5, 30), fake(6, 40, key=squatter),
        FakeValidator("cli-node", "0x" + "22" * 20, squatter.alg, squatter.pk, "GPU-CLI", 25),
    ])  # fmt: skip
    assert [v.node_id for v in roster.own] == ["devnet-node-0", "devnet-node-5"]
    assert roster.index_of == {"devnet-node-0": 0, "devnet-node-1": 1, "devnet-node-5": 5}
    assert roster.own_stake == 230 and roster.active_stake == 295  # the unbonding one counts in neither
    assert roster.next_index == 7  # after its newest (5); devnet-node-6 was taken by someone else
    assert roster.finalizes_without(0)  # 3 * 230 > 2 * 295
    assert not roster.finalizes_without(100)  # 3 * 130 = 2 * 195: not more
    assert roster.keys(()).proposer(1).node_id == "devnet-node-5"


def test_an_enrollment_is_scheduled_below_the_cap_and_heals_a_lost_majority_at_once() -> None:
    accounts = trading_accounts(derive_keys(SEED))
    nonces, balances = [3] * len(accounts), [ACCOUNT_FUNDS] * len(accounts)
    mine = [fake(i, 100 * MICRO) for i in range(4)]
    args = {"chain_id": "devnet", "min_stake": PARAM_DEFAULTS["min_stake"]}
    assert plan_enrollment(SEED, roster_of(SEED, mine), accounts, nonces, balances, scheduled=False, **args) is None
    op = plan_enrollment(SEED, roster_of(SEED, mine), accounts, nonces, balances, scheduled=True, **args)
    assert op is not None and (op.kind, op.sender, op.intent) == ("enroll", 4 % len(accounts), "applied")
    tx = op.tx
    assert (tx["node_id"], tx["nonce"], tx["operator"]) == ("devnet-node-4", 3, accounts[op.sender].address)
    assert tx["validator_key"] == validator_key(SEED, 4).key and -op.cell_delta == tx["stake"] >= 50 * MICRO
    full = [fake(i, 100 * MICRO) for i in range(VALIDATORS_ACTIVE_MAX)]
    assert plan_enrollment(SEED, roster_of(SEED, full), accounts, nonces, balances, scheduled=True, **args) is None
    # Someone else bonds more than half of the devnet's stake: it enrolls at once, enough to hold > 2/3 again.
    other = FakeValidator("big", "0x" + "22" * 20, "ml-dsa-65", b"x", "GPU-BIG", 300 * MICRO)
    roster = roster_of(SEED, [*mine, other])
    assert not roster.finalizes_without(0)
    heal = plan_enrollment(SEED, roster, accounts, nonces, balances, scheduled=False, **args)
    assert heal is not None
    stake = heal.tx["stake"]
    assert 3 * (400 * MICRO + stake) > 2 * (700 * MICRO + stake)
    # ... as far as the operator's funds go
    poor = [MICRO] * len(accounts)
    assert plan_enrollment(SEED, roster, accounts, nonces, poor, scheduled=False, **args) is None


def test_unenrollments_and_equivocations_never_cost_the_devnet_its_majority() -> None:
    accounts = trading_accounts(derive_keys(SEED))
    op_of = {k.address: i for i, k in enumerate(accounts)}
    genesis_only = roster_of(SEED, [fake(i, 100 * MICRO) for i in range(4)])
    assert plan_unenrollment(genesis_only, accounts, [0] * 16, chain_id="devnet") is None  # genesis ones stay
    enrolled = [fake(i, 100 * MICRO) for i in range(4)] + [
        FakeValidator(f"devnet-node-{i}", accounts[i].address, "ml-dsa-65", validator_key(SEED, i).pk, "G", 50 * MICRO)
        for i in (4, 5)
    ]
    roster = roster_of(SEED, enrolled)
    op = plan_unenrollment(roster, accounts, [7] * 16, chain_id="devnet")
    assert op is not None and op.tx["node_id"] == "devnet-node-4" and op.tx["nonce"] == 7
    assert op.sender == op_of[accounts[4].address]
    assert choose_equivocator(SEED, roster, 9) in roster.own[4:]  # an enrolled one rather than a genesis one
    # With others holding almost a third, neither may go.
    other = FakeValidator("big", "0x" + "22" * 20, "ml-dsa-65", b"x", "GPU-BIG", 240 * MICRO)
    tight = roster_of(SEED, [*enrolled, other])
    assert tight.finalizes_without(0)
    assert plan_unenrollment(tight, accounts, [0] * 16, chain_id="devnet") is None
    assert choose_equivocator(SEED, tight, 9) is None


def test_an_equivocation_is_reported_once_applied_and_again_as_a_duplicate(service: Any) -> None:
    genesis, keys = devnet_genesis(SEED, timestamp_ms=1_000)
    assert service.submit(genesis)["status"] == "accepted"
    accounts = trading_accounts(keys)
    validator = keys.validators[2]
    report = equivocate(SEED, validator, chain_id="devnet", height=7, block_hash="ab" * 32)
    votes = list(report.evidence)
    assert [v["height"] for v in votes] == [7, 7] and votes[0]["block_hash"] != votes[1]["block_hash"]
    assert service.submit(votes[1])["status"] == "accepted"  # a vote for a block nobody has seen is kept
    report = Report(report.node_id, report.evidence, twice=True)
    roster = roster_of(SEED, service.validators("devnet"))
    nonces, balances = ledger_figures(service, "devnet", roster.keys(accounts))
    ops = plan_reports(SEED, report, roster, accounts, nonces, balances, chain_id="devnet", params=PARAM_DEFAULTS)
    assert [op.intent for op in ops] == ["applied", "duplicate_offence"]
    assert ops[1].tx["evidence"] == votes[::-1] and ops[0].sender != ops[1].sender
    block, _ = block_on(
        roster.keys(accounts), random.Random(1), service.head("devnet"), *apply_ops(nonces, balances, ops),
        chain_id="devnet", now_ms=2_000, txs_per_block=5, leading=[op.tx for op in ops],
    )  # fmt: skip
    result = service.submit(block)
    assert [r["reason"] or r["status"] for r in result["receipts"][:2]] == ["applied", "duplicate_offence"]
    assert all(r["status"] == "applied" or r["reason"] in ("bad_nonce", "insufficient_funds")
               for r in result["receipts"][2:])  # the transfers planned after them got what they were built for
    slashed = validator.stake * PARAM_DEFAULTS["slash_bps"] // 10_000
    assert service.ledger.chains["devnet"].validators[validator.node_id].stake == validator.stake - slashed
    assert ops[0].cell_delta == slashed * PARAM_DEFAULTS["reporter_bps"] // 10_000


class EveryBlockChecked(CheckedLedger):
    """Checks the CELL invariant after every accepted block, not only after reorganizations."""

    def submit_many(self, objs: list[Any]) -> list[dict[str, Any]]:
        results = []
        for obj in objs:
            result = self.service.submit(obj)
            if result.get("kind") == "block" and result.get("status") == "accepted":
                assert_cell_balanced(self.service.ledger.chains["devnet"])
                self.checked += 1
            results.append(result)
        self.results += results
        return results


def assert_cell_balanced(chain: ChainState) -> None:
    """DOMAIN.md's CELL invariant, minted counted independently (genesis funds and stakes, one reward per canonical
    block) and burned as the slashes recorded it (the part that did not go to the reporter)."""
    keys = derive_keys(SEED)
    issued = len(keys.accounts) * ACCOUNT_FUNDS + keys.total_stake + PARAM_DEFAULTS["block_reward"] * chain.tip.height
    assert chain.minted == issued
    assert cell_total(chain) == chain.minted - chain.burned


def test_the_devnet_enrolls_unenrolls_slashes_and_every_block_finalizes(service: Any, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / SEED_FILE).write_text(SEED.hex() + "\n")
    ledger = EveryBlockChecked(service)
    devnet = Devnet(
        ledger, tmp_path / "data", txs_per_block=6, rng=random.Random(5), fork_period_blocks=9,
        enroll_period_blocks=3, unenroll_period_blocks=6, equivocation_period_blocks=4,
    )  # fmt: skip
    for _ in range(48):
        result = devnet.step()
        assert result["status"] == "accepted", result
    assert devnet.errors == devnet.blocks_rejected == devnet.unexpected_receipts == devnet.unfinalized == 0
    assert devnet.reorgs == devnet.forks >= 4
    assert devnet.enrollments >= 6 and devnet.unenrollments >= 3
    assert devnet.equivocations >= 6 and devnet.slashes_applied >= 5 and devnet.slashes_rejected >= 2
    chain = service.ledger.chains["devnet"]
    assert chain.finalized_height == chain.tip.height == ledger.checked - devnet.forks  # side blocks: no check
    assert chain.burned > 0 and len(chain.offences) == devnet.slashes_applied

    events = [service.app.mapper.to_domain_event(n) for n in service.notifications()]
    finalized = {tuple(b) for e in events if isinstance(e, BlockFinalized) for b in e.finalized}
    assert finalized >= {(h, chain.canonical[h]) for h in range(1, chain.tip.height + 1)}
    receipts = [
        (tx["kind"], status, reason)
        for e in events if isinstance(e, BlockApplied)
        for tx, (status, reason) in zip(e.block["txs"], e.receipts, strict=True)
    ]  # fmt: skip
    kinds = {(k, s, r) for k, s, r in receipts if k != "transfer"}
    assert {("enroll", "applied", ""), ("unenroll", "applied", ""), ("slash", "applied", ""),
            ("slash", "rejected", "duplicate_offence")} == kinds
    # Enrolled validators vote (with their derived keys) and propose; unenrolled and revoked ones stop.
    roster = roster_of(SEED, service.validators("devnet"))
    voters = {e.node_id for e in events if isinstance(e, VoteAccepted)}
    proposers = {e.proposer for e in events if isinstance(e, BlockApplied)}
    assert {v.node_id for v in roster.own} <= voters
    assert any(roster.index_of.get(n, 0) >= GENESIS_VALIDATORS for n in voters)
    assert any(roster.index_of.get(n, 0) >= GENESIS_VALIDATORS for n in proposers)
    phases = {v.phase for v in service.validators("devnet")}
    assert phases == {ACTIVE, UNBONDING}
    # Reserved accounts are the CLI's alone: the devnet never signed for them.
    reserved = {k.address for k in reserved_accounts(derive_keys(SEED))}
    signers = {tx["signer"] for e in events if isinstance(e, BlockApplied) for tx in e.block["txs"]}
    assert signers and not signers & reserved


def test_pooled_txs_go_into_the_next_block_and_a_foreign_majority_is_outweighed(
    service: Any, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / SEED_FILE).write_text(SEED.hex() + "\n")
    pool = TxPool("devnet")
    devnet = Devnet(
        EveryBlockChecked(service), tmp_path / "data", txs_per_block=4, fork_period_blocks=0, pool=pool,
        **NO_VALIDATOR_LIFE,
    )  # fmt: skip
    devnet.step()
    alice = reserved_accounts(derive_keys(SEED))[0]
    whale = KeyPair.from_seed(b"whale")
    # More than half of the devnet's 460 CELL: once it is active, the devnet alone no longer holds 2/3.
    enroll = build.enroll("devnet", alice, "whale-node", "GPU-WHALE", 600 * MICRO, whale, nonce=0)
    pay = build.transfer("devnet", alice, whale.address, 5 * MICRO, nonce=1, fee=TRANSFER_FEE)
    assert [r["status"] for r in pool.offer([enroll, pay])] == ["queued", "queued"]
    result = devnet.step()
    assert result["receipts"][:2] == [
        {"tx_id": tx_id(enroll), "status": "applied", "reason": "", "height": 2, "index": 0},
        {"tx_id": tx_id(pay), "status": "applied", "reason": "", "height": 2, "index": 1},
    ]
    assert len(pool) == 0 and devnet.pooled_txs == 2
    assert devnet.unfinalized == 1  # the whale does not vote: block 2 waits
    chain = service.ledger.chains["devnet"]
    assert chain.finalized_height == 1
    result = devnet.step()  # the devnet enrolls enough stake at once, votes with it, and both blocks are final
    enrolled = [v for v in service.validators("devnet") if v.node_id == "devnet-node-4"]
    assert enrolled and enrolled[0].stake > 600 * MICRO and devnet.enrollments == 1
    assert chain.finalized_height == chain.tip.height == 3 and devnet.unfinalized == 1
