"""Follower over a real eventsourcing SQLite log and the real chdb engine: batches, resume, crash, poison."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from projections.project import COLUMNS, project
from projections.queries import ReadModel
from projections.store import INSERT_SETTINGS, ProjectionStore
from schemas.events import LOG_ID, VoteAccepted
from streams.follower import Follower
from tests.chain import ACCOUNTS

A, B, OP = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "0" * 40


def _history(log: Any, transfer: Callable[..., dict[str, Any]], blocks: int = 6) -> list[Any]:
    """A genesis, then per block: a transfer A->B, two votes and (every other block) a finalization."""
    log.genesis("alpha", 1_000, [(A, 10**9)], [("n1", OP, 10**7), ("n2", OP, 10**7)])
    parent = log.events[-1].block_hash
    for h in range(1, blocks + 1):
        tx = transfer("alpha", A, B, 10, fee=1, nonce=h - 1)
        block = log.block(
            "alpha", h, parent, "n1", OP, 1_000 + h * 1_000, [tx], [("applied", "")],
            balances=[(A, "CELL", -11), (B, "CELL", 10), (OP, "CELL", 2_000_001)], nonces=[(A, h - 1, h)],
            fees=1, volume=[("CELL", 10)],
        )
        parent = block.block_hash
        log.vote("alpha", "n1", h, parent)
        log.vote("alpha", "n2", h, parent)
        if h % 2 == 0:
            log.finalized("alpha", [(h - 1, block.parent), (h, parent)], h, 1_000 + h * 1_000, 2 * 10**7, 2 * 10**7)
    return list(log.events)


def _expected(events: Sequence[Any]) -> dict[str, list[tuple[Any, ...]]]:
    rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in COLUMNS}
    for position, event in enumerate(events, start=1):
        for table, table_rows in project(position, event).items():
            rows[table].extend(table_rows)
    return {table: sorted(r, key=repr) for table, r in rows.items()}


def _stored(store: ProjectionStore) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table, columns in COLUMNS.items():
        rows = store.client.query(f"SELECT {', '.join(columns)} FROM {table}").result_rows
        out[table] = sorted((tuple(r) for r in rows), key=repr)
    return out


def _save(app: Any, events: Sequence[Any]) -> None:
    for event in events:
        app.save(event)


@pytest.fixture
def history(event_log: Any, make_transfer: Callable[..., dict[str, Any]]) -> list[Any]:
    return _history(event_log, make_transfer)


def test_projects_in_bounded_batches_and_checkpoints(
    sqlite_log_app: Any, projection_store: ProjectionStore, history: list[Any]
) -> None:
    _save(sqlite_log_app, history)
    follower = Follower(sqlite_log_app, projection_store, batch_events_max=4, poll_interval_ms=10)
    assert (follower.position, follower.log_position(), follower.lag()) == (0, len(history), len(history))
    assert follower.run_once() == 4
    assert (follower.position, projection_store.checkpoint(), follower.lag()) == (4, 4, len(history) - 4)
    assert follower.run_until_caught_up() == len(history) - 4
    assert follower.run_once() == 0
    assert _stored(projection_store) == _expected(history)
    counters = follower.counters()
    assert counters["events_projected"] == len(history)
    assert counters["batches"] == -(-len(history) // 4)
    assert counters["rows_written"] == sum(len(r) for r in _expected(history).values())
    assert counters["poison_events"] == 0


def test_resume_after_stop_loses_and_doubles_nothing(
    sqlite_log_app: Any, projection_store: ProjectionStore, history: list[Any]
) -> None:
    half = len(history) // 2
    _save(sqlite_log_app, history[:half])
    first = Follower(sqlite_log_app, projection_store, batch_events_max=3)
    first.run_until_caught_up()
    assert first.position == half
    # A new process: new store object and follower on the same database, and more events meanwhile.
    _save(sqlite_log_app, history[half:])
    store = ProjectionStore(projection_store.dsn, projection_store.database)
    try:
        second = Follower(sqlite_log_app, store, batch_events_max=5)
        assert second.resume() == half
        assert second.run_until_caught_up() == len(history) - half
        assert _stored(store) == _expected(history)
    finally:
        store.close()


def test_restart_after_a_crash_mid_batch(
    sqlite_log_app: Any, projection_store: ProjectionStore, history: list[Any]
) -> None:
    _save(sqlite_log_app, history)
    Follower(sqlite_log_app, projection_store, batch_events_max=5).run_once()
    # The crash: the next batch's rows reached two tables, its checkpoint never came.
    for position in (6, 7):
        rows = project(position, history[position - 1])
        for table, table_rows in rows.items():
            if table in ("blocks", "votes", "balance_deltas"):
                projection_store.client.insert(table, table_rows, column_names=COLUMNS[table], settings=INSERT_SETTINGS)
    assert projection_store.checkpoint() == 5
    restarted = Follower(sqlite_log_app, projection_store, batch_events_max=5)
    restarted.run_until_caught_up()
    assert restarted.recovered_rows > 0
    assert _stored(projection_store) == _expected(history)


class _FailingStore(ProjectionStore):
    """A real store whose next write fails after inserting its first table (a fault injected at the sink)."""

    fail_next = False

    def write(self, rows_by_table: Mapping[str, Sequence[tuple[Any, ...]]], checkpoint_position: int) -> int:
        if self.fail_next:
            self.fail_next = False
            table = next(t for t in COLUMNS if rows_by_table.get(t))
            self.client.insert(table, list(rows_by_table[table]), column_names=COLUMNS[table], settings=INSERT_SETTINGS)
            raise ConnectionError("the store went away mid-batch")
        return super().write(rows_by_table, checkpoint_position)


def test_a_failed_write_is_retried_without_doubling(
    sqlite_log_app: Any, projection_store: ProjectionStore, history: list[Any]
) -> None:
    _save(sqlite_log_app, history)
    store = _FailingStore(projection_store.dsn, projection_store.database)
    try:
        follower = Follower(sqlite_log_app, store, batch_events_max=4)
        follower.run_once()
        store.fail_next = True
        with pytest.raises(ConnectionError):
            follower.run_once()
        assert follower.position == 4
        follower.run_until_caught_up()
        assert _stored(store) == _expected(history)
    finally:
        store.close()


def test_batches_are_bounded_by_bytes(
    sqlite_log_app: Any, projection_store: ProjectionStore, history: list[Any]
) -> None:
    _save(sqlite_log_app, history)
    sizes = [len(n.state) for n in sqlite_log_app.recorder.select_notifications(1, len(history))]
    budget = max(sizes) + 1  # room for one event of any size, never two big ones
    follower = Follower(sqlite_log_app, projection_store, batch_events_max=1_000, batch_bytes_max=budget)
    position = 0
    while n := follower.run_once():
        assert n == 1 or sum(sizes[position:position + n]) <= budget
        position += n
    assert position == len(history)
    # One byte: every event is larger, so each forms a batch of its own.
    store = ProjectionStore(projection_store.dsn, f"{projection_store.database}_b")
    try:
        tiny = Follower(sqlite_log_app, store, batch_bytes_max=1)
        assert [tiny.run_once() for _ in range(3)] == [1, 1, 1]
    finally:
        store.drop()
        store.close()
    assert _stored(projection_store) == _expected(history)


class UnknownHappened(VoteAccepted):
    KIND = "unknown_happened"


def test_poison_events_become_rows_not_a_dead_follower(
    sqlite_log_app: Any, projection_store: ProjectionStore, event_log: Any
) -> None:
    event_log.genesis("alpha", 1_000, [(A, 5)], [("n1", OP, 10**7)])
    event_log.add(UnknownHappened, chain_id="alpha", node_id="n1", height=1, block_hash="0" * 64, vote={})
    event_log.vote("alpha", "n1", 0, event_log.events[0].block_hash)
    _save(sqlite_log_app, event_log.events)
    follower = Follower(sqlite_log_app, projection_store)
    assert follower.run_once() == 3
    assert follower.counters()["poison_events"] == 1
    errors = projection_store.client.query("SELECT chain_id, topic, error, position FROM projection_errors").result_rows
    assert len(errors) == 1
    chain_id, topic, error, position = errors[0]
    assert (chain_id, position) == ("alpha", 2) and topic.endswith("UnknownHappened") and "unknown_happened" in error
    assert projection_store.counts()["votes"] == 1


def test_thread_follows_new_events_and_stops(
    sqlite_log_app: Any, projection_store: ProjectionStore, history: list[Any]
) -> None:
    _save(sqlite_log_app, history[:3])
    follower = Follower(sqlite_log_app, projection_store, batch_events_max=2, poll_interval_ms=5)
    follower.start()
    try:
        assert follower.running
        with pytest.raises(RuntimeError):
            follower.start()
        _save(sqlite_log_app, history[3:])
        deadline = time.monotonic() + 30
        while follower.lag() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert follower.lag() == 0
    finally:
        follower.stop()
    assert not follower.running
    assert _stored(projection_store) == _expected(history)
    assert ReadModel(projection_store).position() == len(history)


def test_empty_log(sqlite_log_app: Any, projection_store: ProjectionStore) -> None:
    follower = Follower(sqlite_log_app, projection_store)
    assert (follower.run_once(), follower.log_position(), follower.lag(), follower.position) == (0, 0, 0, 0)


def test_rejects_nonsense_limits(sqlite_log_app: Any, projection_store: ProjectionStore) -> None:
    with pytest.raises(ValueError):
        Follower(sqlite_log_app, projection_store, batch_events_max=0)


def test_the_originator_is_the_ledger_log(history: list[Any]) -> None:
    assert {e.originator_id for e in history} == {LOG_ID}
    assert [e.originator_version for e in history] == list(range(1, len(history) + 1))
    assert all(later.prev_hash == earlier.hash() for earlier, later in zip(history, history[1:], strict=False))


def test_projection_agrees_with_the_write_side_fold(ledger: Any, projection_store: ProjectionStore) -> None:
    """The real LedgerService's log, projected: every balance, nonce, receipt and the finality match its fold."""
    alice, bob, carol = (k.address for k in ACCOUNTS)
    sender = ACCOUNTS[0]
    # The second tx asks for more than alice has: rejected, insufficient_funds.
    first = ledger.apply(
        [ledger.transfer(sender, bob, 5 * 10**6, fee=100), ledger.transfer(sender, carol, 10**18, nonce=1)]
    )
    ledger.finalize(first["hash"], first["height"])
    # A replayed nonce: rejected, bad_nonce.
    second = ledger.apply([ledger.transfer(ACCOUNTS[1], alice, 7, fee=3), ledger.transfer(sender, bob, 1, nonce=0)])
    ledger.apply()
    follower = Follower(ledger.service.app, projection_store)
    assert follower.run_until_caught_up() == ledger.service.max_position()
    model = ReadModel(projection_store)
    state = ledger.state
    head = model.head(ledger.chain_id)
    assert head is not None
    assert (head["height"], head["hash"]) == (state.tip.height, state.tip.hash)
    assert (head["finalized_height"], head["finalized_hash"]) == (state.finalized_height, state.finalized.hash)
    addresses = {address for address, _ in state.balances} | {v.operator.address for v in ledger.vals}
    for address in addresses:
        account = model.account(ledger.chain_id, address)
        assert account is not None
        expected = sorted((asset, n) for (who, asset), n in state.balances.items() if who == address and n)
        assert [(b["asset"], b["amount"]) for b in account["balances"]] == expected
        assert account["nonce"] == state.next_nonce(address)
    for result in (first, second):
        for receipt in result["receipts"]:
            got = model.receipt(receipt["tx_id"], chain_id=ledger.chain_id)
            assert got is not None
            assert {k: got[k] for k in ("status", "reason", "height", "index")} == {
                k: receipt[k] for k in ("status", "reason", "height", "index")
            }
    stats = model.stats(ledger.chain_id, 10)
    assert stats["supply"] == [{"asset": "CELL", "amount": state.minted - state.burned}]
