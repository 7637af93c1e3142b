"""The bridge reserves views (projections/bridge.py, projections/reserve_queries.py).

Literal rows first: a block's flows, records and queue entries, and its revert. Then the property the views
promise: with the real LedgerService, the follower and chdb, over random bridge streams on two competing branches
(reorganized by a longer branch or by finality), the reserves figures, every reserve record and its history, the
withdrawal listings and the attestations at every height equal those of a fresh database fed only the canonical
branch; liabilities equal escrow at every height; the flows' sum of balances equals balance_deltas'. And at every
log position (batches of one event), mid-reorganization included, the views up to the head are the canonical ones.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from accelerators.verify import BatchVerifier
from projections.bridge import COLUMNS
from projections.project import Rows, project
from projections.queries import FINAL, ReadModel
from projections.reserve_queries import WITHDRAWAL_STATUSES, ReserveQueries
from projections.store import ProjectionStore
from schemas import build
from schemas.canonical import block_hash
from schemas.events import LOG_ID, BlockApplied, BlockReverted, LedgerEvent, ReservesAttested, block_summary
from schemas.settings import Settings
from streams.follower import Follower
from tests.chain import ACCOUNTS, BLOCK_MS, genesis_command, keypair, validators
from writes.decide import Attestor, decide
from writes.service import LedgerService, load_reserves_secret, seal
from writes.state import BranchView, Ledger, fold

RELAYER = keypair("relayer-a")
VALS = validators()
GENESIS = genesis_command(vals=VALS, relayers=[("relayer-a", RELAYER)])
CHAIN = GENESIS["chain_id"]
ASSETS = ("USDC", "EURC")
RESERVE_IDS = [f"r{i}" for i in range(6)]
PERIOD = 1  # attest at every final height

A, B = "0x" + "a" * 40, "0x" + "b" * 40
ENVELOPE: dict[str, Any] = {"originator_id": LOG_ID, "prev_hash": "0" * 64, "schema_version": 1}


# ------------------------------------------------------------------------------------------ literal rows


def _record(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "reserve_id": "w1", "kind": "withdrawal", "asset": "USDC", "amount": 40, "owner": A, "status": status,
        "chain": "ethereum", "external_address": "0xdest", "external_tx": "", "reason": "", "relayer": "",
        "height": 3, "updated_height": 3, **extra,
    }


def _block(height: int, effects: dict[str, Any]) -> BlockApplied:
    return BlockApplied(
        originator_version=2, timestamp=BlockApplied.create_timestamp(), chain_id="alpha", block_hash="h" * 64,
        height=height, parent="p" * 64, proposer="n1", operator=B, timestamp_ms=9,
        block={"tx_root": "0" * 64, "txs": []}, tx_ids=[], receipts=[], effects={
            "balances": [], "nonces": [], "reward": 0, "fees": 0, "minted": 0, "burned": 0, "releases": [],
            "volume": [], **effects,
        }, **ENVELOPE,
    )


def test_a_block_writes_flows_records_and_queue_entries_and_its_revert_undoes_them() -> None:
    pending, confirmed = _record("pending"), _record("confirmed", external_tx="0xpaid", relayer=B, updated_height=5)
    deposit = {**_record("deposited"), "reserve_id": "d1", "kind": "deposit", "owner": B, "amount": 7}
    applied = _block(5, {
        # B's deposit of 7 USDC, A's 40 confirmed (requested at 3), a USDC transfer (no net change), CELL fees.
        "balances": [[B, "USDC", 7], [A, "USDC", -3], [B, "USDC", 3], [B, "CELL", 2], ["0x" + "c" * 40, "#n", 1]],
        "bridge": [["USDC", 7, 40, -40]],
        "reserves": [["d1", None, deposit], ["w1", pending, confirmed]],
    })
    rows = project(11, applied)
    h = "h" * 64
    assert rows["reserve_flows"] == [("alpha", "USDC", 5, h, 7, 40, -40, 7, 11)]
    assert rows["reserve_records"] == [
        ("alpha", "d1", 5, h, "applied", 1, "deposit", "USDC", 7, B, "deposited", "ethereum", "0xdest", "", "", "",
         3, 3, 11),
        ("alpha", "w1", 5, h, "applied", 1, "withdrawal", "USDC", 40, A, "confirmed", "ethereum", "0xdest", "0xpaid",
         "", B, 3, 5, 11),
    ]
    assert rows["withdrawal_queue"] == [("alpha", 3, "w1", "USDC", 40, A, "ethereum", "0xdest", 5, -1, 11)]
    assert all(len(r) == len(COLUMNS[t]) for t, rs in rows.items() if t in COLUMNS for r in rs)
    revert = project(20, BlockReverted(
        originator_version=3, timestamp=BlockReverted.create_timestamp(), **ENVELOPE, **block_summary(applied)
    ))
    assert revert["reserve_flows"] == [("alpha", "USDC", 5, h, -7, -40, 40, -7, 20)]
    # The records as they were before the block: d1 absent, w1 pending again; the queue exit taken back.
    assert [(r[1], r[4], r[5], r[10]) for r in revert["reserve_records"]] == [
        ("d1", "reverted", 0, ""), ("w1", "reverted", 1, "pending"),
    ]
    assert revert["withdrawal_queue"] == [("alpha", 3, "w1", "USDC", 40, A, "ethereum", "0xdest", 5, 1, 20)]


def test_an_attestation_row() -> None:
    event = ReservesAttested(
        originator_version=4, timestamp=ReservesAttested.create_timestamp(), chain_id="alpha", asset="USDC",
        height=10, block_hash="f" * 64, scheme="tally-por-v1", root="e" * 64, total=2**64, pending=1,
        liabilities=2**64 + 1, deposited=2**64 + 1, withdrawn=0, escrow=2**64 + 1, ratio="1.000000", leaf_count=8,
        cause="schedule", **ENVELOPE,
    )
    assert project(30, event) == {"reserve_attestations": [(
        "alpha", "USDC", 10, "f" * 64, "tally-por-v1", "e" * 64, 2**64, 1, 2**64 + 1,
        2**64 + 1, 0, 2**64 + 1, "1.000000", 8, "schedule", 30,
    )]}
    nothing_owed = ReservesAttested(**{**event.__dict__, "ratio": None, "total": 0, "liabilities": 0})
    assert project(31, nothing_owed)["reserve_attestations"][0][12] == ""  # read back as None


# ------------------------------------------------------------------------------------ random bridge streams

# (op, account, reserve index, amount, asset): each op is signed on its own branch's state.
OPS = st.lists(
    st.tuples(
        st.sampled_from(["deposit", "deposit", "request", "request", "confirm", "reject", "transfer"]),
        st.integers(0, 2), st.integers(0, len(RESERVE_IDS) - 1), st.integers(1, 400), st.sampled_from(ASSETS),
    ),
    max_size=4,
)


@dataclass
class Scenario:
    """Blocks by tree index (1..n; 0 is the genesis), their parents, and the commands in submission order."""

    blocks: dict[int, dict[str, Any]] = field(default_factory=dict)
    parents: dict[int, int] = field(default_factory=dict)
    commands: list[dict[str, Any]] = field(default_factory=list)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[int], list[Any], str]:
    """(parents, ops per block, how it is finalized): a stem, a first branch, then a second one. `longer`: the
    second branch is longer and wins; `finality`: it is shorter and a vote for its first block makes it win; `stem`:
    the stem's tip is voted final first (so that an attestation of it is made), then the longer branch wins."""
    stem, first = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    how = draw(st.sampled_from(["longer", "finality", "stem"]))
    second = draw(st.integers(1, first)) if how == "finality" else draw(st.integers(first + 1, first + 2))
    parents = list(range(stem + first)) + [stem] + list(range(stem + first + 1, stem + first + second))
    ops = [draw(OPS) for _ in parents]
    ops[0] = [("deposit", 0, 0, 500, "USDC"), *ops[0]]  # a bridged asset from the first block: attestations
    return parents, ops, how


def _feed(ledger: Ledger, command: dict[str, Any], verifier: BatchVerifier, attestor: Attestor) -> list[LedgerEvent]:
    sealed = seal(ledger, decide(ledger, command, verifier, attestor=attestor).events)
    for e, ehash in sealed:
        fold(ledger, e, ehash)
    return [e for e, _ in sealed]


def _txs(view: BranchView, ops: Sequence[Any]) -> list[dict[str, Any]]:
    nonces = {k.address: view.next_nonce(k.address) for k in ACCOUNTS}
    txs = []
    for op, who, rid, amount, asset in ops:
        account, reserve_id = ACCOUNTS[who], RESERVE_IDS[rid]
        if op == "deposit":
            txs.append(build.bridge_deposit(CHAIN, RELAYER, reserve_id, asset, account.address, amount))
        elif op == "request":
            txs.append(build.withdraw_request(CHAIN, account, reserve_id, asset, amount,
                                              nonce=nonces[account.address]))
            nonces[account.address] += 1
        elif op == "confirm":
            txs.append(build.withdraw_confirm(CHAIN, RELAYER, reserve_id, f"0xpaid{rid}"))
        elif op == "reject":
            txs.append(build.withdraw_reject(CHAIN, RELAYER, reserve_id, f"refused {rid}"))
        else:
            txs.append(build.transfer(CHAIN, account, ACCOUNTS[(who + 1) % 3].address, amount, asset=asset,
                                      nonce=nonces[account.address]))
            nonces[account.address] += 1
    return txs


def build_scenario(verifier: BatchVerifier, attestor: Attestor, parents: Sequence[int], ops: Sequence[Any],
                   how: str) -> Scenario:
    """Sign every block on its own branch (a shadow ledger fed in tree order), then lay out the submission."""
    scenario, shadow = Scenario(), Ledger()
    _feed(shadow, GENESIS, verifier, attestor)
    hashes = {0: shadow.chains[CHAIN].tip.hash}
    for index, (parent, block_ops) in enumerate(zip(parents, ops, strict=True), start=1):
        chain = shadow.chains[CHAIN]
        info = chain.blocks[hashes[parent]]
        v = VALS[index % len(VALS)]
        blk = build.block(CHAIN, info.height + 1, info.hash, v.node_id, v.key, info.timestamp_ms + BLOCK_MS + index,
                          _txs(BranchView(chain, info), block_ops))
        _feed(shadow, blk, verifier, attestor)
        scenario.blocks[index], scenario.parents[index], hashes[index] = blk, parent, block_hash(blk)
    second = next(i for i in scenario.parents if i > 1 and scenario.parents[i] != i - 1)
    stem = scenario.parents[second]
    for index in sorted(scenario.blocks):
        scenario.commands.append(scenario.blocks[index])
        if index == stem and how == "stem":
            scenario.commands += _votes(scenario.blocks[index])
    if how == "finality":
        scenario.commands += _votes(scenario.blocks[second])
    return scenario


def _votes(blk: dict[str, Any]) -> list[dict[str, Any]]:
    return [build.vote(CHAIN, v.node_id, v.key, blk["height"], block_hash(blk)) for v in VALS]


# ------------------------------------------------------------------------------------------------- views


def views(read: ReadModel, top: int, *, full: bool = True) -> dict[str, Any]:
    """The reserves views at every height up to `top`, without log positions (two logs differ there). Not
    `full`: every asset's figures at every height, the records and listings at the head (fewer queries)."""
    q = ReserveQueries(read)
    out: dict[str, Any] = {
        "assets": {h: q.bridged_assets(CHAIN, h) for h in range(top + 1)},
        "records": {r: _canonical_record(q.reserve(CHAIN, r)) for r in RESERVE_IDS},
        "withdrawals": {s: q.withdrawals(CHAIN, s, 500) for s in (*WITHDRAWAL_STATUSES, None)},
    }
    if full:
        out["reserves"] = {(a, h): q.reserves(CHAIN, a, h) for a in ASSETS for h in range(top + 1)}
        out["records_at"] = {(r, h): _canonical_record(q.reserve(CHAIN, r, h))
                             for r in RESERVE_IDS for h in range(top + 1)}
        out["by_asset"] = {a: q.withdrawals(CHAIN, None, 500, asset=a) for a in ASSETS}
        out["attestations"] = {(a, h): _strip(q.attestation(CHAIN, a, h)) for a in ASSETS for h in range(top + 1)}
        out["finalized"] = {a: q.reserves(CHAIN, a, finality=FINAL) for a in ASSETS}
        out["records_final"] = {r: _canonical_record(q.reserve(CHAIN, r, finality=FINAL)) for r in RESERVE_IDS}
    return out


def _canonical_record(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record with only the changes that stand: a fresh replay of the canonical branch has no reverted ones."""
    if record is None:
        return None
    history = [_strip(h) for h in record["history"] if not h["reverted"]]
    return {**record, "history": history}


def _strip(row: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else {k: v for k, v in row.items() if k != "position"}


@contextlib.contextmanager
def scratch_store(engine: str, prefix: str) -> Iterator[ProjectionStore]:
    store = ProjectionStore(engine, database=f"{prefix}_{uuid.uuid4().hex[:16]}")
    try:
        yield store
    finally:
        store.drop()
        store.close()


def fresh_views(engine: str, verifier: BatchVerifier, attestor: Attestor, canonical: Sequence[dict[str, Any]],
                final: int, *, full: bool = True) -> dict[str, Any]:
    """The views of a fresh database fed by a fresh ledger that received only `canonical`, then (when `final` is
    above 0) every validator's vote for the block at that height."""
    ledger, events = Ledger(), []
    for command in [GENESIS, *canonical, *(_votes(canonical[final - 1]) if final else [])]:
        events += _feed(ledger, command, verifier, attestor)
    assert ledger.chains[CHAIN].finalized_height == final
    rows: Rows = defaultdict(list)
    for position, e in enumerate(events, start=1):
        for table, table_rows in project(position, e).items():
            rows[table] += table_rows
    with scratch_store(engine, "fresh") as store:
        store.write(rows, len(events))
        return views(ReadModel(store), len(canonical), full=full)


def check_invariants(read: ReadModel, top: int) -> None:
    """Liabilities = escrow at every height, no negative figure, and the flows' balances are balance_deltas'."""
    q = ReserveQueries(read)
    for h in range(top + 1):
        for figures in q.bridged_assets(CHAIN, h):
            assert figures["liabilities"] == figures["escrow"], figures
            assert min(figures["deposited"], figures["withdrawn"], figures["pending"], figures["balances"]) >= 0
            assert figures["balances"] == q.total_balances(CHAIN, figures["asset"], h)
            holders = q.holdings(CHAIN, figures["asset"], h)[1]
            assert sum(b for _, b in holders) == figures["balances"]


def attested(service: LedgerService) -> list[LedgerEvent]:
    events = (service.app.mapper.to_domain_event(n) for n in service.notifications())
    return [e for e in events if isinstance(e, ReservesAttested)]


def canonical_blocks(service: LedgerService, by_hash: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    chain = service.ledger.chains[CHAIN]
    out, info = [], chain.tip
    while info.height > 0:
        out.append(by_hash[info.hash])
        info = chain.blocks[info.parent]
    return out[::-1]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_views_at_every_height_equal_a_fresh_projection_of_the_canonical_branch(chdb_dsn: str, scenario: Any) -> None:
    parents, ops, how = scenario
    with tempfile.TemporaryDirectory() as tmp, scratch_store(chdb_dsn, "live") as store:
        settings_ = Settings(data_dir=Path(tmp), verify_workers=1, reserves_every_blocks=PERIOD)
        service = LedgerService(settings_, verifier=BatchVerifier(1))
        try:
            attestor = Attestor(load_reserves_secret(settings_.reserves_secret_path), PERIOD)
            built = build_scenario(service.verifier, attestor, parents, ops, how)
            by_hash = {block_hash(b): b for b in built.blocks.values()}
            assert service.submit(GENESIS)["status"] == "accepted"
            follower, read = Follower(service.app, store), ReadModel(store)
            for command in built.commands:
                assert service.submit(command)["status"] == "accepted"
            while follower.run_once():
                pass
            chain = service.ledger.chains[CHAIN]
            top = chain.tip.height
            live = views(read, top)
            fresh = fresh_views(chdb_dsn, service.verifier, attestor, canonical_blocks(service, by_hash),
                                chain.finalized_height)
            for name in fresh:
                assert live[name] == fresh[name], f"view {name} differs from a fresh projection of the canonical branch"
            check_invariants(read, top)
            event(f"{how}: reorganized {len(read.reorgs(CHAIN, 10))}, attested {len(attested(service))}")
        finally:
            service.close()


def test_views_at_every_log_position_mid_reorganization_included(chdb_dsn: str) -> None:
    """Batches of one event: after each, the views up to the head are those of the canonical branch up to it."""
    parents = [0, 1, 2, 3, 2, 5, 6]  # stem 1-2, first branch 3-4, second branch 5-7 (longer: depth-2 reorg)
    ops = [
        [("deposit", 0, 0, 300, "USDC"), ("deposit", 1, 1, 200, "EURC")],
        [("request", 0, 2, 100, "USDC"), ("transfer", 0, 0, 50, "USDC")],
        [("confirm", 0, 2, 1, "USDC"), ("request", 1, 3, 20, "EURC")],
        [("reject", 0, 3, 1, "EURC"), ("deposit", 2, 4, 9, "USDC")],
        [("reject", 0, 2, 1, "USDC")],
        [("request", 1, 3, 30, "USDC"), ("deposit", 2, 5, 5, "EURC")],
        [("confirm", 0, 3, 1, "USDC")],
    ]
    with tempfile.TemporaryDirectory() as tmp, scratch_store(chdb_dsn, "steps") as store:
        settings_ = Settings(data_dir=Path(tmp), verify_workers=1, reserves_every_blocks=0)
        service = LedgerService(settings_, verifier=BatchVerifier(1))
        try:
            attestor = Attestor(load_reserves_secret(settings_.reserves_secret_path), 0)
            built = build_scenario(service.verifier, attestor, parents, ops, "longer")
            by_hash = {block_hash(b): b for b in built.blocks.values()}
            assert service.submit(GENESIS)["status"] == "accepted"
            for command in built.commands:
                assert service.submit(command)["status"] == "accepted"
            follower, read = Follower(service.app, store, batch_events_max=1), ReadModel(store)
            cache: dict[tuple[str, ...], dict[str, Any]] = {}
            reorganizing = highest = 0
            while follower.run_once():
                head = read.head(CHAIN)
                assert head is not None
                path = tuple(read.block(CHAIN, height=h)["hash"] for h in range(1, head["height"] + 1))
                if path not in cache:
                    blocks = [by_hash[h] for h in path]
                    cache[path] = fresh_views(chdb_dsn, service.verifier, attestor, blocks, 0, full=False)
                highest = max(highest, head["height"])
                reorganizing += head["height"] < highest
                assert views(read, head["height"], full=False) == cache[path], f"at {read.position()}"
            assert reorganizing >= 2, "no batch ended between a reorganization and its last revert"
        finally:
            service.close()
