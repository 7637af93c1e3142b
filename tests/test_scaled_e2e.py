"""The scaled deployment end to end, with real parts started here on 127.0.0.1 and stopped here: PostgreSQL (the
event store), noida-db (the Kafka-protocol broker), ClickHouse's HTTP interface over chdb (tests/chserver.py),
`tally relay`, two `tally stream` workers, two `tally api` replicas, and Prometheus.

One module-scoped deployment; the tests run in file order and each leaves it converged:
1. the same commands give the same tables, row for row, as the embedded follower, after kill -9 of a worker and
   of the relay mid-stream;
2. a relay that publishes the whole log again (its checkpoint lost) changes nothing;
3. undecodable messages go to the dead-letter topic, and the workers go on;
4. the API replicas answer from the views; Prometheus scrapes them and the workers, and PromQL answers.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from projections.project import COLUMNS
from projections.queries import ReadModel
from projections.store import ProjectionStore
from schemas import build
from schemas.events import EVENT_TYPES
from schemas.settings import Settings
from streams import families, messages
from streams.follower import Follower
from tests import scaled_env as env
from tests.chain import ALICE, BOB, CAROL, Chain, genesis_command, keypair, validators
from writes.service import LedgerService

pytestmark = pytest.mark.slow
PREFIX = "e2e"
PARTITIONS = 2
CONVERGE_TIMEOUT_S = 90.0
RELAYER = keypair("relayer-a")
# Two worker groups, each serving half of the families (one consumer group each): the broker of these tests
# (noida-db) was seen to stall a busy consumer group when a second member joined, so each group has one member
# here; several members per group is the production scale-out (docs/operations.md: what could not run here).
WORKER_FAMILIES = {"w1": "blocks,transactions,validators", "w2": "votes,bridge,attestations"}


@contextlib.contextmanager
def _deployment(base: Path, workers: tuple[str, ...] = ("w1", "w2")) -> Iterator[dict[str, Any]]:
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(env.postgres(base / "pg"))
        bootstrap = stack.enter_context(env.broker(base))
        dsn = stack.enter_context(env.clickhouse(base))
        environ = env.scaled_env(postgres_cfg=pg, bootstrap=bootstrap, dsn=dsn, prefix=PREFIX,
                                 partitions=PARTITIONS, data_dir=base / "data")
        environ.update({"TALLY_STREAM_BATCH_EVENTS_MAX": "40", "TALLY_RELAY_BATCH_EVENTS_MAX": "30"})
        settings = Settings(
            data_dir=base / "data", event_store="postgres", postgres_host=pg["host"],
            postgres_port=int(pg["port"]), postgres_dbname=pg["dbname"], postgres_user=pg["user"],
            verify_workers=1, reserves_every_blocks=2, kafka_bootstrap=bootstrap, topic_prefix=PREFIX,
            projection_dsn=dsn,
        )
        service = LedgerService(settings)
        stack.callback(service.close)
        chain = Chain(service, genesis_command(vals=validators(), relayers=[("relayer-a", RELAYER)]), validators())
        every_kind(chain)
        for args in (["topics", "create"], ["views", "create"]):
            proc = env.tally(args, base / "setup.log", environ)
            assert proc.wait(120) == 0, (base / "setup.log").read_text()
        ports = {name: env.free_port() for name in ("relay", "w1", "w2", "api1", "api2")}
        procs: dict[str, Any] = {}

        def start(name: str) -> None:
            if name == "relay":
                args = ["relay", "--metrics-port", str(ports[name])]
            elif name.startswith("w"):
                args = ["stream", "--web-port", str(ports[name]), "--families", WORKER_FAMILIES[name]]
            else:
                args = ["api", "--port", str(ports[name])]
            # A group of its own per start (see WORKER_FAMILIES): the broker keeps a killed member forever.
            group = {"TALLY_STREAM_GROUP_SUFFIX": uuid.uuid4().hex[:8]} if name.startswith("w") else {}
            procs[name] = env.tally(args, base / f"{name}.log", {**environ, **group})

        for name in ("relay", *workers, "api1", "api2"):
            start(name)
        stack.callback(lambda: [env.stop(p) for p in procs.values()])
        for name in ("api1", "api2"):
            env.wait_http(f"http://127.0.0.1:{ports[name]}/healthz", proc=procs[name])
        yield {"base": base, "service": service, "chain": chain, "dsn": dsn, "bootstrap": bootstrap,
               "procs": procs, "start": start, "ports": ports, "environ": environ}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with _deployment(tmp_path_factory.mktemp("scaled")) as d:
        yield d


@pytest.fixture(scope="module")
def embedded(chdb_dsn: str) -> Iterator[ProjectionStore]:
    store = ProjectionStore(chdb_dsn, database=f"embedded_{uuid.uuid4().hex[:12]}")
    yield store
    store.drop()
    store.close()


# -------------------------------------------------------------------------------------------- commands


def every_kind(chain: Chain) -> None:
    """Commands whose events are every kind of schemas/events.py: genesis, blocks, votes, finality, a bridged
    asset attested, a side block, a reorganization (revert, reapply, apply)."""
    b1 = chain.apply([build.bridge_deposit(chain.chain_id, RELAYER, "d1", "USDC", ALICE.address, 700),
                      chain.transfer(ALICE, BOB.address, 5, fee=1)])
    b2 = chain.apply([chain.transfer(BOB, CAROL.address, 3, fee=1)])
    chain.finalize(b1["hash"], 1)
    chain.finalize(b2["hash"], 2)  # finality passes height 2: USDC is attested
    chain.apply([chain.transfer(CAROL, ALICE.address, 1)])
    side = chain.submit(chain.block([chain.transfer(ALICE, CAROL.address, 2)], proposer=1, parent=b2["hash"]))
    assert side["status"] == "accepted" and side["canonical"] is False, side
    longer = chain.submit(chain.block([], proposer=2, parent=side["hash"]))
    assert longer["status"] == "accepted" and longer["reorg"], longer
    chain.finalize(longer["hash"], longer["height"])


def more_blocks(chain: Chain, blocks: int) -> None:
    """Blocks of three transfers, each voted final by every validator."""
    for _ in range(blocks):
        txs = [chain.transfer(ALICE, BOB.address, 1, fee=1), chain.transfer(BOB, CAROL.address, 1, fee=1),
               chain.transfer(CAROL, ALICE.address, 1, fee=1)]
        result = chain.apply(txs)
        chain.finalize(result["hash"], result["height"])


# -------------------------------------------------------------------------------------------- checks


def views_client(d: dict[str, Any]) -> Any:
    return clickhouse_connect.get_client(dsn=d["dsn"], database="tally")


def scaled_checkpoint(client: Any) -> int:
    return int(client.query("SELECT max(position) FROM checkpoints WHERE projector = 'ledger'").result_rows[0][0])


def wait_converged(d: dict[str, Any], timeout_s: float = CONVERGE_TIMEOUT_S) -> int:
    """Until the readers' checkpoint on the server is the log's last position; fails naming a dead process."""
    client = views_client(d)
    target = d["service"].max_position()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if scaled_checkpoint(client) == target:
                return target
            dead = {n: p.returncode for n, p in d["procs"].items() if p.poll() is not None}
            assert not dead, f"processes exited: {dead} (logs in {d['base']})"
            time.sleep(0.2)
    finally:
        client.close()
    raise AssertionError(f"the views did not reach position {target} in {timeout_s} s (logs in {d['base']})")


def table_rows(client: Any) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: [tuple(r) for r in client.query(f"SELECT {', '.join(cols)} FROM {table} ORDER BY ALL").result_rows]
        for table, cols in COLUMNS.items()
    }


def assert_same_as_embedded(d: dict[str, Any], embedded: ProjectionStore) -> None:
    follower = Follower(d["service"].app, embedded, batch_events_max=97)
    follower.run_until_caught_up()
    assert follower.position == d["service"].max_position()
    client = views_client(d)
    try:
        scaled, local = table_rows(client), table_rows(embedded.client)
        assert {t: len(r) for t, r in scaled.items()} == {t: len(r) for t, r in local.items()}
        for table in COLUMNS:
            assert scaled[table] == local[table], table
        assert scaled_checkpoint(client) == embedded.checkpoint()
    finally:
        client.close()


def worker_metrics(d: dict[str, Any], name: str) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{d['ports'][name]}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = out.get(key, 0.0) + float(value)
    return out


def total(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


# --------------------------------------------------------------------------------------------- tests


def test_the_log_carries_every_event_kind(deployment: dict[str, Any]) -> None:
    app = deployment["service"].app
    kinds = {app.mapper.to_domain_event(n).KIND for n in deployment["service"].notifications()}
    assert kinds == set(EVENT_TYPES), "the commands of this test must make an event of every kind"


def test_kill_9_of_a_worker_and_the_relay_mid_stream_still_gives_the_embedded_tables(
    deployment: dict[str, Any], embedded: ProjectionStore
) -> None:
    d = deployment
    writer = threading.Thread(target=more_blocks, args=(d["chain"], 40), daemon=True)
    writer.start()
    client = views_client(d)
    try:
        deadline = time.monotonic() + CONVERGE_TIMEOUT_S
        while scaled_checkpoint(client) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scaled_checkpoint(client) >= 60, f"the workers did not start (logs in {d['base']})"
    finally:
        client.close()
    env.kill9(d["procs"]["w1"])
    env.kill9(d["procs"]["relay"])
    time.sleep(0.5)
    d["start"]("relay")
    d["start"]("w1")
    writer.join(120)
    assert not writer.is_alive()
    wait_converged(d)
    assert_same_as_embedded(d, embedded)


def test_a_relay_that_publishes_the_whole_log_again_changes_nothing(
    deployment: dict[str, Any], embedded: ProjectionStore
) -> None:
    d = deployment
    before = sum(total(worker_metrics(d, w), "tally_stream_duplicates_total") for w in ("w1", "w2"))
    env.stop(d["procs"]["relay"])
    producer = KafkaProducer(bootstrap_servers=d["bootstrap"], acks="all", enable_idempotence=True)
    progress = families.topic_name(PREFIX, families.RELAY_PROGRESS)
    producer.send(progress, value=messages.encode_progress(1), key=b"relay", partition=0).get(30)
    producer.close()
    d["start"]("relay")  # resumes after position 1: every later event is published a second time
    log_size = d["service"].max_position()
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    seen = 0.0
    while time.monotonic() < deadline:
        seen = sum(total(worker_metrics(d, w), "tally_stream_duplicates_total") for w in ("w1", "w2")) - before
        if seen >= log_size - 1:
            break
        time.sleep(0.3)
    assert seen >= log_size - 1, f"{seen} duplicates skipped of {log_size - 1} published again"
    wait_converged(d)
    assert_same_as_embedded(d, embedded)


def test_undecodable_messages_go_to_the_dead_letter_topic_and_workers_go_on(
    deployment: dict[str, Any], embedded: ProjectionStore
) -> None:
    d = deployment
    blocks = families.topic_name(PREFIX, "blocks")
    producer = KafkaProducer(bootstrap_servers=d["bootstrap"], acks="all")
    producer.send(blocks, value=b"\xff not a tally message", key=b"x", partition=0).get(30)
    producer.send(blocks, value=b'{"v": 9}\n', key=b"y", partition=1).get(30)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=d["bootstrap"], enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=1_000)
    dead_letter = TopicPartition(families.topic_name(PREFIX, families.DEAD_LETTER), 0)
    consumer.assign([dead_letter])
    consumer.seek_to_beginning(dead_letter)
    found: dict[bytes, dict[str, bytes]] = {}
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    while len(found) < 2 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for r in records:
                found[r.value] = dict(r.headers)
    consumer.close()
    assert set(found) == {b"\xff not a tally message", b'{"v": 9}\n'}
    assert found[b'{"v": 9}\n']["tally-error"].startswith(b"header is not a version 1")
    assert found[b'{"v": 9}\n']["tally-topic"] == blocks.encode()
    more_blocks(d["chain"], 2)
    wait_converged(d)
    assert_same_as_embedded(d, embedded)
    dead = sum(total(worker_metrics(d, w), "tally_stream_dead_letters_total") for w in ("w1", "w2"))
    assert dead >= 2


def test_api_replicas_and_prometheus(deployment: dict[str, Any], embedded: ProjectionStore) -> None:
    d = deployment
    wait_converged(d)
    query = {"query": "{ head { height hash finalizedHeight } }"}
    answers = [httpx.post(f"http://127.0.0.1:{d['ports'][a]}/graphql", json=query, timeout=10).json()
               for a in ("api1", "api2")]
    head = ReadModel(embedded).head(d["chain"].chain_id)
    assert head is not None
    assert answers[0] == answers[1]
    assert answers[0]["data"]["head"]["height"] == head["height"]
    refused = httpx.post(f"http://127.0.0.1:{d['ports']['api1']}/v1/commands", json={"kind": "vote"}, timeout=10)
    assert refused.json()["reason"] == "read_replica"
    targets = {"api": [f"127.0.0.1:{d['ports'][a]}" for a in ("api1", "api2")],
               "stream": [f"127.0.0.1:{d['ports'][w]}" for w in ("w1", "w2")],
               "relay": [f"127.0.0.1:{d['ports']['relay']}"]}
    with env.prometheus(d["base"], targets) as prometheus:
        log_position = d["service"].max_position()
        deadline = time.monotonic() + 60
        results: dict[str, Any] = {}
        while time.monotonic() < deadline:
            results = {
                q: httpx.get(f"{prometheus}/api/v1/query", params={"query": q}, timeout=5).json()["data"]["result"]
                for q in ("tally_projection_position", "sum(tally_stream_events_total)",
                          "max(tally_stream_watermark_position)", "up", "tally_relay_position",
                          "tally_relay_lag_events")
            }
            if all(results.values()) and len(results["tally_projection_position"]) == 2 and all(
                r["value"][1] == "1" for r in results["up"]
            ) and len(results["up"]) == 5:
                break
            time.sleep(0.5)
        assert len(results["up"]) == 5 and all(r["value"][1] == "1" for r in results["up"]), results["up"]
        assert float(results["tally_relay_position"][0]["value"][1]) == log_position
        assert float(results["tally_relay_lag_events"][0]["value"][1]) == 0
        assert {float(r["value"][1]) for r in results["tally_projection_position"]} == {log_position}
        assert float(results["sum(tally_stream_events_total)"][0]["value"][1]) > 0
        assert float(results["max(tally_stream_watermark_position)"][0]["value"][1]) == log_position
