"""The devnet's tx pool: signed transactions waiting for the devnet proposer to put them in a block.

The ledger itself takes transactions only inside blocks (docs/decisions.md); this pool exists so that operators
and slashers can try the CLI end to end against `tally up`. It holds txs that would not make a block invalid:
each is checked with the ledger's own code before it is queued (`check_tx_shape` for `malformed_tx`, then the
signer's address and the ML-DSA signature in the order `decide` checks them). Whether a tx is then applied or
rejected is for its receipt to say.

FIFO, one copy per tx_id, bounded by `txs_max`: an offer that does not fit is refused whole (`PoolFull`).
Thread-safe: the API offers, the devnet thread takes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from accelerators.verify import verify_one
from schemas import limits
from schemas.canonical import address_of, canonical_bytes, tx_id
from schemas.commands import check_tx_shape
from schemas.reasons import Rejection

QUEUED = "queued"


class PoolFull(Exception):
    """The pool cannot hold the offered txs; none of them was queued."""


def check_tx(tx: Any, index: int, chain_id: str) -> str:
    """The tx id of a tx that a block of `chain_id` may carry, or a Rejection naming what is wrong:
    `malformed_tx` (the field), `signer_mismatch`, `bad_tx_signature`, in the ledger's order."""
    alg, pk = check_tx_shape(tx, index, chain_id)
    address = address_of(alg, pk)
    if tx["signer"] != address:
        raise Rejection("signer_mismatch", f"tx {index}: signer {tx['signer']} is not the address of key ({address})")
    if not verify_one(alg, pk, canonical_bytes(tx, drop_sig=True), bytes.fromhex(tx["sig"])):
        raise Rejection("bad_tx_signature", f"tx {index}: sig does not verify under key over the tx's canonical bytes")
    return tx_id(tx)


def _kind_of(tx: Any) -> str | None:
    kind = tx.get("kind") if isinstance(tx, dict) else None
    return kind if isinstance(kind, str) else None


class TxPool:
    def __init__(self, chain_id: str, *, txs_max: int = limits.TXPOOL_TXS_MAX) -> None:
        self.chain_id = chain_id
        self.txs_max = txs_max
        self._txs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._txs)

    def offer(self, txs: Sequence[Any], *, indexes: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """One result per tx, in order: `{"status": "queued", "kind", "tx_id", "duplicate"}` (duplicate: it was
        in the pool already), or `{"status": "rejected", "kind", "reason", "message"}` whose message names the tx
        by its place in `indexes` (default 0, 1, ...). Raises PoolFull, queuing nothing, when the new txs do not
        all fit."""
        results: list[dict[str, Any]] = []
        checked: list[tuple[str, dict[str, Any]]] = []
        numbers = range(len(txs)) if indexes is None else indexes
        for index, tx in zip(numbers, txs, strict=True):  # the signatures are the cost: checked outside the lock
            try:
                checked.append((check_tx(tx, index, self.chain_id), tx))
                results.append({"status": QUEUED, "kind": tx["kind"], "tx_id": checked[-1][0], "duplicate": False})
            except Rejection as rejection:
                results.append({"kind": _kind_of(tx), **rejection.as_dict()})
        with self._lock:
            new = {i: tx for i, tx in checked if i not in self._txs}
            if len(self._txs) + len(new) > self.txs_max:
                raise PoolFull(
                    f"the tx pool holds {len(self._txs)} txs and its limit is {self.txs_max}: "
                    f"{len(new)} more do not fit; try again after the next blocks"
                )
            self._txs.update(new)
        for result in results:
            if result["status"] == QUEUED and result["tx_id"] not in new:
                result["duplicate"] = True
        return results

    def take(self, count: int) -> list[dict[str, Any]]:
        """Up to `count` txs, oldest first, removed from the pool."""
        with self._lock:
            taken = []
            while self._txs and len(taken) < count:
                taken.append(self._txs.popitem(last=False)[1])
            return taken
