"""Well-formedness of wire commands (DOMAIN.md "Encoding and well-formedness").

Pure checks on decoded JSON. Each raises `Rejection` with the reason code DOMAIN.md assigns
(`malformed_command`, `unknown_command`, `invalid_genesis`, `malformed_block`, `malformed_tx`,
`malformed_vote`) and a message naming the field that is wrong. State-dependent rules live in writes/.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from schemas import limits
from schemas.reasons import Rejection

COMMAND_KINDS = ("genesis", "block", "vote", "attest_reserves")
TX_KINDS = (
    "transfer", "enroll", "unenroll", "slash",
    "bridge_deposit", "withdraw_request", "withdraw_confirm", "withdraw_reject",
)
# Kinds whose validation and effects are implemented: all of DOMAIN.md's.
TX_KINDS_SUPPORTED = TX_KINDS

_HASH = re.compile(r"[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-f]{40}")
_IDENT = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ASSET = re.compile(r"[A-Z][A-Z0-9]{1,15}")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")

GENESIS_FIELDS = {"kind", "chain_id", "timestamp_ms", "params", "allocations", "validators", "relayers"}
BLOCK_FIELDS = {"kind", "chain_id", "height", "parent", "proposer", "timestamp_ms", "tx_root", "txs", "sig"}
VOTE_FIELDS = {"kind", "chain_id", "node_id", "height", "block_hash", "sig"}
ATTESTATION_FIELDS = {"kind", "chain_id", "asset"}
TX_COMMON = {"kind", "chain_id", "signer", "key", "sig"}
TX_FIELDS = {
    "transfer": TX_COMMON | {"from", "to", "asset", "amount", "fee", "nonce"},
    "enroll": TX_COMMON | {"operator", "node_id", "gpu_uuid", "stake", "validator_key", "nonce"},
    "unenroll": TX_COMMON | {"operator", "node_id", "nonce"},
    "slash": TX_COMMON | {"reporter", "node_id", "evidence", "nonce"},
    # Relayer txs carry no nonce: reserve_id makes them idempotent.
    "bridge_deposit": TX_COMMON | {"relayer", "reserve_id", "asset", "to", "amount", "from_chain", "external_tx"},
    "withdraw_request": TX_COMMON | {"owner", "reserve_id", "asset", "amount", "to_chain", "external_address", "nonce"},
    "withdraw_confirm": TX_COMMON | {"relayer", "reserve_id", "external_tx"},
    "withdraw_reject": TX_COMMON | {"relayer", "reserve_id", "reason"},
}
# The role field of each tx kind must equal `signer`.
TX_ROLE = {
    "transfer": "from", "enroll": "operator", "unenroll": "operator", "slash": "reporter",
    "bridge_deposit": "relayer", "withdraw_request": "owner", "withdraw_confirm": "relayer",
    "withdraw_reject": "relayer",
}


class Checker:
    """Field checks that raise one reason code; the message names the field and what is wrong."""

    def __init__(self, reason: str, where: str) -> None:
        self.reason = reason
        self.where = where

    def fail(self, message: str) -> Rejection:
        return Rejection(self.reason, f"{self.where}: {message}")

    def obj(self, value: Any, name: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{name} must be an object")
        return value

    def fields(
        self, obj: Mapping[str, Any], required: set[str], optional: set[str] = frozenset(), *, name: str = ""
    ) -> None:
        """`name` says where the object is (e.g. `evidence[0]`) when it is not the command or tx itself."""
        where = f"{name}: " if name else ""
        missing = sorted(required - obj.keys())
        if missing:
            raise self.fail(f"{where}missing field(s) {', '.join(missing)}")
        unknown = sorted(obj.keys() - required - optional)
        if unknown:
            raise self.fail(f"{where}unknown field(s) {', '.join(unknown)}")

    def int_(self, value: Any, name: str, *, minimum: int = 0) -> int:
        # bool is an int subclass in Python but not a JSON integer.
        if type(value) is not int:
            raise self.fail(f"{name} must be a JSON integer, got {type(value).__name__}")
        if not minimum <= value <= limits.AMOUNT_MAX:
            raise self.fail(f"{name} must be between {minimum} and 2**63-1")
        return value

    def str_(self, value: Any, name: str) -> str:
        if not isinstance(value, str):
            raise self.fail(f"{name} must be a string")
        if not _PRINTABLE.fullmatch(value):
            raise self.fail(f"{name} must be printable ASCII")
        return value

    def match(self, value: Any, name: str, pattern: re.Pattern[str], what: str) -> str:
        self.str_(value, name)
        if not pattern.fullmatch(value):
            raise self.fail(f"{name} must be {what}")
        return value

    def text(self, value: Any, name: str) -> str:
        """Free text: printable ASCII, at most FREE_TEXT_LEN_MAX characters."""
        self.str_(value, name)
        if len(value) > limits.FREE_TEXT_LEN_MAX:
            raise self.fail(f"{name} must be at most {limits.FREE_TEXT_LEN_MAX} characters")
        return value

    def hash_(self, value: Any, name: str) -> str:
        return self.match(value, name, _HASH, "64 lowercase hex characters")

    def address(self, value: Any, name: str) -> str:
        return self.match(value, name, _ADDRESS, "an address 0x + 40 lowercase hex")

    def ident(self, value: Any, name: str) -> str:
        return self.match(value, name, _IDENT, "an identifier [A-Za-z0-9._:-]{1,128}")

    def asset(self, value: Any, name: str) -> str:
        return self.match(value, name, _ASSET, "an asset symbol [A-Z][A-Z0-9]{1,15}")

    def hex_(self, value: Any, name: str) -> str:
        # Round-tripping through bytes is exact (fromhex tolerates spaces and upper case; hex() writes
        # neither) and ~20x faster than a regex over the 6.6 KB of an ML-DSA-65 signature.
        if not isinstance(value, str):
            raise self.fail(f"{name} must be a string")
        try:
            ok = bytes.fromhex(value).hex() == value
        except ValueError:
            ok = False
        if not ok:
            raise self.fail(f"{name} must be lowercase even-length hex")
        return value

    def key(self, value: Any, name: str) -> tuple[str, bytes]:
        key = self.obj(value, name)
        self.fields(key, {"alg", "pk"}, name=name)
        alg = self.str_(key["alg"], f"{name}.alg")
        if alg not in limits.PK_BYTES:
            raise self.fail(f"{name}.alg must be one of {', '.join(limits.PK_BYTES)}")
        pk = self.hex_(key["pk"], f"{name}.pk")
        if len(pk) != 2 * limits.PK_BYTES[alg]:
            raise self.fail(f"{name}.pk must be {limits.PK_BYTES[alg]} bytes for {alg}")
        return alg, bytes.fromhex(pk)


def command_kind(obj: Any) -> str:
    """The kind of a decoded command, or a `malformed_command` / `unknown_command` rejection."""
    if not isinstance(obj, dict):
        raise Rejection("malformed_command", "a command must be a JSON object")
    kind = obj.get("kind")
    if not isinstance(kind, str):
        raise Rejection("malformed_command", "a command needs a string field 'kind'")
    if kind in TX_KINDS:
        raise Rejection("unknown_command", f"'{kind}' is a transaction: submit it inside a block")
    if kind not in COMMAND_KINDS:
        raise Rejection(
            "unknown_command", f"unknown command kind {kind!r}; expected one of {', '.join(COMMAND_KINDS)}"
        )
    return kind


def check_block_shape(block: Mapping[str, Any]) -> None:
    """malformed_block: the header fields and that txs is a list (each tx is checked later)."""
    c = Checker("malformed_block", "block")
    c.fields(block, BLOCK_FIELDS)
    c.ident(block["chain_id"], "chain_id")
    c.int_(block["height"], "height")  # height 0 is well formed: bad_height, after the parent checks
    c.hash_(block["parent"], "parent")
    c.ident(block["proposer"], "proposer")
    c.int_(block["timestamp_ms"], "timestamp_ms")
    c.hash_(block["tx_root"], "tx_root")
    c.hex_(block["sig"], "sig")
    if not isinstance(block["txs"], list):
        raise c.fail("txs must be a list")


def check_tx_shape(tx: Any, index: int, chain_id: str) -> tuple[str, bytes]:
    """malformed_tx for tx `index`; returns its (alg, pk)."""
    c = Checker("malformed_tx", f"tx {index}")
    c.obj(tx, "tx")
    kind = tx.get("kind")
    if kind not in TX_KINDS:
        raise c.fail(f"unknown tx kind {kind!r}")
    c.fields(tx, TX_FIELDS[kind])
    if c.ident(tx["chain_id"], "chain_id") != chain_id:
        raise c.fail(f"chain_id {tx['chain_id']!r} differs from the block's {chain_id!r}")
    signer = c.address(tx["signer"], "signer")
    alg_pk = c.key(tx["key"], "key")
    c.hex_(tx["sig"], "sig")
    if kind == "transfer":
        c.address(tx["from"], "from")
        c.address(tx["to"], "to")
        c.asset(tx["asset"], "asset")
        c.int_(tx["amount"], "amount", minimum=1)
        c.int_(tx["fee"], "fee")
    elif kind == "enroll":
        c.address(tx["operator"], "operator")
        c.ident(tx["node_id"], "node_id")
        c.ident(tx["gpu_uuid"], "gpu_uuid")
        c.int_(tx["stake"], "stake")
        c.key(tx["validator_key"], "validator_key")
    elif kind == "unenroll":
        c.address(tx["operator"], "operator")
        c.ident(tx["node_id"], "node_id")
    elif kind == "slash":
        c.address(tx["reporter"], "reporter")
        c.ident(tx["node_id"], "node_id")
        evidence = tx["evidence"]
        if not isinstance(evidence, list) or len(evidence) != 2:
            raise c.fail("evidence must be a list of two votes")
        for i, vote in enumerate(evidence):
            _check_vote_fields(c, c.obj(vote, f"evidence[{i}]"), f"evidence[{i}].")
    elif kind == "bridge_deposit":
        c.address(tx["relayer"], "relayer")
        c.ident(tx["reserve_id"], "reserve_id")
        _bridged_asset(c, tx["asset"])
        c.address(tx["to"], "to")
        c.int_(tx["amount"], "amount", minimum=1)
        c.ident(tx["from_chain"], "from_chain")
        c.text(tx["external_tx"], "external_tx")
    elif kind == "withdraw_request":
        c.address(tx["owner"], "owner")
        c.ident(tx["reserve_id"], "reserve_id")
        _bridged_asset(c, tx["asset"])
        c.int_(tx["amount"], "amount", minimum=1)
        c.ident(tx["to_chain"], "to_chain")
        c.text(tx["external_address"], "external_address")
    elif kind == "withdraw_confirm":
        c.address(tx["relayer"], "relayer")
        c.ident(tx["reserve_id"], "reserve_id")
        c.text(tx["external_tx"], "external_tx")
    elif kind == "withdraw_reject":
        c.address(tx["relayer"], "relayer")
        c.ident(tx["reserve_id"], "reserve_id")
        c.text(tx["reason"], "reason")
    if "nonce" in TX_FIELDS[kind]:
        c.int_(tx["nonce"], "nonce")
    if tx[TX_ROLE[kind]] != signer:
        raise c.fail(f"{TX_ROLE[kind]} must equal signer")
    return alg_pk


def check_attestation_shape(command: Mapping[str, Any]) -> None:
    """An operator's request for a proof-of-reserves attestation of one bridged asset."""
    c = Checker("malformed_command", "attest_reserves")
    c.fields(command, ATTESTATION_FIELDS)
    c.ident(command["chain_id"], "chain_id")
    _bridged_asset(c, command["asset"])


def _bridged_asset(c: Checker, value: Any) -> None:
    if c.asset(value, "asset") == "CELL":
        raise c.fail("asset of a bridge tx must be a bridged asset, not CELL")


def check_vote_shape(vote: Mapping[str, Any]) -> None:
    _check_vote_fields(Checker("malformed_vote", "vote"), vote, "")


def _check_vote_fields(c: Checker, vote: Mapping[str, Any], prefix: str) -> None:
    """A vote's fields (a command, or one of a slash's two pieces of evidence)."""
    c.fields(vote, VOTE_FIELDS, name=prefix.rstrip("."))
    if vote["kind"] != "vote":
        raise c.fail(f"{prefix}kind must be 'vote'")
    c.ident(vote["chain_id"], f"{prefix}chain_id")
    c.ident(vote["node_id"], f"{prefix}node_id")
    c.int_(vote["height"], f"{prefix}height")
    c.hash_(vote["block_hash"], f"{prefix}block_hash")
    c.hex_(vote["sig"], f"{prefix}sig")


def check_genesis(genesis: Mapping[str, Any]) -> dict[str, Any]:
    """invalid_genesis for any problem; returns the resolved genesis facts (params defaulted, allocations merged)."""
    c = Checker("invalid_genesis", "genesis")
    c.fields(genesis, GENESIS_FIELDS - {"params", "relayers"}, {"params", "relayers"})
    c.ident(genesis["chain_id"], "chain_id")
    c.int_(genesis["timestamp_ms"], "timestamp_ms")
    params = dict(limits.PARAM_DEFAULTS)
    given = c.obj(genesis.get("params", {}), "params")
    for name, value in given.items():
        if name not in limits.PARAM_DEFAULTS:
            raise c.fail(f"unknown param {name!r}")
        params[name] = c.int_(value, f"params.{name}")
    for bps in ("slash_bps", "reporter_bps"):
        if params[bps] > 10_000:
            raise c.fail(f"params.{bps} must be at most 10000")
    allocations = _genesis_allocations(c, genesis["allocations"])
    validators = _genesis_validators(c, genesis["validators"], params["min_stake"])
    relayers = _genesis_relayers(c, genesis.get("relayers", []))
    return {"params": params, "allocations": allocations, "validators": validators, "relayers": relayers}


def _genesis_allocations(c: Checker, value: Any) -> list[list[Any]]:
    if not isinstance(value, list):
        raise c.fail("allocations must be a list")
    merged: dict[str, int] = {}
    for i, alloc in enumerate(value):
        c.obj(alloc, f"allocations[{i}]")
        c.fields(alloc, {"address", "asset", "amount"})
        address = c.address(alloc["address"], f"allocations[{i}].address")
        if alloc["asset"] != "CELL":
            raise c.fail(f"allocations[{i}].asset must be CELL")
        merged[address] = merged.get(address, 0) + c.int_(alloc["amount"], f"allocations[{i}].amount")
        if merged[address] > limits.AMOUNT_MAX:
            raise c.fail(f"allocations to {address} add up to 2**63 or more")
    return [[address, amount] for address, amount in merged.items()]


def _genesis_validators(c: Checker, value: Any, min_stake: int) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise c.fail("validators must be a list")
    node_ids: set[str] = set()
    gpus: set[str] = set()
    out = []
    for i, v in enumerate(value):
        where = f"validators[{i}]"
        c.obj(v, where)
        c.fields(v, {"node_id", "operator", "key", "gpu_uuid", "stake"})
        node_id = c.ident(v["node_id"], f"{where}.node_id")
        gpu = c.ident(v["gpu_uuid"], f"{where}.gpu_uuid")
        c.address(v["operator"], f"{where}.operator")
        c.key(v["key"], f"{where}.key")
        if c.int_(v["stake"], f"{where}.stake") < min_stake:
            raise c.fail(f"{where}.stake is below min_stake {min_stake}")
        if node_id in node_ids:
            raise c.fail(f"{where}.node_id {node_id!r} is repeated")
        if gpu in gpus:
            raise c.fail(f"{where}.gpu_uuid {gpu!r} is repeated")
        node_ids.add(node_id)
        gpus.add(gpu)
        out.append(dict(v))
    return out


def _genesis_relayers(c: Checker, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise c.fail("relayers must be a list")
    seen: set[str] = set()
    for i, r in enumerate(value):
        c.obj(r, f"relayers[{i}]")
        c.fields(r, {"relayer_id", "key"})
        rid = c.ident(r["relayer_id"], f"relayers[{i}].relayer_id")
        c.key(r["key"], f"relayers[{i}].key")
        if rid in seen:
            raise c.fail(f"relayers[{i}].relayer_id {rid!r} is repeated")
        seen.add(rid)
    return [dict(r) for r in value]
