"""schemas/jsonschema/*.json and schemas/wire.py: what schemas/build.py makes conforms; what the ledger finds
malformed breaks the schema too, except the rules JSON Schema cannot state (listed in each file's $comment)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from schemas import build, commands, wire
from schemas.canonical import genesis_hash
from schemas.limits import AMOUNT_MAX, PARAM_DEFAULTS
from schemas.reasons import Rejection
from tests.chain import ALICE, BOB, CAROL, CHAIN_ID, GENESIS_MS, genesis_command, keypair, validators
from tests.malformed import (
    BLOCK_CASES,
    COMMAND_CASES,
    EQUIVOCATOR,
    EVIDENCE_HASHES,
    GENESIS_CASES,
    TX_CASES,
    VOTE_CASES,
    Case,
)

SCHEMA_DIR = Path(wire.__file__).parent / "jsonschema"
RELAYERS = [("relayer-a", keypair("relayer-a")), ("relayer-b", keypair("relayer-b", "ml-dsa-87"))]


def genesis() -> dict[str, Any]:
    return genesis_command(relayers=RELAYERS, params={"max_block_txs": 10, "slash_bps": 10_000})


def transfer(**fields: Any) -> dict[str, Any]:
    return {**build.transfer(CHAIN_ID, ALICE, BOB.address, 5, nonce=0, fee=1), **fields}


def enroll(**fields: Any) -> dict[str, Any]:
    return {**build.enroll(CHAIN_ID, BOB, "node-9", "GPU-0009", 10_000_000, keypair("node-9"), nonce=0), **fields}


def unenroll(**fields: Any) -> dict[str, Any]:
    return {**build.unenroll(CHAIN_ID, validators()[1].operator, "node-1", nonce=0), **fields}


def slash(votes: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    v = EQUIVOCATOR
    votes = build.evidence(CHAIN_ID, v.node_id, v.key, 1, EVIDENCE_HASHES) if votes is None else votes
    return {**build.slash(CHAIN_ID, CAROL, v.node_id, votes, nonce=0), **fields}


RELAYER = RELAYERS[1][1]  # an ML-DSA-87 relayer key


def bridge_deposit(**fields: Any) -> dict[str, Any]:
    return {**build.bridge_deposit(CHAIN_ID, RELAYER, "deposit-1", "USDC", BOB.address, 5), **fields}


def withdraw_request(**fields: Any) -> dict[str, Any]:
    return {**build.withdraw_request(CHAIN_ID, BOB, "withdrawal-1", "USDC", 5, nonce=0), **fields}


def withdraw_confirm(**fields: Any) -> dict[str, Any]:
    return {**build.withdraw_confirm(CHAIN_ID, RELAYER, "withdrawal-1"), **fields}


def withdraw_reject(**fields: Any) -> dict[str, Any]:
    return {**build.withdraw_reject(CHAIN_ID, RELAYER, "withdrawal-1"), **fields}


TXS = {
    "transfer": transfer, "enroll": enroll, "unenroll": unenroll, "slash": slash, "bridge_deposit": bridge_deposit,
    "withdraw_request": withdraw_request, "withdraw_confirm": withdraw_confirm, "withdraw_reject": withdraw_reject,
}
TEXT_MAX = ("".join(map(chr, range(0x20, 0x7F))) * 3)[:256]  # free text: every printable character, 256 of them


def block(txs: list[Any]) -> dict[str, Any]:
    v = validators()[2]
    return build.block(CHAIN_ID, 1, genesis_hash(genesis()), v.node_id, v.key, GENESIS_MS + 1, txs)


def vote() -> dict[str, Any]:
    v = validators()[0]
    return build.vote(CHAIN_ID, v.node_id, v.key, 1, "ab" * 32)


def test_every_file_is_a_draft_2020_12_schema_named_by_its_id() -> None:
    files = sorted(p.stem for p in SCHEMA_DIR.glob("*.json"))
    assert files == sorted(wire.SCHEMA_FILES)
    for name in files:
        schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text("utf-8"))
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == f"{wire.BASE_URI}{name}.json"
        assert schema.get("title") and schema.get("description")


def test_genesis_params_match_the_defaults() -> None:
    params = wire.load("genesis")["properties"]["params"]["properties"]
    assert {name: p["default"] for name, p in params.items()} == PARAM_DEFAULTS


def test_command_kinds_match_the_ledger() -> None:
    assert wire.load("command")["properties"]["kind"]["enum"] == list(commands.COMMAND_KINDS)
    tx = wire.load("tx")
    assert commands.TX_KINDS_SUPPORTED == commands.TX_KINDS == tuple(TXS)
    assert tx["properties"]["kind"]["enum"] == list(commands.TX_KINDS)
    assert [(rule["if"]["properties"]["kind"]["const"], rule["then"]["$ref"]) for rule in tx["allOf"]] == [
        (kind, f"{kind}.json") for kind in commands.TX_KINDS
    ]
    assert "Every kind DOMAIN.md defines is supported" in tx["$comment"]
    assert all(kind in tx["$comment"] for kind in commands.TX_KINDS)
    for kind in commands.TX_KINDS_SUPPORTED:
        schema = wire.load(kind)
        assert set(schema["required"]) == commands.TX_FIELDS[kind], kind
        assert set(schema["properties"]) == commands.TX_FIELDS[kind], kind
        assert schema["additionalProperties"] is False
        assert schema["properties"]["kind"] == {"const": kind}
        role = commands.TX_ROLE[kind]
        assert "Must equal signer" in schema["properties"][role]["description"]
        assert f"`{role}` differing from `signer`" in schema["$comment"]
    assert set(wire.load("block")["required"]) == commands.BLOCK_FIELDS
    assert set(wire.load("vote")["required"]) == commands.VOTE_FIELDS
    assert set(wire.load("genesis")["properties"]) == commands.GENESIS_FIELDS
    attestation = wire.load("attest_reserves")
    assert set(attestation["required"]) == set(attestation["properties"]) == commands.ATTESTATION_FIELDS


def test_relayer_txs_have_no_nonce_and_bridge_assets_are_not_cell() -> None:
    for kind in commands.TX_KINDS:
        schema = wire.load(kind)
        assert ("nonce" in schema["properties"]) is ("nonce" in commands.TX_FIELDS[kind]), kind
        asset = schema["properties"].get("asset")
        if kind in ("bridge_deposit", "withdraw_request"):
            assert asset["$ref"] == "defs.json#/$defs/bridged_asset"
        for name in ("external_tx", "external_address", "reason"):
            if name in schema["properties"]:
                assert schema["properties"][name]["$ref"] == "defs.json#/$defs/text", (kind, name)
    assert wire.load("defs")["$defs"]["bridged_asset"]["not"] == {"const": "CELL"}


@pytest.mark.parametrize(
    "command",
    [
        genesis(),
        genesis_command(),
        genesis_command(vals=[], allocations=[]),
        {k: v for k, v in genesis().items() if k not in ("params", "relayers")},
        block([]),
        block([transfer(), build.transfer(CHAIN_ID, CAROL, ALICE.address, AMOUNT_MAX, nonce=AMOUNT_MAX,
                                          fee=AMOUNT_MAX, asset="USDC")]),
        block([transfer(to=ALICE.address, fee=0)]),
        {**block([]), "height": 0},  # well formed: bad_height is the ledger's answer
        vote(),
        build.vote(CHAIN_ID, "node-2", validators()[2].key, 0, "00" * 32),
        block([enroll(), unenroll(), slash()]),
        block([transfer(), enroll(nonce=1), unenroll(nonce=AMOUNT_MAX), slash(nonce=AMOUNT_MAX)]),
        block([enroll(stake=0, validator_key=CAROL.key), enroll(stake=AMOUNT_MAX, node_id="n" * 128)]),
        block([build.slash(CHAIN_ID, validators()[2].operator, "node-2",
                           build.evidence(CHAIN_ID, "node-2", validators()[2].key, 0, ("00" * 32, "ff" * 32)),
                           nonce=0)]),
        block([bridge_deposit(), withdraw_request(), withdraw_confirm(), withdraw_reject()]),
        block([transfer(), withdraw_request(nonce=1), bridge_deposit(), slash(nonce=AMOUNT_MAX), withdraw_reject()]),
        block([
            bridge_deposit(asset="CELLS", amount=AMOUNT_MAX, reserve_id="r" * 128, from_chain="a", external_tx=""),
            bridge_deposit(asset="U1", amount=1, external_tx=TEXT_MAX, from_chain="ethereum:1"),
            withdraw_request(asset="A" * 16, amount=AMOUNT_MAX, nonce=AMOUNT_MAX, external_address=TEXT_MAX),
            withdraw_request(asset="XCELL", external_address="", to_chain="c" * 128),
            withdraw_confirm(external_tx=""), withdraw_confirm(external_tx=TEXT_MAX),
            withdraw_reject(reason=""), withdraw_reject(reason=TEXT_MAX), withdraw_reject(reason=" "),
        ]),
        {"kind": "attest_reserves", "chain_id": CHAIN_ID, "asset": "USDC"},
    ],
    ids=["genesis", "genesis_default", "genesis_empty", "genesis_minimal", "empty_block", "block", "self_transfer",
         "block_height_0", "vote", "vote_ml_dsa_87", "validator_txs", "mixed_txs", "enroll_edges",
         "slash_ml_dsa_87_votes", "bridge_txs", "mixed_with_bridge_txs", "bridge_edges", "attest_reserves"],
)
def test_what_build_makes_conforms(command: dict[str, Any]) -> None:
    assert wire.validate(command) == []
    assert wire.validate(command, command["kind"]) == []


@pytest.mark.parametrize("kind", commands.TX_KINDS_SUPPORTED)
def test_a_tx_on_its_own_conforms_to_its_kind_and_tx_json_only(kind: str) -> None:
    tx = TXS[kind]()
    assert wire.validate(tx, kind) == []
    assert wire.validate(tx, "tx") == []
    assert wire.validate(tx) == [f"$.kind: '{kind}' is not one of {list(commands.COMMAND_KINDS)}"]
    others = [k for k in commands.TX_KINDS_SUPPORTED if k != kind]
    assert all(wire.validate(tx, other) for other in others)


@pytest.mark.parametrize("case", TX_CASES, ids=[c.id for c in TX_CASES])
def test_malformed_tx_breaks_the_schema(case: Case) -> None:
    errors = wire.validate(block([transfer(), case.mutate(transfer(nonce=1))]))
    if case.schema:
        assert errors and all(e.startswith("$.txs[1]") for e in errors), errors
        assert any(case.field in e for e in errors), errors
    else:
        assert errors == []  # only the ledger can tell (see the $comment of the tx's kind)


def test_evidence_that_proves_nothing_conforms() -> None:
    """What makes evidence invalid_evidence (a receipt, not malformed_tx) is beyond JSON Schema too."""
    v, other = EQUIVOCATOR, validators()[1]
    a, b = build.evidence(CHAIN_ID, v.node_id, v.key, 1, EVIDENCE_HASHES)
    for votes in (
        [a, a],
        [b, a],
        [a, build.vote(CHAIN_ID, v.node_id, v.key, 2, EVIDENCE_HASHES[1])],
        [a, build.vote(CHAIN_ID, other.node_id, other.key, 1, EVIDENCE_HASHES[1])],
        [a, build.vote("other-chain", v.node_id, v.key, 1, EVIDENCE_HASHES[1])],
        [a, {**b, "sig": ""}],
    ):
        assert wire.validate(block([slash(votes)])) == []
    assert wire.validate(block([slash(node_id="node-1")])) == []
    assert "invalid_evidence" in wire.load("slash")["$comment"]


@pytest.mark.parametrize(
    ("command", "field"),
    [
        ({"kind": "attest_reserves", "chain_id": CHAIN_ID, "asset": "CELL"}, "asset"),
        ({"kind": "attest_reserves", "chain_id": CHAIN_ID, "asset": "usdc"}, "asset"),
        ({"kind": "attest_reserves", "chain_id": CHAIN_ID}, "asset"),
        ({"kind": "attest_reserves", "chain_id": "tally test", "asset": "USDC"}, "chain_id"),
        ({"kind": "attest_reserves", "chain_id": CHAIN_ID, "asset": "USDC", "height": 1}, "height"),
    ],
    ids=["cell", "lower_case", "no_asset", "bad_chain_id", "unknown_field"],
)
def test_malformed_attestation_request_breaks_the_schema(command: dict[str, Any], field: str) -> None:
    errors = wire.validate(command)
    assert errors and any(field in e for e in errors), errors
    with pytest.raises(Rejection) as info:
        commands.check_attestation_shape(command)
    assert info.value.reason == "malformed_command" and field in info.value.message


def test_a_bridge_tx_naming_cell_names_the_asset() -> None:
    [error] = wire.validate(bridge_deposit(asset="CELL"), "bridge_deposit")
    assert error.startswith("$.asset: 'CELL' should not be valid"), error
    [error] = wire.validate(block([withdraw_request(asset="CELL")]))
    assert error.startswith("$.txs[0].asset: "), error


@pytest.mark.parametrize("case", BLOCK_CASES, ids=[c.id for c in BLOCK_CASES])
def test_malformed_block_breaks_the_schema(case: Case) -> None:
    assert wire.validate(case.mutate(block([transfer()])))


@pytest.mark.parametrize("case", VOTE_CASES, ids=[c.id for c in VOTE_CASES])
def test_malformed_vote_breaks_the_schema(case: Case) -> None:
    assert wire.validate(case.mutate(vote()))


@pytest.mark.parametrize("case", GENESIS_CASES, ids=[c.id for c in GENESIS_CASES])
def test_invalid_genesis_breaks_the_schema(case: Case) -> None:
    errors = wire.validate(case.mutate(genesis()))
    assert bool(errors) is case.schema, errors


@pytest.mark.parametrize(("case", "command", "reason"), COMMAND_CASES, ids=[c[0] for c in COMMAND_CASES])
def test_no_command_at_all_breaks_the_schema(case: str, command: Any, reason: str) -> None:
    assert wire.validate(command)


def test_integers_are_strict_and_patterns_anchored_at_the_very_end() -> None:
    assert wire.validate({**vote(), "height": 1.0}) == ["$.height: 1.0 is not of type 'integer'"]
    assert wire.validate({**vote(), "height": True}) == ["$.height: True is not of type 'integer'"]
    assert wire.validate({**vote(), "height": AMOUNT_MAX}) == []
    assert wire.validate({**vote(), "height": AMOUNT_MAX + 1})
    assert wire.validate({**vote(), "node_id": "node-0\n"})
    assert wire.validate({**vote(), "block_hash": "ab" * 32 + "\n"})


def test_errors_name_the_path_and_stay_short() -> None:
    bad = {**vote(), "sig": vote()["sig"].upper(), "memo": 1}
    errors = wire.validate(bad)
    assert len(errors) == 2
    assert errors[0].startswith("$: Additional properties are not allowed ('memo' was unexpected)")
    assert errors[1].startswith("$.sig: ") and len(errors[1]) <= wire.MESSAGE_CHARS_MAX
    votes = slash()["evidence"]
    for evidence, what in ((votes * 2, "is too long"), (votes[:1], "is too short"), ({"0": votes[0]}, "type")):
        [error] = wire.validate(slash(evidence=evidence), "slash")
        assert error.startswith("$.evidence: [") or error.startswith("$.evidence: {"), error
        assert what in error and len(error) <= wire.MESSAGE_CHARS_MAX, error
