"""Crash safety: SIGKILL `tally up` at random moments, restart it on the same data, and check that the log's
hash chain is intact, that every projection table equals a fresh projection of the whole log, and that the
chain went on after the restart.

Run as a script, this file is also the helper that compares the projections in a process of its own (chdb
opens one engine path per process): `python tests/test_crash.py compare DATA_DIR`.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.canonical import ZERO_HASH
from schemas.events import BlockApplied, LedgerEvent, event_hash
from schemas.settings import from_env

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the process helpers live in test_cli
from test_cli import ROOT, _env, _free_port, needs_the_stack, start_tally_up, stop, wait_ready  # noqa: E402

ROUNDS = 3
BLOCK_INTERVAL_MS = 200
TXS_PER_BLOCK = 10
KILL_AFTER_READY_S = (0.2, 3.0)
KILL_AFTER_SPAWN_S = (0.3, 2.5)  # the last round may die while starting up or recovering
CONTINUE_BLOCKS = 5
WAIT_S = 90.0
FRESH_DATABASE = "crash_fresh"
FRESH_BATCH_EVENTS = 1_000


# ---------------------------------------------------------------- the log, read independently of tally


def log_events(data_dir: Path) -> list[LedgerEvent]:
    from writes.service import LedgerApplication

    app = LedgerApplication(env=from_env(data_dir=data_dir).event_store_env())
    try:
        events, start = [], 1
        while section := app.recorder.select_notifications(start, 1_000):
            events += [app.mapper.to_domain_event(n) for n in section]
            start = section[-1].id + 1
        return events
    finally:
        app.close()


def assert_hash_chain(events: list[LedgerEvent]) -> None:
    prev = ZERO_HASH
    for seq, event in enumerate(events, start=1):
        assert event.originator_version == seq, f"event {seq} has sequence number {event.originator_version}"
        assert event.prev_hash == prev, f"event {seq}: prev_hash does not match the event before"
        prev = event_hash(event.KIND, seq, event.payload())


def block_height(events: list[LedgerEvent]) -> int:
    return max((e.height for e in events if isinstance(e, BlockApplied)), default=0)


# ---------------------------------------------------------------- the running process


def graphql_head(url: str) -> dict[str, Any]:
    answer = httpx.post(f"{url}/graphql", json={"query": "{ head { height finalizedHeight } }"}, timeout=5)
    head = answer.json()["data"]["head"]
    return head or {"height": -1, "finalizedHeight": -1}


def wait_for(what: str, check: Any, timeout_s: float = WAIT_S) -> Any:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def crash_rounds(data: Path, env: dict[str, str], rng: random.Random) -> list[int]:
    """Start, let it run, SIGKILL; returns the log's block height after each kill."""
    heights = []
    for round_ in range(ROUNDS):
        port = _free_port()
        proc = start_tally_up(data, port, env=env)
        if round_ < ROUNDS - 1:
            wait_ready(proc, f"http://127.0.0.1:{port}", WAIT_S)
            time.sleep(rng.uniform(*KILL_AFTER_READY_S))
        else:
            time.sleep(rng.uniform(*KILL_AFTER_SPAWN_S))
        proc.kill()
        proc.wait()
        events = log_events(data)
        assert_hash_chain(events)
        heights.append(block_height(events))
    return heights


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_restart_keeps_log_and_projections(tmp_path: Path) -> None:
    needs_the_stack()
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    data = tmp_path / "data"
    env = {
        **_env(),
        "TALLY_DEVNET_BLOCK_INTERVAL_MS": str(BLOCK_INTERVAL_MS),
        "TALLY_DEVNET_TXS_PER_BLOCK": str(TXS_PER_BLOCK),
    }
    heights = crash_rounds(data, env, rng)
    assert heights[0] >= 1 and heights == sorted(heights), f"seed {seed}: heights after each kill {heights}"

    # (c) the chain continues: more blocks, finalized, visible through the API
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_tally_up(data, port, env=env)
    try:
        wait_ready(proc, url, WAIT_S)
        target = heights[-1] + CONTINUE_BLOCKS
        wait_for(f"finalized height {target}", lambda: graphql_head(url)["finalizedHeight"] >= target)
    finally:
        assert stop(proc) == 0, "tally up must shut down cleanly on SIGTERM"

    # let the projections reach the end of the log with no devnet writing, then stop cleanly
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_tally_up(data, port, "--no-devnet", env=env)
    try:
        wait_ready(proc, url, WAIT_S)
        wait_for("projection lag 0", lambda: httpx.get(f"{url}/readyz", timeout=5).json()["lag_events"] == 0)
    finally:
        assert stop(proc) == 0

    # (a) the hash chain of the whole log
    events = log_events(data)
    assert_hash_chain(events)
    assert block_height(events) >= target

    # (b) every projection table equals a fresh projection of the whole log
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "compare", str(data)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["checkpoint"] == report["log_position"] == len(events)
    for table, diff in report["tables"].items():
        assert diff["only_live"] == [] and diff["only_fresh"] == [], f"seed {seed}: {table} differs: {diff}"
    counts = {table: diff["live"] for table, diff in report["tables"].items()}
    assert counts["projection_errors"] == 0
    assert counts["blocks"] == block_height(events) + 1  # the genesis block is a row too
    assert counts["transactions"] > 0 and counts["votes"] > 0 and counts["finality"] > 0


# ---------------------------------------------------------------- the comparison, in a process of its own


def compare(data_dir: Path) -> dict[str, Any]:
    """Project the whole log into a fresh database of the same engine; compare each table's row multiset."""
    from projections.project import COLUMNS, project
    from projections.store import ProjectionStore
    from writes.service import LedgerApplication

    settings = from_env(data_dir=data_dir)
    live = ProjectionStore(settings.views_dsn, create=False)
    fresh = ProjectionStore(settings.views_dsn, FRESH_DATABASE)
    fresh.drop()
    fresh.apply_ddl()
    app = LedgerApplication(env=settings.event_store_env())
    position = 0
    try:
        while section := app.recorder.select_notifications(position + 1, FRESH_BATCH_EVENTS):
            rows: dict[str, list[Any]] = defaultdict(list)
            for notification in section:
                for table, table_rows in project(notification.id, app.mapper.to_domain_event(notification)).items():
                    rows[table] += table_rows
            position = section[-1].id
            fresh.write(rows, position)
        report: dict[str, Any] = {"checkpoint": live.checkpoint(), "log_position": position, "tables": {}}
        for table in COLUMNS:
            mine, theirs = _multiset(live, table), _multiset(fresh, table)
            report["tables"][table] = {
                "live": sum(mine.values()),
                "fresh": sum(theirs.values()),
                "only_live": sorted((mine - theirs).elements())[:5],
                "only_fresh": sorted((theirs - mine).elements())[:5],
            }
        fresh.drop()
        return report
    finally:
        app.close()
        live.close()
        fresh.close()


def _multiset(store: Any, table: str) -> Counter[str]:
    rows = store.client.query(f"SELECT * FROM {store.database}.{table}").result_rows
    return Counter(repr(tuple(row)) for row in rows)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "compare":
        sys.exit("usage: test_crash.py compare DATA_DIR")
    print(json.dumps(compare(Path(sys.argv[2]))))
