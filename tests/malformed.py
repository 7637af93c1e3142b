"""Malformed commands, as mutations of valid ones (DOMAIN.md "Encoding and well-formedness").

Shared by the ledger's tests (tests/test_commands.py, tests/test_decide.py) and the JSON Schema tests
(tests/test_jsonschema.py): every case here must be refused by the ledger, and by the schema too unless
`schema` is False (a rule JSON Schema cannot state: equality between fields, uniqueness, a param's value).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

AMOUNT_LIMIT = 2**63  # the first value that is out of range
Obj = dict[str, Any]


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Callable[[Obj], Any]
    schema: bool = True  # False: JSON Schema cannot express the rule; only schemas/commands.py checks it


def put(**fields: Any) -> Callable[[Obj], Obj]:
    return lambda obj: {**obj, **fields}


def put_field(name: str, value: Any) -> Callable[[Obj], Obj]:
    """For field names that are Python keywords (`from`)."""
    return lambda obj: {**obj, name: value}


def drop(name: str) -> Callable[[Obj], Obj]:
    return lambda obj: {k: v for k, v in obj.items() if k != name}


def edit(name: str, change: Callable[[Any], Any]) -> Callable[[Obj], Obj]:
    return lambda obj: {**obj, name: change(obj[name])}


def upper_hex(value: str) -> str:
    """Upper-case the hex digits of a hash, address or hex string (keeping a 0x prefix)."""
    prefix = "0x" if value.startswith("0x") else ""
    body = value[len(prefix):].upper()
    assert body != value[len(prefix):], "no a-f digit to upper-case"
    return prefix + body


def in_key(**fields: Any) -> Callable[[Obj], Obj]:
    return lambda obj: {**obj, "key": {**obj["key"], **fields}}


# Strings that break each format: an identifier, a hash, an address.
BAD_IDENTS = {"empty": "", "space": "tally test", "too_long": "x" * 129, "non_ascii": "tälly", "newline": "tally\n"}

TRANSFER_FIELDS = ("chain_id", "signer", "key", "sig", "from", "to", "asset", "amount", "fee", "nonce")

TX_CASES: list[Case] = [
    Case("kind_unknown", put(kind="transmogrify")),
    Case("kind_missing", drop("kind")),
    Case("kind_not_string", put(kind=7)),
    Case("not_an_object", lambda tx: [tx]),
    Case("a_string", lambda tx: "transfer"),
    *(Case(f"missing_{name}", drop(name)) for name in TRANSFER_FIELDS),
    Case("unknown_field", put(memo="hi")),
    Case("amount_string", put(amount="5")),
    Case("amount_float", put(amount=5.0)),
    Case("amount_exponent", put(amount=1e6)),
    Case("amount_bool", put(amount=True)),
    Case("amount_zero", put(amount=0)),
    Case("amount_negative", put(amount=-1)),
    Case("amount_2_63", put(amount=AMOUNT_LIMIT)),
    Case("fee_bool", put(fee=False)),
    Case("fee_negative", put(fee=-1)),
    Case("fee_2_63", put(fee=AMOUNT_LIMIT)),
    Case("fee_null", put(fee=None)),
    Case("nonce_float", put(nonce=0.0)),
    Case("nonce_negative", put(nonce=-1)),
    Case("nonce_2_63", put(nonce=AMOUNT_LIMIT)),
    Case("asset_lower_case", put(asset="cell")),
    Case("asset_one_char", put(asset="C")),
    Case("asset_too_long", put(asset="A" * 17)),
    Case("asset_not_string", put(asset=5)),
    Case("to_short", put(to="0x1234")),
    Case("to_upper_case", edit("to", upper_hex)),
    Case("to_no_prefix", edit("to", lambda a: a[2:] + "00")),
    Case("to_not_string", put(to=123)),
    Case("signer_upper_case", edit("signer", upper_hex)),
    Case("from_upper_case", edit("from", upper_hex)),
    Case("from_not_signer", put_field("from", "0x" + "ab" * 20), schema=False),
    Case("chain_id_of_other_chain", put(chain_id="other-chain"), schema=False),
    *(Case(f"chain_id_{name}", put(chain_id=value)) for name, value in BAD_IDENTS.items()),
    Case("key_not_object", put(key="abc")),
    Case("key_missing_pk", edit("key", lambda k: {"alg": k["alg"]})),
    Case("key_unknown_field", in_key(extra="x")),
    Case("key_unknown_alg", in_key(alg="ml-dsa-44")),
    Case("key_pk_upper_case", lambda tx: in_key(pk=upper_hex(tx["key"]["pk"]))(tx)),
    Case("key_pk_short", lambda tx: in_key(pk=tx["key"]["pk"][:-2])(tx)),
    Case("key_pk_odd", lambda tx: in_key(pk=tx["key"]["pk"][:-1])(tx)),
    Case("key_pk_of_other_alg", in_key(alg="ml-dsa-87")),
    Case("sig_upper_case", edit("sig", upper_hex)),
    Case("sig_odd", edit("sig", lambda s: s[:-1])),
    Case("sig_not_hex", put(sig="zz")),
    Case("sig_not_string", put(sig=0)),
]

BLOCK_FIELDS = ("chain_id", "height", "parent", "proposer", "timestamp_ms", "tx_root", "txs", "sig")

BLOCK_CASES: list[Case] = [
    *(Case(f"missing_{name}", drop(name)) for name in BLOCK_FIELDS),
    Case("unknown_field", put(memo="hi")),
    Case("height_string", put(height="1")),
    Case("height_float", put(height=1.0)),
    Case("height_bool", put(height=True)),
    Case("height_negative", put(height=-1)),
    Case("height_2_63", put(height=AMOUNT_LIMIT)),
    Case("timestamp_float", edit("timestamp_ms", float)),
    Case("timestamp_negative", put(timestamp_ms=-1)),
    Case("parent_upper_case", edit("parent", upper_hex)),
    Case("parent_short", edit("parent", lambda h: h[:-2])),
    Case("parent_not_string", put(parent=0)),
    Case("tx_root_upper_case", edit("tx_root", upper_hex)),
    Case("tx_root_long", edit("tx_root", lambda h: h + "00")),
    *(Case(f"proposer_{name}", put(proposer=value)) for name, value in BAD_IDENTS.items()),
    Case("proposer_not_string", put(proposer=0)),
    *(Case(f"chain_id_{name}", put(chain_id=value)) for name, value in BAD_IDENTS.items()),
    Case("sig_upper_case", edit("sig", upper_hex)),
    Case("sig_odd", edit("sig", lambda s: s[:-1])),
    Case("sig_not_string", put(sig=None)),
    Case("txs_object", put(txs={})),
    Case("txs_string", put(txs="[]")),
]

VOTE_FIELDS = ("chain_id", "node_id", "height", "block_hash", "sig")

VOTE_CASES: list[Case] = [
    *(Case(f"missing_{name}", drop(name)) for name in VOTE_FIELDS),
    Case("unknown_field", put(memo="hi")),
    Case("height_bool", put(height=False)),
    Case("height_float", put(height=1.0)),
    Case("height_negative", put(height=-1)),
    Case("height_string", put(height="1")),
    Case("block_hash_upper_case", edit("block_hash", upper_hex)),
    Case("block_hash_short", edit("block_hash", lambda h: h[:-2])),
    *(Case(f"node_id_{name}", put(node_id=value)) for name, value in BAD_IDENTS.items()),
    Case("chain_id_space", put(chain_id="tally test")),
    Case("sig_upper_case", edit("sig", upper_hex)),
    Case("sig_odd", edit("sig", lambda s: s[:-1])),
]


def in_validator(index: int, **fields: Any) -> Callable[[Obj], Obj]:
    def change(genesis: Obj) -> Obj:
        vals = [dict(v) for v in genesis["validators"]]
        vals[index].update(fields)
        return {**genesis, "validators": vals}

    return change


def copy_validator_field(name: str) -> Callable[[Obj], Obj]:
    """Validator 1 repeats validator 0's `name`."""
    return lambda g: in_validator(1, **{name: g["validators"][0][name]})(g)


def in_allocation(index: int, **fields: Any) -> Callable[[Obj], Obj]:
    def change(genesis: Obj) -> Obj:
        allocs = [dict(a) for a in genesis["allocations"]]
        allocs[index].update(fields)
        return {**genesis, "allocations": allocs}

    return change


def with_params(**params: Any) -> Callable[[Obj], Obj]:
    return lambda g: {**g, "params": {**g.get("params", {}), **params}}


# The genesis mutated must have at least two validators, two allocations and two relayers.
GENESIS_CASES: list[Case] = [
    Case("unknown_param", with_params(max_txs=5)),
    Case("slash_bps_above_10000", with_params(slash_bps=10_001)),
    Case("reporter_bps_above_10000", with_params(reporter_bps=10_001)),
    Case("param_negative", with_params(block_reward=-1)),
    Case("param_float", with_params(min_stake=1.0)),
    Case("param_bool", with_params(unbond_ms=True)),
    Case("params_not_object", put(params=[])),
    Case("stake_below_default_min_stake", in_validator(0, stake=10_000_000 - 1), schema=False),
    Case("stake_below_given_min_stake", with_params(min_stake=10_000_001), schema=False),
    Case("repeated_node_id", copy_validator_field("node_id"), schema=False),
    Case("repeated_gpu_uuid", copy_validator_field("gpu_uuid"), schema=False),
    Case("repeated_relayer_id", lambda g: {
        **g, "relayers": [g["relayers"][0], {**g["relayers"][1], "relayer_id": g["relayers"][0]["relayer_id"]}],
    }, schema=False),
    Case("allocation_not_cell", in_allocation(0, asset="USDC")),
    Case("allocation_negative", in_allocation(0, amount=-1)),
    Case("allocation_2_63", in_allocation(0, amount=AMOUNT_LIMIT)),
    Case("allocation_bad_address", in_allocation(0, address="0x12")),
    Case("allocation_unknown_field", in_allocation(0, memo="x")),
    Case("validator_bad_key", in_validator(0, key={"alg": "ml-dsa-65", "pk": "00"})),
    Case("validator_bad_operator", in_validator(0, operator="operator-0")),
    Case("validator_unknown_field", in_validator(0, phase="active")),
    Case("validator_stake_float", in_validator(0, stake=10_000_000.0)),
    Case("validators_not_list", put(validators={})),
    Case("missing_chain_id", drop("chain_id")),
    Case("missing_timestamp_ms", drop("timestamp_ms")),
    Case("missing_allocations", drop("allocations")),
    Case("missing_validators", drop("validators")),
    Case("unknown_field", put(memo="hi")),
    Case("timestamp_float", edit("timestamp_ms", float)),
    Case("chain_id_space", put(chain_id="tally test")),
]

# Things that are no command at all: (case, reason).
COMMAND_CASES: list[tuple[str, Any, str]] = [
    ("list", [], "malformed_command"),
    ("string", "block", "malformed_command"),
    ("number", 7, "malformed_command"),
    ("null", None, "malformed_command"),
    ("no_kind", {"chain_id": "tally-test"}, "malformed_command"),
    ("kind_not_string", {"kind": 1}, "malformed_command"),
    ("kind_unknown", {"kind": "mint"}, "unknown_command"),
    ("bare_transfer", {"kind": "transfer"}, "unknown_command"),
]
