"""ReadModel over a hand-built history with side blocks and three reorganizations, every figure computed by hand.

alpha: validators n1 (operator O1) and n2 (O2); A has 1,000 CELL and B 500 CELL at genesis; reward 2 CELL.
Block names: a* on the first branch, b* and d* on competing ones; each hash is its event's position.

  pos 1      genesis G                                          t=1_000_000
  pos 2      a1 on G by n1: tx1 A->B 100 fee 1_000 (nonce 0)    t=1_001_000   applied
  pos 3      a1 final
  pos 4      a2 on a1 by n2: tx2 B->C 10 (nonce 0)              t=1_002_000   applied
  pos 5      b2 on a1 by n1: tx3 A->C 5 (nonce 1)               t=1_002_500   recorded (a tie: a2 stays)
  pos 6-9    b3 on b2 by n2: tx4 B->A 1 (nonce 0)               t=1_003_000   reorg depth 1 (longer branch):
             6 ChainReorganized, 7 revert a2, 8 reapply b2, 9 BlockApplied b3          chain G a1 b2 b3
  pos 10     a3 on a2 by n1: tx5 C->A 2 (nonce 0); tx4 again    t=1_003_500   recorded; tx4 is bad_nonce there
  pos 11-16  a4 on a3 by n2: tx3 again (nonce 1)                t=1_004_000   reorg depth 2, back to branch a:
             11 ChainReorganized, 12 revert b3, 13 revert b2, 14 reapply a2, 15 reapply a3, 16 BlockApplied a4
  pos 17     d2 on a1 by n2: tx6 A->B 7 (nonce 1)               t=1_002_700   recorded (shorter)
  pos 18-23  d2 made final: reorg depth 3 onto the shorter branch (cause finality):
             18 ChainReorganized, 19-21 revert a4 a3 a2, 22 reapply d2, 23 BlockFinalized d2     chain G a1 d2
  pos 24     d3 on d2 by n1: tx7 B->C 3 (nonce 0)               t=1_005_000   applied             chain G a1 d2 d3
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from projections.project import project
from projections.queries import FINAL, ReadModel
from projections.store import ProjectionStore
from schemas.canonical import tx_id
from schemas.events import (
    BlockApplied,
    BlockReapplied,
    BlockRecorded,
    ChainReorganized,
    GenesisAccepted,
    LedgerEvent,
)

A, B, C = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40
O1, O2 = "0x" + "1" * 40, "0x" + "2" * 40
ADDRESSES = (A, B, C, O1, O2)
CELL = 1_000_000
REWARD = 2 * CELL
FEE = 1_000


def _hash(position: int) -> str:
    return f"{position:064x}"  # EventLog names blocks after their position


G, A1, A2, B2, B3, A3, A4, D2, D3 = (_hash(p) for p in (1, 2, 4, 5, 9, 10, 16, 17, 24))
OPERATOR = {"n1": O1, "n2": O2}


def _block(
    log: Any, height: int, parent: str, proposer: str, ts: int, txs: Sequence[tuple[dict[str, Any], str]],
    cls: type[BlockApplied] | type[BlockRecorded] = BlockApplied,
) -> LedgerEvent:
    """A block of transfers with the effects its receipts give: (tx, "" when applied, else the reason)."""
    operator = OPERATOR[proposer]
    balances: dict[tuple[str, str], int] = {}
    nonces: dict[str, list[int]] = {}
    fees = volume = 0
    for tx, reason in txs:
        if reason:
            continue
        for who, delta in ((tx["from"], -tx["amount"] - tx["fee"]), (tx["to"], tx["amount"])):
            balances[(who, "CELL")] = balances.get((who, "CELL"), 0) + delta
        nonces.setdefault(tx["from"], [tx["nonce"], tx["nonce"]])[1] = tx["nonce"] + 1
        fees, volume = fees + tx["fee"], volume + tx["amount"]
    balances[(operator, "CELL")] = balances.get((operator, "CELL"), 0) + REWARD + fees
    return log.block(  # type: ignore[no-any-return]
        "alpha", height, parent, proposer, operator, ts, [tx for tx, _ in txs],
        [("rejected", r) if r else ("applied", "") for _, r in txs],
        balances=[(a, asset, d) for (a, asset), d in balances.items() if d],
        nonces=[(a, before, after) for a, (before, after) in nonces.items()], fees=fees,
        volume=[("CELL", volume)] if volume else [], cls=cls,
    )


def forked_history(log: Any, transfer: Any) -> dict[str, Any]:
    tx = {
        1: transfer("alpha", A, B, 100 * CELL, fee=FEE, nonce=0), 2: transfer("alpha", B, C, 10 * CELL, nonce=0),
        3: transfer("alpha", A, C, 5 * CELL, nonce=1), 4: transfer("alpha", B, A, 1 * CELL, nonce=0),
        5: transfer("alpha", C, A, 2 * CELL, nonce=0), 6: transfer("alpha", A, B, 7 * CELL, nonce=1),
        7: transfer("alpha", B, C, 3 * CELL, nonce=0),
    }
    g = log.genesis("alpha", 1_000_000, [(A, 1_000 * CELL), (B, 500 * CELL)], [("n1", O1, 10 * CELL),
                                                                               ("n2", O2, 20 * CELL)])
    a1 = _block(log, 1, G, "n1", 1_001_000, [(tx[1], "")])
    log.finalized("alpha", [(1, A1)], 1, 1_001_000, 30 * CELL, 30 * CELL)
    commands = [3]  # the last position of each command: the write side saves a command's events together
    a2 = _block(log, 2, A1, "n2", 1_002_000, [(tx[2], "")])
    b2 = _block(log, 2, A1, "n1", 1_002_500, [(tx[3], "")], BlockRecorded)
    commands += [4, 5]
    log.reorganized("alpha", "longer_branch", a1, [a2], [b2], new_tip=(3, B3))
    log.reverted(a2)
    log.reapplied(b2)
    _block(log, 3, B2, "n2", 1_003_000, [(tx[4], "")])
    a3 = _block(log, 3, A2, "n1", 1_003_500, [(tx[5], ""), (tx[4], "bad_nonce")], BlockRecorded)
    commands += [9, 10]
    b3 = log.events[8]
    log.reorganized("alpha", "longer_branch", a1, [b3, b2], [a2, a3], new_tip=(4, A4))
    log.reverted(b3)
    log.reverted(b2)
    log.reapplied(a2)
    log.reapplied(a3)
    a4 = _block(log, 4, A3, "n2", 1_004_000, [(tx[3], "")])
    d2 = _block(log, 2, A1, "n2", 1_002_700, [(tx[6], "")], BlockRecorded)
    commands += [16, 17]
    log.reorganized("alpha", "finality", a1, [a4, a3, a2], [d2])
    for block in (a4, a3, a2):
        log.reverted(block)
    log.reapplied(d2)
    log.finalized("alpha", [(2, D2)], 2, 1_002_700, 30 * CELL, 30 * CELL)
    _block(log, 3, D2, "n1", 1_005_000, [(tx[7], "")])
    commands += [23, 24]
    hashes = [e.block_hash for e in log.events if isinstance(e, (BlockApplied, BlockRecorded, GenesisAccepted))]
    assert hashes == [G, A1, A2, B2, B3, A3, A4, D2, D3] and g.block_hash == G
    return {"events": list(log.events), "commands": commands, "tx": {k: tx_id(t) for k, t in tx.items()}}


def write_batch(store: ProjectionStore, events: Sequence[LedgerEvent], start: int, end: int) -> None:
    """Projects events start+1..end (positions) as one batch."""
    rows: dict[str, list[Any]] = {}
    for position in range(start + 1, end + 1):
        for table, table_rows in project(position, events[position - 1]).items():
            rows.setdefault(table, []).extend(table_rows)
    store.write(rows, end)


@pytest.fixture(scope="module")
def history(event_log_class: Any, make_transfer: Any) -> dict[str, Any]:
    return forked_history(event_log_class(), make_transfer)


@pytest.fixture(scope="module")
def store(chdb_dsn: str) -> Iterator[ProjectionStore]:
    """One database for the module; each test writes the history up to where it reads."""
    store = ProjectionStore(chdb_dsn, database=f"test_forks_{uuid.uuid4().hex[:12]}")
    yield store
    store.drop()
    store.close()


@pytest.fixture
def at(store: ProjectionStore, history: dict[str, Any]) -> Any:
    """at(position) -> a ReadModel over the history up to `position`, written command by command."""

    def move(position: int) -> ReadModel:
        store.drop()
        store.apply_ddl()
        done = 0
        for end in [p for p in history["commands"] if p < position] + [position]:
            write_batch(store, history["events"], done, end)
            done = end
        return ReadModel(store)

    return move


def _balances(model: ReadModel, address: str, height: int | None = None, finality: str = "latest") -> Any:
    got = model.account("alpha", address, at_height=height, finality=finality)
    assert got is not None
    return got["height"], {b["asset"]: b["amount"] for b in got["balances"]}, got["nonce"]


def _receipt(model: ReadModel, tx: str) -> Any:
    r = model.receipt(tx)
    return None if r is None else (r["status"], r["reason"], r["height"], r["index"], r["block_hash"])


# --------------------------------------------------------------------------------------- a side block


def test_a_side_block_is_recorded_orphaned_and_changes_nothing(at: Any, history: dict[str, Any]) -> None:
    model = at(5)
    tx = history["tx"]
    side = model.block("alpha", hash=B2)
    assert side is not None and (side["height"], side["status"], side["canonical"], side["finalized"]) == (
        2, "orphaned", False, False
    )
    assert side["tx_count"] == 1 and side["position"] == 5
    assert model.block("alpha", height=2)["hash"] == A2  # type: ignore[index]
    assert [b["hash"] for b in model.blocks("alpha", 10)] == [A2, A1, G]
    assert model.receipt(tx[3]) is None  # blocks that were never canonical have no receipts
    assert [t["tx_id"] for t in model.transactions("alpha")] == [tx[2], tx[1]]
    assert _balances(model, A) == (2, {"CELL": 900 * CELL - FEE}, 1)
    assert _balances(model, C) == (2, {"CELL": 10 * CELL}, 0)
    assert model.stats("alpha", 10)["total_blocks"] == 3
    assert model.reorgs("alpha", 10) == []


# ------------------------------------------------------------------------------------ reorg of depth 1


def test_reorg_of_depth_one(at: Any, history: dict[str, Any]) -> None:
    model = at(9)
    tx = history["tx"]
    head = model.head("alpha")
    assert head is not None and (head["height"], head["hash"], head["finalized_height"]) == (3, B3, 1)
    assert (head["tip"]["hash"], head["tip"]["status"], head["finalized"]["hash"]) == (B3, "canonical", A1)
    assert [b["hash"] for b in model.blocks("alpha", 10)] == [B3, B2, A1, G]
    assert [model.block("alpha", hash=h)["status"] for h in (A2, B2, B3, A1)] == [  # type: ignore[index]
        "orphaned", "canonical", "canonical", "finalized"
    ]
    assert _balances(model, A) == (3, {"CELL": 896 * CELL - FEE}, 2)
    assert _balances(model, B) == (3, {"CELL": 599 * CELL}, 1)
    assert _balances(model, C) == (3, {"CELL": 5 * CELL}, 0)
    assert _balances(model, O2) == (3, {"CELL": REWARD}, 0)  # a2's reward went with a2
    assert _balances(model, C, 2) == (2, {"CELL": 5 * CELL}, 0)
    # tx2 was only in the old branch; tx3 was on the side block that became canonical.
    assert _receipt(model, tx[2]) == ("reverted", "", 2, 0, A2)
    assert _receipt(model, tx[3]) == ("applied", "", 2, 0, B2)
    assert _receipt(model, tx[4]) == ("applied", "", 3, 0, B3)
    assert [t["tx_id"] for t in model.transactions("alpha")] == [tx[4], tx[3], tx[1]]
    assert [t["tx_id"] for t in model.transactions("alpha", address=C)] == [tx[3]]
    assert model.reorgs("alpha", 10) == [{
        "chain_id": "alpha", "position": 6, "cause": "longer_branch", "depth": 1, "height": 1,
        "ancestor_hash": A1, "old_tip": {"height": 2, "hash": A2}, "new_tip": {"height": 3, "hash": B3},
        "reverted": [A2], "applied": [B2, B3],
    }]


# ------------------------------------------------------------------------ reorg of depth 2, back again


def test_reorg_of_depth_two_back_to_the_first_branch(at: Any, history: dict[str, Any]) -> None:
    model = at(16)
    tx = history["tx"]
    assert [b["hash"] for b in model.blocks("alpha", 10)] == [A4, A3, A2, A1, G]
    assert [model.block("alpha", hash=h)["status"] for h in (B2, B3, A2, A3)] == [  # type: ignore[index]
        "orphaned", "orphaned", "canonical", "canonical"
    ]
    assert model.block("alpha", hash=A2)["position"] == 14  # type: ignore[index]  # its reapply
    assert _balances(model, A) == (4, {"CELL": 897 * CELL - FEE}, 2)
    assert _balances(model, B) == (4, {"CELL": 590 * CELL}, 1)
    assert _balances(model, C) == (4, {"CELL": 13 * CELL}, 1)
    assert _balances(model, O1) == (4, {"CELL": 2 * REWARD + FEE}, 0)
    assert _balances(model, O2) == (4, {"CELL": 2 * REWARD}, 0)
    # Canonical applied beats reverted; a canonical rejection beats an applied-then-reverted inclusion.
    assert _receipt(model, tx[2]) == ("applied", "", 2, 0, A2)
    assert _receipt(model, tx[3]) == ("applied", "", 4, 0, A4)
    assert _receipt(model, tx[4]) == ("rejected", "bad_nonce", 3, 1, A3)
    assert [(t["tx_id"], t["status"]) for t in model.transactions("alpha")] == [
        (tx[3], "applied"), (tx[4], "rejected"), (tx[5], "applied"), (tx[2], "applied"), (tx[1], "applied"),
    ]
    stats = model.stats("alpha", 10)
    assert (stats["total_blocks"], stats["txs_applied"], stats["txs_rejected"]) == (5, 4, 1)
    assert stats["volume"] == [{"asset": "CELL", "amount": 117 * CELL}]
    assert [(r["position"], r["depth"]) for r in model.reorgs("alpha", 10)] == [(11, 2), (6, 1)]


# ------------------------------------------------------------- a finality reorg to a shorter branch


def test_finality_reorg_to_a_shorter_branch_then_a_block(at: Any, history: dict[str, Any]) -> None:
    model = at(24)
    tx = history["tx"]
    head = model.head("alpha")
    assert head is not None and (head["height"], head["hash"], head["finalized_height"], head["finalized_hash"]) == (
        3, D3, 2, D2
    )
    assert (head["tip"]["status"], head["finalized"]["status"]) == ("canonical", "finalized")
    assert [b["hash"] for b in model.blocks("alpha", 10)] == [D3, D2, A1, G]
    assert [b["status"] for b in model.blocks("alpha", 10)] == ["canonical", "finalized", "finalized", "finalized"]
    statuses = {h: model.block("alpha", hash=h)["status"] for h in (A2, A3, A4, B2, B3)}  # type: ignore[index]
    assert set(statuses.values()) == {"orphaned"}
    assert model.block("alpha", height=4) is None
    expected = {
        A: [(0, 1_000 * CELL, 0), (1, 900 * CELL - FEE, 1), (2, 893 * CELL - FEE, 2), (3, 893 * CELL - FEE, 2)],
        B: [(0, 500 * CELL, 0), (1, 600 * CELL, 0), (2, 607 * CELL, 0), (3, 604 * CELL, 1)],
        C: [(0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 3 * CELL, 0)],
        O1: [(0, 0, 0), (1, REWARD + FEE, 0), (2, REWARD + FEE, 0), (3, 2 * REWARD + FEE, 0)],
        O2: [(0, 0, 0), (1, 0, 0), (2, REWARD, 0), (3, REWARD, 0)],
    }
    for address, rows in expected.items():
        for height, cell, nonce in rows:
            assert _balances(model, address, height) == (height, {"CELL": cell} if cell else {}, nonce), (
                address, height,
            )
    assert _balances(model, A, 4) == _balances(model, A, 3)  # above the head reads the head
    # Every inclusion of tx3, tx4 and tx5 is reverted now: the most recent revert answers, reason kept.
    assert _receipt(model, tx[1]) == ("applied", "", 1, 0, A1)
    assert _receipt(model, tx[2]) == ("reverted", "", 2, 0, A2)
    assert _receipt(model, tx[3]) == ("reverted", "", 4, 0, A4)
    assert _receipt(model, tx[4]) == ("reverted", "bad_nonce", 3, 1, A3)
    assert _receipt(model, tx[5]) == ("reverted", "", 3, 0, A3)
    assert _receipt(model, tx[6]) == ("applied", "", 2, 0, D2)
    assert _receipt(model, tx[7]) == ("applied", "", 3, 0, D3)
    assert [t["tx_id"] for t in model.transactions("alpha")] == [tx[7], tx[6], tx[1]]
    assert [t["tx_id"] for t in model.transactions("alpha", address=A)] == [tx[6], tx[1]]
    assert [t["tx_id"] for t in model.transactions("alpha", address=C)] == [tx[7]]
    stats = model.stats("alpha", 10)
    assert (stats["total_blocks"], stats["txs_applied"], stats["txs_rejected"]) == (4, 3, 0)
    assert stats["volume"] == [{"asset": "CELL", "amount": 110 * CELL}]
    assert stats["fees"] == [{"asset": "CELL", "amount": FEE}]
    # Genesis allocations and stakes, and the rewards of a1, d2, d3: reverted rewards are unminted.
    assert stats["supply"] == [{"asset": "CELL", "amount": 1_530 * CELL + 3 * REWARD}]
    assert (stats["last_block_height"], stats["last_block_timestamp_ms"], stats["window_blocks"]) == (3, 1_005_000, 4)
    reorgs = model.reorgs("alpha", 2)
    assert reorgs[0] == {
        "chain_id": "alpha", "position": 18, "cause": "finality", "depth": 3, "height": 1, "ancestor_hash": A1,
        "old_tip": {"height": 4, "hash": A4}, "new_tip": {"height": 2, "hash": D2}, "reverted": [A4, A3, A2],
        "applied": [D2],
    }
    assert [r["position"] for r in reorgs] == [18, 11]
    assert [r["position"] for r in model.reorgs("alpha", 2, before_position=11)] == [6]
    assert model.reorgs("alpha", 2, before_position=6) == [] and model.reorgs("nope", 2) == []


def test_reads_at_the_finalized_head(at: Any, history: dict[str, Any]) -> None:
    model = at(24)
    tx = history["tx"]
    assert _balances(model, A, finality=FINAL) == (2, {"CELL": 893 * CELL - FEE}, 2)
    assert _balances(model, B, 3, finality=FINAL) == (2, {"CELL": 607 * CELL}, 0)  # clamped to the final head
    assert [b["hash"] for b in model.blocks("alpha", 10, finality=FINAL)] == [D2, A1, G]
    assert [t["tx_id"] for t in model.transactions("alpha", finality=FINAL)] == [tx[6], tx[1]]
    assert model.block("alpha", finality=FINAL)["hash"] == D2  # type: ignore[index]
    assert model.block("alpha")["hash"] == D3  # type: ignore[index]
    assert model.block("alpha", height=3, finality=FINAL) is None
    assert model.block("alpha", hash=D3, finality=FINAL) is None  # not final yet
    assert model.block("alpha", hash=A1, finality=FINAL)["status"] == "finalized"  # type: ignore[index]
    assert model.block("alpha", hash=A2, finality=FINAL) is None  # orphaned
    stats = model.stats("alpha", 10, finality=FINAL)
    assert (stats["total_blocks"], stats["txs_applied"], stats["last_block_height"]) == (3, 2, 2)
    assert stats["last_block_timestamp_ms"] == 1_002_700
    with pytest.raises(ValueError, match="finality"):
        model.account("alpha", A, finality="safe")


def test_in_the_middle_of_a_reorganization_the_head_is_the_ancestor(at: Any, history: dict[str, Any]) -> None:
    """A batch may end between a ChainReorganized and the reverts it announces: reads stay consistent."""
    model = at(18)
    tx = history["tx"]
    head = model.head("alpha")
    assert head is not None and (head["height"], head["hash"]) == (1, A1)
    assert [b["hash"] for b in model.blocks("alpha", 10)] == [A1, G]
    assert model.block("alpha", hash=A4)["status"] == "orphaned"  # type: ignore[index]  # above the head
    assert _balances(model, A, 4) == (1, {"CELL": 900 * CELL - FEE}, 1)
    assert [t["tx_id"] for t in model.transactions("alpha")] == [tx[1]]
    assert _receipt(model, tx[3]) == ("reverted", "", 4, 0, A4)
    assert model.stats("alpha", 10)["total_blocks"] == 2


# -------------------------------------------------------- the views equal a fresh canonical projection


def _canonical_log(events: Sequence[LedgerEvent], log: Any) -> Any:
    """A fresh log of the canonical branch at the end of `events`: its genesis and a BlockApplied per block."""
    signed: dict[str, LedgerEvent] = {}
    chain: list[LedgerEvent] = []
    for e in events:
        if isinstance(e, GenesisAccepted):
            chain = [e]
        elif isinstance(e, (BlockApplied, BlockRecorded)):
            signed[e.block_hash] = e
            if isinstance(e, BlockApplied):
                chain.append(e)
        elif isinstance(e, ChainReorganized):
            del chain[e.ancestor_height + 1:]
        elif isinstance(e, BlockReapplied):
            chain.append(signed[e.block_hash])
    for height, e in enumerate(chain):
        assert getattr(e, "height", 0) == height
        payload = {k: v for k, v in e.payload().items() if k not in ("prev_hash", "schema_version")}
        log.add(GenesisAccepted if height == 0 else BlockApplied, **payload)
    return log


def _no_position(row: dict[str, Any] | None) -> Any:
    # Finality is not part of the comparison: the fresh log has no votes.
    return None if row is None else {k: v for k, v in row.items() if k not in ("position", "finalized", "status")}


def _views(model: ReadModel, tx_ids: Sequence[str]) -> dict[str, Any]:
    head = model.head("alpha")
    assert head is not None
    top = head["height"]
    stats = model.stats("alpha", 10)
    return {
        "head": (head["height"], head["hash"], head["timestamp_ms"]),
        "accounts": [_balances(model, a, h) for a in ADDRESSES for h in range(top + 1)],
        "blocks": [_no_position(b) for b in model.blocks("alpha", 50)],
        "by_height": [_no_position(model.block("alpha", height=h)) for h in range(top + 2)],
        "transactions": model.transactions("alpha", first=50),
        "by_address": [model.transactions("alpha", address=a, first=50) for a in ADDRESSES],
        "stats": {k: v for k, v in stats.items() if not k.startswith("finality_delay")},
        "receipts": {t: model.receipt(t) for t in tx_ids},
    }


def test_after_every_position_the_views_equal_a_fresh_projection_of_the_canonical_branch(
    store: ProjectionStore, history: dict[str, Any], chdb_dsn: str, event_log_class: Any
) -> None:
    events, tx_ids = history["events"], list(history["tx"].values())
    fresh = ProjectionStore(chdb_dsn, database=f"test_fresh_{uuid.uuid4().hex[:12]}")
    expected: dict[tuple[str, ...], dict[str, Any]] = {}  # the fresh views of each canonical branch seen
    store.drop()
    store.apply_ddl()
    try:
        for position in range(1, len(events) + 1):
            write_batch(store, events, position - 1, position)  # one event per batch: every position is visible
            canonical = _canonical_log(events[:position], event_log_class()).events
            branch = tuple(e.block_hash for e in canonical)
            if branch not in expected:
                fresh.drop()
                fresh.apply_ddl()
                write_batch(fresh, canonical, 0, len(canonical))
                expected[branch] = _views(ReadModel(fresh), tx_ids)
            mine, theirs = _views(ReadModel(store), tx_ids), dict(expected[branch])
            mine_receipts, their_receipts = mine.pop("receipts"), theirs.pop("receipts")
            assert mine == theirs, f"position {position}"
            for t in tx_ids:
                # A canonical tx has its canonical receipt; any other is reverted, or absent if never canonical.
                if their_receipts[t] is not None:
                    assert mine_receipts[t] == their_receipts[t], (position, t)
                else:
                    assert mine_receipts[t] is None or mine_receipts[t]["status"] == "reverted", (position, t)
        assert len(expected) == 9  # every branch the history passes through, down and up again
    finally:
        fresh.drop()
        fresh.close()
