"""writes/service.py: the log is the state (reload), hash-chained, and a command's events are saved together."""

from __future__ import annotations

import contextlib
import copy
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import PersistenceError

from schemas import build
from schemas.canonical import ZERO_HASH, block_hash, genesis_hash
from schemas.events import SCHEMA_VERSION, BlockApplied, BlockFinalized, GenesisAccepted, LedgerEvent, VoteAccepted
from tests.chain import (
    ALICE,
    BOB,
    CAROL,
    CHAIN_ID,
    GENESIS_MS,
    Chain,
    genesis_command,
    keypair,
    open_service,
    validators,
)
from writes.service import LedgerService

MakeLedger = Callable[..., Chain]


def events_of(service: LedgerService) -> list[LedgerEvent]:
    out = []
    for notification in service.notifications():
        event = service.app.mapper.to_domain_event(notification)
        assert isinstance(event, LedgerEvent)
        out.append(event)
    return out


def history(ledger: Chain) -> None:
    """A little of everything: applied and rejected txs, kept votes, finality, a second chain."""
    ledger.apply([ledger.transfer(ALICE, BOB.address, 5, fee=1), ledger.transfer(BOB, CAROL.address, 10**12)])
    b2 = ledger.apply([ledger.transfer(CAROL, ALICE.address, 7, fee=2)], proposer=2)["hash"]
    ledger.finalize(b2, 2)
    ledger.apply([ledger.transfer(ALICE, ALICE.address, 1, fee=1)], proposer=1)
    ledger.submit(ledger.vote(0, ledger.state.tip.hash, 3))
    ledger.submit(ledger.vote(1, "ee" * 32, 9))  # kept for a block not seen yet
    ledger.submit(genesis_command("second-chain"))


def test_reload_gives_the_same_state_and_last_hash(ledger: Chain) -> None:
    history(ledger)
    service = ledger.service
    before = copy.deepcopy(service.ledger)
    position = service.max_position()
    data_dir = service.settings.data_dir
    service.close()
    reloaded = open_service(data_dir)
    try:
        assert reloaded.max_position() == position
        assert reloaded.ledger.last_hash == before.last_hash != ZERO_HASH
        assert reloaded.ledger.seq == before.seq == position
        assert reloaded.ledger == before
        # ...and it carries on from there, the chain of hashes unbroken.
        again = Chain(reloaded, ledger.genesis, ledger.vals, resume=True)
        assert again.apply([again.transfer(ALICE, BOB.address, 1)])["height"] == 4
        events = events_of(reloaded)
        assert events[-1].prev_hash == before.last_hash
    finally:
        reloaded.close()


def test_every_event_records_the_hash_of_the_one_before(ledger: Chain) -> None:
    history(ledger)
    events = events_of(ledger.service)
    assert len(events) == ledger.service.max_position()
    kinds = {type(e) for e in events}
    assert kinds == {GenesisAccepted, BlockApplied, VoteAccepted, BlockFinalized}
    prev = ZERO_HASH
    for position, event in enumerate(events, start=1):
        assert event.originator_version == position
        assert event.schema_version == SCHEMA_VERSION
        assert event.prev_hash == prev
        prev = event.hash()
    assert prev == ledger.service.ledger.last_hash


def test_the_event_hash_covers_the_payload(ledger: Chain) -> None:
    ledger.apply([ledger.transfer(ALICE, BOB.address, 5)])
    event = events_of(ledger.service)[-1]
    assert isinstance(event, BlockApplied)
    tampered = copy.copy(event)
    object.__setattr__(tampered, "receipts", [["rejected", "bad_nonce"]])
    assert tampered.hash() != event.hash()


def test_a_block_records_its_effects(ledger: Chain) -> None:
    tx = ledger.transfer(ALICE, BOB.address, 5, fee=2)
    ledger.apply([tx, ledger.transfer(BOB, ALICE.address, 1, nonce=4)], proposer=1)
    event = events_of(ledger.service)[-1]
    assert isinstance(event, BlockApplied)
    op1 = ledger.vals[1].operator.address
    assert event.receipts == [["applied", ""], ["rejected", "bad_nonce"]]
    assert event.operator == op1 and event.proposer == "node-1"
    fx = event.effects
    assert sorted(map(tuple, fx["balances"])) == sorted(
        [(ALICE.address, "CELL", -7), (BOB.address, "CELL", 5), (op1, "CELL", 2_000_002)]
    )
    assert fx["nonces"] == [[ALICE.address, 0, 1]]
    assert (fx["reward"], fx["fees"], fx["minted"], fx["burned"], fx["releases"]) == (2_000_000, 2, 2_000_000, 0, [])
    assert fx["volume"] == [["CELL", 5]]


@contextlib.contextmanager
def no_finalized_events(dbfile: Path) -> Iterator[None]:
    """A trigger that makes the event store refuse any BlockFinalized row: a crash between two inserts."""
    con = sqlite3.connect(str(dbfile))
    con.execute(
        "CREATE TRIGGER refuse_finality BEFORE INSERT ON stored_events "
        "WHEN NEW.topic LIKE '%BlockFinalized' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    con.commit()
    try:
        yield
    finally:
        con.execute("DROP TRIGGER refuse_finality")
        con.commit()
        con.close()


def test_a_block_and_the_finality_it_triggers_are_saved_together(ledger: Chain) -> None:
    block = ledger.block([ledger.transfer(ALICE, BOB.address, 5)])
    for voter in range(3):
        ledger.submit(ledger.vote(voter, block_hash(block), 1))  # kept: the block will be final on arrival
    service = ledger.service
    position, before = ledger.snapshot()
    dbfile = service.settings.sqlite_path
    with no_finalized_events(dbfile), pytest.raises(PersistenceError):
        service.submit(block)
    # Neither the block nor its finality: not in the log, not in memory.
    assert service.max_position() == position
    assert service.ledger == before
    assert [type(e) for e in events_of(service)][-1] is VoteAccepted
    result = service.submit(block)
    assert result["status"] == "accepted" and result["finalized_height"] == 1
    assert [type(e) for e in events_of(service)][-2:] == [BlockApplied, BlockFinalized]
    assert service.max_position() == position + 2


def test_a_failed_save_of_a_vote_changes_nothing(ledger: Chain) -> None:
    b1 = ledger.apply()["hash"]
    ledger.submit(ledger.vote(0, b1, 1))
    ledger.submit(ledger.vote(1, b1, 1))
    position, before = ledger.snapshot()
    with no_finalized_events(ledger.service.settings.sqlite_path), pytest.raises(PersistenceError):
        ledger.submit(ledger.vote(2, b1, 1))  # VoteAccepted + BlockFinalized
    assert ledger.service.max_position() == position and ledger.service.ledger == before
    assert ledger.submit(ledger.vote(2, b1, 1))["finalized_height"] == 1


def test_rejected_results_name_the_kind_and_reason(ledger: Chain) -> None:
    result = ledger.reject({**ledger.block(), "height": 5}, "bad_height")
    assert set(result) == {"status", "kind", "reason", "message"} and result["kind"] == "block"
    assert ledger.reject([1, 2], "malformed_command")["kind"] is None
    assert ledger.reject({"kind": 5}, "malformed_command")["kind"] is None
    assert ledger.reject({"kind": "mint"}, "unknown_command")["kind"] == "mint"
    assert ledger.reject({**ledger.vote(0, ledger.genesis_hash, 0), "sig": "0"}, "malformed_vote")["kind"] == "vote"


def test_submit_many_answers_each_command_in_order(ledger: Chain) -> None:
    b1 = ledger.block()
    b2 = {**b1, "height": 2}
    results = ledger.service.submit_many([b1, b2, ledger.vote(0, block_hash(b1), 1), "nonsense"])
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted", "rejected"]
    assert [r.get("reason") for r in results] == [None, "bad_height", None, "malformed_command"]


def _big_blocks() -> list[dict[str, Any]]:
    """A genesis, a block of 40 transfers (some rejected), and the same block with tx 37 forged.

    Built once: ML-DSA signing is randomised, so the two services must see the very same commands."""
    vals = validators()
    genesis = genesis_command(vals=vals)
    senders = [ALICE, BOB, CAROL, keypair("nobody")]
    txs = [build.transfer(CHAIN_ID, senders[i % 4], BOB.address, 1 + i, fee=i % 3, nonce=i // 4) for i in range(40)]
    forged = [*txs[:37], {**txs[37], "amount": 99}, *txs[38:]]
    parent, key = genesis_hash(genesis), vals[0].key
    return [genesis, *(build.block(CHAIN_ID, 1, parent, "node-0", key, GENESIS_MS + 1, t) for t in (forged, txs))]


def _results(data_dir: Path, workers: int, commands: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    service = open_service(data_dir, workers=workers)
    try:
        return service.submit_many(commands), service.ledger.last_hash
    finally:
        service.close()


def test_the_verifier_pool_gives_the_same_results(tmp_path: Path) -> None:
    commands = _big_blocks()
    inline = _results(tmp_path / "inline", 1, commands)
    pooled = _results(tmp_path / "pool", 2, commands)
    assert pooled == inline
    (_, forged, applied), _ = inline
    assert forged["reason"] == "bad_tx_signature" and "tx 37" in forged["message"]
    assert applied["status"] == "accepted" and len(applied["receipts"]) == 40
    assert {r["status"] for r in applied["receipts"]} == {"applied", "rejected"}


def test_submit_many_prefetch_answers_as_one_by_one(tmp_path: Path) -> None:
    """submit_many starts verifying the next block early: malformed next blocks must not disturb it."""
    genesis, forged, good = _big_blocks()
    keyless = {**good, "txs": [{k: v for k, v in tx.items() if k != "key"} for tx in good["txs"]]}
    not_objects = {**good, "txs": ["tx"] * 40}
    commands = [genesis, keyless, not_objects, forged, good, good]
    batched = _results(tmp_path / "batched", 2, commands)
    service = open_service(tmp_path / "single", workers=2)
    try:
        single = ([service.submit(c) for c in commands], service.ledger.last_hash)
    finally:
        service.close()
    assert batched == single
    reasons = [r.get("reason") for r in batched[0]]
    assert reasons == [None, "malformed_tx", "malformed_tx", "bad_tx_signature", None, "duplicate_block"]
