"""Reorg cost (issue 3): how long a reorganization of depth d takes until every view is consistent again.

Two branches grow from the genesis: the canonical one, d blocks of `txs_per_block` transfers proposed by
`bench-a`, then a side branch of d + 1 blocks proposed by `bench-b`, whose last block makes it longer and
triggers the reorg (d blocks reverted, d reapplied, the new one applied). Both branches carry the same signed
transfers (the pre-signed corpus of tests/benchmarks/corpus.py, nonce h - 1 at height h), so they differ by
their headers and proposers: ~1,000 signatures per block are signed once, not twice, and every tx applies on
either branch. Measured, per depth:

- write: `LedgerService.submit` of the triggering block (verify its signatures, decide the reorg, seal, save
  in one transaction, fold);
- projection: the follower catching up over the reorg's events (`run_until_caught_up`), after which the read
  model answers from the new branch;
- baselines from the same run: submitting the canonical branch's d blocks normally (`submit_many`, as intake
  does) and projecting them, and the same for the side branch's first d blocks (recorded, not canonical).

After the timing, the views are checked against the write side's state: head, reorg row, the canonical block
at every height, every account's balance and nonce, and receipts.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from projections import ProjectionStore, ReadModel
from schemas import build
from schemas.canonical import block_hash, genesis_hash, tx_id
from schemas.settings import Settings
from schemas.signing import KeyPair
from streams import Follower
from tests.benchmarks.corpus import CHAIN_ID, T0_MS, load_corpus
from writes.service import LedgerService

PROPOSERS = ("bench-a", "bench-b")  # the canonical branch's proposer, then the side branch's
STAKE = 10**9
FUNDS = 10**15
# Accounts whose views are read one by one through ReadModel after each reorg (all are checked in bulk).
SAMPLE_ACCOUNTS = 25


def _validator_keys() -> list[KeyPair]:
    return [KeyPair.from_seed(f"bench-reorg-{name}".encode()) for name in PROPOSERS]


def _genesis(senders: Sequence[str], keys: Sequence[KeyPair]) -> dict[str, Any]:
    return build.genesis(
        CHAIN_ID, T0_MS, allocations=[(a, FUNDS) for a in senders],
        validators=[(n, k.address, k, f"gpu-{n}", STAKE) for n, k in zip(PROPOSERS, keys, strict=True)],
    )


def _branch(
    corpus_blocks: Sequence[dict[str, Any]], parent: str, proposer: int, keys: Sequence[KeyPair], skew_ms: int
) -> list[dict[str, Any]]:
    """The corpus' txs under new headers on `parent`: same txs (and tx_root), this proposer's signature."""
    out = []
    for height, source in enumerate(corpus_blocks, start=1):
        blk = build.block(
            CHAIN_ID, height, parent, PROPOSERS[proposer], keys[proposer], T0_MS + 1000 * height + skew_ms,
            source["txs"], root=source["tx_root"],
        )
        out.append(blk)
        parent = block_hash(blk)
    return out


def _submit_all(service: LedgerService, blocks: Sequence[dict[str, Any]], canonical: bool) -> float:
    start = time.perf_counter()
    for result in service.submit_many(blocks):
        assert result["status"] == "accepted" and result["canonical"] is canonical, result
    return time.perf_counter() - start


def _catch_up(follower: Follower) -> tuple[float, int]:
    start = time.perf_counter()
    events = follower.run_until_caught_up()
    return time.perf_counter() - start, events


def _log_bytes(service: LedgerService, after: int) -> int:
    return sum(len(n.state) for n in service.notifications(after + 1))


def _check_views(
    read: ReadModel, store: ProjectionStore, service: LedgerService, new_branch: Sequence[dict[str, Any]], depth: int
) -> None:
    """Every view answers from the new branch: head, reorg, blocks, balances and nonces, receipts."""
    chain = service.ledger.chains[CHAIN_ID]
    head = read.head(CHAIN_ID)
    assert head is not None and (head["height"], head["hash"]) == (chain.tip.height, chain.tip.hash), head
    reorg = read.reorgs(CHAIN_ID, 1)[0]
    assert reorg["depth"] == depth and reorg["new_tip"]["hash"] == chain.tip.hash, reorg
    listed = read.blocks(CHAIN_ID, first=depth + 2)
    assert [b["hash"] for b in listed] == list(reversed(chain.canonical)), "blocks listing"
    assert [block_hash(b) for b in new_branch] == chain.canonical[1:]
    # Every account in one scan of the views (the read model's sum, at the snapshot), against the fold.
    cp = read.snapshot().position
    rows = store.client.query(
        "SELECT address, asset, sum(delta) FROM balance_deltas WHERE chain_id = {c:String}"
        " AND height <= {h:UInt64} AND position <= {cp:UInt64} GROUP BY address, asset HAVING sum(delta) != 0",
        parameters={"c": CHAIN_ID, "h": chain.tip.height, "cp": cp},
    ).result_rows
    views = {(a, asset): int(total) for a, asset, total in rows}
    folded = {(a, asset): n for (a, asset), n in chain.balances.items() if n}
    folded.update({(a, "#nonce"): n for a, n in chain.nonces.items() if n})
    assert views == folded, "balances and nonces of the views differ from the fold"
    for address in sorted({a for a, _ in folded})[:SAMPLE_ACCOUNTS]:
        account = read.account(CHAIN_ID, address)
        assert account is not None and account["nonce"] == chain.next_nonce(address)
        assert {b["asset"]: b["amount"] for b in account["balances"]} == {
            asset: n for (a, asset), n in chain.balances.items() if a == address and n
        }
    for blk in (new_branch[0], new_branch[-1]):
        tx = blk["txs"][0]
        receipt = read.receipt(tx_id(tx), CHAIN_ID)
        assert receipt is not None and receipt["status"] == "applied" and receipt["block_hash"] == block_hash(blk)


def reorg_once(
    engine_dsn: str, data_dir: Path, corpus_blocks: Sequence[dict[str, Any]], genesis: dict[str, Any],
    keys: Sequence[KeyPair], depth: int, workers: int,
) -> dict[str, Any]:
    ghash = genesis_hash(genesis)
    canonical = _branch(corpus_blocks[:depth], ghash, 0, keys, 0)
    side = _branch(corpus_blocks[: depth + 1], ghash, 1, keys, 1)
    service = LedgerService(Settings(data_dir=data_dir, verify_workers=workers))
    store = ProjectionStore(engine_dsn, f"reorg_{depth}")
    try:
        assert service.submit(genesis)["status"] == "accepted"
        follower = Follower(service.app, store)
        follower.run_until_caught_up()  # the genesis: tables, imports and the engine warm outside the timings
        service.verifier.verify([
            (t["key"]["alg"], bytes.fromhex(t["key"]["pk"]), b"", t["sig"]) for t in corpus_blocks[0]["txs"][:64]
        ])  # start the pool's workers
        apply_write_s = _submit_all(service, canonical, canonical=True)
        apply_project_s, _ = _catch_up(follower)
        record_write_s = _submit_all(service, side[:depth], canonical=False)
        record_project_s, _ = _catch_up(follower)

        before = service.max_position()
        start = time.perf_counter()
        result = service.submit(side[depth])
        write_s = time.perf_counter() - start
        assert result["status"] == "accepted" and result["reorg"]["depth"] == depth, result
        project_s, events = _catch_up(follower)
        assert events == service.max_position() - before == 2 * depth + 2

        read = ReadModel(store)
        _check_views(read, store, service, side, depth)
        log_bytes = _log_bytes(service, before)
    finally:
        store.drop()
        store.close()
        service.close()
    total_s = write_s + project_s
    apply_total_s = apply_write_s + apply_project_s
    return {
        "depth": depth,
        "reorg_events": events,
        "reorg_log_mb": round(log_bytes / 1e6, 1),
        "write_s": round(write_s, 3),
        "project_s": round(project_s, 3),
        "total_s": round(total_s, 3),
        "baseline_apply_write_s": round(apply_write_s, 3),
        "baseline_apply_project_s": round(apply_project_s, 3),
        "baseline_record_side_write_s": round(record_write_s, 3),
        "baseline_record_side_project_s": round(record_project_s, 3),
        # A reorg of depth d against applying d blocks normally (write, projection, both), and the triggering
        # block's submit against the mean submit of one normal block.
        "ratio_write_to_apply_d_blocks": round(write_s / apply_write_s, 3),
        "ratio_project_to_apply_d_blocks": round(project_s / apply_project_s, 3),
        "ratio_total_to_apply_d_blocks": round(total_s / apply_total_s, 3),
        "ratio_write_to_one_block": round(write_s / (apply_write_s / depth), 3),
    }


def reorg_cost(depths: Sequence[int] = (1, 10, 100), txs_per_block: int = 1000) -> dict[str, Any]:
    workers = os.cpu_count() or 1
    corpus = load_corpus(max(depths) + 1, txs_per_block)
    keys = _validator_keys()
    senders = [tx["from"] for tx in corpus.blocks[0]["txs"]]
    genesis = _genesis(senders, keys)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = f"chdb://{(Path(tmp) / 'views').resolve().as_posix()}"
        for depth in depths:
            runs.append(reorg_once(engine, Path(tmp) / f"d{depth}", corpus.blocks, genesis, keys, depth, workers))
    return {
        "name": "reorg",
        "txs_per_block": txs_per_block,
        "workers": workers,
        "ancestor_height": 0,
        "same_txs_on_both_branches": True,
        "depths": runs,
    }
