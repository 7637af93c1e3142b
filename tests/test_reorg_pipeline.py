"""Forks end to end (issue 3): the real LedgerService, the follower and the chdb views, against fresh replays.

A property test: a random tree of valid blocks (with transfers) and votes, submitted in a random order (any
order in which a block comes after its parent; votes anywhere, before their block too). After every command,
once the follower has caught up, every view of the live stack equals the views of a fresh database fed by a
fresh in-memory ledger that received only the canonical branch (and the votes that make the same block final):
the head, the blocks listing and the canonical block at every height, every account at every height, the txs
listings, the supply figures, and the receipt of every tx of the tree by DOMAIN.md's rule. The fresh views
cannot know about reverted blocks, so a tx that only ever was in reverted blocks must come back 'reverted' with
the reason, block and index of its most recently reverted inclusion, and one never canonical has no receipt.
The CELL invariant is checked at every height of the live views, and every block's status and the list of
reorganizations against the write side.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from accelerators.verify import BatchVerifier
from projections.project import Rows, project
from projections.queries import ReadModel
from projections.store import ProjectionStore
from schemas import build
from schemas.canonical import block_hash, genesis_hash, tx_id
from schemas.events import BlockReverted, ChainReorganized, LedgerEvent
from schemas.limits import PAGE_SIZE_MAX, PARAM_DEFAULTS
from streams.follower import Follower
from tests.chain import ACCOUNTS, BLOCK_MS, CELL, FUNDS, STAKE, genesis_command, open_service, validators
from writes.decide import decide
from writes.service import LedgerService, seal
from writes.state import BranchView, Ledger, fold

REWARD = PARAM_DEFAULTS["block_reward"]
VALS = validators()
GENESIS = genesis_command(vals=VALS)
CHAIN = GENESIS["chain_id"]
GENESIS_HASH = genesis_hash(GENESIS)
ADDRESSES = [k.address for k in ACCOUNTS] + [v.operator.address for v in VALS]
# Every CELL there is after h blocks of transfers only: allocations, bonded stakes, one reward per block.
SUPPLY_AT_GENESIS = FUNDS * len(ACCOUNTS) + STAKE * len(VALS)
STATS_KEYS = (
    "total_blocks", "txs_applied", "txs_rejected", "volume", "fees", "supply", "window_blocks",
    "rolling_block_time_ms", "rolling_tps", "last_block_height", "last_block_timestamp_ms",
)


# ---------------------------------------------------------------------------------------------- the tree


@dataclass
class Tree:
    """Signed blocks (by tree index, 1..n; 0 is the genesis) and the commands in submission order."""

    blocks: dict[int, dict[str, Any]] = field(default_factory=dict)
    parents: dict[int, int] = field(default_factory=dict)
    commands: list[tuple[str, Any]] = field(default_factory=list)  # ("block", index) | ("vote", (index, voter))

    def hash(self, index: int) -> str:
        return GENESIS_HASH if index == 0 else block_hash(self.blocks[index])

    def tx_ids(self) -> list[str]:
        return list(dict.fromkeys(tx_id(tx) for i in sorted(self.blocks) for tx in self.blocks[i]["txs"]))


class Node(NamedTuple):
    """A block of the tree: its parent (tree index, 0 the genesis), proposer, and transfers to sign, or the
    same signed txs as an earlier block (`copy`)."""

    parent: int
    proposer: int
    plan: list[Any]
    copy: int | None


# (sender, recipient, amount in CELL, nonce skew): a skew of 1 makes a bad_nonce; large amounts run out of funds;
# None repeats the block's previous tx (a replay in the same block: rejected, bad_nonce).
transfers = st.lists(
    st.tuples(
        st.integers(0, 2), st.integers(0, 2), st.integers(1, 60),
        st.sampled_from([0, 0, 0, 1, None]),
    ),
    max_size=3,
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Node], list[int], list[tuple[int, int, int]]]:
    """(blocks as Node, a priority order, votes as (block, voter, slot)).

    Half of the trees are any tree, submitted in any order in which parents come first; the other half are a
    common stem and two competing branches submitted in that order, the second longer, so that most examples
    reorganize, deeper than 1 too (unless votes finalize the first branch). Voter 3 means every validator
    (their stakes are equal: enough to finalize)."""
    if draw(st.booleans()):
        n = draw(st.integers(2, 7))
        # Parents among the last few blocks most of the time: branches grow long enough to overtake each other.
        parents = [draw(st.integers(max(0, i - 3), i - 1) | st.integers(0, i - 1)) for i in range(1, n + 1)]
        copies: list[int | None] = [draw(st.none() | st.none() | st.integers(1, i - 1)) if i > 1 else None
                                    for i in range(1, n + 1)]
        order = list(draw(st.permutations(range(1, n + 1))))
    else:
        stem, first = draw(st.integers(0, 1)), draw(st.integers(1, 3))
        second = draw(st.integers(first + 1, first + 2))
        parents = list(range(stem + first))
        parents += [stem] + list(range(stem + first + 1, stem + first + second))
        n = len(parents)
        # The second branch often carries the first's txs again, as a chain re-includes what a reorg reverted.
        copies = [None] * (stem + first) + [
            stem + 1 + j if j < first and draw(st.booleans()) else None for j in range(second)
        ]
        order = list(range(1, n + 1))  # the stem, the first branch, then the second overtakes it
    nodes = [Node(parent, draw(st.integers(0, 2)), draw(transfers), copy)
             for parent, copy in zip(parents, copies, strict=True)]
    votes = draw(st.lists(
        st.tuples(st.integers(1, n), st.sampled_from([0, 1, 2, 3]), st.integers(0, n)), max_size=3
    ))
    return nodes, order, votes


def build_tree(verifier: BatchVerifier, nodes: Sequence[Node], order: Sequence[int],
               votes: Sequence[tuple[int, int, int]]) -> Tree:
    """Sign every block on its own branch's state (kept by an in-memory ledger fed in tree order), so that
    the transfers' nonces are right on their branch; then lay out a submission order."""
    tree, shadow = Tree(), Ledger()
    _feed(shadow, GENESIS, verifier)
    for index, (parent, proposer, plan, copy) in enumerate(nodes, start=1):
        chain = shadow.chains[CHAIN]
        parent_info = chain.blocks[tree.hash(parent)]
        branch = BranchView(chain, parent_info)
        nonces = {k.address: branch.next_nonce(k.address) for k in ACCOUNTS}
        txs = list(tree.blocks[copy]["txs"]) if copy is not None else []
        for s, r, amount, skew in plan if copy is None else ():
            if skew is None:
                txs += txs[-1:]
                continue
            sender = ACCOUNTS[s]
            txs.append(build.transfer(CHAIN, sender, ACCOUNTS[r].address, amount * CELL,
                                      nonce=nonces[sender.address] + skew))
            nonces[sender.address] += 1
        v = VALS[proposer]
        # A per-index timestamp: no two blocks of the tree are the same block.
        blk = build.block(CHAIN, parent_info.height + 1, parent_info.hash, v.node_id, v.key,
                          parent_info.timestamp_ms + BLOCK_MS + index, txs)
        _feed(shadow, blk, verifier)
        tree.blocks[index], tree.parents[index] = blk, parent
    # Any order in which a parent comes first: take the first ready block of the priority order each time.
    emitted, waiting, blocks_order = {0}, list(order), []
    while waiting:
        ready = next(i for i in waiting if tree.parents[i] in emitted)
        waiting.remove(ready)
        emitted.add(ready)
        blocks_order.append(ready)
    slots: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for target, voter, slot in votes:
        slots[slot].append((target, voter))
    for slot in range(len(blocks_order) + 1):
        for target, voter in slots.get(slot, []):
            tree.commands += [("vote", (target, v)) for v in (range(3) if voter == 3 else [voter])]
        if slot < len(blocks_order):
            tree.commands.append(("block", blocks_order[slot]))
    return tree


def _feed(ledger: Ledger, command: dict[str, Any], verifier: BatchVerifier) -> list[LedgerEvent]:
    decision = decide(ledger, command, verifier)
    sealed = seal(ledger, decision.events)
    for e, ehash in sealed:
        fold(ledger, e, ehash)
    return [e for e, _ in sealed]


def vote_command(tree: Tree, target: int, voter: int) -> dict[str, Any]:
    v = VALS[voter]
    return build.vote(CHAIN, v.node_id, v.key, tree.blocks[target]["height"], tree.hash(target))


# --------------------------------------------------------------------------------------------- the views


def views(read: ReadModel, top: int, tx_ids: Sequence[str]) -> dict[str, Any]:
    """Every view the API serves for the chain, without log positions (they differ between two logs)."""
    head = read.head(CHAIN)
    assert head is not None and head["height"] == top, (head, top)
    head = {**head, "tip": _strip(head["tip"]), "finalized": _strip(head["finalized"])}
    stats = read.stats(CHAIN, top + 1)
    return {
        "head": head,
        "blocks": [_strip(b) for b in read.blocks(CHAIN, PAGE_SIZE_MAX)],
        "block_at": [_strip(read.block(CHAIN, height=h)) for h in range(top + 1)],
        "accounts": {(a, h): read.account(CHAIN, a, at_height=h) for a in ADDRESSES for h in range(top + 1)},
        "transactions": read.transactions(CHAIN, first=PAGE_SIZE_MAX),
        "account_txs": {a: read.transactions(CHAIN, a, first=PAGE_SIZE_MAX) for a in ADDRESSES},
        "stats": {k: stats[k] for k in STATS_KEYS},
        "receipts": {t: read.receipt(t, CHAIN) for t in tx_ids},
    }


def _strip(block: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if block is None else {k: v for k, v in block.items() if k != "position"}


def fresh_views(engine: str, verifier: BatchVerifier, canonical: Sequence[dict[str, Any]], final: int,
                tx_ids: Sequence[str]) -> dict[str, Any]:
    """The views of a fresh database fed by a fresh ledger that received only `canonical` (then every
    validator's vote for its block at height `final`, when above 0)."""
    ledger, events = Ledger(), []
    for command in [GENESIS, *canonical]:
        events += _feed(ledger, command, verifier)
    if final:
        target = canonical[final - 1]
        for v in VALS:
            events += _feed(ledger, build.vote(CHAIN, v.node_id, v.key, final, block_hash(target)), verifier)
    assert ledger.chains[CHAIN].finalized_height == final
    rows: Rows = defaultdict(list)
    for position, e in enumerate(events, start=1):
        for table, table_rows in project(position, e).items():
            rows[table] += table_rows
    with scratch_store(engine, "fresh") as store:
        store.write(rows, len(events))
        return views(ReadModel(store), len(canonical), tx_ids)


@contextlib.contextmanager
def scratch_store(engine: str, prefix: str) -> Iterator[ProjectionStore]:
    """A ProjectionStore on a new database of the test engine, dropped on exit."""
    store = ProjectionStore(engine, database=f"{prefix}_{uuid.uuid4().hex[:16]}")
    try:
        yield store
    finally:
        store.drop()
        store.close()


# ------------------------------------------------------------------------------------ what the log says


def reverted_receipts(service: LedgerService) -> dict[str, list[dict[str, Any]]]:
    """Per tx_id, the receipt of its most recently reverted inclusion: the revert at the greatest log position,
    then the greatest index (a block that replays a tx holds it twice; docs/decisions.md, Receipt ranking)."""
    out: dict[str, tuple[int, list[dict[str, Any]]]] = {}
    for e in _log(service):
        if not isinstance(e, BlockReverted):
            continue
        for i, (t, (_status, reason)) in enumerate(zip(e.tx_ids, e.receipts, strict=True)):
            receipt = {"tx_id": t, "status": "reverted", "reason": reason, "height": e.height, "index": i,
                       "block_hash": e.block_hash, "chain_id": CHAIN}
            out[t] = (e.originator_version, [receipt])  # later reverts and later indexes come later in the walk
    return {t: receipts for t, (_, receipts) in out.items()}


def _log(service: LedgerService) -> Iterator[LedgerEvent]:
    for n in service.notifications():
        e = service.app.mapper.to_domain_event(n)
        assert isinstance(e, LedgerEvent)
        yield e


def check_live(read: ReadModel, service: LedgerService, tree: Tree, accepted: set[str], live: dict[str, Any],
               fresh: dict[str, Any]) -> None:
    chain = service.ledger.chains[CHAIN]
    top = chain.tip.height
    # Every view but receipts equals the fresh replay's.
    for name in fresh:
        if name != "receipts":
            assert live[name] == fresh[name], f"view {name} differs from a fresh replay of the canonical branch"
    # Receipts: the canonical one when there is one, else the most recently reverted, else none.
    reverted = reverted_receipts(service)
    for t, receipt in live["receipts"].items():
        if fresh["receipts"][t] is not None or t not in reverted:
            assert receipt == fresh["receipts"][t], f"receipt of {t}"
        else:
            assert receipt in reverted[t], f"receipt of {t}: {receipt} is not its most recently reverted one"
    # CELL: balances + stakes = minted - burned, at every height (transfers burn nothing); nothing negative.
    for h in range(top + 1):
        accounts = [live["accounts"][(a, h)] for a in ADDRESSES]
        cells = [b["amount"] for acc in accounts for b in acc["balances"] if b["asset"] == "CELL"]
        assert all(n >= 0 for n in cells) and all(acc["nonce"] >= 0 for acc in accounts)
        assert sum(cells) + STAKE * len(VALS) == SUPPLY_AT_GENESIS + REWARD * h, f"CELL invariant at height {h}"
    # Every recorded block's status, by hash; blocks the ledger refused are unknown to the views.
    for index, blk in tree.blocks.items():
        h = tree.hash(index)
        found = read.block(CHAIN, hash=h)
        if h not in accepted:
            assert found is None
            continue
        info = chain.blocks[h]
        status = ("finalized" if info.height <= chain.finalized_height else "canonical") if chain.is_canonical(
            info) else "orphaned"
        assert found is not None and found["status"] == status and found["height"] == blk["height"], (found, status)
    # The reorganizations, newest first, as the log recorded them.
    logged = [e for e in _log(service) if isinstance(e, ChainReorganized)]
    listed = read.reorgs(CHAIN, PAGE_SIZE_MAX)
    assert [(r["depth"], r["cause"], r["old_tip"]["hash"], r["new_tip"]["hash"]) for r in listed] == [
        (e.depth, e.cause, e.old_tip[1], e.new_tip[1]) for e in reversed(logged)
    ]


# ------------------------------------------------------------------------------------------------ the test


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_views_after_any_fork_equal_a_fresh_replay_of_the_canonical_branch(chdb_dsn: str, scenario: Any) -> None:
    nodes, order, votes = scenario
    with tempfile.TemporaryDirectory() as tmp, scratch_store(chdb_dsn, "live") as store:
        service = open_service(Path(tmp))
        try:
            tree = build_tree(service.verifier, nodes, order, votes)
            tx_ids = tree.tx_ids()
            assert service.submit(GENESIS)["status"] == "accepted"
            follower = Follower(service.app, store)
            read = ReadModel(store)
            accepted: set[str] = set()
            refused: set[int] = set()
            deepest = 0
            fresh_cache: dict[tuple[tuple[str, ...], int], dict[str, Any]] = {}
            for kind, what in tree.commands:
                if kind == "vote":
                    result = service.submit(vote_command(tree, *what))
                    assert result["status"] == "accepted", result
                    deepest = max(deepest, result["reorg"]["depth"] if result["reorg"] else 0)
                else:
                    result = service.submit(tree.blocks[what])
                    chain = service.ledger.chains[CHAIN]
                    if tree.parents[what] in refused:
                        assert result["reason"] == "unknown_parent", result
                        refused.add(what)
                        continue
                    if result["status"] == "rejected":
                        # Only finality refuses a valid block: its parent is off the final branch.
                        assert result["reason"] == "conflicts_with_finality", result
                        parent = chain.blocks[tree.hash(tree.parents[what])]
                        assert not chain.descends_from(parent, chain.finalized)
                        refused.add(what)
                        continue
                    accepted.add(result["hash"])
                    deepest = max(deepest, result["reorg"]["depth"] if result["reorg"] else 0)
                follower.run_until_caught_up()
                chain = service.ledger.chains[CHAIN]
                canonical = tuple(chain.canonical[1:])
                key = (canonical, chain.finalized_height)
                if key not in fresh_cache:
                    by_hash = {tree.hash(i): b for i, b in tree.blocks.items()}
                    fresh_cache[key] = fresh_views(
                        chdb_dsn, service.verifier, [by_hash[h] for h in canonical], chain.finalized_height, tx_ids
                    )
                live = views(read, chain.tip.height, tx_ids)
                check_live(read, service, tree, accepted, live, fresh_cache[key])
            chain = service.ledger.chains[CHAIN]
            event(f"reorganizations: {min(chain.reorganizations, 2)}")
            event(f"deepest reorg: {min(deepest, 3)}")
            event(f"finalized height: {min(chain.finalized_height, 2)}")
            event(f"refused blocks: {min(len(refused), 1)}")
        finally:
            service.close()


def test_a_tx_replayed_in_a_reverted_block_comes_back_reverted(chdb_dsn: str, tmp_path: Path) -> None:
    """A block holds a tx twice (applied, then rejected as a replay) and is reverted: the tx's receipt is
    'reverted', from that block (found by the property test: two reverted inclusions of one revert)."""
    alice, bob = ACCOUNTS[0], ACCOUNTS[1]
    service = open_service(tmp_path)
    try:
        with scratch_store(chdb_dsn, "replay") as store:
            assert service.submit(GENESIS)["status"] == "accepted"
            tx = build.transfer(CHAIN, alice, bob.address, CELL, nonce=0)
            v0, v1 = VALS[0], VALS[1]
            b1 = build.block(CHAIN, 1, GENESIS_HASH, v0.node_id, v0.key, GENESIS["timestamp_ms"] + BLOCK_MS, [tx, tx])
            first = service.submit(b1)
            assert [r["reason"] for r in first["receipts"]] == ["", "bad_nonce"], first
            s1 = build.block(CHAIN, 1, GENESIS_HASH, v1.node_id, v1.key, GENESIS["timestamp_ms"] + BLOCK_MS + 1)
            s2 = build.block(CHAIN, 2, block_hash(s1), v1.node_id, v1.key, s1["timestamp_ms"] + BLOCK_MS)
            assert service.submit(s1)["canonical"] is False
            assert service.submit(s2)["reorg"]["depth"] == 1
            Follower(service.app, store).run_until_caught_up()
            receipt = ReadModel(store).receipt(tx_id(tx), CHAIN)
            assert receipt is not None and receipt["status"] == "reverted", receipt
            assert (receipt["block_hash"], receipt["height"]) == (block_hash(b1), 1)
            assert receipt in reverted_receipts(service)[tx_id(tx)]
    finally:
        service.close()
