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
from schemas.canonical import ZERO_HASH
from schemas.events import LedgerEvent
from schemas.settings import from_env
from writes.audit import Auditor, AuditReport

EXIT_BROKEN = 1
SECTION_EVENTS = 500


def read_log(
    app: Any, section: int = SECTION_EVENTS, start: int = 1
) -> Iterator[tuple[int, LedgerEvent | None, str]]:
    """(position, event or None, why it could not be read) for every notification from `start`, in order."""
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


@click.command("export")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="The data directory of `tally up` [default: ./data].",
)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl", show_default=True)
@click.option("--from", "from_position", type=click.IntRange(min=1), default=1, help="First log position.")
@click.option("--to", "to_position", type=click.IntRange(min=1), default=None, help="Last log position.")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def export(data_dir: Path | None, fmt: str, from_position: int, to_position: int | None, out_dir: Path) -> None:
    """Write the log (or a range of positions) and a manifest to OUT_DIR, for `tally verify-export` or an
    auditor's own script (docs/compliance.md)."""
    from api.export import record, write_export
    from writes.service import LedgerApplication

    settings = from_env(data_dir=data_dir)
    app = LedgerApplication(env=settings.event_store_env())
    started = time.perf_counter()
    try:
        head_seq = app.recorder.max_notification_id() or 0
        head_hash = _hash_at(app, head_seq)

        def records() -> Iterator[dict[str, Any]]:
            for position, event, error in read_log(app, start=from_position):
                if to_position is not None and position > to_position:
                    return
                if event is None:
                    raise click.ClickException(f"position {position} cannot be read ({error}): run tally verify")
                yield record(position, event)

        try:
            summary = write_export(out_dir, records(), fmt=fmt, head=(head_seq, head_hash))
        except FileExistsError as error:
            raise click.ClickException(str(error)) from error
    finally:
        app.close()
    elapsed = time.perf_counter() - started
    rate = summary.bytes / elapsed / 1e6 if elapsed > 0 else 0.0
    click.echo(f"tally export: {summary.count} events, {summary.bytes:,} bytes into {out_dir} ({rate:,.1f} MB/s)")


def _hash_at(app: Any, position: int) -> str:
    if position == 0:
        return ZERO_HASH
    (notification,) = app.recorder.select_notifications(position, 1)
    return str(app.mapper.to_domain_event(notification).hash())


@click.command("verify-export")
@click.argument("export_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
def verify_export_command(export_dir: Path) -> None:
    """Check an export with nothing but its files: every hash recomputed, every link, the manifest."""
    from api.export import verify_export

    count, problems = verify_export(export_dir)
    for problem in problems:
        click.echo(f"tally verify-export: {problem}", err=True)
    if problems:
        sys.exit(EXIT_BROKEN)
    click.echo(f"tally verify-export: {count} events, every hash and link intact")


@click.command()
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="The data directory of `tally up` [default: ./data].",
)
@click.option("--into", "dsn", required=True, help="The projection store: chdb:///abs/path or http://host:8123.")
@click.option("--database", default="tally", show_default=True, help="The database in that store.")
@click.option("--from-position", type=click.IntRange(min=1), default=None,
              help="Start here (the store must be fresh or checkpointed just before) [default: resume].")
@click.option("--to-height", type=click.IntRange(min=0), default=None,
              help="Stop before the first block above this height: the views as they were then.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes that decode and project while this one writes (for cores to spare).")
def replay(data_dir: Path | None, dsn: str, database: str, from_position: int | None, to_height: int | None,
           workers: int) -> None:
    """Rebuild every projection from the log into a store: deterministic, resumable after an interruption."""
    from projections.replay import ReplayGap
    from projections.replay import replay as run_replay
    from projections.store import DEFAULT_DATABASE, ProjectionStore
    from writes.service import LedgerApplication

    settings = from_env(data_dir=data_dir)
    if dsn == settings.views_dsn and dsn.startswith("chdb:"):  # an embedded engine is one process's alone
        raise click.ClickException("that is the live views store of `tally up`: replay into another one")
    if dsn == settings.views_dsn and database == DEFAULT_DATABASE:
        raise click.ClickException(
            f"that is the live views database ({database} on the projection server): replay into another --database"
        )
    app = LedgerApplication(env=settings.event_store_env())
    try:
        store = ProjectionStore(dsn, database)
    except ValueError as error:
        app.close()
        raise click.ClickException(str(error)) from error
    try:
        total = max(0, (app.recorder.max_notification_id() or 0) - store.checkpoint())
        with click.progressbar(length=total, label="tally replay", show_eta=True, show_pos=True,
                               file=sys.stderr) as bar:
            done = [0]

            def advance(events: int) -> None:
                bar.update(events - done[0])
                done[0] = events

            result = run_replay(app, store, from_position=from_position, to_height=to_height, progress=advance,
                                workers=workers)
    except ReplayGap as error:
        raise click.ClickException(str(error)) from error
    finally:
        store.close()
        app.close()
    stop = f", stopped before height {to_height + 1}" if result.stopped_at_height and to_height is not None else ""
    click.echo(
        f"tally replay: positions {result.start}..{result.position}, {result.events} events"
        f" ({result.poison} unprojectable) in {result.seconds:.1f} s, {result.rate:,.0f} events/s{stop}"
    )


COMMANDS = (verify, export, verify_export_command, replay)
