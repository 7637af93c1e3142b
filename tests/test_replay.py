"""`tally replay` (projections/replay.py): the same log gives identical tables (per-table checksums), equal to what
the embedded follower built; an interrupted replay resumes to the same tables; a replay truncated at a height
stops before the first block above it; the live views store is refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from api.cli import main
from projections.project import COLUMNS
from projections.queries import ReadModel
from projections.replay import ReplayGap, replay, shareable
from projections.store import ProjectionStore
from schemas.settings import Settings
from streams.follower import Follower
from writes.service import LedgerApplication


@pytest.fixture
def data_dir(rich_log: Path) -> Path:
    return rich_log


@pytest.fixture
def app(data_dir: Path) -> Iterator[LedgerApplication]:
    application = LedgerApplication(env=Settings(data_dir=data_dir).event_store_env())
    yield application
    application.close()


@pytest.fixture
def fresh(chdb_dsn: str) -> Iterator[Any]:
    stores: list[ProjectionStore] = []

    def make() -> ProjectionStore:
        stores.append(ProjectionStore(chdb_dsn, f"replay_{uuid.uuid4().hex[:12]}"))
        return stores[-1]

    yield make
    for store in stores:
        store.drop()
        store.close()


def checksums(store: ProjectionStore) -> dict[str, tuple[int, int]]:
    """(rows, sum of row hashes) per table: equal sums of equal multisets."""
    out = {}
    for table, columns in COLUMNS.items():
        row = store.client.query(f"SELECT count(), sum(cityHash64({', '.join(columns)})) FROM {table}").result_rows[0]
        out[table] = (int(row[0]), int(row[1]))
    return out


def test_replays_are_identical_and_equal_the_followers_views(app: LedgerApplication, fresh: Any) -> None:
    first, second, followed = fresh(), fresh(), fresh()
    result = replay(app, first)
    assert result.events == app.recorder.max_notification_id() and result.poison == 0
    replay(app, second)
    Follower(app, followed).run_until_caught_up()
    sums = checksums(first)
    assert sums["blocks"][0] > 0 and sums["reorgs"][0] == 1
    assert sums == checksums(second) == checksums(followed)


def test_an_interrupted_replay_resumes_to_the_same_tables(app: LedgerApplication, fresh: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import projections.replay as module

    # Sections of 7 events, each a batch of its own: the first write checkpoints 7, then the replay is stopped.
    for name in ("SECTION_EVENTS", "SECTION_EVENTS_FIRST"):
        monkeypatch.setattr(module, name, 7)
    monkeypatch.setattr(module, "BATCH_ROWS_MAX", 1)
    whole, interrupted = fresh(), fresh()
    replay(app, whole)

    class Interrupt(Exception):
        pass

    def stop(_: int) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        replay(app, interrupted, progress=stop)
    assert 0 < interrupted.checkpoint() < app.recorder.max_notification_id()
    resumed = replay(app, interrupted)
    assert resumed.start == 8
    assert checksums(interrupted) == checksums(whole)


def test_a_replay_truncated_at_a_height(app: LedgerApplication, fresh: Any) -> None:
    store = fresh()
    result = replay(app, store, to_height=1)
    assert result.stopped_at_height
    head = ReadModel(store).head("tally-test")
    assert head is not None and head["height"] == 1


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sections and worker ranges of a few events, so that the rich log's 15 events span several of each."""
    import projections.replay as module

    monkeypatch.setattr(module, "SECTION_EVENTS_FIRST", 2)
    monkeypatch.setattr(module, "SECTION_EVENTS", 3)
    monkeypatch.setattr(module, "SECTION_BYTES", 1)  # one event per worker range


def test_worker_processes_replay_the_same_tables(app: LedgerApplication, fresh: Any, small_ranges: None) -> None:
    """Workers decode and project ranges of the log, this process writes them in order: the same tables, whole
    or truncated at a height, as one process makes."""
    alone, together = fresh(), fresh()
    assert replay(app, alone, workers=1).workers == 1
    result = replay(app, together, workers=2)
    assert result.workers == 2 and result.events == app.recorder.max_notification_id() and result.poison == 0
    assert checksums(together) == checksums(alone)
    alone, together = fresh(), fresh()
    expected = replay(app, alone, to_height=2, workers=1)
    result = replay(app, together, to_height=2, workers=2)
    assert result.stopped_at_height and (result.position, result.events) == (expected.position, expected.events)
    assert together.checkpoint() == alone.checkpoint() == expected.position
    assert checksums(together) == checksums(alone)


def test_an_interrupted_replay_with_workers_resumes(app: LedgerApplication, fresh: Any, small_ranges: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import projections.replay as module

    monkeypatch.setattr(module, "BATCH_ROWS_MAX", 1)  # a batch per range: a checkpoint per range
    whole, interrupted = fresh(), fresh()
    replay(app, whole, workers=1)
    seen: list[int] = []

    def stop_at_the_third(events: int) -> None:
        seen.append(events)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replay(app, interrupted, workers=2, progress=stop_at_the_third)
    assert 0 < interrupted.checkpoint() < app.recorder.max_notification_id()
    resumed = replay(app, interrupted, workers=2)
    assert resumed.start == seen[-1] + 1 and resumed.workers == 2
    assert checksums(interrupted) == checksums(whole)


def test_workers_need_a_store_other_processes_can_open(app: LedgerApplication, fresh: Any) -> None:
    memory = LedgerApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": ":memory:"})
    try:
        assert not shareable(memory)
        with pytest.raises(ValueError, match="in memory"):
            replay(memory, fresh(), workers=2)
    finally:
        memory.close()
    assert shareable(app)


def test_from_position_must_follow_the_checkpoint(app: LedgerApplication, fresh: Any) -> None:
    store = fresh()
    replay(app, store, to_height=1)
    with pytest.raises(ReplayGap, match="checkpointed at"):
        replay(app, store, from_position=store.checkpoint() + 5)


def test_the_cli_replays_and_refuses_the_live_store(data_dir: Path, chdb_dsn: str) -> None:
    database = f"cli_{uuid.uuid4().hex[:12]}"
    result = CliRunner().invoke(main, ["replay", "--data-dir", str(data_dir), "--into", chdb_dsn,
                                       "--database", database])
    assert result.exit_code == 0, result.output
    assert "events/s" in result.output and "(0 unprojectable)" in result.output
    ProjectionStore(chdb_dsn, database).drop()
    result = CliRunner().invoke(main, ["replay", "--data-dir", str(data_dir), "--into", chdb_dsn,
                                       "--database", database, "--workers", "2"])
    assert result.exit_code == 0 and "(0 unprojectable)" in result.output, result.output
    ProjectionStore(chdb_dsn, database).drop()
    live = Settings(data_dir=data_dir).views_dsn
    result = CliRunner().invoke(main, ["replay", "--data-dir", str(data_dir), "--into", live])
    assert result.exit_code != 0 and "live views store" in result.output


def test_on_the_projection_server_only_the_live_database_is_refused(data_dir: Path, tmp_path: Path) -> None:
    """With views on a server (TALLY_PROJECTION_DSN), a copy goes to another database of the same server; the live
    database itself is refused. The server: ClickHouse's HTTP interface over chdb (tests/chserver.py)."""
    from tests import scaled_env

    with scaled_env.clickhouse(tmp_path) as server:
        env = {"TALLY_PROJECTION_DSN": server}
        args = ["replay", "--data-dir", str(data_dir), "--into", server]
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code != 0 and "live views database (tally on the projection server)" in result.output
        result = CliRunner().invoke(main, [*args, "--database", "audit_copy"], env=env)
        assert result.exit_code == 0 and "(0 unprojectable)" in result.output, result.output
        app = LedgerApplication(env=Settings(data_dir=data_dir).event_store_env())
        copy = ProjectionStore(server, "audit_copy")
        try:
            assert copy.checkpoint() == app.recorder.max_notification_id()
        finally:
            copy.close()
            app.close()
