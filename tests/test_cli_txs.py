"""The operators' and slashers' commands (api/cli_txs.py, api/keyfile.py, api/ledger_client.py): key files, evidence
checked offline with the ledger's own rule, submitting through the tx pool and waiting for the receipt, the validator
views against their GraphQL contract; then the whole round trip against a running `tally up`."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

import httpx
import pytest
import strawberry
from click.testing import CliRunner, Result
from test_cli import _free_port, needs_the_stack, start_tally_up, stop, wait_ready

import api.cli_txs
from api.cli import main
from api.cli_txs import EXIT_OK, EXIT_REFUSED, EXIT_TIMEOUT, EXIT_UNREACHABLE, canonical_evidence
from api.keyfile import KeyFileError, load_key_file, load_public_key, write_key_file
from api.ledger_client import LedgerClient, LedgerError
from schemas import build
from schemas.signing import KeyPair
from writes.devnet import RESERVED_ACCOUNTS, SEED_FILE, derive_keys, reserved_accounts

SEED = bytes(range(32))
VALIDATOR = KeyPair.from_seed(b"cli-validator")
OTHER = KeyPair.from_seed(b"someone else")
HASH_A, HASH_B = "aa" * 32, "bb" * 32


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def last_json(result: Result) -> dict[str, Any]:
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- key files


def test_keygen_writes_a_private_key_file_for_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    result = run("keygen", "--out", path, "--alg", "ml-dsa-87")
    assert result.exit_code == EXIT_OK, result.output
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert set(doc) == {"alg", "seed", "address"} and doc["alg"] == "ml-dsa-87" and len(doc["seed"]) == 64
    key = load_key_file(path)
    assert key.address == doc["address"] == last_json(result)["address"]
    assert key.pk == KeyPair.from_seed(bytes.fromhex(doc["seed"]), "ml-dsa-87").pk
    again = run("keygen", "--out", path)
    assert again.exit_code == EXIT_REFUSED and "exists; pass --force" in again.stderr
    assert json.loads(path.read_text()) == doc  # kept
    assert run("keygen", "--out", path, "--force").exit_code == EXIT_OK
    assert json.loads(path.read_text())["seed"] != doc["seed"]


def test_key_files_that_cannot_be_used_are_named(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    write_key_file(path, bytes(32), "ml-dsa-65")
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="permissions 0644 are too open"):
        load_key_file(path)
    os.chmod(path, 0o600)
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "address": "0x" + "00" * 20}))
    with pytest.raises(KeyFileError, match="is not the address of its seed"):
        load_key_file(path)
    path.write_text(json.dumps({**doc, "seed": "XYZ"}))
    with pytest.raises(KeyFileError, match="seed must be 64 lowercase hex"):
        load_key_file(path)
    with pytest.raises(KeyFileError, match="no such file"):
        load_key_file(tmp_path / "missing.json")
    public = tmp_path / "pk.json"
    public.write_text(json.dumps(VALIDATOR.key))
    assert load_public_key(public) == VALIDATOR.key
    public.write_text(json.dumps({"alg": "ml-dsa-65", "pk": "00"}))
    with pytest.raises(KeyFileError, match="pk must be 1952 bytes"):
        load_public_key(public)


def test_devnet_key_exports_the_reserved_accounts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    missing = run("devnet-key", "--out", tmp_path / "k.json", "--data-dir", data)
    assert missing.exit_code == EXIT_REFUSED and "no devnet seed" in missing.stderr
    data.mkdir()
    (data / SEED_FILE).write_text(SEED.hex() + "\n")
    reserved = reserved_accounts(derive_keys(SEED))
    for index in range(RESERVED_ACCOUNTS):
        out = tmp_path / f"k{index}.json"
        result = run("devnet-key", "--index", str(index), "--out", out, "--data-dir", data)
        assert result.exit_code == EXIT_OK, result.output
        assert load_key_file(out).address == reserved[index].address == last_json(result)["address"]
    too_far = run("devnet-key", "--index", str(RESERVED_ACCOUNTS), "--out", tmp_path / "x.json", "--data-dir", data)
    assert too_far.exit_code == EXIT_REFUSED and "--index must be below 4" in too_far.stderr


# ---------------------------------------------------------------- evidence, offline


def vote_file(tmp_path: Path, name: str, *, key: KeyPair = VALIDATOR, node: str = "cli-node", height: int = 9,
              block_hash: str = HASH_A, chain: str = "devnet") -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(build.vote(chain, node, key, height, block_hash)))
    return path


def pk_file(tmp_path: Path, key: KeyPair = VALIDATOR) -> Path:
    path = tmp_path / "validator.pk.json"
    path.write_text(json.dumps(key.key))
    return path


def test_evidence_is_canonical_whatever_the_order_of_the_votes(tmp_path: Path) -> None:
    a, b = vote_file(tmp_path, "a"), vote_file(tmp_path, "b", block_hash=HASH_B)
    one = run("evidence", a, b, "--validator-key-pk", pk_file(tmp_path))
    two = run("evidence", b, a, "--validator-key-pk", pk_file(tmp_path), "--out", tmp_path / "ev.json")
    assert one.exit_code == two.exit_code == EXIT_OK, one.output + two.output
    assert one.stdout == (tmp_path / "ev.json").read_text()
    votes = json.loads(one.stdout)
    assert [v["block_hash"] for v in votes] == [HASH_A, HASH_B]
    assert votes == canonical_evidence([json.loads(b.read_text()), json.loads(a.read_text())])
    assert one.stdout == json.dumps(votes, sort_keys=True, separators=(",", ":")) + "\n"


@pytest.mark.parametrize(
    ("b_change", "pk_key", "words"),
    [
        ({"block_hash": HASH_A}, VALIDATOR, "the votes are for the same block"),
        ({"height": 10}, VALIDATOR, "the votes are for different heights"),
        ({"node": "other-node"}, VALIDATOR, "both votes must be by 'cli-node'"),
        ({"chain": "other-chain"}, VALIDATOR, "a vote is for another chain than 'devnet'"),
        ({"key": OTHER}, VALIDATOR, "vote 1 does not verify under 'cli-node''s key"),
        ({}, OTHER, "vote 0 does not verify"),
    ],
)
def test_evidence_the_ledger_would_reject_is_refused_offline(
    tmp_path: Path, b_change: dict[str, Any], pk_key: KeyPair, words: str
) -> None:
    a = vote_file(tmp_path, "a")
    b = vote_file(tmp_path, "b", **{"block_hash": HASH_B, **b_change})
    result = run("evidence", a, b, "--validator-key-pk", pk_file(tmp_path, pk_key))
    assert result.exit_code == EXIT_REFUSED and result.stdout == ""
    assert words in result.stderr


def test_evidence_needs_well_formed_votes_and_a_public_key(tmp_path: Path) -> None:
    a, b = vote_file(tmp_path, "a"), vote_file(tmp_path, "b", block_hash=HASH_B)
    no_key = run("evidence", a, b)
    assert no_key.exit_code == EXIT_REFUSED and "--validator-key-pk" in no_key.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(b.read_text()), "height": -1}))
    result = run("evidence", a, bad, "--validator-key-pk", pk_file(tmp_path))
    assert result.exit_code == EXIT_REFUSED
    assert f"{bad}: malformed vote: height must be between 0 and 2**63-1" in result.stderr
    bad.write_text("[1, 2]")
    assert "a vote is a JSON object" in run("evidence", a, bad, "--validator-key-pk", pk_file(tmp_path)).stderr


# ---------------------------------------------------------------- submitting, against a stand-in ledger


class FakeLedger:
    """`/v1/txs` and `/graphql` (head, account, receipt) of a ledger, in memory."""

    def __init__(self, *, pool_status: int = 200, receipt_after: int = 1, outcome: str = "") -> None:
        self.pool_status = pool_status
        self.receipt_after = receipt_after  # receipt polls before the receipt appears
        self.outcome = outcome  # "" applied, else the rejection reason
        self.posted: list[dict[str, Any]] = []
        self.polls = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/v1/txs":
            if self.pool_status != 200:
                return httpx.Response(self.pool_status, json={"status": "rejected", "reason": "no_block_producer",
                                                              "message": "no devnet here"})
            self.posted += body
            return httpx.Response(200, json=[{"status": "queued", "tx_id": "ab" * 32, "index": 0} for _ in body])
        query = body["query"]
        if "head" in query:
            return httpx.Response(200, json={"data": {"head": {"chainId": "devnet"}}})
        if "account" in query:
            return httpx.Response(200, json={"data": {"account": {"nonce": "7"}}})
        self.polls += 1
        receipt = None
        if self.polls > self.receipt_after:
            status = "rejected" if self.outcome else "applied"
            receipt = {"txId": "ab" * 32, "status": status, "reason": self.outcome or None, "height": 3}
        return httpx.Response(200, json={"data": {"receipt": receipt}})


@pytest.fixture
def fake_ledger(monkeypatch: pytest.MonkeyPatch) -> FakeLedger:
    fake = FakeLedger()

    @contextmanager
    def ledger(url: str | None) -> Iterator[LedgerClient]:
        with httpx.Client(transport=httpx.MockTransport(fake.handle)) as client:
            yield LedgerClient("http://ledger.test", client)

    monkeypatch.setattr(api.cli_txs, "_ledger", ledger)
    monkeypatch.setattr("api.ledger_client.RECEIPT_POLL_INTERVAL_MS", 1)
    return fake


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    paths = {"op": tmp_path / "op.json", "val": tmp_path / "val.json"}
    write_key_file(paths["op"], bytes(32), "ml-dsa-65")
    write_key_file(paths["val"], bytes([1] * 32), "ml-dsa-87")
    return paths


def test_enroll_builds_signs_asks_the_nonce_and_waits_for_the_receipt(
    fake_ledger: FakeLedger, keys: dict[str, Path]
) -> None:
    result = run("enroll", "--key", keys["op"], "--node-id", "n-1", "--gpu-uuid", "GPU-1", "--stake", "20000000",
                 "--validator-key", keys["val"])
    assert result.exit_code == EXIT_OK, result.output
    [tx] = fake_ledger.posted
    operator, validator = load_key_file(keys["op"]), load_key_file(keys["val"])
    assert (tx["kind"], tx["chain_id"], tx["nonce"], tx["stake"]) == ("enroll", "devnet", 7, 20_000_000)
    assert tx["operator"] == tx["signer"] == operator.address and tx["validator_key"] == validator.key
    from writes.txpool import check_tx

    check_tx(tx, 0, "devnet")  # shape and signature as the ledger checks them
    assert last_json(result)["status"] == "applied" and "waiting for its receipt" in result.stderr
    assert fake_ledger.polls == 2


def test_a_rejected_receipt_exits_1_and_a_late_one_3(fake_ledger: FakeLedger, keys: dict[str, Path]) -> None:
    fake_ledger.outcome = "not_operator"
    result = run("unenroll", "--key", keys["op"], "--node-id", "n-1", "--nonce", "3")
    assert result.exit_code == EXIT_REFUSED and last_json(result)["reason"] == "not_operator"
    assert fake_ledger.posted[-1]["nonce"] == 3
    fake_ledger.outcome, fake_ledger.polls, fake_ledger.receipt_after = "", 0, 10**9
    late = run("unenroll", "--key", keys["op"], "--node-id", "n-1", "--timeout", "0.05")
    assert late.exit_code == EXIT_TIMEOUT and "no receipt after 0.05 s" in late.stderr
    queued = run("unenroll", "--key", keys["op"], "--node-id", "n-1", "--no-wait")
    assert queued.exit_code == EXIT_OK and last_json(queued)["status"] == "queued"


def test_bad_inputs_are_refused_before_anything_is_sent(
    fake_ledger: FakeLedger, keys: dict[str, Path], tmp_path: Path
) -> None:
    base = ["enroll", "--key", keys["op"], "--gpu-uuid", "GPU-1", "--validator-key", keys["val"], "--nonce", "0"]
    bad_id = run(*base, "--node-id", "no spaces", "--stake", "1")
    assert bad_id.exit_code == EXIT_REFUSED
    assert "node_id must be an identifier [A-Za-z0-9._:-]{1,128} (--node-id)" in bad_id.stderr
    huge = run(*base, "--node-id", "n", "--stake", str(2**63))
    assert huge.exit_code == EXIT_REFUSED and "stake must be between 0 and 2**63-1 (--stake)" in huge.stderr
    open_key = tmp_path / "open.json"
    write_key_file(open_key, bytes(32), "ml-dsa-65")
    os.chmod(open_key, 0o640)
    loose = run("unenroll", "--key", open_key, "--node-id", "n")
    assert loose.exit_code == EXIT_REFUSED and "too open" in loose.stderr
    ev = tmp_path / "ev.json"
    votes = [build.vote("devnet", "n", VALIDATOR, 5, h) for h in (HASH_A, HASH_A)]
    ev.write_text(json.dumps(votes))
    same = run("slash", "--key", keys["op"], "--evidence", ev)
    assert same.exit_code == EXIT_REFUSED and "not evidence: the votes are for the same block" in same.stderr
    ev.write_text(json.dumps(votes[:1]))
    assert "evidence is a JSON array of two votes" in run("slash", "--key", keys["op"], "--evidence", ev).stderr
    assert fake_ledger.posted == []


def test_without_a_devnet_the_pool_refusal_is_shown(fake_ledger: FakeLedger, keys: dict[str, Path]) -> None:
    fake_ledger.pool_status = 503
    result = run("unenroll", "--key", keys["op"], "--node-id", "n-1")
    assert result.exit_code == EXIT_REFUSED
    assert "no_block_producer: no devnet here (HTTP 503)" in result.stderr


def test_an_unreachable_ledger_exits_2(keys: dict[str, Path]) -> None:
    result = run("unenroll", "--key", keys["op"], "--node-id", "n-1", "--url", f"http://127.0.0.1:{_free_port()}")
    assert result.exit_code == EXIT_UNREACHABLE and "cannot reach" in result.stderr


# ---------------------------------------------------------------- validator views, against their GraphQL contract


@strawberry.enum
class Phase(Enum):
    ACTIVE = "active"
    UNBONDING = "unbonding"
    RELEASED = "released"


@strawberry.type
class Key:
    alg: str
    pk: str


@strawberry.type
class Validator:
    node_id: str
    operator: str
    phase: Phase
    stake: str
    slashable: bool
    gpu_uuid: str
    key: Key


@strawberry.type
class ValidatorEdge:
    cursor: str
    node: Validator


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class ValidatorConnection:
    edges: list[ValidatorEdge]
    page_info: PageInfo


@strawberry.type
class SlashReceipt:
    tx_id: str
    node_id: str
    status: str
    reason: str | None
    slashed: str
    burned: str


VALIDATORS = [
    Validator(node_id=f"node-{i}", operator="0x" + f"{i:02x}" * 20, phase=Phase.ACTIVE if i % 3 else Phase.UNBONDING,
              stake=str(10_000_000 * (i + 1)), slashable=True, gpu_uuid=f"GPU-{i}", key=Key(alg="ml-dsa-65", pk="00"))
    for i in range(7)
]  # fmt: skip


@strawberry.type
class Query:
    @strawberry.field
    def validators(
        self, phase: Phase | None = None, first: int | None = None, after: str | None = None,
        chain_id: str | None = None,
    ) -> ValidatorConnection:  # fmt: skip
        rows = [v for v in VALIDATORS if phase is None or v.phase == phase]
        start = 0 if after is None else int(after) + 1
        page = rows[start : start + (first or 2)]
        edges = [ValidatorEdge(cursor=str(start + i), node=v) for i, v in enumerate(page)]
        more = start + len(page) < len(rows)
        return ValidatorConnection(edges=edges, page_info=PageInfo(has_next_page=more, end_cursor=edges[-1].cursor))

    @strawberry.field
    def slash_receipt(self, tx_id: str) -> SlashReceipt | None:
        if tx_id != "ab" * 32:
            return None
        return SlashReceipt(tx_id=tx_id, node_id="node-1", status="applied", reason=None, slashed="5", burned="4")

    @strawberry.field
    def validator(self, node_id: str, chain_id: str | None = None) -> Validator | None:
        return next((v for v in VALIDATORS if v.node_id == node_id), None)


@strawberry.type
class OldQuery:
    @strawberry.field
    def head(self) -> str:
        return "no validator views here"


@contextmanager
def served(query_type: type, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The CLI's ledger answers GraphQL with a schema of `query_type`; yields the queries it got."""
    schema = strawberry.Schema(query=query_type)
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body["query"])
        result = schema.execute_sync(body["query"], variable_values=body.get("variables"))
        errors = [{"message": e.message} for e in result.errors or ()]
        return httpx.Response(200, json={"data": result.data, **({"errors": errors} if errors else {})})

    @contextmanager
    def ledger(url: str | None) -> Iterator[LedgerClient]:
        with httpx.Client(transport=httpx.MockTransport(handle)) as client:
            yield LedgerClient("http://ledger.test", client)

    monkeypatch.setattr(api.cli_txs, "_ledger", ledger)
    yield seen


def test_validators_all_follows_the_cursors_to_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    with served(Query, monkeypatch) as seen:
        every = run("validators", "--all")
        assert every.exit_code == EXIT_OK, every.output
        nodes = [json.loads(line) for line in every.stdout.splitlines()]
        assert [n["nodeId"] for n in nodes] == [v.node_id for v in VALIDATORS]
        assert set(nodes[0]) == {"nodeId", "operator", "phase", "stake", "slashable", "gpuUuid", "key"}
        pages = [q for q in seen if "pageInfo" in q]
        assert len(pages) == 4  # 2 per page by default
        active = run("validators", "--all", "--phase", "active", "--first", "3")
        assert [json.loads(line)["nodeId"] for line in active.stdout.splitlines()] == [
            v.node_id for v in VALIDATORS if v.phase == Phase.ACTIVE
        ]
        one = run("validators", "--first", "3")
        assert len(one.stdout.splitlines()) == 3 and "--after 2" in one.stderr
        rest = run("validators", "--first", "3", "--after", "5")
        assert [json.loads(line)["nodeId"] for line in rest.stdout.splitlines()] == ["node-6"]


def test_slash_receipt_prints_what_the_ledger_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    with served(Query, monkeypatch):
        found = run("slash-receipt", "ab" * 32)
        assert found.exit_code == EXIT_OK, found.output
        assert last_json(found) == {"txId": "ab" * 32, "nodeId": "node-1", "status": "applied", "reason": None,
                                    "slashed": "5", "burned": "4"}
        missing = run("slash-receipt", "cd" * 32)
        assert missing.exit_code == EXIT_REFUSED and "no slash receipt" in missing.stderr


def test_evidence_can_take_the_key_from_the_ledger(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    VALIDATORS[1].key = Key(**VALIDATOR.key)
    a = vote_file(tmp_path, "a", node="node-1")
    b = vote_file(tmp_path, "b", node="node-1", block_hash=HASH_B)
    with served(Query, monkeypatch):
        result = run("evidence", a, b, "--url", "http://ledger.test")
        assert result.exit_code == EXIT_OK, result.output
        assert len(json.loads(result.stdout)) == 2
        nobody = run("evidence", vote_file(tmp_path, "c", node="x"), vote_file(tmp_path, "d", node="x",
                     block_hash=HASH_B), "--url", "http://ledger.test")  # fmt: skip
        assert nobody.exit_code == EXIT_REFUSED and "has no validator 'x'" in nobody.stderr


def test_a_ledger_without_the_views_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with served(OldQuery, monkeypatch):
        for args in (["validators"], ["slash-receipt", "ab" * 32]):
            result = run(*args)
            assert result.exit_code == EXIT_REFUSED and "does not serve" in result.stderr
        a, b = vote_file(tmp_path, "a"), vote_file(tmp_path, "b", block_hash=HASH_B)
        result = run("evidence", a, b, "--url", "http://ledger.test")
        assert result.exit_code == EXIT_REFUSED and "does not serve `validator`" in result.stderr


def test_an_enum_phase_is_spelled_as_the_server_spells_it() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        result = strawberry.Schema(query=Query).execute_sync(body["query"], variable_values=body.get("variables"))
        return httpx.Response(200, json={"data": result.data})

    with httpx.Client(transport=httpx.MockTransport(handle)) as http:
        ledger = LedgerClient("http://ledger.test", http)
        field = ledger.root_field("validators", "")
        assert ledger.enum_value(field.args["phase"], "unbonding") == "UNBONDING"
        with pytest.raises(LedgerError, match="'frozen' is not one of active, unbonding, released"):
            ledger.enum_value(field.args["phase"], "frozen")


# ---------------------------------------------------------------- against `tally up`


@pytest.fixture
def devnet_up(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`tally up` with its devnet, blocks every 200 ms: (base URL, data dir)."""
    needs_the_stack()
    port = _free_port()
    data = tmp_path / "data"
    data.mkdir()
    proc = start_tally_up(data, port, "--block-interval-ms", "200", "--txs-per-block", "5")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)  # may come before the devnet's genesis is in the views: wait for its blocks too
        with httpx.Client(timeout=10) as http:
            ledger = LedgerClient(url, http)
            deadline = time.monotonic() + 60
            while (ledger.graphql("{ head { height } }")["head"] or {}).get("height", 0) < 2:
                assert time.monotonic() < deadline, "the devnet made no blocks"
                time.sleep(0.1)
        yield url, data
    finally:
        code = stop(proc)
    assert code == 0, "tally up must shut down cleanly on SIGTERM"


def serves(url: str, field: str) -> bool:
    with httpx.Client(timeout=10) as http:
        return LedgerClient(url, http).field("Query", field) is not None


@pytest.mark.slow
def test_the_cli_round_trip_against_tally_up(devnet_up: tuple[str, Path], tmp_path: Path) -> None:
    url, data = devnet_up
    u = ["--url", url]
    assert run("keygen", "--out", tmp_path / "validator.json").exit_code == EXIT_OK
    for index, name in ((0, "operator"), (1, "reporter")):
        assert run("devnet-key", "--index", str(index), "--out", tmp_path / f"{name}.json", "--data-dir", data)\
            .exit_code == EXIT_OK  # fmt: skip
    operator = tmp_path / "operator.json"
    reporter = tmp_path / "reporter.json"
    validator = load_key_file(tmp_path / "validator.json")

    enrolled = run("enroll", "--key", operator, "--node-id", "cli-node", "--gpu-uuid", "GPU-CLI", "--stake",
                   "20000000", "--validator-key", tmp_path / "validator.json", *u)  # fmt: skip
    assert enrolled.exit_code == EXIT_OK, enrolled.output
    assert last_json(enrolled)["status"] == "applied" and last_json(enrolled)["chainId"] == "devnet"
    taken = run("enroll", "--key", operator, "--node-id", "cli-node", "--gpu-uuid", "GPU-CLI-2", "--stake",
                "20000000", "--validator-key", tmp_path / "validator.json", *u)  # fmt: skip
    assert taken.exit_code == EXIT_REFUSED and last_json(taken)["reason"] == "node_id_taken"

    # The validator double-votes at height 5; the slasher builds evidence offline and reports it.
    for name, block_hash in (("a", HASH_A), ("b", HASH_B)):
        (tmp_path / f"vote_{name}.json").write_text(json.dumps(build.vote("devnet", "cli-node", validator, 5,
                                                                          block_hash)))  # fmt: skip
    ev = tmp_path / "evidence.json"
    built = run("evidence", tmp_path / "vote_b.json", tmp_path / "vote_a.json", "--validator-key-pk",
                tmp_path / "validator.json", "--out", ev)  # fmt: skip
    assert built.exit_code == EXIT_OK, built.output
    slashed = run("slash", "--key", reporter, "--evidence", ev, *u)
    assert slashed.exit_code == EXIT_OK, slashed.output
    receipt = last_json(slashed)
    assert receipt["status"] == "applied"
    again = run("slash", "--key", reporter, "--evidence", ev, *u)
    assert again.exit_code == EXIT_REFUSED and last_json(again)["reason"] == "duplicate_offence"

    left = run("unenroll", "--key", operator, "--node-id", "cli-node", *u)
    assert left.exit_code == EXIT_OK and last_json(left)["status"] == "applied", left.output
    twice = run("unenroll", "--key", operator, "--node-id", "cli-node", *u)
    assert twice.exit_code == EXIT_REFUSED and last_json(twice)["reason"] == "not_active"
    stranger = run("unenroll", "--key", reporter, "--node-id", "devnet-node-0", *u)
    assert stranger.exit_code == EXIT_REFUSED and last_json(stranger)["reason"] == "not_operator"

    # The pool's own answers: a tx with a bad signature, one for another chain.
    with httpx.Client(timeout=10) as http:
        key = load_key_file(reporter)
        tx = build.transfer("devnet", key, key.address, 1, nonce=0)
        answers = http.post(f"{url}/v1/txs", json=[{**tx, "amount": 2}, build.transfer("other", key, key.address, 1,
                                                                                       nonce=0)]).json()  # fmt: skip
        assert [(a["reason"], a["index"]) for a in answers] == [("bad_tx_signature", 0), ("malformed_tx", 1)]
        assert "chain_id 'other' differs" in answers[1]["message"]

    # The validator views (issue 4's read side) may trail the receipts by a batch of the follower.
    assert serves(url, "slashReceipt") and serves(url, "validators")
    found = eventually(lambda: run("slash-receipt", receipt["txId"], *u), lambda r: r.exit_code == EXIT_OK)
    slash_receipt = last_json(found)
    assert (slash_receipt["nodeId"], slash_receipt["offenceHeight"], slash_receipt["status"]) == ("cli-node", 5,
                                                                                                   "applied")
    assert [slash_receipt[k] for k in ("slashed", "toReporter", "burned")] == ["10000000", "1000000", "9000000"]
    assert slash_receipt["reporter"] == load_key_file(reporter).address

    def cli_node(result: Result) -> dict[str, Any] | None:
        listed = [json.loads(line) for line in result.stdout.splitlines()]
        assert len({n["nodeId"] for n in listed}) == len(listed)  # --all visits each once
        return next((n for n in listed if n["nodeId"] == "cli-node"), None)

    listed = eventually(lambda: run("validators", "--all", "--first", "3", *u),
                        lambda r: (cli_node(r) or {}).get("phase") == "UNBONDING")  # fmt: skip
    node = cli_node(listed)
    assert node is not None and node["stake"] == "10000000" and node["key"] == validator.key
    assert node["operator"] == load_key_file(operator).address
    unbonding = [json.loads(line)["nodeId"] for line in run("validators", "--all", "--phase", "unbonding", *u)
                 .stdout.splitlines()]  # fmt: skip
    assert "cli-node" in unbonding
    # With the views serving keys, evidence can take the validator's key from the ledger.
    from_ledger = run("evidence", tmp_path / "vote_a.json", tmp_path / "vote_b.json", *u)
    assert from_ledger.exit_code == EXIT_OK, from_ledger.output
    assert from_ledger.stdout == ev.read_text()


def eventually(act: Any, done: Any, timeout_s: float = 20.0) -> Result:
    """`act()` until `done(result)`, for reads of views that trail the log."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = act()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


@pytest.mark.slow
def test_without_the_devnet_txs_are_answered_503(tmp_path: Path, keys: dict[str, Path]) -> None:
    needs_the_stack()
    port = _free_port()
    data = tmp_path / "data"
    data.mkdir()
    proc = start_tally_up(data, port, "--no-devnet")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        response = httpx.post(f"{url}/v1/txs", json={"kind": "transfer"}, timeout=10)
        assert response.status_code == 503 and response.json()["reason"] == "no_block_producer"
        result = run("unenroll", "--key", keys["op"], "--node-id", "n", "--nonce", "0", "--chain-id", "devnet",
                     "--url", url)  # fmt: skip
        assert result.exit_code == EXIT_REFUSED
        assert "inside a block from a node" in result.stderr
    finally:
        assert stop(proc) == 0
