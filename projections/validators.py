"""The validators family (issue 4): pure projection of validator records, their history, slash receipts and the
validator totals, plugged into `project` through projections/family.py.

Everything comes from what the log records (schemas/events.py): the genesis validators, and per block summary its
`effects.validators` ([node_id, before | None, after], writes/state.Validator.record()), `effects.slashes` (one
[index, node_id, offence height, slashed, to_reporter, burned, revoked] per slash tx, applied or rejected),
`effects.releases`, its txs, tx ids and receipts. A block taken off the canonical chain (`reverted`) writes:

- `validator_states`: the `before` record of every validator the block changed, at the block's height (a row
  with `present` 0 when the block enrolled it). A validator's state after height h is its row with the greatest
  position among rows at height <= h: the last revert of a reorganization restores, at the lowest reverted height
  that touched it, the record it had after the common ancestor, so older rows above it are shadowed
  (docs/decisions.md, Validator views, says why). `unbond_height` / `release_height` are set on the row of the
  block where the phase changed ("where known", 0 elsewhere); a read takes the newest such row by position.
- `validator_events`: the block's history entries again, marked `reverted`.
- `slash_receipts`: the block's slash receipts again with status `reverted` (original reason kept).
- `validator_totals`: the block's deltas negated, so a total at height h stays a plain sum.

Like every projector, this is pure: the same (position, event) always gives the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from projections.family import Family, Row, Rows
from schemas.events import TX_SUMMARY_FIELDS, GenesisAccepted

ACTIVE, UNBONDING, RELEASED = "active", "unbonding", "released"
APPLIED, REJECTED, REVERTED = "applied", "rejected", "reverted"
# History entry kinds, in the order they can happen to one validator within one tx slot.
ENROLLED, UNENROLLED, SLASHED, REVOKED, RELEASED_ENTRY = "enrolled", "unenrolled", "slashed", "revoked", "released"

NO_UNBOND_AT = -1  # validator_states.unbond_at_ms of a validator that is not unbonding
STATES, EVENTS, SLASHES, TOTALS = "validator_states", "validator_events", "slash_receipts", "validator_totals"
COLUMNS: dict[str, tuple[str, ...]] = {
    STATES: (
        "chain_id", "node_id", "height", "present", "operator", "key_alg", "key_pk", "gpu_uuid", "stake", "phase",
        "unbond_at_ms", "enrolled_height", "revoked", "slashable", "unbond_height", "release_height", "position",
    ),
    EVENTS: ("chain_id", "node_id", "height", "seq", "kind", "block_hash", "tx_id", "amount", "reverted", "position"),
    SLASHES: (
        "chain_id", "node_id", "height", "tx_index", "block_hash", "tx_id", "reporter", "offence_height", "status",
        "reason", "slashed", "to_reporter", "burned", "revoked", "position",
    ),
    TOTALS: ("chain_id", "height", "active", "unbonding", "released", "bonded", "slashed", "burned", "position"),
}

_KIND = TX_SUMMARY_FIELDS.index("kind")
_SIGNER = TX_SUMMARY_FIELDS.index("signer")
_AMOUNT = TX_SUMMARY_FIELDS.index("amount")
Record = Mapping[str, Any]




# ------------------------------------------------------------------------------------------------- genesis


def project_genesis(position: int, e: GenesisAccepted) -> Rows:
    c, h = e.chain_id, 0
    records = [_genesis_record(v) for v in e.validators]
    if not records:
        return {}
    return {
        STATES: [_state_row(c, r["node_id"], h, r, position) for r in records],
        # Genesis validators have no tx: their entries are ordered as the genesis lists them.
        EVENTS: [(c, r["node_id"], h, 2 * i, ENROLLED, e.block_hash, "", r["stake"], 0, position)
                 for i, r in enumerate(records)],
        TOTALS: [(c, h, len(records), 0, 0, sum(r["stake"] for r in records), 0, 0, position)],
    }


def _genesis_record(v: Mapping[str, Any]) -> dict[str, Any]:
    key = v.get("key") or {}
    return {
        "node_id": v["node_id"], "operator": v["operator"], "key": {"alg": key.get("alg", ""), "pk": key.get("pk", "")},
        "gpu_uuid": v.get("gpu_uuid", ""), "stake": v["stake"], "phase": ACTIVE, "unbond_at_ms": None,
        "enrolled_height": 0, "revoked": False,
    }


# --------------------------------------------------------------------------------------------------- blocks


def project_block(position: int, b: Mapping[str, Any], reverted: bool) -> Rows:
    """Rows of a block summary put on the canonical chain, or (`reverted`) taken off it."""
    fx = b["effects"]
    changes: Sequence[Sequence[Any]] = fx.get("validators") or ()
    slashes: Sequence[Sequence[Any]] = fx.get("slashes") or ()
    if not changes and not slashes:
        return {}
    c, h, bh = b["chain_id"], b["height"], b["block_hash"]
    rows: Rows = {}
    if changes:
        rows[STATES] = [_change_row(c, h, node_id, before, after, position, reverted)
                        for node_id, before, after in changes]
        rows[EVENTS] = [(c, node_id, h, seq, kind, bh, tx_id, amount, int(reverted), position)
                        for node_id, seq, kind, tx_id, amount in history_entries(b)]
    if slashes:
        rows[SLASHES] = _slash_rows(c, h, bh, b, slashes, position, reverted)
    totals = _totals(changes, slashes, b["receipts"])
    if any(totals):
        sign = -1 if reverted else 1
        rows[TOTALS] = [(c, h, *(sign * x for x in totals), position)]
    return rows


def _state_row(
    c: str, node_id: str, h: int, r: Record | None, position: int, unbond_height: int = 0, release_height: int = 0
) -> Row:
    """No NULLs (schemas/clickhouse/003_validators.sql): no unbond time is -1, no phase change height is 0."""
    if r is None:  # the block enrolled it: before the block it did not exist
        return (c, node_id, h, 0, "", "", "", "", 0, "", NO_UNBOND_AT, 0, 0, 0, 0, 0, position)
    unbond_at = NO_UNBOND_AT if r["unbond_at_ms"] is None else r["unbond_at_ms"]
    return (
        c, node_id, h, 1, r["operator"], r["key"]["alg"], r["key"]["pk"], r["gpu_uuid"], r["stake"], r["phase"],
        unbond_at, r["enrolled_height"], int(bool(r["revoked"])), int(r["stake"] > 0), unbond_height,
        release_height, position,
    )


def _change_row(
    c: str, h: int, node_id: str, before: Record | None, after: Record, position: int, reverted: bool
) -> Row:
    if reverted:
        return _state_row(c, node_id, h, before, position)
    was = ACTIVE if before is None else before["phase"]
    unbond = h if was == ACTIVE and after["phase"] != ACTIVE else 0
    release = h if was != RELEASED and after["phase"] == RELEASED else 0
    return _state_row(c, node_id, h, after, position, unbond, release)


def _slash_rows(
    c: str, h: int, bh: str, b: Mapping[str, Any], slashes: Sequence[Sequence[Any]], position: int, reverted: bool
) -> list[Row]:
    rows = []
    for index, node_id, offence_height, slashed, to_reporter, burned, revoked in slashes:
        status, reason = b["receipts"][index]
        rows.append((
            c, node_id, h, index, bh, b["tx_ids"][index], b["txs"][index][_SIGNER], offence_height,
            REVERTED if reverted else status, reason, slashed, to_reporter, burned, int(bool(revoked)), position,
        ))
    return rows


def _totals(
    changes: Sequence[Sequence[Any]], slashes: Sequence[Sequence[Any]], receipts: Sequence[Sequence[str]]
) -> tuple[int, int, int, int, int, int]:
    """(active, unbonding, released, bonded stake, slashed, burned) changes of the block."""
    counts = {ACTIVE: 0, UNBONDING: 0, RELEASED: 0}
    bonded = 0
    for _, before, after in changes:
        for record, sign in ((before, -1), (after, 1)):
            if record is None:
                continue
            counts[record["phase"]] += sign
            if record["phase"] in (ACTIVE, UNBONDING):
                bonded += sign * record["stake"]
    applied = [s for s in slashes if receipts[s[0]][0] == APPLIED]
    return (
        counts[ACTIVE], counts[UNBONDING], counts[RELEASED], bonded,
        sum(s[3] for s in applied), sum(s[5] for s in applied),
    )


# -------------------------------------------------------------------------------------------------- history


def history_entries(b: Mapping[str, Any]) -> list[tuple[str, int, str, str, int]]:
    """(node_id, seq, kind, tx_id, amount) of what the block did to each validator it changed. Pure.

    `seq` orders the entries of one block: 2 * tx index for what a tx did (a revocation 2 * index + 1, right after
    the slash that caused it), 2 * len(txs) for a release (after every tx). `tx_id` is "" where no tx did it (a
    release) or where the summary cannot tell which tx did (below). Amounts: the stake bonded (enrolled), taken
    (slashed), left (revoked) or paid back (released); 0 for an unenrollment.

    The summary names each changed validator's record before and after the block, and which tx slashed whom, but
    not which enroll or unenroll tx named which node_id, so:
    - enrollments: the k-th applied enroll tx made the k-th validator that did not exist before the block (a block
      records changed validators in the order the txs first touched them, and an enrollment is always a first touch);
    - unenrollments: a validator active before the block (or enrolled in it) and not active after it was unenrolled
      unless a slash revoked it in the block; when a slash did, it was unenrolled before that slash exactly when its
      operator has an applied unenroll tx left over. An operator's applied unenroll txs are matched to its
      unenrolled validators in the order above; the tx id is given only when the operator unenrolled one validator
      in the block (exact), else "".
    """
    fx = b["effects"]
    txs, tx_ids, receipts = b["txs"], b["tx_ids"], b["receipts"]
    applied = [status == APPLIED for status, _ in receipts]
    enrolls = iter([i for i, tx in enumerate(txs) if tx[_KIND] == "enroll" and applied[i]])
    unenrolls: dict[str, list[int]] = {}
    for i, tx in enumerate(txs):
        if tx[_KIND] == "unenroll" and applied[i]:
            unenrolls.setdefault(tx[_SIGNER], []).append(i)
    slashes_of: dict[str, list[Sequence[Any]]] = {}
    for s in fx.get("slashes") or ():
        if applied[s[0]]:
            slashes_of.setdefault(s[1], []).append(s)
    released = {node_id: stake for node_id, stake in fx.get("releases") or ()}

    entries: list[tuple[str, int, str, str, int]] = []
    # operator -> its validators that left `active` in the block, in block order: (node_id, certainly unenrolled:
    # False when a slash revoked it in the block, which also ends `active`)
    left: dict[str, list[tuple[str, bool]]] = {}
    for node_id, before, after in fx.get("validators") or ():
        stake = before["stake"] if before is not None else 0
        if before is None:
            index = next(enrolls, None)
            if index is None:  # not a block the ledger records (see above): the entry, without its tx
                stake = after["stake"] + sum(s[3] for s in slashes_of.get(node_id, ()))
                entries.append((node_id, 0, ENROLLED, "", stake))
            else:
                stake = txs[index][_AMOUNT]
                entries.append((node_id, 2 * index, ENROLLED, tx_ids[index], stake))
        was_revoked = before is not None and bool(before["revoked"])
        for index, _, _, slashed, _, _, revoked in slashes_of.get(node_id, ()):
            stake -= slashed
            entries.append((node_id, 2 * index, SLASHED, tx_ids[index], slashed))
            if revoked and not was_revoked:
                entries.append((node_id, 2 * index + 1, REVOKED, tx_ids[index], stake))
                was_revoked = True
        was_active = before is None or before["phase"] == ACTIVE
        if was_active and after["phase"] != ACTIVE:
            revoked_here = bool(after["revoked"]) and not (before is not None and before["revoked"])
            left.setdefault(after["operator"], []).append((node_id, not revoked_here))
        if node_id in released:
            entries.append((node_id, 2 * len(txs), RELEASED_ENTRY, "", released[node_id]))
    entries += _unenrollments(left, unenrolls, tx_ids)
    return sorted(entries, key=lambda e: (e[1], e[0]))


def _unenrollments(
    left: dict[str, list[tuple[str, bool]]], unenrolls: dict[str, list[int]], tx_ids: Sequence[str]
) -> list[tuple[str, int, str, str, int]]:
    """Each operator's applied unenroll txs matched, in order, to its validators that were unenrolled."""
    entries = []
    for operator, indexes in unenrolls.items():
        nodes = left.get(operator, [])
        extra = len(indexes) - sum(certain for _, certain in nodes)  # unenrolled, then revoked in the same block
        chosen = []
        for node_id, certain in nodes:
            if not certain and extra > 0:
                extra -= 1
                chosen.append(node_id)
            elif certain:
                chosen.append(node_id)
        exact = len(indexes) == 1 and len(chosen) == 1
        for node_id, index in zip(chosen, indexes, strict=False):
            entries.append((node_id, 2 * index, UNENROLLED, tx_ids[index] if exact else "", 0))
    return entries


FAMILY = Family(name="validators", columns=COLUMNS, genesis=project_genesis, block=project_block)
