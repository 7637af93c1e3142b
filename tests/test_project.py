"""project(): literal events in, literal rows out; no engine."""

from __future__ import annotations

from typing import Any

import pytest

from projections.project import COLUMNS, NONCE_KEY, project, project_error
from schemas.canonical import EMPTY_ROOT, ZERO_HASH, tx_id
from schemas.events import (
    LOG_ID,
    BlockApplied,
    BlockFinalized,
    BlockReapplied,
    BlockRecorded,
    BlockReverted,
    ChainReorganized,
    GenesisAccepted,
    VoteAccepted,
    block_summary,
)

A, B, C, OP = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40, "0x" + "0" * 39 + "1"
G, H1 = "1" * 64, "2" * 64
ENVELOPE: dict[str, Any] = {"originator_id": LOG_ID, "prev_hash": ZERO_HASH, "schema_version": 1}


def _genesis() -> GenesisAccepted:
    return GenesisAccepted(
        originator_version=1, timestamp=GenesisAccepted.create_timestamp(), chain_id="alpha", block_hash=G,
        genesis={}, params={"min_stake": 10}, timestamp_ms=1_000, allocations=[[A, 700], [B, 300], [C, 0]],
        validators=[{"node_id": "n1", "operator": OP, "stake": 2**62}, {"node_id": "n2", "operator": OP,
                                                                        "stake": 2**62}],
        relayers=[], **ENVELOPE,
    )


def test_genesis_rows() -> None:
    rows = project(1, _genesis())
    # The validators family's rows (tests/test_validator_views.py has the rest): bonded stakes beyond 2**63 too.
    assert rows.pop("validator_totals") == [("alpha", 0, 2, 0, 0, 2**63, 0, 0, 1)]
    assert [r[:4] for r in rows.pop("validator_states")] == [("alpha", "n1", 0, 1), ("alpha", "n2", 0, 1)]
    assert [r[1:5] for r in rows.pop("validator_events")] == [("n1", 0, 0, "enrolled"), ("n2", 0, 2, "enrolled")]
    assert rows == {
        "chains": [("alpha", G, 1_000, '{"min_stake":10}', 1)],
        "blocks": [("alpha", 0, G, ZERO_HASH, "", "", 1_000, EMPTY_ROOT, 0, 0, 0, 0, 0, 1, 1)],
        "balance_deltas": [("alpha", A, "CELL", 0, 700, 1), ("alpha", B, "CELL", 0, 300, 1)],
        # Stakes are minted (bonded); the total passes 2**63, which is why supply columns are Int128.
        "asset_flows": [("alpha", 0, "CELL", 1_000 + 2**63, 0, 0, 0, 1)],
        "finality": [("alpha", 0, G, 0, 1_000, 2**63, 2**63, 1)],
        "chain_head": [("alpha", "head", 0, G, 1_000, 1), ("alpha", "finalized", 0, G, 1_000, 1)],
    }


def _transfer(sender: str, to: str, amount: int, fee: int, nonce: int, asset: str = "CELL") -> dict[str, Any]:
    return {"kind": "transfer", "chain_id": "alpha", "signer": sender, "key": {}, "from": sender, "to": to,
            "asset": asset, "amount": amount, "fee": fee, "nonce": nonce, "sig": ""}


def _block_event(cls: type[BlockApplied] | type[BlockRecorded] = BlockApplied) -> BlockApplied | BlockRecorded:
    """Block 1 of alpha: A->B applied, B->C rejected, A->A (self-transfer) applied."""
    t1, t2, t3 = _transfer(A, B, 100, 5, 0), _transfer(B, C, 10**9, 0, 0), _transfer(A, A, 7, 1, 1)
    return cls(
        originator_version=2, timestamp=cls.create_timestamp(), chain_id="alpha", block_hash=H1,
        height=1, parent=G, proposer="n1", operator=OP, timestamp_ms=3_000,
        block={"txs": [t1, t2, t3], "tx_root": "f" * 64}, tx_ids=[tx_id(t) for t in (t1, t2, t3)],
        receipts=[["applied", ""], ["rejected", "insufficient_funds"], ["applied", ""]],
        effects={
            "balances": [[A, "CELL", -106], [B, "CELL", 100], [OP, "CELL", 2_000_006]],
            "nonces": [[A, 0, 2]], "reward": 2_000_000, "fees": 6, "minted": 2_000_000, "burned": 0,
            "releases": [], "volume": [["CELL", 107]],
        },
        **ENVELOPE,
    )


def _summary_event(cls: type[BlockReverted] | type[BlockReapplied], version: int) -> BlockReverted | BlockReapplied:
    """The summary event of block 1 (what the write side emits when it reverts or reapplies it)."""
    return cls(originator_version=version, timestamp=cls.create_timestamp(), **ENVELOPE,
               **{k: v for k, v in block_summary(_block_event()).items()})


def test_block_rows() -> None:
    event = _block_event()
    ids = event.tx_ids
    rows = project(2, event)
    assert rows["blocks"] == [("alpha", 1, H1, G, "n1", OP, 3_000, "f" * 64, 3, 2, 1, 2_000_000, 6, 1, 2)]
    tx_fields = [
        (ids[0], "transfer", A, A, B, "CELL", 100, 5, 0, "applied", "", 2),
        (ids[1], "transfer", B, B, C, "CELL", 10**9, 0, 0, "rejected", "insufficient_funds", 2),
        (ids[2], "transfer", A, A, A, "CELL", 7, 1, 1, "applied", "", 2),
    ]
    assert rows["transactions"] == [("alpha", 1, i, H1, *fields) for i, fields in enumerate(tx_fields)]
    assert rows["receipts"] == [
        (ids[0], "alpha", 1, 0, H1, "applied", "", 2),
        (ids[1], "alpha", 1, 1, H1, "rejected", "insufficient_funds", 2),
        (ids[2], "alpha", 1, 2, H1, "applied", "", 2),
    ]
    # A copy of the tx row per distinct party: a self-transfer touches one account.
    assert rows["account_txs"] == [
        ("alpha", A, 1, 0, H1, *tx_fields[0]), ("alpha", B, 1, 0, H1, *tx_fields[0]),
        ("alpha", B, 1, 1, H1, *tx_fields[1]), ("alpha", C, 1, 1, H1, *tx_fields[1]),
        ("alpha", A, 1, 2, H1, *tx_fields[2]),
    ]
    # The nonce rides along as a delta under NONCE_KEY (0 -> 2 in this block).
    assert rows["balance_deltas"] == [
        ("alpha", A, "CELL", 1, -106, 2), ("alpha", B, "CELL", 1, 100, 2), ("alpha", OP, "CELL", 1, 2_000_006, 2),
        ("alpha", A, NONCE_KEY, 1, 2, 2),
    ]
    assert rows["asset_flows"] == [("alpha", 1, "CELL", 2_000_000, 0, 107, 6, 2)]
    assert rows["chain_head"] == [("alpha", "head", 1, H1, 3_000, 2)]


def test_block_volume_of_other_assets_has_its_own_rows() -> None:
    event = BlockApplied(
        originator_version=2, timestamp=BlockApplied.create_timestamp(), chain_id="alpha", block_hash=H1,
        height=1, parent=G, proposer="n1", operator=OP, timestamp_ms=3_000, block={"txs": [], "tx_root": ""},
        tx_ids=[], receipts=[],
        effects={"balances": [], "nonces": [], "reward": 0, "fees": 0, "minted": 0, "burned": 0, "releases": [],
                 "volume": [["USDQ", 5], ["BTCQ", 9]]},
        **ENVELOPE,
    )
    assert project(2, event)["asset_flows"] == [
        ("alpha", 1, "CELL", 0, 0, 0, 0, 2), ("alpha", 1, "BTCQ", 0, 0, 9, 0, 2), ("alpha", 1, "USDQ", 0, 0, 5, 0, 2),
    ]


def test_recorded_side_block_is_a_non_canonical_block_row_and_nothing_else() -> None:
    # Blocks that were never canonical have no receipts, no txs, and change no balance.
    assert project(5, _block_event(BlockRecorded)) == {
        "blocks": [("alpha", 1, H1, G, "n1", OP, 3_000, "f" * 64, 3, 2, 1, 2_000_000, 6, 0, 5)],
    }


def test_reverted_block_rows_are_the_applied_rows_negated_and_marked_reverted() -> None:
    applied, reverted = project(2, _block_event()), project(7, _summary_event(BlockReverted, 7))
    assert set(reverted) == set(applied) - {"chain_head"}  # the reorganization already moved the head down
    assert reverted["blocks"] == [("alpha", 1, H1, G, "n1", OP, 3_000, "f" * 64, 3, 2, 1, 2_000_000, 6, 0, 7)]
    for table, status_column in (("transactions", 13), ("receipts", 5), ("account_txs", 14)):
        expected = [(*row[:status_column], "reverted", *row[status_column + 1:-1], 7) for row in applied[table]]
        assert reverted[table] == expected, table
    # Original reasons stay: the rejected tx is reverted with its reason.
    assert [r[5:7] for r in reverted["receipts"]] == [("reverted", ""), ("reverted", "insufficient_funds"),
                                                      ("reverted", "")]
    assert reverted["balance_deltas"] == [(*row[:4], -row[4], 7) for row in applied["balance_deltas"]]
    assert reverted["balance_deltas"][-1] == ("alpha", A, NONCE_KEY, 1, -2, 7)  # the nonce goes back 2 -> 0
    assert reverted["asset_flows"] == [("alpha", 1, "CELL", -2_000_000, 0, -107, -6, 7)]


def test_reapplied_block_rows_are_the_applied_rows() -> None:
    assert project(9, _summary_event(BlockReapplied, 9)) == project(9, _block_event())


def test_reorganized_moves_the_head_to_the_ancestor_and_records_the_reorg() -> None:
    event = ChainReorganized(
        originator_version=6, timestamp=ChainReorganized.create_timestamp(), chain_id="alpha",
        cause="longer_branch", ancestor_height=1, ancestor_hash=H1, ancestor_timestamp_ms=3_000,
        old_tip=[3, "c" * 64], new_tip=[4, "d" * 64], depth=2, reverted=[[3, "c" * 64], [2, "b" * 64]],
        applied=[[2, "e" * 64], [3, "f" * 64], [4, "d" * 64]], **ENVELOPE,
    )
    assert project(6, event) == {
        "reorgs": [("alpha", "longer_branch", 2, 1, H1, 3, "c" * 64, 4, "d" * 64, ["c" * 64, "b" * 64],
                    ["e" * 64, "f" * 64, "d" * 64], 6)],
        "chain_head": [("alpha", "head", 1, H1, 3_000, 6)],
    }


def test_vote_and_finality_rows() -> None:
    vote = VoteAccepted(
        originator_version=3, timestamp=VoteAccepted.create_timestamp(), chain_id="alpha", node_id="n2",
        height=1, block_hash=H1, vote={}, **ENVELOPE,
    )
    assert project(3, vote) == {"votes": [("alpha", 1, H1, "n2", 3)]}
    final = BlockFinalized(
        originator_version=4, timestamp=BlockFinalized.create_timestamp(), chain_id="alpha", block_hash=H1,
        height=2, voting_stake=20, total_stake=30, finalized=[[1, G], [2, H1]], head_height=3,
        head_timestamp_ms=9_000, **ENVELOPE,
    )
    assert project(4, final) == {
        "finality": [("alpha", 1, G, 3, 9_000, 20, 30, 4), ("alpha", 2, H1, 3, 9_000, 20, 30, 4)],
        "chain_head": [("alpha", "finalized", 2, H1, 0, 4)],
    }


def test_rows_match_columns_and_name_their_position() -> None:
    for event in (_genesis(), _block_event(), _block_event(BlockRecorded), _summary_event(BlockReverted, 3)):
        for table, rows in project(9, event).items():
            for row in rows:
                assert len(row) == len(COLUMNS[table]) and row[-1] == 9 and COLUMNS[table][-1] == "position"


def test_deterministic() -> None:
    assert project(1, _genesis()) == project(1, _genesis())


def test_unknown_kind_raises_and_errors_are_rows() -> None:
    class Other(VoteAccepted):
        KIND = "validator_enrolled"

    event = Other(originator_version=5, timestamp=Other.create_timestamp(), chain_id="alpha", node_id="n",
                  height=1, block_hash=H1, vote={}, **ENVELOPE)
    with pytest.raises(KeyError):
        project(5, event)
    assert project_error(5, "t", "x" * 5_000, "alpha") == {"projection_errors": [("alpha", "t", "x" * 2_000, 5)]}
