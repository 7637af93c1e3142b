"""A cached corpus of pre-signed blocks of transfers (signing is slow; the cache is git-ignored)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas import build
from schemas.canonical import block_hash, genesis_hash
from schemas.signing import KeyPair

CACHE_DIR = Path(".bench-cache")
CHAIN_ID = "bench"
T0_MS = 1_700_000_000_000


@dataclass
class Corpus:
    genesis: dict[str, Any]
    blocks: list[dict[str, Any]]

    @property
    def tx_count(self) -> int:
        return sum(len(b["txs"]) for b in self.blocks)


def _keys(accounts: int) -> tuple[KeyPair, list[KeyPair]]:
    validator = KeyPair.from_seed(b"bench-validator")
    return validator, [KeyPair.from_seed(b"bench-account-%d" % i) for i in range(accounts)]


def make_corpus(blocks: int, txs_per_block: int) -> Corpus:
    """Every account sends once per block (nonce = block index), so every tx applies."""
    validator, senders = _keys(txs_per_block)
    genesis = build.genesis(
        CHAIN_ID, T0_MS, allocations=[(k.address, 10**15) for k in senders],
        validators=[("bench-node", validator.address, validator, "gpu-0", 10**9)],
    )
    parent = genesis_hash(genesis)
    out = []
    for height in range(1, blocks + 1):
        txs = [
            build.transfer(CHAIN_ID, k, senders[(i + 1) % len(senders)].address, 1_000, nonce=height - 1, fee=10)
            for i, k in enumerate(senders)
        ]
        blk = build.block(CHAIN_ID, height, parent, "bench-node", validator, T0_MS + 1000 * height, txs)
        out.append(blk)
        parent = block_hash(blk)
    return Corpus(genesis, out)


def load_corpus(blocks: int, txs_per_block: int) -> Corpus:
    path = CACHE_DIR / f"corpus-{blocks}x{txs_per_block}.json"
    if path.exists():
        data = json.loads(path.read_text())
        return Corpus(data["genesis"], data["blocks"])
    corpus = make_corpus(blocks, txs_per_block)
    CACHE_DIR.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"genesis": corpus.genesis, "blocks": corpus.blocks}))
    tmp.replace(path)
    return corpus
