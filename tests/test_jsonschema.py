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
from tests.chain import ALICE, BOB, CAROL, CHAIN_ID, GENESIS_MS, genesis_command, keypair, validators
from tests.malformed import BLOCK_CASES, COMMAND_CASES, GENESIS_CASES, TX_CASES, VOTE_CASES, Case

SCHEMA_DIR = Path(wire.__file__).parent / "jsonschema"
RELAYERS = [("relayer-a", keypair("relayer-a")), ("relayer-b", keypair("relayer-b", "ml-dsa-87"))]


def genesis() -> dict[str, Any]:
    return genesis_command(relayers=RELAYERS, params={"max_block_txs": 10, "slash_bps": 10_000})


def transfer(**fields: Any) -> dict[str, Any]:
    return {**build.transfer(CHAIN_ID, ALICE, BOB.address, 5, nonce=0, fee=1), **fields}


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
    assert wire.load("tx")["properties"]["kind"]["enum"] == list(commands.TX_KINDS_SUPPORTED)
    assert set(wire.load("transfer")["required"]) == commands.TX_FIELDS["transfer"]
    assert set(wire.load("block")["required"]) == commands.BLOCK_FIELDS
    assert set(wire.load("vote")["required"]) == commands.VOTE_FIELDS
    assert set(wire.load("genesis")["properties"]) == commands.GENESIS_FIELDS


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
    ],
    ids=["genesis", "genesis_default", "genesis_empty", "genesis_minimal", "empty_block", "block", "self_transfer",
         "block_height_0", "vote", "vote_ml_dsa_87"],
)
def test_what_build_makes_conforms(command: dict[str, Any]) -> None:
    assert wire.validate(command) == []
    assert wire.validate(command, command["kind"]) == []


def test_a_transfer_on_its_own_conforms_to_transfer_json_only() -> None:
    assert wire.validate(transfer(), "transfer") == []
    assert wire.validate(transfer(), "tx") == []
    assert wire.validate(transfer()) == ["$.kind: 'transfer' is not one of ['genesis', 'block', 'vote']"]


@pytest.mark.parametrize("case", TX_CASES, ids=[c.id for c in TX_CASES])
def test_malformed_tx_breaks_the_schema(case: Case) -> None:
    errors = wire.validate(block([transfer(), case.mutate(transfer(nonce=1))]))
    if case.schema:
        assert errors and all(e.startswith("$.txs[1]") for e in errors), errors
    else:
        assert errors == []  # only the ledger can tell (see transfer.json's $comment)


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
