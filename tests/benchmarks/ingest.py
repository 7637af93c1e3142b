"""Ingest: pre-signed blocks of transfers applied and persisted, beside the raw verify rate on all cores."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from accelerators.verify import BatchVerifier
from schemas.canonical import canonical_bytes
from schemas.settings import Settings
from tests.benchmarks.corpus import load_corpus
from writes.service import LedgerService


def raw_verify_rate(blocks: list[dict[str, Any]], workers: int) -> float:
    """pqcrypto ML-DSA-65 verifications/s over every tx of the corpus, split over `workers` processes."""
    items = [
        (tx["key"]["alg"], bytes.fromhex(tx["key"]["pk"]), canonical_bytes(tx, drop_sig=True), tx["sig"])
        for b in blocks for tx in b["txs"]
    ]
    verifier = BatchVerifier(workers)
    verifier.verify(items[: 64 * workers])  # start the worker processes outside the timing
    start = time.perf_counter()
    for i in range(0, len(items), 1000):
        assert all(verifier.verify(items[i : i + 1000]))
    elapsed = time.perf_counter() - start
    verifier.close()
    return len(items) / elapsed


def ingest_rate(blocks_n: int, txs_per_block: int) -> dict[str, Any]:
    corpus = load_corpus(blocks_n, txs_per_block)
    workers = os.cpu_count() or 1
    raw = raw_verify_rate(corpus.blocks, workers)
    with tempfile.TemporaryDirectory() as tmp:
        service = LedgerService(Settings(data_dir=Path(tmp), verify_workers=workers))
        assert service.submit(corpus.genesis)["status"] == "accepted"
        service.verifier.verify(
            [(t["key"]["alg"], bytes.fromhex(t["key"]["pk"]), b"", t["sig"]) for t in corpus.blocks[0]["txs"][:64]]
        )  # warm the pool
        start = time.perf_counter()
        for result in service.submit_many(corpus.blocks):  # as `tally submit` and POST /v1/commands send them
            assert result["status"] == "accepted", result
        elapsed = time.perf_counter() - start
        size = service.settings.sqlite_path.stat().st_size
        service.close()
    ingest = corpus.tx_count / elapsed
    return {
        "name": "ingest",
        "blocks": blocks_n,
        "txs_per_block": txs_per_block,
        "workers": workers,
        "ingest_tx_per_s": round(ingest, 1),
        "raw_verify_per_s": round(raw, 1),
        "ratio_ingest_to_raw_verify": round(ingest / raw, 3),
        "target_ratio": 0.8,
        "event_store_bytes_per_tx": round(size / corpus.tx_count),
    }
