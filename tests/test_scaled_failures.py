"""Outages of the scaled deployment's stores, as docs/operations.md (Failures) describes them: what each looks like
while it lasts, and that the views end equal to the embedded follower's once it is over.

Real parts, started here on 127.0.0.1 and stopped here: PostgreSQL, noida-db, the ClickHouse HTTP endpoint over chdb
(each stopped and started again on its port and data), `tally relay`, one `tally stream` worker and one `tally api`
replica. Killed workers and relays, the dead-letter topic and Prometheus are tests/test_scaled_e2e.py's.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx
import pytest

from projections.project import COLUMNS
from projections.store import ProjectionStore
from schemas.settings import Settings
from streams.follower import Follower
from tests import scaled_env as env
from tests.chain import ALICE, BOB, CAROL, Chain, genesis_command, validators
from writes.service import LedgerService

pytestmark = pytest.mark.slow
PREFIX = "outage"
WAIT_S = 90.0


class Deployment:
    def __init__(self, base: Path, stack: contextlib.ExitStack) -> None:
        self.base = base
        self.pg = stack.enter_context(env.postgres(base / "pg"))
        self.broker_port, self.clickhouse_port = env.free_port(), env.free_port()
        self._broker = contextlib.ExitStack()
        self._clickhouse = contextlib.ExitStack()
        stack.callback(self._broker.close)
        stack.callback(self._clickhouse.close)
        self.bootstrap = self._broker.enter_context(env.broker(base, self.broker_port))
        self.dsn = self._clickhouse.enter_context(env.clickhouse(base, self.clickhouse_port))
        self.environ = env.scaled_env(postgres_cfg=self.pg, bootstrap=self.bootstrap, dsn=self.dsn, prefix=PREFIX,
                                      partitions=2, data_dir=base / "data")
        self.service = LedgerService(Settings(
            data_dir=base / "data", event_store="postgres", postgres_host=self.pg["host"],
            postgres_port=int(self.pg["port"]), postgres_dbname=self.pg["dbname"], postgres_user=self.pg["user"],
            verify_workers=1,
        ))
        stack.callback(self.service.close)
        self.chain = Chain(self.service, genesis_command(vals=validators()), validators())
        for args in (["topics", "create"], ["views", "create"]):
            assert env.tally(args, base / "setup.log", self.environ).wait(120) == 0, (base / "setup.log").read_text()
        self.ports = {"worker": env.free_port(), "api": env.free_port(), "relay": env.free_port()}
        self.procs: dict[str, Any] = {}
        stack.callback(lambda: [env.stop(p) for p in self.procs.values()])
        for name in ("relay", "worker", "api"):
            self.start(name)
        env.wait_http(self.url("api", "/healthz"), proc=self.procs["api"])

    def start(self, name: str) -> None:
        args = {"relay": ["relay", "--metrics-port", str(self.ports["relay"])],
                "worker": ["stream", "--web-port", str(self.ports["worker"])],
                "api": ["api", "--port", str(self.ports["api"])]}[name]
        self.procs[name] = env.tally(args, self.base / f"{name}.log", self.environ)

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def stop_broker(self) -> None:
        self._broker.close()

    def start_broker(self) -> None:
        self._broker.enter_context(env.broker(self.base, self.broker_port))

    def stop_clickhouse(self) -> None:
        self._clickhouse.close()

    def start_clickhouse(self) -> None:
        self._clickhouse.enter_context(env.clickhouse(self.base, self.clickhouse_port))

    def blocks(self, n: int) -> None:
        for _ in range(n):
            result = self.chain.apply([self.chain.transfer(ALICE, BOB.address, 1, fee=1),
                                       self.chain.transfer(BOB, CAROL.address, 1, fee=1)])
            self.chain.finalize(result["hash"], result["height"])

    def alive(self, *names: str) -> None:
        dead = {n: self.procs[n].returncode for n in names if self.procs[n].poll() is not None}
        assert not dead, f"exited: {dead} (logs in {self.base})"

    def worker_metric(self, name: str) -> float:
        text = httpx.get(self.url("worker", "/metrics"), timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def head(self) -> Any:
        answer = httpx.post(self.url("api", "/graphql"), json={"query": "{ head { height } }"}, timeout=60).json()
        return answer

    def converged(self) -> None:
        target = self.service.max_position()
        until(lambda: checkpoint(self.dsn) == target, f"the views at position {target} (logs in {self.base})")


def checkpoint(dsn: str) -> int:
    """The readers' checkpoint; -1 while the endpoint does not answer."""
    try:
        client = clickhouse_connect.get_client(dsn=dsn, database="tally")
        try:
            rows = client.query("SELECT max(position) FROM checkpoints WHERE projector = 'ledger'").result_rows
        finally:
            client.close()
    except Exception:
        return -1
    return int(rows[0][0])


def until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not reached in {timeout_s} s: {what}")


def same_as_embedded(d: Deployment, chdb_dsn: str) -> None:
    local = ProjectionStore(chdb_dsn, database=f"outage_{uuid.uuid4().hex[:12]}")
    client = clickhouse_connect.get_client(dsn=d.dsn, database="tally")
    try:
        Follower(d.service.app, local).run_until_caught_up()
        for table, columns in COLUMNS.items():
            query = f"SELECT {', '.join(columns)} FROM {table} ORDER BY ALL"
            assert client.query(query).result_rows == local.client.query(query).result_rows, table
    finally:
        client.close()
        local.drop()
        local.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with contextlib.ExitStack() as stack:
        d = Deployment(tmp_path_factory.mktemp("outages"), stack)
        d.blocks(3)
        d.converged()
        yield d


def test_clickhouse_down(deployment: Deployment, chdb_dsn: str) -> None:
    """Workers retry their batch (counted as failed batches), replicas answer errors and /readyz 503; once it is
    back, the batch is written and the views catch up."""
    d = deployment
    failed = d.worker_metric("tally_stream_failed_batches_total")
    d.stop_clickhouse()
    d.blocks(2)
    until(lambda: d.worker_metric("tally_stream_failed_batches_total") > failed, "a failed batch")
    d.alive("relay", "worker", "api")
    ready = httpx.get(d.url("api", "/readyz"), timeout=60)
    assert ready.status_code == 503 and "error" in ready.json(), ready.text
    assert d.head()["errors"][0]["message"] == "internal error"
    d.start_clickhouse()
    d.converged()
    d.alive("relay", "worker", "api")
    same_as_embedded(d, chdb_dsn)


def test_kafka_down(deployment: Deployment, chdb_dsn: str) -> None:
    """The relay and the worker stay up and reconnect; replicas answer from views that stop moving."""
    d = deployment
    height = d.head()["data"]["head"]["height"]
    d.stop_broker()
    d.blocks(2)
    time.sleep(5)
    d.alive("relay", "worker", "api")
    assert d.head()["data"]["head"]["height"] == height
    d.start_broker()
    d.converged()
    d.alive("relay", "worker", "api")
    assert d.head()["data"]["head"]["height"] == height + 2
    same_as_embedded(d, chdb_dsn)


def test_postgres_down_for_a_moment(deployment: Deployment, chdb_dsn: str) -> None:
    """A command waits for PostgreSQL (eventsourcing retries, each try waiting for a connection) and is appended
    once it is back; the relay waits too and goes on by itself; replicas still answer GraphQL from the views, but
    their /readyz waits for the log's position; the worker is not concerned."""
    d = deployment
    height = d.head()["data"]["head"]["height"]
    env.postgres_stop(d.pg)
    results: list[Any] = []
    writer = threading.Thread(target=lambda: results.append(d.chain.apply([])), daemon=True)
    try:
        writer.start()
        time.sleep(3)
        assert writer.is_alive() and not results  # waiting, not failed
        assert d.head()["data"]["head"]["height"] == height
        with pytest.raises(httpx.TimeoutException):
            httpx.get(d.url("api", "/readyz"), timeout=3)
        d.alive("relay", "worker", "api")
    finally:
        env.postgres_start(d.pg)
    writer.join(WAIT_S)
    assert results and results[0]["status"] == "accepted", results
    d.converged()
    d.alive("relay", "worker", "api")
    assert d.head()["data"]["head"]["height"] == height + 1
    same_as_embedded(d, chdb_dsn)
