"""The scaled path's logic without servers: routing, the wire format, batch planning, and the sink's recovery.

The central property (hypothesis): for one log of every event kind, published to partitioned topics by a relay
that may crash and publish a stretch again, and consumed by workers that crash at any step of a write, fetch
batches of any size, commit offsets late, and take partitions over from one another, the tables end equal, row
for row, to what the embedded follower writes for the same log, and the readers' checkpoint is the log's end.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from eventsourcing.persistence import Notification
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2

from projections.project import COLUMNS, Rows
from projections.store import ProjectionStore
from schemas.events import EVENT_TYPES, ReservesAttested
from streams import families, messages
from streams.faust_app import ledger_mapper
from streams.follower import project_notification
from streams.relay import kind_of
from streams.sink import Delivered, PartitionSink, plan_batch

A, B, OP = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40
PREFIX = "t"
MAPPER = ledger_mapper()


# ------------------------------------------------------------------------------------------------- a log


def all_kinds_history(log: Any, transfer: Callable[..., dict[str, Any]]) -> list[Any]:
    """Two chains; blocks with transfers; votes of three validators; finality; a side block, then a reorg
    (revert, reapply, apply); and a reserves attestation: every kind of schemas/events.py."""
    for chain in ("alpha", "beta"):
        log.genesis(chain, 1_000, [(A, 10**9)], [("n1", OP, 10**7), ("n2", OP, 10**7), ("n3", OP, 10**7)])
    parents = {"alpha": log.events[0].block_hash, "beta": log.events[1].block_hash}
    blocks: dict[tuple[str, int], Any] = {}
    for h in range(1, 4):
        for chain in ("alpha", "beta"):
            tx = transfer(chain, A, B, 10, fee=1, nonce=h - 1)
            block = log.block(
                chain, h, parents[chain], "n1", OP, 1_000 + h * 1_000, [tx], [("applied", "")],
                balances=[(A, "CELL", -11), (B, "CELL", 10), (OP, "CELL", 2_000_001)], nonces=[(A, h - 1, h)],
                fees=1, volume=[("CELL", 10)],
            )
            blocks[(chain, h)] = block
            parents[chain] = block.block_hash
            for node in ("n1", "n2", "n3"):
                log.vote(chain, node, h, block.block_hash)
    log.finalized("alpha", [(1, blocks[("alpha", 1)].block_hash)], 3, 4_000, 3 * 10**7, 3 * 10**7)
    # A side block on alpha's height 2, then the branch grows past the canonical one: a reorg of depth 1.
    side = log.block("alpha", 3, blocks[("alpha", 2)].block_hash, "n2", OP, 4_500, cls=_recorded())
    log.reorganized("alpha", "longer_branch", blocks[("alpha", 2)], [blocks[("alpha", 3)]], [side],
                    new_tip=(4, "f" * 64))
    log.reverted(blocks[("alpha", 3)])
    log.reapplied(side)
    log.block("alpha", 4, side.block_hash, "n3", OP, 5_000)
    log.add(
        ReservesAttested, chain_id="alpha", asset="USDC", height=1, block_hash=blocks[("alpha", 1)].block_hash,
        scheme="tally-por-v1", root="0" * 64, total=900, pending=100, liabilities=1_000, deposited=1_000,
        withdrawn=0, escrow=1_000, ratio="1.000000", leaf_count=2, cause="schedule",
    )
    events = list(log.events)
    assert {e.KIND for e in events} == set(EVENT_TYPES), "the history must hold every event kind"
    return events


def _recorded() -> Any:
    from schemas.events import BlockRecorded

    return BlockRecorded


def notifications(events: Sequence[Any]) -> list[Notification]:
    out = []
    for position, domain_event in enumerate(events, start=1):
        stored = MAPPER.to_stored_event(domain_event)
        out.append(Notification(id=position, originator_id=stored.originator_id,
                                originator_version=stored.originator_version, topic=stored.topic,
                                state=stored.state))
    return out


def expected_rows(notes: Sequence[Notification]) -> dict[str, list[tuple[Any, ...]]]:
    """What the embedded follower writes for the log (it projects every notification through this)."""
    rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in COLUMNS}
    for n in notes:
        for table, table_rows in project_notification(MAPPER, n)[0].items():
            rows[table].extend(table_rows)
    return {table: sorted(r, key=repr) for table, r in rows.items()}


def stored_rows(store: ProjectionStore) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table, columns in COLUMNS.items():
        rows = store.client.query(f"SELECT {', '.join(columns)} FROM {table}").result_rows
        out[table] = sorted((tuple(r) for r in rows), key=repr)
    return out


@pytest.fixture(scope="module")
def log_notes(event_log_class: Any, make_transfer: Any) -> list[Notification]:
    return notifications(all_kinds_history(event_log_class(), make_transfer))


# --------------------------------------------------------------------------------------------- routing


def test_every_event_kind_has_a_family_and_an_unknown_kind_fails_loudly() -> None:
    families.check_routes()
    assert set(families.ROUTES) == set(EVENT_TYPES)
    with pytest.raises(families.UnroutableEvent, match="no_such_kind"):
        families.check_routes([*EVENT_TYPES, "no_such_kind"])
    with pytest.raises(families.UnroutableEvent, match="no_such_kind"):
        families.route("no_such_kind", {"chain_id": "c"})


def test_keys_keep_a_chain_and_a_validator_in_order() -> None:
    assert families.route("block_applied", {"chain_id": "alpha"}) == ("blocks", b"alpha")
    assert families.route("block_finalized", {"chain_id": "alpha"}) == ("blocks", b"alpha")
    assert families.route("vote_accepted", {"chain_id": "alpha", "node_id": "n1"}) == ("votes", b"alpha/n1")
    assert families.route("reserves_attested", {"chain_id": "a", "asset": "USDC"}) == ("attestations", b"a/USDC")
    # An event whose payload cannot be read still travels, so that a worker records why.
    assert families.route("vote_accepted", None) == ("votes", b"")
    assert families.route("vote_accepted", {"chain_id": "alpha"}) == ("votes", b"")
    assert families.all_topics("x")[-2:] == ["x.relay", "x.dead-letter"]


def test_kind_of_a_stored_event(log_notes: list[Notification]) -> None:
    assert [kind_of(n) for n in log_notes[:3]] == ["genesis_accepted", "genesis_accepted", "block_applied"]
    stranger = Notification(id=9, originator_id=uuid.uuid4(), originator_version=1, topic="x:Y", state=b"{}")
    with pytest.raises(families.UnroutableEvent, match="x:Y"):
        kind_of(stranger)


# ------------------------------------------------------------------------------------------ wire format


def test_messages_round_trip() -> None:
    event = messages.EventMessage(7, uuid.uuid4(), 7, "schemas.events:VoteAccepted", "vote_accepted", b'{"a":\n1}')
    assert messages.decode(messages.encode_event(event)) == event
    assert messages.decode(messages.encode_watermark(12)) == messages.Watermark(12)
    assert messages.decode(messages.encode_progress(12)) == messages.Progress(12)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "expected bytes"),
        (b"", "no header line"),
        (b"not json\n", "not JSON"),
        (b'{"v": 2, "type": "watermark", "position": 1}\n', "version 1"),
        (b'[1]\n', "version 1"),
        (b'{"v": 1, "type": "other", "position": 1}\n', "unknown message type"),
        (b'{"v": 1, "type": "watermark", "position": "1"}\n', "position is not an integer"),
        (b'{"v": 1, "type": "watermark", "position": 0}\n', "not a log position"),
        (b'{"v": 1, "type": "event", "position": 3, "originator_id": "x"}\n', "not a UUID"),
        (b'{"v": 1, "type": "event", "position": 3, "originator_id": "%s", "originator_version": 3, "topic": 1}\n'
         % str(uuid.uuid4()).encode(), "topic is not a string"),
    ],
)
def test_undecodable_messages_say_why(value: Any, problem: str) -> None:
    with pytest.raises(messages.Undecodable, match=problem):
        messages.decode(value)


# ------------------------------------------------------------------------------------------ planning


def _event_value(n: Notification) -> bytes:
    return messages.encode_event(messages.EventMessage(
        n.id, n.originator_id, n.originator_version, n.topic, kind_of(n), n.state))  # type: ignore[arg-type]


def test_plan_skips_duplicates_follows_watermarks_and_refuses_garbage(log_notes: list[Notification]) -> None:
    n3, n4, n5 = log_notes[5], log_notes[6], log_notes[4]  # positions 6, 7 and 5
    batch = [
        Delivered("t.blocks", 0, 10, b"k", _event_value(n3)),   # at the partition's progress: a duplicate
        Delivered("t.blocks", 0, 11, b"k", _event_value(n4)),
        Delivered("t.blocks", 0, 12, b"k", b"garbage"),
        Delivered("t.blocks", 0, 13, b"k", _event_value(n4)),   # the relay published it again
        Delivered("t.blocks", 1, 0, None, messages.encode_watermark(40)),
        Delivered("t.blocks", 1, 1, None, messages.encode_progress(40)),
        Delivered("t.votes", 0, 5, b"k", _event_value(n5)),     # at or below the global watermark: written
    ]
    plan = plan_batch(batch, MAPPER, {("t.blocks", 0): 6}, watermark=5)
    assert (plan.events, plan.duplicates, plan.poison) == (1, 3, 0)
    assert [(m.offset, why.split(":")[0]) for m, why in plan.dead_letters] == [
        (12, "no header line"), (1, "a relay progress message on a data topic"),
    ]
    assert plan.partitions[("t.blocks", 0)].positions == [7]
    assert plan.partitions[("t.blocks", 0)].through == 7
    assert plan.partitions[("t.blocks", 0)].last_offset == 13
    assert plan.partitions[("t.blocks", 1)].through == 40
    assert plan.partitions[("t.votes", 0)].positions == []
    assert dict(plan.rows) == dict(project_notification(MAPPER, n4)[0])


def test_an_event_that_cannot_be_projected_is_the_followers_error_row(log_notes: list[Notification]) -> None:
    broken = Notification(id=99, originator_id=log_notes[0].originator_id, originator_version=99,
                          topic=log_notes[0].topic, state=b'{"chain_id": "alpha"')
    plan = plan_batch([Delivered("t.blocks", 0, 0, b"alpha", _event_value(broken))], MAPPER, {}, 0)
    assert plan.poison == 1
    assert dict(plan.rows) == dict(project_notification(MAPPER, broken)[0])
    assert plan.rows["projection_errors"][0][-1] == 99


# ------------------------------------------------------------------------------ a simulated deployment


PARTITIONS = 2
SEED_WITH_EVERY_PATH = 0  # found by search; see the test that uses it
TOPICS = {families.topic_name(PREFIX, f): PARTITIONS for f in families.FAMILIES}


class Crash(Exception):
    """kill -9 at this point of a write."""


class CrashingClient:
    """A client whose n-th insert or delete raises Crash (before it reaches the engine); clients that share a
    countdown (a list of one number, or None for never) crash at the n-th call among them."""

    def __init__(self, client: Any, countdown: list[int] | int | None) -> None:
        self._client = client
        self._left = [countdown] if isinstance(countdown, int) else countdown

    def _tick(self) -> None:
        if self._left is not None:
            if self._left[0] == 0:
                raise Crash
            self._left[0] -= 1

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        self._tick()
        return self._client.insert(*args, **kwargs)

    def raw_insert(self, *args: Any, **kwargs: Any) -> Any:  # the store's rows go in as Arrow blocks
        self._tick()
        return self._client.raw_insert(*args, **kwargs)

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.lstrip().upper().startswith("DELETE"):
            self._tick()
        return self._client.command(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def publish(notes: Sequence[Notification], rng: random.Random) -> dict[tuple[str, int], list[bytes]]:
    """The partitions as a relay leaves them: events in log order under their keys, a watermark to every
    partition after each batch, and now and then a crash after the flush that publishes a stretch again."""
    parts: dict[tuple[str, int], list[bytes]] = {(t, p): [] for t, n in TOPICS.items() for p in range(n)}
    position = 0
    while position < len(notes):
        batch = notes[position:position + rng.randint(1, 16)]
        for n in batch:
            kind = kind_of(n)
            family, key = families.route(kind, MAPPER.transcoder.decode(n.state))
            topic = families.topic_name(PREFIX, family)
            partition = (murmur2(key) & 0x7FFFFFFF) % TOPICS[topic] if key else rng.randrange(TOPICS[topic])
            parts[(topic, partition)].append(_event_value(n))
        if rng.random() < 0.25:
            continue  # crashed after the flush, before its watermarks and checkpoint: published again
        for tp in parts:
            parts[tp].append(messages.encode_watermark(batch[-1].id))
        position = batch[-1].id
    return parts


@dataclass
class Worker:
    """A worker process: its sink, the partitions it owns, and what it has committed (late)."""

    sink: PartitionSink
    owned: set[tuple[str, int]] = field(default_factory=set)


def consume(store: ProjectionStore, parts: dict[tuple[str, int], list[bytes]], rng: random.Random) -> dict[str, int]:
    """Two workers take batches until every partition is read to its end; returns what happened on the way:
    crashes injected, positions whose rows a recovery deleted, duplicates skipped."""
    committed = dict.fromkeys(parts, 0)  # the group's committed offsets (what a restarted consumer reads from)
    acked = dict(committed)              # written, not necessarily committed yet
    crashes = recovered = duplicates = 0

    def new_worker(name: str) -> Worker:
        return Worker(PartitionSink(store, TOPICS, name))

    workers = [new_worker("w0"), new_worker("w1")]
    for tp in parts:  # the first assignment
        workers[rng.randrange(2)].owned.add(tp)
    for _ in range(10_000):
        pending = [tp for tp in parts if acked[tp] < len(parts[tp])]
        if not pending:
            break
        i = rng.randrange(2)
        worker = workers[i]
        mine = [tp for tp in pending if tp in worker.owned] or pending
        chosen = rng.sample(mine, min(len(mine), rng.randint(1, 6)))
        batch = []
        for tp in chosen:
            worker.owned.add(tp)
            for other in workers:
                if other is not worker and tp in other.owned:  # a rebalance: the other one commits, lets go
                    other.owned.discard(tp)
                    other.sink.forget([tp])
                    committed[tp] = acked[tp]
            start = acked[tp]
            for offset in range(start, min(len(parts[tp]), start + rng.randint(1, 12))):
                batch.append(Delivered(tp[0], tp[1], offset, None, parts[tp][offset]))
        countdown = [rng.randrange(12)] if rng.random() < 0.3 else None  # the sink's and the rows' calls
        worker.sink.client = CrashingClient(worker.sink.client, countdown)
        store.client = CrashingClient(store.client, countdown)
        try:
            for tp in chosen:
                if not worker.sink.owns(tp):
                    worker.sink.recover(tp)
            plan = plan_batch(batch, MAPPER, worker.sink.through(), worker.sink.watermark)
            assert not plan.dead_letters
            worker.sink.write(plan)
            duplicates += plan.duplicates
        except Crash:
            crashes += 1
            recovered += worker.sink.recovered_positions
            worker.sink.close()
            workers[i] = new_worker(f"w{i}-{crashes}")
            workers[i].owned = set(worker.owned)
            for tp in parts:  # the restarted consumer reads from the committed offsets
                acked[tp] = committed[tp] if tp in worker.owned else acked[tp]
            continue
        finally:
            store.client = store.client._client if isinstance(store.client, CrashingClient) else store.client
            if isinstance(worker.sink.client, CrashingClient):
                worker.sink.client = worker.sink.client._client
        for m in batch:
            acked[(m.topic, m.partition)] = max(acked[(m.topic, m.partition)], m.offset + 1)
        for tp in chosen:
            if rng.random() < 0.5:  # Faust commits now and then, never past what was written
                committed[tp] = acked[tp]
    else:
        raise AssertionError("the workers never caught up")
    for w in workers:
        recovered += w.sink.recovered_positions
        w.sink.close()
    return {"crashes": crashes, "recovered": recovered, "duplicates": duplicates}


@pytest.fixture(scope="module")
def sim_store(chdb_dsn: str) -> Iterator[ProjectionStore]:
    store = ProjectionStore(chdb_dsn, database=f"sim_{uuid.uuid4().hex[:12]}")
    yield store
    store.drop()
    store.close()


def _reset(store: ProjectionStore) -> None:
    for table in [*COLUMNS, "checkpoints", "stream_batches", "stream_partitions"]:
        store.client.command(f"TRUNCATE TABLE IF EXISTS {table}")


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_any_crash_duplicate_and_takeover_converges_to_the_embedded_tables(
    seed: int, log_notes: list[Notification], sim_store: ProjectionStore
) -> None:
    rng = random.Random(seed)
    _reset(sim_store)
    parts = publish(log_notes, rng)
    seen = consume(sim_store, parts, rng)
    for name, n in seen.items():
        event(f"{name}: {min(n, 3)}")
    assert stored_rows(sim_store) == expected_rows(log_notes)
    assert sim_store.checkpoint() == len(log_notes)


def test_the_simulation_crashes_mid_batch_and_skips_duplicates(
    log_notes: list[Notification], sim_store: ProjectionStore
) -> None:
    """One seed that goes through every path: a crash between inserts, a recovery that deletes rows, relay
    duplicates skipped (the property above draws many more)."""
    rng = random.Random(SEED_WITH_EVERY_PATH)
    _reset(sim_store)
    seen = consume(sim_store, publish(log_notes, rng), rng)
    assert seen["crashes"] >= 1 and seen["recovered"] >= 1 and seen["duplicates"] >= 1, seen
    assert stored_rows(sim_store) == expected_rows(log_notes)
    assert sim_store.checkpoint() == len(log_notes)


def test_recovery_deletes_only_the_unfinished_batch_of_its_partition(
    log_notes: list[Notification], sim_store: ProjectionStore
) -> None:
    _reset(sim_store)
    sink = PartitionSink(sim_store, TOPICS, "w")
    blocks, votes = ("t.blocks", 0), ("t.votes", 1)
    for tp in (blocks, votes):
        sink.recover(tp)
    genesis, vote = log_notes[0], next(n for n in log_notes if kind_of(n) == "vote_accepted")
    sink.write(plan_batch([Delivered(*votes, 0, None, _event_value(vote))], MAPPER, sink.through(), 0))
    # The blocks partition crashes after its 'begun' row and its rows, before its 'done' row.
    plan = plan_batch([Delivered(*blocks, 0, None, _event_value(genesis))], MAPPER, sink.through(), 0)
    sink.client = CrashingClient(sink.client, 1)
    with pytest.raises(Crash):
        sink.write(plan)
    assert sim_store.counts()["chains"] == 1 and sim_store.counts()["votes"] == 1
    fresh = PartitionSink(sim_store, TOPICS, "w2")
    assert fresh.recover(votes) == 0
    assert fresh.recover(blocks) == 1
    assert sim_store.counts()["chains"] == 0 and sim_store.counts()["votes"] == 1
    assert fresh.recover(blocks) == 0  # closed: the next owner deletes nothing
    assert fresh.through() == {votes: vote.id, blocks: 0}
    fresh.close()
    sink.client = sink.client._client
    sink.close()


def test_workers_on_views_a_replay_built_skip_what_it_wrote(log_notes: list[Notification], chdb_dsn: str) -> None:
    """docs/operations.md, Replay: `tally replay` builds new views from the event store (rows and a checkpoint,
    no partition progress), then workers take over from the start of every partition. What the checkpoint
    covers is skipped from their first batch on (before, the first batch wrote it a second time)."""
    store = ProjectionStore(chdb_dsn, database=f"replayed_{uuid.uuid4().hex[:12]}")
    half = len(log_notes) // 2
    replayed: Rows = {}
    for n in log_notes[:half]:
        for table, rows in project_notification(MAPPER, n)[0].items():
            replayed.setdefault(table, []).extend(rows)
    store.write(replayed, half)
    sink = PartitionSink(store, TOPICS, "w")
    parts = publish(log_notes, random.Random(3))
    for tp in parts:
        sink.recover(tp)
    batch = [Delivered(tp[0], tp[1], offset, None, value) for tp, values in parts.items()
             for offset, value in enumerate(values)]
    plan = plan_batch(batch, MAPPER, sink.through(), sink.watermark)
    assert plan.events == len(log_notes) - half
    sink.write(plan)
    sink.close()
    try:
        assert stored_rows(store) == expected_rows(log_notes)
        assert store.checkpoint() == len(log_notes)
    finally:
        store.drop()
        store.close()


def test_write_before_recover_is_refused(sim_store: ProjectionStore, log_notes: list[Notification]) -> None:
    sink = PartitionSink(sim_store, TOPICS, "w")
    plan = plan_batch([Delivered("t.blocks", 0, 0, None, _event_value(log_notes[0]))], MAPPER, {}, 0)
    with pytest.raises(RuntimeError, match="before recover"):
        sink.write(plan)
    sink.close()


def test_rows_are_the_same_for_the_follower_and_the_sink(log_notes: list[Notification]) -> None:
    merged: Rows = {}
    for n in log_notes:
        for table, rows in project_notification(MAPPER, n)[0].items():
            merged.setdefault(table, []).extend(rows)
    assert {t: sorted(r, key=repr) for t, r in merged.items()} == {
        t: r for t, r in expected_rows(log_notes).items() if r
    }
