"""The sum trees the proof service keeps (api/proofs.py): compact, and built in a worker process when large.

A tree of 1M holders takes tens of seconds of pure Python hashing to rebuild (tests/benchmarks/reserves.py): in the
API process it would hold the GIL all that time and stall every other request. From TREE_PROCESS_HOLDERS_MIN
holders on, `TreeBuilder` builds it in a worker process (forkserver, never fork: the API process runs threads) and
gets back the compact form, a few byte strings that cross the pipe at memory speed. This module imports only what
a build needs, so that the worker starts light.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from array import array
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from accelerators.verify import exit_with_owner  # a worker exits with its owner, even a SIGKILLed one
from writes import reserves

TREE_PROCESS_HOLDERS_MIN = 50_000  # below this a rebuild takes well under a second: inline


@dataclass(frozen=True)
class CompactTree:
    """A sum tree kept for proofs: leaf ids sorted (32 bytes each), each level's hashes and sums (leaves first)."""

    ids: bytes
    hashes: list[bytes]
    sums: list[array[int] | list[int]]

    @property
    def leaves(self) -> int:
        return len(self.ids) // 32

    @property
    def root(self) -> tuple[bytes, int]:
        return self.hashes[-1], int(self.sums[-1][0])

    def find(self, blinded_id: bytes) -> int | None:
        """The index of the leaf with this id (binary search over the sorted ids); None when there is none."""
        lo, hi = 0, self.leaves
        while lo < hi:
            mid = (lo + hi) // 2
            if self.ids[32 * mid:32 * mid + 32] < blinded_id:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < self.leaves and self.ids[32 * lo:32 * lo + 32] == blinded_id else None

    def path(self, index: int) -> list[tuple[bool, tuple[bytes, int]]]:
        """The siblings from leaf `index` to the root: (the sibling is on the left, (hash, sum)). The tree is padded
        to a power of two, so every level has the sibling."""
        steps = []
        for hashes, sums in zip(self.hashes[:-1], self.sums[:-1], strict=True):
            sibling = index ^ 1
            steps.append((sibling < index, (hashes[32 * sibling:32 * sibling + 32], int(sums[sibling]))))
            index //= 2
        return steps


def compact(tree: reserves.ReservesTree) -> CompactTree:
    sums: list[array[int] | list[int]] = []
    for level in tree.levels:
        values = [s for _, s in level]
        sums.append(array("Q", values) if max(values) < 2**64 else values)  # upper sums may pass 2**64
    return CompactTree(b"".join(i for i, _ in tree.leaves), [b"".join(h for h, _ in level) for level in tree.levels],
                       sums)


def build_compact(
    secret: bytes, chain_id: str, asset: str, height: int, holdings: Sequence[tuple[str, int]]
) -> CompactTree:
    return compact(reserves.build_tree(secret, chain_id, asset, height, holdings))


class TreeBuilder:
    """Builds compact trees, in one worker process from `process_holders_min` holders on (0: never)."""

    def __init__(self, process_holders_min: int = TREE_PROCESS_HOLDERS_MIN) -> None:
        self.process_holders_min = process_holders_min
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def build(
        self, secret: bytes, chain_id: str, asset: str, height: int, holdings: Sequence[tuple[str, int]]
    ) -> CompactTree:
        if not self.process_holders_min or len(holdings) < self.process_holders_min:
            return build_compact(secret, chain_id, asset, height, holdings)
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("forkserver"), initializer=exit_with_owner,
                    initargs=(os.getpid(),),
                )
            pool = self._pool
        return pool.submit(build_compact, secret, chain_id, asset, height, list(holdings)).result()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
