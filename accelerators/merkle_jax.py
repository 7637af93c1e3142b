"""The trees of `merkle_cpu` as JAX kernels: one pair (or one proof) per item, `vmap`ped, levels driven from the host.

Each level is hashed in tiles of at most `blake3_jax.TILE` pairs whose row counts are powers of two, so a tree of
any size reuses a few compiled shapes. A level holds `count` real nodes padded to an even row count; pair i is
hashed when node 2i + 1 is real, otherwise node 2i is carried up (DOMAIN.md's odd-node rule).
Byte layouts are those documented in `merkle_cpu`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from accelerators import merkle_cpu
from accelerators.blake3_jax import TILE, _pow2, hash_words, hash_words_tiled

HASH_HEX, HEXES = re.compile("[0-9a-f]{64}"), re.compile("[0-9a-f]*")
DEPTH_MIN = 8
ROWS_MIN = 64  # proof depths are padded to a power of two at least this


def _le_bytes(words: jax.Array) -> jax.Array:
    """uint32[n] -> uint8[4n], little-endian: a digest's bytes."""
    shifts = jnp.arange(4, dtype=jnp.uint32) * 8
    return ((words[:, None] >> shifts) & 0xFF).astype(jnp.uint8).reshape(-1)


def _be_bytes(words: jax.Array) -> jax.Array:
    """uint32[n] -> uint8[4n], big-endian: a 128-bit sum held as 4 limbs, most significant first."""
    shifts = jnp.arange(3, -1, -1, dtype=jnp.uint32) * 8
    return ((words[:, None] >> shifts) & 0xFF).astype(jnp.uint8).reshape(-1)


def _hash_bytes(message: jax.Array, length: int) -> jax.Array:
    """uint8[k * 64] holding `length` real bytes (one chunk) -> digest uint32[8]."""
    padded = jnp.zeros(_pow2(message.shape[0] // 64) * 64, jnp.uint8).at[: message.shape[0]].set(message)
    w = padded.reshape(-1, 4).astype(jnp.uint32)
    words = w[:, 0] | (w[:, 1] << 8) | (w[:, 2] << 16) | (w[:, 3] << 24)
    return hash_words(words.reshape(1, -1, 16), jnp.int32(length))


def tx_parent(left: jax.Array, right: jax.Array) -> jax.Array:
    """blake3(0x01 || left || right): digests uint32[8] -> uint32[8]."""
    message = jnp.concatenate([jnp.ones(1, jnp.uint8), _le_bytes(left), _le_bytes(right), jnp.zeros(63, jnp.uint8)])
    return _hash_bytes(message, 65)


def _add128(a: jax.Array, b: jax.Array) -> jax.Array:
    """Sum of two 128-bit numbers held as uint32[4] limbs, most significant first (wraps past 2**128)."""
    out, carry = [], jnp.uint32(0)
    for i in (3, 2, 1, 0):
        t = a[i] + b[i]
        s = t + carry
        carry = ((t < a[i]) | (s < t)).astype(jnp.uint32)
        out.append(s)
    return jnp.stack(out[::-1])


def sum_parent(left: jax.Array, left_sum: jax.Array, right: jax.Array, right_sum: jax.Array) -> tuple:
    """blake3(0x03 || lh || ls || rh || rs) and ls + rs; hashes uint32[8], sums uint32[4]."""
    parts = [jnp.full(1, 3, jnp.uint8), _le_bytes(left), _be_bytes(left_sum), _le_bytes(right), _be_bytes(right_sum)]
    message = jnp.concatenate([*parts, jnp.zeros(31, jnp.uint8)])
    return _hash_bytes(message, 97), _add128(left_sum, right_sum)


def _level_kernel(pair: Callable[..., object]) -> Callable[..., object]:
    """A jitted level step: arrays shaped [2p, ...] with `count` real rows -> the next level's arrays [p, ...]."""

    def step(count: jax.Array, *arrays: jax.Array) -> tuple:
        lefts, rights = [a[0::2] for a in arrays], [a[1::2] for a in arrays]
        parents = jax.vmap(pair)(*lefts, *rights)  # pair(left arrays..., right arrays...)
        parents = parents if isinstance(parents, tuple) else (parents,)
        paired = 2 * jnp.arange(lefts[0].shape[0]) + 1 < count
        pairs = zip(parents, lefts, strict=True)
        return tuple(jnp.where(paired.reshape(-1, *[1] * (p.ndim - 1)), p, lf) for p, lf in pairs)

    return jax.jit(step)


_tx_step = _level_kernel(tx_parent)
_sum_step = _level_kernel(sum_parent)


def _levels(step: Callable[..., tuple], arrays: tuple[np.ndarray, ...], count: int) -> list[tuple[np.ndarray, ...]]:
    """All levels from the leaves up; arrays have `_rows(count)` rows. Tiles of a level are dealt round-robin over
    the devices (one per CPU core, see blake3_jax) and each level comes back to the host: on the CPU that copy is
    cheap beside the hashing, and it lets tiles on different devices meet again."""
    devices = jax.local_devices()
    out = [tuple(a[:count] for a in arrays)]
    current = arrays
    while count > 1:
        rows = current[0].shape[0]
        tile = min(2 * TILE, rows)
        parts = []
        for k, i in enumerate(range(0, rows, tile)):
            device = devices[k % len(devices)]
            args = [jax.device_put(a[i : i + tile], device) for a in current]
            parts.append(step(jax.device_put(np.int32(min(max(count - i, 0), tile)), device), *args))
        current = tuple(np.concatenate([np.asarray(p[k]) for p in parts]) for k in range(len(current)))
        count = (count + 1) // 2
        current = tuple(_fit(a, _rows(count)) for a in current)
        out.append(tuple(a[:count] for a in current))
    return out


def _fit(a: np.ndarray, rows: int) -> np.ndarray:
    """Slice or zero-pad axis 0 to `rows`: keep every level in a shape already compiled."""
    if a.shape[0] >= rows:
        return a[:rows]
    return np.concatenate([a, np.zeros((rows - a.shape[0], *a.shape[1:]), a.dtype)])


def _rows(n: int) -> int:
    """Padded row count: every level of every tree below ROWS_MIN nodes shares one compiled shape."""
    return max(ROWS_MIN, _pow2(n)) if n <= 2 * TILE else -(-n // (2 * TILE)) * 2 * TILE


def _leaf_words(prefix: bytes, bodies: Sequence[bytes], rows: int) -> np.ndarray:
    """Digests uint32[rows, 8] of one-block leaves prefix || body (every body the same length)."""
    from accelerators.blake3_jax import pack

    length = len(prefix) + len(bodies[0])
    words, lengths = pack([prefix + b for b in bodies], 1, 1, rows)
    lengths[len(bodies) :] = length
    return hash_words_tiled(words, lengths)


def tx_levels(tx_ids_hex: Sequence[str]) -> list[np.ndarray]:
    """Every level as digests uint32[n, 8], leaves first; [] for no txs."""
    if not tx_ids_hex:
        return []
    if any(len(t) != 64 for t in tx_ids_hex):
        raise ValueError("tx ids are 32 bytes (64 hex characters)")
    ids = bytes.fromhex("".join(tx_ids_hex))
    leaves = _leaf_words(merkle_cpu.TX_LEAF, [ids[i : i + 32] for i in range(0, len(ids), 32)], _rows(len(tx_ids_hex)))
    return [level[0] for level in _levels(_tx_step, (leaves,), len(tx_ids_hex))]


def tx_root(tx_ids_hex: Sequence[str]) -> str:
    levels = tx_levels(tx_ids_hex)
    return np.ascontiguousarray(levels[-1][0], "<u4").tobytes().hex() if levels else merkle_cpu.EMPTY_ROOT


def merkle_sum_levels(leaves: Sequence[tuple[bytes, int]]) -> list[list[merkle_cpu.SumNode]]:
    if not leaves:
        return []
    for blinded_id, balance in leaves:
        if len(blinded_id) != 32 or not 0 <= balance <= merkle_cpu.SUM_MAX:
            raise ValueError("a sum-tree leaf is a 32-byte blinded id and a balance in [0, 2**128)")
    rows = _rows(len(leaves))
    balances = [b.to_bytes(16, "big") for _, b in leaves]
    hashes = _leaf_words(merkle_cpu.SUM_LEAF, [i + b for (i, _), b in zip(leaves, balances, strict=True)], rows)
    sums = np.zeros((rows, 4), np.uint32)
    sums[: len(leaves)] = np.frombuffer(b"".join(balances), ">u4").reshape(-1, 4)
    out = []
    for level_hashes, level_sums in _levels(_sum_step, (hashes, sums), len(leaves)):
        raw = np.ascontiguousarray(level_hashes, "<u4").tobytes()
        totals = np.ascontiguousarray(level_sums, ">u4").tobytes()
        out.append([(raw[32 * i : 32 * i + 32], int.from_bytes(totals[16 * i : 16 * i + 16], "big"))
                    for i in range(level_hashes.shape[0])])
    total = out[-1][0][1]
    if total != sum(b for _, b in leaves):  # the limbs wrap past 2**128; the reference raises
        raise ValueError("sum-tree total overflows 128 bits")
    return out


def verify_one(
    leaf: jax.Array, siblings: jax.Array, on_left: jax.Array, depth: jax.Array, root: jax.Array
) -> jax.Array:
    """leaf digest uint32[8], siblings uint32[D, 8], on_left bool[D], real steps `depth` -> root matches."""

    def step(i: jax.Array, node: jax.Array) -> jax.Array:
        sib = siblings[i]
        left, right = jnp.where(on_left[i], sib, node), jnp.where(on_left[i], node, sib)
        return jnp.where(i < depth, tx_parent(left, right), node)

    return jnp.all(lax.fori_loop(0, siblings.shape[0], step, leaf) == root)


_verify_batch = jax.jit(jax.vmap(verify_one))


def verify_inclusion_many(items: Sequence[tuple[str, Sequence[merkle_cpu.Step], str]]) -> list[bool]:
    if not items:
        return []
    n, rows = len(items), _rows(len(items))
    depth = max(DEPTH_MIN, _pow2(max(len(p) for _, p, _ in items)))
    ids = [bytes.fromhex(t) for t, _, _ in items]
    if any(len(i) != 32 for i in ids) or any(len(s) != 32 for _, p, _ in items for _, s in p):
        # Odd-sized ids or siblings cannot match a real tree; the reference gives the same False, slowly.
        return merkle_cpu.verify_inclusion_many(items)
    leaves = _leaf_words(merkle_cpu.TX_LEAF, ids, rows)
    siblings = np.zeros((rows, depth, 32), np.uint8)
    on_left = np.zeros((rows, depth), bool)
    depths = np.zeros(rows, np.int32)
    roots = np.zeros((rows, 32), np.uint8)
    for k, (_, proof, root) in enumerate(items):
        depths[k] = len(proof)
        for j, (left, sibling) in enumerate(proof):
            siblings[k, j] = np.frombuffer(sibling, np.uint8)
            on_left[k, j] = left
        roots[k] = np.frombuffer(bytes.fromhex(root), np.uint8) if HASH_HEX.fullmatch(root) else 0
    # The reference compares lowercase hex strings: any other spelling of a root never matches.
    root_ok = [HASH_HEX.fullmatch(root) is not None for _, _, root in items]
    sib_words, root_words = siblings.view("<u4"), roots.view("<u4")
    tile = min(TILE, rows)
    ok = np.concatenate([
        np.asarray(_verify_batch(*[a[i : i + tile] for a in (leaves, sib_words, on_left, depths, root_words)]))
        for i in range(0, rows, tile)
    ])
    return [bool(o) and r for o, r in zip(ok[:n], root_ok, strict=True)]


def check_hash_chain(prev_hashes: Sequence[str], event_hashes: Sequence[str], first_prev: str) -> list[int]:
    if len(prev_hashes) != len(event_hashes):
        raise ValueError("one prev_hash per event")
    if not prev_hashes:
        return []
    joined = first_prev + "".join(prev_hashes) + "".join(event_hashes)
    if not HEXES.fullmatch(joined) or len(joined) != 64 * (2 * len(prev_hashes) + 1):
        return merkle_cpu.check_hash_chain(prev_hashes, event_hashes, first_prev)  # odd spellings: compare strings
    prev = np.frombuffer(bytes.fromhex("".join(prev_hashes)), np.uint8).reshape(-1, 32)
    own = np.frombuffer(bytes.fromhex(first_prev + "".join(event_hashes[:-1])), np.uint8).reshape(-1, 32)
    broken = jnp.any(jnp.asarray(prev) != jnp.asarray(own), axis=1)
    return [int(i) for i in np.flatnonzero(np.asarray(broken))]
