"""Validator views (issue 4): projections/validators.py, projections/validator_queries.py, api/gql_validators.py,
the validator metrics, and the CLI's `validators` and `slash-receipt` against the real GraphQL schema.

- The projector on literal block summaries: rows in, rows out, reverts included.
- A history built with the ledger's own `decide` (enrollments, applied and rejected slashes, an unenrollment
  followed by a revocation in one block, releases, node_ids reused on another branch, two reorganizations by
  length and one by finality): after every log position, every validator view equals a fresh projection of only
  the canonical branch, at every height, and at the head it equals the write side's state, stake by stake.
- A page walk of `validators` while validators enroll, unbond and are released between its pages (the real
  service and the follower) meets every validator that exists throughout it exactly once.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import strawberry
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import event as statistic
from hypothesis import strategies as st
from test_api_client import Client

import api.cli_txs
from accelerators.verify import BatchVerifier
from api.app import create_app
from api.cli import main
from api.ledger_client import LedgerClient
from projections.project import Rows, project
from projections.queries import FINAL, ReadModel
from projections.store import ProjectionStore
from projections.validator_queries import ValidatorQueries
from projections.validators import COLUMNS, history_entries, project_block
from schemas import build
from schemas.canonical import tx_id
from schemas.events import BlockApplied, BlockReapplied, BlockReverted, ChainReorganized, LedgerEvent
from schemas.limits import PAGE_SIZE_MAX
from schemas.signing import KeyPair
from streams.follower import Follower
from tests.chain import ALICE, BOB, CAROL, CELL, Chain, genesis_command, keypair, validators
from writes.decide import decide
from writes.service import seal
from writes.state import BranchView, Ledger, fold

HASH_A, HASH_B, HASH_C = "aa" * 32, "bb" * 32, "cc" * 32
PHASES = ("active", "unbonding", "released")

# ===================================================================================== the projector, literally

A, B, OP = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "1" * 40
BH = "f" * 64


def _record(node_id: str, stake: int, phase: str = "active", *, unbond_at_ms: int | None = None,
            revoked: bool = False, operator: str = OP, enrolled_height: int = 1) -> dict[str, Any]:
    return {"node_id": node_id, "operator": operator, "key": {"alg": "ml-dsa-65", "pk": "0a"},
            "gpu_uuid": "G-" + node_id, "stake": stake, "phase": phase, "unbond_at_ms": unbond_at_ms,
            "enrolled_height": enrolled_height, "revoked": revoked}  # fmt: skip


def _tx(kind: str, signer: str, amount: int = 0) -> list[Any]:
    """A tx summary (schemas/events.tx_summary): kind, signer, from, to, asset, amount, fee, nonce."""
    return [kind, signer, signer, "", "CELL" if amount else "", amount, 0, 0]


def _summary(height: int, txs: Sequence[tuple[list[Any], str]], **effects: Any) -> dict[str, Any]:
    """A block summary with the given txs ((summary, "" when applied or the reason)) and effects."""
    return {
        "chain_id": "alpha", "block_hash": BH, "height": height, "parent": "e" * 64, "proposer": "n0",
        "operator": OP, "timestamp_ms": 5_000, "tx_root": "", "txs": [t for t, _ in txs],
        "tx_ids": [f"{i:064x}" for i in range(len(txs))],
        "receipts": [["rejected", r] if r else ["applied", ""] for _, r in txs],
        "effects": {"validators": [], "slashes": [], "releases": [], **effects},
    }


UNBOND_AT = 5_000 + 604_800_000
# Block 7: A enrolls n1 (20), n0 is slashed (applied: 100 -> 50), n1 is slashed and revoked (20 -> 10 -> 5: the
# second slash revokes), a slash of an unknown node is rejected, and n2 (unbonding) is released.
BLOCK_7 = _summary(
    7,
    [(_tx("enroll", A, 20), ""), (_tx("slash", B), ""), (_tx("slash", B), ""), (_tx("slash", B), ""),
     (_tx("slash", B), "unknown_validator")],
    validators=[
        ["n1", None, _record("n1", 5, "unbonding", unbond_at_ms=UNBOND_AT, revoked=True, operator=A,
                             enrolled_height=7)],
        ["n0", _record("n0", 100, enrolled_height=0), _record("n0", 50, enrolled_height=0)],
        ["n2", _record("n2", 30, "unbonding", unbond_at_ms=4_000), _record("n2", 0, "released", unbond_at_ms=4_000)],
    ],
    slashes=[[1, "n0", 3, 50, 5, 45, False], [2, "n1", 3, 10, 1, 9, False], [3, "n1", 4, 5, 0, 5, True],
             [4, "ghost", 3, 0, 0, 0, False]],
    releases=[["n2", 30]],
)  # fmt: skip


def test_a_block_writes_records_history_receipts_and_totals() -> None:
    rows = project_block(9, BLOCK_7, False)
    assert set(rows) == set(COLUMNS)
    n1 = ("alpha", "n1", 7, 1, A, "ml-dsa-65", "0a", "G-n1", 5, "unbonding", UNBOND_AT, 7, 1, 1)
    assert rows["validator_states"] == [
        (*n1, 7, 0, 9),  # enrolled and revoked here: unbonding from this block
        ("alpha", "n0", 7, 1, OP, "ml-dsa-65", "0a", "G-n0", 50, "active", -1, 0, 0, 1, 0, 0, 9),
        ("alpha", "n2", 7, 1, OP, "ml-dsa-65", "0a", "G-n2", 0, "released", 4_000, 1, 0, 0, 0, 7, 9),
    ]
    t = [f"{i:064x}" for i in range(5)]
    assert rows["validator_events"] == [
        ("alpha", "n1", 7, 0, "enrolled", BH, t[0], 20, 0, 9),
        ("alpha", "n0", 7, 2, "slashed", BH, t[1], 50, 0, 9),
        ("alpha", "n1", 7, 4, "slashed", BH, t[2], 10, 0, 9),
        ("alpha", "n1", 7, 6, "slashed", BH, t[3], 5, 0, 9),
        ("alpha", "n1", 7, 7, "revoked", BH, t[3], 5, 0, 9),
        ("alpha", "n2", 7, 10, "released", BH, "", 30, 0, 9),
    ]
    assert rows["slash_receipts"] == [
        ("alpha", "n0", 7, 1, BH, t[1], B, 3, "applied", "", 50, 5, 45, 0, 9),
        ("alpha", "n1", 7, 2, BH, t[2], B, 3, "applied", "", 10, 1, 9, 0, 9),
        ("alpha", "n1", 7, 3, BH, t[3], B, 4, "applied", "", 5, 0, 5, 1, 9),
        ("alpha", "ghost", 7, 4, BH, t[4], B, 3, "rejected", "unknown_validator", 0, 0, 0, 0, 9),
    ]
    # n1 enrolled (20) and ended unbonding with 5; n0 lost 50; n2's 30 went back to its operator.
    assert rows["validator_totals"] == [("alpha", 7, 0, 0, 1, 5 - 50 - 30, 65, 59, 9)]


def test_a_revert_restores_the_records_and_takes_everything_back() -> None:
    applied, undone = project_block(9, BLOCK_7, False), project_block(12, BLOCK_7, True)
    assert undone["validator_states"] == [
        ("alpha", "n1", 7, 0, "", "", "", "", 0, "", -1, 0, 0, 0, 0, 0, 12),  # did not exist before
        ("alpha", "n0", 7, 1, OP, "ml-dsa-65", "0a", "G-n0", 100, "active", -1, 0, 0, 1, 0, 0, 12),
        ("alpha", "n2", 7, 1, OP, "ml-dsa-65", "0a", "G-n2", 30, "unbonding", 4_000, 1, 0, 1, 0, 0, 12),
    ]
    assert undone["validator_events"] == [(*r[:8], 1, 12) for r in applied["validator_events"]]
    assert undone["slash_receipts"] == [(*r[:8], "reverted", *r[9:14], 12) for r in applied["slash_receipts"]]
    assert undone["validator_totals"] == [("alpha", 7, 0, 0, -1, 75, -65, -59, 12)]


def test_blocks_without_validator_effects_write_nothing() -> None:
    assert project_block(3, _summary(3, [(_tx("transfer", A, 5), "")]), False) == {}
    # Events written before the validator effects existed have no such keys.
    old = _summary(3, [])
    old["effects"] = {"balances": []}
    assert project_block(3, old, True) == {}


def test_unenrollments_are_told_apart_from_revocations() -> None:
    # n1: unenrolled by A, then slashed below min_stake in the same block (revoked, keeps its window);
    # n2: revoked by a slash alone; n3 and n4: both unenrolled by B in one block (which tx named which is unknown).
    unbonding = {"phase": "unbonding", "unbond_at_ms": UNBOND_AT}
    block = _summary(
        9, [(_tx("unenroll", A), ""), (_tx("slash", B), ""), (_tx("slash", B), ""), (_tx("unenroll", B), ""),
            (_tx("unenroll", B), ""), (_tx("unenroll", A), "not_active")],
        validators=[
            ["n1", _record("n1", 12, operator=A), _record("n1", 6, **unbonding, revoked=True, operator=A)],
            ["n2", _record("n2", 12, operator=A), _record("n2", 6, **unbonding, revoked=True, operator=A)],
            ["n3", _record("n3", 12, operator=B), _record("n3", 12, **unbonding, operator=B)],
            ["n4", _record("n4", 12, operator=B), _record("n4", 12, **unbonding, operator=B)],
        ],
        slashes=[[1, "n1", 2, 6, 0, 6, True], [2, "n2", 2, 6, 0, 6, True]],
    )  # fmt: skip
    t = block["tx_ids"]
    assert history_entries(block) == [
        ("n1", 0, "unenrolled", t[0], 0),
        ("n1", 2, "slashed", t[1], 6), ("n1", 3, "revoked", t[1], 6),
        ("n2", 4, "slashed", t[2], 6), ("n2", 5, "revoked", t[2], 6),
        ("n3", 6, "unenrolled", "", 0), ("n4", 8, "unenrolled", "", 0),
    ]  # fmt: skip


def test_genesis_validators_are_enrolled_at_height_zero(event_log: Any) -> None:
    g = event_log.genesis("alpha", 1_000, [], [("n1", OP, 10), ("n2", OP, 20)])
    rows = project(1, g)
    assert [r[:4] + r[8:10] for r in rows["validator_states"]] == [
        ("alpha", "n1", 0, 1, 10, "active"), ("alpha", "n2", 0, 1, 20, "active"),
    ]
    assert rows["validator_events"] == [
        ("alpha", "n1", 0, 0, "enrolled", g.block_hash, "", 10, 0, 1),
        ("alpha", "n2", 0, 2, "enrolled", g.block_hash, "", 20, 0, 1),
    ]
    assert rows["validator_totals"] == [("alpha", 0, 2, 0, 0, 30, 0, 0, 1)]


# ================================================================ a forked history, built with the ledger's decide

VALS = validators((40 * CELL, 40 * CELL, 40 * CELL))
# Released 3 blocks (1 s apart) after unbonding starts.
GENESIS = genesis_command(vals=VALS, params={"unbond_ms": 2_500})
CHAIN = GENESIS["chain_id"]
KEYS = {name: keypair(f"views-{name}") for name in ("va", "vb", "vc", "vd", "ve", "ve2")}
NODES = ("node-0", "node-1", "node-2", "va", "vb", "vc", "vd", "ve", "ghost")
ADDRESSES = [k.address for k in (ALICE, BOB, CAROL)] + [v.operator.address for v in VALS]
VERIFIER = BatchVerifier(1)


class History:
    """The live log: commands decided, sealed and folded by the ledger's own code, with every event's position,
    and the canonical branch the views show after each position."""

    def __init__(self, nodes: Sequence[str] = NODES) -> None:
        self.nodes = tuple(nodes)  # the node_ids the views are asked about
        self.ledger = Ledger()
        self.events: list[LedgerEvent] = []
        self.branches: list[tuple[str, ...]] = []  # after each position: canonical hashes up to the views' head
        self.blocks: dict[str, dict[str, Any]] = {}  # hash -> signed block command
        self.slash_txs: list[str] = []
        self._ancestor: int | None = None  # between a ChainReorganized and the first block put back on
        self.submit(GENESIS)

    @property
    def chain(self) -> Any:
        return self.ledger.chains[CHAIN]

    def submit(self, command: dict[str, Any]) -> dict[str, Any]:
        decision = decide(self.ledger, command, VERIFIER)
        for event, event_hash in seal(self.ledger, decision.events):
            fold(self.ledger, event, event_hash)
            self.events.append(event)
            if isinstance(event, ChainReorganized):
                self._ancestor = event.ancestor_height
            elif isinstance(event, (BlockApplied, BlockReapplied)):
                self._ancestor = None
            canonical = tuple(self.chain.canonical)
            top = len(canonical) if self._ancestor is None else self._ancestor + 1
            self.branches.append(canonical[:top])
        return decision.result

    def block(self, parent: str, proposer: int, plan: Callable[[Callable[[KeyPair], int]], list[Any]] = lambda _: [],
              ) -> str:  # fmt: skip
        """A block on `parent` with the txs `plan(nonce)` builds (nonce(key): the key's next nonce on the branch,
        counting the txs planned so far)."""
        info = self.chain.blocks[parent]
        branch = BranchView(self.chain, info)
        used: dict[str, int] = defaultdict(int)

        def nonce(key: KeyPair) -> int:
            used[key.address] += 1
            return branch.next_nonce(key.address) + used[key.address] - 1

        txs = plan(nonce)
        self.slash_txs += [tx_id(tx) for tx in txs if tx["kind"] == "slash"]
        v = VALS[proposer]
        # A timestamp per block: two blocks on one parent are never the same block.
        command = build.block(CHAIN, info.height + 1, parent, v.node_id, v.key,
                              info.timestamp_ms + 1_000 + len(self.blocks), txs)  # fmt: skip
        result = self.submit(command)
        assert result["status"] == "accepted", result
        self.blocks[result["hash"]] = command
        return str(result["hash"])

    def vote(self, voter: int, target: str) -> None:
        v = VALS[voter]
        result = self.submit(build.vote(CHAIN, v.node_id, v.key, self.chain.blocks[target].height, target))
        assert result["status"] == "accepted", result


def _enroll(operator: KeyPair, node: str, stake: int, nonce: Callable[[KeyPair], int], key: str | None = None
            ) -> dict[str, Any]:  # fmt: skip
    return build.enroll(CHAIN, operator, node, f"GPU-{node}", stake, KEYS[key or node], nonce=nonce(operator))


def _slash(reporter: KeyPair, node: str, height: int, nonce: Callable[[KeyPair], int],
           hashes: tuple[str, str] = (HASH_A, HASH_B), key: KeyPair | None = None) -> dict[str, Any]:
    key = key or KEYS.get(node) or next(v.key for v in VALS if v.node_id == node)
    return build.slash(CHAIN, reporter, node, build.evidence(CHAIN, node, key, height, hashes), nonce=nonce(reporter))


def forked_history() -> History:
    """Branch a: enrollments (va 20, vb 15, vc 12 CELL), slashes (va to 10; node-0 to 20; a duplicate offence and an
    unknown validator rejected), vb unenrolled, vc unenrolled then revoked in one block, va revoked; releases.
    Branch b (from a1) carries a2's slash of va again, unenrolls va, revokes vb, enrolls vd, and grows longer:
    a reorganization of depth 5. Branch a grows longer again: back to it. Then a9 enrolls ve and a10 slashes it,
    d9 (on a8) enrolls ve with another key and gpu: finality picks d9 over the longer branch."""
    h = History()
    g = h.chain.canonical[0]
    a1 = h.block(g, 1, lambda n: [_enroll(ALICE, "va", 20 * CELL, n), _enroll(BOB, "vb", 15 * CELL, n),
                                  _enroll(ALICE, "vc", 12 * CELL, n)])  # fmt: skip
    slash_va = []

    def a2_txs(n: Callable[[KeyPair], int]) -> list[Any]:
        slash_va.append(_slash(CAROL, "va", 1, n))
        return [slash_va[0], _slash(CAROL, "va", 1, n, (HASH_B, HASH_A)), _slash(CAROL, "ghost", 1, n,
                key=KEYS["vd"]), _slash(BOB, "node-0", 1, n)]  # fmt: skip

    a2 = h.block(a1, 1, a2_txs)
    a3 = h.block(a2, 1, lambda n: [build.unenroll(CHAIN, BOB, "vb", nonce=n(BOB)),
                                   build.unenroll(CHAIN, ALICE, "vc", nonce=n(ALICE)),
                                   _slash(CAROL, "vc", 2, n), _slash(CAROL, "va", 2, n)])  # fmt: skip
    a4 = h.block(a3, 2)
    a5 = h.block(a4, 1)
    a6 = h.block(a5, 2)  # releases vb, vc and va

    def b2_txs(n: Callable[[KeyPair], int]) -> list[Any]:
        n(CAROL)  # the copy of a2's slash takes CAROL's first nonce here too
        return [slash_va[0], build.unenroll(CHAIN, ALICE, "va", nonce=n(ALICE)), _slash(CAROL, "vb", 1, n),
                _enroll(CAROL, "vd", 10 * CELL, n)]

    b = h.block(a1, 2, b2_txs)
    for _ in range(5):  # b7 overtakes a6
        b = h.block(b, 1)
    a7 = h.block(a6, 1)
    a8 = h.block(a7, 2)  # overtakes b7: back to branch a
    assert h.chain.canonical[-1] == a8 and h.chain.reorganizations == 2
    a9 = h.block(a8, 1, lambda n: [_enroll(ALICE, "ve", 11 * CELL, n)])
    h.block(a9, 2, lambda n: [_slash(BOB, "ve", 8, n)])
    d9 = h.block(a8, 2, lambda n: [_enroll(BOB, "ve", 25 * CELL, n, key="ve2")])
    for voter in (0, 1, 2):  # 100 of the 125 active after d9 (node-0 was slashed to 20; ve enrolled 25 there)
        h.vote(voter, d9)
    assert h.chain.canonical[-1] == d9 and h.chain.reorganizations == 3 and h.chain.finalized_height == 9
    return h


@contextlib.contextmanager
def scratch_store(engine: str, prefix: str) -> Iterator[ProjectionStore]:
    store = ProjectionStore(engine, database=f"{prefix}_{uuid.uuid4().hex[:16]}")
    try:
        yield store
    finally:
        store.drop()
        store.close()


def write_events(store: ProjectionStore, events: Sequence[LedgerEvent], start: int, end: int) -> None:
    """Projects positions start+1..end as one batch."""
    rows: Rows = defaultdict(list)
    for position in range(start + 1, end + 1):
        for table, table_rows in project(position, events[position - 1]).items():
            rows[table] += table_rows
    store.write(rows, end)


def head_views(q: ValidatorQueries, tx_ids: Sequence[str], finality: str = "latest") -> dict[str, Any]:
    """What the views say at the head (compared at every position): no log positions in any of it."""
    return {
        "validators": q.validators(CHAIN, PAGE_SIZE_MAX, finality=finality, with_key=True),
        "totals": q.validator_totals(CHAIN, finality=finality),
        "slashes": q.slashes(CHAIN, first=PAGE_SIZE_MAX, finality=finality),
    }


def command_views(q: ValidatorQueries, tx_ids: Sequence[str], nodes: Sequence[str] = NODES) -> dict[str, Any]:
    """Compared at the end of each command: histories, phases, receipts."""
    return {
        "history": {n: q.validator_history(CHAIN, n) for n in nodes},
        "phases": {p: q.validators(CHAIN, PAGE_SIZE_MAX, phase=p) for p in PHASES},
        "receipts": {t: q.slash_receipt(t, CHAIN) for t in tx_ids},
    }


def height_views(q: ValidatorQueries, top: int, nodes: Sequence[str] = NODES) -> dict[str, Any]:
    """Compared after each reorganization and at the end: every height, slashes per node."""
    return {
        "validators_at": [q.validators(CHAIN, PAGE_SIZE_MAX, at_height=h, with_key=True) for h in range(top + 1)],
        "totals_at": [q.validator_totals(CHAIN, at_height=h) for h in range(top + 1)],
        "by_node": {n: q.slashes(CHAIN, n, first=PAGE_SIZE_MAX) for n in nodes},
    }


def each_validator(q: ValidatorQueries, heights: Sequence[int]) -> dict[tuple[str, int], Any]:
    """Validators (every one that ever existed) and their histories, one read per node and height."""
    return {(n, h): (q.validator(CHAIN, n, at_height=h), q.validator_history(CHAIN, n, at_height=h))
            for n in NODES[:-1] for h in heights}  # fmt: skip


class Fresh:
    """The views of a fresh projection of only a canonical branch: a fresh ledger fed the branch's blocks and
    projected into a database of its own, extended while the branches asked for only grow, rebuilt when one does
    not; each branch's views are read once."""

    def __init__(self, engine: str, history: History) -> None:
        self.history = history
        self.store = ProjectionStore(engine, database=f"fresh_{uuid.uuid4().hex[:16]}")
        self.ledger, self.events, self.branch = Ledger(), list[LedgerEvent](), tuple[str, ...]()
        self.cache: dict[tuple[tuple[str, ...], str, int], dict[str, Any]] = {}

    def close(self) -> None:
        self.store.drop()
        self.store.close()

    def model(self, branch: tuple[str, ...]) -> ValidatorQueries:
        """The fresh views of exactly `branch`."""
        if self.branch == branch[:len(self.branch)] and self.events:
            commands = [self.history.blocks[h] for h in branch[len(self.branch):]]
        else:
            self.store.drop()
            self.store.apply_ddl()
            self.ledger, self.events = Ledger(), []
            commands = [GENESIS, *(self.history.blocks[h] for h in branch[1:])]
        start = len(self.events)
        for command in commands:
            for event, event_hash in seal(self.ledger, decide(self.ledger, command, VERIFIER).events):
                fold(self.ledger, event, event_hash)
                self.events.append(event)
        assert tuple(self.ledger.chains[CHAIN].canonical) == branch
        write_events(self.store, self.events, start, len(self.events))
        self.branch = branch
        return ValidatorQueries(ReadModel(self.store))

    def views(self, branch: tuple[str, ...], group: str) -> dict[str, Any]:
        # Keyed by the slash txs known too: a tx in a side block asks for its receipt on an unchanged branch.
        key = (branch, group, len(self.history.slash_txs))
        if key not in self.cache:
            q, txs, nodes = self.model(branch), self.history.slash_txs, self.history.nodes
            self.cache[key] = {
                "head": lambda: head_views(q, txs), "command": lambda: command_views(q, txs, nodes),
                "heights": lambda: height_views(q, len(branch) - 1, nodes),
            }[group]()
        return self.cache[key]


def test_after_every_position_the_views_equal_a_fresh_projection_of_the_canonical_branch(chdb_dsn: str) -> None:
    history = forked_history()
    fresh = Fresh(chdb_dsn, history)
    kinds = [type(e) for e in history.events]
    inside = (ChainReorganized, BlockReverted, BlockReapplied)  # events that never end a command
    command_ends = [i for i, k in enumerate(kinds, start=1) if k not in inside]
    reorg_ends = {end for end, after in zip(command_ends, command_ends[1:], strict=False)
                  if ChainReorganized in kinds[end:after]}  # fmt: skip
    try:
        with scratch_store(chdb_dsn, "live") as store:
            q = ValidatorQueries(ReadModel(store))
            for position in range(1, len(history.events) + 1):
                write_events(store, history.events, position - 1, position)  # every position is visible
                branch = history.branches[position - 1]
                assert head_views(q, history.slash_txs) == fresh.views(branch, "head"), position
                if position in command_ends:
                    live, expected = command_views(q, history.slash_txs), fresh.views(branch, "command")
                    assert {k: live[k] for k in ("history", "phases")} == {
                        k: expected[k] for k in ("history", "phases")}, position  # fmt: skip
                    for t, receipt in live["receipts"].items():
                        # The canonical receipt where there is one; else it was reverted, or never canonical.
                        if expected["receipts"][t] is not None:
                            assert receipt == expected["receipts"][t], (position, t)
                        else:
                            assert receipt is None or receipt["status"] == "reverted", (position, t, receipt)
                if position in reorg_ends or position == len(history.events):
                    assert height_views(q, len(branch) - 1) == fresh.views(branch, "heights"), position
            # The end: each validator and its history at heights; the write side's state, stake by stake; the
            # finalized head reads the final block.
            heights = (1, 2, 3, 6, len(history.branches[-1]) - 1)
            assert each_validator(q, heights) == each_validator(fresh.model(history.branches[-1]), heights)
            check_against_the_write_side(q, history)
            final = head_views(q, history.slash_txs, finality=FINAL)
            assert final == fresh.views(history.branches[-1][:history.chain.finalized_height + 1], "head")
    finally:
        fresh.close()
    assert history.chain.reorganizations == 3


def _one(listing: list[dict[str, Any]], node_id: str) -> dict[str, Any] | None:
    """A validator of a head listing, as `validator` reads it (without its key)."""
    found = next((dict(v) for v in listing if v["node_id"] == node_id), None)
    if found is not None:
        found.pop("key_pk")
    return found


def check_against_the_write_side(q: ValidatorQueries, history: History) -> None:
    chain = history.chain
    listed = {v["node_id"]: v for v in q.validators(CHAIN, PAGE_SIZE_MAX, with_key=True)}
    assert set(listed) == set(chain.validators)
    for node_id, v in chain.validators.items():
        seen = listed[node_id]
        assert (seen["operator"], seen["key_alg"], seen["key_pk"], seen["gpu_uuid"], seen["stake"], seen["phase"],
                seen["unbond_at_ms"], seen["enrolled_height"], seen["revoked"], seen["slashable"]) == (
            v.operator, v.alg, v.pk.hex(), v.gpu_uuid, v.stake, v.phase, v.unbond_at_ms, v.enrolled_height, v.revoked,
            v.stake > 0), node_id  # fmt: skip
    totals = q.validator_totals(CHAIN)
    assert totals is not None
    bonded = sum(v.stake for v in chain.validators.values() if v.phase in ("active", "unbonding"))
    assert totals["bonded_stake"] == bonded
    assert totals["active_count"] == sum(v.phase == "active" for v in chain.validators.values())
    # DOMAIN.md's CELL invariant, from the views: balances + bonded stake = minted - burned.
    model = q.model
    cells = sum(next((b["amount"] for b in (model.account(CHAIN, a) or {})["balances"] if b["asset"] == "CELL"), 0)
                for a in ADDRESSES)  # fmt: skip
    supply = next(s["amount"] for s in model.stats(CHAIN, 1)["supply"] if s["asset"] == "CELL")
    assert cells + totals["bonded_stake"] == supply == chain.minted - chain.burned
    assert totals["burned_total"] == chain.burned


def test_the_history_tells_what_happened_and_reverted_entries_are_marked(chdb_dsn: str) -> None:
    history = forked_history()
    with scratch_store(chdb_dsn, "marked") as store:
        write_events(store, history.events, 0, len(history.events))
        q = ValidatorQueries(ReadModel(store))
        kinds = {n: [(e["height"], e["kind"]) for e in q.validator_history(CHAIN, n)] for n in ("va", "vb", "vc", "ve")}
        assert kinds == {
            "va": [(1, "enrolled"), (2, "slashed"), (3, "slashed"), (3, "revoked"), (6, "released")],
            "vb": [(1, "enrolled"), (3, "unenrolled"), (6, "released")],
            "vc": [(1, "enrolled"), (3, "unenrolled"), (3, "slashed"), (3, "revoked"), (6, "released")],
            "ve": [(9, "enrolled")],  # d9's enrollment (25 CELL), not a9's
        }
        ve = q.validator(CHAIN, "ve", with_key=True)
        assert ve is not None and (ve["stake"], ve["key_pk"]) == (25 * CELL, KEYS["ve2"].pk.hex())
        with_reverted = q.validator_history(CHAIN, "ve", include_reverted=True)
        assert sorted((e["height"], e["kind"], e["amount"], e["reverted"]) for e in with_reverted) == [
            (9, "enrolled", 11 * CELL, True), (9, "enrolled", 25 * CELL, False),
        ]  # a10's slash of a9's ve is above the head (9): reads stop at the height they read
        va = q.validator(CHAIN, "va")
        assert va is not None and (va["phase"], va["stake"], va["revoked"], va["unbond_height"],
                                   va["released_height"], va["slashable"]) == ("released", 0, True, 3, 6, False)
        at3 = q.validator(CHAIN, "va", at_height=3)
        assert at3 is not None and (at3["phase"], at3["stake"], at3["unbond_height"], at3["released_height"]) == (
            "unbonding", 5 * CELL, 3, None)
        # vd only ever existed on branch b: no validator, and its history only with reverted entries.
        assert q.validator(CHAIN, "vd") is None and q.validator_history(CHAIN, "vd") == []
        assert [e["reverted"] for e in q.validator_history(CHAIN, "vd", include_reverted=True)] == [True]
        # The slash of va carried by a2 and again by b2: canonical in a2 (reapplied).
        receipt = q.slash_receipt(history.slash_txs[0])
        assert receipt is not None and (receipt["status"], receipt["height"], receipt["slashed"]) == (
            "applied", 2, 10 * CELL)
        # b2's slash of vb was reverted: its receipt says so, with the figures it had.
        vb_slash = next(t for t in history.slash_txs[5:] if (q.slash_receipt(t) or {}).get("node_id") == "vb")
        reverted = q.slash_receipt(vb_slash)
        assert reverted is not None and (reverted["status"], reverted["slashed"], reverted["revoked"]) == (
            "reverted", 75 * CELL // 10, True)
        assert q.slash_receipt("00" * 32) is None


RANDOM_NODES = ("r0", "r1", "r2", "r3", "node-0")
ACCOUNT_KEYS = (ALICE, BOB, CAROL)
# (kind, account, node, amount or offence height, variant: another key and gpu for an enroll, the votes swapped
# for a slash); most of them are rejected one way or another (bad nonce aside: nonces are right on each branch).
validator_txs = st.lists(
    st.tuples(st.sampled_from(["enroll", "enroll", "unenroll", "slash", "slash"]), st.integers(0, 2),
              st.integers(0, 4), st.integers(1, 3), st.booleans()),
    max_size=3,
)  # fmt: skip


def _random_tx(kind: str, account: int, node: int, k: int, variant: bool, nonce: Callable[[KeyPair], int]) -> Any:
    who, name = ACCOUNT_KEYS[account], RANDOM_NODES[node]
    if kind == "enroll":
        key = keypair(f"rand-{name}-{int(variant)}")
        return build.enroll(CHAIN, who, name, f"GPU-{name}-{int(variant)}", (5 + 5 * k) * CELL, key, nonce=nonce(who))
    if kind == "unenroll":
        return build.unenroll(CHAIN, who, name, nonce=nonce(who))
    key = VALS[0].key if name == "node-0" else keypair(f"rand-{name}-0")
    hashes = (HASH_B, HASH_A) if variant else (HASH_A, HASH_B)
    return build.slash(CHAIN, who, name, build.evidence(CHAIN, name, key, k, hashes), nonce=nonce(who))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_random_validator_activity_on_random_forks_projects_like_its_canonical_branch(
    chdb_dsn: str, data: st.DataObject
) -> None:
    """Blocks of random enrollments, unenrollments and slashes on a random tree (parents among the newest few, so
    branches overtake each other): after each block, the views equal a fresh projection of the canonical branch."""
    n = data.draw(st.integers(3, 7), label="blocks")
    history = History(RANDOM_NODES)
    hashes = [history.chain.canonical[0]]
    fresh = Fresh(chdb_dsn, history)
    try:
        with scratch_store(chdb_dsn, "random") as store:
            q = ValidatorQueries(ReadModel(store))
            for i in range(1, n + 1):
                parent = hashes[data.draw(st.integers(max(0, i - 3), i - 1), label=f"parent of {i}")]
                plan = data.draw(validator_txs, label=f"txs of {i}")
                branch = BranchView(history.chain, history.chain.blocks[parent])
                active = [j for j in (1, 2, 0) if (v := branch.validator(VALS[j].node_id)) and v.phase == "active"]
                hashes.append(history.block(parent, active[0], lambda nonce, plan=plan: [  # type: ignore[misc]
                    _random_tx(*tx, nonce) for tx in plan]))
                write_events(store, history.events, store.checkpoint(), len(history.events))
                canonical = history.branches[-1]
                assert head_views(q, history.slash_txs) == fresh.views(canonical, "head"), i
                live = command_views(q, history.slash_txs, RANDOM_NODES)
                expected = fresh.views(canonical, "command")
                assert (live["history"], live["phases"]) == (expected["history"], expected["phases"]), i
                for t, receipt in live["receipts"].items():
                    if expected["receipts"][t] is not None:
                        assert receipt == expected["receipts"][t], (i, t)
                    else:
                        assert receipt is None or receipt["status"] == "reverted", (i, t, receipt)
            top = len(history.branches[-1]) - 1
            assert height_views(q, top, RANDOM_NODES) == fresh.views(history.branches[-1], "heights")
            check_against_the_write_side(q, history)
    finally:
        fresh.close()
    statistic(f"reorganizations: {min(history.chain.reorganizations, 2)}")
    statistic(f"validators: {min(len(history.chain.validators) - 3, 3)}")
    statistic(f"applied slashes: {min(len(history.chain.offences), 2)}")


# ============================================================================ the real service, the follower, the API


def _gql(client: Client, query: str, **variables: Any) -> dict[str, Any]:
    body = client.post("/graphql", json={"query": query, "variables": variables}).json()
    assert "errors" not in body, body["errors"]
    return dict(body["data"])


class Live:
    """A chain on a LedgerService, the follower projecting it into its own database, and the app over the views."""

    def __init__(self, ledger: Chain, store: ProjectionStore) -> None:
        self.ledger, self.store = ledger, store
        self.follower = Follower(ledger.service.app, store)
        self.follower.run_until_caught_up()  # the genesis
        self.model = ReadModel(store)
        self.client = Client(create_app(self.model, ledger.service))

    def apply(self, txs: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        result = self.ledger.apply(list(txs), proposer=0)
        self.follower.run_until_caught_up()
        return result


@pytest.fixture
def live(make_ledger: Any, projection_store: ProjectionStore) -> Iterator[Live]:
    ledger = make_ledger(params={"unbond_ms": 0})  # an unenrollment is released by its own block
    yield Live(ledger, projection_store)


def _walk(client: Client, first: int, between: Callable[[int], None], phase: str | None = None) -> list[str]:
    """Every node_id of a `validators` walk, calling `between(page)` after each page."""
    seen: list[str] = []
    after, page = None, 0
    phase_arg = "" if phase is None else f", phase: {phase.upper()}"
    while True:
        data = _gql(client, f"query($a: String) {{ validators(first: {first}, after: $a{phase_arg}) {{ edges {{ cursor"
                            " node { nodeId phase } } pageInfo { hasNextPage endCursor } } }", a=after)["validators"]
        seen += [e["node"]["nodeId"] for e in data["edges"]]
        between(page)
        page += 1
        if not data["pageInfo"]["hasNextPage"]:
            return seen
        after = data["pageInfo"]["endCursor"]


def test_a_page_walk_during_churn_meets_every_lasting_validator_once(live: Live) -> None:
    ops = (ALICE, BOB, CAROL)
    nonces = {k.address: 0 for k in ops}

    def enroll(i: int, node: str) -> dict[str, Any]:
        op = ops[i % 3]
        nonces[op.address] += 1
        return build.enroll(live.ledger.chain_id, op, node, f"GPU-{node}", 10 * CELL, keypair(node),
                            nonce=nonces[op.address] - 1)  # fmt: skip

    def unenroll(i: int, node: str) -> dict[str, Any]:
        op = ops[i % 3]
        nonces[op.address] += 1
        return build.unenroll(live.ledger.chain_id, op, node, nonce=nonces[op.address] - 1)

    live.apply([enroll(i, f"w{i:02d}") for i in range(12)])
    before = {e["node"]["nodeId"] for e in _gql(live.client, "{ validators(first: 500) { edges { node { nodeId } } } }")
              ["validators"]["edges"]}  # fmt: skip
    assert len(before) == 15
    churn = iter(range(100))

    def between(page: int) -> None:
        # New validators sort before, among and after those seen; some leave (released at once: unbond_ms 0).
        k = next(churn)
        live.apply([enroll(0, f"a{k:02d}"), enroll(1, f"w{k:02d}x"), enroll(2, f"z{k:02d}"),
                    unenroll((k * 5) % 12, f"w{(k * 5) % 12:02d}") if k < 4 else enroll(k, f"v{k:02d}")])  # fmt: skip

    walked = _walk(live.client, 4, between)
    assert len(walked) == len(set(walked)), "a validator met twice"
    assert before <= set(walked), f"skipped: {before - set(walked)}"
    assert walked == sorted(walked)
    released = _walk(live.client, 500, lambda _: None, phase="released")
    assert len(released) == 4 and set(released) <= before  # released validators stay listed, in their phase


SLASH_QUERY = (
    "query($t: String!) { slashReceipt(txId: $t) { txId status reason nodeId offenceHeight reporter slashed"
    " toReporter burned revoked height index blockHash chainId } }"
)


@pytest.fixture
def slashed(live: Live) -> dict[str, Any]:
    """node-new enrolled (25 CELL), slashed (applied) and the same offence reported again (rejected); a final head."""
    chain = live.ledger.chain_id
    key = keypair("node-new")
    live.apply([build.enroll(chain, ALICE, "node-new", "GPU-NEW", 25 * CELL, key, nonce=0)])
    votes = build.evidence(chain, "node-new", key, 1, (HASH_A, HASH_B))
    applied = build.slash(chain, BOB, "node-new", votes, nonce=0)
    rejected = build.slash(chain, CAROL, "node-new", votes[::-1], nonce=0)
    result = live.apply([applied, rejected])
    live.ledger.finalize(result["hash"], 2)
    live.apply()
    live.follower.run_until_caught_up()
    return {"applied": tx_id(applied), "rejected": tx_id(rejected), "key": key}


def test_graphql_validator_reads(live: Live, slashed: dict[str, Any]) -> None:
    data = _gql(live.client, """{
        validator(nodeId: "node-new") { nodeId operator phase stake slashable gpuUuid revoked enrolledHeight
          unbondAtMs unbondHeight releasedHeight height key { alg pk }
          history { kind height index txId amount reverted } }
        before: validator(nodeId: "node-new", atHeight: 1) { stake }
        nobody: validator(nodeId: "nobody") { stake }
        final: validator(nodeId: "node-new", finality: FINALIZED) { stake height }
        validatorTotals { height validatorCount activeCount bondedStake slashedTotal burnedTotal }
    }""")
    v = data["validator"]
    assert {k: v[k] for k in v if k not in ("history", "key")} == {
        "nodeId": "node-new", "operator": ALICE.address, "phase": "ACTIVE", "stake": str(25 * CELL // 2),
        "slashable": True, "gpuUuid": "GPU-NEW", "revoked": False, "enrolledHeight": 1, "unbondAtMs": None,
        "unbondHeight": None, "releasedHeight": None, "height": 3,
    }
    assert v["key"] == slashed["key"].key
    assert [(e["kind"], e["height"], e["index"], e["amount"]) for e in v["history"]] == [
        ("ENROLLED", 1, 0, str(25 * CELL)), ("SLASHED", 2, 0, str(25 * CELL // 2))]
    assert v["history"][1]["txId"] == slashed["applied"]
    assert data["before"] == {"stake": str(25 * CELL)} and data["nobody"] is None
    assert data["final"] == {"stake": str(25 * CELL // 2), "height": 2}
    assert data["validatorTotals"] == {
        "height": 3, "validatorCount": 4, "activeCount": 4, "bondedStake": str(30 * CELL + 25 * CELL // 2),
        "slashedTotal": str(25 * CELL // 2), "burnedTotal": str(25 * CELL // 2 - 25 * CELL // 20),
    }


def test_graphql_slash_receipts_and_slashes(live: Live, slashed: dict[str, Any]) -> None:
    applied = _gql(live.client, SLASH_QUERY, t=slashed["applied"])["slashReceipt"]
    assert applied == {
        "txId": slashed["applied"], "status": "applied", "reason": None, "nodeId": "node-new", "offenceHeight": 1,
        "reporter": BOB.address, "slashed": str(25 * CELL // 2), "toReporter": str(25 * CELL // 20),
        "burned": str(25 * CELL // 2 - 25 * CELL // 20), "revoked": False, "height": 2, "index": 0,
        "blockHash": applied["blockHash"], "chainId": live.ledger.chain_id,
    }
    rejected = _gql(live.client, SLASH_QUERY, t=slashed["rejected"])["slashReceipt"]
    assert (rejected["status"], rejected["reason"], rejected["slashed"]) == ("rejected", "duplicate_offence", "0")
    transfer = live.apply([build.transfer(live.ledger.chain_id, ALICE, BOB.address, 1, nonce=1)])["tx_ids"][0]
    assert _gql(live.client, SLASH_QUERY, t=transfer)["slashReceipt"] is None  # not a slash
    query = ("query($a: String, $n: String) { slashes(nodeId: $n, first: 1, after: $a) { edges { cursor node { txId } }"
             " pageInfo { hasNextPage endCursor } } }")  # fmt: skip
    first = _gql(live.client, query, n="node-new")["slashes"]
    assert [e["node"]["txId"] for e in first["edges"]] == [slashed["rejected"]] and first["pageInfo"]["hasNextPage"]
    second = _gql(live.client, query, n="node-new", a=first["pageInfo"]["endCursor"])["slashes"]
    assert [e["node"]["txId"] for e in second["edges"]] == [slashed["applied"]]
    assert not second["pageInfo"]["hasNextPage"]
    assert _gql(live.client, query, n="node-0")["slashes"]["edges"] == []


@pytest.mark.parametrize(("query", "argument"), [
    ('{ validator(nodeId: "bad id!") { stake } }', "nodeId"),
    ('{ validator(nodeId: "n", atHeight: -1) { stake } }', "atHeight"),
    ('{ validators(first: 0) { edges { cursor } } }', "first"),
    ('{ validators(after: "djE6YmxvY2s6Mw") { edges { cursor } } }', "after"),  # a blocks cursor
    ('{ slashes(after: "!!") { edges { cursor } } }', "after"),
    ('{ slashes(after: "djE6c2xhc2g6MTo5OTk5OTk5OTk5") { edges { cursor } } }', "after"),  # index 9,999,999,999
    ('{ slashReceipt(txId: "AB") { status } }', "txId"),
    ('{ validator(nodeId: "node-0") { history(first: 0) { kind } } }', "first"),
])  # fmt: skip
def test_graphql_bad_arguments_name_the_argument(live: Live, query: str, argument: str) -> None:
    body = live.client.post("/graphql", json={"query": query}).json()
    assert body["errors"][0]["extensions"] == {"code": "BAD_ARGUMENT", "argument": argument}, body
    assert body["errors"][0]["message"].startswith(f"{argument}: ")


def test_metrics_agree_with_the_views(live: Live, slashed: dict[str, Any]) -> None:
    text = live.client.get("/metrics").text
    chain = live.ledger.chain_id
    lines = set(text.splitlines())
    assert f'tally_slashes_total{{chain_id="{chain}",reason="none",status="applied"}} 1.0' in lines
    assert f'tally_slashes_total{{chain_id="{chain}",reason="duplicate_offence",status="rejected"}} 1.0' in lines
    assert f'tally_validators{{chain_id="{chain}",phase="active"}} 4.0' in lines
    bonded = re.search(rf'tally_validators_bonded_stake{{chain_id="{chain}"}} (\S+)', text)
    assert bonded is not None and float(bonded.group(1)) == 30 * CELL + 25 * CELL // 2
    assert "tally_slashes_reverted_total" not in text.replace("# HELP tally_slashes_reverted_total", "").replace(
        "# TYPE tally_slashes_reverted_total", "")  # no reorganization here


# ------------------------------------------------------------------------------------ the CLI, against the schema


@contextmanager
def cli_on(live: Live, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def handle(request: httpx.Request) -> httpx.Response:
        answer = live.client.request(request.method, request.url.path, content=request.content,
                                     headers={"content-type": request.headers.get("content-type", "")})
        return httpx.Response(answer.status_code, content=answer.content,
                              headers={"content-type": answer.headers.get("content-type", "")})

    @contextmanager
    def ledger(url: str | None) -> Iterator[LedgerClient]:
        with httpx.Client(transport=httpx.MockTransport(handle)) as http:
            yield LedgerClient("http://tally.test", http)

    monkeypatch.setattr(api.cli_txs, "_ledger", ledger)
    yield


def test_the_cli_lists_validators_and_prints_slash_receipts(
    live: Live, slashed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    with cli_on(live, monkeypatch):
        every = runner.invoke(main, ["validators", "--all", "--first", "2"])
        assert every.exit_code == 0, every.output
        nodes = [json.loads(line) for line in every.stdout.splitlines()]
        assert [n["nodeId"] for n in nodes] == ["node-0", "node-1", "node-2", "node-new"]
        assert nodes[3]["stake"] == str(25 * CELL // 2) and nodes[3]["key"] == slashed["key"].key
        assert "history" not in nodes[3]  # lists are not selected blindly: a page is one query
        page = runner.invoke(main, ["validators", "--first", "3", "--phase", "active"])
        assert len(page.stdout.splitlines()) == 3 and "--after" in page.stderr
        receipt = runner.invoke(main, ["slash-receipt", slashed["rejected"]])
        assert receipt.exit_code == 0, receipt.output
        printed = json.loads(receipt.stdout)
        assert (printed["status"], printed["reason"], printed["nodeId"]) == ("rejected", "duplicate_offence",
                                                                             "node-new")
        missing = runner.invoke(main, ["slash-receipt", "00" * 32])
        assert missing.exit_code == 1 and "no slash receipt" in missing.stderr


def test_the_cli_builds_evidence_with_the_key_the_ledger_serves(
    live: Live, slashed: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    files = []
    for name, h in (("a", HASH_A), ("b", HASH_C)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(build.vote(live.ledger.chain_id, "node-new", slashed["key"], 7, h)))
        files.append(str(path))
    with cli_on(live, monkeypatch):
        result = CliRunner().invoke(main, ["evidence", *files, "--url", "http://tally.test"])
        assert result.exit_code == 0, result.output
        assert [v["block_hash"] for v in json.loads(result.stdout)] == [HASH_A, HASH_C]


def test_a_page_with_keys_is_one_query(live: Live) -> None:
    live.apply([build.enroll(live.ledger.chain_id, ALICE, f"bulk{i:03d}", f"GPU-B{i}", 10 * CELL, keypair(f"b{i}"),
                             nonce=i) for i in range(9)])  # fmt: skip
    calls: list[str] = []
    rows = live.model._rows

    def counted(sql: str, **params: Any) -> Any:
        calls.append(sql)
        return rows(sql, **params)

    live.model._rows = counted  # type: ignore[method-assign]
    data = _gql(live.client, "{ validators(first: 500) { edges { node { nodeId key { pk } } } } }")
    assert len(data["validators"]["edges"]) == 12
    assert all(len(e["node"]["key"]["pk"]) > 1000 for e in data["validators"]["edges"])
    assert len([c for c in calls if "validator_states" in c]) == 1


@strawberry.type
class CliEntry:
    kind: str


@strawberry.type
class CliKey:
    alg: str


@strawberry.type
class CliNode:
    node_id: str
    key: CliKey
    tags: list[str]
    entries: list[CliEntry]


@strawberry.type
class CliQuery:
    @strawberry.field
    def node(self) -> CliNode:
        return CliNode(node_id="n", key=CliKey(alg="a"), tags=["t"], entries=[CliEntry(kind="k")])


def test_the_cli_selects_leaves_and_objects_but_not_lists_of_objects() -> None:
    schema = strawberry.Schema(query=CliQuery)

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        result = schema.execute_sync(body["query"], variable_values=body.get("variables"))
        return httpx.Response(200, json={"data": result.data})

    with httpx.Client(transport=httpx.MockTransport(handle)) as http:
        assert LedgerClient("http://ledger.test", http).leaf_selection("CliNode") == "nodeId key { alg } tags"
