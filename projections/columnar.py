"""Rows to Arrow: a table's rows as one Arrow IPC stream, typed by the table's ClickHouse column types.

The projection store inserts every batch this way (`FORMAT ArrowStream`) instead of clickhouse-connect's Native
serialisation: pyarrow converts whole columns, the engine builds LowCardinality dictionaries itself, and a replay
can encode rows as it projects them, in worker processes too, and hand over bytes.

What the engine stores must be what the Native path stored (tests/test_columnar.py compares table checksums):

- String, LowCardinality(String): Arrow binary (str is written as UTF-8, bytes as they are).
- UInt8..UInt64, Int8..Int64: the same Arrow type; bool counts as 0/1, as before.
- Int128, UInt128, Int256, UInt256 (totals pass 2**63, DOMAIN.md): Arrow int64/uint64 when every value of the
  column fits (the engine widens them exactly), otherwise little-endian two's complement in fixed-size binary
  of the type's width, which the engine reads as the integer.
- Nullable(T): None is NULL. Anywhere else None is refused, as the Native path refused it.
- Array(T) of the types above.

Refused, naming the column: None outside Nullable, integers out of the column's range, text in integer columns
(the Native path parsed '5' as 5; no projection writes one), values of other types, column types not listed.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc

ARROW_FORMAT = "ArrowStream"  # ClickHouse's name for the Arrow IPC stream format

_INTEGERS: dict[str, pa.DataType] = {
    "UInt8": pa.uint8(), "UInt16": pa.uint16(), "UInt32": pa.uint32(), "UInt64": pa.uint64(),
    "Int8": pa.int8(), "Int16": pa.int16(), "Int32": pa.int32(), "Int64": pa.int64(),
}
# Wide integers: (width in bytes, signed, the 64-bit Arrow type used when every value fits in it).
_WIDE: dict[str, tuple[int, bool, pa.DataType]] = {
    "Int128": (16, True, pa.int64()), "UInt128": (16, False, pa.uint64()),
    "Int256": (32, True, pa.int64()), "UInt256": (32, False, pa.uint64()),
}
_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError)


class ColumnError(TypeError):
    """A value the column's type cannot store exactly (or a column type this module does not write)."""


def _unwrap(type_name: str, wrapper: str) -> str | None:
    prefix = wrapper + "("
    return type_name[len(prefix):-1] if type_name.startswith(prefix) and type_name.endswith(")") else None


def column(values: Sequence[Any], type_name: str) -> pa.Array:
    """`values` as an Arrow array the engine stores in a column of ClickHouse type `type_name`."""
    inner = _unwrap(type_name, "LowCardinality")
    if inner is not None:
        return column(values, inner)
    inner = _unwrap(type_name, "Nullable")
    if inner is not None:
        return _scalar(values, inner)
    inner = _unwrap(type_name, "Array")
    if inner is not None:
        return _array(values, inner)
    return _not_null(_scalar(values, type_name), type_name)


def _not_null(array: pa.Array, type_name: str) -> pa.Array:
    if array.null_count:
        raise ColumnError(f"None in a column of type {type_name}")
    return array


def _scalar(values: Sequence[Any], type_name: str) -> pa.Array:
    if type_name == "String":
        try:
            return pa.array(values, pa.binary())
        except _CONVERSION_ERRORS as error:
            raise ColumnError(f"a String column takes str or bytes: {error}") from error
    if type_name in _INTEGERS:
        return _integers(values, _INTEGERS[type_name], type_name)
    if type_name in _WIDE:
        return _wide(values, type_name)
    raise ColumnError(f"no Arrow encoding for column type {type_name}")


def _integers(values: Sequence[Any], arrow_type: pa.DataType, type_name: str) -> pa.Array:
    try:
        return pa.array(values, arrow_type)
    except _CONVERSION_ERRORS:
        pass
    # pyarrow refuses bool; the Native path wrote it as 0/1. Anything else that is not an integer stays refused.
    try:
        return pa.array([None if v is None else operator.index(v) for v in values], arrow_type)
    except _CONVERSION_ERRORS as error:
        raise ColumnError(f"not a {type_name}: {error}") from error


def _wide(values: Sequence[Any], type_name: str) -> pa.Array:
    width, signed, narrow = _WIDE[type_name]
    try:
        return pa.array(values, narrow)  # nearly always: amounts and totals that fit in 64 bits
    except _CONVERSION_ERRORS:
        pass
    try:
        return pa.array(
            [None if v is None else operator.index(v).to_bytes(width, "little", signed=signed) for v in values],
            pa.binary(width),
        )
    except _CONVERSION_ERRORS as error:
        raise ColumnError(f"not a {type_name}: {error}") from error


def _array(values: Sequence[Any], inner: str) -> pa.Array:
    if _unwrap(inner, "Nullable") or _unwrap(inner, "Array") or inner not in ("String", *_INTEGERS):
        raise ColumnError(f"no Arrow encoding for column type Array({inner})")
    item = pa.binary() if inner == "String" else _INTEGERS[inner]
    try:
        array = pa.array(values, pa.list_(item))
    except _CONVERSION_ERRORS as error:
        raise ColumnError(f"not an Array({inner}): {error}") from error
    _not_null(array, f"Array({inner})")
    _not_null(array.values, inner)
    return array


def record_batch(columns: Sequence[str], type_names: Sequence[str], rows: Sequence[Sequence[Any]]) -> pa.RecordBatch:
    """The rows (tuples in `columns` order) as one Arrow record batch typed for the columns' ClickHouse types."""
    if not rows:
        raise ValueError("no rows to encode")
    arrays = []
    for name, type_name, values in zip(columns, type_names, zip(*rows, strict=True), strict=True):
        try:
            arrays.append(column(values, type_name))
        except ColumnError as error:
            raise ColumnError(f"column {name}: {error}") from error
    return pa.RecordBatch.from_arrays(arrays, names=list(columns))


def ipc_stream(batches: Sequence[pa.RecordBatch], *, compression: str | None = None) -> bytes:
    """Record batches of one schema as an Arrow IPC stream (one insert: the engine squashes them into one part);
    `compression` ("lz4", "zstd") compresses the buffers, for a server across a network."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, batches[0].schema, options=ipc.IpcWriteOptions(compression=compression)) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def by_schema(batches: Sequence[pa.RecordBatch]) -> list[list[pa.RecordBatch]]:
    """Batches grouped by schema, in first-seen order. A wide-integer column is 64-bit in most batches and
    fixed-size binary in a batch with a value past 64 bits: those go in a stream (an insert) of their own."""
    groups: dict[pa.Schema, list[pa.RecordBatch]] = {}
    for batch in batches:
        groups.setdefault(batch.schema, []).append(batch)
    return list(groups.values())


def encode(
    columns: Sequence[str], type_names: Sequence[str], rows: Sequence[Sequence[Any]], *, compression: str | None = None
) -> bytes:
    """`record_batch` of the rows as an IPC stream."""
    return ipc_stream([record_batch(columns, type_names, rows)], compression=compression)
