"""`tally export` and `tally verify-export`: the log as files an auditor can check without tally.

Format `tally-export-v1` (docs/compliance.md is the auditor-facing description):

    DIR/events.jsonl      one event per line, in log order:
                          {"position", "seq", "kind", "hash", "data"}; `data` is the event's payload, `prev_hash`
                          included, and hash = blake3(canonical JSON of {"kind", "seq", "data"}) (schemas/events.py)
    DIR/events.parquet    (--format parquet) the same columns, `data` as its JSON text
    DIR/manifest.json     {"format", "count", "first_position", "last_position", "first_seq", "last_seq",
                           "first_prev_hash", "first_hash", "last_hash", "head_hash", "head_seq", "file",
                           "file_blake3", "file_bytes"}

Canonical JSON is `json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` in UTF-8 (DOMAIN.md).
A range (`--from`, `--to` positions) starts with the hash of the event before it (`first_prev_hash`), so a slice
verifies on its own, and `head_hash` (the log's last hash at export time) ties it to the whole log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from blake3 import blake3

from accelerators import backend
from schemas.canonical import ZERO_HASH, canonical_bytes
from schemas.events import LedgerEvent

FORMAT = "tally-export-v1"
MANIFEST = "manifest.json"
FILES = {"jsonl": "events.jsonl", "parquet": "events.parquet"}
COLUMNS = ("position", "seq", "kind", "hash", "data")


def record(position: int, event: LedgerEvent) -> dict[str, Any]:
    return {"position": position, "seq": event.seq, "kind": event.KIND, "hash": event.hash(), "data": event.payload()}


def _dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # integers beyond 64 bits (totals)
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass
class ExportSummary:
    count: int
    bytes: int
    manifest: dict[str, Any]


def write_export(
    out_dir: Path, records: Iterable[dict[str, Any]], *, fmt: str, head: tuple[int, str]
) -> ExportSummary:
    """Writes the records and then the manifest (a directory without a manifest is an unfinished export)."""
    if fmt not in FILES:
        raise ValueError(f"unknown export format {fmt!r}: expected one of {', '.join(FILES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST, *FILES.values()):
        if (out_dir / name).exists():
            raise FileExistsError(f"{out_dir / name} exists: export into an empty directory")
    path = out_dir / FILES[fmt]
    digest = blake3()
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    count = 0
    if fmt == "jsonl":
        with path.open("wb") as out:
            for rec in records:
                line = _dumps(rec) + b"\n"
                out.write(line)
                digest.update(line)
                first, last, count = first or rec, rec, count + 1
    else:
        first, last, count = _write_parquet(path, records)
        digest.update(path.read_bytes())
    manifest = {
        "format": FORMAT, "file": path.name, "file_blake3": digest.hexdigest(), "file_bytes": path.stat().st_size,
        "count": count,
        "first_position": first["position"] if first else None, "last_position": last["position"] if last else None,
        "first_seq": first["seq"] if first else None, "last_seq": last["seq"] if last else None,
        "first_prev_hash": first["data"]["prev_hash"] if first else None,
        "first_hash": first["hash"] if first else None, "last_hash": last["hash"] if last else None,
        "head_seq": head[0], "head_hash": head[1],
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", "utf-8")
    return ExportSummary(count, manifest["file_bytes"], manifest)


def _write_parquet(path: Path, records: Iterable[dict[str, Any]]) -> tuple[Any, Any, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("position", pa.int64()), ("seq", pa.int64()), ("kind", pa.string()), ("hash", pa.string()),
        ("data", pa.string()),
    ])
    first = last = None
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        batch: dict[str, list[Any]] = {c: [] for c in COLUMNS}
        for rec in records:
            for column in COLUMNS[:-1]:
                batch[column].append(rec[column])
            batch["data"].append(_dumps(rec["data"]).decode("utf-8"))
            first, last, count = first or rec, rec, count + 1
            if len(batch["seq"]) == 1_000:
                writer.write_table(pa.table(batch, schema=schema))
                batch = {c: [] for c in COLUMNS}
        if batch["seq"]:
            writer.write_table(pa.table(batch, schema=schema))
    return first, last, count


def read_export(out_dir: Path) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    manifest = json.loads((out_dir / MANIFEST).read_text("utf-8"))
    path = out_dir / manifest["file"]
    if path.suffix == ".jsonl":
        def rows() -> Iterator[dict[str, Any]]:
            with path.open("rb") as lines:
                for line in lines:
                    try:
                        yield orjson.loads(line)
                    except orjson.JSONDecodeError:  # integers beyond 64 bits
                        yield json.loads(line)
    else:
        def rows() -> Iterator[dict[str, Any]]:
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches():
                for rec in batch.to_pylist():
                    rec["data"] = json.loads(rec["data"])
                    yield rec
    return manifest, rows()


VERIFY_BATCH_EVENTS = 4_096  # records hashed and linked per backend call
PROBLEMS_MAX = 20  # verify-export stops listing after this many


def _batched(rows: Iterator[dict[str, Any]], n: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for rec in rows:
        batch.append(rec)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def verify_export(out_dir: Path) -> tuple[int, list[str]]:
    """(events checked, problems): every record's hash recomputed, every link, the manifest's counts and hashes,
    and the file's digest. Needs nothing but the export."""
    problems: list[str] = []
    try:
        manifest, rows = read_export(out_dir)
    except (OSError, ValueError, KeyError) as error:
        return 0, [f"cannot read the export: {error}"]
    if manifest.get("format") != FORMAT:
        return 0, [f"unknown format {manifest.get('format')!r}"]
    path = out_dir / manifest["file"]
    digest = blake3()
    with path.open("rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != manifest["file_blake3"]:
        problems.append(f"{path.name}: its blake3 differs from the manifest's")
    count, prev, seq = 0, manifest["first_prev_hash"] or ZERO_HASH, manifest["first_seq"]
    last_hash = None
    # In batches through accelerators.backend: the events' hashes (hash_many over their canonical bytes), then
    # every link at once (check_hash_chain); each backend gives what event_hash and a loop of comparisons give.
    for batch in _batched(rows, VERIFY_BATCH_EVENTS):
        hashes = [digest.hex() for digest in backend.hash_many(
            [canonical_bytes({"kind": rec["kind"], "seq": rec["seq"], "data": rec["data"]}) for rec in batch])]
        stated = [rec["data"].get("prev_hash") for rec in batch]
        broken = set(backend.check_hash_chain([p if isinstance(p, str) else "" for p in stated], hashes, prev))
        for i, (rec, computed) in enumerate(zip(batch, hashes, strict=True)):
            where = f"position {rec.get('position')}"
            if rec["seq"] != (seq if count == 0 else seq + count):
                problems.append(f"{where}: sequence number {rec['seq']} out of order")
            if i in broken:
                problems.append(f"{where}: prev_hash is not the hash of the event before")
            if computed != rec["hash"]:
                problems.append(f"{where}: the record's hash is not the hash of its contents")
            prev, last_hash, count = computed, computed, count + 1
            if len(problems) >= PROBLEMS_MAX:
                break
        if len(problems) >= PROBLEMS_MAX:
            break
    if count != manifest["count"]:
        problems.append(f"{count} events where the manifest says {manifest['count']}")
    if last_hash != manifest["last_hash"]:
        problems.append("the last event's hash differs from the manifest's last_hash")
    if manifest["last_seq"] == manifest["head_seq"] and manifest["last_hash"] != manifest["head_hash"]:
        problems.append("the export ends at the head but its last hash is not the head hash")
    return count, problems
