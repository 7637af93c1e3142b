"""BLAKE3 in JAX: the 35 official vectors and random inputs against the blake3 package."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from accelerators import blake3_jax

# tests/ -> repo -> its parent, where CI puts shared/ beside the clone.
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "blake3_test_vectors.json"


def _cases() -> list[tuple[int, str]]:
    data = json.loads(VECTORS.read_text())
    return [(case["input_len"], case["hash"][:64]) for case in data["cases"]]


def test_official_vectors() -> None:
    cases = _cases()
    assert len(cases) == 35
    messages = [bytes(i % 251 for i in range(n)) for n, _ in cases]
    # One shape for all 35 (the largest bucket): one compile instead of ten.
    chunks, blocks = blake3_jax.bucket(max(len(m) for m in messages))
    words, lengths = blake3_jax.pack(messages, chunks, blocks, 64)
    digests = blake3_jax.digests_to_bytes(np.asarray(blake3_jax.hash_words_batch(words, lengths)), len(messages))
    assert [d.hex() for d in digests] == [h for _, h in cases]


def test_buckets() -> None:
    assert blake3_jax.bucket(0) == (1, 1)
    assert blake3_jax.bucket(64) == (1, 1)
    assert blake3_jax.bucket(65) == (1, 2)
    assert blake3_jax.bucket(200) == (1, 4)
    assert blake3_jax.bucket(1024) == (1, 16)
    assert blake3_jax.bucket(1025) == (2, 16)
    assert blake3_jax.bucket(3073) == (4, 16)


def test_hash_many_keeps_order_across_buckets() -> None:
    messages = [b"", b"a" * 300, b"abc", b"x" * 64, b"y" * 65, b"z" * 2000]
    assert blake3_jax.hash_many(messages) == [blake3(m).digest() for m in messages]


# Lengths drawn from a few buckets (up to 4 chunks) so the whole property compiles a handful of shapes.
@settings(max_examples=15, deadline=None)
@given(st.lists(st.binary(max_size=4096), min_size=1, max_size=20))
def test_random_inputs_match_blake3_package(messages: list[bytes]) -> None:
    assert blake3_jax.hash_many(messages) == [blake3(m).digest() for m in messages]


def test_batches_beyond_one_tile_use_every_device() -> None:
    # 5,000 messages of 0-64 bytes: three 2,048-row tiles dealt over the devices, mixed lengths (mask packing).
    messages = [bytes([i % 256]) * (i % 65) for i in range(5000)]
    assert blake3_jax.hash_many(messages) == [blake3(m).digest() for m in messages]
