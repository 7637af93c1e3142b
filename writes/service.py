"""The application service: load the fold, decide, seal into the hash chain, save atomically, fold.

One writer per log. `submit` is serialised by a lock; a command's events (a block and the finality it
triggers, say) are saved in one transaction of the event store, so a crash leaves all or none of them.
The in-memory state changes only after the save returned, so a failed save changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from eventsourcing.application import Application
from eventsourcing.persistence import Notification, Transcoder

from accelerators.verify import BatchVerifier
from schemas.events import LOG_ID, SCHEMA_VERSION, LedgerEvent
from schemas.reasons import Rejection
from schemas.settings import Settings
from writes.decide import Attestor, Decision, Draft, decide
from writes.inspect import Inspection
from writes.state import Ledger, Validator, fold

log = logging.getLogger(__name__)

LOAD_SECTION_EVENTS = 500


class LogTranscoder(Transcoder):
    """JSON for stored events, through orjson: a block event carries ~10 MB of hex, which the standard
    library encodes ~10x slower. Falls back to `json` for integers beyond 64 bits (totals may be)."""

    def encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(obj)
        except TypeError:
            return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_iso).encode("utf-8")

    def decode(self, data: bytes) -> Any:
        obj = orjson.loads(data)
        stamp = obj.get("timestamp")
        if isinstance(stamp, str):
            obj["timestamp"] = datetime.fromisoformat(stamp)
        return obj


def _iso(obj: Any) -> str:
    if isinstance(obj, datetime):
        return obj.isoformat()
    raise TypeError(f"cannot store {type(obj).__name__}")


class LedgerApplication(Application[Any]):
    """The eventsourcing application holding the ledger log (one stream, `LOG_ID`)."""

    name = "tally"

    def construct_transcoder(self) -> Transcoder:
        return LogTranscoder()


class LedgerService:
    def __init__(self, settings: Settings, verifier: BatchVerifier | None = None) -> None:
        self.settings = settings
        if settings.event_store == "sqlite":
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.app = LedgerApplication(env=settings.event_store_env())
        self.verifier = verifier or BatchVerifier(settings.verify_workers)
        self.attestor = Attestor(load_reserves_secret(settings.reserves_secret_path), settings.reserves_every_blocks)
        self.ledger = Ledger()
        self._lock = threading.Lock()
        self._load()

    # ------------------------------------------------------------------------------------------ reads

    def notifications(self, start: int = 1, limit: int = LOAD_SECTION_EVENTS) -> Iterator[Notification]:
        """Every notification from `start` on, read in sections."""
        while True:
            section = self.app.recorder.select_notifications(start, limit)
            yield from section
            if len(section) < limit:
                return
            start = section[-1].id + 1

    def max_position(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def head(self, chain_id: str) -> tuple[int, str, int] | None:
        chain = self.ledger.chains.get(chain_id)
        if chain is None:
            return None
        tip = chain.tip
        return tip.height, tip.hash, tip.timestamp_ms

    def next_nonce(self, chain_id: str, address: str) -> int:
        return self.ledger.chains[chain_id].next_nonce(address)

    def balance(self, chain_id: str, address: str, asset: str) -> int:
        return self.ledger.chains[chain_id].balance(address, asset)

    def validators(self, chain_id: str) -> list[Validator]:
        """Every validator of the chain after its canonical tip, any phase ([] for an unknown chain). A snapshot:
        the fold replaces a changed validator's record, never changes one in place."""
        with self._lock:
            chain = self.ledger.chains.get(chain_id)
            return [] if chain is None else list(chain.validators.values())

    # ----------------------------------------------------------------------------------------- writes

    def submit(self, command: Any) -> dict[str, Any]:
        """Decide and, when accepted, append. Returns the per-command result (docs/architecture.md)."""
        with self._lock:
            return self._submit(command, None)

    def submit_many(self, commands: Sequence[Any]) -> list[dict[str, Any]]:
        """Each command in order, exactly as `submit` would answer it; the signatures of the next block
        start verifying in the workers while the current command is decided and saved."""
        results = []
        with self._lock:
            ahead = self._start_inspection(commands[0]) if commands else None
            for i, command in enumerate(commands):
                current = ahead
                ahead = self._start_inspection(commands[i + 1]) if i + 1 < len(commands) else None
                results.append(self._submit(command, current))
        return results

    def close(self) -> None:
        self.verifier.close()
        self.app.close()

    # -------------------------------------------------------------------------------------- internals

    def _submit(self, command: Any, inspection: Inspection | None) -> dict[str, Any]:
        try:
            decision = decide(self.ledger, command, self.verifier, inspection, self.attestor)
        except Rejection as rejection:
            kind = command.get("kind") if isinstance(command, dict) else None
            return {"status": "rejected", "kind": kind if isinstance(kind, str) else None, **rejection.as_dict()}
        self._append(decision)
        return decision.result

    def _start_inspection(self, command: Any) -> Inspection | None:
        """Start checking a block's tx signatures early; only for blocks of a known chain within its limit."""
        if not (isinstance(command, dict) and command.get("kind") == "block"):
            return None
        chain = self.ledger.chains.get(command.get("chain_id"))  # type: ignore[arg-type]
        txs = command.get("txs")
        if chain is None or not isinstance(txs, list) or not txs or len(txs) > chain.params["max_block_txs"]:
            return None
        return Inspection(txs, self.verifier)

    def _append(self, decision: Decision) -> None:
        if not decision.events:
            return
        sealed = seal(self.ledger, decision.events)
        self.app.save(*(event for event, _ in sealed))
        for event, ehash in sealed:
            fold(self.ledger, event, ehash)

    def _load(self) -> None:
        """Fold the whole log. Only the last event is hashed here: `tally verify` checks every link."""
        last: LedgerEvent | None = None
        for notification in self.notifications():
            event = self.app.mapper.to_domain_event(notification)
            assert isinstance(event, LedgerEvent)
            fold(self.ledger, event, "")
            last = event
        if last is not None:
            self.ledger.last_hash = last.hash()
            log.info("loaded %d events; head hash %s", self.ledger.seq, self.ledger.last_hash)


def seal(ledger: Ledger, drafts: Sequence[Draft]) -> list[tuple[LedgerEvent, str]]:
    """Give each draft its place in the log after `ledger`'s last event and the hash of the event before it."""
    sealed = []
    seq, prev = ledger.seq, ledger.last_hash
    for cls, payload in drafts:
        seq += 1
        event = cls(
            originator_id=LOG_ID, originator_version=seq, timestamp=cls.create_timestamp(),
            prev_hash=prev, schema_version=SCHEMA_VERSION, **payload,
        )
        prev = event.hash()
        sealed.append((event, prev))
    return sealed


RESERVES_SECRET_BYTES = 32


def load_reserves_secret(path: Path) -> bytes:
    """The proof-of-reserves blinding secret (writes/reserves.py), created on first use, readable by the owner only.

    Losing it loses nothing from the log, but account holders could no longer recompute their blinded ids for
    past attestations: back it up with the data directory.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(RESERVES_SECRET_BYTES))
    secret = path.read_bytes()
    if len(secret) != RESERVES_SECRET_BYTES:
        raise ValueError(f"{path}: a reserves secret is {RESERVES_SECRET_BYTES} bytes, found {len(secret)}")
    return secret
