"""BLAKE3 hash mode (32-byte output) in JAX, written for one message and `vmap`ped over padded batches.

A message of up to `n_chunks * 1024` bytes is given as little-endian words `uint32[n_chunks, blocks, 16]`
(zero padded) plus its true length, so one compiled kernel serves every length in its shape bucket. Padding
blocks and chunks are computed and then discarded with `where`: under `vmap` a branch would run both sides
anyway, and fixed work per bucket is what keeps XLA from recompiling per call.

The 7 rounds stay inside `lax.fori_loop`: unrolled rounds made XLA compile for minutes here (DESIGN.md).
Host packing (`hash_many`) groups messages by shape bucket and pads batch sizes to powers of two.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _one_device_per_core() -> None:
    """One JAX CPU device per core: XLA runs each kernel call on one core, so tiles are dealt round-robin over
    devices (200-byte messages: 0.65M/s on one device, 0.98M/s on two, 2 cores). Left alone when the caller set
    it, or when JAX already ran something (the setting must precede the backend's start)."""
    if jax.config.jax_num_cpu_devices == -1:
        try:
            jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
        except RuntimeError:
            pass


_one_device_per_core()

IV = np.array(
    [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19], np.uint32
)
MSG_PERMUTATION = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
CHUNK_START, CHUNK_END, PARENT, ROOT = 1, 2, 4, 8
BLOCK_LEN, CHUNK_LEN = 64, 1024
# Rows per kernel call: powers of two up to TILE. Larger calls ran slower on the CPU (2 cores here: 200-byte
# messages ~1.0M/s at 2,048 rows, 0.4M/s at 65,536) because the 32 state vectors then leave the cache.
BATCH_MIN, TILE = 16, 2048


def _rotr(x: jax.Array, n: int) -> jax.Array:
    return (x >> np.uint32(n)) | (x << np.uint32(32 - n))


def _g(v: list[jax.Array], a: int, b: int, c: int, d: int, x: jax.Array, y: jax.Array) -> None:
    v[a] = v[a] + v[b] + x
    v[d] = _rotr(v[d] ^ v[a], 16)
    v[c] = v[c] + v[d]
    v[b] = _rotr(v[b] ^ v[c], 12)
    v[a] = v[a] + v[b] + y
    v[d] = _rotr(v[d] ^ v[a], 8)
    v[c] = v[c] + v[d]
    v[b] = _rotr(v[b] ^ v[c], 7)


def _round(_: jax.Array, carry: tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]) -> tuple:
    # State and message as 16 scalars each: under vmap every word is one (batch,) vector, no gathers.
    state, m = carry
    v = list(state)
    _g(v, 0, 4, 8, 12, m[0], m[1])
    _g(v, 1, 5, 9, 13, m[2], m[3])
    _g(v, 2, 6, 10, 14, m[4], m[5])
    _g(v, 3, 7, 11, 15, m[6], m[7])
    _g(v, 0, 5, 10, 15, m[8], m[9])
    _g(v, 1, 6, 11, 12, m[10], m[11])
    _g(v, 2, 7, 8, 13, m[12], m[13])
    _g(v, 3, 4, 9, 14, m[14], m[15])
    return tuple(v), tuple(m[p] for p in MSG_PERMUTATION)


def compress(cv: jax.Array, block: jax.Array, counter: jax.Array, block_len: jax.Array, flags: jax.Array) -> jax.Array:
    """cv uint32[8], block uint32[16], scalars -> uint32[8]: the new chaining value (= first 32 output bytes)."""
    u32 = jnp.uint32
    state = tuple(cv[i] for i in range(8)) + tuple(u32(w) for w in IV[:4])
    state += (u32(counter), u32(0), u32(block_len), u32(flags))  # counter < 2**32 chunks: high word 0
    m = tuple(block[i] for i in range(16))
    v, _ = lax.fori_loop(0, 7, _round, (state, m))
    return jnp.stack([v[i] ^ v[i + 8] for i in range(8)])


def chunk_cv(blocks: jax.Array, index: jax.Array, chunk_len: jax.Array, is_root: jax.Array) -> jax.Array:
    """blocks uint32[B, 16] of one chunk holding chunk_len (0..1024) real bytes -> its chaining value uint32[8]."""
    n_blocks = jnp.maximum(1, (chunk_len + BLOCK_LEN - 1) // BLOCK_LEN)

    def step(cv: jax.Array, xs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
        block, b = xs
        last = b == n_blocks - 1
        flags = jnp.where(b == 0, CHUNK_START, 0) | jnp.where(last, CHUNK_END, 0) | jnp.where(last & is_root, ROOT, 0)
        block_len = jnp.clip(chunk_len - BLOCK_LEN * b, 0, BLOCK_LEN)
        new = compress(cv, block, index, block_len, flags)
        return jnp.where(b < n_blocks, new, cv), None

    cv, _ = lax.scan(step, jnp.asarray(IV), (blocks, jnp.arange(blocks.shape[0])))
    return cv


def parent_cv(left: jax.Array, right: jax.Array, is_root: jax.Array) -> jax.Array:
    return compress(jnp.asarray(IV), jnp.concatenate([left, right]), 0, BLOCK_LEN, PARENT | jnp.where(is_root, ROOT, 0))


def hash_words(words: jax.Array, length: jax.Array) -> jax.Array:
    """One message: words uint32[C, B, 16] (zero padded, C a power of two), length in bytes -> digest uint32[8].

    Chunks are combined pairwise level by level, the odd one carried up: that is BLAKE3's left-complete tree.
    """
    n_chunks = words.shape[0]
    real = jnp.maximum(1, (length + CHUNK_LEN - 1) // CHUNK_LEN)
    index = jnp.arange(n_chunks)
    lengths = jnp.clip(length - CHUNK_LEN * index, 0, CHUNK_LEN)
    level = jax.vmap(chunk_cv, in_axes=(0, 0, 0, None))(words, index, lengths, real == 1)
    if n_chunks == 1:
        return level[0]

    def merge(_: jax.Array, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        # One fixed-size level per iteration (the upper half is padding): a Python loop over levels
        # compiled a separate compression per level, about 0.8 s each.
        level, count = carry
        left, right = level[0::2], level[1::2]
        parents = jax.vmap(parent_cv, in_axes=(0, 0, None))(left, right, count == 2)
        paired = (2 * jnp.arange(left.shape[0]) + 1) < count
        merged = jnp.where(paired[:, None], parents, left)
        return jnp.concatenate([merged, jnp.zeros_like(merged)]), (count + 1) // 2

    level, _ = lax.fori_loop(0, (n_chunks - 1).bit_length(), merge, (level, real))
    return level[0]


hash_words_batch = jax.jit(jax.vmap(hash_words))


def bucket(length: int) -> tuple[int, int]:
    """(chunks, blocks per chunk) of the padded shape for a message of `length` bytes."""
    if length <= CHUNK_LEN:
        return 1, _pow2(max(1, -(-length // BLOCK_LEN)))
    return _pow2(-(-length // CHUNK_LEN)), CHUNK_LEN // BLOCK_LEN


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def pack(messages: Sequence[bytes], chunks: int, blocks: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded words uint32[rows, chunks, blocks, 16] and lengths int32[rows] (rows >= len(messages))."""
    width = chunks * blocks * BLOCK_LEN
    lengths = np.zeros(rows, np.int32)
    lengths[: len(messages)] = np.fromiter(map(len, messages), np.int32, count=len(messages))
    padded = np.zeros((rows, width), np.uint8)
    if len(messages) and lengths.min() == lengths.max() == lengths[len(messages) - 1]:
        # All one length (tx ids, fixed records): the joined bytes are already the rows.
        n = int(lengths[0])
        padded[: len(messages), :n] = np.frombuffer(b"".join(messages), np.uint8).reshape(len(messages), n)
    else:
        # A boolean mask fills row-major, i.e. in the order of the joined bytes: one C pass, no per-message call.
        padded[np.arange(width) < lengths[:, None]] = np.frombuffer(b"".join(messages), np.uint8)
    return padded.view("<u4").reshape(rows, chunks, blocks, 16), lengths


def digests_to_bytes(digests: np.ndarray, n: int) -> list[bytes]:
    raw = np.ascontiguousarray(digests[:n], dtype="<u4").tobytes()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


def _rows(n: int) -> int:
    return max(BATCH_MIN, _pow2(n)) if n <= TILE else -(-n // TILE) * TILE


def hash_many(messages: Sequence[bytes]) -> list[bytes]:
    """blake3(m).digest() for every message, batched per shape bucket."""
    if not messages:
        return []
    lengths = np.fromiter(map(len, messages), np.int64, count=len(messages))
    buckets = {n: bucket(int(n)) for n in np.unique(lengths)}
    if len(set(buckets.values())) == 1:  # the common case: one shape, no regrouping
        ((chunks, blocks),) = set(buckets.values())
        return _hash_one_shape(messages, chunks, blocks)
    out: list[bytes] = [b""] * len(messages)
    for shape in set(buckets.values()):
        indices = np.flatnonzero(np.isin(lengths, [n for n, b in buckets.items() if b == shape]))
        for i, d in zip(indices, _hash_one_shape([messages[i] for i in indices], *shape), strict=True):
            out[i] = d
    return out


def _hash_one_shape(messages: Sequence[bytes], chunks: int, blocks: int) -> list[bytes]:
    """Pack one tile while the device hashes the one before: dispatch is asynchronous, so the host's packing
    and the kernel overlap (packing alone took as long as hashing for 200-byte messages)."""
    rows = _rows(len(messages))
    tile = min(TILE, rows)
    pending = []
    for start in range(0, len(messages), tile):
        words, lengths = pack(messages[start : start + tile], chunks, blocks, tile)
        pending.append(_on_device(len(pending), words, lengths))
    digests = np.concatenate([np.asarray(p) for p in pending])
    return digests_to_bytes(digests, len(messages))


def _on_device(k: int, words: np.ndarray, lengths: np.ndarray) -> jax.Array:
    """Start tile k on device k mod n (asynchronously)."""
    devices = jax.local_devices()
    device = devices[k % len(devices)]
    return hash_words_batch(jax.device_put(words, device), jax.device_put(lengths, device))


def hash_words_tiled(words: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Digests uint32[rows, 8] of packed messages, at most TILE rows per kernel call (rows a power of two
    below TILE, else a multiple of it)."""
    tile = min(TILE, words.shape[0])
    starts = range(0, words.shape[0], tile)
    parts = [_on_device(k, words[i : i + tile], lengths[i : i + tile]) for k, i in enumerate(starts)]
    return np.concatenate([np.asarray(p) for p in parts])
