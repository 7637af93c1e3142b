"""The ClickHouse HTTP endpoint over chdb that the scaled tests and the `scaled` bench use (tests/chserver.py)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import clickhouse_connect
import pytest

from tests import scaled_env as env

pytestmark = pytest.mark.slow
REQUESTS = 15
# A reply split over two writes (headers, then body) without TCP_NODELAY waits for the client's delayed ACK:
# 40 ms on Linux, whatever the query. A query answered here takes a few ms.
DELAYED_ACK_MS = 40


def test_a_round_trip_does_not_wait_for_a_delayed_ack(tmp_path: Path) -> None:
    """Each request on a kept-alive connection answers in a few ms, as a ClickHouse server does: the endpoint
    sends with TCP_NODELAY (before, every request took 40-50 ms, and the workers and API replicas measured the
    delayed ACK instead of their own work)."""
    with env.clickhouse(tmp_path) as dsn:
        client = clickhouse_connect.get_client(dsn=dsn)
        try:
            client.command("CREATE TABLE t (a UInt64) ENGINE = MergeTree ORDER BY a")
            client.insert("t", [[1], [2]], column_names=["a"])
            timings_ms = []
            for _ in range(REQUESTS):
                start = time.perf_counter()
                assert client.query("SELECT sum(a) FROM t").result_rows == [(3,)]
                timings_ms.append((time.perf_counter() - start) * 1000)
        finally:
            client.close()
    assert statistics.median(timings_ms) < DELAYED_ACK_MS * 0.75, timings_ms
