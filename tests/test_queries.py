"""ReadModel over a small hand-built history whose every figure is computed by hand below.

alpha: validators n1 (operator O1, 10 CELL) and n2 (O2, 20 CELL); A has 1,000 CELL and B 500 CELL at genesis.
  pos 1  genesis alpha                    t=1_000_000
  pos 2  genesis beta (A: 7)              t=1_500_000
  pos 3  block 1 by n1 t=1_002_000: t1 A->B 100 CELL fee 1000 applied; t2 B->C 600 CELL rejected (funds)
  pos 4-5 votes n1, n2 on block 1; pos 6 block 1 final (head 1)
  pos 7  block 2 by n2 t=1_004_000: empty
  pos 8  block 3 by n1 t=1_007_000: t3 B->A 50 CELL fee 500 applied; t1 again rejected (bad_nonce);
                                    t2 again rejected (bad_nonce); t4 A->C 1 micro applied
  pos 9  block 4 by n2 t=1_010_000: empty
  pos 10 blocks 2 and 3 final (head 4 at t=1_010_000)
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from projections.project import project
from projections.queries import ReadModel
from projections.store import ProjectionStore
from schemas.canonical import tx_id, tx_root

A, B, C = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40
O1, O2 = "0x" + "1" * 40, "0x" + "2" * 40
CELL = 1_000_000
REWARD = 2 * CELL


def _hash(position: int) -> str:
    return f"{position:064x}"  # EventLog names blocks after their position


G, GB, H1, H2, H3, H4 = _hash(1), _hash(2), _hash(3), _hash(7), _hash(8), _hash(9)


def _history(log: Any, transfer: Any) -> dict[str, Any]:
    t1 = transfer("alpha", A, B, 100 * CELL, fee=1_000, nonce=0)
    t2 = transfer("alpha", B, C, 600 * CELL, fee=10, nonce=0)
    t3 = transfer("alpha", B, A, 50 * CELL, fee=500, nonce=0)
    t4 = transfer("alpha", A, C, 1, nonce=1)
    validators = [("n1", O1, 10 * CELL), ("n2", O2, 20 * CELL)]
    log.genesis("alpha", 1_000_000, [(A, 1_000 * CELL), (B, 500 * CELL)], validators)
    log.genesis("beta", 1_500_000, [(A, 7)], [("n9", O1, 10 * CELL)])
    log.block(
        "alpha", 1, G, "n1", O1, 1_002_000, [t1, t2], [("applied", ""), ("rejected", "insufficient_funds")],
        balances=[(A, "CELL", -100 * CELL - 1_000), (B, "CELL", 100 * CELL), (O1, "CELL", REWARD + 1_000)],
        nonces=[(A, 0, 1)], fees=1_000, volume=[("CELL", 100 * CELL)],
    )
    log.vote("alpha", "n1", 1, H1)
    log.vote("alpha", "n2", 1, H1)
    log.finalized("alpha", [(1, H1)], 1, 1_002_000, 30 * CELL, 30 * CELL)
    log.block("alpha", 2, H1, "n2", O2, 1_004_000, balances=[(O2, "CELL", REWARD)])
    log.block(
        "alpha", 3, H2, "n1", O1, 1_007_000, [t3, t1, t2, t4],
        [("applied", ""), ("rejected", "bad_nonce"), ("rejected", "bad_nonce"), ("applied", "")],
        balances=[(B, "CELL", -50 * CELL - 500), (A, "CELL", 50 * CELL - 1), (C, "CELL", 1),
                  (O1, "CELL", REWARD + 500)],
        nonces=[(B, 0, 1), (A, 1, 2)], fees=500, volume=[("CELL", 50 * CELL + 1)],
    )
    log.block("alpha", 4, H3, "n2", O2, 1_010_000, balances=[(O2, "CELL", REWARD)])
    log.finalized("alpha", [(2, H2), (3, H3)], 4, 1_010_000, 30 * CELL, 30 * CELL)
    assert [e.block_hash for e in log.events if e.KIND == "block_applied"] == [H1, H2, H3, H4]
    return {"events": log.events, "t1": tx_id(t1), "t2": tx_id(t2), "t3": tx_id(t3), "t4": tx_id(t4)}


@pytest.fixture(scope="module")
def world(chdb_dsn: str, event_log_class: Any, make_transfer: Any) -> Iterator[dict[str, Any]]:
    """The history projected once into its own database; every test here only reads."""
    history = _history(event_log_class(), make_transfer)
    store = ProjectionStore(chdb_dsn, database=f"test_queries_{uuid.uuid4().hex[:12]}")
    rows: dict[str, list[Any]] = {}
    for position, event in enumerate(history["events"], start=1):
        for table, table_rows in project(position, event).items():
            rows.setdefault(table, []).extend(table_rows)
    store.write(rows, len(history["events"]))
    yield {**history, "model": ReadModel(store), "store": store}
    store.drop()
    store.close()


@pytest.fixture
def model(world: dict[str, Any]) -> ReadModel:
    return world["model"]


def test_chains_in_genesis_order(model: ReadModel) -> None:
    assert model.chains() == ["alpha", "beta"]
    assert model.default_chain() == "alpha"
    assert model.position() == 10


def test_head(model: ReadModel) -> None:
    head = model.head("alpha")
    assert head is not None
    tip, final = head.pop("tip"), head.pop("finalized")
    assert head == {
        "chain_id": "alpha", "height": 4, "hash": H4, "timestamp_ms": 1_010_000,
        "finalized_height": 3, "finalized_hash": H3,
    }
    assert tip == model.block("alpha", height=4) and tip["status"] == "canonical"
    assert final == model.block("alpha", height=3) and final["status"] == "finalized"
    beta = model.head("beta")
    assert beta is not None and beta["tip"] == beta["finalized"] == model.block("beta", height=0)
    assert {k: v for k, v in beta.items() if k not in ("tip", "finalized")} == {
        "chain_id": "beta", "height": 0, "hash": GB, "timestamp_ms": 1_500_000,
        "finalized_height": 0, "finalized_hash": GB,
    }
    assert model.head("nope") is None


def test_block_by_height_hash_or_head(model: ReadModel, world: dict[str, Any]) -> None:
    root = tx_root([world["t3"], world["t1"], world["t2"], world["t4"]])
    assert model.block("alpha", height=3) == {
        "chain_id": "alpha", "height": 3, "hash": H3, "parent": H2, "proposer": "n1", "operator": O1,
        "timestamp_ms": 1_007_000, "tx_root": root, "tx_count": 4, "applied_count": 2,
        "rejected_count": 2, "reward": REWARD, "fees": 500, "finalized": True, "canonical": True,
        "status": "finalized", "position": 8,
    }
    assert model.block("alpha", hash=H2)["height"] == 2  # type: ignore[index]
    assert model.block("alpha", height=2, hash=H3) is None
    assert model.block("alpha")["hash"] == H4  # type: ignore[index]
    assert model.block("alpha", height=4)["finalized"] is False  # type: ignore[index]
    assert model.block("alpha", height=4)["status"] == "canonical"  # type: ignore[index]
    assert model.block("alpha", height=9) is None
    assert model.block("beta", hash=H1) is None
    genesis = model.block("alpha", height=0)
    assert genesis is not None and genesis["hash"] == G and genesis["finalized"] and genesis["tx_count"] == 0


def test_blocks_newest_first_with_keyset_paging(model: ReadModel) -> None:
    def heights(**kw: Any) -> list[int]:
        return [b["height"] for b in model.blocks("alpha", **kw)]

    assert heights(first=2) == [4, 3]
    assert heights(first=2, before_height=3) == [2, 1]
    assert heights(first=2, before_height=1) == [0]
    assert heights(first=2, before_height=0) == []
    assert heights(first=10, proposer="n1") == [3, 1]
    assert heights(first=0) == []
    assert [b["finalized"] for b in model.blocks("alpha", first=10)] == [False, True, True, True, True]


@pytest.mark.parametrize(
    ("address", "height", "balances", "nonce"),
    [
        (A, 0, {"CELL": 1_000 * CELL}, 0),
        (A, 1, {"CELL": 900 * CELL - 1_000}, 1),
        (A, 2, {"CELL": 900 * CELL - 1_000}, 1),
        (A, 3, {"CELL": 950 * CELL - 1_001}, 2),
        (B, 1, {"CELL": 600 * CELL}, 0),
        (B, 3, {"CELL": 550 * CELL - 500}, 1),
        (C, 1, {}, 0),
        (C, 3, {"CELL": 1}, 0),
        (O1, 3, {"CELL": 2 * REWARD + 1_500}, 0),
        (O2, 4, {"CELL": 2 * REWARD}, 0),
    ],
)
def test_account_at_heights(model: ReadModel, address: str, height: int, balances: dict[str, int], nonce: int) -> None:
    got = model.account("alpha", address, at_height=height)
    assert got == {
        "address": address, "height": height, "nonce": nonce,
        "balances": [{"asset": k, "amount": v} for k, v in sorted(balances.items())],
    }


def test_account_at_head_and_beyond_reads_the_head(model: ReadModel) -> None:
    assert model.account("alpha", A) == model.account("alpha", A, at_height=100) == model.account(
        "alpha", A, at_height=4
    )
    assert model.account("alpha", A)["height"] == 4  # type: ignore[index]
    assert model.account("beta", A) == {"address": A, "height": 0, "nonce": 0,
                                         "balances": [{"asset": "CELL", "amount": 7}]}
    assert model.account("nope", A) is None


def test_supply_invariant_at_head(model: ReadModel) -> None:
    """CELL balances + bonded stake = supply (minted - burned), checked through the read model."""
    total = sum(
        b["amount"] for who in (A, B, C, O1, O2) for b in model.account("alpha", who)["balances"]  # type: ignore[index]
    )
    supply = model.stats("alpha", 10)["supply"]
    assert supply == [{"asset": "CELL", "amount": 1_538 * CELL}]
    assert total + 30 * CELL == 1_538 * CELL


def _keys(rows: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(r["height"], r["index"]) for r in rows]


def test_transactions_newest_first_with_keyset_paging(model: ReadModel, world: dict[str, Any]) -> None:
    everything = model.transactions("alpha", first=10)
    assert _keys(everything) == [(3, 3), (3, 2), (3, 1), (3, 0), (1, 1), (1, 0)]
    assert _keys(model.transactions("alpha", first=4)) == [(3, 3), (3, 2), (3, 1), (3, 0)]
    assert _keys(model.transactions("alpha", first=4, before=(3, 0))) == [(1, 1), (1, 0)]
    assert _keys(model.transactions("alpha", first=4, before=(1, 0))) == []
    assert everything[-1] == {
        "tx_id": world["t1"], "height": 1, "index": 0, "block_hash": H1, "kind": "transfer", "signer": A,
        "from": A, "to": B, "asset": "CELL", "amount": 100 * CELL, "fee": 1_000, "nonce": 0, "status": "applied",
        "reason": "",
    }
    assert everything[2]["tx_id"] == world["t1"] and everything[2]["reason"] == "bad_nonce"
    assert model.transactions("beta") == []


def test_transactions_of_an_address(model: ReadModel) -> None:
    assert _keys(model.transactions("alpha", address=C)) == [(3, 3), (3, 2), (1, 1)]
    assert _keys(model.transactions("alpha", address=C, first=2)) == [(3, 3), (3, 2)]
    assert _keys(model.transactions("alpha", address=C, first=2, before=(3, 2))) == [(1, 1)]
    assert _keys(model.transactions("alpha", address=B)) == [(3, 2), (3, 1), (3, 0), (1, 1), (1, 0)]
    assert model.transactions("alpha", address=O1) == []  # the reward is no transaction


def test_receipts_follow_the_domain_rule(model: ReadModel, world: dict[str, Any]) -> None:
    # Applied at height 1 and replayed (rejected) at height 3: the applied one.
    assert model.receipt(world["t1"]) == {
        "tx_id": world["t1"], "status": "applied", "reason": "", "height": 1, "index": 0, "block_hash": H1,
        "chain_id": "alpha",
    }
    # Rejected twice: the latest one, with its own reason.
    r2 = model.receipt(world["t2"], chain_id="alpha")
    assert r2 is not None and (r2["status"], r2["reason"], r2["height"], r2["index"]) == ("rejected", "bad_nonce", 3, 2)
    assert model.receipt(world["t4"])["index"] == 3  # type: ignore[index]
    assert model.receipt(world["t1"], chain_id="beta") is None
    assert model.receipt("f" * 64) is None


def test_stats_by_hand(model: ReadModel) -> None:
    stats = model.stats("alpha", 3)
    assert stats == {
        "total_blocks": 5, "txs_applied": 3, "txs_rejected": 3,
        "volume": [{"asset": "CELL", "amount": 150 * CELL + 1}],
        "fees": [{"asset": "CELL", "amount": 1_500}],
        "supply": [{"asset": "CELL", "amount": 1_538 * CELL}],
        # Blocks 2..4: (1_010_000 - 1_004_000) / 2 intervals; 2 txs applied after the oldest, over 6 s.
        "window_blocks": 3, "rolling_block_time_ms": 3_000.0, "rolling_tps": pytest.approx(2 / 6),
        # Blocks 2 and 3 became final at head 4 (t=1_010_000): (6_000 + 3_000) / 2 ms, (2 + 1) / 2 blocks.
        "finality_delay_ms": 4_500.0, "finality_delay_blocks": 1.5,
        "last_block_height": 4, "last_block_timestamp_ms": 1_010_000,
    }


def test_stats_windows(model: ReadModel) -> None:
    wide = model.stats("alpha", 10)
    # Blocks 0..4: 10 s over 4 intervals; 3 txs applied after genesis; block 1 final at once (0 ms, 0 blocks).
    assert (wide["window_blocks"], wide["rolling_block_time_ms"], wide["rolling_tps"]) == (5, 2_500.0, 0.3)
    assert (wide["finality_delay_ms"], wide["finality_delay_blocks"]) == (3_000.0, 1.0)
    one = model.stats("alpha", 1)
    assert (one["window_blocks"], one["rolling_block_time_ms"], one["rolling_tps"]) == (1, 0.0, 0.0)
    assert one["finality_delay_ms"] is None and one["finality_delay_blocks"] is None
    beta = model.stats("beta", 5)
    assert (beta["total_blocks"], beta["supply"], beta["volume"], beta["finality_delay_ms"]) == (
        1, [{"asset": "CELL", "amount": 7 + 10 * CELL}], [], None
    )


def test_user_input_is_bound_not_spliced(model: ReadModel) -> None:
    hostile = "x' OR 1=1 --"
    assert model.account("alpha", hostile) == {"address": hostile, "height": 4, "nonce": 0, "balances": []}
    assert model.receipt(hostile) is None
    assert model.transactions(hostile) == []
    assert model.blocks("alpha", 5, proposer=hostile) == []


def test_threads_get_their_own_clients(model: ReadModel) -> None:
    answers: list[Any] = []

    def read() -> None:
        for _ in range(5):
            answers.append(model.account("alpha", A, at_height=3)["balances"])  # type: ignore[index]

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [[{"asset": "CELL", "amount": 950 * CELL - 1_001}]] * 20


def test_kept_pointers_follow_every_write(
    projection_store: ProjectionStore, event_log: Any, make_transfer: Any
) -> None:
    """The head and chain list are kept between calls only until the store writes again."""
    model, bare = ReadModel(projection_store), ReadModel(projection_store.client)

    def write(upto: int) -> None:
        rows: dict[str, list[Any]] = {}
        for position, event in enumerate(event_log.events[:upto], start=1):
            if position > projection_store.checkpoint():
                for table, table_rows in project(position, event).items():
                    rows.setdefault(table, []).extend(table_rows)
        projection_store.write(rows, upto)

    assert model.chains() == [] and model.head("alpha") is None and model.position() == 0
    event_log.genesis("alpha", 1_000, [(A, 50)], [("n1", O1, 10 * CELL)])
    event_log.block("alpha", 1, G, "n1", O1, 2_000, [make_transfer("alpha", A, B, 20)], [("applied", "")],
                    balances=[(A, "CELL", -20), (B, "CELL", 20), (O1, "CELL", REWARD)], nonces=[(A, 0, 1)])
    write(1)
    assert model.chains() == ["alpha"] and model.head("alpha")["height"] == 0  # type: ignore[index]
    assert model.account("alpha", A) == {"address": A, "height": 0, "nonce": 0,
                                         "balances": [{"asset": "CELL", "amount": 50}]}
    write(2)
    assert model.head("alpha")["height"] == 1  # type: ignore[index]
    assert model.account("alpha", A) == {"address": A, "height": 1, "nonce": 1,
                                         "balances": [{"asset": "CELL", "amount": 30}]}
    assert model.position() == 2
    for read in (lambda m: m.head("alpha"), lambda m: m.account("alpha", B), lambda m: m.stats("alpha", 5),
                 lambda m: m.blocks("alpha", 5), lambda m: m.chains()):
        assert read(model) == read(bare)
    assert model.stats("nope", 5)["last_block_height"] is None
