"""A synchronous in-process client for the API tests, on httpx's ASGI transport.

starlette 1.10's TestClient warns that driving it with httpx is deprecated (it wants the httpx2 package), and
warnings are errors here; httpx.ASGITransport needs nothing more. Each call runs on a fresh event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio
import httpx
from starlette.types import ASGIApp

BASE_URL = "http://tally.test"


class Client:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
                return await client.request(method, url, **kwargs)

        return anyio.run(call)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def post_chunked(self, url: str, chunks: Iterable[bytes]) -> httpx.Response:
        """POST without a Content-Length: the body arrives as a stream of chunks."""
        parts = list(chunks)

        async def body() -> AsyncIterator[bytes]:
            for part in parts:
                yield part

        return self.post(url, content=body())


def test_client_round_trip() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body[::-1]})

    client = Client(app)
    assert client.post("/", content=b"abc").content == b"cba"
    assert client.post_chunked("/", [b"ab", b"cd"]).content == b"dcba"
