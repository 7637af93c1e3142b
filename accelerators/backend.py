"""One interface, two backends: JAX kernels when a batch is large enough to pay, the blake3 package otherwise.

`TALLY_ACCEL=jax|cpu` forces a backend; unset (or `auto`) picks by batch size against the threshold measured for
the device JAX runs on (`tests/benchmarks/accelerators.py`). Both backends give identical answers; the tests
compare them. JAX is imported only when first chosen: importing it costs about a second.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from types import ModuleType

from accelerators import merkle_cpu
from accelerators.merkle_cpu import ZERO_HASH, Step, SumNode

ENV = "TALLY_ACCEL"
# Smallest batch for which JAX beat the blake3 package, per kind of work and JAX platform (None: never).
# Measured on 2 cores (docs/accelerators.md, `tests/benchmarks/accelerators.py`):
# - hash (hash_many, sum tree, proofs, chain links): for 200-byte messages the kernel alone ran 1.0-1.7x the
#   blake3 loop, but packing Python bytes into arrays costs more than the difference at every batch tried;
#   the sum tree broke even (its levels come back as Python tuples either way).
# - tree (tx_root): the levels never leave arrays; 16,384 leaves broke even, 65,536 ran 1.6x, 1M 2.0x.
# gpu, tpu: not measured yet (no accelerator here); a guess to be replaced by the benchmark's figures.
JAX_MIN_BATCH: dict[str, dict[str, int | None]] = {
    "hash": {"cpu": None, "gpu": 8192, "tpu": 8192},
    "tree": {"cpu": 65536, "gpu": 8192, "tpu": 8192},
}


@cache
def _jax_platform() -> str:
    import jax

    return jax.default_backend()


def choose(batch: int, kind: str = "hash") -> str:
    """'jax' or 'cpu' for a batch of this size and kind ("hash" or "tree")."""
    forced = os.environ.get(ENV, "auto").lower()
    if forced in ("jax", "cpu"):
        return forced
    if forced != "auto":
        raise ValueError(f"{ENV} must be jax, cpu or auto, not {forced!r}")
    thresholds = JAX_MIN_BATCH[kind]
    known = [t for t in thresholds.values() if t is not None]
    if not known or batch < min(known):  # too small for any device: do not even import JAX
        return "cpu"
    threshold = thresholds.get(_jax_platform())
    return "jax" if threshold is not None and batch >= threshold else "cpu"


def _blake3_jax() -> ModuleType:
    from accelerators import blake3_jax

    return blake3_jax


def _merkle_jax() -> ModuleType:
    from accelerators import merkle_jax

    return merkle_jax


def hash_many(messages: Sequence[bytes]) -> list[bytes]:
    """blake3 digests (32 bytes) of every message, in order."""
    if choose(len(messages)) == "jax":
        return _blake3_jax().hash_many(messages)
    return merkle_cpu.hash_many(messages)


def tx_root(tx_ids_hex: Sequence[str]) -> str:
    """DOMAIN.md's tx_root over tx ids given as 64 hex characters."""
    if choose(len(tx_ids_hex), "tree") == "jax" and all(len(t) == 64 for t in tx_ids_hex):
        return _merkle_jax().tx_root(tx_ids_hex)
    return merkle_cpu.tx_root(tx_ids_hex)


def merkle_sum_levels(leaves: Sequence[tuple[bytes, int]]) -> list[list[SumNode]]:
    """Every level of the proof-of-reserves sum tree, leaves first (layout in merkle_cpu); [] for no leaves."""
    if choose(len(leaves)) == "jax":
        return _merkle_jax().merkle_sum_levels(leaves)
    return merkle_cpu.merkle_sum_levels(leaves)


def verify_inclusion_many(items: Sequence[tuple[str, Sequence[Step], str]]) -> list[bool]:
    """(tx id hex, proof from `merkle_cpu.inclusion_proof`, tx_root hex) -> is the tx under that root."""
    if choose(len(items)) == "jax":
        return _merkle_jax().verify_inclusion_many(items)
    return merkle_cpu.verify_inclusion_many(items)


def check_hash_chain(prev_hashes: Sequence[str], event_hashes: Sequence[str], first_prev: str = ZERO_HASH) -> list[int]:
    """Indices of broken links: prev_hashes[i] != event_hashes[i - 1] (first_prev for the first event).

    The event hashes themselves come from `hash_many` over the events' canonical bytes.
    """
    if choose(len(prev_hashes)) == "jax":
        return _merkle_jax().check_hash_chain(prev_hashes, event_hashes, first_prev)
    return merkle_cpu.check_hash_chain(prev_hashes, event_hashes, first_prev)
