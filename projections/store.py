"""The projection sink: ClickHouse tables through clickhouse-connect; a DSN decides the engine.

`chdb:///abs/path` opens the in-process engine (embedded stack), `http://...` a ClickHouse server (scaled).
The rule that makes a restart lose and double nothing: `write` inserts a batch's rows table by table and only
then the checkpoint; `recover` deletes every row past the checkpoint (what a crash between two inserts left).
There is one writer per projector; readers open their own clients (`connect`), one per thread.

Rows go in as Arrow, one insert per table and batch (projections/columnar.py: typed by the table's columns, storing
what clickhouse-connect's Native inserts stored). It costs about what those did (~10% less CPU here): an insert's
cost is the engine's, a few ms per insert and ~2.5 us per row. Arrow lets a replay encode rows as it projects them
and hand them between processes.

The views are disposable and the log is the truth: on open, `apply_ddl` compares a fingerprint of the DDL
(blake3 of schemas/clickhouse/*.sql's statements) with the one stored in the database's `ddl_meta` table, and
when they differ it drops every table of the database and creates them again. The checkpoint goes with them,
so the follower replays the log from the start into the new shape.

chdb allows one engine path per process (clients on that path share its data), so tests use one path and a
fresh database each.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from typing import Any

import blake3
import clickhouse_connect
import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_connect.driver.client import Client

from projections.columnar import ARROW_FORMAT, by_schema, ipc_stream, record_batch
from projections.project import COLUMNS, Row

DEFAULT_DATABASE = "tally"
DEFAULT_PROJECTOR = "ledger"
CHECKPOINTS = "checkpoints"
# Where the fingerprint of the DDL that made the tables is kept: the store's own table, not a view.
DDL_META = "ddl_meta"
_DDL_META_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {DDL_META} (fingerprint String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))"
    " ENGINE = MergeTree ORDER BY tuple()"
)
_CHECKPOINT_COLUMNS = ("projector", "position")
_INSERTED = {**COLUMNS, CHECKPOINTS: _CHECKPOINT_COLUMNS}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

# Explicit at the call site (STYLE 15): a synchronous insert, visible when it returns, so the checkpoint that
# follows never runs ahead of its rows; no block-hash deduplication, since a replayed batch is made harmless by
# `recover`, not by the server dropping a look-alike block.
INSERT_SETTINGS: dict[str, Any] = {"async_insert": 0, "insert_deduplicate": 0}
# Lightweight deletes mark rows at once and are applied by queries; wait for it so recovery is done on return.
DELETE_SETTINGS: dict[str, Any] = {"lightweight_deletes_sync": 2}

# Changes per database made by this process. A chdb engine belongs to one process (another cannot open its
# path), so for a chdb DSN this counter sees every change, and a reader may keep what it read until it moves.
_generations: dict[str, int] = {}
_generations_lock = threading.Lock()


class ProjectionStore:
    def __init__(
        self,
        dsn: str,
        database: str = DEFAULT_DATABASE,
        *,
        projector: str = DEFAULT_PROJECTOR,
        create: bool = True,
    ) -> None:
        """Opens a client; with `create` (the default) also makes the database and its tables if missing."""
        if not _IDENTIFIER.fullmatch(database):
            raise ValueError(f"database name {database!r} is not a plain identifier")
        self.dsn = dsn
        self.database = database
        self.projector = projector
        self._clients: list[Client] = []
        self._lock = threading.Lock()
        self._checkpoint: int | None = None  # the last checkpoint read or written (one writer per projector)
        # Column types per table, read once: without them every insert costs a DESCRIBE TABLE round trip.
        self._types: dict[str, list[str]] | None = None
        # Arrow buffers compressed for a server across a network; the in-process engine reads them plain, faster.
        self.compression = None if dsn.startswith("chdb:") else "lz4"
        self.client = self.connect(use_database=False)
        if create:
            self.apply_ddl()
        else:
            self.client.database = database

    @property
    def generation(self) -> int | None:
        """Changes made to this database through ProjectionStore in this process, when that is every change
        (chdb: the engine belongs to this process); None for a server DSN, which other processes write too.
        Readers keep what they read until it moves, so write through this class, never around it."""
        if not self.dsn.startswith("chdb:"):
            return None
        return _generations.get(self.database, 0)

    def _changed(self) -> None:
        with _generations_lock:
            _generations[self.database] = _generations.get(self.database, 0) + 1

    # ------------------------------------------------------------------------------------------ clients

    def connect(self, *, use_database: bool = True) -> Client:
        """A new client on the same engine: one per thread (a chdb handle serialises its callers)."""
        client = clickhouse_connect.get_client(dsn=self.dsn, database=self.database if use_database else None)
        with self._lock:
            self._clients.append(client)
        return client

    def close(self) -> None:
        """Closes every client this store opened (chdb releases its engine path when the last one closes)."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    # ---------------------------------------------------------------------------------------------- DDL

    def apply_ddl(self) -> None:
        """Creates the database and every table of schemas/clickhouse/*.sql, in file-name order. Idempotent.

        Tables made by another DDL (the stored fingerprint differs, or tables exist without one) are dropped
        first, every one of the database, checkpoints included: the follower then replays the log from the
        start. Returns when the tables of this DDL exist and its fingerprint is stored.
        """
        self.client.command("CREATE DATABASE IF NOT EXISTS {db:Identifier}", parameters={"db": self.database})
        self.client.database = self.database
        statements = list(ddl_statements())
        fingerprint = ddl_fingerprint(statements)
        stored = self.ddl_fingerprint()
        if stored == fingerprint:
            return
        if stored is not None or self._tables():
            self._drop_tables()
        for statement in statements:
            self.client.command(statement)
        self.client.command(_DDL_META_TABLE)
        self.client.insert(DDL_META, [[fingerprint]], column_names=("fingerprint",), settings=INSERT_SETTINGS)

    def ddl_fingerprint(self) -> str | None:
        """The fingerprint of the DDL that made this database's tables; None when none is stored."""
        if DDL_META not in self._tables():
            return None
        rows = self.client.query(f"SELECT fingerprint FROM {DDL_META} ORDER BY applied_at DESC LIMIT 1").result_rows
        return str(rows[0][0]) if rows else None

    def _tables(self) -> list[str]:
        rows = self.client.query(
            "SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": self.database}
        ).result_rows
        return [str(r[0]) for r in rows]

    def _drop_tables(self) -> None:
        """Drops every table of the database (the ledger's own database: views, checkpoints, fingerprint)."""
        for table in self._tables():
            if not _IDENTIFIER.fullmatch(table):
                raise ValueError(f"table name {table!r} in {self.database} is not a plain identifier")
            self.client.command(f"DROP TABLE IF EXISTS {table} SYNC")
        self._types = None
        self._checkpoint = None
        self._changed()

    def drop(self) -> None:
        """Drops the database (tests; a rebuild from the log)."""
        self.client.command("DROP DATABASE IF EXISTS {db:Identifier}", parameters={"db": self.database})
        self._types = None
        self._checkpoint = None
        self._changed()

    # -------------------------------------------------------------------------------------------- writes

    def write(self, rows_by_table: Mapping[str, Sequence[Row]], checkpoint_position: int) -> int:
        """Inserts every table's rows, then the checkpoint. Returns the number of rows written.

        Tables go in `COLUMNS` order (`chain_head` last). Every row must belong to a position no later than
        the checkpoint, and the checkpoint never moves back: both are checked before anything is written.
        """
        return self.write_batches(self.encode_rows(rows_by_table), checkpoint_position)

    def write_batches(self, batches_by_table: Mapping[str, Sequence[pa.RecordBatch]], checkpoint_position: int) -> int:
        """`write` of rows already encoded (`encode_rows`, or `projections.columnar.record_batch` per table with
        `column_types`): replay encodes while the previous batch is being written."""
        current = self._checkpoint if self._checkpoint is not None else self.checkpoint()
        if checkpoint_position < current:
            raise ValueError(f"checkpoint {checkpoint_position} is behind the stored {current}")
        written = self.insert_batches(batches_by_table, checkpoint_position)
        self.client.insert(
            CHECKPOINTS, [[self.projector, checkpoint_position]], column_names=_CHECKPOINT_COLUMNS,
            column_type_names=self._column_types(CHECKPOINTS, _CHECKPOINT_COLUMNS), settings=INSERT_SETTINGS,
        )
        self._checkpoint = checkpoint_position
        self._changed()
        return written

    def insert_rows(self, rows_by_table: Mapping[str, Sequence[Row]], position_max: int) -> int:
        """Inserts every table's rows in `COLUMNS` order (`chain_head` last), no checkpoint; returns the rows
        written. Every row must belong to a position <= `position_max`: checked before anything is written.
        `write` is this and then the checkpoint; the scaled sink (streams/sink.py) keeps its own progress."""
        return self.insert_batches(self.encode_rows(rows_by_table), position_max)

    def encode_rows(self, rows_by_table: Mapping[str, Sequence[Row]]) -> dict[str, list[pa.RecordBatch]]:
        """Every table's rows as an Arrow record batch (projections/columnar.py): a value its column cannot
        store fails here, before anything is written."""
        unknown = set(rows_by_table) - set(COLUMNS)
        if unknown:
            raise ValueError(f"no such projection tables: {sorted(unknown)}")
        return {
            table: [record_batch(columns, self._column_types(table, columns), rows)]
            for table, columns in COLUMNS.items()
            if (rows := rows_by_table.get(table))
        }

    def insert_batches(self, batches_by_table: Mapping[str, Sequence[pa.RecordBatch]], position_max: int) -> int:
        """Inserts each table's record batches (one insert per table, one more per extra schema: see
        `columnar.by_schema`) in `COLUMNS` order; returns the rows written. Every row's position (each table's
        last column) must be <= `position_max`: checked before anything is written."""
        unknown = set(batches_by_table) - set(COLUMNS)
        if unknown:
            raise ValueError(f"no such projection tables: {sorted(unknown)}")
        for table, batches in batches_by_table.items():
            for batch in batches:
                if batch.schema.names != list(COLUMNS[table]):
                    raise ValueError(f"{table}: batch columns {batch.schema.names} are not the table's")
                if batch.num_rows and pc.max(batch.column(-1)).as_py() > position_max:
                    raise ValueError(f"{table}: a row is past checkpoint {position_max}")
        written = 0
        for table, columns in COLUMNS.items():
            for group in by_schema([b for b in batches_by_table.get(table, ()) if b.num_rows]):
                block = ipc_stream(group, compression=self.compression)
                self.client.raw_insert(table, columns, block, settings=INSERT_SETTINGS, fmt=ARROW_FORMAT)
                written += sum(b.num_rows for b in group)
        if written:
            self._changed()
        return written

    def column_types(self) -> dict[str, list[str]]:
        """ClickHouse type names of every projection table's columns, in `COLUMNS` order (what
        `columnar.record_batch` takes)."""
        return {table: self._column_types(table, columns) for table, columns in COLUMNS.items()}

    def _column_types(self, table: str, columns: Sequence[str]) -> list[str]:
        if self._types is None:
            rows = self.client.query(
                "SELECT table, name, type FROM system.columns WHERE database = {db:String}",
                parameters={"db": self.database},
            ).result_rows
            types: dict[str, dict[str, str]] = {}
            for table_name, name, type_name in rows:
                types.setdefault(table_name, {})[name] = type_name
            self._types = {t: [types[t][c] for c in cols] for t, cols in _INSERTED.items()}
        return self._types[table]

    def checkpoint(self) -> int:
        """The projector's last fully written position; 0 before the first batch."""
        result = self.client.query(
            "SELECT max(position) FROM checkpoints WHERE projector = {p:String}", parameters={"p": self.projector}
        )
        self._checkpoint = int(result.result_rows[0][0])
        return self._checkpoint

    def recover(self) -> dict[str, int]:
        """Deletes every row past the checkpoint, in every table; returns the rows deleted per table.

        Run on start, before the first write: a crash between two inserts of a batch leaves such rows, and
        the batch is projected again from the checkpoint.
        """
        checkpoint = self.checkpoint()
        params = {"p": checkpoint}
        counts = " UNION ALL ".join(
            f"SELECT '{table}', count() FROM {table} WHERE position > {{p:UInt64}}" for table in COLUMNS
        )
        stale = {table: int(n) for table, n in self.client.query(counts, parameters=params).result_rows if n}
        for table in stale:
            self.client.command(
                f"DELETE FROM {table} WHERE position > {{p:UInt64}}", parameters=params, settings=DELETE_SETTINGS
            )
        if stale:
            self._changed()
        return stale

    def counts(self) -> dict[str, int]:
        """Rows per table (tests, diagnostics)."""
        sql = " UNION ALL ".join(f"SELECT '{table}', count() FROM {table}" for table in COLUMNS)
        return {table: int(n) for table, n in self.client.query(sql).result_rows}


def ddl_fingerprint(statements: Sequence[str] | None = None) -> str:
    """blake3 of the DDL statements (comment lines excluded), hex: what `apply_ddl` stores and compares."""
    text = "\n;\n".join(ddl_statements() if statements is None else statements)
    return blake3.blake3(text.encode("utf-8")).hexdigest()


def ddl_statements() -> Iterator[str]:
    """The statements of schemas/clickhouse/*.sql in file-name order; whole-line `--` comments dropped."""
    folder = resources.files("schemas") / "clickhouse"
    for entry in sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name):
        lines = [line for line in entry.read_text("utf-8").splitlines() if not line.lstrip().startswith("--")]
        for statement in "\n".join(lines).split(";"):
            if statement.strip():
                yield statement.strip()
