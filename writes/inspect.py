"""Per-tx cryptographic checks of a block: tx ids, signer addresses, signatures (batched)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from accelerators.verify import BatchVerifier, Item
from schemas.canonical import address_of, canonical_bytes, hash_hex


class TxCheck(NamedTuple):
    tx_id: str
    signer_ok: bool  # signer == address of key
    sig_ok: bool  # sig verifies over the canonical bytes without sig


def inspect_txs(txs: Sequence[Mapping[str, Any]], verifier: BatchVerifier) -> list[TxCheck]:
    """txs must already be well formed (schemas.commands.check_tx_shape).

    Ids and addresses are cheap and computed here; signatures (the real cost) go to the verifier in one
    batch. A tx whose signer does not match its key is not verified: it is rejected either way.
    """
    ids: list[str] = []
    signer_ok: list[bool] = []
    items: list[Item] = []
    for tx in txs:
        ids.append(hash_hex(canonical_bytes(tx)))
        alg, pk = tx["key"]["alg"], bytes.fromhex(tx["key"]["pk"])
        ok = address_of(alg, pk) == tx["signer"]
        signer_ok.append(ok)
        if ok:
            items.append((alg, pk, canonical_bytes(tx, drop_sig=True), tx["sig"]))
    verdicts = iter(verifier.verify(items))
    return [TxCheck(i, ok, ok and next(verdicts)) for i, ok in zip(ids, signer_ok, strict=True)]
