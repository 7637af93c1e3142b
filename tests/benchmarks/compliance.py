"""Compliance (issue 7): replay, verify and export rates over two real logs, with baselines from the same run.

The logs are made by the ledger's own rules (`writes.decide.decide`, sealed into the hash chain and folded as the
service does) from signed commands, and cached under .bench-cache/ as SQLite event stores (git-ignored; the
first run builds them, which signs ~14k ML-DSA signatures and takes a few minutes on a loaded machine):

- `small`: the devnet's command stream (`writes.devnet.build_chain`): `SMALL_BLOCKS` blocks of
  `SMALL_TXS_PER_BLOCK` transfers (about one in ten built to be rejected), each followed by its votes and the
  finality they trigger: many events, small in content (though ~12 KB each on average: every vote carries its
  ML-DSA signature, every tx its key and signature);
- `big`: `BIG_BLOCKS` blocks of 1,000 transfers from the pre-signed corpus (tests/benchmarks/corpus.py), each
  with its validator's vote and finality: few events of ~10 MB (ML-DSA keys and signatures are 5 KB per tx).

Measured on each, every stage over the whole log (a fresh copy of the cached file):

- baselines: `read` (the recorder's `select_notifications`, raw rows), `decode` (read + the eventsourcing
  mapper: `to_domain_event`, the floor of anything that walks the log), `project` (decode + the pure
  `project()` of every event, rows kept in memory: no store);
- `replay`: `projections.replay.replay` into a fresh embedded store (chdb), as `tally replay` runs it;
- `replay_workers`: the same with `--workers` = every core (worker processes decode, project and encode ranges of
  the log, this process writes); its CPU seconds include the workers' (the first of its runs also starts the
  fork server);
- `verify_no_signatures` and `verify_signatures`: the audit of `tally verify` (writes/audit.Auditor, fed by
  api/cli_compliance.read_log) with a `TrustingVerifier` (`--no-signatures`), then with a `BatchVerifier` over
  every core (its pool started beforehand);
- `export_jsonl`, `export_parquet`: `tally export`'s path (read_log, `api.export.record`, `write_export`), with the
  written file's MB/s; `verify_export_*`: `tally verify-export` of that file (every hash recomputed).

Each stage gives wall seconds and this process's CPU seconds (threads included: the chdb engine's; not the verify
workers'), and both over `decode`'s of the same run (`ratio_to_decode`, `cpu_ratio_to_decode`): what replaying,
auditing or exporting costs beyond reading the log at all. The short stages (read, decode, project, replay) are
the best of REPEATS runs. Absolute rates on shared cores are noise; the ratios and CPU seconds are the figures,
with the load average before and after each log's stages (`load_avg`: 1, 5 and 15 minutes).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerators.verify import BatchVerifier, TrustingVerifier
from api.cli_compliance import audit_log, read_log
from api.export import record, verify_export, write_export
from projections.family import Rows, merge_rows
from projections.project import project
from projections.replay import replay
from projections.store import ProjectionStore
from schemas import build
from schemas.canonical import block_hash
from schemas.events import LedgerEvent
from schemas.limits import RESERVES_EVERY_BLOCKS
from schemas.settings import Settings
from tests.benchmarks.corpus import CACHE_DIR, CHAIN_ID, _keys, load_corpus
from writes.audit import Auditor
from writes.decide import Attestor, decide
from writes.devnet import build_chain
from writes.service import LedgerApplication, seal
from writes.state import Ledger, fold

SMALL_BLOCKS = 2_000
SMALL_TXS_PER_BLOCK = 3
BIG_BLOCKS = 20
BIG_TXS_PER_BLOCK = 1_000
SEED = b"tally-bench-compliance"
RESERVES_SECRET = bytes(range(32))  # the logs are built with it, and audited with it (roots checked)
SAVE_EVENTS = 500  # events per SQLite transaction while building a log (the service saves one per command)
SECTION_EVENTS = 2_000  # notifications per select in the baselines: replay's section size
REPEATS = 2  # best of, for the short stages (read, decode, project, replay)
TARGET_REPLAY_EVENTS_PER_S = 200_000


# ------------------------------------------------------------------------------------------------ the logs


def _open(data_dir: Path) -> LedgerApplication:
    return LedgerApplication(env=Settings(data_dir=data_dir).event_store_env())


def _write_log(data_dir: Path, commands: Sequence[dict[str, Any]]) -> int:
    """Every command decided by the ledger's rules (signatures taken as valid here: the audit checks them
    later), sealed and folded as LedgerService does, saved SAVE_EVENTS at a time. Returns the events."""
    app = _open(data_dir)
    ledger, verifier = Ledger(), TrustingVerifier()
    attestor = Attestor(RESERVES_SECRET, RESERVES_EVERY_BLOCKS)
    pending: list[LedgerEvent] = []
    try:
        for command in commands:
            decision = decide(ledger, command, verifier, attestor=attestor)
            for event, ehash in seal(ledger, decision.events):
                fold(ledger, event, ehash)
                pending.append(event)
            if len(pending) >= SAVE_EVENTS:
                app.save(*pending)
                pending = []
        if pending:
            app.save(*pending)
        return ledger.seq
    finally:
        app.close()


def _cached_log(name: str, commands: Callable[[], Sequence[dict[str, Any]]]) -> Path:
    path = CACHE_DIR / f"{name}.sqlite"
    if path.exists():
        return path
    CACHE_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        _write_log(Path(tmp), commands())
        # Whole or absent: an interrupted build leaves no cache behind.
        Settings(data_dir=Path(tmp)).sqlite_path.replace(path)
    return path


def small_log(blocks: int = SMALL_BLOCKS, txs_per_block: int = SMALL_TXS_PER_BLOCK) -> Path:
    def commands() -> list[dict[str, Any]]:
        return build_chain(SEED, blocks=blocks, txs_per_block=txs_per_block, rng=random.Random(7)).commands

    return _cached_log(f"compliance-devnet-{blocks}x{txs_per_block}", commands)


def _corpus_blocks(blocks: int) -> int:
    """The smallest cached corpus with enough blocks (the reorg bench's has 101): its first blocks are as good as
    a new corpus, which would take minutes to sign."""
    cached = sorted(
        int(p.stem.split("-")[1].split("x")[0]) for p in CACHE_DIR.glob(f"corpus-*x{BIG_TXS_PER_BLOCK}.json")
    )
    return next((n for n in cached if n >= blocks), blocks)


def big_log(blocks: int = BIG_BLOCKS) -> Path:
    def commands() -> list[dict[str, Any]]:
        corpus = load_corpus(_corpus_blocks(blocks), BIG_TXS_PER_BLOCK)
        validator, _ = _keys(0)
        out: list[dict[str, Any]] = [corpus.genesis]
        for blk in corpus.blocks[:blocks]:
            out.append(blk)  # the corpus' only validator holds all the stake: its vote finalizes the block
            out.append(build.vote(CHAIN_ID, "bench-node", validator, blk["height"], block_hash(blk)))
        return out

    return _cached_log(f"compliance-corpus-{blocks}x{BIG_TXS_PER_BLOCK}", commands)


# ------------------------------------------------------------------------------------------------ stages


def _sections(app: LedgerApplication) -> Iterator[list[Any]]:
    cursor, end = 1, app.recorder.max_notification_id() or 0
    while cursor <= end:
        section = app.recorder.select_notifications(cursor, min(SECTION_EVENTS, end - cursor + 1))
        if not section:
            return
        yield section
        cursor = section[-1].id + 1


def _read(app: LedgerApplication) -> int:
    return sum(len(n.state) for section in _sections(app) for n in section)


def _decode(app: LedgerApplication) -> int:
    return sum(1 for section in _sections(app) for n in section if app.mapper.to_domain_event(n) is not None)


def _project(app: LedgerApplication) -> int:
    """Rows of every event, a section's worth kept at a time (replay writes a batch per section)."""
    count = 0
    for section in _sections(app):
        rows: Rows = {}
        for n in section:
            merge_rows(rows, project(n.id, app.mapper.to_domain_event(n)))
        count += sum(len(r) for r in rows.values())
    return count


class _Stores:
    """Fresh databases on one chdb engine path (one per process), each dropped when the next one is made."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.current: ProjectionStore | None = None

    def fresh(self) -> ProjectionStore:
        self.close()
        self.current = ProjectionStore(self.dsn, f"compliance_{uuid.uuid4().hex[:12]}")
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.drop()
            self.current.close()
            self.current = None


@dataclass
class Timed:
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU, its threads included (the chdb engine's), not the verify workers'
    result: Any


def _timed(run: Callable[[Any], Any], setup: Callable[[], Any] = lambda: None, repeats: int = 1) -> Timed:
    """The shortest of `repeats` runs of `run(setup())` (shared cores: the minimum is the least disturbed;
    `setup` is outside the timing), wall and CPU each, with the last run's result. A result that counts the CPU
    of worker processes (`worker_cpu_s`, replay's) has it added."""
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        arg = setup()
        start, start_cpu = time.perf_counter(), time.process_time()
        result = run(arg)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu + getattr(result, "worker_cpu_s", 0.0))
    return Timed(wall, cpu, result)


def _warm(verifier: BatchVerifier, app: LedgerApplication) -> None:
    """Start the pool's workers outside the timing: one batch of real (key, signature) pairs."""
    for _, event, _ in read_log(app):
        block = getattr(event, "block", None)
        if block and block["txs"]:
            tx = block["txs"][0]
            item = (tx["key"]["alg"], bytes.fromhex(tx["key"]["pk"]), b"", tx["sig"])
            verifier.verify([item] * 64 * verifier.workers)
            return


def _audit(app: LedgerApplication, verifier: BatchVerifier) -> Any:
    auditor = Auditor(verifier, reserves_every_blocks=RESERVES_EVERY_BLOCKS, reserves_secret=RESERVES_SECRET)
    report = audit_log(app, auditor)
    assert report.ok, report.findings[:3]
    return report


def _export(app: LedgerApplication, out: Path, fmt: str) -> int:
    """What `tally export` does: the head's hash, then every event as a record, into the file and manifest."""
    head = app.recorder.max_notification_id() or 0
    (last,) = app.recorder.select_notifications(head, 1)
    head_hash = app.mapper.to_domain_event(last).hash()

    def records() -> Iterator[dict[str, Any]]:
        for position, event, error in read_log(app):
            assert event is not None, error
            yield record(position, event)

    summary = write_export(out, records(), fmt=fmt, head=(head, head_hash))
    return summary.bytes


def _stages(app: LedgerApplication, data_dir: Path, stores: _Stores, verifier: BatchVerifier) -> dict[str, Timed]:
    events = app.recorder.max_notification_id() or 0
    out = {
        "read": _timed(lambda _: _read(app), repeats=REPEATS),
        "decode": _timed(lambda _: _decode(app), repeats=REPEATS),
        "project": _timed(lambda _: _project(app), repeats=REPEATS),
        "replay": _timed(lambda store: replay(app, store), stores.fresh, repeats=REPEATS),
        "replay_workers": _timed(lambda store: replay(app, store, workers=verifier.workers), stores.fresh,
                                 repeats=REPEATS),
        "verify_no_signatures": _timed(lambda _: _audit(app, TrustingVerifier())),
    }
    for stage in ("replay", "replay_workers"):
        assert out[stage].result.events == events and out[stage].result.poison == 0, out[stage].result
    _warm(verifier, app)
    out["verify_signatures"] = _timed(lambda _: _audit(app, verifier))
    for fmt in ("jsonl", "parquet"):
        target = data_dir / f"export-{fmt}"
        out[f"export_{fmt}"] = _timed(lambda _, f=fmt, t=target: _export(app, t, f))
        out[f"verify_export_{fmt}"] = checked = _timed(lambda _, t=target: verify_export(t))
        assert checked.result == (events, []), checked.result[1][:3]
    return out


def measure(name: str, sqlite: Path, engine_dsn: str, tmp: Path, workers: int) -> dict[str, Any]:
    data_dir = tmp / name
    data_dir.mkdir()
    shutil.copyfile(sqlite, Settings(data_dir=data_dir).sqlite_path)
    app = _open(data_dir)
    stores = _Stores(engine_dsn)
    verifier = BatchVerifier(workers)
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        events = app.recorder.max_notification_id() or 0
        log_bytes = _read(app)  # also warms the file cache: every stage reads a warm file
        blocks = txs = 0
        for _, event, _ in read_log(app):
            if event is not None and event.KIND == "block_applied":
                blocks, txs = blocks + 1, txs + len(event.tx_ids)
        timed = _stages(app, data_dir, stores, verifier)
        load_after = [round(x, 2) for x in os.getloadavg()]
    finally:
        stores.close()
        verifier.close()
        app.close()
    decode = timed["decode"]
    stages: dict[str, Any] = {}
    for stage, t in timed.items():
        stages[stage] = {
            "s": round(t.seconds, 3), "cpu_s": round(t.cpu_seconds, 3), "events_per_s": round(events / t.seconds),
            "txs_per_s": round(txs / t.seconds), "log_mb_per_s": round(log_bytes / t.seconds / 1e6, 1),
            # Over decoding the same log in the same run: 1.0 is as fast as reading the log at all.
            "ratio_to_decode": round(t.seconds / decode.seconds, 2),
            "cpu_ratio_to_decode": round(t.cpu_seconds / decode.cpu_seconds, 2),
        }
        if stage.startswith("export_"):
            size = int(t.result)
            stages[stage].update({"file_mb": round(size / 1e6, 1), "file_mb_per_s": round(size / t.seconds / 1e6, 1)})
    return {
        "log": name, "events": events, "blocks": blocks, "txs": txs, "log_mb": round(log_bytes / 1e6, 1),
        "bytes_per_event": round(log_bytes / events), "projected_rows": timed["project"].result,
        "replay_events_per_s": stages["replay"]["events_per_s"],
        "replay_events_per_cpu_s": round(events / timed["replay"].cpu_seconds),
        "replay_workers_events_per_s": stages["replay_workers"]["events_per_s"],
        "target_replay_events_per_s": TARGET_REPLAY_EVENTS_PER_S,
        "verify_workers": workers, "replay_workers": timed["replay_workers"].result.workers,
        "best_of": {"read": REPEATS, "decode": REPEATS, "project": REPEATS, "replay": REPEATS,
                    "replay_workers": REPEATS, "others": 1},
        "load_avg": {"before": load_before, "after": load_after},
        "stages": stages,
    }


def compliance_rates(
    small_blocks: int = SMALL_BLOCKS, small_txs_per_block: int = SMALL_TXS_PER_BLOCK, big_blocks: int = BIG_BLOCKS
) -> dict[str, Any]:
    workers = os.cpu_count() or 1
    logs = {"small": small_log(small_blocks, small_txs_per_block), "big": big_log(big_blocks)}
    with tempfile.TemporaryDirectory() as tmp:
        engine = f"chdb://{(Path(tmp) / 'views').resolve().as_posix()}"
        runs = [measure(name, path, engine, Path(tmp), workers) for name, path in logs.items()]
    return {"name": "compliance", "logs": runs}
