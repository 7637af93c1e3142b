"""The scaled sink: projection rows from many Kafka partitions into one ClickHouse database, each partition with
its own progress, so that any crash, redelivery or rebalance still converges to the embedded follower's tables.

The rules (the tables `stream_batches` and `stream_partitions`, `PROGRESS_DDL` below):

1. Each log position travels in exactly one partition (streams/families.py), and a partition carries its events
   in log order, each followed, after the relay's flush, by watermarks (streams/messages.py).
2. `through(tp)`: every event of partition `tp` at a position <= through is written. An event advances it to
   its position, a watermark to the watermark's. A message at a position <= through(tp), or <= the global
   watermark, is a duplicate (the relay published it again after a crash, or Kafka redelivered it): skipped.
3. A batch is written as: a 'begun' row per partition naming its positions, the rows (`ProjectionStore.
   insert_rows`, chain_head last), a 'done' row per partition (through, last offset), then the global watermark.
4. Before a worker writes a partition it has just been given (`recover`), it deletes the rows of every position
   of a 'begun' batch that has no 'done' (a crash between two inserts), so the batch is written once when
   Kafka delivers it again. Only that partition's positions are touched: the other partitions' rows stay.
5. The global watermark is the minimum of `through` over every partition of every data topic: every event at a
   position <= it is written. It is stored as the 'ledger' checkpoint, which is what readers bound their reads
   with (projections/queries.py), exactly as the embedded follower's checkpoint. Any worker may raise it; it
   never moves back (readers take the maximum).

Kafka offsets are acknowledged only after a batch is done (streams/faust_app.py), so a redelivery starts at
or before the first message not written: at-least-once delivery, exactly-once rows.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import Mapper, Notification

from projections.project import COLUMNS, Rows
from projections.store import CHECKPOINTS, DELETE_SETTINGS, INSERT_SETTINGS, ProjectionStore
from streams.follower import project_notification
from streams.messages import EventMessage, Progress, Undecodable, Watermark, decode

log = logging.getLogger(__name__)

BATCHES, PARTITIONS = "stream_batches", "stream_partitions"
# The scaled path's own tables, in the views' database. Not in schemas/clickhouse/: only this path writes them,
# and they go with the views when those are dropped for a new DDL (ProjectionStore drops every table).
PROGRESS_DDL = (
    # Rule 3's 'begun' rows: one per batch of a partition, naming the log positions whose rows it writes.
    f"""CREATE TABLE IF NOT EXISTS {BATCHES}
(
    topic      LowCardinality(String),
    partition  UInt32,
    batch      UInt64,          -- the partition's batches, counted from 1
    positions  Array(UInt64),
    worker     String,          -- who wrote it (diagnostics)
    written_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (topic, partition, batch)""",
    # Rule 3's 'done' rows: a partition's progress after its latest batch (merges keep the latest one).
    f"""CREATE TABLE IF NOT EXISTS {PARTITIONS}
(
    topic        LowCardinality(String),
    partition    UInt32,
    batch        UInt64,        -- the latest batch done (or closed by a recovery)
    through      UInt64,        -- every event of this partition at a log position <= through is written
    kafka_offset Int64,         -- the offset of the batch's last message
    worker       String,
    written_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(batch)
ORDER BY (topic, partition)""",
)
_BEGUN_COLUMNS = ("topic", "partition", "batch", "positions", "worker")
_DONE_COLUMNS = ("topic", "partition", "batch", "through", "kafka_offset", "worker")

TP = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class Delivered:
    """One Kafka message as a worker received it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class PartitionBatch:
    """What one batch does to one partition."""

    through: int  # the partition's progress once the batch is written
    last_offset: int = -1
    positions: list[int] = field(default_factory=list)


@dataclass
class Plan:
    """A batch of messages sorted out: rows to write, progress per partition, and what was refused."""

    rows: Rows = field(default_factory=lambda: defaultdict(list))
    partitions: dict[TP, PartitionBatch] = field(default_factory=dict)
    dead_letters: list[tuple[Delivered, str]] = field(default_factory=list)
    events: int = 0
    duplicates: int = 0
    poison: int = 0
    position_max: int = 0


def plan_batch(
    messages: Iterable[Delivered], mapper: Mapper[Any], through: Mapping[TP, int], watermark: int
) -> Plan:
    """Sorts a batch out (rules 1 and 2 of the module docstring); no I/O.

    `through`: each partition's progress before the batch; `watermark`: the global one. An undecodable message,
    or a relay progress message on a data topic, goes to `dead_letters` and changes no progress.
    """
    plan = Plan()
    for m in messages:
        tp = (m.topic, m.partition)
        part = plan.partitions.get(tp)
        if part is None:
            part = plan.partitions[tp] = PartitionBatch(through=through.get(tp, 0))
        part.last_offset = max(part.last_offset, m.offset)
        try:
            message = decode(m.value)
        except Undecodable as exc:
            plan.dead_letters.append((m, str(exc)))
            continue
        if isinstance(message, Watermark):
            part.through = max(part.through, message.position)
        elif isinstance(message, Progress):
            plan.dead_letters.append((m, "a relay progress message on a data topic"))
        elif message.position <= part.through or message.position <= watermark:
            plan.duplicates += 1
        else:
            _project_into(plan, part, message, mapper)
    return plan


def _project_into(plan: Plan, part: PartitionBatch, message: EventMessage, mapper: Mapper[Any]) -> None:
    notification = Notification(
        id=message.position, originator_id=message.originator_id, originator_version=message.originator_version,
        topic=message.topic, state=message.state,
    )
    rows, error = project_notification(mapper, notification)
    if error is not None:
        plan.poison += 1
        log.error("log position %d (%s): %s", message.position, message.topic, error)
    for table, table_rows in rows.items():
        plan.rows[table].extend(table_rows)
    part.positions.append(message.position)
    part.through = message.position
    plan.events += 1
    plan.position_max = max(plan.position_max, message.position)


class PartitionSink:
    """Writes planned batches with per-partition progress (rules 3 to 5). One per worker process; not
    thread-safe (the worker calls it from one thread)."""

    def __init__(self, store: ProjectionStore, partitions: Mapping[str, int], worker: str) -> None:
        """`partitions`: every data topic and its partition count (the global watermark needs them all)."""
        if not partitions or any(n < 1 for n in partitions.values()):
            raise ValueError(f"every data topic needs at least one partition: {dict(partitions)}")
        self.store = store
        self.client = store.connect()
        for statement in PROGRESS_DDL:
            self.client.command(statement)
        self.expected: list[TP] = [(t, p) for t, n in sorted(partitions.items()) for p in range(n)]
        self.worker = worker
        self._through: dict[TP, int] = {}
        self._batch: dict[TP, int] = {}
        # The global watermark as last computed or stored. Read now, not at the first write: views that
        # `tally replay` built have a checkpoint and no partition progress, so every partition is read from its
        # start, and the events the checkpoint covers must be skipped from the first batch on.
        self.watermark = self.stored_watermark()
        self.recovered_positions = 0
        self.rows_written = 0

    # ---------------------------------------------------------------------------------------- progress

    def through(self) -> dict[TP, int]:
        return dict(self._through)

    def owns(self, tp: TP) -> bool:
        """Recovered since it was (re)assigned to this worker."""
        return tp in self._through

    def forget(self, tps: Iterable[TP]) -> None:
        """The partitions were revoked: recover them again before writing them (another worker may have)."""
        for tp in tps:
            self._through.pop(tp, None)
            self._batch.pop(tp, None)

    def recover(self, tp: TP) -> int:
        """Loads the partition's progress and deletes the rows of its unfinished batches (rule 4); returns the
        number of positions whose rows were deleted."""
        topic, partition = tp
        params = {"t": topic, "p": partition}
        where = "topic = {t:String} AND partition = {p:UInt32}"
        done = self.client.query(
            f"SELECT batch, through, kafka_offset FROM {PARTITIONS} FINAL WHERE {where}", parameters=params
        ).result_rows
        done_batch, through, offset = (int(done[0][0]), int(done[0][1]), int(done[0][2])) if done else (0, 0, -1)
        begun = self.client.query(
            f"SELECT batch, positions FROM {BATCHES} WHERE {where} AND batch > {{b:UInt64}}",
            parameters={**params, "b": done_batch},
        ).result_rows
        stale = sorted({int(p) for _, positions in begun for p in positions})
        last_batch = max([done_batch, *(int(b) for b, _ in begun)])
        if stale:
            log.warning("%s[%d]: deleting the rows of %d positions of an unfinished batch", topic, partition,
                        len(stale))
            self._delete_positions(stale)
        if last_batch > done_batch:
            # Close the unfinished batches, so that the next owner does not delete again.
            self._insert_done({tp: PartitionBatch(through=through, last_offset=offset)}, {tp: last_batch})
        self._through[tp] = through
        self._batch[tp] = last_batch
        self.recovered_positions += len(stale)
        return len(stale)

    def stored_watermark(self) -> int:
        """The readers' checkpoint: every event at a position <= it is written (0: none)."""
        rows = self.client.query(
            f"SELECT max(position) FROM {CHECKPOINTS} WHERE projector = {{p:String}}",
            parameters={"p": self.store.projector},
        ).result_rows
        return int(rows[0][0]) if rows else 0

    def stored_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        """The Kafka offset of the last message each partition's latest batch handled (-1: none yet)."""
        wanted = set(tps)
        rows = self.client.query(f"SELECT topic, partition, kafka_offset FROM {PARTITIONS} FINAL").result_rows
        return {(str(t), int(p)): int(o) for t, p, o in rows if (str(t), int(p)) in wanted}

    def _delete_positions(self, positions: Sequence[int]) -> None:
        """Deletes every row of these positions, in the tables that hold some (a delete is a mutation)."""
        params = {"ps": list(positions)}
        counts = " UNION ALL ".join(
            f"SELECT '{table}', count() FROM {table} WHERE has({{ps:Array(UInt64)}}, position)" for table in COLUMNS
        )
        for table, n in self.client.query(counts, parameters=params).result_rows:
            if n:
                self.client.command(
                    f"DELETE FROM {table} WHERE has({{ps:Array(UInt64)}}, position)", parameters=params,
                    settings=DELETE_SETTINGS,
                )

    # ------------------------------------------------------------------------------------------ writes

    def write(self, plan: Plan) -> int:
        """Writes a planned batch (rule 3) and raises the global watermark (rule 5); returns rows written.
        Every partition of the plan must have been recovered by this worker."""
        for tp in plan.partitions:
            if tp not in self._through:
                raise RuntimeError(f"{tp}: write before recover")
        batches = {tp: self._batch[tp] + 1 for tp in plan.partitions}
        begun = [
            [tp[0], tp[1], batches[tp], part.positions, self.worker]
            for tp, part in plan.partitions.items() if part.positions
        ]
        if begun:
            self.client.insert(BATCHES, begun, column_names=_BEGUN_COLUMNS, settings=INSERT_SETTINGS)
        written = self.store.insert_rows(plan.rows, plan.position_max) if plan.rows else 0
        self._insert_done(plan.partitions, batches)
        for tp, part in plan.partitions.items():
            self._through[tp] = part.through
            self._batch[tp] = batches[tp]
        self.rows_written += written
        self.raise_watermark()
        return written

    def _insert_done(self, partitions: Mapping[TP, PartitionBatch], batches: Mapping[TP, int]) -> None:
        done = [
            [tp[0], tp[1], batches[tp], part.through, part.last_offset, self.worker]
            for tp, part in partitions.items()
        ]
        if done:
            self.client.insert(PARTITIONS, done, column_names=_DONE_COLUMNS, settings=INSERT_SETTINGS)

    def raise_watermark(self) -> int:
        """Computes the global watermark from every partition's progress and stores it when it moved."""
        rows = self.client.query(
            f"SELECT topic, partition, through, (SELECT max(position) FROM {CHECKPOINTS} WHERE projector ="
            f" {{p:String}}) FROM {PARTITIONS} FINAL", parameters={"p": self.store.projector},
        ).result_rows
        done = {(str(t), int(p)): int(through) for t, p, through, _ in rows}
        stored = int(rows[0][3]) if rows else 0
        watermark = min(done.get(tp, 0) for tp in self.expected)
        if watermark > stored:
            self.client.insert(
                CHECKPOINTS, [[self.store.projector, watermark]], column_names=("projector", "position"),
                settings=INSERT_SETTINGS,
            )
        self.watermark = max(self.watermark, watermark, stored)
        return self.watermark

    def close(self) -> None:
        self.client.close()
