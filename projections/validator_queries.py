"""Reads of the validators family (projections/validators.py), beside projections/queries.py's `ReadModel` and on
its snapshots: the checkpoint and the chains' pointers (one query, kept until the store changes); then each method
makes one query. Reads at a height mean the canonical state after that block; a finality
level picks the head a read is relative to (LATEST, the canonical tip, or FINALIZED), as for `account`.

- A validator's state after height h: its row with the greatest position among rows at height <= h (a revert's
  row restores the record from before the block; see projections/validators.py).
- History entries and slash receipts: the latest row of each entry (per block and tx slot), canonical when that
  row is not reverted and at or below the head (between a reorganization and its reverts, the old branch is
  above the head, which moved down to the common ancestor).
- Totals: sums of per-block changes over height <= h (a revert's row is the block's negated).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from projections.queries import LATEST, ReadModel, Snapshot
from projections.validators import APPLIED, RELEASED, REVERTED

# A validator's fields read from its latest row, in this order (the key's public key only when asked for).
_STATE = (
    "present", "operator", "key_alg", "gpu_uuid", "stake", "phase", "unbond_at_ms", "enrolled_height", "revoked",
    "slashable",
)
_STATE_SQL = (
    "SELECT node_id, argMax(tuple({fields}), position) AS s,"
    " argMaxIf(unbond_height, position, unbond_height > 0) AS unbond_h,"
    " argMaxIf(release_height, position, release_height > 0) AS release_h"
    " FROM validator_states WHERE chain_id = {{c:String}} AND height <= {{h:UInt64}} AND position <= {{cp:UInt64}}"
    "{where} GROUP BY node_id HAVING s.1 = 1{having} ORDER BY node_id LIMIT {{n:UInt32}}"
)
_EVENT_COLUMNS = ("height", "seq", "kind", "block_hash", "tx_id", "amount", "reverted")
_SLASH_COLUMNS = (
    "tx_id", "chain_id", "node_id", "height", "tx_index", "block_hash", "reporter", "offence_height", "status",
    "reason", "slashed", "to_reporter", "burned", "revoked", "position",
)
_SLASH_FIELDS = ", ".join(_SLASH_COLUMNS)
_TOTALS = ("active", "unbonding", "released", "bonded", "slashed", "burned")
_TOTALS_SQL = ", ".join(f"sum({t})" for t in _TOTALS)
HISTORY_ENTRIES_MAX = 500


class ValidatorQueries:
    """The validator views of one read model: its snapshot, its clients (one per thread)."""

    def __init__(self, model: ReadModel) -> None:
        self.model = model

    def snapshot(self) -> Snapshot:
        return self.model.snapshot()

    def _rows(self, sql: str, **params: Any) -> Sequence[Sequence[Any]]:
        return self.model._rows(sql, **params)  # the same package: one client per thread, one snapshot rule

    def _at(self, chain_id: str, at_height: int | None, finality: str) -> tuple[Snapshot, int] | None:
        """(snapshot, the height to read: `at_height` bounded by the head at `finality`); None: unknown chain."""
        snap = self.snapshot()
        top = snap.top(chain_id, finality)
        if top is None:
            return None
        return snap, top if at_height is None else min(max(at_height, 0), top)

    # ------------------------------------------------------------------------------------------ validators

    def validator(
        self, chain_id: str, node_id: str, at_height: int | None = None, finality: str = LATEST,
        with_key: bool = False,
    ) -> dict[str, Any] | None:  # fmt: skip
        """The validator after `at_height` (the head at `finality` when None; a height above that head reads the
        head); None when it does not exist there. `height` is the height read. With `with_key`, also its public
        key (`key_pk`: large, left out otherwise)."""
        found = self._at(chain_id, at_height, finality)
        if found is None:
            return None
        snap, height = found
        rows = self._rows(
            _state_sql(" AND node_id = {v:String}", "", with_key),
            c=chain_id, h=height, cp=snap.position, v=node_id, n=1,
        )
        return _validator_dict(chain_id, height, rows[0], with_key) if rows else None

    def validators(
        self, chain_id: str, first: int, after: str | None = None, phase: str | None = None,
        finality: str = LATEST, with_key: bool = False, at_height: int | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Validators after `at_height` (the head at `finality` when None), in node_id order, every phase unless
        `phase`; keyset paging: the next page is `after` = the last node_id (a node_id is never reused, so a walk
        meets each validator that exists throughout it exactly once)."""
        found = self._at(chain_id, at_height, finality)
        n = max(0, int(first))
        if found is None or not n:
            return []
        snap, height = found
        params: dict[str, Any] = {"c": chain_id, "h": height, "cp": snap.position, "n": n}
        where = having = ""
        if after is not None:
            where, params["after"] = " AND node_id > {after:String}", after
        if phase is not None:
            having, params["ph"] = " AND s.6 = {ph:String}", phase
        rows = self._rows(_state_sql(where, having, with_key), **params)
        return [_validator_dict(chain_id, height, row, with_key) for row in rows]

    def validator_history(
        self, chain_id: str, node_id: str, at_height: int | None = None, finality: str = LATEST,
        include_reverted: bool = False, first: int = HISTORY_ENTRIES_MAX,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """What happened to the validator up to `at_height` (the head at `finality`), oldest first: entries of
        canonical blocks, and with `include_reverted` those of blocks a reorganization took off (`reverted`)."""
        found = self._at(chain_id, at_height, finality)
        if found is None or first <= 0:
            return []
        snap, height = found
        # Entries above the head are the old branch of a reorganization whose reverts are still to come.
        keep = "" if include_reverted else " WHERE reverted = 0"
        rows = self._rows(
            f"SELECT {', '.join(_EVENT_COLUMNS)} FROM (SELECT {', '.join(_EVENT_COLUMNS)} FROM validator_events"
            " WHERE chain_id = {c:String} AND node_id = {v:String} AND height <= {h:UInt64}"
            " AND position <= {cp:UInt64} ORDER BY height, seq, kind, block_hash, position DESC"
            f" LIMIT 1 BY height, seq, kind, block_hash){keep}"
            " ORDER BY height, seq, kind, block_hash LIMIT {n:UInt32}",
            c=chain_id, v=node_id, h=height, cp=snap.position, n=min(first, HISTORY_ENTRIES_MAX),
        )
        return [_event_dict(row) for row in rows]

    # ---------------------------------------------------------------------------------------------- slashes

    def slash_receipt(self, tx_id: str, chain_id: str | None = None) -> dict[str, Any] | None:
        """The receipt of a slash tx by DOMAIN.md's rule: the canonical applied one, else the latest canonical
        rejected one (highest height, then index), else the most recently reverted one (status 'reverted', its
        original reason and figures). None when no canonical block ever carried it."""
        snap = self.snapshot()
        sql = f"SELECT {_SLASH_FIELDS} FROM slash_receipts WHERE tx_id = {{t:String}} AND position <= {{cp:UInt64}}"
        params: dict[str, Any] = {"t": tx_id, "cp": snap.position}
        if chain_id is not None:
            sql, params["c"] = sql + " AND chain_id = {c:String}", chain_id
        rows = self._rows(
            sql + " ORDER BY chain_id, block_hash, tx_index, position DESC LIMIT 1 BY chain_id, block_hash, tx_index",
            **params,
        )
        ranked = [(_slash_rank(row, snap), row) for row in rows]
        if not ranked:
            return None
        rank, row = max(ranked, key=lambda pair: pair[0])
        receipt = _slash_dict(row)
        if rank[0] == 0:
            receipt["status"] = REVERTED
        return receipt

    def slashes(
        self, chain_id: str, node_id: str | None = None, first: int = 20, before: tuple[int, int] | None = None,
        finality: str = LATEST,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Slash receipts (applied and rejected) of canonical blocks up to the head at `finality`, newest first by
        (height, index), of one accused node_id or all; keyset paging: `before` = (height, index) of the last."""
        found = self._at(chain_id, None, finality)
        n = max(0, int(first))
        if found is None or not n:
            return []
        snap, height = found
        params: dict[str, Any] = {"c": chain_id, "h": height, "cp": snap.position, "n": n}
        where = ""
        if node_id is not None:
            where, params["v"] = " AND node_id = {v:String}", node_id
        if before is not None:
            params["bh"], params["bi"] = max(int(before[0]), 0), max(int(before[1]), 0)
            where += " AND height <= {bh:UInt64} AND (height < {bh:UInt64} OR tx_index < {bi:UInt32})"
        rows = self._rows(
            f"SELECT {_SLASH_FIELDS} FROM (SELECT {_SLASH_FIELDS} FROM slash_receipts WHERE chain_id = {{c:String}}"
            f" AND height <= {{h:UInt64}} AND position <= {{cp:UInt64}}{where}"
            " ORDER BY block_hash, tx_index, position DESC LIMIT 1 BY block_hash, tx_index)"
            f" WHERE status != '{REVERTED}' ORDER BY height DESC, tx_index DESC LIMIT {{n:UInt32}}",
            **params,
        )
        return [_slash_dict(row) for row in rows]

    # ----------------------------------------------------------------------------------------------- totals

    def validator_totals(
        self, chain_id: str, at_height: int | None = None, finality: str = LATEST
    ) -> dict[str, Any] | None:
        """Counts per phase, bonded stake (active and unbonding), slashed and burned totals after `at_height`
        (the head at `finality`); None for an unknown chain."""
        found = self._at(chain_id, at_height, finality)
        if found is None:
            return None
        snap, height = found
        rows = self._rows(
            f"SELECT {_TOTALS_SQL} FROM validator_totals WHERE chain_id = {{c:String}} AND height <= {{h:UInt64}}"
            " AND position <= {cp:UInt64}",
            c=chain_id, h=height, cp=snap.position,
        )
        return {"chain_id": chain_id, "height": height, **_totals_dict(rows[0] if rows else (0,) * len(_TOTALS))}

    def validator_metrics(self) -> dict[str, Any]:
        """For Prometheus, per chain: the totals at the head, and slash receipts by (status, reason) as counts of
        rows ever written (`counted`: put on the canonical chain, applied or rejected; `reverted`: taken off it,
        by the status they had), so `counted - reverted` is what the views show. Two queries."""
        snap = self.snapshot()
        chains = sorted(c for c in snap.pointers if snap.chain(c) is not None)
        out: dict[str, Any] = {c: {"totals": _totals_dict((0,) * len(_TOTALS)), "counted": {}, "reverted": {}}
                               for c in chains}  # fmt: skip
        if not chains:
            return out
        heads = [snap.top(c, LATEST) for c in chains]
        totals = self._rows(
            f"SELECT chain_id, {_TOTALS_SQL} FROM validator_totals WHERE position <= {{cp:UInt64}}"
            " AND height <= transform(chain_id, {cs:Array(String)}, {hs:Array(UInt64)}, toUInt64(0))"
            " GROUP BY chain_id",
            cp=snap.position, cs=chains, hs=heads,
        )
        for chain_id, *sums in totals:
            if chain_id in out:
                out[chain_id]["totals"] = _totals_dict(sums)
        counts = self._rows(
            "SELECT chain_id, status, reason, count() FROM slash_receipts WHERE position <= {cp:UInt64}"
            " GROUP BY chain_id, status, reason",
            cp=snap.position,
        )
        for chain_id, status, reason, n in counts:
            if chain_id not in out:
                continue
            if status == REVERTED:
                key = (APPLIED if reason == "" else "rejected", reason)
                out[chain_id]["reverted"][key] = int(n)
            else:
                out[chain_id]["counted"][(status, reason)] = int(n)
        return out


def _state_sql(where: str, having: str, with_key: bool) -> str:
    fields = ", ".join(_STATE + (("key_pk",) if with_key else ()))
    return _STATE_SQL.format(fields=fields, where=where, having=having)


def _validator_dict(chain_id: str, height: int, row: Sequence[Any], with_key: bool) -> dict[str, Any]:
    node_id, state, unbond_h, release_h = row
    s = dict(zip(_STATE + (("key_pk",) if with_key else ()), state, strict=True))
    phase = s["phase"]
    out = {
        "chain_id": chain_id, "node_id": node_id, "height": height,
        "operator": s["operator"], "key_alg": s["key_alg"], "gpu_uuid": s["gpu_uuid"], "stake": int(s["stake"]),
        "phase": phase, "slashable": bool(s["slashable"]), "revoked": bool(s["revoked"]),
        "enrolled_height": int(s["enrolled_height"]),
        "unbond_at_ms": None if int(s["unbond_at_ms"]) < 0 else int(s["unbond_at_ms"]),
        # The rows where the phase changed (0: none); only meaningful once it has (see projections/validators.py).
        "unbond_height": None if phase == "active" or not unbond_h else int(unbond_h),
        "released_height": None if phase != RELEASED or not release_h else int(release_h),
    }
    if with_key:
        out["key_pk"] = s["key_pk"]
    return out


def _event_dict(row: Sequence[Any]) -> dict[str, Any]:
    height, seq, kind, block_hash, tx_id, amount, reverted = row
    return {
        "height": int(height), "kind": kind, "block_hash": block_hash, "tx_id": tx_id or None,
        # seq is 2 * tx index (+1 for a revocation) for what a tx did; the index is shown where the tx is known.
        "index": int(seq) // 2 if tx_id else None, "amount": int(amount), "reverted": bool(reverted),
    }


def _slash_rank(row: Sequence[Any], snap: Snapshot) -> tuple[int, int, int]:
    """Canonical applied above canonical rejected (each by height, then index) above reverted (by the position of
    the revert, then index)."""
    r = dict(zip(_SLASH_COLUMNS, row, strict=True))
    pointers = snap.chain(r["chain_id"])
    # Above the head, a row not yet reverted belongs to a block a reorganization already took off.
    head = snap.top(r["chain_id"], LATEST) if pointers is not None else -1
    if r["status"] != REVERTED and r["height"] <= head:
        return (2 if r["status"] == APPLIED else 1, int(r["height"]), int(r["tx_index"]))
    return (0, int(r["position"]), int(r["tx_index"]))


def _slash_dict(row: Sequence[Any]) -> dict[str, Any]:
    r = dict(zip(_SLASH_COLUMNS, row, strict=True))
    return {
        "tx_id": r["tx_id"], "chain_id": r["chain_id"], "node_id": r["node_id"], "status": r["status"],
        "reason": r["reason"], "height": int(r["height"]), "index": int(r["tx_index"]), "block_hash": r["block_hash"],
        "reporter": r["reporter"], "offence_height": int(r["offence_height"]), "slashed": int(r["slashed"]),
        "to_reporter": int(r["to_reporter"]), "burned": int(r["burned"]), "revoked": bool(r["revoked"]),
    }


def _totals_dict(sums: Sequence[Any]) -> dict[str, int]:
    t = dict(zip(_TOTALS, (int(x) for x in sums), strict=True))
    return {
        "active_count": t["active"], "unbonding_count": t["unbonding"], "released_count": t["released"],
        "validator_count": t["active"] + t["unbonding"] + t["released"], "bonded_stake": t["bonded"],
        "slashed_total": t["slashed"], "burned_total": t["burned"],
    }
