"""The `tally` command line: `tally up` runs the whole embedded stack, `tally submit` posts a JSONL file.
The commands for operators and slashers (keys, enroll, unenroll, slash, evidence, validators) are in api/cli_txs.py.

`tally up` wires, in one process: the write side (LedgerService), the projection store on the chdb engine
under the data dir, the follower thread, the API on uvicorn and, unless --no-devnet, the devnet thread.
On SIGINT/SIGTERM it stops the API, then the devnet, then the follower, then closes the stores.

`tally submit` reads one JSON command per line, posts them in batches to `POST /v1/commands` and prints
one JSON result per line, in file order, each naming its `line`. Exit status: 0 all accepted, 1 any
rejected, 2 unreachable server.

`tally verify` walks the log and checks every link of its hash chain.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import signal
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click
import httpx
import uvicorn

from api.cli_compliance import COMMANDS as COMPLIANCE_COMMANDS
from api.cli_proofs import COMMANDS as PROOF_COMMANDS
from api.cli_txs import COMMANDS as TX_COMMANDS
from schemas.reasons import MALFORMED_COMMAND, PAYLOAD_TOO_LARGE, Rejection
from schemas.settings import Settings, from_env

EXIT_OK, EXIT_REJECTED, EXIT_UNREACHABLE = 0, 1, 2
# A batch stays well under the server's body limit: one slow giant request helps nobody.
SUBMIT_BATCH_BYTES_MAX = 8 * 1024 * 1024
SUBMIT_BATCH_COMMANDS_MAX = 1_000
SUBMIT_CONNECT_TIMEOUT_S = 5.0
SUBMIT_READ_TIMEOUT_S = 600.0  # a batch of full blocks is verified before the answer comes back

log = logging.getLogger("tally")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """tally: an event-sourced ledger for proof-of-stake chains with post-quantum signatures."""


# ---------------------------------------------------------------- tally submit: pure parts


@dataclass(frozen=True)
class Entry:
    """One non-blank line of the file: its raw JSON text, or the result that refuses it."""

    lineno: int
    raw: str | None
    result: dict[str, Any] | None = None


def parse_lines(lines: Iterable[str]) -> Iterator[Entry]:
    """Blank lines are skipped; a line that is not JSON becomes its own malformed_command result."""
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            json.loads(text)
        except ValueError as exc:
            refusal = Rejection(MALFORMED_COMMAND, f"line {lineno} is not JSON: {exc}")
            yield Entry(lineno, None, {**refusal.as_dict(), "kind": None})
            continue
        yield Entry(lineno, text)


def batches(
    entries: Iterable[Entry],
    *,
    commands_max: int = SUBMIT_BATCH_COMMANDS_MAX,
    bytes_max: int = SUBMIT_BATCH_BYTES_MAX,
) -> Iterator[list[Entry]]:
    """Consecutive entries grouped so that each group's commands fit one request; order is kept."""
    group: list[Entry] = []
    count = size = 0
    for entry in entries:
        if entry.raw is not None:
            if count and (count + 1 > commands_max or size + len(entry.raw) + 1 > bytes_max):
                yield group
                group, count, size = [], 0, 0
            count += 1
            size += len(entry.raw) + 1
        group.append(entry)
    if group:
        yield group


def request_body(group: list[Entry]) -> bytes:
    """The commands' own text in a JSON array: no re-encoding, so the server sees exactly the file's bytes."""
    return ("[" + ",".join(e.raw for e in group if e.raw is not None) + "]").encode("utf-8")


def merge_results(group: list[Entry], answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each entry's result in file order, naming its line: its own refusal, or the server's answer (whose
    `index` counts within one request, which means nothing to the reader of the file, so it is dropped)."""
    it = iter(answers)
    merged = []
    for e in group:
        result = e.result if e.result is not None else next(it)
        merged.append({"line": e.lineno, **{k: v for k, v in result.items() if k not in ("line", "index")}})
    return merged


def exit_status(results: Iterable[dict[str, Any]]) -> int:
    return EXIT_OK if all(r.get("status") == "accepted" for r in results) else EXIT_REJECTED


# ---------------------------------------------------------------- tally submit: I/O


class Unreachable(Exception):
    """The server could not be reached or answered something that is not a list of results."""


def post_group(client: httpx.Client, url: str, group: list[Entry]) -> list[dict[str, Any]]:
    wanted = sum(1 for e in group if e.raw is not None)
    if not wanted:
        return []
    try:
        response = client.post(url, content=request_body(group), headers={"content-type": "application/json"})
    except httpx.HTTPError as exc:
        raise Unreachable(f"cannot reach {url}: {exc}") from exc
    if response.status_code == 413:
        refusal = Rejection(PAYLOAD_TOO_LARGE, f"the batch of {wanted} command(s) exceeds the server's body limit")
        return [{**refusal.as_dict(), "kind": None}] * wanted
    try:
        body = response.json()
    except ValueError:
        body = None
    answers = body.get("results") if isinstance(body, dict) else body
    if not isinstance(answers, list) or len(answers) != wanted:
        raise Unreachable(f"{url} answered HTTP {response.status_code}: {response.text[:300]}")
    return answers


def submit_file(client: httpx.Client, url: str, lines: Iterable[str], out: IO[str]) -> int:
    """Post every command, print every result, return the exit status."""
    status = EXIT_OK
    for group in batches(parse_lines(lines)):
        results = merge_results(group, post_group(client, url, group))
        for result in results:
            out.write(json.dumps(result, separators=(",", ":")) + "\n")
        out.flush()
        status = max(status, exit_status(results))
    return status


@main.command()
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--url", default=None, help="The ledger's base URL [default: http://TALLY_HOST:TALLY_PORT].")
def submit(file: IO[str], url: str | None) -> None:
    """Post FILE's commands (JSONL, one per line; '-' reads stdin) and print one result per line."""
    settings = from_env()
    base = (url or f"http://{settings.host}:{settings.port}").rstrip("/")
    endpoint = f"{base}/v1/commands"
    timeout = httpx.Timeout(SUBMIT_READ_TIMEOUT_S, connect=SUBMIT_CONNECT_TIMEOUT_S)
    try:
        with httpx.Client(timeout=timeout) as client:
            code = submit_file(client, endpoint, file, sys.stdout)
    except Unreachable as exc:
        click.echo(f"tally submit: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    sys.exit(code)


# ---------------------------------------------------------------- tally up


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the event store, the views and the devnet seed live [default: ./data].",
)
@click.option("--port", type=int, default=None, help="API port [default: 8000].")
@click.option("--host", default=None, help="API host [default: 127.0.0.1].")
@click.option("--no-devnet", is_flag=True, help="Do not run the devnet generator.")
@click.option(
    "--block-interval-ms",
    type=click.IntRange(min=10),
    default=1000,
    show_default=True,
    envvar="TALLY_DEVNET_BLOCK_INTERVAL_MS",
    help="Devnet: time between blocks.",
)
@click.option(
    "--txs-per-block",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    envvar="TALLY_DEVNET_TXS_PER_BLOCK",
    help="Devnet: transfers per block.",
)
def up(
    data_dir: Path | None,
    port: int | None,
    host: str | None,
    no_devnet: bool,
    block_interval_ms: int,
    txs_per_block: int,
) -> None:
    """Run the ledger, its projections, the API and (unless --no-devnet) a devnet, in one process."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = from_env(data_dir=data_dir, port=port, host=host)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run_stack(settings, devnet=not no_devnet, block_interval_ms=block_interval_ms, txs_per_block=txs_per_block)


def run_stack(settings: Settings, *, devnet: bool, block_interval_ms: int, txs_per_block: int) -> None:
    # Imported here so that `tally submit` starts fast and needs none of the engines.
    from api.app import create_app
    from projections.queries import ReadModel
    from projections.store import ProjectionStore
    from streams.follower import Follower
    from writes.devnet import CHAIN_ID, DEPOSIT_PERIOD_BLOCKS, WITHDRAW_PERIOD_BLOCKS, Devnet
    from writes.service import LedgerService
    from writes.txpool import TxPool

    with contextlib.ExitStack() as stack:
        service = LedgerService(settings)
        stack.callback(service.close)  # callbacks run last-in first-out: the stores close last
        # The folded ledger is long-lived: keep the cyclic GC from rescanning it on every collection
        # (it doubled event decoding time in the follower's large batches).
        gc.freeze()
        store = ProjectionStore(settings.views_dsn)
        stack.callback(store.close)
        follower = Follower(service.app, store)
        follower.start()
        stack.callback(follower.stop)
        pool = TxPool(CHAIN_ID) if devnet else None  # POST /v1/txs: only a devnet has a block producer
        if devnet:
            generator = Devnet(
                service,
                settings.data_dir,
                block_interval_ms=block_interval_ms,
                txs_per_block=txs_per_block,
                pool=pool,
                deposit_period_blocks=DEPOSIT_PERIOD_BLOCKS,  # the bridge moves: deposits, withdrawals, a relayer
                withdraw_period_blocks=WITHDRAW_PERIOD_BLOCKS,
            )
            generator.start()
            stack.callback(generator.stop)
        app = create_app(ReadModel(store), service, follower=follower, settings=settings, pool=pool)
        server = _Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning"))
        _on_signals(server)
        click.echo(
            f"tally: GraphiQL at http://{settings.host}:{settings.port}/graphql"
            f" (data in {settings.data_dir}, devnet {'on' if devnet else 'off'})"
        )
        server.run()


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal capture.

    uvicorn re-raises a caught SIGTERM once it has stopped, which would kill the process before the devnet,
    the follower and the stores are shut down in order; `_on_signals` handles the signals instead.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _on_signals(server: uvicorn.Server) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        if server.should_exit and signum == signal.SIGINT:
            server.force_exit = True  # a second Ctrl-C does not wait for open connections
        server.should_exit = True

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


for _command in COMPLIANCE_COMMANDS:  # verify (replay and export as they land)
    main.add_command(_command)

for _command in TX_COMMANDS:  # keygen, devnet-key, enroll, unenroll, slash, evidence, validators, slash-receipt
    main.add_command(_command)

for _command in PROOF_COMMANDS:  # verify-proof, liability-proof
    main.add_command(_command)


from api.cli_scaled import register as _register_scaled  # noqa: E402 (the scaled deployment's commands)

_register_scaled(main)

if __name__ == "__main__":
    main()
