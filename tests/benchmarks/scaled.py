"""Scaled deployment (issue 6): relay messages/s, Faust projection events/s with one and two workers, and the lag
from append to queryable at a steady devnet rate, each beside baselines measured in the same run.

Real parts, started here on 127.0.0.1 and stopped here, each by its process id (tests/scaled_env.py): PostgreSQL
(the event store), noida-db (the Kafka-protocol broker), the ClickHouse HTTP endpoint over chdb (tests/chserver.py,
a fresh one per configuration), `tally stream` workers and, for (c), `tally relay`. The relay of (a) and (b) runs
in this process (the `Relay` class `tally relay` runs).

The log: the devnet's command stream (`writes.devnet.build_chain`: `LOG_BLOCKS` blocks of `TXS_PER_BLOCK` signed
transfers, about one in ten built to be rejected, each block followed by its votes, which finalize it; signed once
and cached in .bench-cache/), submitted through `LedgerService` to PostgreSQL (scaled) and to SQLite (embedded):
the same events in both.

(a) **relay**: `Relay.run_once` until the log is published (events, a watermark to every partition after each
    batch, its checkpoint), beside two baselines: `read` (the log's notifications out of PostgreSQL, no Kafka) and
    `produce` (the same event messages, encoded beforehand, sent with the relay's producer settings and flushed
    per relay batch: what the client and the broker allow). Measured once per configuration of (b).
(b) **workers**: per configuration, fresh topics and views; the relay publishes the genesis alone, the workers
    start and project it (their start-up, timed apart), then they are paused (SIGSTOP; the session timeout is
    raised above the pause), the relay publishes the rest, and from SIGCONT they are timed until the views'
    checkpoint is the log's end: a backlog projected at full speed. Their CPU seconds and the endpoint's come
    from /proc; every table's row count is checked against the embedded follower's. Two workers are two consumer
    groups, each serving half of the families (`tally stream --families`), as in tests/test_scaled_e2e.py:
    noida-db stalls a busy consumer group when a second member joins (two members of one group, started
    together, finished in three tries of four here and stalled in the fourth; and with one chain, the member
    given partition 0 got every block and most votes: see docs/operations.md, Scale). Baselines: the embedded
    follower over the SQLite log into the in-process engine (what `tally up` runs), and the same follower over
    the PostgreSQL log into the workers' endpoint (its own database): the scaled store without Kafka and Faust.
(c) **lag**: `LAG_BLOCKS` more blocks, one every `LAG_INTERVAL_MS` with their votes right after (as the devnet
    does), appended by this process; a poller reads `ReadModel.snapshot()` (where every GraphQL read starts: the
    checkpoint and the head it bounds) every `POLL_MS` and notes when each block's height becomes the queryable
    head. Scaled: `tally relay` and the two workers of (b), read over HTTP. Baselines: the follower thread
    (polling every `follower_poll_interval_ms`) over the PostgreSQL log into the same endpoint, then the embedded
    stack (SQLite, the follower thread, the in-process engine).

Absolute figures on 2 shared cores are noise; the ratios to the same run's baselines and the CPU seconds are the
figures. The settings the scaled processes ran with are in the result (`settings`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clickhouse_connect
from kafka import KafkaProducer

from projections.project import HEAD
from projections.queries import ReadModel
from projections.store import ProjectionStore
from schemas import limits
from schemas.settings import Settings
from streams import families
from streams.follower import Follower
from streams.messages import EventMessage, encode_event
from streams.relay import PRODUCER_SETTINGS, Relay, kind_of
from streams.topics import create_topics
from tests import scaled_env as env
from tests.benchmarks.corpus import CACHE_DIR
from writes.devnet import CHAIN_ID, build_chain
from writes.service import LedgerApplication, LedgerService

LOG_BLOCKS = 600  # with 3 votes and a finality each: about 3,000 events
TXS_PER_BLOCK = 20  # the devnet's default
LAG_BLOCKS = 30
LAG_INTERVAL_MS = 1_000  # the devnet's default
POLL_MS = 20
PARTITIONS = limits.TOPIC_PARTITIONS
SESSION_TIMEOUT_MS = 30_000  # longer than any pause of (b)
SUBMIT_CHUNK = 200
WAIT_S = 180.0
SEED = b"tally-bench-scaled"
# Two workers: one consumer group each, half of the families each (see the module docstring).
TWO_WORKERS = ("blocks,transactions,validators", "votes,bridge,attestations")
# name -> the families of each worker (None: all)
CONFIGS: dict[str, Sequence[str | None]] = {"one": [None], "two": TWO_WORKERS}
LAG_CONFIG = "two"


# ------------------------------------------------------------------------------------------------ the log


def devnet_commands(blocks: int, txs_per_block: int) -> list[dict[str, Any]]:
    """The devnet's commands for `blocks` blocks, signed once and cached (git-ignored)."""
    path = CACHE_DIR / f"scaled-devnet-{blocks}x{txs_per_block}.json"
    if path.exists():
        return list(json.loads(path.read_text()))
    chain = build_chain(SEED, blocks=blocks, txs_per_block=txs_per_block, rng=random.Random(11))
    CACHE_DIR.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(chain.commands))
    tmp.replace(path)  # whole or absent
    return chain.commands


def split_at_height(commands: Sequence[dict[str, Any]], height: int) -> int:
    """The index of the block command at `height` (the commands before it end with the votes of height - 1)."""
    return next(i for i, c in enumerate(commands) if c["kind"] == "block" and c["height"] == height)


def submit_all(service: LedgerService, commands: Sequence[dict[str, Any]]) -> None:
    for start in range(0, len(commands), SUBMIT_CHUNK):
        results = service.submit_many(list(commands[start:start + SUBMIT_CHUNK]))
        refused = [r for r in results if r["status"] != "accepted"]
        assert not refused, refused[:2]


def blocks_by_height(commands: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(block, its votes) in order."""
    out: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for c in commands:
        if c["kind"] == "block":
            out.append((c, []))
        elif c["kind"] == "vote":
            out[-1][1].append(c)
    return out


# ------------------------------------------------------------------------------------------------ helpers


@dataclass
class Timed:
    seconds: float
    cpu_seconds: float  # this process's, its threads included


def timed(run: Callable[[], Any]) -> tuple[Timed, Any]:
    start, start_cpu = time.perf_counter(), time.process_time()
    result = run()
    return Timed(time.perf_counter() - start, time.process_time() - start_cpu), result


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def checkpoint(client: Any) -> int:
    rows = client.query("SELECT max(position) FROM checkpoints WHERE projector = 'ledger'").result_rows
    return int(rows[0][0]) if rows else 0


def wait_checkpoint(client: Any, target: int, procs: Sequence[subprocess.Popen[bytes]], logs: Path) -> float:
    """Polls the views' checkpoint until it is `target`; returns the monotonic time it was seen there."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if checkpoint(client) >= target:
            return time.monotonic()
        dead = [p.args for p in procs if p.poll() is not None]
        assert not dead, f"exited: {dead} (logs in {logs})"
        time.sleep(POLL_MS / 1000)
    raise AssertionError(f"the views did not reach position {target} in {WAIT_S} s (logs in {logs})")


def pause(procs: Sequence[subprocess.Popen[bytes]], sig: int) -> None:
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, sig)


# ------------------------------------------------------------------------------------------------ (a) relay


def read_log(app: LedgerApplication) -> int:
    """Every notification's bytes, in the relay's batch size: the floor of anything that publishes the log."""
    count, cursor = 0, 1
    while section := app.recorder.select_notifications(cursor, limits.RELAY_BATCH_EVENTS_MAX):
        count += sum(len(n.state) for n in section)
        cursor = section[-1].id + 1
    return count


def encoded_messages(app: LedgerApplication, prefix: str) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) of every event, as the relay would send it (not timed)."""
    out = []
    for n in app.recorder.select_notifications(1, 10**9):
        kind = kind_of(n)
        family, key = families.route(kind, app.mapper.transcoder.decode(n.state))
        value = encode_event(EventMessage(position=n.id, originator_id=n.originator_id,  # type: ignore[arg-type]
                                          originator_version=n.originator_version, topic=n.topic, kind=kind,
                                          state=n.state))
        out.append((families.topic_name(prefix, family), key, value))
    return out


def produce(bootstrap: str, messages: Sequence[tuple[str, bytes, bytes]]) -> int:
    """The messages through the relay's producer settings, flushed and checked per relay batch."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="tally-bench", **PRODUCER_SETTINGS)
    try:
        for start in range(0, len(messages), limits.RELAY_BATCH_EVENTS_MAX):
            futures = [producer.send(t, value=v, key=k or None)
                       for t, k, v in messages[start:start + limits.RELAY_BATCH_EVENTS_MAX]]
            producer.flush(timeout=120)
            for f in futures:
                f.get(timeout=120)
    finally:
        producer.close(timeout=120)
    return len(messages)


def publish(app: LedgerApplication, settings: Settings, events_max: int | None = None) -> Relay:
    """A relay from its checkpoint to the log's end (`events_max`: one batch of at most that many)."""
    relay = Relay(app, settings if events_max is None else settings.with_(relay_batch_events_max=events_max))
    try:
        if events_max is not None:
            relay.run_once()
        else:
            while relay.run_once():
                pass
    finally:
        relay.close()
    return relay


def rate(events: int, t: Timed, log_bytes: int | None = None) -> dict[str, Any]:
    out = {"s": round(t.seconds, 3), "cpu_s": round(t.cpu_seconds, 3), "events_per_s": round(events / t.seconds)}
    if log_bytes is not None:
        out["mb_per_s"] = round(log_bytes / t.seconds / 1e6, 1)
    return out


# ------------------------------------------------------------------------------------------------ (b) workers


@contextlib.contextmanager
def workers(base: Path, environ: dict[str, str], families_each: Sequence[str | None]
            ) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`tally stream` processes, one consumer group each; stopped (resumed first) on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, fams in enumerate(families_each):
            args = ["stream", "--web-port", str(env.free_port())] + (["--families", fams] if fams else [])
            group = {"TALLY_STREAM_GROUP_SUFFIX": uuid.uuid4().hex[:8]}
            procs.append(env.tally(args, base / f"worker-{i}.log", {**environ, **group}))
        yield procs
    finally:
        pause(procs, signal.SIGCONT)
        for p in procs:
            env.stop(p)


@contextlib.contextmanager
def clickhouse_endpoint(base: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """tests/chserver.py on a chdb path of its own, as tests/scaled_env.py starts it, with its process (its CPU
    time is part of what the workers cost)."""
    port = env.free_port()
    proc = env.spawn([sys.executable, "-m", "tests.chserver", "--path", str(base / "chdb"), "--port", str(port)],
                     base / "clickhouse.log")
    try:
        env.wait_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        env.stop(proc)


def project_with_workers(name: str, base: Path, pg: dict[str, str], bootstrap: str, app: LedgerApplication,
                         families_each: Sequence[str | None], expected_counts: dict[str, int],
                         stack: contextlib.ExitStack) -> dict[str, Any]:
    """(a) and (b) for one configuration; its endpoint and workers stay up until `stack` closes."""
    base.mkdir(parents=True)
    dsn, endpoint = stack.enter_context(clickhouse_endpoint(base))
    prefix = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    environ = scaled_environ(pg, bootstrap, dsn, prefix, base)
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, topic_partitions=PARTITIONS,
                        projection_dsn=dsn)
    create_topics(settings)  # `tally topics create`
    ProjectionStore(dsn).close()  # `tally views create`
    publish(app, settings, events_max=1)  # the genesis: the workers' start-up is timed apart
    end = app.recorder.max_notification_id() or 0
    client = clickhouse_connect.get_client(dsn=dsn, database="tally")
    stack.callback(client.close)
    procs = stack.enter_context(workers(base, environ, families_each))
    spawned = time.monotonic()
    ready = wait_checkpoint(client, 1, procs, base)
    pause(procs, signal.SIGSTOP)
    relay_t, relay = timed(lambda: publish(app, settings))
    assert relay.position == end, (relay.position, end)
    watched = [*procs, endpoint]
    cpu_before = [proc_cpu_s(p.pid) for p in watched]
    resumed = time.monotonic()
    pause(procs, signal.SIGCONT)
    done = wait_checkpoint(client, end, procs, base)
    cpu = [proc_cpu_s(p.pid) - before for p, before in zip(watched, cpu_before, strict=True)]
    views = ProjectionStore(dsn, create=False)
    try:
        counts = views.counts()
        by_worker = dict(client.query("SELECT worker, sum(length(positions)) FROM stream_batches GROUP BY worker"
                                      ).result_rows)
    finally:
        views.close()
    assert counts == expected_counts, (counts, expected_counts)
    events = end - 1
    return {
        "workers": len(procs), "consumer_groups": len(procs),
        "families": [f or "all" for f in families_each],
        # Events each worker projected (its share of the partitions that carry events; the genesis included).
        "events_by_worker": [sum(int(n) for w, n in by_worker.items() if str(w).endswith(f"-{p.pid}"))
                             for p in procs],
        "events": events, "start_s": round(ready - spawned, 2), "s": round(done - resumed, 3),
        "events_per_s": round(events / (done - resumed)),
        "workers_cpu_s": [round(c, 2) for c in cpu[:-1]], "clickhouse_endpoint_cpu_s": round(cpu[-1], 2),
        "relay": {"events": relay.events_published, "batches": relay.batches,
                  "watermarks": relay.watermarks_published, **rate(relay.events_published, relay_t)},
        "_dsn": dsn, "_environ": environ, "_procs": procs,
    }


def scaled_environ(pg: dict[str, str], bootstrap: str, dsn: str, prefix: str, base: Path) -> dict[str, str]:
    environ = env.scaled_env(postgres_cfg=pg, bootstrap=bootstrap, dsn=dsn, prefix=prefix, partitions=PARTITIONS,
                             data_dir=base / "data")
    environ.pop("TALLY_STREAM_BATCH_WAIT_MS")  # the shipped default, as deploy/ runs it
    environ["TALLY_STREAM_SESSION_TIMEOUT_MS"] = str(SESSION_TIMEOUT_MS)
    return environ


def follower_rate(app: Any, store: ProjectionStore) -> tuple[Timed, Follower]:
    follower = Follower(app, store)
    t, _ = timed(follower.run_until_caught_up)
    return t, follower


# ------------------------------------------------------------------------------------------------ (c) lag


class HeadWatch:
    """Polls `ReadModel.snapshot()` and notes when each height first becomes the queryable head."""

    def __init__(self, read_model: ReadModel) -> None:
        self._model = read_model
        self.seen: dict[int, float] = {}
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-head-watch", daemon=True)

    def __enter__(self) -> HeadWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def height(self) -> int:
        pointers = self._model.snapshot().chain(CHAIN_ID)
        return -1 if pointers is None else pointers[HEAD][0]

    def _run(self) -> None:
        top = self.height()
        while not self._stop.is_set():
            height = self.height()
            now = time.monotonic()
            self.polls += 1
            for h in range(top + 1, height + 1):
                self.seen[h] = now
            top = max(top, height)
            self._stop.wait(POLL_MS / 1000)


def steady_lag(service: LedgerService, read_model: ReadModel, blocks: Sequence[tuple[dict[str, Any],
               list[dict[str, Any]]]]) -> dict[str, Any]:
    """Each block appended on the clock with its votes after it; append-to-queryable lag per block."""
    appended: dict[int, float] = {}
    submit_ms = []
    with HeadWatch(read_model) as watch:
        start = time.monotonic() + 0.5
        for i, (block, votes) in enumerate(blocks):
            delay = start + i * LAG_INTERVAL_MS / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            began = time.monotonic()
            result = service.submit(block)
            appended[block["height"]] = time.monotonic()  # committed: the event store holds it
            submit_ms.append((appended[block["height"]] - began) * 1000)
            assert result["status"] == "accepted", result
            for r in service.submit_many(votes):
                assert r["status"] == "accepted", r
        last = blocks[-1][0]["height"]
        deadline = time.monotonic() + WAIT_S
        while last not in watch.seen and time.monotonic() < deadline:
            time.sleep(0.05)
    missing = sorted(set(appended) - set(watch.seen))
    assert not missing, f"never queryable: heights {missing[:5]}"
    lags = [(watch.seen[h] - t) * 1000 for h, t in appended.items()]
    return {
        "blocks": len(lags), "p50_ms": round(statistics.median(lags)), "p95_ms": round(percentile(lags, 0.95)),
        "max_ms": round(max(lags)), "mean_ms": round(statistics.fmean(lags)),
        "append_p50_ms": round(statistics.median(submit_ms), 1), "polls": watch.polls,
    }


# ------------------------------------------------------------------------------------------------ the bench


def scaled_rates(log_blocks: int = LOG_BLOCKS, lag_blocks: int = LAG_BLOCKS) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    commands = devnet_commands(log_blocks + 2 * lag_blocks, TXS_PER_BLOCK)
    split = split_at_height(commands, log_blocks + 1)
    log_commands, lag_cmds = commands[:split], blocks_by_height(commands[split:])
    lag_a, lag_b = lag_cmds[:lag_blocks], lag_cmds[lag_blocks:]  # (c): PostgreSQL's log takes both
    with tempfile.TemporaryDirectory(prefix="tally-bench-scaled-") as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp)
        pg = stack.enter_context(env.postgres(base / "pg"))
        bootstrap = stack.enter_context(env.broker(base))
        pg_settings = Settings(data_dir=base / "pg-data", event_store="postgres", postgres_host=pg["host"],
                               postgres_port=int(pg["port"]), postgres_dbname=pg["dbname"],
                               postgres_user=pg["user"], verify_workers=1)
        scaled_ledger = LedgerService(pg_settings)
        stack.callback(scaled_ledger.close)
        embedded_ledger = LedgerService(Settings(data_dir=base / "embedded", verify_workers=1))
        stack.callback(embedded_ledger.close)
        submit_all(scaled_ledger, log_commands)
        submit_all(embedded_ledger, log_commands)
        end = scaled_ledger.max_position()
        assert end == embedded_ledger.max_position()

        # Baselines: the embedded follower, in-process engine (what `tally up` runs).
        embedded_store = ProjectionStore(f"chdb://{(base / 'embedded' / 'views').as_posix()}")
        stack.callback(embedded_store.close)
        embedded_t, _ = follower_rate(embedded_ledger.app, embedded_store)
        expected = embedded_store.counts()

        # (a) baselines and the relay, in this process.
        relay_app = LedgerApplication(env=pg_settings.event_store_env())
        stack.callback(relay_app.close)
        read_t, log_bytes = timed(lambda: read_log(relay_app))
        raw_prefix = f"bench-raw-{uuid.uuid4().hex[:6]}"
        create_topics(Settings(kafka_bootstrap=bootstrap, topic_prefix=raw_prefix, topic_partitions=PARTITIONS))
        messages = encoded_messages(relay_app, raw_prefix)
        produce_t, _ = timed(lambda: produce(bootstrap, messages))

        # (b) each configuration on fresh topics and views; the last one stays up for (c).
        configs: dict[str, dict[str, Any]] = {}
        for name, families_each in CONFIGS.items():
            last = name == LAG_CONFIG
            with contextlib.ExitStack() as config_stack:
                configs[name] = project_with_workers(name, base / name, pg, bootstrap, relay_app, families_each,
                                                     expected, stack if last else config_stack)
        two = configs[LAG_CONFIG]
        # Baseline: the same follower over the PostgreSQL log into the workers' endpoint, a database of its own.
        http_store = ProjectionStore(two["_dsn"], database="bench_follower")
        stack.callback(http_store.close)
        http_t, _ = follower_rate(relay_app, http_store)
        assert http_store.counts() == expected

        # (c) lag: scaled (a `tally relay` process, the two workers of (b)); then the follower over the same
        # PostgreSQL log into the same endpoint (the scaled path without Kafka and Faust), the scaled processes
        # stopped; then the embedded stack.
        relay_proc = env.tally(["relay"], base / "relay.log", two["_environ"])
        stack.callback(env.stop, relay_proc)
        _wait_log(base / "relay.log", "after position", relay_proc)
        views = ProjectionStore(two["_dsn"], create=False)
        stack.callback(views.close)
        scaled_lag = steady_lag(scaled_ledger, ReadModel(views), lag_a)
        for p in (*two["_procs"], relay_proc):
            assert p.poll() is None, f"{p.args} exited (logs in {base})"
            env.stop(p)
        http_follower = Follower(relay_app, http_store)
        http_follower.start()
        stack.callback(http_follower.stop)
        http_follower_lag = steady_lag(scaled_ledger, ReadModel(http_store), lag_b)
        http_follower.stop()
        follower = Follower(embedded_ledger.app, embedded_store)
        follower.start()
        stack.callback(follower.stop)
        embedded_lag = steady_lag(embedded_ledger, ReadModel(embedded_store), lag_a)
        load_after = os.getloadavg()[0]

    txs = sum(len(c["txs"]) for c in log_commands if c["kind"] == "block")
    for config in configs.values():
        for key in [k for k in config if k.startswith("_")]:
            del config[key]
        config["ratio_to_embedded_follower"] = round(config["events_per_s"] * embedded_t.seconds / end, 2)
    relay_runs = [config["relay"] for config in configs.values()]
    best_relay = min(relay_runs, key=lambda r: r["s"])
    return {
        "name": "scaled",
        "load_average": {"before": round(load_before, 1), "after": round(load_after, 1)},
        "log": {"events": end, "blocks": log_blocks, "txs_per_block": TXS_PER_BLOCK, "txs": txs,
                "mb": round(log_bytes / 1e6, 1), "bytes_per_event": round(log_bytes / end)},
        "settings": {"partitions_per_topic": PARTITIONS, "relay_batch_events_max": limits.RELAY_BATCH_EVENTS_MAX,
                     "stream_batch_events_max": limits.STREAM_BATCH_EVENTS_MAX,
                     "stream_batch_wait_ms": limits.STREAM_BATCH_WAIT_MS,
                     "relay_poll_interval_ms": limits.FOLLOWER_POLL_INTERVAL_MS,
                     "follower_poll_interval_ms": limits.FOLLOWER_POLL_INTERVAL_MS,
                     "stream_session_timeout_ms": SESSION_TIMEOUT_MS,
                     "two_workers": "two consumer groups, one member each, families split: "
                                    + " | ".join(TWO_WORKERS)},
        "relay": {
            "events_per_s": best_relay["events_per_s"],
            "mb_per_s": round(log_bytes / best_relay["s"] / 1e6, 1),
            "runs": relay_runs,
            "baseline_read": rate(end, read_t, log_bytes),
            "baseline_produce": rate(len(messages), produce_t, log_bytes),
            "ratio_to_produce": round(produce_t.seconds / best_relay["s"], 2),
        },
        "workers": configs,
        "baseline_embedded_follower": rate(end, embedded_t),
        "baseline_follower_pg_to_http_endpoint": rate(end, http_t),
        "lag": {"interval_ms": LAG_INTERVAL_MS, "poll_ms": POLL_MS, "scaled_two_workers": scaled_lag,
                "baseline_follower_pg_to_http_endpoint": http_follower_lag, "baseline_embedded": embedded_lag,
                "p50_ratio_to_embedded": round(scaled_lag["p50_ms"] / max(1, embedded_lag["p50_ms"]), 1),
                "p50_ratio_to_follower_http": round(scaled_lag["p50_ms"] / max(1, http_follower_lag["p50_ms"]), 1)},
    }


def _wait_log(path: Path, text: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + env.START_TIMEOUT_S
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        assert proc.poll() is None, path.read_text(errors="replace")[-2000:]
        time.sleep(0.1)
    raise TimeoutError(f"{path.name} never said {text!r}")
