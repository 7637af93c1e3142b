"""Merkle kernels: both backends against literal trees and each other; proofs; hash-chain links."""

from __future__ import annotations

import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from accelerators import backend, merkle_cpu
from schemas.canonical import tx_root as canonical_tx_root

IDS = [blake3(b"tx-%d" % i).hexdigest() for i in range(9)]
BACKENDS = ["cpu", "jax"]


def _leaf(tx_id: str) -> bytes:
    return blake3(b"\x00" + bytes.fromhex(tx_id)).digest()


def _parent(left: bytes, right: bytes) -> bytes:
    return blake3(b"\x01" + left + right).digest()


@pytest.fixture(params=BACKENDS)
def accel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(backend.ENV, request.param)
    return str(request.param)


def test_tx_root_literal_trees(accel: str) -> None:
    a, b, c = (_leaf(t) for t in IDS[:3])
    assert backend.tx_root([]) == blake3(b"").hexdigest()
    assert backend.tx_root(IDS[:1]) == a.hex()
    assert backend.tx_root(IDS[:2]) == _parent(a, b).hex()
    assert backend.tx_root(IDS[:3]) == _parent(_parent(a, b), c).hex()  # odd node carried up


@settings(max_examples=10, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=40))
def test_tx_root_backends_agree_with_canonical(ids: list[bytes]) -> None:
    hexes = [i.hex() for i in ids]
    expected = canonical_tx_root(hexes)
    with pytest.MonkeyPatch.context() as mp:
        for name in BACKENDS:
            mp.setenv(backend.ENV, name)
            assert backend.tx_root(hexes) == expected


def test_hash_many_backends_agree(accel: str) -> None:
    messages = [b"", b"abc", bytes(200), bytes(range(256)) * 5]
    assert backend.hash_many(messages) == [blake3(m).digest() for m in messages]


def test_sum_tree_layout(accel: str) -> None:
    leaves = [(b"\x11" * 32, 5), (b"\x22" * 32, 7), (b"\x33" * 32, 2**63 - 1)]
    levels = backend.merkle_sum_levels(leaves)
    h = [blake3(b"\x02" + i + b.to_bytes(16, "big")).digest() for i, b in leaves]
    p = blake3(b"\x03" + h[0] + (5).to_bytes(16, "big") + h[1] + (7).to_bytes(16, "big")).digest()
    top = blake3(b"\x03" + p + (12).to_bytes(16, "big") + h[2] + (2**63 - 1).to_bytes(16, "big")).digest()
    leaf_level = list(zip(h, [5, 7, 2**63 - 1], strict=True))
    assert levels == [leaf_level, [(p, 12), (h[2], 2**63 - 1)], [(top, 12 + 2**63 - 1)]]
    assert backend.merkle_sum_levels([]) == []
    proof = merkle_cpu.proof_from_levels(levels, 1)
    assert merkle_cpu.verify_sum_inclusion(b"\x22" * 32, 7, proof, levels[-1][0])
    assert not merkle_cpu.verify_sum_inclusion(b"\x22" * 32, 8, proof, levels[-1][0])


@settings(max_examples=8, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.integers(0, 2**63 - 1)), max_size=30))
def test_sum_tree_backends_agree(leaves: list[tuple[bytes, int]]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(backend.ENV, "jax")
        got = backend.merkle_sum_levels(leaves)
    assert got == merkle_cpu.merkle_sum_levels(leaves)


def test_inclusion_proofs(accel: str) -> None:
    root = merkle_cpu.tx_root(IDS)
    items: list[tuple[str, list[merkle_cpu.Step], str]] = []
    for k, tx in enumerate(IDS):
        items.append((tx, merkle_cpu.inclusion_proof(IDS, k), root))
    wrong_root = ("0" if root[0] != "0" else "1") + root[1:]
    items.append((IDS[0], merkle_cpu.inclusion_proof(IDS, 0), wrong_root))
    items.append((IDS[1], merkle_cpu.inclusion_proof(IDS, 0), root))  # another tx's path
    items.append((IDS[0], merkle_cpu.inclusion_proof(IDS, 0), root.upper()))  # the reference compares strings
    assert merkle_cpu.inclusion_proof(IDS, 8) == [(True, merkle_cpu.tx_levels(IDS)[3][0])]  # carried up twice
    assert backend.verify_inclusion_many(items) == [True] * 9 + [False] * 3


def test_hash_chain_links(accel: str) -> None:
    hashes = [blake3(b"event-%d" % i).hexdigest() for i in range(5)]
    prev = [merkle_cpu.ZERO_HASH, *hashes[:-1]]
    assert backend.check_hash_chain(prev, hashes) == []
    broken = [*prev]
    broken[3] = hashes[0]
    broken[0] = hashes[4]
    assert backend.check_hash_chain(broken, hashes) == [0, 3]
    assert backend.check_hash_chain([p.upper() for p in prev], hashes) == [1, 2, 3, 4]  # "00..." has no case
    assert backend.check_hash_chain([], []) == []
    with pytest.raises(ValueError):
        backend.check_hash_chain(prev[:2], hashes)


def test_choose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backend.ENV, "cpu")
    assert backend.choose(10**9) == "cpu"
    monkeypatch.setenv(backend.ENV, "auto")
    assert backend.choose(1) == "cpu"  # below every threshold: JAX is not imported at all
    assert backend.choose(10**6, "tree") == "jax"  # measured: tx_root pays from 65,536 leaves on the CPU too
    assert backend.choose(10**6, "hash") == ("jax" if backend._jax_platform() != "cpu" else "cpu")
    monkeypatch.setenv(backend.ENV, "gpu")
    with pytest.raises(ValueError):
        backend.choose(1)


def test_deep_proofs_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [blake3(b"deep-%d" % i).hexdigest() for i in range(300)]  # depth 9: the 16-step bucket
    levels = merkle_cpu.tx_levels(ids)
    root = levels[-1][0].hex()
    items = [(ids[k], merkle_cpu.proof_from_levels(levels, k), root) for k in (0, 1, 150, 298, 299)]
    items.append((ids[5], merkle_cpu.proof_from_levels(levels, 6), root))
    monkeypatch.setenv(backend.ENV, "jax")
    assert backend.verify_inclusion_many(items) == [True] * 5 + [False]
