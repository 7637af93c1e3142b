"""Replay: rebuild every projection from the log into a store (`tally replay`).

The same pure `project` as the follower and the Faust workers, the same sink rules (rows, then the checkpoint;
`recover` on start), so a replay is deterministic (the same log gives identical tables) and resumable (an
interrupted replay resumes from the store's checkpoint). A replay can stop before the first block above a height,
giving the views as they were when the chain stood there.

Rows are encoded as Arrow record batches as they are projected (projections/columnar.py) and written in batches
of about BATCH_ROWS_MAX rows, far larger than the follower's: every batch costs an insert per table (a part
each, several milliseconds of the engine's time however few its rows), and no one waits for a replay's newest
event. With `workers` > 1 (the event store must be one other processes can open), worker processes decode,
project and encode ranges of the log (projections/_replay_workers.py) while this one writes what they made, in
log order. Either way one batch is written at a time, its rows and then its checkpoint,
and `progress` is called after each.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from projections import _replay_workers as workers_
from projections._replay_workers import Section, above_height, project_section, record_batches
from projections.store import ProjectionStore
from schemas import limits

SECTION_EVENTS = 2_000  # notifications per select, at most
SECTION_EVENTS_FIRST = 16  # the first select, before the size of the log's events is known (a block can be 14 MB)
SECTION_BYTES = limits.REPLAY_SECTION_BYTES
BATCH_ROWS_MAX = limits.REPLAY_BATCH_ROWS_MAX
_SHAREABLE_STORES = ("eventsourcing.sqlite", "eventsourcing.postgres")
__all__ = ["ReplayGap", "ReplayResult", "above_height", "replay", "shareable"]


@dataclass
class ReplayResult:
    start: int  # the first position replayed
    position: int  # the last position replayed (and checkpointed)
    events: int
    poison: int
    seconds: float
    stopped_at_height: bool = False
    workers: int = 1  # processes that decoded and projected (1: this one)
    worker_cpu_s: float = 0.0  # CPU seconds of those worker processes (this process's own are not in it)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class ReplayGap(ValueError):
    """Replaying from a position would leave positions unprojected (or project some twice)."""


@dataclass
class _Batch:
    """Encoded rows of consecutive positions up to `position`, not yet written."""

    position: int
    batches: dict[str, list[pa.RecordBatch]] = field(default_factory=dict)
    rows: int = 0

    def add(self, batches: dict[str, list[pa.RecordBatch]]) -> None:
        for table, table_batches in batches.items():
            self.batches.setdefault(table, []).extend(table_batches)
            self.rows += sum(b.num_rows for b in table_batches)


class _Writer:
    """Writes batches in log order (rows, then checkpoint) and reports progress after each."""

    def __init__(self, store: ProjectionStore, checkpoint: int, progress: Callable[[int], None]) -> None:
        self.store, self.progress = store, progress
        self.batch = _Batch(checkpoint)
        self.written = checkpoint  # the position of the last batch written
        self.events = self.poison = 0
        self.worker_cpu_s = 0.0
        self.stopped = False

    def add(self, section: Section, batches: dict[str, list[pa.RecordBatch]]) -> None:
        self.batch.add(batches)
        self.batch.position = section.position or self.batch.position
        self.events += section.events
        self.poison += section.poison
        self.worker_cpu_s += section.cpu_s
        self.stopped = section.stopped
        if self.batch.rows >= BATCH_ROWS_MAX:
            self.flush()

    def flush(self) -> None:
        if self.batch.rows or self.batch.position > self.written:
            self.store.write_batches(self.batch.batches, self.batch.position)
            self.written = self.batch.position
            self.progress(self.events)
        self.batch = _Batch(self.batch.position)


def _sections(app: Any, cursor: int, end: int) -> Iterator[Sequence[Any]]:
    """The log from `cursor` to `end`, a section at a time, each about SECTION_BYTES of stored events (sized from
    the ones read before)."""
    limit = SECTION_EVENTS_FIRST
    while cursor <= end:
        section = app.recorder.select_notifications(cursor, min(limit, end - cursor + 1))
        if not section:
            return
        yield section
        cursor = section[-1].id + 1
        limit = _events_for(SECTION_BYTES, section)


def _events_for(nbytes: int, section: Sequence[Any]) -> int:
    per_event = max(1, sum(len(n.state) for n in section) // len(section))
    return max(1, min(SECTION_EVENTS, nbytes // per_event))


def replay(
    app: Any,
    store: ProjectionStore,
    *,
    from_position: int | None = None,
    to_height: int | None = None,
    progress: Callable[[int], None] = lambda _: None,
    workers: int = 1,
) -> ReplayResult:
    """Project the log into `store` from its checkpoint (or `from_position`, which must follow it) to the end of
    the log as it stands now, or until the first block above `to_height`. `progress(n)` after each batch.
    `workers` > 1: that many processes decode and project while this one writes (the store must be `shareable`).
    On the 2 shared cores where they were measured they took more CPU in all and were slower (README,
    compliance): they are for machines with cores to spare."""
    store.recover()
    checkpoint = store.checkpoint()
    start = checkpoint + 1 if from_position is None else from_position
    if from_position is not None and checkpoint not in (0, from_position - 1):
        raise ReplayGap(
            f"the store is checkpointed at {checkpoint}: replay from {checkpoint + 1} (or into a fresh store)"
        )
    end = app.recorder.max_notification_id() or 0
    if workers > 1 and not shareable(app):
        raise ValueError("worker processes cannot open this event store (in memory): replay with workers=1")
    began = time.perf_counter()
    writer = _Writer(store, start - 1, progress)
    types = store.column_types()
    sections = _sections(app, start, end)
    first = next(sections, None)  # projected here; its size tells how to split the rest between workers
    if first is not None:
        done = project_section(app.mapper, first, to_height)
        writer.add(done, record_batches(done.rows, types))
    parallel = workers > 1 and first is not None and not writer.stopped and writer.batch.position < end
    if parallel:
        assert first is not None
        range_events = _events_for(SECTION_BYTES, first)
        _parallel(app, writer, types, writer.batch.position + 1, end, to_height, workers, range_events)
    else:
        for section in sections if not writer.stopped else ():
            done = project_section(app.mapper, section, to_height)
            writer.add(done, record_batches(done.rows, types))
            if done.stopped:
                break
    writer.flush()
    return ReplayResult(start, writer.batch.position, writer.events, writer.poison, time.perf_counter() - began,
                        writer.stopped, workers if parallel else 1, writer.worker_cpu_s)


def shareable(app: Any) -> bool:
    """Whether other processes can open the application's event store: an SQLite file, PostgreSQL."""
    env = getattr(app, "env", None) or {}
    module = env.get("PERSISTENCE_MODULE", "")
    if module == "eventsourcing.sqlite":
        name = env.get("SQLITE_DBNAME", ":memory:")
        return name != ":memory:" and "mode=memory" not in name
    return module in _SHAREABLE_STORES


def _parallel(app: Any, writer: _Writer, types: dict[str, list[str]], first: int, end: int, to_height: int | None,
              workers: int, range_events: int) -> None:
    """Positions `first`..`end` in ranges of `range_events`, each decoded, projected and encoded by a worker
    process; results are taken in log order (2 ranges per worker in flight) and written from here."""
    context = multiprocessing.get_context("forkserver")
    # Imported once in the fork server (if this call starts it), not in every worker: ~1 s less per pool.
    context.set_forkserver_preload(["__main__", workers_.__name__])
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=workers_.start,
                               initargs=(type(app), dict(app.env), types, os.getpid()))
    pending: deque[Future[tuple[Section, dict[str, list[bytes]]]]] = deque()
    cursor = first
    try:
        while cursor <= end or pending:
            while cursor <= end and len(pending) < 2 * workers:
                last = min(end, cursor + range_events - 1)
                pending.append(pool.submit(workers_.prepare, cursor, last, to_height, SECTION_EVENTS))
                cursor = last + 1
            done, streams = pending.popleft().result()
            batches = {t: [b for s in ss for b in pa.ipc.open_stream(s).read_all().to_batches()]
                       for t, ss in streams.items()}
            writer.add(done, batches)
            if done.stopped:
                return
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
