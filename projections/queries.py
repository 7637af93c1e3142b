"""The read model the API serves: plain dicts from the projection tables, every user value bound as a parameter.

Reads at a height mean the canonical state after that block (DOMAIN.md). A read at the head first reads the
head pointer and then everything else at `height <= head`: `chain_head` is the last table of every batch, so
the rows up to a visible head are all there, and a batch landing between the two queries changes nothing.
Amounts come back as Python ints of any size (totals can pass 2**63).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from projections.project import FINALIZED, HEAD
from projections.store import DEFAULT_PROJECTOR, ProjectionStore
from schemas.limits import PAGE_SIZE_MAX, STATS_WINDOW_MAX

_BLOCK_COLUMNS = (
    "chain_id", "height", "hash", "parent", "proposer", "operator", "timestamp_ms", "tx_root", "tx_count",
    "applied_count", "rejected_count", "reward", "fees", "position",
)
# A block is final when it is at or below the newest finalized height: the canonical chain contains every
# finalized block, and finalizing a block finalizes its ancestors.
_BLOCK_SELECT = (
    "SELECT " + ", ".join(_BLOCK_COLUMNS) + ", height <= (SELECT max(height) FROM chain_head"
    " WHERE chain_id = {c:String} AND kind = 'finalized') AS finalized FROM blocks WHERE chain_id = {c:String}"
)
# Storage column -> key of a TxRow (`from`, `to` and `index` are SQL keywords).
_TX_COLUMNS = {
    "tx_id": "tx_id", "height": "height", "tx_index": "index", "block_hash": "block_hash", "kind": "kind",
    "signer": "signer", "from_address": "from", "to_address": "to", "asset": "asset", "amount": "amount",
    "fee": "fee", "nonce": "nonce", "status": "status", "reason": "reason",
}
_TX_SELECT = "SELECT " + ", ".join(_TX_COLUMNS) + " FROM transactions WHERE chain_id = {c:String}"
_TX_ORDER = " ORDER BY height DESC, tx_index DESC LIMIT {n:UInt32}"
# Keyset condition `(height, tx_index) < (bh, bi)`, spelt so that the sort key prunes on `height`.
_TX_BEFORE = " AND height <= {bh:UInt64} AND (height < {bh:UInt64} OR tx_index < {bi:UInt32})"
# DOMAIN.md's receipt by tx_id: the applied one, else the latest rejected one (reverted ones last: reorg issue).
_RECEIPT_RANK = "multiIf(status = 'applied', 2, status = 'rejected', 1, 0)"
# The nonce travels in the balances query as a pseudo-asset: asset symbols never are empty.
_NONCE = ""


class ReadModel:
    def __init__(self, source: ProjectionStore | Client, *, projector: str = DEFAULT_PROJECTOR) -> None:
        """From a store, each calling thread gets its own client; a bare client is shared (and serialised)."""
        self._store = source if isinstance(source, ProjectionStore) else None
        self._shared = None if isinstance(source, ProjectionStore) else source
        self._projector = projector
        self._local = threading.local()

    def _client(self) -> Client:
        if self._shared is not None:
            return self._shared
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            assert self._store is not None
            client = self._local.client = self._store.connect()
        return client

    def _rows(self, sql: str, **params: Any) -> Sequence[Sequence[Any]]:
        return self._client().query(sql, parameters=params).result_rows

    # ------------------------------------------------------------------------------------------- chains

    def chains(self) -> list[str]:
        """Chain ids in genesis order."""
        rows = self._rows("SELECT chain_id FROM chains GROUP BY chain_id ORDER BY min(position)")
        return [r[0] for r in rows]

    def default_chain(self) -> str | None:
        """The chain whose genesis came first: what the API reads when no chain is named."""
        rows = self._rows("SELECT chain_id FROM chains ORDER BY position LIMIT 1")
        return rows[0][0] if rows else None

    def head(self, chain_id: str) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT kind, argMax(height, position), argMax(hash, position), argMax(timestamp_ms, position)"
            " FROM chain_head WHERE chain_id = {c:String} GROUP BY kind",
            c=chain_id,
        )
        pointers = {kind: (height, hash_, ts) for kind, height, hash_, ts in rows}
        if HEAD not in pointers:
            return None
        height, hash_, ts = pointers[HEAD]
        final_height, final_hash, _ = pointers[FINALIZED]
        return {
            "chain_id": chain_id, "height": height, "hash": hash_, "timestamp_ms": ts,
            "finalized_height": final_height, "finalized_hash": final_hash,
        }

    def _head_height(self, chain_id: str) -> int | None:
        rows = self._rows(
            "SELECT height FROM chain_head WHERE chain_id = {c:String} AND kind = 'head'"
            " ORDER BY position DESC LIMIT 1",
            c=chain_id,
        )
        return int(rows[0][0]) if rows else None

    # ------------------------------------------------------------------------------------------- blocks

    def block(self, chain_id: str, height: int | None = None, hash: str | None = None) -> dict[str, Any] | None:
        """The block at `height` and/or with `hash` (both must match when both are given); the head without."""
        if height is None and hash is None:
            head = self._head_height(chain_id)
            if head is None:
                return None
            height = head
        sql, params = _BLOCK_SELECT, {"c": chain_id}
        if height is not None:
            if height < 0:
                return None
            sql, params["h"] = sql + " AND height = {h:UInt64}", height
        if hash is not None:
            sql, params["x"] = sql + " AND hash = {x:String}", hash
        rows = self._rows(sql + " LIMIT 1", **params)
        return _block_row(rows[0]) if rows else None

    def blocks(
        self, chain_id: str, first: int, before_height: int | None = None, proposer: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; keyset paging: the next page is `before_height` = the last row's height."""
        sql, params = _BLOCK_SELECT, {"c": chain_id, "n": _page(first)}
        if not params["n"]:
            return []
        if before_height is not None:
            if before_height <= 0:
                return []
            sql, params["bh"] = sql + " AND height < {bh:UInt64}", before_height
        if proposer is not None:
            sql, params["p"] = sql + " AND proposer = {p:String}", proposer
        rows = self._rows(sql + " ORDER BY height DESC LIMIT {n:UInt32}", **params)
        return [_block_row(r) for r in rows]

    # ----------------------------------------------------------------------------------------- accounts

    def account(self, chain_id: str, address: str, at_height: int | None = None) -> dict[str, Any] | None:
        """Balances (nonzero, by asset) and next nonce after `at_height` (the head when None).

        A height above the head reads the head; `height` in the answer is the height actually read. None
        when the chain has no head (no genesis).
        """
        head = self._head_height(chain_id)
        if head is None:
            return None
        height = head if at_height is None else min(max(at_height, 0), head)
        where = "chain_id = {c:String} AND address = {a:String} AND height <= {h:UInt64}"
        # One round trip for both: engine time per query dominates a point lookup here.
        rows = self._rows(
            f"SELECT asset, sum(delta) FROM balance_deltas WHERE {where} GROUP BY asset"
            f" UNION ALL SELECT '{_NONCE}', toInt128(argMax(next_nonce, (height, position))) FROM nonces"
            f" WHERE {where}",
            c=chain_id, a=address, h=height,
        )
        nonce = next((int(v) for asset, v in rows if asset == _NONCE), 0)
        balances = sorted((asset, int(v)) for asset, v in rows if asset != _NONCE and v)
        return {
            "address": address, "height": height, "nonce": nonce,
            "balances": [{"asset": asset, "amount": amount} for asset, amount in balances],
        }

    # ------------------------------------------------------------------------------------- transactions

    def transactions(
        self,
        chain_id: str,
        address: str | None = None,
        first: int = 20,
        before: tuple[int, int] | None = None,
    ) -> list[dict[str, Any]]:
        """Txs with receipts, newest first by (height, index); `address` matches signer, from or to.

        Keyset paging: the next page is `before` = (height, index) of the last row.
        """
        params: dict[str, Any] = {"c": chain_id, "n": _page(first)}
        if not params["n"]:
            return []
        keyset = ""
        if before is not None:
            keyset, (params["bh"], params["bi"]) = _TX_BEFORE, _keyset(before)
        if address is None:
            sql = _TX_SELECT + keyset + _TX_ORDER
        else:
            # The page of the account's tx keys first (a range scan of account_txs), then those rows.
            params["a"] = address
            sql = (
                _TX_SELECT + " AND (height, tx_index, block_hash) IN (SELECT height, tx_index, block_hash"
                " FROM account_txs WHERE chain_id = {c:String} AND address = {a:String}" + keyset + _TX_ORDER
                + ")" + _TX_ORDER
            )
        return [dict(zip(_TX_COLUMNS.values(), row, strict=True)) for row in self._rows(sql, **params)]

    def receipt(self, tx_id: str, chain_id: str | None = None) -> dict[str, Any] | None:
        """DOMAIN.md's receipt of a tx: the applied one, else the latest rejected one."""
        sql = (
            "SELECT tx_id, status, reason, height, tx_index, block_hash, chain_id FROM receipts"
            " WHERE tx_id = {t:String}"
        )
        params = {"t": tx_id}
        if chain_id is not None:
            sql, params["c"] = sql + " AND chain_id = {c:String}", chain_id
        rows = self._rows(sql + f" ORDER BY {_RECEIPT_RANK} DESC, height DESC, tx_index DESC LIMIT 1", **params)
        if not rows:
            return None
        keys = ("tx_id", "status", "reason", "height", "index", "block_hash", "chain_id")
        return dict(zip(keys, rows[0], strict=True))

    # -------------------------------------------------------------------------------------------- stats

    def stats(self, chain_id: str, window: int) -> dict[str, Any]:
        """Totals since genesis and rolling figures over the last `window` blocks (block timestamps only).

        total_blocks counts the genesis block. Over the window's n blocks (oldest t0, newest tn):
        rolling_block_time_ms = (tn - t0) / (n - 1); rolling_tps = txs applied in all but the oldest block
        / ((tn - t0) / 1000): the oldest block opens the interval. Finality delay is the mean, over blocks of
        the window made final by votes, of head_timestamp_ms - block timestamp_ms and of head_height - height
        when it happened; None when no such block.
        """
        window = max(1, min(window, STATS_WINDOW_MAX))
        totals = self._rows(
            "SELECT count(), sum(applied_count), sum(rejected_count), max(height) FROM blocks"
            " WHERE chain_id = {c:String}",
            c=chain_id,
        )[0]
        total_blocks, applied, rejected, last = (int(v) for v in totals)
        flows = self._rows(
            "SELECT asset, sum(minted) - sum(burned), sum(volume), sum(fees) FROM asset_flows"
            " WHERE chain_id = {c:String} GROUP BY asset ORDER BY asset",
            c=chain_id,
        )
        lo = max(0, last - window + 1)
        recent = self._rows(
            "SELECT height, timestamp_ms, applied_count FROM blocks WHERE chain_id = {c:String}"
            " AND height >= {lo:UInt64} ORDER BY height",
            c=chain_id, lo=lo,
        )
        finals = self._rows(
            "SELECT height, head_height, head_timestamp_ms FROM finality WHERE chain_id = {c:String}"
            " AND height >= {lo:UInt64} AND height > 0",
            c=chain_id, lo=lo,
        )
        return {
            "total_blocks": total_blocks, "txs_applied": applied, "txs_rejected": rejected,
            "volume": _amounts((a, v) for a, _, v, _ in flows),
            "fees": _amounts((a, f) for a, _, _, f in flows),
            "supply": _amounts((a, s) for a, s, _, _ in flows),
            **_rolling(recent),
            **_finality_delay(recent, finals),
            "last_block_height": last if total_blocks else None,
            "last_block_timestamp_ms": recent[-1][1] if recent else None,
        }

    def position(self) -> int:
        """The projector's checkpoint: every event up to it is queryable."""
        rows = self._rows(
            "SELECT max(position) FROM checkpoints WHERE projector = {p:String}", p=self._projector
        )
        return int(rows[0][0])


def _page(first: int) -> int:
    return max(0, min(int(first), PAGE_SIZE_MAX))


def _keyset(before: tuple[int, int]) -> tuple[int, int]:
    height, index = before
    # Nothing sorts before (0, 0); clamp so that the bound parameters stay unsigned.
    return max(int(height), 0), max(int(index), 0)


def _block_row(row: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(_BLOCK_COLUMNS, row[:-1], strict=True))
    out["finalized"] = bool(row[-1])
    return out


def _amounts(pairs: Any) -> list[dict[str, Any]]:
    return [{"asset": asset, "amount": int(amount)} for asset, amount in pairs if amount]


def _rolling(recent: Sequence[Sequence[Any]]) -> dict[str, Any]:
    n = len(recent)
    span_ms = recent[-1][1] - recent[0][1] if n >= 2 else 0
    txs = sum(int(r[2]) for r in recent[1:])
    return {
        "window_blocks": n,
        "rolling_block_time_ms": span_ms / (n - 1) if n >= 2 else 0.0,
        "rolling_tps": txs * 1000 / span_ms if span_ms > 0 else 0.0,
    }


def _finality_delay(recent: Sequence[Sequence[Any]], finals: Sequence[Sequence[Any]]) -> dict[str, Any]:
    stamps = {int(r[0]): int(r[1]) for r in recent}
    delays = [
        (int(head_ts) - stamps[int(h)], int(head_h) - int(h)) for h, head_h, head_ts in finals if int(h) in stamps
    ]
    if not delays:
        return {"finality_delay_ms": None, "finality_delay_blocks": None}
    return {
        "finality_delay_ms": sum(d for d, _ in delays) / len(delays),
        "finality_delay_blocks": sum(b for _, b in delays) / len(delays),
    }
