"""Crash safety: SIGKILL `tally up` at random moments, restart it on the same data, and check that the log's
hash chain is intact, that every projection table equals a fresh projection of the whole log, and that the
chain went on after the restart.

Then the same for a reorganization: SIGKILL while its command is saved, or while its events are projected.

Run as a script, this file is also the helper that compares the projections in a process of its own (chdb
opens one engine path per process): `python tests/test_crash.py compare DATA_DIR`; and the children of the reorg
tests (`project`, `submit`, `check`).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.canonical import ZERO_HASH
from schemas.events import BlockApplied, BlockReapplied, BlockRecorded, BlockReverted, LedgerEvent, event_hash
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
    # A row per block event (applied, recorded on a side branch, reverted, reapplied), and the genesis block's.
    block_events = (BlockApplied, BlockRecorded, BlockReverted, BlockReapplied)
    assert counts["blocks"] == sum(isinstance(e, block_events) for e in events) + 1
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


# ---------------------------------------------------------------- SIGKILL in the middle of a reorganization
# A log with two branches of REORG_DEPTH blocks from the genesis, then the block that makes the side branch longer:
# its command reverts REORG_DEPTH blocks and reapplies as many (2 * REORG_DEPTH + 2 events, one transaction).
# The process is killed while it saves that command, or while its follower projects those events; after a
# restart the log holds all of the command's events or none, and the views equal a fresh projection of the log
# and the fold of the write side. Projections run in child processes (chdb: one engine path per process).

REORG_DEPTH = 12
REORG_BATCH_EVENTS = 3  # the follower's batches while it is killed: the reorg's events span several batches
# Kill points of the projection, "BATCH:INSERT": the follower dies just before the INSERT-th insert of its
# BATCH-th batch (both from 1; "cp": just before the batch's checkpoint, every row of it written). A batch of
# reorg events writes several tables, then its checkpoint; the 26 events make 9 batches.
PROJECTION_KILL_POINTS = ("1:1", "1:2", "2:cp", "5:3", "9:2", "9:cp")
# Kill points of the save: after inserting this many of the command's events in its transaction, or (-1)
# after the transaction committed, before the ledger folded it.
SAVE_KILL_EVENTS = (0, 1, 2 * REORG_DEPTH + 1, -1)
CHILD_TIMEOUT_S = 300


def _reorg_data(data: Path) -> dict[str, Any]:
    """The log up to the reorg (both branches, the side one recorded) and the block that triggers it."""
    from schemas.canonical import block_hash
    from tests.chain import ALICE, BOB, CAROL, CELL, Chain, genesis_command, open_service, validators

    vals = validators()
    service = open_service(data)
    try:
        chain = Chain(service, genesis_command(vals=vals), vals)
        for h in range(REORG_DEPTH):
            chain.apply([chain.transfer(ALICE, BOB.address, CELL, fee=1, nonce=h),
                         chain.transfer(CAROL, ALICE.address, 2 * CELL, nonce=h)])
        parent = chain.genesis_hash
        side = []
        for h in range(REORG_DEPTH + 1):
            txs = [chain.transfer(BOB, CAROL.address, 3 * CELL, fee=2, nonce=h),
                   chain.transfer(ALICE, CAROL.address, CELL, nonce=h)]
            blk = chain.block(txs, parent=parent, proposer=1, height=h + 1,
                              timestamp_ms=chain.state.blocks[parent].timestamp_ms + 1_000)
            if h < REORG_DEPTH:
                result = chain.submit(blk)
                assert result["status"] == "accepted" and result["canonical"] is False, result
            side.append(blk)
            parent = block_hash(blk)
        return {"trigger": side[-1], "position": service.max_position(), "tip": chain.state.tip.hash,
                "new_tip": block_hash(side[-1])}
    finally:
        service.close()


def _child(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args], cwd=ROOT, env=_env(), capture_output=True,
        text=True, timeout=CHILD_TIMEOUT_S,
    )


def _submit_trigger(data: Path, trigger: dict[str, Any]) -> dict[str, Any]:
    from tests.chain import open_service

    service = open_service(data)
    try:
        return service.submit(trigger)
    finally:
        service.close()


def _assert_views_equal_fresh_fold(data: Path) -> dict[str, Any]:
    """Restart the follower (it recovers and catches up), then: every table equals a fresh projection of the log,
    and the read model equals the write side's fold of the log (head, every account, every receipt)."""
    from tests.chain import open_service

    done = _child("check", str(data))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    events = log_events(data)
    assert_hash_chain(events)
    assert report["checkpoint"] == report["log_position"] == len(events)
    for table, diff in report["tables"].items():
        assert diff["only_live"] == [] and diff["only_fresh"] == [], f"{table} differs: {diff}"
    service = open_service(data)
    try:
        chain = next(iter(service.ledger.chains.values()))
        head = report["views"]["head"]
        assert (head["height"], head["hash"]) == (chain.tip.height, chain.tip.hash)
        assert head["finalized_height"] == chain.finalized_height
        assert [b["hash"] for b in report["views"]["blocks"]] == list(reversed(chain.canonical))
        for address, account in report["views"]["accounts"].items():
            assert account["nonce"] == chain.next_nonce(address), address
            assert {b["asset"]: b["amount"] for b in account["balances"]} == {
                asset: n for (a, asset), n in chain.balances.items() if a == address and n
            }, address
        # Receipts: a tx of the canonical branch is applied in its canonical block, any other was reverted.
        canonical = set(chain.canonical)
        for receipt in report["views"]["receipts"].values():
            expected = "applied" if receipt["block_hash"] in canonical else "reverted"
            assert receipt["status"] == expected, receipt
    finally:
        service.close()
    return report


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("kill_at", PROJECTION_KILL_POINTS)
def test_sigkill_while_projecting_a_reorg(tmp_path: Path, kill_at: str) -> None:
    needs_the_stack()
    data = tmp_path / "data"
    setup = _reorg_data(data)
    done = _child("project", str(data))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["position"] == setup["position"]
    result = _submit_trigger(data, setup["trigger"])
    assert result["reorg"]["depth"] == REORG_DEPTH, result
    killed = _child("project", str(data), "--batch-events", str(REORG_BATCH_EVENTS), "--kill-at", kill_at)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stdout, killed.stderr)
    report = _assert_views_equal_fresh_fold(data)
    # Killed after some rows of a batch and before its checkpoint: the restart deleted them first.
    assert (report["recovered_rows"] > 0) == (not kill_at.endswith(":1")), report["recovered_rows"]
    assert report["views"]["head"]["hash"] == setup["new_tip"]
    assert report["views"]["reorgs"] == 1


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("kill_after_events", SAVE_KILL_EVENTS)
def test_sigkill_while_saving_a_reorg(tmp_path: Path, kill_after_events: int) -> None:
    needs_the_stack()
    data = tmp_path / "data"
    setup = _reorg_data(data)
    trigger = tmp_path / "trigger.json"
    trigger.write_text(json.dumps(setup["trigger"]))
    killed = _child("submit", str(data), str(trigger), "--kill-after-events", str(kill_after_events))
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stdout, killed.stderr)
    events = log_events(data)
    assert_hash_chain(events)
    reorg_events = 2 * REORG_DEPTH + 2
    if kill_after_events >= 0:
        # Not committed: none of the command's events, and the ledger restarts on the old tip.
        assert len(events) == setup["position"]
        result = _submit_trigger(data, setup["trigger"])
        assert result["status"] == "accepted" and result["reorg"]["depth"] == REORG_DEPTH, result
    else:
        # Committed: all of them, in order, and the ledger restarts on the new tip (the block is a duplicate).
        kinds = [type(e).__name__ for e in events[setup["position"]:]]
        assert kinds == ["ChainReorganized"] + ["BlockReverted"] * REORG_DEPTH + ["BlockReapplied"] * REORG_DEPTH + [
            "BlockApplied"
        ]
        assert len(kinds) == reorg_events
        assert _submit_trigger(data, setup["trigger"])["reason"] == "duplicate_block"
    assert len(log_events(data)) == setup["position"] + reorg_events
    report = _assert_views_equal_fresh_fold(data)
    assert report["views"]["head"]["hash"] == setup["new_tip"]


# ---------------------------------------------------------------- the children of the reorg tests


def child_project(data_dir: Path, batch_events: int | None, kill_at: str | None) -> dict[str, Any]:
    """Run a follower on the views of `data_dir` until it caught up; with `kill_at` ("BATCH:INSERT" or
    "BATCH:cp", see PROJECTION_KILL_POINTS), SIGKILL this process just before that insert."""
    import os
    import signal as signals

    from projections.store import ProjectionStore
    from streams.follower import Follower
    from writes.service import LedgerApplication

    settings = from_env(data_dir=data_dir)
    app = LedgerApplication(env=settings.event_store_env())
    store = ProjectionStore(settings.views_dsn)
    if kill_at is not None:
        batch, at = kill_at.split(":")
        insert, raw_insert = store.client.insert, store.client.raw_insert
        done = {"batches": 0, "inserts": 0}

        def die_at(table: str) -> None:
            done["inserts"] += 1
            if done["batches"] + 1 == int(batch) and (
                table == "checkpoints" if at == "cp" else done["inserts"] == int(at)
            ):
                os.kill(os.getpid(), signals.SIGKILL)
            if table == "checkpoints":  # the last insert of a batch
                done["batches"], done["inserts"] = done["batches"] + 1, 0

        def insert_or_die(table: str, *args: Any, **kwargs: Any) -> Any:
            die_at(table)
            return insert(table, *args, **kwargs)

        def raw_insert_or_die(table: str, *args: Any, **kwargs: Any) -> Any:  # rows go in as Arrow blocks
            die_at(table)
            return raw_insert(table, *args, **kwargs)

        store.client.insert = insert_or_die  # type: ignore[method-assign]
        store.client.raw_insert = raw_insert_or_die  # type: ignore[method-assign]
    options = {} if batch_events is None else {"batch_events_max": batch_events}
    follower = Follower(app, store, **options)  # type: ignore[arg-type]
    follower.run_until_caught_up()
    report = {"position": follower.position, "recovered_rows": follower.recovered_rows}
    store.close()
    app.close()
    return report


def child_submit(data_dir: Path, command_file: Path, kill_after_events: int) -> None:
    """Submit a command and SIGKILL this process in its save: after `kill_after_events` of its events were
    inserted in the open transaction, or (-1) once the transaction committed."""
    import os
    import signal as signals

    from tests.chain import open_service

    service = open_service(data_dir)
    recorder = service.app.recorder

    def die() -> None:
        os.kill(os.getpid(), signals.SIGKILL)

    if kill_after_events >= 0:
        insert = recorder._insert_events  # type: ignore[attr-defined]

        def insert_some(c: Any, stored_events: Any, **kwargs: Any) -> Any:
            insert(c, stored_events[:kill_after_events], **kwargs)
            die()

        recorder._insert_events = insert_some  # type: ignore[attr-defined]
    else:
        save = service.app.save

        def save_then_die(*args: Any, **kwargs: Any) -> Any:
            save(*args, **kwargs)
            die()

        service.app.save = save_then_die  # type: ignore[method-assign]
    service.submit(json.loads(command_file.read_text()))
    raise SystemExit("the command was saved without reaching the kill point")


def child_check(data_dir: Path) -> dict[str, Any]:
    """Restart the follower until caught up, compare every table with a fresh projection, and read the views."""
    from projections.queries import ReadModel
    from projections.store import ProjectionStore
    from schemas.limits import PAGE_SIZE_MAX
    from tests.chain import ACCOUNTS, validators

    projected = child_project(data_dir, None, None)
    report = compare(data_dir)
    report["recovered_rows"] = projected["recovered_rows"]
    store = ProjectionStore(from_env(data_dir=data_dir).views_dsn)
    try:
        read = ReadModel(store)
        chain_id = read.default_chain()
        assert chain_id is not None
        addresses = [k.address for k in ACCOUNTS] + [v.operator.address for v in validators()]
        tx_ids = [t for a in addresses for t in _tx_ids_of(read, chain_id, a)]
        report["views"] = {
            "head": read.head(chain_id),
            "blocks": read.blocks(chain_id, PAGE_SIZE_MAX),
            "accounts": {a: read.account(chain_id, a) for a in addresses},
            "receipts": {t: read.receipt(t, chain_id) for t in _all_tx_ids(data_dir) + tx_ids},
            "reorgs": len(read.reorgs(chain_id, PAGE_SIZE_MAX)),
        }
    finally:
        store.close()
    return report


def _tx_ids_of(read: Any, chain_id: str, address: str) -> list[str]:
    return [tx["tx_id"] for tx in read.transactions(chain_id, address, first=500)]


def _all_tx_ids(data_dir: Path) -> list[str]:
    """Every tx id the log's blocks carry, canonical or not."""
    from schemas.events import BlockApplied, BlockRecorded

    return [t for e in log_events(data_dir) if isinstance(e, (BlockApplied, BlockRecorded)) for t in e.tx_ids]


def _main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="test_crash.py")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("compare").add_argument("data_dir", type=Path)
    project = sub.add_parser("project")
    project.add_argument("data_dir", type=Path)
    project.add_argument("--batch-events", type=int)
    project.add_argument("--kill-at")
    submit = sub.add_parser("submit")
    submit.add_argument("data_dir", type=Path)
    submit.add_argument("command_file", type=Path)
    submit.add_argument("--kill-after-events", type=int, required=True)
    sub.add_parser("check").add_argument("data_dir", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "compare":
        print(json.dumps(compare(args.data_dir)))
    elif args.cmd == "project":
        print(json.dumps(child_project(args.data_dir, args.batch_events, args.kill_at)))
    elif args.cmd == "submit":
        child_submit(args.data_dir, args.command_file, args.kill_after_events)
    else:
        print(json.dumps(child_check(args.data_dir), default=str))


if __name__ == "__main__":
    _main(sys.argv[1:])
