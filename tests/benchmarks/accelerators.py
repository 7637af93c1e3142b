"""BLAKE3 and Merkle throughput: the JAX kernels on the device present vs the blake3 package in a Python loop.

Every figure carries the device, the batch size and the jax version. Compile time is reported apart: the first
call of each shape compiles, later calls of that shape reuse it. `kernel` rates feed already packed arrays;
`end_to_end` rates include packing bytes into arrays and splitting digests back out, as `hash_many` does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from blake3 import blake3

from accelerators import blake3_jax, merkle_cpu, merkle_jax


def _best(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _tag(batch: int) -> dict[str, Any]:
    devices = [str(d) for d in jax.devices()]
    return {"devices": devices, "platform": jax.default_backend(), "batch": batch, "jax": jax.__version__}


def hash_rates(length: int, batch: int) -> dict[str, Any]:
    messages = [os.urandom(length) for _ in range(batch)]
    chunks, blocks = blake3_jax.bucket(length)
    words, lengths = blake3_jax.pack(messages, chunks, blocks, batch)
    tile = min(blake3_jax.TILE, batch)
    start = time.perf_counter()
    blake3_jax.hash_words_batch(words[:tile], lengths[:tile]).block_until_ready()
    compile_s = time.perf_counter() - start
    kernel_s = _best(lambda: blake3_jax.hash_words_tiled(words, lengths))
    e2e_s = _best(lambda: blake3_jax.hash_many(messages))
    cpu_s = _best(lambda: [blake3(m).digest() for m in messages])
    assert blake3_jax.hash_many(messages[:64]) == [blake3(m).digest() for m in messages[:64]]
    return {
        **_tag(batch), "message_bytes": length, "tile_rows": tile, "compile_s": round(compile_s, 2),
        "jax_kernel_hashes_per_s": int(batch / kernel_s), "jax_end_to_end_hashes_per_s": int(batch / e2e_s),
        "blake3_loop_hashes_per_s": int(batch / cpu_s), "kernel_vs_loop": round(cpu_s / kernel_s, 2),
        "end_to_end_vs_loop": round(cpu_s / e2e_s, 2),
    }


def merkle_root_rates(leaves: int) -> dict[str, Any]:
    ids = [os.urandom(32).hex() for _ in range(leaves)]
    start = time.perf_counter()
    root = merkle_jax.tx_root(ids)
    first_s = time.perf_counter() - start
    jax_s = _best(lambda: merkle_jax.tx_root(ids), repeat=2)
    cpu_s = _best(lambda: merkle_cpu.tx_root(ids), repeat=2)
    assert root == merkle_cpu.tx_root(ids)
    return {**_tag(leaves), "leaves": leaves, "jax_first_call_s": round(first_s, 2), "jax_s": round(jax_s, 2),
            "blake3_loop_s": round(cpu_s, 2), "jax_vs_loop": round(cpu_s / jax_s, 2)}


def hash_chain_rates(events: int, body_bytes: int = 200) -> dict[str, Any]:
    """A synthetic log: each body names the hash of the one before; checking hashes every body, then the links."""
    prev, bodies, prevs = merkle_cpu.ZERO_HASH, [], []
    filler = b"x" * (body_bytes - 96)
    for seq in range(events):
        body = b'{"prev_hash":"%s","seq":%10d,"data":"%s"}' % (prev.encode(), seq, filler)
        bodies.append(body)
        prevs.append(prev)
        prev = blake3(body).hexdigest()

    def on_jax() -> list[int]:
        own = [d.hex() for d in blake3_jax.hash_many(bodies)]
        return merkle_jax.check_hash_chain(prevs, own, merkle_cpu.ZERO_HASH)

    def on_cpu() -> list[int]:
        return merkle_cpu.check_hash_chain(prevs, [blake3(b).hexdigest() for b in bodies])

    start = time.perf_counter()
    assert on_jax() == []
    first_s = time.perf_counter() - start
    jax_s, cpu_s = _best(on_jax, repeat=2), _best(on_cpu, repeat=2)
    return {**_tag(events), "events": events, "body_bytes": len(bodies[0]), "jax_first_call_s": round(first_s, 2),
            "jax_s": round(jax_s, 2), "blake3_loop_s": round(cpu_s, 2), "jax_vs_loop": round(cpu_s / jax_s, 2)}


def jax_threshold(length: int = 200) -> dict[str, Any]:
    """Smallest batch (of those tried) where JAX end to end beat the blake3 loop: backend.JAX_MIN_BATCH's source."""
    tried = {}
    for batch in (256, 2048, 16384, 65536):
        messages = [os.urandom(length) for _ in range(batch)]
        blake3_jax.hash_many(messages)  # compile this batch's shapes first
        jax_s = _best(lambda m=messages: blake3_jax.hash_many(m))
        cpu_s = _best(lambda m=messages: [blake3(x).digest() for x in m])
        tried[batch] = round(cpu_s / jax_s, 2)
    pays = [b for b, ratio in tried.items() if ratio > 1.0]
    return {**_tag(max(tried)), "message_bytes": length, "end_to_end_vs_loop_by_batch": tried,
            "jax_pays_from_batch": min(pays) if pays else None}


def tree_threshold() -> dict[str, Any]:
    """tx_root, JAX / blake3 loop by leaf count: the source of backend.JAX_MIN_BATCH["tree"]."""
    tried = {}
    for leaves in (4096, 16384, 65536, 262144):
        tried[leaves] = merkle_root_rates(leaves)["jax_vs_loop"]
    pays = [n for n, ratio in tried.items() if ratio > 1.0]
    return {**_tag(max(tried)), "jax_vs_loop_by_leaves": tried, "jax_pays_from_leaves": min(pays) if pays else None}


def accelerator_rates(batch: int = 65536, leaves: int = 1_000_000, events: int = 1_000_000) -> dict[str, Any]:
    """Everything issue 8 asks to measure, as one dict for `python -m tests.benchmarks`."""
    return {
        "name": "accelerators",
        "hashes": [hash_rates(length, batch) for length in (64, 200, 1024)],
        "threshold_200_bytes": jax_threshold(200),
        "merkle_root": merkle_root_rates(leaves),
        "threshold_tx_root": tree_threshold(),
        "hash_chain": hash_chain_rates(events),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(accelerator_rates(), indent=2))
