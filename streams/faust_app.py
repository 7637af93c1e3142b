"""The Faust workers of the scaled deployment (`tally stream`): one agent per data topic, thin by design.

Each agent takes a batch of messages (`noack_take`) and hands it to `Projector.handle`:
decode, call the same pure projection as the embedded follower (streams/follower.py: project_notification),
write through the scaled sink (streams/sink.py: rows, then per-partition progress, then the global watermark).
Undecodable messages go to the dead-letter topic; an event that cannot be projected becomes the same
`projection_errors` row as in the embedded stack; a failed write is retried from the same batch after a pause.
Nothing here raises out of an agent: a crashed agent would stop its partitions.

Kafka offsets are never committed: the offset of each partition's last written message is stored with its progress
in ClickHouse, and a worker given a partition seeks there (`on_assigned`); with none stored it reads the partition
from the start and skips what is written. So a worker's position and its rows can never disagree.

The ClickHouse client is synchronous: every write runs on one thread of the worker (`Projector._executor`), so
the event loop keeps heartbeating while a batch is written and writes never interleave.

Metrics (Faust's web server, /metrics, Prometheus text):
  tally_stream_events_total{topic}                 events projected
  tally_stream_duplicates_total{topic}             messages skipped as already written
  tally_stream_dead_letters_total{topic}           messages sent to the dead-letter topic
  tally_stream_poison_events_total                 events recorded in projection_errors
  tally_stream_rows_written_total                  rows inserted
  tally_stream_batches_total, tally_stream_failed_batches_total
  tally_stream_partition_through{topic,partition}  a partition's progress (log position)
  tally_stream_consumer_lag_messages{topic,partition}  Kafka messages not yet processed (highwater - next)
  tally_stream_relay_position                      the highest relay watermark seen by this worker
  tally_stream_watermark_position                  the global watermark (what readers see)
  tally_stream_lag_events                          relay position - global watermark
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import faust
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from projections.store import ProjectionStore
from schemas import limits
from schemas.settings import Settings
from streams import families
from streams.sink import TP, Delivered, PartitionSink, Plan, plan_batch

log = logging.getLogger(__name__)
PROMETHEUS_TEXT = "text/plain; version=0.0.4"  # aiohttp adds the charset itself


def ledger_mapper() -> Any:
    """The mapper the event store uses (same transcoder, no cipher or compressor), without opening any store."""
    from writes.service import LedgerApplication

    return LedgerApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}).mapper


def served_families(settings: Settings) -> list[str]:
    """The families this worker projects: `stream_families` (comma-separated), every family when empty."""
    if not settings.stream_families.strip():
        return list(families.FAMILIES)
    wanted = [f.strip() for f in settings.stream_families.split(",") if f.strip()]
    unknown = sorted(set(wanted) - set(families.FAMILIES))
    if unknown:
        raise ValueError(f"stream_families: no such families {unknown}; families are {list(families.FAMILIES)}")
    return sorted(set(wanted))


def group_id(settings: Settings) -> str:
    """The consumer group of the workers serving the same families. It carries no position (offsets are never
    committed, see the module docstring), so views made anew are replayed from the start of every partition."""
    served = served_families(settings)
    suffix = "" if set(served) == set(families.FAMILIES) else "-" + "+".join(sorted(served))
    instance = f"-{settings.stream_group_suffix}" if settings.stream_group_suffix else ""
    return f"{settings.topic_prefix}-views{suffix}{instance}"


class Projector:
    """What the agents share in one worker process: the sink, its thread, the metrics."""

    def __init__(self, store: ProjectionStore, partitions: dict[str, int], mapper: Any, worker: str) -> None:
        self.sink = PartitionSink(store, partitions, worker)
        self.mapper = mapper
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tally-sink")
        self.registry = CollectorRegistry()
        self.events = Counter("tally_stream_events", "events projected", ["topic"], registry=self.registry)
        self.duplicates = Counter("tally_stream_duplicates", "messages skipped as already written", ["topic"],
                                  registry=self.registry)
        self.dead_letters = Counter("tally_stream_dead_letters", "messages sent to the dead-letter topic",
                                    ["topic"], registry=self.registry)
        self.poison = Counter("tally_stream_poison_events", "events recorded in projection_errors",
                              registry=self.registry)
        self.rows = Counter("tally_stream_rows_written", "rows inserted", registry=self.registry)
        self.batches = Counter("tally_stream_batches", "batches written", registry=self.registry)
        self.failed = Counter("tally_stream_failed_batches", "batch writes that failed (retried)",
                              registry=self.registry)
        self.relay_position = 0
        self.assigned: set[TP] = set()  # the partitions Kafka gave this worker (rebalance signals)
        self.next_offsets: dict[TP, int] = {}
        self.highwater: Any = None  # set by build_app: tp -> Kafka highwater
        self.registry.register(_LiveFigures(self))

    # ------------------------------------------------------------------------------------------- batches

    async def handle(self, delivered: Sequence[Delivered], dead_letter: Any) -> None:
        """Projects and writes one batch, retrying until it is written: it returns only once the batch's
        offsets may be acknowledged. Messages of partitions this worker no longer holds are left to their new
        owner, which reads them again from the offset stored with that partition's rows."""
        loop = asyncio.get_running_loop()
        pause_s = 0.1
        while True:
            try:
                plan = await loop.run_in_executor(self._executor, self._plan, delivered)
                # Before the write, whose stored offset a new owner seeks past: a dead letter is never lost,
                # and may be sent twice (at-least-once) when the batch is tried again.
                for message, error in plan.dead_letters:
                    await _send_dead_letter(dead_letter, message, error)
                if not await loop.run_in_executor(self._executor, self._write, plan):
                    continue  # a partition was revoked meanwhile: plan again from what is still held
            except Exception:
                self.failed.inc()
                log.exception("a batch of %d messages failed; retrying", len(delivered))
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, limits.STREAM_RETRY_PAUSE_MS_MAX / 1000)
                # Whatever the failed write left is an unfinished batch: recover those partitions first.
                await loop.run_in_executor(self._executor, self.sink.forget, {(m.topic, m.partition)
                                                                             for m in delivered})
                continue
            self._count(plan, delivered)
            return

    def _plan(self, delivered: Sequence[Delivered]) -> Plan:
        """On the sink's thread: recovers the partitions held and not yet recovered, plans their messages."""
        held = [m for m in delivered if (m.topic, m.partition) in self.assigned]
        for tp in dict.fromkeys((m.topic, m.partition) for m in held):
            if not self.sink.owns(tp):
                self.sink.recover(tp)
        return plan_batch(held, self.mapper, self.sink.through(), self.sink.watermark)

    def _write(self, plan: Plan) -> bool:
        """On the sink's thread, where a revocation (`forget`) waits its turn: False when a partition of the
        plan was revoked since it was planned (nothing written)."""
        if not all(self.sink.owns(tp) for tp in plan.partitions):
            return False
        self.sink.write(plan)
        return True

    def stored_offsets(self, tps: set[TP]) -> dict[TP, int]:
        """The next offset to read of each partition, from its progress row (absent: never written)."""
        return {tp: offset + 1 for tp, offset in self.sink.stored_offsets(tps).items() if offset >= 0}

    def _count(self, plan: Plan, delivered: Sequence[Delivered]) -> None:
        topic = delivered[0].topic
        self.events.labels(topic).inc(plan.events)
        self.duplicates.labels(topic).inc(plan.duplicates)
        self.dead_letters.labels(topic).inc(len(plan.dead_letters))
        self.poison.inc(plan.poison)
        self.rows.inc(sum(len(r) for r in plan.rows.values()))
        self.batches.inc()
        for m in delivered:
            tp = (m.topic, m.partition)
            self.next_offsets[tp] = max(self.next_offsets.get(tp, 0), m.offset + 1)
        for part in plan.partitions.values():
            self.relay_position = max(self.relay_position, part.through)

    async def forget(self, tps: set[TP]) -> None:
        """Partitions revoked: serialised behind the write in flight, then recovered again when next seen."""
        self.assigned -= tps
        await asyncio.get_running_loop().run_in_executor(self._executor, self.sink.forget, tps)
        for tp in tps:
            self.next_offsets.pop(tp, None)

    def assign(self, tps: set[TP]) -> None:
        self.assigned |= tps

    def metrics_text(self) -> bytes:
        return generate_latest(self.registry)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.sink.close()


class _LiveFigures(Collector):
    def __init__(self, projector: Projector) -> None:
        self._p = projector

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        p = self._p
        through = GaugeMetricFamily("tally_stream_partition_through", "a partition's progress (log position)",
                                    labels=["topic", "partition"])
        lag = GaugeMetricFamily("tally_stream_consumer_lag_messages", "Kafka messages not yet processed",
                                labels=["topic", "partition"])
        for (topic, partition), position in sorted(p.sink.through().items()):
            through.add_metric([topic, str(partition)], position)
        for (topic, partition), next_offset in sorted(p.next_offsets.items()):
            try:
                highwater = p.highwater((topic, partition)) if p.highwater else None
            except Exception:  # not assigned here any more
                highwater = None
            if highwater is not None:
                lag.add_metric([topic, str(partition)], max(0, int(highwater) - next_offset))
        yield through
        yield lag
        yield GaugeMetricFamily("tally_stream_relay_position", "highest relay watermark seen",
                                value=p.relay_position)
        yield GaugeMetricFamily("tally_stream_watermark_position", "the global watermark (readers see up to it)",
                                value=p.sink.watermark)
        yield GaugeMetricFamily("tally_stream_lag_events", "relay position - global watermark",
                                value=max(0, p.relay_position - p.sink.watermark))


async def _seek(app: faust.App, seeks: dict[Any, int]) -> None:
    """Moves the consumer of these partitions to these offsets, on the consumer's own thread.

    Faust's public ways do not fit: `consumer.seek` runs on the caller's thread and raced the fetcher (aiokafka
    crashed with a KeyError in `fetched_records`), and `seek_wait` then waits for the positions, which blocked the
    rebalance it is called from. So the aiokafka consumer is reached through Faust's consumer thread (private
    attributes of faust-streaming 0.15.3, pinned). A seek that does not happen only costs skipped duplicates.
    """
    thread = app.consumer._thread  # type: ignore[attr-defined]
    aio = thread._ensure_consumer()
    read_offsets = app.consumer._read_offset  # type: ignore[attr-defined]

    async def seek_all() -> None:
        for tp, offset in seeks.items():
            aio.seek(tp, offset)
            read_offsets[tp] = offset

    try:
        await thread.call_thread(seek_all)
    except Exception:  # not fatal: the partition is read from the committed (none: earliest) offset instead
        log.warning("seeking %d partitions to their stored offsets failed", len(seeks), exc_info=True)


async def _send_dead_letter(topic: Any, message: Delivered, error: str) -> None:
    headers = {
        "tally-error": error[:1000].encode(), "tally-topic": message.topic.encode(),
        "tally-partition": str(message.partition).encode(), "tally-offset": str(message.offset).encode(),
    }
    log.error("%s[%d]@%d to the dead-letter topic: %s", message.topic, message.partition, message.offset, error)
    sent = await topic.send(key=message.key, value=message.value or b"", headers=headers)
    await sent  # delivered before the batch is acknowledged


def build_app(settings: Settings, store: ProjectionStore, partitions: dict[str, int]) -> tuple[faust.App, Projector]:
    """The Faust app of one worker: an agent per data topic it serves, /metrics, rebalance hooks. `partitions`:
    every data topic (the global watermark is over all of them, whoever serves them)."""
    worker = f"{socket.gethostname()}-{os.getpid()}"
    projector = Projector(store, partitions, ledger_mapper(), worker)
    brokers = ";".join(f"kafka://{b.strip()}" for b in settings.kafka_bootstrap.split(","))
    session_s = settings.stream_session_timeout_ms / 1000
    app = faust.App(
        group_id(settings),
        broker=brokers,
        store="memory://",
        topic_allow_declare=False,  # topics are the project's (`tally topics create`), never auto-created
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",  # a new group replays from the start
        processing_guarantee="at_least_once",
        # On a rebalance Faust would wait for every message it handed to an agent to be acknowledged, including
        # those still waiting in a take buffer, and a worker kept waiting past the session timeout loses its
        # membership and waits again (seen with two workers). The sink needs no such wait: redelivered messages
        # are skipped or recovered (streams/sink.py). What it does need, that the write in flight finishes
        # before another worker takes the partition, `on_revoked` gives: Faust awaits it before rejoining.
        stream_wait_empty=False,
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(0.5, session_s / 5),
        broker_rebalance_timeout=max(session_s, 10.0),
        # Kafka offsets are not committed (nothing is acknowledged): each partition's offset is stored with its
        # rows (stream_partitions) and a worker given a partition seeks there (`on_assigned`). Commits racing a
        # rebalance made the broker of the tests drop the member again and again; a missed seek only costs
        # skipped duplicates.
        broker_commit_interval=limits.STREAM_COMMIT_INTERVAL_MS / 1000,
        broker_commit_every=2**62,
        consumer_max_fetch_size=limits.KAFKA_MESSAGE_BYTES_MAX,
        web_enabled=True,
        web_host=settings.stream_web_host,
        web_port=settings.stream_web_port,
        web_bind=settings.stream_web_host,
    )
    dead_letter = app.topic(families.topic_name(settings.topic_prefix, families.DEAD_LETTER),
                            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    batch_max = settings.stream_batch_events_max
    within_s = settings.stream_batch_wait_ms / 1000

    def agent_for(topic_name: str) -> Any:
        async def project_topic(stream: Any) -> None:
            # Never acknowledged: Faust then never commits offsets (each partition's offset lives with its
            # rows, and `on_assigned` seeks there), so no commit can race a rebalance.
            async for events in stream.noack_take(batch_max, within_s):
                delivered = [
                    Delivered(e.message.topic, e.message.partition, e.message.offset, e.message.key,
                              e.message.value)
                    for e in events
                ]
                await projector.handle(delivered, dead_letter)

        project_topic.__name__ = f"project_{topic_name.rsplit('.', 1)[-1]}"
        return project_topic

    served = {families.topic_name(settings.topic_prefix, f) for f in served_families(settings)}
    for topic_name in sorted(t for t in partitions if t in served):
        topic = app.topic(topic_name, key_type=bytes, value_type=bytes, key_serializer="raw",
                          value_serializer="raw")
        app.agent(topic, name=f"project-{topic_name}")(agent_for(topic_name))

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        await projector.forget({(tp.topic, tp.partition) for tp in revoked})

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
        tps = {(tp.topic, tp.partition) for tp in assigned}
        new = tps - projector.assigned
        projector.assign(tps)
        if not new:
            return
        loop = asyncio.get_running_loop()
        offsets = await loop.run_in_executor(projector._executor, projector.stored_offsets, new)
        seeks = {tp: offsets[(tp.topic, tp.partition)] for tp in assigned if (tp.topic, tp.partition) in offsets}
        if seeks:
            await _seek(app, seeks)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(projector.metrics_text(), content_type=PROMETHEUS_TEXT)

    def highwater(tp: TP) -> int:
        from faust.types import TP as FaustTP

        return app.consumer.highwater(FaustTP(*tp))

    projector.highwater = highwater
    return app, projector
