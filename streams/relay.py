"""The relay (`tally relay`): the event store's log, in order, onto Kafka topics (kafka-python).

A loop of batches:
1. read the notifications after the last published position (bounded by events and bytes);
2. send each to its family's topic under its key (streams/families.py), framed by streams/messages.py;
3. flush, and check every send: with the idempotent producer and `acks=all`, an acknowledged message is on
   every in-sync replica, and a partition keeps the order of the sends;
4. send a watermark of the batch's last position to every partition of every data topic, so that each
   partition tells its consumer "nothing at or below this position is still to come here" (streams/sink.py);
5. send the batch's last position to the relay topic (one partition) and flush: that is the relay's
   checkpoint. On start the relay reads the last one and continues after it.

A crash anywhere before step 5 completes makes the restarted relay publish the batch again: consumers skip what
they already wrote (a position at or below their partition's progress). Nothing is lost: the checkpoint is
written only once every message of the batch and its watermarks are acknowledged. A failed send stops the relay
(the supervisor restarts it, and it resumes from its checkpoint) rather than skipping a position.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import Notification
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas import limits
from schemas.events import EVENT_TYPES
from schemas.settings import Settings
from streams import families
from streams.messages import EventMessage, Progress, decode, encode_event, encode_progress, encode_watermark

log = logging.getLogger(__name__)

# Explicit producer settings (STYLE 15): no message is acknowledged before every in-sync replica has it, the
# broker drops a retried duplicate, and a partition keeps the order of the sends.
PRODUCER_SETTINGS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "max_in_flight_requests_per_connection": 5,  # the idempotent producer keeps order up to 5
    "retries": 2**31 - 1,
    "delivery_timeout_ms": 120_000,
    "linger_ms": 5,
    "compression_type": None,  # the broker's topics decide; block events are mostly hex and compress ~2x
    "max_request_size": limits.KAFKA_MESSAGE_BYTES_MAX,
}
SEND_TIMEOUT_S = 120.0
_TOPIC_CLASS = {f"{cls.__module__}:{cls.__qualname__}": cls for cls in EVENT_TYPES.values()}


class RelayError(Exception):
    """The relay cannot go on without losing or skipping a position (the message says why)."""


def kind_of(notification: Notification) -> str:
    """The event kind of a stored event, from its eventsourcing topic; UnroutableEvent when unknown."""
    cls = _TOPIC_CLASS.get(notification.topic)
    if cls is None:
        raise families.UnroutableEvent(
            f"log position {notification.id}: topic {notification.topic!r} is no event kind of this version"
        )
    return cls.KIND


class Relay:
    def __init__(self, app: Any, settings: Settings, *, producer: KafkaProducer | None = None) -> None:
        """`app`: the ledger's eventsourcing application (its recorder and mapper); nothing is appended."""
        families.check_routes()
        self._app = app
        self._settings = settings
        self._prefix = settings.topic_prefix
        self._batch_events_max = settings.relay_batch_events_max
        self._poll_s = settings.relay_poll_interval_ms / 1000
        self._producer = producer or KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, client_id="tally-relay", **PRODUCER_SETTINGS
        )
        self._progress_topic = families.topic_name(self._prefix, families.RELAY_PROGRESS)
        self._partitions = self._data_partitions()
        self.position = self.read_progress()
        self._stopping = threading.Event()
        self.events_published = 0
        self.batches = 0
        self.watermarks_published = 0
        self.started_at = time.monotonic()
        # The log's last position as the relay's own loop last read it (its metrics read no store themselves).
        self.log_position_seen = self.position

    # ------------------------------------------------------------------------------------------ figures

    def log_position(self) -> int:
        return self._app.recorder.max_notification_id() or 0

    def lag(self) -> int:
        return max(0, self.log_position() - self.position)

    # --------------------------------------------------------------------------------------------- start

    def _data_partitions(self) -> dict[str, list[int]]:
        partitions: dict[str, list[int]] = {}
        for topic in families.data_topics(self._prefix):
            found = self._producer.partitions_for(topic)
            if not found:
                raise RelayError(f"topic {topic} does not exist: run `tally topics create` first")
            partitions[topic] = sorted(found)
        return partitions

    def read_progress(self) -> int:
        """The last position the relay published completely (0 when it never did)."""
        consumer = KafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap, client_id="tally-relay-progress",
            enable_auto_commit=False, group_id=None, consumer_timeout_ms=2_000,
        )
        try:
            tp = TopicPartition(self._progress_topic, 0)
            consumer.assign([tp])
            end = consumer.end_offsets([tp])[tp]
            if end == 0:
                return 0
            consumer.seek(tp, end - 1)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=1_000).values():
                    for record in records:
                        if record.offset == end - 1:
                            message = decode(record.value)
                            if not isinstance(message, Progress):
                                raise RelayError(f"{self._progress_topic} holds a {type(message).__name__}")
                            return message.position
            raise RelayError(f"cannot read the last message of {self._progress_topic}")
        finally:
            consumer.close()

    # ------------------------------------------------------------------------------------------ batches

    def run_once(self) -> int:
        """Publishes one batch; returns the number of events published."""
        batch = self._read_batch()
        if not batch:
            return 0
        futures = [self._send_event(n) for n in batch]
        self._producer.flush(timeout=SEND_TIMEOUT_S)
        _check(futures)
        last = batch[-1].id
        marker = encode_watermark(last)
        futures = [
            self._producer.send(topic, value=marker, key=None, partition=p)
            for topic, partitions in self._partitions.items() for p in partitions
        ]
        self.watermarks_published += len(futures)
        futures.append(self._producer.send(self._progress_topic, value=encode_progress(last), key=b"relay",
                                           partition=0))
        self._producer.flush(timeout=SEND_TIMEOUT_S)
        _check(futures)
        self.position = last
        self.events_published += len(batch)
        self.batches += 1
        return len(batch)

    def _read_batch(self) -> Sequence[Notification]:
        batch: list[Notification] = []
        size = 0
        page = self._app.recorder.select_notifications(self.position + 1, self._batch_events_max)
        for notification in page:
            if batch and size + len(notification.state) > limits.RELAY_BATCH_BYTES_MAX:
                break
            batch.append(notification)
            size += len(notification.state)
        return batch

    def _send_event(self, n: Notification) -> Any:
        kind = kind_of(n)
        family, key = families.route(kind, self._payload(n))
        value = encode_event(EventMessage(
            position=n.id, originator_id=n.originator_id,  # type: ignore[arg-type]
            originator_version=n.originator_version, topic=n.topic, kind=kind, state=n.state,
        ))
        return self._producer.send(families.topic_name(self._prefix, family), value=value, key=key or None)

    def _payload(self, n: Notification) -> dict[str, Any] | None:
        """The stored event's fields, for its key (the mapper's own steps, without building the event)."""
        mapper = self._app.mapper
        try:
            state = n.state
            if mapper.cipher:
                state = mapper.cipher.decrypt(state)
            if mapper.compressor:
                state = mapper.compressor.decompress(state)
            payload = mapper.transcoder.decode(state)
        except Exception:  # the worker records the same projection error as the embedded follower would
            log.exception("log position %d (%s): cannot decode its payload for its key", n.id, n.topic)
            return None
        return payload if isinstance(payload, dict) else None

    # -------------------------------------------------------------------------------------------- loop

    def run(self) -> None:
        """Publishes until `stop()`; a send that fails raises (restart the relay: it resumes)."""
        log.warning("relay: resuming after log position %d", self.position)
        while not self._stopping.is_set():
            published = self.run_once()
            self.log_position_seen = max(self.position, self.log_position())
            if not published:
                self._stopping.wait(self._poll_s)

    def stop(self) -> None:
        self._stopping.set()

    def close(self) -> None:
        self._producer.close(timeout=SEND_TIMEOUT_S)


class RelayFigures(Collector):
    """The relay's figures at scrape time, from what its loop last saw (no store read on the scraping thread)."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def collect(self) -> Any:
        r = self._relay
        yield GaugeMetricFamily("tally_relay_position", "last log position published completely (the checkpoint)",
                                value=r.position)
        yield GaugeMetricFamily("tally_relay_log_position", "the log's last position when the relay last looked",
                                value=r.log_position_seen)
        yield GaugeMetricFamily("tally_relay_lag_events", "log events not yet published",
                                value=max(0, r.log_position_seen - r.position))
        yield CounterMetricFamily("tally_relay_events_published", "events published since this relay started",
                                  value=r.events_published)
        yield CounterMetricFamily("tally_relay_batches", "batches published and checkpointed since start",
                                  value=r.batches)
        yield CounterMetricFamily("tally_relay_watermarks", "watermark messages sent since start",
                                  value=r.watermarks_published)


def relay_registry(relay: Relay) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RelayFigures(relay))
    return registry


def serve_metrics(relay: Relay, host: str, port: int) -> Any:
    """/metrics of the relay on its own thread (prometheus_client's server); returns the server (`shutdown()`)."""
    server, _thread = start_http_server(port, addr=host, registry=relay_registry(relay))
    return server


def _check(futures: Sequence[Any]) -> None:
    for future in futures:
        try:
            future.get(timeout=SEND_TIMEOUT_S)
        except Exception as exc:
            raise RelayError(f"a send failed, the batch is not published: {exc!r}") from exc
