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


class Inspection:
    """The per-tx checks of one block, under way.

    Construction sends the signatures (the real cost) to the verifier's workers chunk by chunk, as soon as
    each chunk is prepared; `result()` computes the tx ids while they verify and then waits. The service
    may start the inspection of the next block of a batch before deciding the current one, so the workers
    verify while the main process saves.

    It tolerates malformed txs (they are marked unchecked): `decide` refuses such a block with
    `malformed_tx` before it reads the result, and a tx that `check_tx_shape` accepts always has the
    fields read here.
    """

    def __init__(self, txs: Sequence[Mapping[str, Any]], verifier: BatchVerifier) -> None:
        self.txs = txs
        self._verifier = verifier
        self._signer_ok: list[bool] = []
        self._futures = []
        chunk: list[Item] = []
        for tx in txs:
            item = _signature_item(tx)
            self._signer_ok.append(item is not None)
            if item is not None:
                chunk.append(item)
            if len(chunk) == VERIFY_CHUNK_TXS:
                self._futures.append(verifier.submit(chunk))
                chunk = []
        if chunk:
            self._futures.append(verifier.submit(chunk))

    def result(self) -> list[TxCheck]:
        ids = [_tx_id(tx) for tx in self.txs]
        verdicts = iter(self._verifier.collect(self._futures))
        return [TxCheck(i, ok, ok and next(verdicts)) for i, ok in zip(ids, self._signer_ok, strict=True)]


def _signature_item(tx: Any) -> Item | None:
    """What the workers verify, or None when the signer is not the key's address (or the tx is malformed)."""
    try:
        alg, pk = tx["key"]["alg"], bytes.fromhex(tx["key"]["pk"])
        if address_of(alg, pk) != tx["signer"] or not isinstance(tx["sig"], str):
            return None
        return (alg, pk, canonical_bytes(tx, drop_sig=True), tx["sig"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _tx_id(tx: Any) -> str:
    try:
        return hash_hex(canonical_bytes(tx))
    except (TypeError, ValueError):
        return ""

