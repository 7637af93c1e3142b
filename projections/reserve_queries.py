"""Reads of the bridge reserves views (schemas/clickhouse/004_bridge.sql), beside projections/queries.py's
`ReadModel` and on its snapshots: every read bounds its rows by the checkpoint of the snapshot it took with the
head pointers, so an answer is the views after one log position, reorganizations included.

Reads at a height mean the canonical state after that block: figures are sums over `height <= h`, a reserve
record is its latest row at `height <= h` (projections/bridge.py says why that is exact), and a height above the
head at the finality level reads that head. Amounts come back as Python ints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from projections.bridge import APPLIED, REVERTED
from projections.queries import LATEST, ReadModel, Snapshot
from schemas.limits import PAGE_SIZE_MAX

WITHDRAWAL = "withdrawal"
PENDING = "pending"
WITHDRAWAL_STATUSES = ("pending", "confirmed", "rejected")

_RECORD_COLUMNS = (
    "reserve_id", "height", "block_hash", "change", "present", "kind", "asset", "amount", "owner", "status",
    "external_chain", "external_address", "external_tx", "reason", "relayer", "created_height", "updated_height",
    "position",
)
# What a record is, without where its row came from.
_RECORD_FIELDS = (
    "reserve_id", "kind", "asset", "amount", "owner", "status", "external_chain", "external_address", "external_tx",
    "reason", "relayer", "created_height", "updated_height",
)
_ATTESTATION_COLUMNS = (
    "asset", "height", "block_hash", "scheme", "root", "total", "pending", "liabilities", "deposited", "withdrawn",
    "escrow", "ratio", "leaf_count", "cause", "position",
)
_QUEUE_KEY = "requested_height, reserve_id, asset, amount, owner, external_chain, external_address"
_SUMS = "sum(deposited), sum(withdrawn), sum(pending), sum(balances)"


class ReserveQueries:
    """The reserves views of one read model: its snapshot, its clients."""

    def __init__(self, model: ReadModel) -> None:
        self.model = model

    def _rows(self, sql: str, **params: Any) -> Sequence[Sequence[Any]]:
        return self.model._rows(sql, **params)  # the same package: one client per thread, one snapshot rule

    def _at(self, chain_id: str, at_height: int | None, finality: str) -> tuple[Snapshot, int] | None:
        """The snapshot and the height to read (at most the head at `finality`); None for an unknown chain."""
        snap = self.model.snapshot()
        top = snap.top(chain_id, finality)
        if top is None:
            return None
        return snap, top if at_height is None else min(max(at_height, 0), top)

    # ------------------------------------------------------------------------------------------- figures

    def reserves(
        self, chain_id: str, asset: str, at_height: int | None = None, finality: str = LATEST
    ) -> dict[str, Any] | None:
        """An asset's bridge figures after a height: deposited, withdrawn, pending, escrow, balances (the sum of
        every balance), liabilities (balances + pending) and the number of pending withdrawals. None when the
        chain is unknown or the asset is not bridged there yet (nothing deposited at or below the height)."""
        at = self._at(chain_id, at_height, finality)
        if at is None:
            return None
        snap, height = at
        params = {"c": chain_id, "a": asset, "h": height, "cp": snap.position}
        (deposited, withdrawn, pending, balances), = self._rows(
            f"SELECT {_SUMS} FROM reserve_flows WHERE chain_id = {{c:String}} AND asset = {{a:String}}"
            " AND height <= {h:UInt64} AND position <= {cp:UInt64}",
            **params,
        )
        if int(deposited) <= 0:
            return None
        (queued,), = self._rows(
            f"SELECT count() FROM (SELECT {_QUEUE_KEY} FROM withdrawal_queue WHERE chain_id = {{c:String}}"
            " AND asset = {a:String} AND height <= {h:UInt64} AND position <= {cp:UInt64}"
            f" GROUP BY {_QUEUE_KEY} HAVING sum(delta) > 0)",
            **params,
        )
        return _figures(chain_id, asset, height, deposited, withdrawn, pending, balances, queued)

    def bridged_assets(
        self, chain_id: str, at_height: int | None = None, finality: str = LATEST
    ) -> list[dict[str, Any]]:
        """The figures of every asset bridged at the height, by asset (without the count of pending ones)."""
        at = self._at(chain_id, at_height, finality)
        if at is None:
            return []
        snap, height = at
        rows = self._rows(
            f"SELECT asset, {_SUMS} FROM reserve_flows WHERE chain_id = {{c:String}} AND height <= {{h:UInt64}}"
            " AND position <= {cp:UInt64} GROUP BY asset HAVING sum(deposited) > 0 ORDER BY asset",
            c=chain_id, h=height, cp=snap.position,
        )
        return [_figures(chain_id, a, height, d, w, p, b, None) for a, d, w, p, b in rows]

    def total_balances(self, chain_id: str, asset: str, height: int) -> int:
        """The sum of every balance of the asset after `height`, from balance_deltas (a cross-check of the
        flows' `balances`: tests and audits)."""
        snap = self.model.snapshot()
        (total,), = self._rows(
            "SELECT sum(delta) FROM balance_deltas WHERE chain_id = {c:String} AND asset = {a:String}"
            " AND height <= {h:UInt64} AND position <= {cp:UInt64}",
            c=chain_id, a=asset, h=height, cp=snap.position,
        )
        return int(total)

    def holdings(self, chain_id: str, asset: str, height: int) -> tuple[int, list[tuple[str, int]]]:
        """(snapshot position, [(address, balance)] of every account holding the asset after `height`):
        what a proof-of-reserves tree is built from."""
        snap = self.model.snapshot()
        rows = self._rows(
            "SELECT address, sum(delta) AS b FROM balance_deltas WHERE chain_id = {c:String} AND asset = {a:String}"
            " AND height <= {h:UInt64} AND position <= {cp:UInt64} GROUP BY address HAVING b > 0",
            c=chain_id, a=asset, h=height, cp=snap.position,
        )
        return snap.position, [(str(a), int(b)) for a, b in rows]

    # ------------------------------------------------------------------------------------------ records

    def reserve(
        self, chain_id: str, reserve_id: str, at_height: int | None = None, finality: str = LATEST
    ) -> dict[str, Any] | None:
        """A reserve_id's record after the height, with `history`: every change of it, oldest first, each
        `reverted` when a reorganization took its block off the canonical chain (with `at_height` or at the final
        head, the changes at heights up to it). None when no such record."""
        at = self._at(chain_id, at_height, finality)
        if at is None:
            return None
        snap, height = at
        head = snap.top(chain_id, LATEST)
        rows = [dict(zip(_RECORD_COLUMNS, r, strict=True)) for r in self._rows(
            f"SELECT {', '.join(_RECORD_COLUMNS)} FROM reserve_records WHERE chain_id = {{c:String}}"
            " AND reserve_id = {r:String} AND position <= {cp:UInt64} ORDER BY position",
            c=chain_id, r=reserve_id, cp=snap.position,
        )]
        current = [r for r in rows if r["height"] <= height]
        if not current or not current[-1]["present"]:
            return None
        record = {k: current[-1][k] for k in _RECORD_FIELDS}
        history = _history(rows, head if head is not None else height)
        if at_height is not None or finality != LATEST:  # the history up to that height (at the tip: all of it)
            history = [h for h in history if h["height"] <= height]
        return {"chain_id": chain_id, "height": height, **record, "history": history}

    def withdrawals(
        self, chain_id: str, status: str | None = None, first: int = 20, after: tuple[int, str] | None = None,
        asset: str | None = None, finality: str = LATEST,
    ) -> list[dict[str, Any]]:
        """Withdrawals in request order (requested height, then reserve_id), `first` of them after the keyset
        `after` = (requested height, reserve_id) of the last one seen; `status` pending, confirmed, rejected or
        None (any). The pending ones are the queue's entries; the others are the latest records."""
        at = self._at(chain_id, None, finality)
        n = max(0, min(int(first), PAGE_SIZE_MAX))
        if at is None or not n:
            return []
        snap, height = at
        params: dict[str, Any] = {"c": chain_id, "h": height, "cp": snap.position, "n": n}
        where = ""
        if after is not None:
            where += (" AND (created_height > {ah:UInt64}"
                      " OR (created_height = {ah:UInt64} AND reserve_id > {ar:String}))")
            params["ah"], params["ar"] = after
        if asset is not None:
            where, params["a"] = where + " AND asset = {a:String}", asset
        if status == PENDING:
            return self._queue(where.replace("created_height", "requested_height"), params)
        if status is not None:
            where, params["s"] = where + " AND status = {s:String}", status
        latest = ", ".join(f"argMax({c}, position) AS {c}" for c in (*_RECORD_FIELDS[1:], "present"))
        rows = self._rows(
            f"SELECT reserve_id, {', '.join(_RECORD_FIELDS[1:])} FROM (SELECT reserve_id, {latest}"
            " FROM reserve_records WHERE chain_id = {c:String} AND height <= {h:UInt64} AND position <= {cp:UInt64}"
            f" GROUP BY reserve_id) WHERE present = 1 AND kind = '{WITHDRAWAL}'{where}"
            " ORDER BY created_height, reserve_id LIMIT {n:UInt32}",
            **params,
        )
        return [{"chain_id": chain_id, **dict(zip(_RECORD_FIELDS, r, strict=True))} for r in rows]

    def _queue(self, where: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        rows = self._rows(
            f"SELECT {_QUEUE_KEY} FROM withdrawal_queue WHERE chain_id = {{c:String}} AND height <= {{h:UInt64}}"
            f" AND position <= {{cp:UInt64}}{where} GROUP BY {_QUEUE_KEY} HAVING sum(delta) > 0"
            " ORDER BY requested_height, reserve_id LIMIT {n:UInt32}",
            **params,
        )
        return [
            {"chain_id": params["c"], "reserve_id": rid, "kind": WITHDRAWAL, "asset": a, "amount": int(amount),
             "owner": owner, "status": PENDING, "external_chain": ext_chain, "external_address": ext_address,
             "external_tx": "", "reason": "", "relayer": "", "created_height": int(h), "updated_height": int(h)}
            for h, rid, a, amount, owner, ext_chain, ext_address in rows
        ]

    # ------------------------------------------------------------------------------------- attestations

    def attestation(self, chain_id: str, asset: str, height: int | None = None) -> dict[str, Any] | None:
        """The attestation of the asset at `height`, or the newest one; None when there is none."""
        snap = self.model.snapshot()
        where = "" if height is None else " AND height = {h:UInt64}"
        rows = self._rows(
            f"SELECT {', '.join(_ATTESTATION_COLUMNS)} FROM reserve_attestations WHERE chain_id = {{c:String}}"
            f" AND asset = {{a:String}} AND position <= {{cp:UInt64}}{where} ORDER BY height DESC, position LIMIT 1",
            c=chain_id, a=asset, h=height or 0, cp=snap.position,
        )
        return _attestation(chain_id, rows[0]) if rows else None

    def latest_attestations(self, chain_id: str) -> list[dict[str, Any]]:
        """The newest attestation of every asset of the chain, by asset."""
        snap = self.model.snapshot()
        rows = self._rows(
            f"SELECT {', '.join(_ATTESTATION_COLUMNS)} FROM reserve_attestations WHERE chain_id = {{c:String}}"
            " AND position <= {cp:UInt64} ORDER BY asset, height DESC, position LIMIT 1 BY asset",
            c=chain_id, cp=snap.position,
        )
        return [_attestation(chain_id, r) for r in rows]


def _attestation(chain_id: str, row: Sequence[Any]) -> dict[str, Any]:
    out = {"chain_id": chain_id, **dict(zip(_ATTESTATION_COLUMNS, row, strict=True))}
    out["ratio"] = out["ratio"] or None  # stored '' when nothing is owed
    for figure in ("total", "pending", "liabilities", "deposited", "withdrawn", "escrow"):
        out[figure] = int(out[figure])
    return out


def _figures(
    chain_id: str, asset: str, height: int, deposited: Any, withdrawn: Any, pending: Any, balances: Any,
    queued: Any,
) -> dict[str, Any]:
    d, w, p, b = int(deposited), int(withdrawn), int(pending), int(balances)
    return {
        "chain_id": chain_id, "asset": asset, "height": height, "deposited": d, "withdrawn": w, "pending": p,
        "escrow": d - w, "balances": b, "liabilities": b + p,
        "pending_count": None if queued is None else int(queued),
    }


def _history(rows: Sequence[dict[str, Any]], head: int) -> list[dict[str, Any]]:
    """The 'applied' rows, oldest first, each reverted when a later 'reverted' row names its block, or when its
    block is above the head (a reorganization moved the head down and its reverts are still to come)."""
    out = []
    for i, row in enumerate(rows):
        if row["change"] != APPLIED:
            continue
        undone = any(r["change"] == REVERTED and r["block_hash"] == row["block_hash"] for r in rows[i + 1:])
        out.append({
            "height": row["height"], "block_hash": row["block_hash"], "status": row["status"],
            "external_tx": row["external_tx"], "reason": row["reason"], "relayer": row["relayer"],
            "position": row["position"], "reverted": undone or row["height"] > head,
        })
    return out
