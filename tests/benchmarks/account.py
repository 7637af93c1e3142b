"""GraphQL `account` latency with 100k funded accounts: the whole request through the ASGI app in-process
(parsing, validation, resolver, ClickHouse engine query, JSON), beside the engine query alone."""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from api.app import create_app
from projections import ProjectionStore, ReadModel
from schemas import build
from schemas.canonical import hash_hex
from schemas.settings import Settings
from schemas.signing import KeyPair
from streams import Follower
from writes.service import LedgerService

QUERY = "query($a: String!) { account(address: $a) { address height nonce balances { asset amount } } }"


def _percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


async def _graphql_latencies(app: Any, addresses: list[str]) -> list[float]:
    out = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for address in addresses:
            start = time.perf_counter()
            response = await client.post("/graphql", json={"query": QUERY, "variables": {"a": address}})
            out.append(time.perf_counter() - start)
            body = response.json()
            assert "errors" not in body and body["data"]["account"]["balances"], body
    return out


def account_latency(accounts: int = 100_000, queries: int = 1_000) -> dict[str, Any]:
    addresses = ["0x" + hash_hex(b"funded-%d" % i)[:40] for i in range(accounts)]
    validator = KeyPair.from_seed(b"account-bench-validator")
    genesis = build.genesis(
        "acctbench", 0, allocations=[(a, 1_000_000 + i) for i, a in enumerate(addresses)],
        validators=[("node-0", addresses[0], validator, "gpu-0", 10**8)],
    )
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), verify_workers=1)
        service = LedgerService(settings)
        assert service.submit(genesis)["status"] == "accepted"
        store = ProjectionStore(settings.views_dsn, "acctbench")
        follower = Follower(service.app, store)
        follower.run_until_caught_up()
        reads = ReadModel(store)
        rng = random.Random(7)
        sample = [rng.choice(addresses) for _ in range(queries)]
        for address in sample[:50]:  # warm caches and the schema's parser cache
            reads.account("acctbench", address)
        engine = []
        for address in sample:
            start = time.perf_counter()
            reads.account("acctbench", address)
            engine.append(time.perf_counter() - start)
        app = create_app(reads, service, follower=follower, settings=settings)
        asyncio.run(_graphql_latencies(app, sample[:50]))
        graphql = asyncio.run(_graphql_latencies(app, sample))
        store.drop()
        store.close()
        service.close()
    return {
        "name": "graphql_account_latency",
        "accounts": accounts, "queries": queries,
        "graphql": _percentiles(graphql), "engine_query_only": _percentiles(engine),
        "target_p99_ms": 20,
    }
