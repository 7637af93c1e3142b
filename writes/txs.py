"""Applying a valid block's transactions (DOMAIN.md, Transactions, Validators, Slashing; Precise rules: Inside a
block). Pure: reads the state after the block's parent on its own branch (`BranchView`) and returns the receipts
and the block's effects, never changing the state. `evolve` applies the effects once they are saved.

Inside a block, in this order: the txs in order, each applied or rejected with the first reason in DOMAIN.md's
order (a rejected tx has no effect at all); then the reward and the fees of applied txs to the proposer's operator;
then the release of unbonding stakes whose `unbond_at_ms` is at or before the block's timestamp.

The effects (schemas/events.py) also record every validator whose record changed, before and after, and the
offences slashed, so that a revert restores them exactly; `slashes` details every slash tx for the views.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from accelerators.verify import verify_one
from schemas.canonical import canonical_bytes
from schemas.limits import AMOUNT_MAX
from schemas.reasons import Rejection
from writes.state import ACTIVE, RELEASED, UNBONDING, BranchView, Validator

CELL = "CELL"


class BlockState:
    """The state as the block changes it, over the untouched state after its parent."""

    def __init__(self, base: BranchView, height: int, timestamp_ms: int) -> None:
        self.base = base
        self.params = base.params
        self.height = height
        self.timestamp_ms = timestamp_ms
        self.balances: dict[tuple[str, str], int] = {}
        self.nonces: dict[str, int] = {}
        self.validators: dict[str, Validator] = {}  # changed or new in this block (copies)
        self.gpu: dict[str, str | None] = {}
        self.offences: list[list[Any]] = []
        self.reserves: dict[str, dict[str, Any]] = {}  # reserve records created or changed in this block
        self.bridge: dict[str, list[int]] = {}  # per asset [deposited, withdrawn, pending] as the block leaves them
        self.burned = 0
        self.last_slash = (0, 0)  # (slashed, to the reporter) of the last applied slash

    def balance(self, address: str, asset: str) -> int:
        key = (address, asset)
        return self.balances[key] if key in self.balances else self.base.balance(address, asset)

    def add(self, address: str, asset: str, delta: int) -> None:
        self.balances[(address, asset)] = self.balance(address, asset) + delta

    def next_nonce(self, address: str) -> int:
        return self.nonces[address] if address in self.nonces else self.base.next_nonce(address)

    def bump_nonce(self, address: str) -> None:
        self.nonces[address] = self.next_nonce(address) + 1

    def validator(self, node_id: str) -> Validator | None:
        if node_id in self.validators:
            return self.validators[node_id]
        return self.base.validator(node_id)

    def all_validators(self) -> Iterator[Validator]:
        for validator in self.base.validators():
            if validator.node_id not in self.validators:
                yield validator
        yield from self.validators.values()

    def change(self, node_id: str) -> Validator:
        """The validator, copied into this block's changes so that it can be modified."""
        if node_id not in self.validators:
            current = self.base.validator(node_id)
            assert current is not None
            self.validators[node_id] = Validator.from_record(current.record())
        return self.validators[node_id]

    def gpu_holder(self, gpu_uuid: str) -> str | None:
        return self.gpu[gpu_uuid] if gpu_uuid in self.gpu else self.base.gpu_holder(gpu_uuid)

    def has_offence(self, node_id: str, height: int) -> bool:
        return [node_id, height] in self.offences or self.base.has_offence(node_id, height)

    def reserve(self, reserve_id: str) -> dict[str, Any] | None:
        return self.reserves[reserve_id] if reserve_id in self.reserves else self.base.reserve(reserve_id)

    def bridge_totals(self, asset: str) -> list[int]:
        return self.bridge[asset] if asset in self.bridge else self.base.bridge_totals(asset)

    def move_bridge(self, asset: str, deposited: int = 0, withdrawn: int = 0, pending: int = 0) -> None:
        d, w, p = self.bridge_totals(asset)
        self.bridge[asset] = [d + deposited, w + withdrawn, p + pending]

    def has_asset(self, asset: str) -> bool:
        return asset == CELL or self.bridge_totals(asset)[0] > 0

    def effects_of_reserves(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """(reserves [[reserve_id, before, after]], bridge [[asset, d deposited, d withdrawn, d pending]])."""
        reserves = [[rid, self.base.reserve(rid), record] for rid, record in self.reserves.items()]
        bridge = []
        for asset, totals in sorted(self.bridge.items()):
            deltas = [t - b for t, b in zip(totals, self.base.bridge_totals(asset), strict=True)]
            if any(deltas):
                bridge.append([asset, *deltas])
        return reserves, bridge

    def effects_of_validators(self) -> list[list[Any]]:
        changes = []
        for node_id, validator in self.validators.items():
            before = self.base.validator(node_id)
            after = validator.record()
            old = None if before is None else before.record()
            if old != after:
                changes.append([node_id, old, after])
        return changes


def apply_txs(base: BranchView, block: Mapping[str, Any]) -> tuple[list[list[str]], dict[str, Any]]:
    """Receipts and effects of a valid block on its branch. Raises Rejection(amount_overflow) when the reward,
    the fees or a release would overflow (the block is invalid)."""
    state = BlockState(base, block["height"], block["timestamp_ms"])
    receipts: list[list[str]] = []
    fees = 0
    volume: dict[str, int] = {}
    slashes: list[list[Any]] = []
    for index, tx in enumerate(block["txs"]):
        kind = tx["kind"]
        reason = _RULES[kind](state, tx)
        if kind == "slash":
            slashes.append(_slash_record(state, tx, index, reason))
        if reason:
            receipts.append(["rejected", reason])
            continue
        receipts.append(["applied", ""])
        if kind == "transfer":
            fees += tx["fee"]
            volume[tx["asset"]] = volume.get(tx["asset"], 0) + tx["amount"]
    proposer = state.validator(block["proposer"])
    assert proposer is not None  # checked with the header
    reward = state.params["block_reward"]
    if state.balance(proposer.operator, CELL) + reward + fees > AMOUNT_MAX:
        raise Rejection("amount_overflow", "the reward and fees would take the proposer's operator to 2**63")
    state.add(proposer.operator, CELL, reward + fees)
    releases = _releases(state)
    reserves, bridge = state.effects_of_reserves()
    effects = {
        "balances": [
            [a, s, state.balance(a, s) - base.balance(a, s)] for a, s in state.balances
            if state.balance(a, s) != base.balance(a, s)
        ],
        "nonces": [[a, base.next_nonce(a), n] for a, n in state.nonces.items()],
        "reward": reward, "fees": fees, "minted": reward, "burned": state.burned,
        "releases": releases, "volume": [[asset, amount] for asset, amount in sorted(volume.items())],
        "validators": state.effects_of_validators(), "offences": state.offences, "slashes": slashes,
        "reserves": reserves, "bridge": bridge,
    }
    return receipts, effects


# ------------------------------------------------------------------------------------------ transfer


def _transfer(state: BlockState, tx: Mapping[str, Any]) -> str:
    """Applies the transfer, or returns the first rejection reason in DOMAIN.md's order."""
    sender, to, asset, amount, fee = tx["from"], tx["to"], tx["asset"], tx["amount"], tx["fee"]
    if tx["nonce"] != state.next_nonce(sender):
        return "bad_nonce"
    if not state.has_asset(asset):
        return "unknown_asset"
    cell_needed = fee + (amount if asset == CELL else 0)
    if state.balance(sender, CELL) < cell_needed or state.balance(sender, asset) < amount:
        return "insufficient_funds"
    if to != sender and state.balance(to, asset) + amount > AMOUNT_MAX:
        return "amount_overflow"
    state.add(sender, CELL, -fee)
    if to != sender:  # a self-transfer costs only the fee
        state.add(sender, asset, -amount)
        state.add(to, asset, amount)
    state.bump_nonce(sender)
    return ""


# ---------------------------------------------------------------------------------------- validators


def _enroll(state: BlockState, tx: Mapping[str, Any]) -> str:
    operator, node_id, gpu, stake = tx["operator"], tx["node_id"], tx["gpu_uuid"], tx["stake"]
    if tx["nonce"] != state.next_nonce(operator):
        return "bad_nonce"
    if stake < state.params["min_stake"]:
        return "stake_below_minimum"
    if state.validator(node_id) is not None:  # never reused, whatever its phase
        return "node_id_taken"
    if state.gpu_holder(gpu) is not None:
        return "gpu_uuid_bound"
    if state.balance(operator, CELL) < stake:
        return "insufficient_funds"
    key = tx["validator_key"]
    state.add(operator, CELL, -stake)
    state.validators[node_id] = Validator(
        node_id, operator, key["alg"], bytes.fromhex(key["pk"]), gpu, stake, ACTIVE, None, state.height
    )
    state.gpu[gpu] = node_id
    state.bump_nonce(operator)
    return ""


def _unenroll(state: BlockState, tx: Mapping[str, Any]) -> str:
    operator, node_id = tx["operator"], tx["node_id"]
    if tx["nonce"] != state.next_nonce(operator):
        return "bad_nonce"
    current = state.validator(node_id)
    if current is None:
        return "unknown_validator"
    if current.operator != operator:
        return "not_operator"
    if current.phase != ACTIVE:
        return "not_active"
    validator = state.change(node_id)
    validator.phase, validator.unbond_at_ms = UNBONDING, state.timestamp_ms + state.params["unbond_ms"]
    state.bump_nonce(operator)
    return ""


def _slash(state: BlockState, tx: Mapping[str, Any]) -> str:
    reporter, node_id = tx["reporter"], tx["node_id"]
    if tx["nonce"] != state.next_nonce(reporter):
        return "bad_nonce"
    current = state.validator(node_id)
    if current is None:
        return "unknown_validator"
    if current.stake <= 0:
        return "not_slashable"
    if evidence_problem(tx, current, state.base.chain.chain_id):
        return "invalid_evidence"
    height = tx["evidence"][0]["height"]
    if state.has_offence(node_id, height):
        return "duplicate_offence"
    slashed, to_reporter = slash_amounts(current.stake, state.params)
    if state.balance(reporter, CELL) + to_reporter > AMOUNT_MAX:
        return "amount_overflow"
    state.last_slash = (slashed, to_reporter)
    validator = state.change(node_id)
    validator.stake -= slashed
    state.add(reporter, CELL, to_reporter)
    state.burned += slashed - to_reporter
    state.offences.append([node_id, height])
    if validator.stake < state.params["min_stake"]:
        # Auto-revoke: an active validator starts unbonding now; an unbonding one keeps its window. Either way
        # its gpu_uuid is free at once.
        if validator.phase == ACTIVE:
            validator.phase, validator.unbond_at_ms = UNBONDING, state.timestamp_ms + state.params["unbond_ms"]
        if not validator.revoked:
            validator.revoked = True
            if state.gpu_holder(validator.gpu_uuid) == node_id:
                state.gpu[validator.gpu_uuid] = None
    state.bump_nonce(reporter)
    return ""


def slash_amounts(stake: int, params: Mapping[str, int]) -> tuple[int, int]:
    """(slashed, to the reporter); the rest of `slashed` is burned."""
    slashed = stake * params["slash_bps"] // 10_000
    return slashed, slashed * params["reporter_bps"] // 10_000


def evidence_problem(tx: Mapping[str, Any], validator: Validator, chain_id: str) -> str:
    """Why the two votes of a slash tx are not evidence against `validator`, or '' when they are.

    DOMAIN.md's invalid_evidence: node_ids that differ between the votes or from the tx, different heights,
    equal block hashes, a vote chain_id other than the block's, or a signature that fails under the key.
    """
    a, b = tx["evidence"]
    node_id = tx["node_id"]
    if a["node_id"] != node_id or b["node_id"] != node_id:
        return f"both votes must be by {node_id!r}"
    if a["height"] != b["height"]:
        return "the votes are for different heights"
    if a["block_hash"] == b["block_hash"]:
        return "the votes are for the same block"
    if a["chain_id"] != chain_id or b["chain_id"] != chain_id:
        return f"a vote is for another chain than {chain_id!r}"
    for i, vote in enumerate((a, b)):
        message = canonical_bytes(vote, drop_sig=True)
        if not verify_one(validator.alg, validator.pk, message, bytes.fromhex(vote["sig"])):
            return f"vote {i} does not verify under {node_id!r}'s key"
    return ""


def _slash_record(state: BlockState, tx: Mapping[str, Any], index: int, reason: str) -> list[Any]:
    """[index, node_id, offence height, slashed, to_reporter, burned, revoked] of a slash tx; zeros if rejected."""
    height = tx["evidence"][0]["height"]
    if reason:
        return [index, tx["node_id"], height, 0, 0, 0, False]
    slashed, to_reporter = state.last_slash
    revoked = state.validators[tx["node_id"]].revoked
    return [index, tx["node_id"], height, slashed, to_reporter, slashed - to_reporter, revoked]


# ------------------------------------------------------------------------------------------ releases


def _releases(state: BlockState) -> list[list[Any]]:
    """Unbonding stakes whose window ended by this block's timestamp go back to their operators."""
    released = []
    for v in list(state.all_validators()):
        if v.phase == UNBONDING and v.unbond_at_ms is not None and v.unbond_at_ms <= state.timestamp_ms:
            if state.balance(v.operator, CELL) + v.stake > AMOUNT_MAX:
                raise Rejection("amount_overflow", f"releasing {v.node_id}'s stake would overflow its operator")
            state.add(v.operator, CELL, v.stake)
            released.append([v.node_id, v.stake])
            validator = state.change(v.node_id)
            validator.phase, validator.stake = RELEASED, 0
            if state.gpu_holder(validator.gpu_uuid) == v.node_id:
                state.gpu[validator.gpu_uuid] = None
    return released


# ---------------------------------------------------------------------------------------------- bridge
#
# A reserve record: reserve_id, kind ("deposit" | "withdrawal"), asset, amount, owner (the credited account of a
# deposit, the debited one of a withdrawal), status ("deposited" | "pending" | "confirmed" | "rejected"),
# chain (from_chain of a deposit, to_chain of a withdrawal), external_address (a withdrawal's destination),
# external_tx (a deposit's source tx, a confirmation's payout tx), reason (of a rejection), relayer (the relayer
# that signed the deposit, confirmation or rejection), height (created), updated_height.


def _bridge_deposit(state: BlockState, tx: Mapping[str, Any]) -> str:
    relayer, reserve_id, asset, to, amount = tx["relayer"], tx["reserve_id"], tx["asset"], tx["to"], tx["amount"]
    if relayer not in state.base.relayer_addresses:
        return "not_relayer"
    if state.reserve(reserve_id) is not None:
        return "duplicate_reserve_id"
    if state.balance(to, asset) + amount > AMOUNT_MAX or state.bridge_totals(asset)[0] + amount > AMOUNT_MAX:
        return "amount_overflow"
    state.add(to, asset, amount)
    state.move_bridge(asset, deposited=amount)
    state.reserves[reserve_id] = {
        "reserve_id": reserve_id, "kind": "deposit", "asset": asset, "amount": amount, "owner": to,
        "status": "deposited", "chain": tx["from_chain"], "external_address": "", "external_tx": tx["external_tx"],
        "reason": "", "relayer": relayer, "height": state.height, "updated_height": state.height,
    }
    return ""


def _withdraw_request(state: BlockState, tx: Mapping[str, Any]) -> str:
    owner, reserve_id, asset, amount = tx["owner"], tx["reserve_id"], tx["asset"], tx["amount"]
    if tx["nonce"] != state.next_nonce(owner):
        return "bad_nonce"
    if state.reserve(reserve_id) is not None:
        return "duplicate_reserve_id"
    if not state.has_asset(asset):
        return "unknown_asset"
    if state.balance(owner, asset) < amount:
        return "insufficient_funds"
    if state.bridge_totals(asset)[2] + amount > AMOUNT_MAX:
        return "amount_overflow"
    state.add(owner, asset, -amount)
    state.move_bridge(asset, pending=amount)
    state.reserves[reserve_id] = {
        "reserve_id": reserve_id, "kind": "withdrawal", "asset": asset, "amount": amount, "owner": owner,
        "status": "pending", "chain": tx["to_chain"], "external_address": tx["external_address"],
        "external_tx": "", "reason": "", "relayer": "", "height": state.height, "updated_height": state.height,
    }
    state.bump_nonce(owner)
    return ""


def _pending_withdrawal(state: BlockState, tx: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """The shared checks of a confirm and a reject: not_relayer, unknown_reserve_id, not_pending."""
    if tx["relayer"] not in state.base.relayer_addresses:
        return "not_relayer", None
    record = state.reserve(tx["reserve_id"])
    if record is None:
        return "unknown_reserve_id", None
    if record["status"] != "pending":  # a deposit is never pending
        return "not_pending", None
    return "", record


def _withdraw_confirm(state: BlockState, tx: Mapping[str, Any]) -> str:
    reason, record = _pending_withdrawal(state, tx)
    if record is None:
        return reason
    asset, amount = record["asset"], record["amount"]
    if state.bridge_totals(asset)[1] + amount > AMOUNT_MAX:
        return "amount_overflow"
    state.move_bridge(asset, withdrawn=amount, pending=-amount)
    state.reserves[record["reserve_id"]] = {
        **record, "status": "confirmed", "external_tx": tx["external_tx"], "relayer": tx["relayer"],
        "updated_height": state.height,
    }
    return ""


def _withdraw_reject(state: BlockState, tx: Mapping[str, Any]) -> str:
    reason, record = _pending_withdrawal(state, tx)
    if record is None:
        return reason
    asset, amount, owner = record["asset"], record["amount"], record["owner"]
    if state.balance(owner, asset) + amount > AMOUNT_MAX:
        return "amount_overflow"
    state.add(owner, asset, amount)
    state.move_bridge(asset, pending=-amount)
    state.reserves[record["reserve_id"]] = {
        **record, "status": "rejected", "reason": tx["reason"], "relayer": tx["relayer"],
        "updated_height": state.height,
    }
    return ""


_RULES: dict[str, Callable[[BlockState, Mapping[str, Any]], str]] = {
    "transfer": _transfer,
    "enroll": _enroll,
    "unenroll": _unenroll,
    "slash": _slash,
    "bridge_deposit": _bridge_deposit,
    "withdraw_request": _withdraw_request,
    "withdraw_confirm": _withdraw_confirm,
    "withdraw_reject": _withdraw_reject,
}
