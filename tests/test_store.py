"""ProjectionStore on the real chdb engine: DDL, write-then-checkpoint, and recovery after a crash mid-batch."""

from __future__ import annotations

import pytest

from projections.project import COLUMNS
from projections.store import DDL_META, INSERT_SETTINGS, ProjectionStore, ddl_fingerprint, ddl_statements


def test_ddl_creates_every_table_with_the_projected_columns(projection_store: ProjectionStore) -> None:
    rows = projection_store.client.query(
        "SELECT table, groupArray(name) FROM (SELECT table, name FROM system.columns"
        " WHERE database = {db:String} ORDER BY table, position) GROUP BY table",
        parameters={"db": projection_store.database},
    ).result_rows
    tables = {table: tuple(names) for table, names in rows}
    assert {t: tables[t] for t in COLUMNS} == COLUMNS
    assert tables["checkpoints"] == ("projector", "position", "written_at")


def test_ddl_is_idempotent_and_statements_are_clean(projection_store: ProjectionStore) -> None:
    projection_store.apply_ddl()
    statements = list(ddl_statements())
    assert len(statements) == len(COLUMNS) + 1
    assert all(s.startswith("CREATE TABLE IF NOT EXISTS") for s in statements)


def test_empty_store_has_checkpoint_zero(projection_store: ProjectionStore) -> None:
    assert projection_store.checkpoint() == 0
    assert set(projection_store.counts().values()) == {0}


def test_write_inserts_rows_then_checkpoint(projection_store: ProjectionStore) -> None:
    big = 2**100  # totals pass 2**63: Int128 round-trips
    written = projection_store.write(
        {
            "balance_deltas": [("c", "0xa", "CELL", 0, big, 1), ("c", "0xa", "CELL", 1, -5, 2)],
            "votes": [("c", 1, "h", "n1", 2)],
        },
        2,
    )
    assert written == 3
    assert projection_store.checkpoint() == 2
    total = projection_store.client.query("SELECT sum(delta) FROM balance_deltas").result_rows[0][0]
    assert total == big - 5


def test_write_refuses_rows_past_the_checkpoint_and_a_checkpoint_moving_back(
    projection_store: ProjectionStore,
) -> None:
    projection_store.write({"votes": [("c", 1, "h", "n1", 5)]}, 5)
    with pytest.raises(ValueError, match="past checkpoint"):
        projection_store.write({"votes": [("c", 1, "h", "n2", 7)]}, 6)
    with pytest.raises(ValueError, match="behind"):
        projection_store.write({}, 4)
    with pytest.raises(ValueError, match="no such"):
        projection_store.write({"nope": [(1,)]}, 6)
    assert projection_store.counts()["votes"] == 1 and projection_store.checkpoint() == 5


def test_recover_deletes_rows_past_the_checkpoint_in_every_table(projection_store: ProjectionStore) -> None:
    projection_store.write({"votes": [("c", 1, "h", "n1", 1)], "chain_head": [("c", "head", 0, "g", 0, 1)]}, 1)
    # A crash in the middle of the next batch: some tables got their rows, the checkpoint did not move.
    client = projection_store.client
    client.insert("votes", [["c", 2, "h2", "n1", 2]], column_names=COLUMNS["votes"], settings=INSERT_SETTINGS)
    client.insert("balance_deltas", [["c", "0xa", "CELL", 2, 9, 2]], column_names=COLUMNS["balance_deltas"],
                  settings=INSERT_SETTINGS)
    assert projection_store.recover() == {"votes": 1, "balance_deltas": 1}
    counts = projection_store.counts()
    assert counts["votes"] == 1 and counts["balance_deltas"] == 0 and counts["chain_head"] == 1
    assert projection_store.recover() == {}
    # The batch written again after recovery counts once.
    projection_store.write({"votes": [("c", 2, "h2", "n1", 2)], "balance_deltas": [("c", "0xa", "CELL", 2, 9, 2)]}, 2)
    counts = projection_store.counts()
    assert counts["votes"] == 2 and counts["balance_deltas"] == 1


def test_a_second_store_on_the_same_engine_sees_the_data(projection_store: ProjectionStore) -> None:
    projection_store.write({"votes": [("c", 1, "h", "n1", 1)]}, 1)
    other = ProjectionStore(projection_store.dsn, projection_store.database, create=False)
    try:
        assert other.checkpoint() == 1 and other.counts()["votes"] == 1
    finally:
        other.close()


def test_checkpoints_are_per_projector(projection_store: ProjectionStore) -> None:
    projection_store.write({}, 3)
    other = ProjectionStore(projection_store.dsn, projection_store.database, projector="other", create=False)
    try:
        assert other.checkpoint() == 0
    finally:
        other.close()


def test_database_name_must_be_an_identifier(chdb_dsn: str) -> None:
    with pytest.raises(ValueError):
        ProjectionStore(chdb_dsn, database="x; DROP DATABASE tally")


def test_the_ddl_fingerprint_is_stored_and_an_unchanged_ddl_keeps_the_views(projection_store: ProjectionStore) -> None:
    assert projection_store.ddl_fingerprint() == ddl_fingerprint()
    projection_store.write({"votes": [("c", 1, "h", "n1", 1)]}, 1)
    again = ProjectionStore(projection_store.dsn, projection_store.database)
    try:
        assert again.checkpoint() == 1 and again.counts()["votes"] == 1
    finally:
        again.close()


def test_a_changed_ddl_drops_every_table_and_starts_over(projection_store: ProjectionStore) -> None:
    """Views are disposable: tables made by another DDL go, checkpoint included, and the log is replayed."""
    projection_store.write({"votes": [("c", 1, "h", "n1", 1)]}, 1)
    client = projection_store.client
    # What an older version left: another fingerprint, and a table the current DDL no longer has.
    client.command(f"TRUNCATE TABLE {DDL_META}")
    client.insert(DDL_META, [["0" * 64]], column_names=("fingerprint",), settings=INSERT_SETTINGS)
    client.command("CREATE TABLE old_view (x UInt8) ENGINE = MergeTree ORDER BY x")
    generation = projection_store.generation
    reopened = ProjectionStore(projection_store.dsn, projection_store.database)
    try:
        assert reopened.ddl_fingerprint() == ddl_fingerprint()
        assert reopened.checkpoint() == 0 and set(reopened.counts().values()) == {0}
        tables = {r[0] for r in client.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
                  .result_rows}
        assert tables == {*COLUMNS, "checkpoints", DDL_META}
        assert projection_store.generation != generation  # readers drop what they kept
        reopened.write({"votes": [("c", 1, "h", "n1", 1)]}, 1)
        assert reopened.counts()["votes"] == 1
    finally:
        reopened.close()


def test_tables_without_a_fingerprint_are_rebuilt(projection_store: ProjectionStore) -> None:
    """A database made before fingerprints existed has tables of an unknown DDL."""
    projection_store.write({"votes": [("c", 1, "h", "n1", 1)]}, 1)
    projection_store.client.command(f"DROP TABLE {DDL_META} SYNC")
    assert projection_store.ddl_fingerprint() is None
    projection_store.apply_ddl()
    assert projection_store.ddl_fingerprint() == ddl_fingerprint()
    assert projection_store.checkpoint() == 0 and projection_store.counts()["votes"] == 0


def test_the_fingerprint_follows_the_statements() -> None:
    statements = list(ddl_statements())
    assert ddl_fingerprint(statements) == ddl_fingerprint()
    assert ddl_fingerprint([statements[0].replace("UInt64", "UInt32", 1), *statements[1:]]) != ddl_fingerprint()
