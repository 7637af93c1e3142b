"""The read model the API serves: plain dicts from the projection tables, every user value bound as a parameter.

Reads at a height mean the canonical state after that block (DOMAIN.md). Every read is taken from one
**snapshot**: the projector's checkpoint and each chain's head and finalized pointers as of that checkpoint,
loaded in one query. Every query then reads only rows at `position <= checkpoint`, so an answer is exactly the
views after one log position even while batches land, reorganizations included (a reorganization changes rows
at heights below the head, so a height bound alone would not do).

Forks keep the tables append-only (projections/project.py): a block's current row, and a tx's, is its row with
the greatest position. A block is canonical when that row says so and it is at or below the head (between a
reorganization and the reverts that follow it, the old branch's blocks are above the head, which has moved down
to the common ancestor). A tx row is canonical when its latest row is not 'reverted' and it is at or below the
head: blocks that were never canonical have no tx rows. Canonical blocks fill every height from 0 to the head,
which bounds a page of blocks to a range of heights.

A finality level picks the head of a head-relative read: LATEST (the canonical tip) or FINAL (the newest final
block: the answer can no longer change). Amounts come back as Python ints of any size (totals can pass 2**63).

An in-process chdb engine answers a point query in ~5-8 ms, nearly all of it per-query engine work, so each
method makes as few queries as it can: the chain list and the snapshot are kept between calls until the store
reports a change (`ProjectionStore.generation`, exact when this process makes every change), and an account
read is a single range scan.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client

from projections.project import APPLIED, FINALIZED, HEAD, NONCE_KEY, REVERTED
from projections.store import DEFAULT_PROJECTOR, ProjectionStore
from schemas.limits import PAGE_SIZE_MAX, STATS_WINDOW_MAX

T = TypeVar("T")

# Finality levels of head-relative reads.
LATEST, FINAL = "latest", "finalized"
FINALITY_LEVELS = (LATEST, FINAL)
# Block statuses.
STATUS_CANONICAL, STATUS_ORPHANED, STATUS_FINALIZED = "canonical", "orphaned", "finalized"

_BLOCK_COLUMNS = (
    "chain_id", "height", "hash", "parent", "proposer", "operator", "timestamp_ms", "tx_root", "tx_count",
    "applied_count", "rejected_count", "reward", "fees", "canonical", "position",
)
_BLOCK_FIELDS = ", ".join(_BLOCK_COLUMNS)
# Storage column -> key of a TxRow (`from`, `to` and `index` are SQL keywords).
_TX_COLUMNS = {
    "tx_id": "tx_id", "height": "height", "tx_index": "index", "block_hash": "block_hash", "kind": "kind",
    "signer": "signer", "from_address": "from", "to_address": "to", "asset": "asset", "amount": "amount",
    "fee": "fee", "nonce": "nonce", "status": "status", "reason": "reason",
}
_TX_FIELDS = ", ".join(_TX_COLUMNS)
# Keyset condition `(height, tx_index) < (bh, bi)`, spelt so that the sort key prunes on `height`.
_TX_BEFORE = " AND height <= {bh:UInt64} AND (height < {bh:UInt64} OR tx_index < {bi:UInt32})"
_REORG_COLUMNS = (
    "position", "cause", "depth", "ancestor_height", "ancestor_hash", "old_tip_height", "old_tip_hash",
    "new_tip_height", "new_tip_hash", "reverted", "applied",
)

Pointer = tuple[int, str, int]  # height, hash, timestamp_ms
_REVERTED_KIND = "#reverted"  # the snapshot query's row of a chain's reverted-block count


def _latest_blocks(where: str) -> str:
    """The latest row of every block matching `where`, at or before the snapshot's position ({cp}),
    newest height first."""
    return (
        f"SELECT {_BLOCK_FIELDS} FROM blocks WHERE chain_id = {{c:String}} AND position <= {{cp:UInt64}}{where}"
        " ORDER BY height DESC, hash, position DESC LIMIT 1 BY hash"
    )


# A block's rows are superseded by its next revert: rows older than the last reorganization that reverted a block
# are not current, and rows after it are the revert itself ('reverted', not canonical) or a reapply (current).
# A block never reverted has one version, written once. So "current" is `position > last_revert[hash]`, with
# `last_revert` a map (0 when absent) built from the small `reorgs` table once per query: a listing stays one
# read-in-order range scan. On a chain where no block was ever reverted, every row is current and the
# condition is left out.
_LAST_REVERT = (
    "WITH (SELECT mapFromArrays(groupArray(h), groupArray(p)) FROM (SELECT arrayJoin(reverted) AS h,"
    " max(position) AS p FROM reorgs WHERE chain_id = {c:String} AND position <= {cp:UInt64} GROUP BY h))"
    " AS last_revert "
)


def _canonical_blocks(where: str, reverts: bool) -> str:
    """The canonical blocks matching `where`, at or before the snapshot's position ({cp}); `reverts`: whether
    the chain has reverted blocks. Only heights at or below the head may be asked for: above it, the old
    branch of a reorganization not yet reverted lingers."""
    sql = (
        f"SELECT {_BLOCK_FIELDS} FROM blocks WHERE chain_id = {{c:String}} AND position <= {{cp:UInt64}}"
        f" AND canonical = 1{where}"
    )
    return f"{_LAST_REVERT}{sql} AND position > last_revert[hash]" if reverts else sql


def _canonical_txs(table: str, where: str, reverts: bool) -> str:
    """The txs of `table` in canonical blocks at or below the head ({top}) and the snapshot's position ({cp})
    matching `where`, newest first, {n} of them; `reverts`: whether the chain has reverted blocks."""
    current = " AND position > last_revert[block_hash]" if reverts else ""
    return (
        f"{_LAST_REVERT if reverts else ''}SELECT {_TX_FIELDS} FROM {table} WHERE chain_id = {{c:String}}{where}"
        f" AND height <= {{top:UInt64}} AND position <= {{cp:UInt64}} AND status != '{REVERTED}'{current}"
        " ORDER BY height DESC, tx_index DESC LIMIT {n:UInt32}"
    )


@dataclass(frozen=True)
class Snapshot:
    """What every read of one moment shares: the checkpoint and each chain's pointers as of it."""

    position: int
    pointers: dict[str, dict[str, Pointer]]  # chain_id -> {HEAD: ..., FINALIZED: ...}
    reverted: dict[str, int]  # chain_id -> blocks reverted so far (0 or absent: every row is current)

    def reverts(self, chain_id: str) -> bool:
        return self.reverted.get(chain_id, 0) > 0

    def chain(self, chain_id: str) -> dict[str, Pointer] | None:
        pointers = self.pointers.get(chain_id)
        return pointers if pointers is not None and HEAD in pointers and FINALIZED in pointers else None

    def top(self, chain_id: str, finality: str) -> int | None:
        """The height of the chain's head at this finality level; None for an unknown chain."""
        pointers = self.chain(chain_id)
        if pointers is None:
            return None
        return pointers[_level(finality)][0]


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

    def snapshot(self) -> Snapshot:
        """The checkpoint and every chain's pointers as of it (one query; kept until the store changes)."""
        return self._cached("snapshot", self._load_snapshot)

    def _load_snapshot(self) -> Snapshot:
        checkpoint = "(SELECT max(position) FROM checkpoints WHERE projector = {p:String})"
        rows = self._rows(
            "SELECT chain_id, kind, argMax(height, position), argMax(hash, position), argMax(timestamp_ms, position),"
            f" {checkpoint} FROM chain_head WHERE position <= {checkpoint} GROUP BY chain_id, kind"
            # The number of blocks reverted per chain, under a kind no pointer has.
            f" UNION ALL SELECT chain_id, '{_REVERTED_KIND}', sum(length(reverted)), '', 0, {checkpoint}"
            f" FROM reorgs WHERE position <= {checkpoint} GROUP BY chain_id",
            p=self._projector,
        )
        pointers: dict[str, dict[str, Pointer]] = {}
        reverted: dict[str, int] = {}
        # With no pointer yet there is nothing to read: a receipt needs a genesis before it.
        position = 0
        for chain_id, kind, height, hash_, ts, cp in rows:
            if kind == _REVERTED_KIND:
                reverted[chain_id] = int(height)
            else:
                pointers.setdefault(chain_id, {})[kind] = (int(height), hash_, int(ts))
            position = int(cp)
        return Snapshot(position, pointers, reverted)

    def head(self, chain_id: str) -> dict[str, Any] | None:
        """The head and finalized pointers, and both blocks (`tip`, `finalized`); None for an unknown chain."""
        return self._cached(("head", chain_id), lambda: self._load_head(chain_id), keep=bool)

    def _load_head(self, chain_id: str) -> dict[str, Any] | None:
        snap = self.snapshot()
        pointers = snap.chain(chain_id)
        if pointers is None:
            return None
        (height, hash_, ts), (final_height, final_hash, _) = pointers[HEAD], pointers[FINALIZED]
        rows = self._rows(
            _latest_blocks(" AND hash IN ({x:String}, {f:String})"),
            c=chain_id, cp=snap.position, x=hash_, f=final_hash,
        )
        blocks = {b["hash"]: b for b in (_block_dict(r, pointers) for r in rows)}
        return {
            "chain_id": chain_id, "height": height, "hash": hash_, "timestamp_ms": ts,
            "finalized_height": final_height, "finalized_hash": final_hash,
            "tip": blocks.get(hash_), "finalized": blocks.get(final_hash),
        }

    # ------------------------------------------------------------------------------------------- blocks

    def block(
        self, chain_id: str, height: int | None = None, hash: str | None = None, finality: str = LATEST
    ) -> dict[str, Any] | None:
        """A block by `height` (the canonical one), by `hash` (any recorded block, side ones too), by both
        (both must match), or neither (the tip at `finality`). At FINAL, only final blocks are answered.

        `status` is 'finalized' (canonical, at or below the newest final block), 'canonical' or 'orphaned'
        (recorded but not canonical: a side block, or a reverted one).
        """
        snap = self.snapshot()
        pointers = snap.chain(chain_id)
        if pointers is None or (height is not None and height < 0):
            return None
        top = pointers[_level(finality)][0]
        params: dict[str, Any] = {"c": chain_id, "cp": snap.position}
        if hash is None:
            height = top if height is None else height
            if height > top:
                return None
            # One canonical block per height: the latest row of each block there, then the canonical one.
            sql = _canonical_blocks(" AND height = {h:UInt64}", snap.reverts(chain_id))
            rows = self._rows(sql + " LIMIT 1", h=height, **params)
        else:
            rows = self._rows(_latest_blocks(" AND hash = {x:String}"), x=hash, **params)
        found = _block_dict(rows[0], pointers) if rows else None
        if found is None or (height is not None and found["height"] != height):
            return None
        if finality == FINAL and found["status"] != STATUS_FINALIZED:
            return None
        return found

    def blocks(
        self,
        chain_id: str,
        first: int,
        before_height: int | None = None,
        proposer: str | None = None,
        finality: str = LATEST,
    ) -> list[dict[str, Any]]:
        """Canonical blocks at or below the head at `finality`, newest first; keyset paging: the next page is
        `before_height` = the last row's height."""
        snap = self.snapshot()
        pointers, n = snap.chain(chain_id), _page(first)
        if pointers is None or not n:
            return []
        top = pointers[_level(finality)][0]
        if before_height is not None:
            if before_height <= 0:
                return []
            top = min(top, before_height - 1)
        where, params = " AND height <= {top:UInt64}", {"c": chain_id, "cp": snap.position, "top": top, "n": n}
        if proposer is None:
            # Canonical blocks fill every height up to the head: a page is the n heights below the top.
            where, params["lo"] = where + " AND height >= {lo:UInt64}", max(0, top - n + 1)
        else:
            where, params["p"] = where + " AND proposer = {p:String}", proposer
        sql = _canonical_blocks(where, snap.reverts(chain_id))
        rows = self._rows(sql + " ORDER BY height DESC LIMIT {n:UInt32}", **params)
        return [_block_dict(r, pointers) for r in rows]

    # ----------------------------------------------------------------------------------------- accounts

    def account(
        self, chain_id: str, address: str, at_height: int | None = None, finality: str = LATEST
    ) -> dict[str, Any] | None:
        """Balances (nonzero, by asset) and next nonce after `at_height` (the head at `finality` when None).

        A height above that head reads the head; `height` in the answer is the height actually read. None
        when the chain has no head (no genesis).
        """
        snap = self.snapshot()
        top = snap.top(chain_id, finality)
        if top is None:
            return None
        height = top if at_height is None else min(max(at_height, 0), top)
        # Balances and the nonce (asset NONCE_KEY) in one range scan; reverted blocks' rows and their negated
        # copies cancel in the sum.
        rows = self._rows(
            "SELECT asset, sum(delta) FROM balance_deltas WHERE chain_id = {c:String} AND address = {a:String}"
            " AND height <= {h:UInt64} AND position <= {cp:UInt64} GROUP BY asset",
            c=chain_id, a=address, h=height, cp=snap.position,
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
        finality: str = LATEST,
    ) -> list[dict[str, Any]]:
        """Txs of canonical blocks at or below the head at `finality`, with receipts, newest first by
        (height, index); `address` matches signer, from or to. Reverted txs are not listed.

        Keyset paging: the next page is `before` = (height, index) of the last row.
        """
        snap = self.snapshot()
        top, n = snap.top(chain_id, finality), _page(first)
        if top is None or not n:
            return []
        params: dict[str, Any] = {"c": chain_id, "n": n, "top": top, "cp": snap.position}
        where = ""
        if before is not None:
            where, (params["bh"], params["bi"]) = _TX_BEFORE, _keyset(before)
        if address is None:
            table = "transactions"
        else:
            # account_txs holds a copy of each tx row per party: one range scan, no join.
            table, params["a"] = "account_txs", address
            where = " AND address = {a:String}" + where
        rows = self._rows(_canonical_txs(table, where, snap.reverts(chain_id)), **params)
        return [dict(zip(_TX_COLUMNS.values(), row, strict=True)) for row in rows]

    def receipt(self, tx_id: str, chain_id: str | None = None) -> dict[str, Any] | None:
        """DOMAIN.md's receipt of a tx: the canonical applied one, else the latest canonical rejected one
        (highest height, then index), else the most recently reverted one (status 'reverted', original reason).
        """
        snap = self.snapshot()
        sql = (
            "SELECT tx_id, status, reason, height, tx_index, block_hash, chain_id, position FROM receipts"
            " WHERE tx_id = {t:String} AND position <= {cp:UInt64}"
        )
        params: dict[str, Any] = {"t": tx_id, "cp": snap.position}
        if chain_id is not None:
            sql, params["c"] = sql + " AND chain_id = {c:String}", chain_id
        # The latest row of each inclusion (a block's tx slot); which of them is canonical needs the heads.
        rows = self._rows(
            sql + " ORDER BY chain_id, block_hash, tx_index, position DESC LIMIT 1 BY chain_id, block_hash, tx_index",
            **params,
        )
        best = max((_receipt_ranked(row, snap) for row in rows), default=None)
        return None if best is None else best[1]

    # -------------------------------------------------------------------------------------------- reorgs

    def reorgs(self, chain_id: str, first: int, before_position: int | None = None) -> list[dict[str, Any]]:
        """The chain's reorganizations, newest first; keyset paging by log position."""
        snap, n = self.snapshot(), _page(first)
        if snap.chain(chain_id) is None or not n:
            return []
        top = snap.position if before_position is None else min(snap.position, before_position - 1)
        if top <= 0:
            return []
        rows = self._rows(
            f"SELECT {', '.join(_REORG_COLUMNS)} FROM reorgs WHERE chain_id = {{c:String}}"
            " AND position <= {top:UInt64} ORDER BY position DESC LIMIT {n:UInt32}",
            c=chain_id, top=top, n=n,
        )
        return [_reorg_dict(chain_id, r) for r in rows]

    # -------------------------------------------------------------------------------------------- stats

    def stats(self, chain_id: str, window: int, finality: str = LATEST) -> dict[str, Any]:
        """Totals since genesis and rolling figures over the last `window` canonical blocks up to the head at
        `finality` (block timestamps only).

        total_blocks counts the genesis block. Over the window's n blocks (oldest t0, newest tn):
        rolling_block_time_ms = (tn - t0) / (n - 1); rolling_tps = txs applied in all but the oldest block
        / ((tn - t0) / 1000): the oldest block opens the interval. Finality delay is the mean, over blocks of
        the window made final by votes, of head_timestamp_ms - block timestamp_ms and of head_height - height
        when it happened; None when no such block.
        """
        window = max(1, min(window, STATS_WINDOW_MAX))
        snap = self.snapshot()
        last = snap.top(chain_id, finality)
        if last is None:
            return _no_stats()
        params = {"c": chain_id, "cp": snap.position, "h": last, "lo": max(0, last - window + 1)}
        # Everything at height <= last and position <= cp, so that the figures are one consistent snapshot.
        reverts = snap.reverts(chain_id)
        totals = self._rows(
            "SELECT count(), sum(applied_count), sum(rejected_count)"
            f" FROM ({_canonical_blocks(' AND height <= {h:UInt64}', reverts)})",
            **params,
        )[0]
        flows = self._rows(
            "SELECT asset, sum(minted) - sum(burned), sum(volume), sum(fees) FROM asset_flows"
            " WHERE chain_id = {c:String} AND height <= {h:UInt64} AND position <= {cp:UInt64}"
            " GROUP BY asset ORDER BY asset",
            **params,
        )
        window_blocks = _canonical_blocks(" AND height >= {lo:UInt64} AND height <= {h:UInt64}", reverts)
        recent = self._rows(
            f"SELECT height, timestamp_ms, applied_count FROM ({window_blocks}) ORDER BY height", **params
        )
        # Final blocks are never reverted: a finality row always names the canonical block at its height.
        finals = self._rows(
            "SELECT height, head_height, head_timestamp_ms FROM finality WHERE chain_id = {c:String}"
            " AND height >= {lo:UInt64} AND height <= {h:UInt64} AND height > 0 AND position <= {cp:UInt64}",
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
            # The newest block of the window is the block at `last` (a finalized pointer carries no timestamp).
            "last_block_timestamp_ms": int(recent[-1][1]) if recent else None,
        }

    def position(self) -> int:
        """The projector's checkpoint: every event up to it is queryable."""
        return self._cached("position", self._load_position)

    def _load_position(self) -> int:
        rows = self._rows("SELECT max(position) FROM checkpoints WHERE projector = {p:String}", p=self._projector)
        return int(rows[0][0])


def _level(finality: str) -> str:
    """The pointer kind a finality level reads from."""
    if finality not in FINALITY_LEVELS:
        raise ValueError(f"finality must be one of {FINALITY_LEVELS}, got {finality!r}")
    return HEAD if finality == LATEST else FINALIZED


def _page(first: int) -> int:
    return max(0, min(int(first), PAGE_SIZE_MAX))


def _keyset(before: tuple[int, int]) -> tuple[int, int]:
    height, index = before
    # Nothing sorts before (0, 0); clamp so that the bound parameters stay unsigned.
    return max(int(height), 0), max(int(index), 0)


def _block_dict(row: Sequence[Any], pointers: dict[str, Pointer]) -> dict[str, Any]:
    out = dict(zip(_BLOCK_COLUMNS, row, strict=True))
    # Canonical when its latest row says so and it is at or below the head: between a reorganization and its
    # reverts, the old branch is above the head (moved down to the common ancestor).
    canonical = bool(out["canonical"]) and out["height"] <= pointers[HEAD][0]
    # Final when canonical and at or below the newest final block: the canonical chain holds every final
    # block, and finalizing a block finalizes its ancestors.
    finalized = canonical and out["height"] <= pointers[FINALIZED][0]
    out["canonical"], out["finalized"] = canonical, finalized
    out["status"] = STATUS_FINALIZED if finalized else STATUS_CANONICAL if canonical else STATUS_ORPHANED
    return out


def _receipt_ranked(row: Sequence[Any], snap: Snapshot) -> tuple[tuple[int, ...], dict[str, Any]]:
    """(rank, receipt) of an inclusion's latest row: canonical applied above canonical rejected (each by height,
    then index) above reverted (by the position of the revert, then index: a block that replays a tx holds it
    twice, and the later inclusion ranks first, as among canonical rejected ones)."""
    tx_id, status, reason, height, index, block_hash, chain_id, position = row
    pointers = snap.chain(chain_id)
    # Above the head, a tx row not yet reverted belongs to a block the reorganization already took off.
    canonical = status != REVERTED and pointers is not None and height <= pointers[HEAD][0]
    if canonical:
        rank = (2 if status == APPLIED else 1, height, index)
    else:
        status, rank = REVERTED, (0, position, index)
    keys = ("tx_id", "status", "reason", "height", "index", "block_hash", "chain_id")
    return rank, dict(zip(keys, (tx_id, status, reason, height, index, block_hash, chain_id), strict=True))


def _reorg_dict(chain_id: str, row: Sequence[Any]) -> dict[str, Any]:
    r = dict(zip(_REORG_COLUMNS, row, strict=True))
    return {
        "chain_id": chain_id, "position": r["position"], "cause": r["cause"], "depth": r["depth"],
        "height": r["ancestor_height"], "ancestor_hash": r["ancestor_hash"],
        "old_tip": {"height": r["old_tip_height"], "hash": r["old_tip_hash"]},
        "new_tip": {"height": r["new_tip_height"], "hash": r["new_tip_hash"]},
        "reverted": list(r["reverted"]), "applied": list(r["applied"]),
    }


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
