"""The compliance commands of the `tally` CLI: `tally verify` (and, as they land, replay and export).

Registered on the main group by api/cli.py. The audit itself is writes/audit.py; this module reads the log and
prints.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from accelerators.verify import BatchVerifier, TrustingVerifier
from schemas.events import LedgerEvent
from schemas.settings import from_env
from writes.audit import Auditor, AuditReport

EXIT_BROKEN = 1
SECTION_EVENTS = 500


def read_log(app: Any, section: int = SECTION_EVENTS) -> Iterator[tuple[int, LedgerEvent | None, str]]:
    """(position, event or None, why it could not be read) for every notification, in order."""
    start = 1
    while True:
        notifications = app.recorder.select_notifications(start, section)
        for notification in notifications:
            try:
                yield notification.id, app.mapper.to_domain_event(notification), ""
            except Exception as error:  # noqa: BLE001 - a damaged row must be reported, whatever broke
                yield notification.id, None, f"{type(error).__name__}: {error}"
        if len(notifications) < section:
            return
        start = notifications[-1].id + 1


def audit_log(app: Any, auditor: Auditor) -> AuditReport:
    for position, event, error in read_log(app):
        if event is None:
            auditor.feed_undecodable(position, error)
        else:
            auditor.feed(position, event)
        if auditor.stopped:
            break
    return auditor.finish()


@click.command()
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="The data directory of `tally up` [default: ./data].",
)
@click.option("--no-signatures", is_flag=True, help="Take every signature as valid (faster; all else is checked).")
@click.option(
    "--reserves-secret", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
    help="The ledger's reserves secret, to recompute attestation roots [default: the data dir's, if present].",
)
@click.option(
    "--reserves-every-blocks", type=click.IntRange(min=0), default=None,
    help="The attestation period the ledger ran with [default: TALLY_RESERVES_EVERY_BLOCKS or 10].",
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Signature workers [default: all cores].")
def verify(
    data_dir: Path | None, no_signatures: bool, reserves_secret: Path | None, reserves_every_blocks: int | None,
    workers: int | None,
) -> None:
    """Prove the log unaltered: every hash-chain link, and every event exactly what DOMAIN.md's rules make of
    the commands the log holds (signatures, tx_root, receipts, effects, reorganizations, finality,
    attestations), with the invariants at every height. Prints the first bad position and why (exit 1)."""
    from writes.service import LedgerApplication

    settings = from_env(data_dir=data_dir, reserves_every_blocks=reserves_every_blocks)
    secret_path = reserves_secret or settings.reserves_secret_path
    secret = secret_path.read_bytes() if secret_path.exists() else None
    verifier = TrustingVerifier() if no_signatures else BatchVerifier(workers or settings.verify_workers)
    app = LedgerApplication(env=settings.event_store_env())
    started = time.perf_counter()
    try:
        auditor = Auditor(verifier, reserves_every_blocks=settings.reserves_every_blocks, reserves_secret=secret)
        report = audit_log(app, auditor)
    finally:
        app.close()
        verifier.close()
    elapsed = time.perf_counter() - started
    for finding in report.findings:
        click.echo(f"tally verify: position {finding.position}: {finding.problem}", err=True)
    if not report.ok:
        sys.exit(EXIT_BROKEN)
    checked = "signatures checked" if not no_signatures else "signatures NOT checked"
    roots = "attestation roots checked" if secret is not None else "attestation roots not checked (no secret)"
    rate = report.events / elapsed if elapsed > 0 else 0.0
    click.echo(
        f"tally verify: {report.events} events, {report.commands} commands re-derived, hash chain intact, "
        f"{checked}, {roots}; last hash {report.last_hash} ({rate:,.0f} events/s)"
    )


COMMANDS = (verify,)
