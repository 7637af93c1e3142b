"""The scaled log's topics: created by the project (`tally topics create`), checked before a relay or a worker
starts (a worker must never auto-create a topic with the broker's defaults)."""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from schemas import limits
from schemas.settings import Settings
from streams import families

# Data topics keep every message: a worker added later, or views rebuilt after a DDL change, replay from the
# start of each partition (docs/operations.md, Replay). The event store stays the source of truth.
DATA_TOPIC_CONFIG = {"retention.ms": "-1", "max.message.bytes": str(limits.KAFKA_MESSAGE_BYTES_MAX)}
PROGRESS_TOPIC_CONFIG = {"retention.ms": "-1"}
DEAD_LETTER_CONFIG = {"retention.ms": str(30 * 24 * 3600 * 1000), "max.message.bytes":
                      str(limits.KAFKA_MESSAGE_BYTES_MAX)}


class TopicsMissing(Exception):
    """A topic the scaled deployment needs does not exist (the message names it and says what to run)."""


def wanted(settings: Settings) -> list[tuple[str, int, dict[str, str]]]:
    """(topic, partitions, config) of every topic of the scaled deployment."""
    prefix = settings.topic_prefix
    topics = [(t, settings.topic_partitions, DATA_TOPIC_CONFIG) for t in families.data_topics(prefix)]
    topics.append((families.topic_name(prefix, families.RELAY_PROGRESS), 1, PROGRESS_TOPIC_CONFIG))
    topics.append((families.topic_name(prefix, families.DEAD_LETTER), 1, DEAD_LETTER_CONFIG))
    return topics


def create_topics(settings: Settings) -> dict[str, str]:
    """Creates every missing topic; returns topic -> "created" | "exists". Existing topics are left as they are
    (their partition count included: see docs/operations.md to add partitions)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="tally-admin")
    outcome: dict[str, str] = {}
    try:
        for topic, partitions, config in wanted(settings):
            new = NewTopic(topic, num_partitions=partitions, replication_factor=settings.topic_replication,
                           topic_configs=config)
            try:
                admin.create_topics([new], timeout_ms=30_000)
                outcome[topic] = "created"
            except TopicAlreadyExistsError:
                outcome[topic] = "exists"
    finally:
        admin.close()
    return outcome


def partition_counts(settings: Settings) -> dict[str, int]:
    """Partitions of every topic of the deployment; TopicsMissing names those that do not exist."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, client_id="tally-topic-check",
                             enable_auto_commit=False)
    try:
        counts: dict[str, int] = {}
        missing = []
        for topic, _, _ in wanted(settings):
            found: Any = consumer.partitions_for_topic(topic)
            if not found:
                missing.append(topic)
            else:
                counts[topic] = len(found)
    finally:
        consumer.close()
    if missing:
        raise TopicsMissing(f"missing topics {missing} on {settings.kafka_bootstrap}: run `tally topics create`")
    return counts


def data_partition_counts(settings: Settings) -> dict[str, int]:
    counts = partition_counts(settings)
    return {t: counts[t] for t in families.data_topics(settings.topic_prefix)}
