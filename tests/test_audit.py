"""`tally verify` (writes/audit.py, api/cli_compliance.py): a log with every event kind passes, with and without
signature checks; a byte flipped inside the SQLite store, a deleted event and two reordered events are each found
and located; an event that the rules would not produce is found even when its hash chain is rebuilt around it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from accelerators.verify import BatchVerifier, TrustingVerifier
from api.cli import main
from schemas.events import LOG_ID, SCHEMA_VERSION, BlockApplied, LedgerEvent
from schemas.settings import Settings
from tests.rich_log import EVERY
from writes.audit import Auditor
from writes.service import LedgerService, load_reserves_secret


@pytest.fixture
def log_dir(rich_log: Path) -> Path:
    return rich_log


@pytest.fixture
def copy_of(log_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    target.mkdir()
    for name in ("events.sqlite", "reserves.key"):
        (target / name).write_bytes((log_dir / name).read_bytes())
    return target


def events_of(data_dir: Path) -> Iterator[tuple[int, LedgerEvent]]:
    service = LedgerService(Settings(data_dir=data_dir, verify_workers=1, reserves_every_blocks=EVERY))
    try:
        for n in service.notifications():
            yield n.id, service.app.mapper.to_domain_event(n)
    finally:
        service.close()


def audit(data_dir: Path, *, signatures: bool = True, secret: bool = True) -> Any:
    verifier = BatchVerifier(1) if signatures else TrustingVerifier()
    key = load_reserves_secret(data_dir / "reserves.key") if secret else None
    auditor = Auditor(verifier, reserves_every_blocks=EVERY, reserves_secret=key)
    for position, event in events_of(data_dir):
        auditor.feed(position, event)
    return auditor.finish()


def verify_cli(data_dir: Path, *args: str) -> Any:
    return CliRunner().invoke(
        main, ["verify", "--data-dir", str(data_dir), "--reserves-every-blocks", str(EVERY), *args]
    )


def test_a_log_with_every_kind_of_event_verifies(log_dir: Path) -> None:
    kinds = {type(e).KIND for _, e in events_of(log_dir)}
    assert kinds >= {
        "genesis_accepted", "block_applied", "block_recorded", "chain_reorganized", "block_reverted",
        "block_reapplied", "vote_accepted", "block_finalized", "reserves_attested",
    }
    for signatures in (True, False):
        for secret in (True, False):
            report = audit(log_dir, signatures=signatures, secret=secret)
            assert report.ok, report.findings
            assert report.events == len(list(events_of(log_dir)))
    result = verify_cli(log_dir)
    assert result.exit_code == 0, result.output
    assert "hash chain intact, signatures checked, attestation roots checked" in result.output
    result = verify_cli(log_dir, "--no-signatures")
    assert result.exit_code == 0 and "signatures NOT checked" in result.output


def _rows(data_dir: Path) -> tuple[sqlite3.Connection, list[tuple[int, int, bytes]]]:
    db = sqlite3.connect(data_dir / "events.sqlite")
    rows = db.execute("SELECT rowid, originator_version, state FROM stored_events ORDER BY rowid").fetchall()
    return db, rows


def _fails_at(data_dir: Path, position: int, words: str) -> None:
    result = verify_cli(data_dir)
    assert result.exit_code == 1, result.output
    assert f"position {position}: " in result.output and words in result.output, result.output


def test_a_flipped_byte_in_the_store_is_found_where_it_is(copy_of: Path) -> None:
    db, rows = _rows(copy_of)
    rowid, _, state = next(r for r in rows[3:] if b'"height":' in r[2])
    # A digit inside the payload: still valid JSON, so the event decodes and the change must be detected.
    at = state.index(b'"height":') + len(b'"height":')
    changed = state[:at] + (b"7" if state[at:at + 1] != b"7" else b"8") + state[at + 1:]
    db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (changed, rowid))
    db.commit()
    _fails_at(copy_of, rowid, "")


def test_a_byte_that_breaks_the_json_is_found(copy_of: Path) -> None:
    db, rows = _rows(copy_of)
    rowid, _, state = rows[2]
    db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (state[:10] + b"\x00" + state[11:], rowid))
    db.commit()
    _fails_at(copy_of, rowid, "cannot be read")


def test_a_deleted_event_is_found(copy_of: Path) -> None:
    db, rows = _rows(copy_of)
    db.execute("DELETE FROM stored_events WHERE rowid = ?", (rows[5][0],))
    db.commit()
    _fails_at(copy_of, rows[6][0], "sequence number")


def test_two_reordered_events_are_found(copy_of: Path) -> None:
    db, rows = _rows(copy_of)
    (a, _, state_a), (b, _, state_b) = rows[6], rows[7]
    db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (state_b, a))
    db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (state_a, b))
    db.commit()
    _fails_at(copy_of, a, "")


def test_an_event_the_rules_would_not_produce_is_found_even_with_a_consistent_hash_chain(log_dir: Path) -> None:
    """A forger who rewrites the hash chain after changing a receipt still fails the re-derivation."""
    events = [e for _, e in events_of(log_dir)]
    target = next(i for i, e in enumerate(events) if isinstance(e, BlockApplied) and e.receipts)
    forged: list[LedgerEvent] = []
    prev = events[0].prev_hash
    for i, event in enumerate(events):
        payload = {**event.payload(), "prev_hash": prev}
        if i == target:
            payload["receipts"] = [["rejected", "bad_nonce"]] + payload["receipts"][1:]
        rebuilt = type(event)(
            originator_id=LOG_ID, originator_version=event.seq, timestamp=event.timestamp, **payload,
        )
        assert rebuilt.schema_version == SCHEMA_VERSION
        forged.append(rebuilt)
        prev = rebuilt.hash()
    auditor = Auditor(TrustingVerifier(), reserves_every_blocks=EVERY)
    for event in forged:
        auditor.feed(event.seq, event)
    report = auditor.finish()
    assert [f.position for f in report.findings] == [forged[target].seq]
    assert "receipts" in report.findings[0].problem
