"""`tally` commands for operators and slashers: keys, validator txs through the devnet's tx pool, evidence, and the
validator views.

Every tx is built and signed by schemas/build.py and checked with schemas/commands.check_tx_shape, the code the
ledger validates with, before anything is sent; evidence is checked by writes/txs.evidence_problem, the ledger's
own rule. A submitting command posts to `POST /v1/txs` (the tx pool of `tally up`'s devnet), then, unless
`--no-wait`, polls GraphQL `receipt(txId)` until the receipt is there and prints it.

Output: the result as one JSON object on stdout (the receipt, or the pool's answer with --no-wait); progress and
problems on stderr. Exit status: 0 done (receipt applied), 1 refused (bad input, a pool refusal, a rejected
receipt), 2 the ledger could not be reached, 3 no receipt before --timeout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx

from api.keyfile import KeyFileError, load_key_file, load_public_key, new_key_file, write_key_file
from api.ledger_client import (
    RECEIPT_WAIT_S_DEFAULT,
    LedgerClient,
    LedgerError,
    ReceiptTimeout,
    Unreachable,
)
from schemas import build
from schemas.commands import check_tx_shape, check_vote_shape
from schemas.reasons import Rejection
from schemas.settings import from_env
from schemas.signing import ALGS, KeyPair

EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_TIMEOUT = 0, 1, 2, 3
HTTP_TIMEOUT_S = 30.0
# Where a malformed_tx message names a tx field, the option that set it.
OPTION_OF_FIELD = {
    "node_id": "--node-id", "gpu_uuid": "--gpu-uuid", "stake": "--stake", "nonce": "--nonce",
    "validator_key": "--validator-key", "evidence": "--evidence", "chain_id": "--chain-id",
}  # fmt: skip


class Refused(Exception):
    """Input the CLI refuses before sending anything; the message says what and where."""


def _fail(command: str, message: str, code: int) -> NoReturn:
    click.echo(f"tally {command}: {message}", err=True)
    sys.exit(code)


def _print(obj: Any) -> None:
    click.echo(json.dumps(obj, separators=(",", ":")))


@contextmanager
def _errors(command: str) -> Iterator[None]:
    """The CLI's exit statuses for the failures every command shares."""
    try:
        yield
    except (Refused, KeyFileError, LedgerError) as exc:
        _fail(command, str(exc), EXIT_REFUSED)
    except Unreachable as exc:
        _fail(command, str(exc), EXIT_UNREACHABLE)
    except ReceiptTimeout as exc:
        _fail(command, f"{exc}; the tx may still be included: ask `receipt(txId)` later", EXIT_TIMEOUT)


def _base_url(url: str | None) -> str:
    settings = from_env()
    return (url or f"http://{settings.host}:{settings.port}").rstrip("/")


@contextmanager
def _ledger(url: str | None) -> Iterator[LedgerClient]:
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
        yield LedgerClient(_base_url(url), client)


URL_OPTION = click.option("--url", default=None, help="The ledger's base URL [default: http://TALLY_HOST:TALLY_PORT].")


def submit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options every submitting command shares."""
    options = [
        click.option("--key", "key_file", required=True, type=click.Path(path_type=Path),
                     help="The signer's key file (tally keygen, tally devnet-key)."),
        click.option("--nonce", type=click.IntRange(min=0), default=None,
                     help="The signer's next nonce [default: asked of the ledger: account(address) { nonce }]."),
        click.option("--chain-id", default=None, help="[default: the ledger's default chain]"),
        URL_OPTION,
        click.option("--wait/--no-wait", default=True, show_default=True,
                     help="Wait for the receipt and print it (exit 1 if rejected)."),
        click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), default=RECEIPT_WAIT_S_DEFAULT,
                     show_default=True, help="Seconds to wait for the receipt."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def check_shape(tx: dict[str, Any]) -> None:
    """The ledger's malformed_tx check, with the message pointed at the option that set the field."""
    try:
        check_tx_shape(tx, 0, tx["chain_id"])
    except Rejection as rejection:
        message = rejection.message.removeprefix("tx 0: ")
        field = message.split(" ", 1)[0].split(".", 1)[0].split("[", 1)[0]
        option = OPTION_OF_FIELD.get(field)
        raise Refused(f"the tx would be malformed: {message}" + (f" ({option})" if option else "")) from None


def submit_tx(
    command: str, ledger: LedgerClient, tx: dict[str, Any], *, wait: bool, timeout_s: float
) -> int:
    """Post one signed tx to the pool; with `wait`, print its receipt. Returns the exit status."""
    check_shape(tx)
    [answer] = ledger.post_txs([tx])
    if answer.get("status") != "queued":
        _print(answer)
        raise Refused(f"the tx pool refused the tx: {answer.get('reason')}: {answer.get('message')}")
    if not wait:
        _print(answer)
        return EXIT_OK
    click.echo(f"tally {command}: tx {answer['tx_id']} queued; waiting for its receipt", err=True)
    receipt = ledger.wait_receipt(answer["tx_id"], timeout_s)
    _print(receipt)
    return EXIT_OK if receipt["status"] == "applied" else EXIT_REFUSED


def _signer_context(
    ledger: LedgerClient, key: KeyPair, chain_id: str | None, nonce: int | None
) -> tuple[str, int]:
    chain = chain_id or ledger.chain_id()
    return chain, nonce if nonce is not None else ledger.next_nonce(key.address, chain)


# ------------------------------------------------------------------------------------------------ keys


@click.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The key file to write.")
@click.option("--alg", type=click.Choice(ALGS), default="ml-dsa-65", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def keygen(out: Path, alg: str, force: bool) -> None:
    """Write a new key file (JSON: alg and a random 32-byte seed; mode 0600) and print its address."""
    with _errors("keygen"):
        key = new_key_file(out, alg, force=force)
        _print({"address": key.address, "alg": alg, "key_file": str(out)})


@click.command("devnet-key")
@click.option("--index", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which of the devnet's reserved accounts (0 .. 3).")  # fmt: skip
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The key file to write.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The data directory of `tally up` [default: ./data].")  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def devnet_key(index: int, out: Path, data_dir: Path | None, force: bool) -> None:
    """Export a funded devnet account's key: one of the accounts the devnet never signs for, so its nonces are
    yours alone (1,000,000 CELL each at genesis)."""
    from writes.devnet import RESERVED_ACCOUNTS, SEED_FILE, reserved_account_seed

    with _errors("devnet-key"):
        settings = from_env(data_dir=data_dir)
        path = settings.data_dir / SEED_FILE
        if not path.exists():
            raise Refused(f"no devnet seed at {path}: start `tally up` (with its devnet) on that data dir first")
        if index >= RESERVED_ACCOUNTS:
            raise Refused(f"--index must be below {RESERVED_ACCOUNTS}: the devnet reserves that many accounts")
        seed = bytes.fromhex(path.read_text().strip())
        key = write_key_file(out, reserved_account_seed(seed, index), "ml-dsa-65", force=force)
        _print({"address": key.address, "alg": key.alg, "key_file": str(out), "index": index})


# ------------------------------------------------------------------------------------------- validator txs


@click.command()
@submit_options
@click.option("--node-id", required=True, help="The new validator's node_id (never reused).")
@click.option("--gpu-uuid", required=True, help="The GPU it binds while enrolled.")
@click.option("--stake", required=True, type=click.IntRange(min=0),
              help="CELL to bond, in micro-units (1 CELL = 1000000).")  # fmt: skip
@click.option("--validator-key", "validator_key_file", required=True, type=click.Path(path_type=Path),
              help="The validator's key file (or its public key file {alg, pk}).")  # fmt: skip
def enroll(
    key_file: Path, nonce: int | None, chain_id: str | None, url: str | None, wait: bool, timeout_s: float,
    node_id: str, gpu_uuid: str, stake: int, validator_key_file: Path,
) -> None:  # fmt: skip
    """Enroll a validator: the key's account (the operator) bonds --stake for it."""
    with _errors("enroll"), _ledger(url) as ledger:
        operator = load_key_file(key_file)
        validator_key = _PublicKey(load_public_key(validator_key_file))
        chain, n = _signer_context(ledger, operator, chain_id, nonce)
        tx = build.enroll(chain, operator, node_id, gpu_uuid, stake, validator_key, nonce=n)  # type: ignore[arg-type]
        sys.exit(submit_tx("enroll", ledger, tx, wait=wait, timeout_s=timeout_s))


class _PublicKey:
    """Stands for a KeyPair where build.enroll reads only the public key (`.key`): the validator's private key
    need not be on the operator's machine."""

    def __init__(self, key: dict[str, str]) -> None:
        self.key = key


@click.command()
@submit_options
@click.option("--node-id", required=True, help="The validator to unenroll (the key must be its operator's).")
def unenroll(
    key_file: Path, nonce: int | None, chain_id: str | None, url: str | None, wait: bool, timeout_s: float,
    node_id: str,
) -> None:  # fmt: skip
    """Unenroll a validator: it stops at once and its stake is released after the unbond window."""
    with _errors("unenroll"), _ledger(url) as ledger:
        operator = load_key_file(key_file)
        chain, n = _signer_context(ledger, operator, chain_id, nonce)
        tx = build.unenroll(chain, operator, node_id, nonce=n)
        sys.exit(submit_tx("unenroll", ledger, tx, wait=wait, timeout_s=timeout_s))


@click.command()
@submit_options
@click.option("--evidence", "evidence_file", required=True, type=click.Path(path_type=Path),
              help="Two votes as a JSON array (tally evidence writes it).")  # fmt: skip
@click.option("--node-id", default=None, help="The accused validator [default: the votes' node_id].")
def slash(
    key_file: Path, nonce: int | None, chain_id: str | None, url: str | None, wait: bool, timeout_s: float,
    evidence_file: Path, node_id: str | None,
) -> None:  # fmt: skip
    """Report an equivocation: a slash with two votes of one validator at one height for different blocks."""
    with _errors("slash"), _ledger(url) as ledger:
        reporter = load_key_file(key_file)
        votes = read_evidence(evidence_file)
        accused = node_id or votes[0]["node_id"]
        problem = evidence_structure_problem(votes, accused)
        if problem:
            raise Refused(f"{evidence_file}: not evidence: {problem}")
        chain, n = _signer_context(ledger, reporter, chain_id, nonce)
        tx = build.slash(chain, reporter, accused, votes, nonce=n)
        sys.exit(submit_tx("slash", ledger, tx, wait=wait, timeout_s=timeout_s))


# ------------------------------------------------------------------------------------------------ evidence


def read_vote(path: Path) -> dict[str, Any]:
    """A vote file (one vote object), checked with the ledger's malformed_vote rule."""
    try:
        vote = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Refused(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise Refused(f"{path}: not JSON ({exc})") from None
    if not isinstance(vote, dict):
        raise Refused(f"{path}: a vote is a JSON object")
    try:
        check_vote_shape(vote)
    except Rejection as rejection:
        raise Refused(f"{path}: malformed vote: {rejection.message.removeprefix('vote: ')}") from None
    return vote


def read_evidence(path: Path) -> list[dict[str, Any]]:
    try:
        votes = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Refused(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise Refused(f"{path}: not JSON ({exc})") from None
    if not isinstance(votes, list) or len(votes) != 2 or not all(isinstance(v, dict) for v in votes):
        raise Refused(f"{path}: evidence is a JSON array of two votes")
    for i, vote in enumerate(votes):
        try:
            check_vote_shape(vote)
        except Rejection as rejection:
            raise Refused(f"{path}: vote {i} is malformed: {rejection.message.removeprefix('vote: ')}") from None
    return votes


def evidence_structure_problem(votes: list[dict[str, Any]], node_id: str) -> str:
    """The ledger's invalid_evidence rule short of the signatures: '' when the votes could be evidence."""
    from writes.state import Validator
    from writes.txs import evidence_problem

    a, b = votes
    # A key under which every signature fails would end the rule at the signature check, after the others.
    nobody = Validator(node_id, "", "ml-dsa-65", b"", "", 0)
    problem = evidence_problem({"node_id": node_id, "evidence": votes}, nobody, a["chain_id"])
    return "" if problem.startswith("vote 0 does not verify") else problem


def evidence_problem_of(votes: list[dict[str, Any]], node_id: str, key: dict[str, str], chain_id: str) -> str:
    """writes/txs.evidence_problem, the ledger's invalid_evidence rule, under the validator's public key."""
    from writes.state import Validator
    from writes.txs import evidence_problem

    validator = Validator(node_id, "", key["alg"], bytes.fromhex(key["pk"]), "", 0)
    return evidence_problem({"node_id": node_id, "evidence": votes}, validator, chain_id)


def canonical_evidence(votes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The two votes in one order whatever the order they came in (by block hash): the same offence, the same
    evidence bytes."""
    return sorted(votes, key=lambda v: v["block_hash"])


@click.command()
@click.argument("vote_a", type=click.Path(path_type=Path))
@click.argument("vote_b", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the evidence here [default: stdout].")  # fmt: skip
@click.option("--validator-key-pk", "pk_file", type=click.Path(path_type=Path), default=None,
              help="The validator's public key file {alg, pk} (or its key file).")  # fmt: skip
@click.option("--url", default=None,
              help="Without --validator-key-pk: ask this ledger's GraphQL validator(nodeId) for the key.")
@click.option("--chain-id", default=None, help="The chain the evidence is for [default: the votes' chain_id].")
def evidence(
    vote_a: Path, vote_b: Path, out: Path | None, pk_file: Path | None, url: str | None, chain_id: str | None
) -> None:
    """Build canonical evidence from two vote files, offline, after the checks that would reject it: one node,
    one height, different block hashes, one chain, both signatures valid under the validator's key."""
    with _errors("evidence"):
        votes = [read_vote(vote_a), read_vote(vote_b)]
        node_id = votes[0]["node_id"]
        problem = evidence_structure_problem(votes, node_id)
        if problem:
            raise Refused(f"not evidence: {problem}")
        if pk_file is not None:
            key = load_public_key(pk_file)
        elif url is not None:
            with _ledger(url) as ledger:
                key = ledger.validator_public_key(node_id, chain_id)
        else:
            raise Refused("the signatures need the validator's public key: pass --validator-key-pk FILE, or --url")
        problem = evidence_problem_of(votes, node_id, key, chain_id or votes[0]["chain_id"])
        if problem:
            raise Refused(f"not evidence: {problem}")
        text = json.dumps(canonical_evidence(votes), sort_keys=True, separators=(",", ":")) + "\n"
        if out is None:
            click.echo(text, nl=False)
        else:
            out.write_text(text, encoding="utf-8")
            click.echo(f"tally evidence: {node_id} at height {votes[0]['height']}: written to {out}", err=True)


# ------------------------------------------------------------------------------------------------- reads


@click.command()
@click.option("--phase", type=click.Choice(["active", "unbonding", "released"]), default=None)
@click.option("--all", "walk_all", is_flag=True, help="Follow the cursors to the last page.")
@click.option("--first", type=click.IntRange(min=1), default=None, help="Validators per page [default: the server's].")
@click.option("--after", default=None, help="Start after this cursor (a page's endCursor).")
@click.option("--chain-id", default=None)
@URL_OPTION
def validators(
    phase: str | None, walk_all: bool, first: int | None, after: str | None, chain_id: str | None, url: str | None
) -> None:
    """List validators (one JSON object per line), a page or (--all) every page."""
    with _errors("validators"), _ledger(url) as ledger:
        if walk_all:
            if after is not None:
                raise Refused("--all walks from the first page: drop --after")
            for node in ledger.all_validators(phase=phase, first=first, chain_id=chain_id):
                _print(node)
            return
        nodes, cursor = ledger.validators(phase=phase, first=first, after=after, chain_id=chain_id)
        for node in nodes:
            _print(node)
        if cursor is not None:
            click.echo(f"tally validators: more after this page: --after {cursor} (or --all)", err=True)


@click.command("slash-receipt")
@click.argument("tx_id")
@URL_OPTION
def slash_receipt(tx_id: str, url: str | None) -> None:
    """Print a slash's receipt: the offence, the amounts slashed, paid to the reporter and burned."""
    with _errors("slash-receipt"), _ledger(url) as ledger:
        found = ledger.slash_receipt(tx_id)
        if found is None:
            raise Refused(f"no slash receipt for tx {tx_id}")
        _print(found)


COMMANDS = (keygen, devnet_key, enroll, unenroll, slash, evidence, validators, slash_receipt)
