"""POST /v1/commands against a stand-in service: results per command, 400/413 refusals, one writer at a time."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import anyio
import httpx
import pytest
from test_api_client import BASE_URL, Client

from api import create_app
from schemas import limits
from schemas.settings import Settings

URL = "/v1/commands"
BYTES_MAX = 4096


class RecordingService:
    """Accepts commands whose kind is "block"; records every command; checks calls never overlap."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.seen: list[Any] = []
        self.delay_s = delay_s
        self.active = 0
        self.max_active = 0
        self.threads: set[str] = set()
        self._guard = threading.Lock()

    def submit(self, obj: Any) -> dict[str, Any]:
        with self._guard:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        self.seen.append(obj)
        with self._guard:
            self.active -= 1
        if isinstance(obj, dict) and obj.get("kind") == "block" and type(obj.get("height")) is int:
            return {"status": "accepted", "kind": "block", "hash": "00" * 32, "height": obj["height"]}
        return {"status": "rejected", "kind": None, "reason": "unknown_command", "message": "no such kind"}

    def submit_many(self, objs: list[Any]) -> list[dict[str, Any]]:
        return [self.submit(obj) for obj in objs]

    def max_position(self) -> int:
        return len(self.seen)


class NoReads:
    def position(self) -> int:
        return 0


@pytest.fixture
def service() -> RecordingService:
    return RecordingService()


@pytest.fixture
def client(service: RecordingService) -> Client:
    return Client(create_app(NoReads(), service, settings=Settings().with_(request_bytes_max=BYTES_MAX)))  # type: ignore[arg-type]


def block(height: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "block", "height": height, **extra}


def test_one_command_gets_the_service_result(client: Client, service: RecordingService) -> None:
    response = client.post(URL, json=block(1))
    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "kind": "block", "hash": "00" * 32, "height": 1}
    assert service.seen == [block(1)]


def test_an_array_gets_one_indexed_result_per_command(client: Client, service: RecordingService) -> None:
    response = client.post(URL, json=[block(1), {"kind": "nope"}, block(2)])
    assert response.status_code == 200
    assert [(r["index"], r["status"]) for r in response.json()] == [(0, "accepted"), (1, "rejected"), (2, "accepted")]
    assert response.json()[1] == {
        "status": "rejected", "kind": None, "reason": "unknown_command", "message": "no such kind", "index": 1,
    }
    assert service.seen == [block(1), {"kind": "nope"}, block(2)]


def test_an_empty_array_answers_an_empty_list(client: Client, service: RecordingService) -> None:
    assert client.post(URL, content=b"[]").json() == []
    assert service.seen == []


def test_integers_reach_the_service_exactly(client: Client, service: RecordingService) -> None:
    body = b'{"kind": "block", "height": 9223372036854775807, "wide": 36893488147419103232}'
    assert client.post(URL, content=body).status_code == 200
    assert service.seen == [{"kind": "block", "height": 2**63 - 1, "wide": 2**65}]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "empty"),
        (b'{"kind": "block",', "invalid JSON"),
        (b"\xc3\x28", "not UTF-8"),
        (b'"block"', "got a string"),
        (b"42", "got a number"),
        (b"null", "got null"),
    ],
)
def test_not_a_command_is_400(client: Client, service: RecordingService, body: bytes, words: str) -> None:
    response = client.post(URL, content=body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["status"] == "rejected" and answer["reason"] == "malformed_command"
    assert words in answer["message"]
    assert service.seen == []


@pytest.mark.parametrize(
    ("fragment", "number"),
    [
        (b"1.5", 1.5),
        (b"1e6", 1e6),
        (b"2.0", 2.0),
        (b"Infinity", float("inf")),
    ],
)
def test_non_integers_reach_the_service_as_floats(
    client: Client, service: RecordingService, fragment: bytes, number: float
) -> None:
    # The service refuses a float where an integer belongs, with DOMAIN.md's reason for that place
    # (malformed_tx, malformed_block, ...), exactly as for the same command submitted in-process.
    response = client.post(URL, content=b'[{"kind": "block", "height": ' + fragment + b"}, {}]")
    assert response.status_code == 200 and [r["index"] for r in response.json()] == [0, 1]
    (height,) = [c["height"] for c in service.seen if "height" in c]
    assert type(height) is float and height == number


@pytest.mark.parametrize(
    ("fragment", "words"),
    [
        (b'"height": 1, "height": 2', "duplicate key 'height'"),
        (b'"txs": [{"a": 1, "a": 1}]', "duplicate key 'a'"),
        (b'"memo": "\\udc00"', "lone UTF-16 surrogate"),
    ],
)
def test_unreadable_values_reject_their_command_only(
    client: Client, service: RecordingService, fragment: bytes, words: str
) -> None:
    single = client.post(URL, content=b'{"kind": "block", ' + fragment + b"}")
    assert single.status_code == 200
    answer = single.json()
    assert (answer["status"], answer["reason"]) == ("rejected", "malformed_command")
    assert words in answer["message"]
    # The kind is echoed when the command's own keys could be read.
    assert answer["kind"] == (None if "height" in words else "block")
    assert service.seen == []

    batch = client.post(URL, content=b'[{"kind": "block", "height": 1}, {"kind": "block", ' + fragment + b"}, {}]")
    assert batch.status_code == 200
    results = batch.json()
    assert [r["index"] for r in results] == [0, 1, 2]
    assert results[0]["status"] == "accepted"
    assert results[1]["reason"] == "malformed_command" and words in results[1]["message"]
    assert results[2]["reason"] == "unknown_command"  # the service answered the others
    assert service.seen == [block(1), {}]


def test_an_object_with_repeated_top_level_keys_is_one_malformed_command(client: Client) -> None:
    response = client.post(URL, content=b'{"kind": "block", "kind": "vote"}')
    assert response.status_code == 200
    assert response.json()["reason"] == "malformed_command" and "duplicate key 'kind'" in response.json()["message"]


def test_declared_oversized_body_is_413_before_reading(client: Client, service: RecordingService) -> None:
    response = client.post(URL, content=b"[" + b" " * BYTES_MAX + b"]")
    assert response.status_code == 413
    answer = response.json()
    assert answer["reason"] == "payload_too_large" and str(BYTES_MAX) in answer["message"]
    assert service.seen == []


def test_chunked_oversized_body_is_413(client: Client, service: RecordingService) -> None:
    chunks = [b"["] + [b'{"kind": "block", "height": 1},' for _ in range(BYTES_MAX // 20)] + [b"{}]"]
    response = client.post_chunked(URL, chunks)
    assert response.status_code == 413
    assert response.json()["reason"] == "payload_too_large"
    assert service.seen == []


def test_a_body_at_the_limit_is_accepted(client: Client) -> None:
    body = json.dumps(block(1)).encode()
    body += b" " * (BYTES_MAX - len(body))
    assert client.post_chunked(URL, [body[:100], body[100:]]).status_code == 200


def test_too_many_commands_is_413(service: RecordingService) -> None:
    app = create_app(NoReads(), service)  # type: ignore[arg-type]
    body = "[" + ",".join(["{}"] * (limits.COMMANDS_PER_REQUEST_MAX + 1)) + "]"
    response = Client(app).post(URL, content=body.encode())
    assert response.status_code == 413
    assert response.json()["reason"] == "payload_too_large"
    assert str(limits.COMMANDS_PER_REQUEST_MAX) in response.json()["message"]
    assert service.seen == []


def test_only_post(client: Client) -> None:
    assert client.get(URL).status_code == 405


def test_writes_never_overlap_and_the_event_loop_stays_free() -> None:
    service = RecordingService(delay_s=0.02)
    app = create_app(NoReads(), service)  # type: ignore[arg-type]

    async def run() -> tuple[list[int], float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            posts = [http.post(URL, json=[block(i), block(i)]) for i in range(10)]
            started = time.perf_counter()

            async def health() -> float:
                await asyncio.sleep(0.01)
                answer = await http.get("/healthz")
                assert answer.status_code == 200
                return time.perf_counter() - started

            *answers, health_s = await asyncio.gather(*posts, health())
            return [a.status_code for a in answers], health_s

    statuses, health_s = anyio.run(run)
    assert statuses == [200] * 10
    assert len(service.seen) == 20 and service.max_active == 1
    assert len(service.threads) == 1  # the one writer thread
    assert health_s < 0.2  # answered while 0.4 s of writes were queued
