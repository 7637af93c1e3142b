"""projections/columnar.py: the store's Arrow inserts store exactly what clickhouse-connect's Native inserts stored.

Both paths write the same rows into two fresh databases of one engine, and every table's (rows, sum of row
hashes) must match: the rows of every event of the rich log (every table the projections fill) and, per table,
rows made of each column type's edge values (wide integers past 2**64 and 2**127, NULL, empty and non-ASCII
strings, control bytes, empty arrays). Values the Native path refused stay refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from projections.columnar import ColumnError, column, encode, record_batch
from projections.family import Row, Rows, merge_rows
from projections.project import COLUMNS, project
from projections.store import INSERT_SETTINGS, ProjectionStore
from schemas.settings import Settings
from tests.test_replay import checksums  # (rows, sum of row hashes) per table
from writes.service import LedgerApplication

# Edge values per ClickHouse type (LowCardinality and Nullable unwrapped by `_values`).
EDGES: dict[str, list[Any]] = {
    "String": ["", "devnet", "é☃ \t\n'\"\\", "\x00\x7f raw", "ab" * 600],
    "UInt8": [0, 1, 255, True, False],
    "UInt32": [0, 1, 2**32 - 1, 7, 2**31],
    "UInt64": [0, 1, 2**64 - 1, 2**63, 12345],
    "Int8": [0, -1, 127, -128, 1],
    "Int64": [0, -1, 2**63 - 1, -(2**63), 5],
    "Int128": [0, -5, 2**100, -(2**127), 2**127 - 1],
    "UInt128": [0, 1, 2**64, 2**128 - 1, 2**63],
    "Array(String)": [[], ["a"], ["é", "", "ff" * 32], [], ["x", "y", "z"]],
}


@pytest.fixture
def stores(chdb_dsn: str) -> Iterator[tuple[ProjectionStore, ProjectionStore]]:
    arrow = ProjectionStore(chdb_dsn, f"arrow_{uuid.uuid4().hex[:12]}")
    native = ProjectionStore(chdb_dsn, f"native_{uuid.uuid4().hex[:12]}")
    yield arrow, native
    for store in (arrow, native):
        store.drop()
        store.close()


def native_insert(store: ProjectionStore, rows_by_table: Mapping[str, Sequence[Row]]) -> None:
    """The store's insert before Arrow: clickhouse-connect's Native format, column-oriented, typed."""
    for table, columns in COLUMNS.items():
        rows = rows_by_table.get(table)
        if rows:
            store.client.insert(
                table, [list(c) for c in zip(*rows, strict=True)], column_names=columns,
                column_type_names=store.column_types()[table], column_oriented=True, settings=INSERT_SETTINGS,
            )


def _values(type_name: str) -> list[Any]:
    for wrapper in ("LowCardinality(", "Nullable("):
        if type_name.startswith(wrapper):
            values = _values(type_name[len(wrapper):-1])
            return [None, *values[1:]] if wrapper == "Nullable(" else values
    return EDGES[type_name]


def edge_rows(types: Mapping[str, Sequence[str]]) -> Rows:
    """Five rows per table, row i taking the i-th edge value of each column's type (positions 1..5)."""
    rows: Rows = {}
    for table, columns in COLUMNS.items():
        values = [_values(t) for t in types[table][:-1]]
        rows[table] = [(*(v[i] for v in values), i + 1) for i in range(5)]
        assert columns[-1] == "position"
    return rows


def log_rows(data_dir: Path) -> Rows:
    app = LedgerApplication(env=Settings(data_dir=data_dir).event_store_env())
    try:
        rows: Rows = {}
        for n in app.recorder.select_notifications(1, 10_000):
            merge_rows(rows, project(n.id, app.mapper.to_domain_event(n)))
        return rows
    finally:
        app.close()


def test_every_column_type_of_the_ddl_has_edge_values(stores: tuple[ProjectionStore, ProjectionStore]) -> None:
    for types in stores[0].column_types().values():
        for type_name in types:
            assert _values(type_name)


def test_edge_values_of_every_table_store_what_native_stored(stores: tuple[ProjectionStore, ProjectionStore]) -> None:
    arrow, native = stores
    rows = edge_rows(arrow.column_types())
    assert arrow.insert_rows(rows, 5) == 5 * len(COLUMNS)
    native_insert(native, rows)
    assert checksums(arrow) == checksums(native)
    # Not only the hashes: the wide integers, NULLs and bytes read back as written.
    back = arrow.client.query("SELECT delta FROM balance_deltas ORDER BY position").result_rows
    assert [r[0] for r in back] == EDGES["Int128"]
    back = arrow.client.query("SELECT nonce, signer FROM transactions ORDER BY position").result_rows
    assert back[0] == (None, "") and back[2][0] == 2**64 - 1
    raw = arrow.client.query("SELECT hex(genesis_hash) FROM chains WHERE position IN (3, 4) ORDER BY position")
    assert [r[0] for r in raw.result_rows] == ["é☃ \t\n'\"\\".encode().hex().upper(), b"\x00\x7f raw".hex().upper()]


def test_the_rich_logs_rows_store_what_native_stored(stores: tuple[ProjectionStore, ProjectionStore],
                                                     rich_log: Path) -> None:
    arrow, native = stores
    rows = log_rows(rich_log)
    assert {t for t, r in rows.items() if r} >= {"blocks", "reorgs", "validator_states", "reserve_records"}
    arrow.write(rows, max(r[-1] for rs in rows.values() for r in rs))
    native_insert(native, rows)
    assert checksums(arrow) == checksums(native)


@pytest.mark.slow
def test_over_http_a_server_stores_what_native_stored(stores: tuple[ProjectionStore, ProjectionStore],
                                                      rich_log: Path, tmp_path: Path) -> None:
    """The scaled deployment's path: lz4-compressed Arrow over ClickHouse's HTTP interface (tests/chserver.py)."""
    from tests import scaled_env

    _, native = stores
    rows = edge_rows(native.column_types())
    for table, table_rows in log_rows(rich_log).items():
        rows[table] = [*rows[table], *((*r[:-1], r[-1] + 5) for r in table_rows)]
    native_insert(native, rows)
    with scaled_env.clickhouse(tmp_path) as dsn:
        server = ProjectionStore(dsn, "tally")
        try:
            assert server.compression == "lz4"
            server.write(rows, max(r[-1] for rs in rows.values() for r in rs))
            assert checksums(server) == checksums(native)
        finally:
            server.close()


@pytest.mark.parametrize(("values", "type_name"), [
    ([None], "String"), ([5], "String"), ([None], "UInt64"), ([-1], "UInt64"), ([2**64], "UInt64"),
    ([256], "UInt8"), (["5"], "UInt64"), ([2**127], "Int128"), ([-1], "UInt128"), ([None], "Int128"),
    ([None], "Array(String)"), ([[None]], "Array(String)"), ([1], "Float64"), ([[1]], "Array(Int128)"),
])
def test_values_the_native_path_refused_are_refused(values: list[Any], type_name: str) -> None:
    with pytest.raises(ColumnError):
        column(values, type_name)


def test_wide_integers_use_64_bits_when_every_value_fits() -> None:
    assert column([1, -2], "Int128").type == pa.int64()
    assert column([1, 2**64 - 1], "UInt128").type == pa.uint64()
    assert column([1, 2**64], "Int128").type == pa.binary(16)
    assert column([None, 3], "Nullable(UInt64)").null_count == 1


def test_batches_of_one_table_in_two_schemas_are_all_written(projection_store: ProjectionStore) -> None:
    """A value past 64 bits makes its batch's Int128 column fixed-size binary: a second insert, same rows."""
    columns, types = COLUMNS["balance_deltas"], projection_store.column_types()["balance_deltas"]
    narrow = [record_batch(columns, types, [("c", "0xa", "CELL", h, -h, h)]) for h in (1, 3)]
    wide = record_batch(columns, types, [("c", "0xa", "CELL", 2, 2**100, 2)])
    assert wide.schema != narrow[0].schema
    assert projection_store.write_batches({"balance_deltas": [narrow[0], wide, narrow[1]]}, 3) == 3
    total = projection_store.client.query("SELECT sum(delta), count() FROM balance_deltas").result_rows[0]
    assert total == (2**100 - 4, 3) and projection_store.checkpoint() == 3
    late = record_batch(columns, types, [("c", "0xa", "CELL", 9, 1, 9)])
    with pytest.raises(ValueError, match="past checkpoint"):
        projection_store.write_batches({"balance_deltas": [late]}, 4)


def test_a_batch_with_a_bad_value_writes_nothing(projection_store: ProjectionStore) -> None:
    rows = {"votes": [("c", 1, "h", "n1", 1)], "chain_head": [("c", "head", None, "h", 0, 1)]}
    with pytest.raises(ColumnError, match="column height"):
        projection_store.write(rows, 1)
    assert set(projection_store.counts().values()) == {0} and projection_store.checkpoint() == 0


def test_bytes_are_stored_as_they_are() -> None:
    assert column([b"\x00\xff", "é"], "String").to_pylist() == [b"\x00\xff", "é".encode()]


def test_encode_refuses_rows_of_the_wrong_width() -> None:
    with pytest.raises(ValueError):
        encode(("a", "b"), ("UInt8", "UInt8"), [(1, 2, 3)])
