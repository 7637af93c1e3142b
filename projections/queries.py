"""The read model the API serves: plain dicts from the projection tables, every user value bound as a parameter.

Reads at a height mean the canonical state after that block (DOMAIN.md). A read at the head takes the head
pointer first and then reads at `height <= head`: `chain_head` is the last table of every batch, so the rows up
to a visible head are all there, and a batch landing in between changes nothing. Amounts come back as Python
ints of any size (totals can pass 2**63).

An in-process chdb engine answers a point query in ~5-8 ms, nearly all of it per-query engine work, so each
method makes as few queries as it can: the chain list and head pointers are kept between calls until the store
reports a change (`ProjectionStore.generation`, exact when this process makes every change), and an account
read is a single range scan.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client

from projections.project import FINALIZED, HEAD, NONCE_KEY
from projections.store import DEFAULT_PROJECTOR, ProjectionStore
from schemas.limits import PAGE_SIZE_MAX, STATS_WINDOW_MAX

T = TypeVar("T")

_BLOCK_COLUMNS = (
    "chain_id", "height", "hash", "parent", "proposer", "operator", "timestamp_ms", "tx_root", "tx_count",
    "applied_count", "rejected_count", "reward", "fees", "position",
)
_BLOCK_SELECT = "SELECT " + ", ".join(_BLOCK_COLUMNS) + " FROM blocks WHERE chain_id = {c:String}"
# Storage column -> key of a TxRow (`from`, `to` and `index` are SQL keywords).
_TX_COLUMNS = {
    "tx_id": "tx_id", "height": "height", "tx_index": "index", "block_hash": "block_hash", "kind": "kind",
    "signer": "signer", "from_address": "from", "to_address": "to", "asset": "asset", "amount": "amount",
    "fee": "fee", "nonce": "nonce", "status": "status", "reason": "reason",
}
_TX_FIELDS = ", ".join(_TX_COLUMNS)
_TX_ORDER = " ORDER BY height DESC, tx_index DESC LIMIT {n:UInt32}"
# Keyset condition `(height, tx_index) < (bh, bi)`, spelt so that the sort key prunes on `height`.
_TX_BEFORE = " AND height <= {bh:UInt64} AND (height < {bh:UInt64} OR tx_index < {bi:UInt32})"
# DOMAIN.md's receipt by tx_id: the applied one, else the latest rejected one (reverted ones last: reorg issue).
_RECEIPT_RANK = "multiIf(status = 'applied', 2, status = 'rejected', 1, 0)"

Pointer = tuple[int, str, int]  # height, hash, timestamp_ms


class ReadModel:
    def __init__(self, source: ProjectionStore | Client, *, projector: str = DEFAULT_PROJECTOR) -> None:
        """From a store, each calling thread gets its own client; a bare client is shared (and serialised)."""
        self._store = source if isinstance(source, ProjectionStore) else None
        self._shared = None if isinstance(source, ProjectionStore) else source
        self._projector = projector
        self._local = threading.local()
        self._cache: dict[Any, tuple[int, Any]] = {}  # key -> (store generation when loaded, value)

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

    def _cached(self, key: Any, load: Callable[[], T], *, keep: Callable[[T], bool] = lambda _: True) -> T:
        """`load()`, kept until the store's next change when the store can tell (see module docstring).

        The generation is read before loading, so a kept value is never older than its generation. Only
        values `keep` approves are kept (not unknown chains: a caller must not grow the cache at will).
        """
        generation = self._store.generation if self._store is not None else None
        if generation is None:
            return load()
        hit = self._cache.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1]  # type: ignore[no-any-return]
        value = load()
        if keep(value):
            self._cache[key] = (generation, value)  # threads may race here: the loser only costs a reload
        return value

    # ------------------------------------------------------------------------------------------- chains

    def chains(self) -> list[str]:
        """Chain ids in genesis order."""
        return list(self._cached("chains", self._load_chains))

    def _load_chains(self) -> tuple[str, ...]:
        rows = self._rows("SELECT chain_id FROM chains GROUP BY chain_id ORDER BY min(position)")
        return tuple(r[0] for r in rows)

    def default_chain(self) -> str | None:
        """The chain whose genesis came first: what the API reads when no chain is named."""
        chains = self._cached("chains", self._load_chains)
        return chains[0] if chains else None

    def _pointers(self, chain_id: str) -> dict[str, Pointer] | None:
        """The chain's head and newest finalized block; None for an unknown chain."""
        return self._cached(("pointers", chain_id), lambda: self._load_pointers(chain_id), keep=bool)

    def _load_pointers(self, chain_id: str) -> dict[str, Pointer] | None:
        rows = self._rows(
            "SELECT kind, argMax(height, position), argMax(hash, position), argMax(timestamp_ms, position)"
            " FROM chain_head WHERE chain_id = {c:String} GROUP BY kind",
            c=chain_id,
        )
        pointers = {kind: (int(height), hash_, int(ts)) for kind, height, hash_, ts in rows}
        return pointers if HEAD in pointers and FINALIZED in pointers else None

    def head(self, chain_id: str) -> dict[str, Any] | None:
        pointers = self._pointers(chain_id)
        if pointers is None:
            return None
        (height, hash_, ts), (final_height, final_hash, _) = pointers[HEAD], pointers[FINALIZED]
        return {
            "chain_id": chain_id, "height": height, "hash": hash_, "timestamp_ms": ts,
            "finalized_height": final_height, "finalized_hash": final_hash,
        }

    # ------------------------------------------------------------------------------------------- blocks

    def block(self, chain_id: str, height: int | None = None, hash: str | None = None) -> dict[str, Any] | None:
        """The block at `height` and/or with `hash` (both must match when both are given); the head without."""
        pointers = self._pointers(chain_id)
        if pointers is None:
            return None
        if height is None and hash is None:
            height = pointers[HEAD][0]
        sql, params = _BLOCK_SELECT, {"c": chain_id}
        if height is not None:
            if height < 0:
                return None
            sql, params["h"] = sql + " AND height = {h:UInt64}", height
        if hash is not None:
            sql, params["x"] = sql + " AND hash = {x:String}", hash
        rows = self._rows(sql + " LIMIT 1", **params)
        return _block_row(rows[0], pointers[FINALIZED][0]) if rows else None

    def blocks(
        self, chain_id: str, first: int, before_height: int | None = None, proposer: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; keyset paging: the next page is `before_height` = the last row's height."""
        pointers = self._pointers(chain_id)
        sql, params = _BLOCK_SELECT, {"c": chain_id, "n": _page(first)}
        if pointers is None or not params["n"]:
            return []
        if before_height is not None:
            if before_height <= 0:
                return []
            sql, params["bh"] = sql + " AND height < {bh:UInt64}", before_height
        if proposer is not None:
            sql, params["p"] = sql + " AND proposer = {p:String}", proposer
        rows = self._rows(sql + " ORDER BY height DESC LIMIT {n:UInt32}", **params)
        return [_block_row(r, pointers[FINALIZED][0]) for r in rows]

    # ----------------------------------------------------------------------------------------- accounts

    def account(self, chain_id: str, address: str, at_height: int | None = None) -> dict[str, Any] | None:
        """Balances (nonzero, by asset) and next nonce after `at_height` (the head when None).

        A height above the head reads the head; `height` in the answer is the height actually read. None
        when the chain has no head (no genesis).
        """
        pointers = self._pointers(chain_id)
        if pointers is None:
            return None
        head = pointers[HEAD][0]
        height = head if at_height is None else min(max(at_height, 0), head)
        # Balances and the nonce (asset NONCE_KEY) in one range scan.
        rows = self._rows(
            "SELECT asset, sum(delta) FROM balance_deltas WHERE chain_id = {c:String} AND address = {a:String}"
            " AND height <= {h:UInt64} GROUP BY asset",
            c=chain_id, a=address, h=height,
        )
        sums = {asset: int(total) for asset, total in rows}
        nonce = sums.pop(NONCE_KEY, 0)
        return {
            "address": address, "height": height, "nonce": nonce,
            "balances": [{"asset": asset, "amount": sums[asset]} for asset in sorted(sums) if sums[asset]],
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
            sql = f"SELECT {_TX_FIELDS} FROM transactions WHERE chain_id = {{c:String}}"
        else:
            # account_txs holds a copy of each tx row per party: one range scan, no join.
            params["a"] = address
            sql = f"SELECT {_TX_FIELDS} FROM account_txs WHERE chain_id = {{c:String}} AND address = {{a:String}}"
        rows = self._rows(sql + keyset + _TX_ORDER, **params)
        return [dict(zip(_TX_COLUMNS.values(), row, strict=True)) for row in rows]

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
        pointers = self._pointers(chain_id)
        if pointers is None:
            return _no_stats()
        last = pointers[HEAD][0]
        params = {"c": chain_id, "h": last, "lo": max(0, last - window + 1)}
        # Everything at height <= head, so that the figures are one consistent snapshot.
        totals = self._rows(
            "SELECT count(), sum(applied_count), sum(rejected_count) FROM blocks"
            " WHERE chain_id = {c:String} AND height <= {h:UInt64}",
            **params,
        )[0]
        flows = self._rows(
            "SELECT asset, sum(minted) - sum(burned), sum(volume), sum(fees) FROM asset_flows"
            " WHERE chain_id = {c:String} AND height <= {h:UInt64} GROUP BY asset ORDER BY asset",
            **params,
        )
        recent = self._rows(
            "SELECT height, timestamp_ms, applied_count FROM blocks WHERE chain_id = {c:String}"
            " AND height >= {lo:UInt64} AND height <= {h:UInt64} ORDER BY height",
            **params,
        )
        finals = self._rows(
            "SELECT height, head_height, head_timestamp_ms FROM finality WHERE chain_id = {c:String}"
            " AND height >= {lo:UInt64} AND height <= {h:UInt64} AND height > 0",
            **params,
        )
        return {
            "total_blocks": int(totals[0]), "txs_applied": int(totals[1]), "txs_rejected": int(totals[2]),
            "volume": _amounts((a, v) for a, _, v, _ in flows),
            "fees": _amounts((a, f) for a, _, _, f in flows),
            "supply": _amounts((a, s) for a, s, _, _ in flows),
            **_rolling(recent),
            **_finality_delay(recent, finals),
            "last_block_height": last,
            "last_block_timestamp_ms": pointers[HEAD][2],
        }

    def position(self) -> int:
        """The projector's checkpoint: every event up to it is queryable."""
        return self._cached("position", self._load_position)

    def _load_position(self) -> int:
        rows = self._rows("SELECT max(position) FROM checkpoints WHERE projector = {p:String}", p=self._projector)
        return int(rows[0][0])


def _page(first: int) -> int:
    return max(0, min(int(first), PAGE_SIZE_MAX))


def _keyset(before: tuple[int, int]) -> tuple[int, int]:
    height, index = before
    # Nothing sorts before (0, 0); clamp so that the bound parameters stay unsigned.
    return max(int(height), 0), max(int(index), 0)


def _block_row(row: Sequence[Any], finalized_height: int) -> dict[str, Any]:
    out = dict(zip(_BLOCK_COLUMNS, row, strict=True))
    # Final when at or below the newest final block: the canonical chain holds every final block, and
    # finalizing a block finalizes its ancestors.
    out["finalized"] = out["height"] <= finalized_height
    return out


def _no_stats() -> dict[str, Any]:
    return {
        "total_blocks": 0, "txs_applied": 0, "txs_rejected": 0, "volume": [], "fees": [], "supply": [],
        **_rolling([]), **_finality_delay([], []), "last_block_height": None, "last_block_timestamp_ms": None,
    }


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
