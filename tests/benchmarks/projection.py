"""Projection: events/s from the log (SQLite) to queryable rows (ClickHouse engine, chdb), by the follower.

The log is written straight through the eventsourcing application (no signature checks: this measures the
read side), in the devnet's shape: a block of `txs_per_block` transfers with real-sized ML-DSA keys and
signatures, then `votes_per_block` votes and the finality they trigger.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from projections import ProjectionStore, ReadModel
from schemas.canonical import ZERO_HASH, hash_hex
from schemas.events import LOG_ID, SCHEMA_VERSION, BlockApplied, BlockFinalized, GenesisAccepted, VoteAccepted
from schemas.settings import Settings
from streams import Follower
from writes.service import LedgerApplication

CHAIN = "projbench"


def _addresses(n: int) -> list[str]:
    return ["0x" + hash_hex(b"acct%d" % i)[:40] for i in range(n)]


def _drafts(blocks: int, txs_per_block: int, votes_per_block: int) -> list[tuple[type, dict[str, Any]]]:
    accts = _addresses(200)
    key = {"alg": "ml-dsa-65", "pk": os.urandom(1952).hex()}
    sig = os.urandom(3309).hex()
    nodes = [f"node-{i}" for i in range(votes_per_block)]
    out: list[tuple[type, dict[str, Any]]] = [(GenesisAccepted, {
        "chain_id": CHAIN, "block_hash": hash_hex(b"genesis"), "genesis": {}, "params": {}, "timestamp_ms": 0,
        "allocations": [[a, 10**12] for a in accts],
        "validators": [{"node_id": n, "operator": accts[0], "key": key, "gpu_uuid": n, "stake": 10**8} for n in nodes],
        "relayers": [],
    })]
    parent = hash_hex(b"genesis")
    nonces = dict.fromkeys(accts, 0)
    for h in range(1, blocks + 1):
        bhash = hash_hex(b"block%d" % h)
        txs, balances, nonce_fx = [], {}, []
        for i in range(txs_per_block):
            a, b = accts[(h * 7 + i) % len(accts)], accts[(h * 13 + i * 3 + 1) % len(accts)]
            txs.append({"kind": "transfer", "chain_id": CHAIN, "signer": a, "key": key, "from": a, "to": b,
                        "asset": "CELL", "amount": 100, "fee": 1, "nonce": nonces[a], "sig": sig})
            nonce_fx.append([a, nonces[a], nonces[a] + 1])
            nonces[a] += 1
            balances[a] = balances.get(a, 0) - 101
            balances[b] = balances.get(b, 0) + 100
        balances[accts[0]] = balances.get(accts[0], 0) + 2_000_000 + txs_per_block
        block = {"kind": "block", "chain_id": CHAIN, "height": h, "parent": parent, "proposer": nodes[0],
                 "timestamp_ms": h * 1000, "tx_root": ZERO_HASH, "txs": txs, "sig": sig}
        effects = {"balances": [[a, "CELL", d] for a, d in balances.items() if d], "nonces": nonce_fx,
                   "reward": 2_000_000, "fees": txs_per_block, "minted": 2_000_000, "burned": 0, "releases": [],
                   "volume": [["CELL", 100 * txs_per_block]]}
        out.append((BlockApplied, {
            "chain_id": CHAIN, "block_hash": bhash, "height": h, "parent": parent, "proposer": nodes[0],
            "operator": accts[0], "timestamp_ms": h * 1000, "block": block,
            "tx_ids": [hash_hex(b"tx%d.%d" % (h, i)) for i in range(txs_per_block)],
            "receipts": [["applied", ""]] * txs_per_block, "effects": effects,
        }))
        for n in nodes:
            out.append((VoteAccepted, {"chain_id": CHAIN, "node_id": n, "height": h, "block_hash": bhash,
                                       "vote": {"kind": "vote", "chain_id": CHAIN, "node_id": n, "height": h,
                                                "block_hash": bhash, "sig": sig}}))
        out.append((BlockFinalized, {
            "chain_id": CHAIN, "block_hash": bhash, "height": h, "voting_stake": 10**8 * len(nodes),
            "total_stake": 10**8 * len(nodes), "finalized": [[h, bhash]], "head_height": h,
            "head_timestamp_ms": h * 1000,
        }))
        parent = bhash
    return out


def _write_log(app: LedgerApplication, drafts: list[tuple[type, dict[str, Any]]]) -> None:
    prev, batch = ZERO_HASH, []
    for seq, (cls, payload) in enumerate(drafts, start=1):
        event = cls(originator_id=LOG_ID, originator_version=seq, timestamp=cls.create_timestamp(),
                    prev_hash=prev, schema_version=SCHEMA_VERSION, **payload)
        prev = event.hash()
        batch.append(event)
        if len(batch) == 500:
            app.save(*batch)
            batch = []
    if batch:
        app.save(*batch)


def projection_rate(blocks: int, txs_per_block: int, votes_per_block: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        app = LedgerApplication(env=settings.event_store_env())
        drafts = _drafts(blocks, txs_per_block, votes_per_block)
        _write_log(app, drafts)
        events = len(drafts)
        store = ProjectionStore(settings.views_dsn, "projbench")
        Follower(app, store, batch_events_max=1).run_once()  # the genesis: warms imports outside the timing
        follower = Follower(app, store)
        start = time.perf_counter()
        follower.run_until_caught_up()
        elapsed = time.perf_counter() - start
        events -= 1
        head = ReadModel(store).head(CHAIN)
        assert head is not None and head["height"] == blocks and head["finalized_height"] == blocks, head
        store.drop()
        store.close()
        app.close()
    return {
        "name": f"projection_{txs_per_block}tx_blocks",
        "events": events, "blocks": blocks, "txs_per_block": txs_per_block, "votes_per_block": votes_per_block,
        "events_per_s": round(events / elapsed, 1),
        "txs_per_s": round(blocks * txs_per_block / elapsed, 1),
        "target_events_per_s": 100_000,
    }
