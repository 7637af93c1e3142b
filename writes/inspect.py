"""Per-tx cryptographic checks of a block: tx ids, signer addresses, signatures (batched)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from accelerators.verify import BatchVerifier, Item
from schemas.canonical import address_of, canonical_bytes, hash_hex

# Chunks small enough that workers start early and finish together, large enough to amortise the pipe.
VERIFY_CHUNK_TXS = 125


class TxCheck(NamedTuple):
    tx_id: str
    signer_ok: bool  # signer == address of key
    sig_ok: bool  # sig verifies over the canonical bytes without sig


def inspect_txs(txs: Sequence[Mapping[str, Any]], verifier: BatchVerifier) -> list[TxCheck]:
    """txs must already be well formed (schemas.commands.check_tx_shape).

    Signatures (the real cost) go to the verifier's workers chunk by chunk as soon as each chunk is
    prepared, and tx ids are computed while they verify. A tx whose signer does not match its key is
    not verified: it is rejected either way.
    """
    signer_ok: list[bool] = []
    futures = []
    chunk: list[Item] = []
    for tx in txs:
        alg, pk = tx["key"]["alg"], bytes.fromhex(tx["key"]["pk"])
        ok = address_of(alg, pk) == tx["signer"]
        signer_ok.append(ok)
        if ok:
            chunk.append((alg, pk, canonical_bytes(tx, drop_sig=True), tx["sig"]))
        if len(chunk) == VERIFY_CHUNK_TXS:
            futures.append(verifier.submit(chunk))
            chunk = []
    if chunk:
        futures.append(verifier.submit(chunk))
    ids = [hash_hex(canonical_bytes(tx)) for tx in txs]
    verdicts = iter(verifier.collect(futures))
    return [TxCheck(i, ok, ok and next(verdicts)) for i, ok in zip(ids, signer_ok, strict=True)]
