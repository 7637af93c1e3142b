"""schemas/canonical.py: canonical bytes, addresses, ids and the tx Merkle root, against DOMAIN.md literally."""

from __future__ import annotations

import json
from typing import Any

from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.canonical import (
    EMPTY_ROOT,
    address_of,
    block_hash,
    canonical_bytes,
    genesis_hash,
    header_of,
    tx_id,
    tx_root,
)


def reference_bytes(obj: Any) -> bytes:
    """DOMAIN.md's definition, word for word."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# Strings: printable ASCII, any non-surrogate code point (control characters, non-ASCII, astral planes).
texts = st.one_of(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E)), st.text())
ints = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),  # what orjson encodes natively
    st.integers(min_value=-(2**200), max_value=2**200),  # beyond 64 bits: the fallback encoder
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
)
scalars = st.one_of(texts, ints, st.booleans(), st.none())
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=20,
)
json_objects = st.dictionaries(texts, json_values, max_size=6)


@settings(max_examples=300, deadline=None)
@given(json_objects)
def test_canonical_bytes_equal_the_reference_encoder(obj: dict[str, Any]) -> None:
    assert canonical_bytes(obj) == reference_bytes(obj)


@settings(max_examples=100, deadline=None)
@given(json_objects, json_values)
def test_drop_sig_removes_only_sig(obj: dict[str, Any], sig: Any) -> None:
    signed = {**obj, "sig": sig}
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    assert canonical_bytes(signed, drop_sig=True) == reference_bytes(unsigned)
    assert canonical_bytes(signed) == reference_bytes(signed)


def test_canonical_bytes_literal() -> None:
    obj = {"b": [1, {"z": None, "a": True}], "a": "é", "c": 2**70, "A": -1}
    assert canonical_bytes(obj) == '{"A":-1,"a":"é","b":[1,{"a":true,"z":null}],"c":1180591620717411303424}'.encode()


def test_blake3_is_the_reference() -> None:
    """The official BLAKE3 test vectors for b"" and b"abc"."""
    assert EMPTY_ROOT == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    assert blake3(b"abc").hexdigest() == "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"


def _leaf(tx: str) -> bytes:
    return blake3(b"\x00" + bytes.fromhex(tx)).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return blake3(b"\x01" + left + right).digest()


IDS = [f"{i:02x}" * 32 for i in range(1, 6)]


def test_tx_root_of_no_txs_is_blake3_of_empty() -> None:
    assert tx_root([]) == blake3(b"").hexdigest() == EMPTY_ROOT


def test_tx_root_of_one_tx_is_its_leaf() -> None:
    assert tx_root(IDS[:1]) == _leaf(IDS[0]).hex()


def test_tx_root_of_two_txs() -> None:
    assert tx_root(IDS[:2]) == _node(_leaf(IDS[0]), _leaf(IDS[1])).hex()


def test_tx_root_of_three_txs_carries_the_odd_leaf_up_unchanged() -> None:
    l0, l1, l2 = (_leaf(t) for t in IDS[:3])
    assert tx_root(IDS[:3]) == _node(_node(l0, l1), l2).hex()


def test_tx_root_of_five_txs_carries_the_odd_node_up_twice() -> None:
    l0, l1, l2, l3, l4 = (_leaf(t) for t in IDS)
    assert tx_root(IDS) == _node(_node(_node(l0, l1), _node(l2, l3)), l4).hex()


def test_tx_root_depends_on_order() -> None:
    assert tx_root(IDS[:2]) != tx_root(IDS[1::-1])


def test_address_of_literal() -> None:
    assert address_of("ml-dsa-65", bytes(1952)) == "0x57cc7fc2aec42038c2fa5aa9279d6d919b9767c2"
    pk = bytes(range(256)) * 10 + bytes(32)
    assert address_of("ml-dsa-87", pk) == "0x" + blake3(b"ml-dsa-87:" + pk).hexdigest()[:40]
    assert address_of("ml-dsa-87", pk) == "0xdbd91d46704241699dfcc86b526c7d57087def6c"


def test_tx_id_includes_the_sig_and_block_hash_excludes_the_txs() -> None:
    tx = {"kind": "transfer", "amount": 1, "sig": "ab"}
    assert tx_id(tx) == blake3(b'{"amount":1,"kind":"transfer","sig":"ab"}').hexdigest()
    assert tx_id(tx) != tx_id({**tx, "sig": "cd"})
    block = {"kind": "block", "height": 1, "sig": "ab", "txs": [tx]}
    assert header_of(block) == {"kind": "block", "height": 1, "sig": "ab"}
    assert block_hash(block) == blake3(b'{"height":1,"kind":"block","sig":"ab"}').hexdigest()
    assert block_hash(block) == block_hash({**block, "txs": []})
    genesis = {"kind": "genesis", "chain_id": "c"}
    assert genesis_hash(genesis) == blake3(b'{"chain_id":"c","kind":"genesis"}').hexdigest()
