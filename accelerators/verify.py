"""Batched ML-DSA verification spread over every core (the CPU backend).

pqcrypto's verify holds the GIL (two threads ran slower than one here), so batches are split into
one chunk per worker *process*. Workers start with `forkserver`, never `fork`: the calling process runs
threads (uvicorn, the projection follower, the chdb engine) that a forked child must not inherit.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor

import pqcrypto
from pqcrypto.sign import ml_dsa_65, ml_dsa_87

_VERIFY = {"ml-dsa-65": ml_dsa_65.verify, "ml-dsa-87": ml_dsa_87.verify}
# How often a pool worker checks that its owner still runs.
OWNER_POLL_S = 0.5
# Below this many items a batch is verified inline: the round trip to the pool costs more.
POOL_BATCH_MIN = 32

# (alg, public key bytes, message bytes, signature as hex)
Item = tuple[str, bytes, bytes, str]


def verify_one(alg: str, pk: bytes, message: bytes, sig: bytes) -> bool:
    """pqcrypto verification (empty context); a malformed key or signature is simply invalid."""
    try:
        _VERIFY[alg](pk, message, sig)
    except (pqcrypto.InvalidSignatureError, ValueError, TypeError, KeyError):
        return False
    return True


def exit_with_owner(owner_pid: int) -> None:
    """Pool worker start-up: exit when the process that owns the pool is gone.

    A worker holds both ends of its own call queue, so when its owner dies by SIGKILL it never sees EOF and
    would wait forever (and keep the forkserver alive with it). A daemon thread watches the owner instead.
    """

    def watch() -> None:
        while _alive(owner_pid):
            time.sleep(OWNER_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed owner that its parent has not reaped yet is a zombie: gone for our purpose
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return True


def _verify_chunk(items: Sequence[Item]) -> list[bool]:
    return [verify_one(alg, pk, msg, bytes.fromhex(sig)) for alg, pk, msg, sig in items]


class BatchVerifier:
    """Verifies batches in `workers` processes; `workers=1` verifies inline."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool: Executor | None = None

    def _executor(self) -> Executor:
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=ctx, initializer=exit_with_owner, initargs=(os.getpid(),)
            )
        return self._pool

    @staticmethod
    def verify_one(alg: str, pk: bytes, message: bytes, sig: bytes) -> bool:
        """One signature, in this process (a header or a vote: not worth a round trip to a worker)."""
        return verify_one(alg, pk, message, sig)

    def verify(self, items: Sequence[Item]) -> list[bool]:
        if self.workers <= 1 or len(items) < POOL_BATCH_MIN:
            return _verify_chunk(items)
        size = -(-len(items) // self.workers)
        return self.collect([self.submit(items[i : i + size]) for i in range(0, len(items), size)])

    def submit(self, items: Sequence[Item]) -> Future[list[bool]]:
        """Start verifying a chunk now; the caller prepares the next chunk while workers verify this one."""
        if self.workers <= 1:
            done: Future[list[bool]] = Future()
            done.set_result(_verify_chunk(items))
            return done
        return self._executor().submit(_verify_chunk, items)

    @staticmethod
    def collect(futures: Sequence[Future[list[bool]]]) -> list[bool]:
        out: list[bool] = []
        for future in futures:
            out.extend(future.result())
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class TrustingVerifier(BatchVerifier):
    """Takes every signature as valid: for audits that check everything else faster (`tally verify
    --no-signatures`), never for the ledger itself."""

    def __init__(self) -> None:
        super().__init__(1)

    @staticmethod
    def verify_one(alg: str, pk: bytes, message: bytes, sig: bytes) -> bool:
        return True

    def verify(self, items: Sequence[Item]) -> list[bool]:
        return [True] * len(items)

    def submit(self, items: Sequence[Item]) -> Future[list[bool]]:
        done: Future[list[bool]] = Future()
        done.set_result([True] * len(items))
        return done
