"""The liability proof document (`tally-por-v1`) and its check: what an account holder receives and verifies.

A proof is canonical JSON (keys sorted, no whitespace, UTF-8; a final newline allowed) of:

    {"scheme": "tally-por-v1", "chain_id", "asset", "height", "root": hex, "total": int, "leaf_count": int,
     "leaf": {"address", "account_secret": hex, "blinded_id": hex, "balance": int},
     "path": [{"side": "left" | "right", "hash": hex, "sum": int}, ...]}

`path` runs from the leaf up to the root; `side` is where the sibling sits. A holder who shares its proof without
its identity may drop `address` and `account_secret` (then only `blinded_id` places the leaf, and chain, asset and
height are bound by nothing but where the root was published). The check (docs/proof-of-reserves.md states it
for customers, and docs/verify_proof.py is a customer's own script):

    id    = blake3(account_secret || "tally-por-v1:leaf:" chain_id ":" asset ":" height ":" address) = blinded_id
    node  = (blake3(0x02 || id || balance as 16 bytes big-endian), balance)
    up    parent(l, r) = (blake3(0x03 || l.hash || l.sum (16 BE) || r.hash || r.sum (16 BE)), l.sum + r.sum),
          with the sibling on its `side`
    root  node == (root, total); len(path) == log2(leaf_count); root == the published root

Needs nothing but the blake3 package (writes/reserves.py and accelerators/merkle_cpu.py make the same hashes; the
tests compare them). Every field is checked, and the document must be in canonical form, so that a proof with any
byte changed fails.
"""

from __future__ import annotations

import json
import re
from typing import Any

from blake3 import blake3

SCHEME = "tally-por-v1"
SUM_LEAF, SUM_PARENT = b"\x02", b"\x03"
SUM_MAX = 2**128 - 1
BALANCE_MAX = 2**63 - 1
PATH_STEPS_MAX = 64  # 2**64 leaves: far beyond any ledger
PROOF_BYTES_MAX = 64 * 1024  # a proof of 2**64 leaves is ~9 KB

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-f]{40}")
_ASSET = re.compile(r"[A-Z][A-Z0-9]{1,15}")
_IDENT = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TOP = {"scheme", "chain_id", "asset", "height", "root", "total", "leaf_count", "leaf", "path"}
_LEAF_FULL = {"address", "account_secret", "blinded_id", "balance"}
_LEAF_BARE = {"blinded_id", "balance"}
_STEP = {"side", "hash", "sum"}


class ProofError(ValueError):
    """The document is not a proof, or the proof does not hold."""


def canonical(proof: dict[str, Any]) -> bytes:
    return json.dumps(proof, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def leaf_id(account_secret: bytes, chain_id: str, asset: str, height: int, address: str) -> bytes:
    return blake3(account_secret + f"{SCHEME}:leaf:{chain_id}:{asset}:{height}:{address}".encode()).digest()


def _leaf(blinded_id: bytes, balance: int) -> tuple[bytes, int]:
    return blake3(SUM_LEAF + blinded_id + balance.to_bytes(16, "big")).digest(), balance


def _parent(left: tuple[bytes, int], right: tuple[bytes, int]) -> tuple[bytes, int]:
    total = left[1] + right[1]
    if total > SUM_MAX:
        raise ProofError("a sum passes 2**128")
    body = SUM_PARENT + left[0] + left[1].to_bytes(16, "big") + right[0] + right[1].to_bytes(16, "big")
    return blake3(body).digest(), total


def document(
    *, chain_id: str, asset: str, height: int, root: str, total: int, leaf_count: int, address: str,
    account_secret: bytes, blinded_id: bytes, balance: int, path: list[tuple[bool, tuple[bytes, int]]],
) -> dict[str, Any]:
    """The proof of one leaf; `path` as writes/reserves.ReservesTree.proof gives it: (sibling on the left, node)."""
    return {
        "scheme": SCHEME, "chain_id": chain_id, "asset": asset, "height": height, "root": root, "total": total,
        "leaf_count": leaf_count,
        "leaf": {"address": address, "account_secret": account_secret.hex(), "blinded_id": blinded_id.hex(),
                 "balance": balance},
        "path": [{"side": "left" if left else "right", "hash": h.hex(), "sum": s} for left, (h, s) in path],
    }


def parse(data: bytes) -> dict[str, Any]:
    """The proof in `data`, which must be its canonical JSON (a final newline allowed). Raises ProofError."""
    if len(data) > PROOF_BYTES_MAX:
        raise ProofError(f"a proof is at most {PROOF_BYTES_MAX} bytes")
    try:
        proof = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProofError(f"not JSON: {exc}") from exc
    if not isinstance(proof, dict):
        raise ProofError("not a JSON object")
    if canonical(proof) != data.removesuffix(b"\n"):
        raise ProofError("not in canonical form (keys sorted, no whitespace): the bytes were changed")
    return proof


def verify(proof: dict[str, Any], published_root: str | None = None) -> dict[str, Any]:
    """Checks the proof (and that its root is `published_root`, when given); returns what it proves:
    {chain_id, asset, height, root, total, balance, address (None for a bare leaf)}. Raises ProofError."""
    _fields(proof, _TOP, "the proof")
    if proof["scheme"] != SCHEME:
        raise ProofError(f"scheme must be {SCHEME!r}")
    chain_id = _text(proof["chain_id"], _IDENT, "chain_id")
    asset = _text(proof["asset"], _ASSET, "asset")
    height = _int(proof["height"], "height", BALANCE_MAX)
    root = _text(proof["root"], _HEX64, "root")
    total, leaf_count = _int(proof["total"], "total", SUM_MAX), _int(proof["leaf_count"], "leaf_count", 2**64)
    if published_root is not None and root != published_root:
        raise ProofError(f"the proof's root {root} is not the published root {published_root}")
    leaf = proof["leaf"]
    if not isinstance(leaf, dict) or set(leaf) not in (_LEAF_FULL, _LEAF_BARE):
        raise ProofError("leaf must hold blinded_id and balance, and address and account_secret or neither")
    blinded = bytes.fromhex(_text(leaf["blinded_id"], _HEX64, "leaf.blinded_id"))
    balance = _int(leaf["balance"], "leaf.balance", BALANCE_MAX)
    address = None
    if "address" in leaf:
        address = _text(leaf["address"], _ADDRESS, "leaf.address")
        secret = bytes.fromhex(_text(leaf["account_secret"], _HEX64, "leaf.account_secret"))
        if leaf_id(secret, chain_id, asset, height, address) != blinded:
            raise ProofError("leaf.blinded_id is not the one the account secret gives for this address, chain,"
                             " asset and height")
    path = proof["path"]
    if not isinstance(path, list) or len(path) > PATH_STEPS_MAX:
        raise ProofError(f"path must be a list of at most {PATH_STEPS_MAX} steps")
    if leaf_count < 1 or leaf_count & (leaf_count - 1) or leaf_count != 1 << len(path):
        raise ProofError(f"leaf_count must be 2**len(path) = {1 << len(path)}, got {leaf_count}")
    node = _leaf(blinded, balance)
    for i, step in enumerate(path):
        _fields(step, _STEP, f"path[{i}]")
        if step["side"] not in ("left", "right"):
            raise ProofError(f"path[{i}].side must be 'left' or 'right'")
        sibling = (bytes.fromhex(_text(step["hash"], _HEX64, f"path[{i}].hash")), _int(step["sum"], f"path[{i}].sum",
                                                                                        SUM_MAX))
        node = _parent(sibling, node) if step["side"] == "left" else _parent(node, sibling)
    if node[0].hex() != root:
        raise ProofError(f"the path leads to {node[0].hex()}, not to the root {root}")
    if node[1] != total:
        raise ProofError(f"the path sums to {node[1]}, not to the total {total}")
    return {"chain_id": chain_id, "asset": asset, "height": height, "root": root, "total": total,
            "balance": balance, "address": address}


def _fields(obj: Any, names: set[str], where: str) -> None:
    if not isinstance(obj, dict) or set(obj) != names:
        raise ProofError(f"{where} must hold exactly {', '.join(sorted(names))}")


def _text(value: Any, pattern: re.Pattern[str], name: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ProofError(f"{name} is malformed")
    return value


def _int(value: Any, name: str, maximum: int) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise ProofError(f"{name} must be an integer in [0, {maximum}]")
    return value
