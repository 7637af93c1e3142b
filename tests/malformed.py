"""Malformed commands, as mutations of valid ones (DOMAIN.md "Encoding and well-formedness").

Shared by the ledger's tests (tests/test_commands.py, tests/test_decide.py) and the JSON Schema tests
(tests/test_jsonschema.py): every case here must be refused by the ledger, and by the schema too unless
`schema` is False (a rule JSON Schema cannot state: equality between fields, uniqueness, a param's value).

Every TX_CASES mutation takes a well-formed transfer signed by ALICE (what each consumer has at hand). The cases
of the other kinds first turn it into a well-formed tx of their kind made by schemas/build.py (`as_kind`: same
chain_id and signer, and the same nonce if the kind has one: relayer txs carry none), then break that.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from schemas import build, commands
from tests.chain import ALICE, BOB, STAKE, keypair, validators

AMOUNT_LIMIT = 2**63  # the first value that is out of range
Obj = dict[str, Any]


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Callable[[Obj], Any]
    schema: bool = True  # False: JSON Schema cannot express the rule; only schemas/commands.py checks it
    field: str = ""  # what the ledger's message (and a JSON Schema error, if any) names; "" for no check


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
BRIDGE_KINDS = ("bridge_deposit", "withdraw_request", "withdraw_confirm", "withdraw_reject")


def key_cases(name: str) -> list[Case]:
    """A malformed key in field `name` (`key`, the signer's, or an enroll's `validator_key`)."""

    def in_(**fields: Any) -> Callable[[Obj], Obj]:
        return lambda obj: {**obj, name: {**obj[name], **fields}}

    return [
        Case(f"{name}_not_object", put_field(name, "abc"), field=name),
        Case(f"{name}_list", lambda obj: {**obj, name: [obj[name]["alg"], obj[name]["pk"]]}, field=name),
        Case(f"{name}_missing_pk", edit(name, lambda k: {"alg": k["alg"]}), field="pk"),
        Case(f"{name}_missing_alg", edit(name, lambda k: {"pk": k["pk"]}), field="alg"),
        Case(f"{name}_unknown_field", in_(extra="x"), field="extra"),
        Case(f"{name}_unknown_alg", in_(alg="ml-dsa-44"), field=f"{name}.alg"),
        Case(f"{name}_alg_not_string", in_(alg=65), field=f"{name}.alg"),
        Case(f"{name}_pk_upper_case", lambda obj: in_(pk=upper_hex(obj[name]["pk"]))(obj), field=f"{name}.pk"),
        Case(f"{name}_pk_short", lambda obj: in_(pk=obj[name]["pk"][:-2])(obj), field=f"{name}.pk"),
        Case(f"{name}_pk_long", lambda obj: in_(pk=obj[name]["pk"] + "00")(obj), field=f"{name}.pk"),
        Case(f"{name}_pk_odd", lambda obj: in_(pk=obj[name]["pk"][:-1])(obj), field=f"{name}.pk"),
        Case(f"{name}_pk_not_string", in_(pk=0), field=f"{name}.pk"),
        Case(f"{name}_pk_of_other_alg", in_(alg="ml-dsa-87"), field=f"{name}.pk"),
    ]


TX_CASES: list[Case] = [
    Case("kind_unknown", put(kind="transmogrify"), field="kind"),
    Case("kind_missing", drop("kind"), field="kind"),
    Case("kind_not_string", put(kind=7), field="kind"),
    # A transfer's fields under another kind: some are missing (one is named here), the others unknown.
    Case("kind_enroll", put(kind="enroll"), field="gpu_uuid"),
    *(Case(f"kind_{kind}", put(kind=kind), field="reserve_id") for kind in BRIDGE_KINDS),
    Case("not_an_object", lambda tx: [tx], field="tx"),
    Case("a_string", lambda tx: "transfer", field="tx"),
    *(Case(f"missing_{name}", drop(name), field=name) for name in TRANSFER_FIELDS),
    Case("unknown_field", put(memo="hi"), field="memo"),
    Case("amount_string", put(amount="5"), field="amount"),
    Case("amount_float", put(amount=5.0), field="amount"),
    Case("amount_exponent", put(amount=1e6), field="amount"),
    Case("amount_bool", put(amount=True), field="amount"),
    Case("amount_zero", put(amount=0), field="amount"),
    Case("amount_negative", put(amount=-1), field="amount"),
    Case("amount_2_63", put(amount=AMOUNT_LIMIT), field="amount"),
    Case("fee_bool", put(fee=False), field="fee"),
    Case("fee_negative", put(fee=-1), field="fee"),
    Case("fee_2_63", put(fee=AMOUNT_LIMIT), field="fee"),
    Case("fee_null", put(fee=None), field="fee"),
    Case("nonce_float", put(nonce=0.0), field="nonce"),
    Case("nonce_negative", put(nonce=-1), field="nonce"),
    Case("nonce_2_63", put(nonce=AMOUNT_LIMIT), field="nonce"),
    Case("asset_lower_case", put(asset="cell"), field="asset"),
    Case("asset_one_char", put(asset="C"), field="asset"),
    Case("asset_too_long", put(asset="A" * 17), field="asset"),
    Case("asset_not_string", put(asset=5), field="asset"),
    Case("to_short", put(to="0x1234"), field="to"),
    Case("to_upper_case", edit("to", upper_hex), field="to"),
    Case("to_no_prefix", edit("to", lambda a: a[2:] + "00"), field="to"),
    Case("to_not_string", put(to=123), field="to"),
    Case("signer_upper_case", edit("signer", upper_hex), field="signer"),
    Case("from_upper_case", edit("from", upper_hex), field="from"),
    Case("from_not_signer", put_field("from", "0x" + "ab" * 20), schema=False, field="from"),
    Case("chain_id_of_other_chain", put(chain_id="other-chain"), schema=False, field="chain_id"),
    *(Case(f"chain_id_{name}", put(chain_id=value), field="chain_id") for name, value in BAD_IDENTS.items()),
    *key_cases("key"),
    Case("sig_upper_case", edit("sig", upper_hex), field="sig"),
    Case("sig_odd", edit("sig", lambda s: s[:-1]), field="sig"),
    Case("sig_not_hex", put(sig="zz"), field="sig"),
    Case("sig_not_string", put(sig=0), field="sig"),
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
    *(Case(f"missing_{name}", drop(name), field=name) for name in VOTE_FIELDS),
    Case("unknown_field", put(memo="hi"), field="memo"),
    Case("height_bool", put(height=False), field="height"),
    Case("height_float", put(height=1.0), field="height"),
    Case("height_negative", put(height=-1), field="height"),
    Case("height_string", put(height="1"), field="height"),
    Case("block_hash_upper_case", edit("block_hash", upper_hex), field="block_hash"),
    Case("block_hash_short", edit("block_hash", lambda h: h[:-2]), field="block_hash"),
    *(Case(f"node_id_{name}", put(node_id=value), field="node_id") for name, value in BAD_IDENTS.items()),
    Case("chain_id_space", put(chain_id="tally test"), field="chain_id"),
    Case("sig_upper_case", edit("sig", upper_hex), field="sig"),
    Case("sig_odd", edit("sig", lambda s: s[:-1]), field="sig"),
]

# ----------------------------------------------------------------------------- enroll, unenroll and slash

ENROLL_NODE = "node-9"  # a node_id no test genesis enrolls
EQUIVOCATOR = validators()[0]  # the author of the slash's evidence
EVIDENCE_HEIGHT = 1
EVIDENCE_HASHES = ("aa" * 32, "bb" * 32)
BRIDGED_ASSET = "USDC"
DEPOSIT_ID = "deposit-1"
WITHDRAWAL_ID = "withdrawal-1"
EXTERNAL_TX = "0x" + "cd" * 32


@functools.cache
def _well_formed(kind: str, chain_id: str, nonce: int | None) -> Obj:
    """`nonce` is None for the kinds that carry none (relayer txs)."""
    if "nonce" in commands.TX_FIELDS[kind]:
        assert nonce is not None, kind
    if kind == "enroll":
        return build.enroll(chain_id, ALICE, ENROLL_NODE, "GPU-0009", STAKE, keypair(ENROLL_NODE), nonce=nonce)
    if kind == "unenroll":
        return build.unenroll(chain_id, ALICE, EQUIVOCATOR.node_id, nonce=nonce)
    if kind == "slash":
        v = EQUIVOCATOR
        votes = build.evidence(chain_id, v.node_id, v.key, EVIDENCE_HEIGHT, EVIDENCE_HASHES)
        return build.slash(chain_id, ALICE, v.node_id, votes, nonce=nonce)
    # Bridge txs signed by ALICE: whether a key is a relayer's is state (the receipt not_relayer), not form.
    if kind == "bridge_deposit":
        return build.bridge_deposit(chain_id, ALICE, DEPOSIT_ID, BRIDGED_ASSET, BOB.address, 5,
                                    from_chain="ethereum", external_tx=EXTERNAL_TX)
    if kind == "withdraw_request":
        return build.withdraw_request(chain_id, ALICE, WITHDRAWAL_ID, BRIDGED_ASSET, 5, nonce=nonce,
                                      to_chain="ethereum", external_address="0x" + "ef" * 20)
    if kind == "withdraw_confirm":
        return build.withdraw_confirm(chain_id, ALICE, WITHDRAWAL_ID, EXTERNAL_TX)
    if kind == "withdraw_reject":
        return build.withdraw_reject(chain_id, ALICE, WITHDRAWAL_ID, "destination refused")
    raise ValueError(f"no well-formed {kind!r} here")


def as_kind(kind: str) -> Callable[[Obj], Obj]:
    """The transfer a test passes, as a well-formed `kind` tx built by schemas/build.py: same chain_id, and same
    nonce if `kind` has one, signed by ALICE (the transfer's signer in every consumer; the signature is valid).
    A transfer stays itself."""
    if kind == "transfer":
        return copy.deepcopy
    if "nonce" not in commands.TX_FIELDS[kind]:
        return lambda tx: copy.deepcopy(_well_formed(kind, tx["chain_id"], None))
    return lambda tx: copy.deepcopy(_well_formed(kind, tx["chain_id"], tx["nonce"]))


def _then(first: Callable[[Obj], Obj], second: Callable[[Obj], Any]) -> Callable[[Obj], Any]:
    return lambda obj: second(first(obj))


def of_kind(kind: str, cases: Iterable[Case]) -> list[Case]:
    """`cases` applied to a well-formed `kind` tx, their ids prefixed with the kind."""
    return [Case(f"{kind}_{c.id}", _then(as_kind(kind), c.mutate), c.schema, c.field) for c in cases]


def common_cases(kind: str) -> list[Case]:
    """What every non-transfer kind gets: each field missing, unknown ones (a transfer's `fee`; `amount` and
    `nonce` where the kind has none), the role field, the common fields, node_id and nonce where it has them."""
    role = commands.TX_ROLE[kind]
    fields = commands.TX_FIELDS[kind]
    return [
        *(Case(f"missing_{name}", drop(name), field=name) for name in sorted(fields - {"kind"})),
        Case("unknown_field", put(memo="hi"), field="memo"),
        Case("unknown_field_fee", put(fee=0), field="fee"),  # only transfers carry a fee
        *([] if "amount" in fields else [Case("unknown_field_amount", put(amount=1), field="amount")]),
        *([] if "nonce" in fields else [Case("unknown_field_nonce", put(nonce=0), field="nonce")]),
        Case(f"{role}_not_signer", put_field(role, "0x" + "ab" * 20), schema=False, field=role),
        Case(f"{role}_upper_case", edit(role, upper_hex), field=role),
        Case(f"{role}_short", put_field(role, "0x1234"), field=role),
        Case(f"{role}_not_string", put_field(role, None), field=role),
        Case("chain_id_of_other_chain", put(chain_id="other-chain"), schema=False, field="chain_id"),
        Case("chain_id_space", put(chain_id="tally test"), field="chain_id"),
        Case("signer_upper_case", edit("signer", upper_hex), field="signer"),
        Case("key_unknown_alg", in_key(alg="ml-dsa-44"), field="key.alg"),
        Case("sig_odd", edit("sig", lambda s: s[:-1]), field="sig"),
        *(ident_cases("node_id") if "node_id" in fields else []),
        *(nonce_cases() if "nonce" in fields else []),
    ]


def ident_cases(name: str) -> list[Case]:
    """An identifier (node_id, reserve_id, a chain name) that breaks `[A-Za-z0-9._:-]{1,128}`."""
    return [
        *(Case(f"{name}_{what}", put_field(name, value), field=name) for what, value in BAD_IDENTS.items()),
        Case(f"{name}_not_string", put_field(name, 0), field=name),
    ]


def nonce_cases() -> list[Case]:
    return [
        Case("nonce_float", put(nonce=0.0), field="nonce"),
        Case("nonce_bool", put(nonce=False), field="nonce"),
        Case("nonce_negative", put(nonce=-1), field="nonce"),
        Case("nonce_2_63", put(nonce=AMOUNT_LIMIT), field="nonce"),
        Case("nonce_string", put(nonce="0"), field="nonce"),
    ]


ENROLL_CASES: list[Case] = of_kind("enroll", [
    *common_cases("enroll"),
    Case("kind_unenroll", put(kind="unenroll"), field="gpu_uuid"),  # unknown: gpu_uuid, stake, validator_key
    *(Case(f"gpu_uuid_{name}", put(gpu_uuid=value), field="gpu_uuid") for name, value in BAD_IDENTS.items()),
    Case("gpu_uuid_not_string", put(gpu_uuid=9), field="gpu_uuid"),
    Case("stake_string", put(stake="10000000"), field="stake"),
    Case("stake_float", put(stake=10_000_000.0), field="stake"),
    Case("stake_exponent", put(stake=1e7), field="stake"),
    Case("stake_bool", put(stake=True), field="stake"),
    Case("stake_null", put(stake=None), field="stake"),
    Case("stake_negative", put(stake=-1), field="stake"),
    Case("stake_2_63", put(stake=AMOUNT_LIMIT), field="stake"),
    *key_cases("validator_key"),
])

UNENROLL_CASES: list[Case] = of_kind("unenroll", [
    *common_cases("unenroll"),
    Case("kind_enroll", put(kind="enroll"), field="gpu_uuid"),  # missing: gpu_uuid, stake, validator_key
])


def in_evidence(index: int, change: Callable[[Obj], Any]) -> Callable[[Obj], Obj]:
    """Vote `index` of a slash's evidence changed."""

    def mutate(tx: Obj) -> Obj:
        votes = list(tx["evidence"])
        votes[index] = change(votes[index])
        return {**tx, "evidence": votes}

    return mutate


# A vote inside evidence is checked as a vote command is (and refers to vote.json), and must say kind 'vote'.
EVIDENCE_VOTE_CASES: list[Case] = [
    *VOTE_CASES,
    Case("missing_kind", drop("kind"), field="kind"),
    Case("kind_block", put(kind="block"), field="kind"),
    Case("kind_transfer", put(kind="transfer"), field="kind"),
    Case("kind_not_string", put(kind=7), field="kind"),
    Case("not_object", lambda vote: vote["block_hash"], field="evidence[{i}]"),
    Case("null", lambda vote: None, field="evidence[{i}]"),
    Case("list", lambda vote: [vote], field="evidence[{i}]"),
]
# Both votes are checked: the second gets a sample.
EVIDENCE_SECOND_VOTE = ("missing_sig", "kind_block", "not_object", "block_hash_short", "height_float")

SLASH_CASES: list[Case] = of_kind("slash", [
    *common_cases("slash"),
    Case("kind_transfer", put(kind="transfer"), field="amount"),  # missing: amount, asset, fee, from, to
    Case("evidence_object", lambda tx: {**tx, "evidence": {"0": tx["evidence"][0], "1": tx["evidence"][1]}},
         field="evidence"),
    Case("evidence_one_vote_unwrapped", edit("evidence", lambda votes: votes[0]), field="evidence"),
    Case("evidence_string", put(evidence="votes"), field="evidence"),
    Case("evidence_null", put(evidence=None), field="evidence"),
    Case("evidence_empty", put(evidence=[]), field="evidence"),
    Case("evidence_one_vote", edit("evidence", lambda votes: votes[:1]), field="evidence"),
    Case("evidence_three_votes", edit("evidence", lambda votes: [*votes, votes[0]]), field="evidence"),
    Case("evidence_four_votes", edit("evidence", lambda votes: votes * 2), field="evidence"),
    *(
        Case(f"evidence_{i}_{c.id}", in_evidence(i, c.mutate), c.schema, c.field.format(i=i))
        for i in (0, 1) for c in EVIDENCE_VOTE_CASES if i == 0 or c.id in EVIDENCE_SECOND_VOTE
    ),
])

TX_CASES += ENROLL_CASES + UNENROLL_CASES + SLASH_CASES

# ----------------------------------------------------------------------------- bridge

# A bridge tx's asset: any symbol but CELL (DOMAIN.md: a bridge tx naming CELL is malformed).
BRIDGED_ASSET_CASES: list[Case] = [
    Case("asset_cell", put(asset="CELL"), field="asset"),
    Case("asset_cell_lower_case", put(asset="cell"), field="asset"),
    Case("asset_lower_case", put(asset="usdc"), field="asset"),
    Case("asset_one_char", put(asset="U"), field="asset"),
    Case("asset_too_long", put(asset="A" * 17), field="asset"),
    Case("asset_leading_digit", put(asset="1USD"), field="asset"),
    Case("asset_not_string", put(asset=5), field="asset"),
    Case("asset_null", put(asset=None), field="asset"),
]

# A bridge_deposit's or withdraw_request's amount: 0 < amount < 2**63, a JSON integer.
AMOUNT_CASES: list[Case] = [
    Case("amount_zero", put(amount=0), field="amount"),
    Case("amount_negative", put(amount=-1), field="amount"),
    Case("amount_2_63", put(amount=AMOUNT_LIMIT), field="amount"),
    Case("amount_bool", put(amount=True), field="amount"),
    Case("amount_float", put(amount=5.0), field="amount"),
    Case("amount_exponent", put(amount=1e6), field="amount"),
    Case("amount_string", put(amount="5"), field="amount"),
    Case("amount_null", put(amount=None), field="amount"),
]


def text_cases(name: str) -> list[Case]:
    """Free text (external_tx, external_address, reason): printable ASCII, at most 256 characters."""
    return [
        Case(f"{name}_257_chars", put_field(name, "x" * 257), field=name),
        Case(f"{name}_newline", put_field(name, "0xabc\n"), field=name),
        Case(f"{name}_tab", put_field(name, "0x\tabc"), field=name),
        Case(f"{name}_del", put_field(name, "0xabc\x7f"), field=name),
        Case(f"{name}_nul", put_field(name, "\x00"), field=name),
        Case(f"{name}_non_ascii", put_field(name, "tälly"), field=name),
        Case(f"{name}_not_string", put_field(name, 7), field=name),
        Case(f"{name}_null", put_field(name, None), field=name),
        Case(f"{name}_list", put_field(name, ["0xabc"]), field=name),
    ]


def address_cases(name: str) -> list[Case]:
    return [
        Case(f"{name}_short", put_field(name, "0x1234"), field=name),
        Case(f"{name}_upper_case", edit(name, upper_hex), field=name),
        Case(f"{name}_no_prefix", edit(name, lambda a: a[2:] + "00"), field=name),
        Case(f"{name}_not_string", put_field(name, 123), field=name),
    ]


BRIDGE_DEPOSIT_CASES: list[Case] = of_kind("bridge_deposit", [
    *common_cases("bridge_deposit"),
    # Another kind's name over these fields: its first missing field is named.
    Case("kind_withdraw_request", put(kind="withdraw_request"), field="external_address"),
    Case("kind_transfer", put(kind="transfer"), field="fee"),
    *ident_cases("reserve_id"),
    *BRIDGED_ASSET_CASES,
    *address_cases("to"),
    *AMOUNT_CASES,
    *ident_cases("from_chain"),
    *text_cases("external_tx"),
])

WITHDRAW_REQUEST_CASES: list[Case] = of_kind("withdraw_request", [
    *common_cases("withdraw_request"),
    Case("kind_bridge_deposit", put(kind="bridge_deposit"), field="external_tx"),
    Case("kind_transfer", put(kind="transfer"), field="fee"),
    *ident_cases("reserve_id"),
    *BRIDGED_ASSET_CASES,
    *AMOUNT_CASES,
    *ident_cases("to_chain"),
    *text_cases("external_address"),
])

WITHDRAW_CONFIRM_CASES: list[Case] = of_kind("withdraw_confirm", [
    *common_cases("withdraw_confirm"),
    Case("kind_withdraw_reject", put(kind="withdraw_reject"), field="reason"),
    Case("kind_bridge_deposit", put(kind="bridge_deposit"), field="amount"),
    *ident_cases("reserve_id"),
    *text_cases("external_tx"),
])

WITHDRAW_REJECT_CASES: list[Case] = of_kind("withdraw_reject", [
    *common_cases("withdraw_reject"),
    Case("kind_withdraw_confirm", put(kind="withdraw_confirm"), field="external_tx"),
    Case("kind_withdraw_request", put(kind="withdraw_request"), field="amount"),
    *ident_cases("reserve_id"),
    *text_cases("reason"),
])

TX_CASES += BRIDGE_DEPOSIT_CASES + WITHDRAW_REQUEST_CASES + WITHDRAW_CONFIRM_CASES + WITHDRAW_REJECT_CASES


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
