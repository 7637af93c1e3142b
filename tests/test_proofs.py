"""Liability proofs (api/proof_format.py, api/proofs.py, api/gql_reserves.py, api/cli_proofs.py, docs/verify_proof.py).

Pure first: over random states, the proof of every account verifies with `tally verify-proof`'s check and with the
customer's script of the docs, and a proof with any byte changed fails. Then end to end: a ledger with bridged
holders and attestations, the follower and the API: every holder obtains its proof with a signed request, and the
proof verifies against the published root; every refusal; the root check; the tree cache; and the CLI round trip
over a real socket (`tally liability-proof`, then `tally verify-proof --url`).
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import uvicorn
from blake3 import blake3
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from test_api_client import Client

from accelerators.merkle_cpu import verify_sum_inclusion
from accelerators.verify import BatchVerifier
from api import create_app, proof_format
from api.cli import main as tally
from api.cli_proofs import check_file
from api.keyfile import write_key_file
from api.proof_trees import TreeBuilder, compact
from api.proofs import REQUEST_TTL_MS_MAX, LiabilityProofs, ProofRefused, request_of
from projections.queries import ReadModel
from projections.reserve_queries import ReserveQueries
from projections.store import ProjectionStore
from schemas import build
from schemas.canonical import canonical_bytes
from schemas.settings import Settings
from schemas.signing import KeyPair
from streams.follower import Follower
from tests.chain import Chain, genesis_command, keypair, validators
from writes import reserves
from writes.service import LedgerService

DOCS = Path(__file__).resolve().parent.parent / "docs"
CHAIN = "tally-test"
ASSET = "USDC"


def _docs_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_proof", DOCS / "verify_proof.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CUSTOMER = _docs_script()


def proofs_of(secret: bytes, holdings: list[tuple[str, int]], height: int = 7) -> tuple[str, list[dict[str, Any]]]:
    """(root, a proof document per holder) as the proof service makes them."""
    tree = reserves.build_tree(secret, CHAIN, ASSET, height, holdings)
    kept = compact(tree)
    root, total = tree.root
    documents = []
    for address, balance in holdings:
        account_secret = reserves.account_secret(secret, CHAIN, address)
        blinded = reserves.blinded_id(account_secret, CHAIN, ASSET, height, address)
        index = kept.find(blinded)
        assert index == tree.index[address] and kept.path(index) == tree.proof(address)
        documents.append(proof_format.document(
            chain_id=CHAIN, asset=ASSET, height=height, root=root.hex(), total=total, leaf_count=kept.leaves,
            address=address, account_secret=account_secret, blinded_id=blinded, balance=balance,
            path=kept.path(index),
        ))
    return root.hex(), documents


holdings_st = st.dictionaries(
    st.integers(0, 2**160 - 1).map(lambda n: f"0x{n:040x}"),
    st.integers(1, 2**63 - 1) | st.integers(1, 1000),
    min_size=1, max_size=40,
).map(lambda d: sorted(d.items()))


@settings(max_examples=40, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), holdings=holdings_st, height=st.integers(0, 2**40))
def test_the_proof_of_every_account_of_a_random_state_verifies(
    secret: bytes, holdings: list[tuple[str, int]], height: int
) -> None:
    root, documents = proofs_of(secret, holdings, height)
    assert len(documents) == len(holdings)
    for (address, balance), document in zip(holdings, documents, strict=True):
        data = proof_format.canonical(document) + b"\n"
        proved = check_file(data, root)
        total = sum(b for _, b in holdings)
        assert (proved["address"], proved["balance"], proved["total"]) == (address, balance, total)
        assert CUSTOMER.check(json.loads(data), root) == balance
        # The ledger's own sum-tree check agrees (accelerators/merkle_cpu.py: the reference of both backends).
        steps = [(s["side"] == "left", (bytes.fromhex(s["hash"]), s["sum"])) for s in document["path"]]
        leaf = bytes.fromhex(document["leaf"]["blinded_id"])
        assert verify_sum_inclusion(leaf, balance, steps, (bytes.fromhex(root), document["total"]))
        # Shared without identity (address and account secret dropped), it still verifies.
        bare = {**document, "leaf": {"blinded_id": document["leaf"]["blinded_id"], "balance": balance}}
        assert proof_format.verify(bare, root)["address"] is None
        assert CUSTOMER.check(bare, root) == balance


_SECRET = bytes(range(32))
_ROOT, _DOCUMENTS = proofs_of(_SECRET, [(f"0x{i:040x}", 1000 * i + 7) for i in range(1, 12)])
_PROOF = proof_format.canonical(_DOCUMENTS[5]) + b"\n"


@settings(max_examples=400, deadline=None)
@given(position=st.integers(0, len(_PROOF) - 1), value=st.integers(0, 255), root_given=st.booleans())
def test_a_proof_with_any_byte_changed_fails(position: int, value: int, root_given: bool) -> None:
    if value == _PROOF[position]:
        value ^= 0x01
    changed = _PROOF[:position] + bytes([value]) + _PROOF[position + 1:]
    with pytest.raises(proof_format.ProofError):
        check_file(changed, _ROOT if root_given else None)


def test_every_position_changed_fails() -> None:
    """Beside the random draws above: each byte of the proof, changed to three other values (a neighbour, a digit,
    a space), fails."""
    for position, original in enumerate(_PROOF):
        for value in {original ^ 0x01, ord("0") if original != ord("0") else ord("1"), ord(" ")} - {original}:
            changed = _PROOF[:position] + bytes([value]) + _PROOF[position + 1:]
            with pytest.raises(proof_format.ProofError):
                check_file(changed, _ROOT)


def test_verify_proof_exit_status_and_messages(tmp_path: Path) -> None:
    good, bad = tmp_path / "proof.json", tmp_path / "tampered.json"
    good.write_bytes(_PROOF)
    document = json.loads(_PROOF)
    document["leaf"]["balance"] += 1  # claims more than it was counted for
    bad.write_bytes(proof_format.canonical(document))
    runner = CliRunner()
    ok = runner.invoke(tally, ["verify-proof", str(good), "--root", _ROOT])
    assert ok.exit_code == 0 and f"holds {document['leaf']['balance'] - 1} USDC" in ok.output
    failed = runner.invoke(tally, ["verify-proof", str(bad), "--root", _ROOT])
    assert failed.exit_code == 1 and "NOT VERIFIED: the path leads to" in failed.output
    other = runner.invoke(tally, ["verify-proof", str(good), "--root", "ab" * 32])
    assert other.exit_code == 1 and "not the published root" in other.output
    alone = runner.invoke(tally, ["verify-proof", str(good)])
    assert alone.exit_code == 0 and "compare it with the published one" in alone.output
    spaced = tmp_path / "spaced.json"
    spaced.write_text(json.dumps(json.loads(_PROOF), indent=1))
    assert "canonical form" in runner.invoke(tally, ["verify-proof", str(spaced), "--root", _ROOT]).output
    missing = runner.invoke(tally, ["verify-proof", str(tmp_path / "nope.json")])
    assert missing.exit_code == 1 and "cannot read" in missing.output


def test_the_customer_script_runs_as_documented(tmp_path: Path) -> None:
    proof = tmp_path / "proof.json"
    proof.write_bytes(_PROOF)
    script = DOCS / "verify_proof.py"
    ok = subprocess.run([sys.executable, str(script), str(proof), _ROOT], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and ok.stdout.startswith("verified: ") and "USDC" in ok.stdout, ok
    wrong = subprocess.run([sys.executable, str(script), str(proof), "cd" * 32], capture_output=True, text=True,
                           check=False)
    assert wrong.returncode == 1 and "NOT VERIFIED" in wrong.stderr
    # The script in the docs is this file, word for word.
    page = (DOCS / "proof-of-reserves.md").read_text()
    blocks = re.findall(r"```python verify_proof.py\n(.*?)```", page, re.S)
    assert blocks == [script.read_text()]


@pytest.mark.parametrize("tamper", ["balance", "sibling_sum", "sibling_hash", "side", "secret", "height", "count"])
def test_the_customer_script_refuses_a_tampered_proof(tamper: str) -> None:
    document = json.loads(_PROOF)
    step = document["path"][1]
    if tamper == "balance":
        document["leaf"]["balance"] -= 1
    elif tamper == "sibling_sum":
        step["sum"] += 1
    elif tamper == "sibling_hash":
        step["hash"] = blake3(b"x").hexdigest()
    elif tamper == "side":
        step["side"] = "left" if step["side"] == "right" else "right"
    elif tamper == "secret":
        document["leaf"]["account_secret"] = "00" * 32
    elif tamper == "height":
        document["height"] += 1
    else:
        document["leaf_count"] *= 2
    with pytest.raises(ValueError):
        CUSTOMER.check(document, _ROOT)
    with pytest.raises(proof_format.ProofError):
        proof_format.verify(document, _ROOT)


# ------------------------------------------------------------------------------------------- end to end

RELAYER = keypair("relayer-a")
HOLDERS = [KeyPair.from_seed(blake3(f"holder-{i}".encode()).digest()) for i in range(9)]
OUTSIDER = KeyPair.from_seed(blake3(b"outsider").digest(), "ml-dsa-87")


@dataclass
class Stack:
    service: LedgerService
    store: ProjectionStore
    app: Starlette
    client: Client
    now_ms: int

    def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        body = self.client.post("/graphql", json={"query": query, "variables": variables}).json()
        return dict(body)

    def proof(self, who: KeyPair, height: int | None, *, signer: KeyPair | None = None, asked: int | None = None,
              not_after_ms: int | None = None, address: str | None = None) -> dict[str, Any]:
        """Ask liabilityProof with a request signed by `signer` (default: the holder) for `height`; `asked`
        overrides the height sent beside the signature."""
        signer = signer or who
        deadline = self.now_ms + 60_000 if not_after_ms is None else not_after_ms
        request = request_of(chain_id=CHAIN, address=address or who.address, asset=ASSET, height=height,
                             not_after_ms=deadline, key=signer.key)
        signature = signer.sign_bytes(canonical_bytes(request)).hex()
        return self.gql(
            "query($w: String!, $h: Int, $n: BigInt!, $k: KeyInput!, $s: String!) {"
            " liabilityProof(asset: \"USDC\", address: $w, height: $h, notAfterMs: $n, key: $k, signature: $s)"
            " { document balance height root blockHash accountSecret attestation { root total } } }",
            w=address or who.address, h=height if asked is None else asked, n=str(deadline), k=signer.key,
            s=signature,
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, chdb_dsn: str) -> Iterator[Stack]:
    """Holders 0..8 of USDC: deposits, a transfer, withdrawals (one pending); attested at heights 2 and 4."""
    tmp = tmp_path_factory.mktemp("proofs")
    service = LedgerService(Settings(data_dir=tmp, verify_workers=1, reserves_every_blocks=2),
                            verifier=BatchVerifier(1))
    store = ProjectionStore(chdb_dsn, database=f"proofs_{tmp.name.replace('-', '_')}")
    vals = validators()
    genesis = genesis_command(vals=vals, relayers=[("relayer-a", RELAYER)],
                              allocations=[(h.address, 10**9) for h in HOLDERS])
    chain = Chain(service, genesis, vals)
    deposit = build.bridge_deposit
    b1 = chain.apply([deposit(CHAIN, RELAYER, f"d{i}", ASSET, h.address, 1000 * (i + 1)) for i, h in
                      enumerate(HOLDERS[:8])])
    b2 = chain.apply([build.transfer(CHAIN, HOLDERS[0], HOLDERS[8].address, 300, asset=ASSET, nonce=0),
                      build.withdraw_request(CHAIN, HOLDERS[1], "w1", ASSET, 2000, nonce=0)])
    chain.finalize(b1["hash"], 1)
    chain.finalize(b2["hash"], 2)
    b3 = chain.apply([build.withdraw_confirm(CHAIN, RELAYER, "w1"),
                      build.withdraw_request(CHAIN, HOLDERS[2], "w2", ASSET, 500, nonce=0)])
    b4 = chain.apply([deposit(CHAIN, RELAYER, "d9", ASSET, HOLDERS[0].address, 5)])
    chain.finalize(b3["hash"], 3)
    chain.finalize(b4["hash"], 4)
    follower = Follower(service.app, store)
    follower.run_until_caught_up()
    app = create_app(ReadModel(store), service, follower=follower, settings=service.settings)
    try:
        yield Stack(service, store, app, Client(app), int(time.time() * 1000))
    finally:
        service.close()
        store.drop()
        store.close()


def _data(answer: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in answer, answer
    return dict(answer["data"])


def test_the_views_through_graphql(stack: Stack) -> None:
    q = """{ reserves(asset: "USDC") { height deposited withdrawn pending escrow balances liabilities ratio
               pendingWithdrawals }
             at2: reserves(asset: "USDC", atHeight: 2) { pending liabilities }
             none: reserves(asset: "EURC") { height }
             reserveTransfer(reserveId: "w1") { kind status amount owner createdHeight updatedHeight
               history { height status reverted } }
             withdrawals(first: 1) { edges { cursor node { reserveId status } } pageInfo { hasNextPage endCursor } }
             queue: withdrawals(status: PENDING) { edges { node { reserveId amount } } }
             proofOfReserves(asset: "USDC") { height root total liabilities escrow ratio leafCount scheme cause } }"""
    data = _data(stack.gql(q))
    assert data["reserves"] == {
        "height": 4, "deposited": "36005", "withdrawn": "2000", "pending": "500", "escrow": "34005",
        "balances": "33505", "liabilities": "34005", "ratio": "1.000000", "pendingWithdrawals": 1,
    }
    assert data["at2"] == {"pending": "2000", "liabilities": "36000"} and data["none"] is None
    assert data["reserveTransfer"] == {
        "kind": "WITHDRAWAL", "status": "CONFIRMED", "amount": "2000", "owner": HOLDERS[1].address,
        "createdHeight": 2, "updatedHeight": 3,
        "history": [{"height": 2, "status": "PENDING", "reverted": False},
                    {"height": 3, "status": "CONFIRMED", "reverted": False}],
    }
    page = data["withdrawals"]
    assert [e["node"]["reserveId"] for e in page["edges"]] == ["w1"] and page["pageInfo"]["hasNextPage"]
    rest = _data(stack.gql("query($a: String) { withdrawals(after: $a) { edges { node { reserveId } } } }",
                           a=page["pageInfo"]["endCursor"]))
    assert [e["node"]["reserveId"] for e in rest["withdrawals"]["edges"]] == ["w2"]
    assert data["queue"]["edges"] == [{"node": {"reserveId": "w2", "amount": "500"}}]
    attested = data["proofOfReserves"]
    assert (attested["height"], attested["total"], attested["liabilities"], attested["leafCount"]) == (
        4, "33505", "34005", 8)
    assert (attested["scheme"], attested["cause"], attested["ratio"]) == ("tally-por-v1", "schedule", "1.000000")
    older = _data(stack.gql('{ proofOfReserves(asset: "USDC", height: 2) { height total pending } }'))
    assert older["proofOfReserves"] == {"height": 2, "total": "34000", "pending": "2000"}
    assert _data(stack.gql('{ proofOfReserves(asset: "USDC", height: 3) { height } }'))["proofOfReserves"] is None


def test_every_holder_obtains_a_proof_that_verifies_against_the_published_root(stack: Stack, tmp_path: Path) -> None:
    read = ReadModel(stack.store)
    runner = CliRunner()
    for height in (2, 4):
        published = _data(stack.gql("query($h: Int) { proofOfReserves(asset: \"USDC\", height: $h) { root } }",
                                    h=height))["proofOfReserves"]["root"]
        counted = 0
        for holder in HOLDERS:
            account = read.account(CHAIN, holder.address, at_height=height)
            assert account is not None
            balance = next((b["amount"] for b in account["balances"] if b["asset"] == ASSET), 0)
            answer = stack.proof(holder, height)
            if balance == 0:
                assert answer["errors"][0]["extensions"]["code"] == "NOT_IN_TREE"
                continue
            proof = _data(answer)["liabilityProof"]
            assert (int(proof["balance"]), proof["height"], proof["root"]) == (balance, height, published)
            assert proof["attestation"]["root"] == published
            path = tmp_path / f"proof-{height}-{holder.address}.json"
            path.write_text(proof["document"] + "\n")
            result = runner.invoke(tally, ["verify-proof", str(path), "--root", published])
            assert result.exit_code == 0, result.output
            assert CUSTOMER.check(json.loads(proof["document"]), published) == balance
            counted += balance
        total = _data(stack.gql("query($h: Int) { proofOfReserves(asset: \"USDC\", height: $h) { total } }",
                                h=height))["proofOfReserves"]["total"]
        assert counted == int(total)
    newest = _data(stack.proof(HOLDERS[0], None))["liabilityProof"]
    assert newest["height"] == 4


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("other_key", "BAD_REQUEST"),  # a key whose address is not `address`
        ("forged", "BAD_SIGNATURE"),  # the holder's key, signed by someone else
        ("height_changed", "BAD_SIGNATURE"),  # the signature covers the height asked
        ("expired", "REQUEST_EXPIRED"),
        ("far_future", "BAD_REQUEST"),
        ("no_attestation", "NO_ATTESTATION"),
        ("outsider", "NOT_IN_TREE"),
    ],
)
def test_refusals(stack: Stack, case: str, code: str) -> None:
    holder = HOLDERS[3]
    if case == "other_key":
        answer = stack.proof(holder, 4, signer=OUTSIDER, address=holder.address)
    elif case == "forged":
        request = request_of(chain_id=CHAIN, address=holder.address, asset=ASSET, height=4,
                             not_after_ms=stack.now_ms + 60_000, key=holder.key)
        signature = OUTSIDER.sign_bytes(canonical_bytes(request)).hex()
        answer = stack.gql(
            "query($w: String!, $k: KeyInput!, $s: String!, $n: BigInt!) { liabilityProof(asset: \"USDC\","
            " address: $w, height: 4, notAfterMs: $n, key: $k, signature: $s) { balance } }",
            w=holder.address, k=holder.key, s=signature, n=str(stack.now_ms + 60_000),
        )
    elif case == "height_changed":
        answer = stack.proof(holder, 4, asked=2)
    elif case == "expired":
        answer = stack.proof(holder, 4, not_after_ms=stack.now_ms - 1)
    elif case == "far_future":
        answer = stack.proof(holder, 4, not_after_ms=int(time.time() * 1000) + REQUEST_TTL_MS_MAX + 60_000)
    elif case == "no_attestation":
        answer = stack.proof(holder, 3)
    else:
        answer = stack.proof(OUTSIDER, 4)
    (error,) = answer["errors"]
    assert error["extensions"]["code"] == code, error
    assert answer["data"] is None and error["message"] != "internal error"


class _Queries(ReserveQueries):
    """The real reads, counting tree rebuilds; `skew` adds to one holder's balance (views that went wrong)."""

    def __init__(self, model: ReadModel, skew: int = 0) -> None:
        super().__init__(model)
        self.skew = skew
        self.rebuilds = 0

    def holdings(self, chain_id: str, asset: str, height: int) -> tuple[int, list[tuple[str, int]]]:
        self.rebuilds += 1
        position, held = super().holdings(chain_id, asset, height)
        return position, [(a, b + self.skew * (a == HOLDERS[0].address)) for a, b in held]


def _signed(holder: KeyPair, height: int | None) -> tuple[dict[str, Any], str]:
    request = request_of(chain_id=CHAIN, address=holder.address, asset=ASSET, height=height,
                         not_after_ms=int(time.time() * 1000) + 60_000, key=holder.key)
    return request, holder.sign_bytes(canonical_bytes(request)).hex()


def test_a_tree_that_does_not_give_the_attested_root_is_refused_loudly(stack: Stack,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    proofs = LiabilityProofs(_Queries(ReadModel(stack.store), skew=1), stack.service.attestor.secret)
    with pytest.raises(ProofRefused) as refused:
        proofs.proof(*_signed(HOLDERS[4], 4))
    assert refused.value.code == "ROOT_MISMATCH" and "do not give the attested root" in refused.value.message
    assert any(r.levelname == "ERROR" and "Refusing proofs" in r.getMessage() for r in caplog.records)


def test_the_trees_of_the_latest_attestations_are_kept(stack: Stack) -> None:
    queries = _Queries(ReadModel(stack.store))
    proofs = LiabilityProofs(queries, stack.service.attestor.secret, cache_leaves_max=8)
    for holder in (HOLDERS[0], HOLDERS[2], HOLDERS[3], HOLDERS[4]):  # HOLDERS[1] withdrew everything
        proofs.proof(*_signed(holder, 4))
    assert queries.rebuilds == 1
    proofs.proof(*_signed(HOLDERS[0], 2))  # 8 leaves more: over the bound, the older tree goes
    proofs.proof(*_signed(HOLDERS[0], 2))
    proofs.proof(*_signed(HOLDERS[0], 4))
    assert queries.rebuilds == 3


def test_a_large_tree_is_built_in_a_worker_process(stack: Stack) -> None:
    """From `process_holders_min` holders on, the rebuild runs in a worker process (the API's threads keep the
    GIL); the proofs are the same."""
    inline = LiabilityProofs(ReserveQueries(ReadModel(stack.store)), stack.service.attestor.secret,
                             builder=TreeBuilder(process_holders_min=0))
    worker = LiabilityProofs(ReserveQueries(ReadModel(stack.store)), stack.service.attestor.secret,
                             builder=TreeBuilder(process_holders_min=1))
    try:
        request = _signed(HOLDERS[6], 4)
        assert worker.proof(*request) == inline.proof(*request)
        assert worker.builder._pool is not None and inline.builder._pool is None
    finally:
        worker.close()


def test_without_the_secret_no_proof_is_served(stack: Stack) -> None:
    with pytest.raises(ProofRefused) as refused:
        LiabilityProofs(ReserveQueries(ReadModel(stack.store)), None).proof(*_signed(HOLDERS[0], 4))
    assert refused.value.code == "PROOFS_UNAVAILABLE"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_cli_round_trip_over_a_socket(stack: Stack, tmp_path: Path) -> None:
    """`tally liability-proof` signs with a key file and saves the proof; `tally verify-proof --url` checks it
    against the root the ledger publishes."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(stack.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-proofs", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        key_file = tmp_path / "holder.key"
        write_key_file(key_file, blake3(b"holder-5").digest(), "ml-dsa-65")
        out = tmp_path / "proof.json"
        runner = CliRunner()
        fetched = runner.invoke(tally, ["liability-proof", "--key", str(key_file), "--asset", "USDC", "--height", "2",
                                        "--url", url, "--out", str(out)])
        assert fetched.exit_code == 0, fetched.output
        assert f"{HOLDERS[5].address}: 6000 USDC at height 2" in fetched.output
        checked = runner.invoke(tally, ["verify-proof", str(out), "--url", url])
        assert checked.exit_code == 0 and "holds 6000 USDC" in checked.output, checked.output
        refused = runner.invoke(tally, ["liability-proof", "--key", str(key_file), "--asset", "USDC", "--height", "3",
                                        "--url", url])
        assert refused.exit_code == 1 and "no attestation of USDC at height 3" in refused.output
        gone = runner.invoke(tally, ["verify-proof", str(out), "--url", "http://127.0.0.1:1"])
        assert gone.exit_code == 2
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_proof_is_small() -> None:
    """A proof of a tree of 2**20 leaves has 20 steps: about 3 KB of JSON."""
    document = json.loads(_PROOF)
    step = document["path"][0]
    document["path"] = [step] * 20
    document["leaf_count"] = 2**20
    assert len(proof_format.canonical(document)) < 3_500


def test_the_reserves_gauges(stack: Stack) -> None:
    """/metrics: the ratio and figures of every bridged asset at the head, and the newest attested height."""
    from prometheus_client.parser import text_string_to_metric_families

    text = stack.client.get("/metrics").text
    samples = {(s.name, s.labels.get("asset")): s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name.startswith("tally_reserves_")}
    assert samples == {
        ("tally_reserves_ratio", ASSET): 1.0, ("tally_reserves_escrow", ASSET): 34005.0,
        ("tally_reserves_liabilities", ASSET): 34005.0, ("tally_reserves_pending", ASSET): 500.0,
        ("tally_reserves_attested_height", ASSET): 4.0,
    }
