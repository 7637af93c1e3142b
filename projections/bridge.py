"""The bridge reserves family (DOMAIN.md, Bridge reserves and Proof of reserves): pure projectors of the tables
of schemas/clickhouse/004_bridge.sql, plugged into `project` by projections/family.py.

From a block summary's effects (schemas/events.py): `effects.bridge` [[asset, d deposited, d withdrawn,
d pending]] and `effects.balances` give `reserve_flows`; `effects.reserves` [[reserve_id, before | None, after]]
gives `reserve_records` (every change) and `withdrawal_queue` (entries and exits of the pending state). A revert
writes, at its own position: the flows negated, each record as it was before the block (absent when the block
created it), the queue entries and exits taken back. A ReservesAttested gives a `reserve_attestations` row.

So at every log position, a read over `height <= h` is the canonical state after h: figures are sums, a record
is the latest row by position (a revert's row comes after the rows it undoes, and any block applied after the
reorganization comes after the revert), and the rows of a block above the head, between a reorganization and
its reverts, are left out by the height bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from projections.family import Family, Row, Rows
from schemas.events import ReservesAttested

NATIVE_ASSET = "CELL"
APPLIED, REVERTED = "applied", "reverted"
PENDING = "pending"

COLUMNS: dict[str, tuple[str, ...]] = {
    "reserve_flows": (
        "chain_id", "asset", "height", "block_hash", "deposited", "withdrawn", "pending", "balances", "position",
    ),
    "reserve_records": (
        "chain_id", "reserve_id", "height", "block_hash", "change", "present", "kind", "asset", "amount", "owner",
        "status", "external_chain", "external_address", "external_tx", "reason", "relayer", "created_height",
        "updated_height", "position",
    ),
    "withdrawal_queue": (
        "chain_id", "requested_height", "reserve_id", "asset", "amount", "owner", "external_chain",
        "external_address", "height", "delta", "position",
    ),
    "reserve_attestations": (
        "chain_id", "asset", "height", "block_hash", "scheme", "root", "total", "pending", "liabilities",
        "deposited", "withdrawn", "escrow", "ratio", "leaf_count", "cause", "position",
    ),
}
# A record's fields in reserve_records' column order (writes/txs.py names `chain` the external chain).
_RECORD_FIELDS = (
    "kind", "asset", "amount", "owner", "status", "chain", "external_address", "external_tx", "reason", "relayer",
    "height", "updated_height",
)
_ABSENT = ("", "", 0, "", "", "", "", "", "", "", 0, 0)


def block_rows(position: int, b: Mapping[str, Any], reverted: bool) -> Rows:
    """Rows of a block summary put on the canonical chain, or (`reverted`) taken off it."""
    fx = b["effects"]
    rows: Rows = {}
    flows = _flows(position, b, fx, -1 if reverted else 1)
    if flows:
        rows["reserve_flows"] = flows
    changes = fx.get("reserves") or ()
    if changes:
        rows["reserve_records"] = [_record_row(position, b, rid, before, after, reverted)
                                   for rid, before, after in changes]
        queue = [row for rid, before, after in changes
                 if (row := _queue_row(position, b, rid, before, after, reverted)) is not None]
        if queue:
            rows["withdrawal_queue"] = queue
    return rows


def _flows(position: int, b: Mapping[str, Any], fx: Mapping[str, Any], sign: int) -> list[Row]:
    """One row per bridged asset whose figures or total balance the block changed."""
    moved: dict[str, list[int]] = {}
    for asset, deposited, withdrawn, pending in fx.get("bridge") or ():
        moved[asset] = [deposited, withdrawn, pending, 0]
    for _address, asset, delta in fx["balances"]:
        if asset != NATIVE_ASSET and not asset.startswith("#"):
            moved.setdefault(asset, [0, 0, 0, 0])[3] += delta
    return [
        (b["chain_id"], asset, b["height"], b["block_hash"], *(sign * x for x in figures), position)
        for asset, figures in sorted(moved.items())
        if any(figures)  # a transfer moves balances between accounts: no net change
    ]


def _record_row(
    position: int, b: Mapping[str, Any], reserve_id: str, before: Mapping[str, Any] | None,
    after: Mapping[str, Any], reverted: bool,
) -> Row:
    """The record as the event leaves it: `after` when applied, `before` (absent: none) when reverted."""
    record = before if reverted else after
    fields = _ABSENT if record is None else tuple(record[f] for f in _RECORD_FIELDS)
    return (
        b["chain_id"], reserve_id, b["height"], b["block_hash"], REVERTED if reverted else APPLIED,
        int(record is not None), *fields, position,
    )


def _queue_row(
    position: int, b: Mapping[str, Any], reserve_id: str, before: Mapping[str, Any] | None,
    after: Mapping[str, Any], reverted: bool,
) -> Row | None:
    """+1 when the block made the withdrawal pending, -1 when it took it out (negated by a revert)."""
    was = before is not None and before["status"] == PENDING
    now = after["status"] == PENDING
    if was == now:
        return None
    request = after if now else before
    assert request is not None
    delta = (1 if now else -1) * (-1 if reverted else 1)
    return (
        b["chain_id"], request["height"], reserve_id, request["asset"], request["amount"], request["owner"],
        request["chain"], request["external_address"], b["height"], delta, position,
    )


def attestation_rows(position: int, e: ReservesAttested) -> Rows:
    """`ratio` is '' when the event's is None (nothing owed): no Nullable column, whose hashes and sums are NULL."""
    return {"reserve_attestations": [(
        e.chain_id, e.asset, e.height, e.block_hash, e.scheme, e.root, e.total, e.pending, e.liabilities,
        e.deposited, e.withdrawn, e.escrow, e.ratio or "", e.leaf_count, e.cause, position,
    )]}


FAMILY = Family(
    name="bridge",
    columns=COLUMNS,
    block=block_rows,
    events={ReservesAttested.KIND: attestation_rows},
)
