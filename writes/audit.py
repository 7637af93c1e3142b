"""The audit behind `tally verify`: proof that the log is what DOMAIN.md's rules make of the commands it holds.

Pure except for the signature checks it delegates to the injected verifier. Fed the log's events in order, it
checks for every event:

1. its sequence number follows the one before (nothing deleted, inserted or reordered);
2. its `prev_hash` is the hash of the event before (nothing altered: any changed byte changes a hash);
3. it is exactly what the rules produce: each command the log holds (a genesis, a block, a vote, a request for a
   reserves attestation) is decided again against the state folded so far (every block signature, tx signature
   (batched over the verifier's workers), tx_root, tx id, rejection reason, receipt, reward, reorganization and
   finality re-derived), and the events it yields must equal the recorded ones, field by field;
4. DOMAIN.md's invariants hold on the canonical state after every event: CELL (balances + stakes = minted -
   burned), every bridged asset (liabilities = escrow), no negative balance, stake or reserve figure.

Attestation roots depend on the ledger's reserves secret (docs/decisions.md): with it, roots are recomputed too;
without, every other field of an attestation is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from accelerators.verify import BatchVerifier
from schemas.canonical import ZERO_HASH
from schemas.events import (
    BlockApplied,
    BlockRecorded,
    ChainReorganized,
    GenesisAccepted,
    LedgerEvent,
    ReservesAttested,
    VoteAccepted,
)
from schemas.reasons import Rejection
from writes.decide import Attestor, Draft, decide
from writes.state import ACTIVE, UNBONDING, ChainState, Ledger, fold

_NOT_PAYLOAD = ("prev_hash", "schema_version")
_SECRET_DEPENDENT = ("root",)  # fields of an attestation that need the reserves secret


@dataclass(frozen=True)
class Finding:
    position: int  # the event's place in the log (its sequence number where it is readable)
    problem: str


@dataclass
class AuditReport:
    events: int = 0
    commands: int = 0
    last_hash: str = ZERO_HASH
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


class Auditor:
    """Feed it every event in log order (`feed`), then `finish`; it stops at the first finding."""

    def __init__(
        self, verifier: BatchVerifier, *, reserves_every_blocks: int, reserves_secret: bytes | None = None
    ) -> None:
        """`reserves_every_blocks` is the attestation period the ledger ran with (its settings: the log does not
        record it). Without the secret, attestations are re-derived with a stand-in and compared without root."""
        self.verifier = verifier
        self.roots_checked = reserves_secret is not None
        self.attestor = Attestor(reserves_secret or bytes(32), reserves_every_blocks)
        self.ledger = Ledger()
        self.report = AuditReport()
        self._expected: deque[Draft] = deque()
        self._held: list[tuple[int, LedgerEvent]] = []  # a reorganization's events, until its block arrives
        self._sums: dict[str, dict[str, int]] = {}  # chain -> asset -> sum of balances

    @property
    def stopped(self) -> bool:
        return bool(self.report.findings)

    def fail(self, position: int, problem: str) -> None:
        self.report.findings.append(Finding(position, problem))

    def feed_undecodable(self, position: int, error: str) -> None:
        self.fail(position, f"the stored event cannot be read: {error}")

    def feed(self, position: int, event: LedgerEvent) -> None:
        if self.stopped:
            return
        expected_seq = self.ledger.seq + len(self._held) + 1
        if event.seq != expected_seq:
            self.fail(position, f"sequence number {event.seq} where {expected_seq} was due: an event is missing,"
                                " inserted or out of order")
            return
        last = self._held[-1][1].hash() if self._held else self.ledger.last_hash
        if event.prev_hash != last:
            self.fail(position, "prev_hash is not the hash of the event before: this event or the one before it"
                                " was altered")
            return
        if self._expected:
            self._check_expected(position, event)
            return
        if self._held or isinstance(event, ChainReorganized):
            # A reorganization made by a block: its events come first, the block's BlockApplied last.
            self._held.append((position, event))
            if isinstance(event, BlockApplied):
                held, self._held = self._held, []
                self._decide_and_check(held, event.block)
            return
        command = _command_of(event)
        if command is None:
            self.fail(position, f"a {event.KIND} event that no command in the log produces")
            return
        self._decide_and_check([(position, event)], command)

    def finish(self) -> AuditReport:
        if not self.stopped and (self._expected or self._held):
            missing = self._expected[0][0].KIND if self._expected else "block_applied"
            self.fail(self.ledger.seq + len(self._held) + 1, f"the log ends inside a command: {missing} is missing")
        return self.report

    # ------------------------------------------------------------------------------------------- internals

    def _decide_and_check(self, recorded: list[tuple[int, LedgerEvent]], command: Mapping[str, Any]) -> None:
        position = recorded[0][0]
        try:
            decision = decide(self.ledger, command, self.verifier, attestor=self.attestor)
        except Rejection as rejection:
            self.fail(position, f"holds a {command.get('kind')} that the rules reject: {rejection}")
            return
        self.report.commands += 1
        self._expected.extend(decision.events)
        for pos, event in recorded:
            self._check_expected(pos, event)
            if self.stopped:
                return

    def _check_expected(self, position: int, event: LedgerEvent) -> None:
        if not self._expected:
            self.fail(position, f"a {event.KIND} event that no command in the log produces")
            return
        cls, payload = self._expected.popleft()
        if type(event) is not cls:
            self.fail(position, f"a {event.KIND} event where the rules produce {cls.KIND}")
            return
        recorded = {k: v for k, v in event.payload().items() if k not in _NOT_PAYLOAD}
        derived = dict(payload)
        if isinstance(event, ReservesAttested) and not self.roots_checked:
            for key in _SECRET_DEPENDENT:
                recorded.pop(key, None)
                derived.pop(key, None)
        if recorded != derived:
            keys = sorted(k for k in recorded.keys() | derived.keys() if recorded.get(k) != derived.get(k))
            self.fail(position, f"{event.KIND} differs from what the rules produce in: {', '.join(keys)}")
            return
        self._fold(position, event)

    def _fold(self, position: int, event: LedgerEvent) -> None:
        ehash = event.hash()
        fold(self.ledger, event, ehash)
        self.report.events += 1
        self.report.last_hash = ehash
        chain = self.ledger.chains.get(event.chain_id)
        if chain is not None:
            problem = self._invariant_problem(chain, event)
            if problem:
                self.fail(position, f"after this event {problem}")

    def _invariant_problem(self, chain: ChainState, event: LedgerEvent) -> str:
        sums = self._sums.setdefault(chain.chain_id, {})
        touched: list[tuple[str, str]] = []
        if isinstance(event, GenesisAccepted):
            sums["CELL"] = sum(amount for _, amount in event.allocations)
        else:
            fx = getattr(event, "effects", None)
            if fx is None or isinstance(event, BlockRecorded):
                return ""
            sign = -1 if event.KIND == "block_reverted" else 1
            for address, asset, delta in fx["balances"]:
                sums[asset] = sums.get(asset, 0) + sign * delta
                touched.append((address, asset))
        for key in touched:
            if chain.balances.get(key, 0) < 0:
                return f"the balance of {key[1]} of {key[0]} is negative"
        stakes = sum(v.stake for v in chain.validators.values() if v.phase in (ACTIVE, UNBONDING))
        if any(v.stake < 0 for v in chain.validators.values()):
            return "a stake is negative"
        if sums.get("CELL", 0) + stakes != chain.minted - chain.burned:
            return (f"the CELL invariant fails: balances {sums.get('CELL', 0)} + stakes {stakes} != minted"
                    f" {chain.minted} - burned {chain.burned}")
        for asset, (deposited, withdrawn, pending) in chain.bridge.items():
            if min(deposited, withdrawn, pending) < 0:
                return f"a reserve figure of {asset} is negative"
            if sums.get(asset, 0) + pending != deposited - withdrawn:
                return f"liabilities of {asset} differ from its escrow"
        return ""


def _command_of(event: LedgerEvent) -> Mapping[str, Any] | None:
    """The command whose decision starts with this event, or None if no command starts with it."""
    if isinstance(event, GenesisAccepted):
        return event.genesis
    if isinstance(event, (BlockApplied, BlockRecorded)):
        return event.block
    if isinstance(event, VoteAccepted):
        return event.vote
    if isinstance(event, ReservesAttested) and event.cause == "request":
        return {"kind": "attest_reserves", "chain_id": event.chain_id, "asset": event.asset}
    return None
