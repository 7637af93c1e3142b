"""The Starlette app: `/graphql` (GraphiQL in a browser), `POST /v1/commands`, `POST /v1/txs` (the devnet's tx
pool), `/healthz`, `/readyz`, `/metrics`.

The app owns no process-wide state: each `create_app` has its own metrics registry and its own writer thread, so
tests can build as many as they like. Starting and stopping the follower belongs to whoever runs the app
(`tally up`); the app only reads its figures.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.gql_log import LogReader
from api.graphql import GraphQLApp, build_schema
from api.intake import Intake, LedgerService, TxIntake
from api.metrics import OTHER, Metrics
from api.proofs import liability_proofs
from api.reads import ReadModel, Reads
from schemas.settings import Settings
from writes.txpool import TxPool

# A GraphQL request is a query text and its variables: the token limit caps the text far below this.
GRAPHQL_BODY_BYTES_MAX = 1024 * 1024
ROUTES = ("/graphql", "/v1/commands", "/v1/txs", "/healthz", "/readyz", "/metrics")
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class RequestTimer:
    """Times every HTTP request into the route histogram; unknown paths share one label."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else OTHER
            self.metrics.observe_request(route, scope["method"], status, time.perf_counter() - start)


def readiness(log_position: int, projection_position: int, lag_events_max: int) -> dict[str, Any]:
    """Ready once the projections are within `lag_events_max` events of the log. Pure."""
    lag = log_position - projection_position
    return {
        "ready": lag <= lag_events_max,
        "log_position": log_position,
        "projection_position": projection_position,
        "lag_events": lag,
        "lag_events_max": lag_events_max,
    }


def create_app(
    read_model: ReadModel,
    service: LedgerService,
    *,
    follower: Any = None,
    settings: Settings | None = None,
    pool: TxPool | None = None,
) -> Starlette:
    """`pool`: the devnet's tx pool behind `POST /v1/txs`; None (no devnet) answers 503 there."""
    settings = settings or Settings()
    metrics = Metrics(service, read_model, follower)
    intake = Intake(service, metrics, request_bytes_max=settings.request_bytes_max)
    # The raw log (`events`) is read from the event store where this process has one (not a read-only replica).
    log_app = getattr(service, "app", None)
    reads = Reads(read_model, LogReader(log_app) if log_app is not None else None)
    reads.proofs = liability_proofs(read_model, service)  # `liabilityProof` (api/gql_reserves.py)
    graphql = GraphQLApp(build_schema(), reads)
    txs = TxIntake(pool, request_bytes_max=settings.request_bytes_max)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        def check() -> dict[str, Any]:
            return readiness(service.max_position(), read_model.position(), settings.ready_lag_events_max)

        try:
            answer = await run_in_threadpool(check)
        except Exception as exc:  # not ready is the honest answer when a store cannot be read
            return JSONResponse({"ready": False, "error": f"{type(exc).__name__}: {exc}"}, status_code=503)
        return JSONResponse(answer, status_code=200 if answer["ready"] else 503)

    async def metrics_endpoint(_: Request) -> Response:
        return Response(await run_in_threadpool(metrics.render), media_type=PROMETHEUS_TEXT)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        intake.close()

    return Starlette(
        routes=[
            Route("/graphql", graphql, max_body_size=GRAPHQL_BODY_BYTES_MAX),
            Route("/v1/commands", intake.handle, methods=["POST"]),
            Route("/v1/txs", txs.handle, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
        ],
        middleware=[Middleware(RequestTimer, metrics=metrics)],
        lifespan=lifespan,
    )
