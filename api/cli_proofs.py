"""`tally verify-proof` and `tally liability-proof`: an account holder's side of proof of reserves.

- `tally verify-proof PROOF.json [--root HEX] [--url URL]` checks a liability proof (api/proof_format.py): against
  `--root` (the published root), or the attested root the ledger serves at `--url` (`proofOfReserves`), or else
  only against the root the proof names (and says so). Exit 0 verified, 1 not (the message says why), 2 the
  ledger could not be reached.
- `tally liability-proof --key FILE --asset SYMBOL [--height H] [--out FILE]` signs a proof request with the
  account's key file (api/proofs.py's request) and asks the ledger's GraphQL `liabilityProof` for the proof; it
  writes the proof's canonical JSON (default: stdout) and prints the account secret's holder a summary on stderr.

Registered on the main group by api/cli.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx

from api import proof_format
from api.keyfile import KeyFileError, load_key_file
from api.ledger_client import LedgerClient, LedgerError, Unreachable
from api.proofs import REQUEST_TTL_MS_MAX, request_of
from schemas.canonical import canonical_bytes
from schemas.settings import from_env

EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE = 0, 1, 2
HTTP_TIMEOUT_S = 120.0  # the first proof of a large attestation rebuilds its tree: seconds
REQUEST_TTL_MS = REQUEST_TTL_MS_MAX // 5

_ATTESTED_ROOT = """query($a: String!, $h: Int, $c: String) {
  proofOfReserves(asset: $a, height: $h, chainId: $c) { root height }
}"""
_PROOF = """query($a: String!, $w: String!, $h: Int, $n: BigInt!, $k: KeyInput!, $s: String!, $c: String) {
  liabilityProof(asset: $a, address: $w, height: $h, notAfterMs: $n, key: $k, signature: $s, chainId: $c) {
    document balance height root
  }
}"""


def _fail(command: str, message: str, code: int) -> NoReturn:
    click.echo(f"tally {command}: {message}", err=True)
    sys.exit(code)


def _client(url: str | None) -> tuple[httpx.Client, LedgerClient]:
    settings = from_env()
    http = httpx.Client(timeout=HTTP_TIMEOUT_S)
    return http, LedgerClient((url or f"http://{settings.host}:{settings.port}").rstrip("/"), http)


def check_file(data: bytes, root: str | None) -> dict[str, Any]:
    """The verified proof's figures; raises proof_format.ProofError. Pure."""
    return proof_format.verify(proof_format.parse(data), root)


@click.command("verify-proof")
@click.argument("proof_file", metavar="PROOF.json", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--root", default=None, help="The published root (64 hex) the proof must lead to.")
@click.option("--url", default=None,
              help="Take the published root from this ledger's proofOfReserves (for the proof's asset and height).")
def verify_proof(proof_file: Path, root: str | None, url: str | None) -> None:
    """Check a liability proof: exit 0 if the balance is counted in the root, 1 if not."""
    try:
        data = proof_file.read_bytes()
    except OSError as exc:
        _fail("verify-proof", f"cannot read {proof_file}: {exc}", EXIT_FAILED)
    try:
        proof = proof_format.parse(data)
        if root is None and url is not None:
            root = _published_root(url, proof)
        proved = proof_format.verify(proof, root)
    except proof_format.ProofError as exc:
        _fail("verify-proof", f"NOT VERIFIED: {exc}", EXIT_FAILED)
    except Unreachable as exc:
        _fail("verify-proof", str(exc), EXIT_UNREACHABLE)
    except LedgerError as exc:
        _fail("verify-proof", f"NOT VERIFIED: the ledger answered: {exc}", EXIT_FAILED)
    who = proved["address"] or f"leaf {proof['leaf']['blinded_id']}"
    click.echo(
        f"verified: {who} holds {proved['balance']} {proved['asset']}, counted in root {proved['root']} (total"
        f" {proved['total']}) at height {proved['height']} of {proved['chain_id']}"
    )
    if root is None:
        click.echo("note: checked against the root inside the proof; compare it with the published one (--root, or"
                   " --url to ask the ledger's proofOfReserves)", err=True)


def _published_root(url: str, proof: dict[str, Any]) -> str:
    http, ledger = _client(url)
    with http:
        found = ledger.graphql(_ATTESTED_ROOT, a=proof.get("asset"), h=proof.get("height"),
                               c=proof.get("chain_id"))["proofOfReserves"]
    if found is None:
        raise proof_format.ProofError(f"the ledger at {url} has no attestation of that asset at that height")
    return str(found["root"])


@click.command("liability-proof")
@click.option("--key", "key_file", required=True, type=click.Path(path_type=Path),
              help="The account's key file (tally keygen, tally devnet-key).")
@click.option("--asset", required=True, help="The bridged asset, e.g. USDC.")
@click.option("--height", type=click.IntRange(min=0), default=None, help="An attested height [default: the newest].")
@click.option("--chain-id", default=None, help="[default: the ledger's default chain]")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the proof here [default: stdout].")
@click.option("--url", default=None, help="The ledger's base URL [default: http://TALLY_HOST:TALLY_PORT].")
def liability_proof(
    key_file: Path, asset: str, height: int | None, chain_id: str | None, out: Path | None, url: str | None
) -> None:
    """Ask the ledger for this account's inclusion proof (a request signed with its key) and save it."""
    try:
        account = load_key_file(key_file)
        http, ledger = _client(url)
        with http:
            chain = chain_id or ledger.chain_id()
            request = request_of(chain_id=chain, address=account.address, asset=asset, height=height,
                                 not_after_ms=int(time.time() * 1000) + REQUEST_TTL_MS, key=account.key)
            signature = account.sign_bytes(canonical_bytes(request)).hex()
            answer = ledger.graphql(_PROOF, a=asset, w=account.address, h=height, n=str(request["not_after_ms"]),
                                    k=account.key, s=signature, c=chain)["liabilityProof"]
    except (KeyFileError, LedgerError) as exc:
        _fail("liability-proof", str(exc), EXIT_FAILED)
    except Unreachable as exc:
        _fail("liability-proof", str(exc), EXIT_UNREACHABLE)
    document = answer["document"].encode("utf-8") + b"\n"
    try:
        check_file(document, answer["root"])  # what the holder will check, before it is written
    except proof_format.ProofError as exc:
        _fail("liability-proof", f"the ledger served a proof that does not verify: {exc}", EXIT_FAILED)
    if out is None:
        sys.stdout.buffer.write(document)
    else:
        out.write_bytes(document)
    click.echo(f"{account.address}: {answer['balance']} {asset} at height {answer['height']}, root {answer['root']}",
               err=True)


COMMANDS = (verify_proof, liability_proof)
