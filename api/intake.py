"""`POST /v1/commands`: one JSON command or a JSON array of commands in, one result per command out.
`POST /v1/txs`: signed transactions for the devnet's tx pool (`TxIntake`, at the bottom).

200: the service's result dict for a single command, or a list of them (each with its `index`) for an array.
Numbers that are not integers (fractions, exponents, NaN, Infinity) reach the service as floats, and it refuses
them with DOMAIN.md's reason for their place, as it would in-process. A command with a repeated key or a lone
surrogate escape is answered `malformed_command` without reaching the service; the others are still submitted.
400 `malformed_command`: the body is not JSON at all, or is neither an object nor an array.
413 `payload_too_large`: the body exceeds `settings.request_bytes_max` (declared Content-Length or bytes actually
read, so a chunked body cannot slip past), or the array holds more than `COMMANDS_PER_REQUEST_MAX` commands.

The ledger has one writer: every service call runs on a single dedicated thread, so calls never overlap, run in
arrival order, and never block the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import strict_json
from api.metrics import Metrics
from schemas import limits, reasons
from writes.txpool import PoolFull, TxPool

T = TypeVar("T")
# Bodies up to this size are parsed on the event loop (well under a millisecond); larger ones in a thread.
_INLINE_PARSE_BYTES_MAX = 64 * 1024


class LedgerService(Protocol):
    """What the API needs of writes/service.py (results: docs/architecture.md)."""

    def submit(self, obj: Any) -> dict[str, Any]: ...
    def submit_many(self, objs: list[Any]) -> list[dict[str, Any]]: ...
    def max_position(self) -> int: ...


class _Refused(Exception):
    """The request as a whole is refused; no command reaches the service."""

    def __init__(self, status_code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.reason = reason
        self.message = message


def _rejected(reason: str, message: str, kind: str | None = None) -> dict[str, Any]:
    return {"status": "rejected", "kind": kind, "reason": reason, "message": message}


def _malformed(command: Any, problem: str) -> dict[str, Any]:
    kind = command.get("kind") if isinstance(command, dict) else None
    return _rejected(reasons.MALFORMED_COMMAND, problem, kind if isinstance(kind, str) else None)


def _describe(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), "a value of another type")


async def _read_body(request: Request, bytes_max: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > bytes_max:
        raise _Refused(
            413, reasons.PAYLOAD_TOO_LARGE, f"the body is {int(declared)} bytes; the limit is {bytes_max}"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > bytes_max:
            raise _Refused(413, reasons.PAYLOAD_TOO_LARGE, f"the body exceeds the limit of {bytes_max} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse(body: bytes) -> strict_json.Document:
    try:
        if len(body) <= _INLINE_PARSE_BYTES_MAX:
            return strict_json.loads(body)
        return await run_in_threadpool(strict_json.loads, body)
    except strict_json.StrictJSONError as exc:
        raise _Refused(400, reasons.MALFORMED_COMMAND, str(exc)) from exc


class Intake:
    def __init__(self, service: LedgerService, metrics: Metrics, *, request_bytes_max: int) -> None:
        self._service = service
        self._metrics = metrics
        self._bytes_max = request_bytes_max
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tally-intake-writer")

    def close(self) -> None:
        self._writer.shutdown(wait=True)

    async def _write(self, fn: Callable[[Any], T], arg: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, arg)

    async def handle(self, request: Request) -> Response:
        try:
            body = await _read_body(request, self._bytes_max)
            document = await _parse(body)
            if isinstance(document.value, list):
                answer: Any = await self._submit_many(document.value, document.suspicious)
            elif isinstance(document.value, (dict, strict_json.Unacceptable)):
                # An object whose own keys repeat is still one command: a malformed one.
                answer = await self._submit_one(document.value, document.suspicious)
            else:
                raise _Refused(
                    400,
                    reasons.MALFORMED_COMMAND,
                    f"expected a JSON object (one command) or an array of commands, "
                    f"got {_describe(document.value)}",
                )
        except _Refused as refused:
            result = _rejected(refused.reason, refused.message)
            self._metrics.count_command(result)
            return JSONResponse(result, status_code=refused.status_code)
        return JSONResponse(answer)

    async def _submit_one(self, command: Any, suspicious: bool) -> dict[str, Any]:
        problem = strict_json.problem_in(command) if suspicious else None
        if problem is not None:
            result = _malformed(command, problem)
        else:
            result = await self._write(self._service.submit, command)
        self._metrics.count_command(result)
        return result

    async def _submit_many(self, commands: list[Any], suspicious: bool) -> list[dict[str, Any]]:
        if len(commands) > limits.COMMANDS_PER_REQUEST_MAX:
            raise _Refused(
                413,
                reasons.PAYLOAD_TOO_LARGE,
                f"{len(commands)} commands in one request; the limit is {limits.COMMANDS_PER_REQUEST_MAX}",
            )
        results: list[dict[str, Any] | None] = [None] * len(commands)
        if suspicious:
            for index, command in enumerate(commands):
                problem = strict_json.problem_in(command)
                if problem is not None:
                    results[index] = _malformed(command, problem)
        pending = [index for index, result in enumerate(results) if result is None]
        if pending:
            answers = await self._write(self._service.submit_many, [commands[i] for i in pending])
            # One result per command, in order: anything else is a service bug, not a client's problem.
            if len(answers) != len(pending):
                raise RuntimeError(f"the service answered {len(answers)} results for {len(pending)} commands")
            for index, answer in zip(pending, answers, strict=True):
                results[index] = answer
        answered = [{**result, "index": index} for index, result in enumerate(results) if result is not None]
        for result in answered:
            self._metrics.count_command(result)
        return answered


# ------------------------------------------------------------------------------------------- POST /v1/txs

NO_DEVNET_MESSAGE = (
    "this ledger runs without a devnet (tally up --no-devnet), so nothing here produces blocks: transactions "
    "reach the ledger inside a block from a node (POST /v1/commands with a block command)"
)
POOL_RETRY_AFTER_S = 1  # about one devnet block


class TxIntake:
    """`POST /v1/txs`: one signed tx or an array of them, checked and queued for the devnet proposer.

    200: per tx, `{"status": "queued", "kind", "tx_id", "duplicate"}` or `{"status": "rejected", "kind", "reason",
    "message"}` (`malformed_tx` naming the field, `signer_mismatch`, `bad_tx_signature`): an object for one tx, a
    list (each with its `index`) for an array. 503 `no_block_producer` without a devnet (`pool` is None); 503
    `pool_full` when the new txs do not all fit, nothing queued; 400 and 413 as for `/v1/commands` (an array
    longer than the pool's limit is 413).
    """

    def __init__(self, pool: TxPool | None, *, request_bytes_max: int) -> None:
        self._pool = pool
        self._bytes_max = request_bytes_max

    async def handle(self, request: Request) -> Response:
        try:
            if self._pool is None:
                raise _Refused(503, reasons.NO_BLOCK_PRODUCER, NO_DEVNET_MESSAGE)
            document = await _parse(await _read_body(request, self._bytes_max))
            value = document.value
            if isinstance(value, list):
                if len(value) > self._pool.txs_max:
                    raise _Refused(
                        413,
                        reasons.PAYLOAD_TOO_LARGE,
                        f"{len(value)} txs in one request; the pool holds at most {self._pool.txs_max}",
                    )
                results = await run_in_threadpool(self._offer, value, document.suspicious)
                return JSONResponse([{**r, "index": i} for i, r in enumerate(results)])
            if isinstance(value, (dict, strict_json.Unacceptable)):
                [result] = await run_in_threadpool(self._offer, [value], document.suspicious)
                return JSONResponse(result)
            raise _Refused(
                400, reasons.MALFORMED_COMMAND, f"expected a signed tx (a JSON object) or an array of them, "
                f"got {_describe(value)}",
            )
        except PoolFull as full:
            refusal = _rejected(reasons.POOL_FULL, str(full))
            return JSONResponse(refusal, status_code=503, headers={"retry-after": str(POOL_RETRY_AFTER_S)})
        except _Refused as refused:
            return JSONResponse(_rejected(refused.reason, refused.message), status_code=refused.status_code)

    def _offer(self, txs: list[Any], suspicious: bool) -> list[dict[str, Any]]:
        """The pool's answers, with a repeated key or a lone surrogate refused as `malformed_tx` in place."""
        assert self._pool is not None
        problems = [strict_json.problem_in(tx) if suspicious else None for tx in txs]
        clean = [i for i, problem in enumerate(problems) if problem is None]
        answers = iter(self._pool.offer([txs[i] for i in clean], indexes=clean))
        results = []
        for index, (tx, problem) in enumerate(zip(txs, problems, strict=True)):
            if problem is None:
                results.append(next(answers))
            else:
                kind = tx.get("kind") if isinstance(tx, dict) else None
                results.append(
                    _rejected("malformed_tx", f"tx {index}: {problem}", kind if isinstance(kind, str) else None)
                )
        return results
