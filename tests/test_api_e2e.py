"""The API end to end: the real LedgerService behind intake, the real follower and ReadModel behind GraphQL.

Commands go in through POST /v1/commands; after the follower has projected them, every GraphQL answer is checked
against the ledger's own in-memory state. One test runs the app on uvicorn over a real socket.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from test_api_client import Client

from accelerators.verify import BatchVerifier
from api import create_app
from projections.queries import ReadModel
from projections.store import ProjectionStore
from schemas import build
from schemas.canonical import tx_id
from schemas.settings import Settings
from schemas.signing import KeyPair
from streams.follower import Follower
from writes.service import LedgerService

CHAIN = "tally-api-e2e"
GENESIS_MS = 1_700_000_000_000
CELL = 1_000_000
FUNDS = 100 * CELL
STAKE = 10 * CELL
REWARD = 2_000_000  # the default block_reward


def key(name: str) -> KeyPair:
    return KeyPair.from_seed(f"tally-api-e2e:{name}".encode())


ALICE, BOB, CAROL = key("alice"), key("bob"), key("carol")
VALIDATORS = [(f"node-{i}", key(f"operator-{i}"), key(f"node-{i}")) for i in range(3)]


@dataclass
class Stack:
    service: LedgerService
    store: ProjectionStore
    follower: Follower
    app: Starlette
    client: Client
    heights: dict[int, str]  # height -> block hash, as accepted
    timestamps: dict[int, int]

    def post(self, body: Any) -> Any:
        response = self.client.post("/v1/commands", content=json.dumps(body).encode())
        assert response.status_code == 200, response.text
        return response.json()

    def sync(self) -> None:
        """Project everything the log holds."""
        for _ in range(1000):
            if self.follower.lag() == 0:
                return
            self.follower.run_once()
        raise AssertionError("the follower does not catch up")

    def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = self.client.post("/graphql", json={"query": query, "variables": variables})
        body = response.json()
        assert response.status_code == 200 and "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    def block(self, txs: list[dict[str, Any]], proposer: int = 0) -> dict[str, Any]:
        height = max(self.heights) + 1
        node_id, _, node_key = VALIDATORS[proposer]
        timestamp = self.timestamps[height - 1] + 1000
        return build.block(CHAIN, height, self.heights[height - 1], node_id, node_key, timestamp, txs)

    def apply(self, txs: list[dict[str, Any]], proposer: int = 0) -> dict[str, Any]:
        command = self.block(txs, proposer)
        result = self.post(command)
        assert result["status"] == "accepted", result
        self.heights[command["height"]] = result["hash"]
        self.timestamps[command["height"]] = command["timestamp_ms"]
        return result

    def votes(self, height: int) -> list[dict[str, Any]]:
        return [build.vote(CHAIN, node_id, node_key, height, self.heights[height]) for node_id, _, node_key in
                VALIDATORS]

    def balance(self, who: KeyPair) -> int:
        return self.service.balance(CHAIN, who.address, "CELL")


@pytest.fixture
def stack(tmp_path: Path, projection_store: ProjectionStore) -> Iterator[Stack]:
    settings = Settings(data_dir=tmp_path / "data", verify_workers=1, ready_lag_events_max=0)
    service = LedgerService(settings, verifier=BatchVerifier(1))
    follower = Follower(service.app, projection_store)
    follower.resume()
    app = create_app(ReadModel(projection_store), service, follower=follower, settings=settings)
    genesis = build.genesis(
        CHAIN, GENESIS_MS, allocations=[(k.address, FUNDS) for k in (ALICE, BOB, CAROL)],
        validators=[(n, op.address, k, f"GPU-{n}", STAKE) for n, op, k in VALIDATORS],
    )
    stack = Stack(service, projection_store, follower, app, Client(app), {}, {0: GENESIS_MS})
    result = stack.post(genesis)
    assert result["status"] == "accepted", result
    stack.heights[0] = result["hash"]
    try:
        yield stack
    finally:
        service.close()


def run_history(stack: Stack) -> dict[str, Any]:
    """Three blocks: applied and rejected transfers, block 1 finalized by votes sent as one array."""
    t_ok = build.transfer(CHAIN, ALICE, BOB.address, 5 * CELL, nonce=0, fee=10)
    t_bad_nonce = build.transfer(CHAIN, BOB, CAROL.address, 1, nonce=3)
    t_poor = build.transfer(CHAIN, CAROL, ALICE.address, FUNDS + 1, nonce=0)
    first = stack.apply([t_ok, t_bad_nonce, t_poor])
    assert [r["reason"] or r["status"] for r in first["receipts"]] == ["applied", "bad_nonce", "insufficient_funds"]
    votes = stack.post(stack.votes(1))
    assert [v["index"] for v in votes] == [0, 1, 2] and votes[-1]["finalized_height"] == 1
    t_back = build.transfer(CHAIN, BOB, ALICE.address, 2 * CELL, nonce=0, fee=7)
    stack.apply([t_back], proposer=1)
    stack.apply([], proposer=2)
    return {"ok": tx_id(t_ok), "bad_nonce": tx_id(t_bad_nonce), "poor": tx_id(t_poor), "back": tx_id(t_back)}


def test_graphql_reads_what_intake_wrote(stack: Stack) -> None:
    txs = run_history(stack)
    assert stack.client.get("/readyz").status_code == 503  # nothing projected yet, lag allowed: 0
    stack.sync()
    assert stack.client.get("/readyz").json()["ready"] is True

    head = stack.gql("{ head { chainId height hash finalizedHeight finalizedHash timestampMs } }")["head"]
    assert head == {
        "chainId": CHAIN, "height": 3, "hash": stack.heights[3], "finalizedHeight": 1,
        "finalizedHash": stack.heights[1], "timestampMs": str(stack.timestamps[3]),
    }
    one = stack.gql("{ block(height: 1) { hash parent proposer txCount appliedCount rejectedCount fees reward"
                    " finalized } }")["block"]
    assert one == {
        "hash": stack.heights[1], "parent": stack.heights[0], "proposer": "node-0", "txCount": 3,
        "appliedCount": 1, "rejectedCount": 2, "fees": "10", "reward": str(REWARD), "finalized": True,
    }
    by_hash = stack.gql("query($h: String) { block(hash: $h) { height finalized } }", h=stack.heights[2])
    assert by_hash["block"] == {"height": 2, "finalized": False}

    for who in (ALICE, BOB, CAROL, VALIDATORS[0][1], VALIDATORS[1][1]):
        account = stack.gql("query($a: String!) { account(address: $a) { nonce balances { asset amount } } }",
                            a=who.address)["account"]
        assert account["balances"] == [{"asset": "CELL", "amount": str(stack.balance(who))}]
        assert account["nonce"] == str(stack.service.next_nonce(CHAIN, who.address))
    then = stack.gql("query($a: String!) { account(address: $a, atHeight: 0) { height balances { amount } } }",
                     a=ALICE.address)["account"]
    assert then == {"height": 0, "balances": [{"amount": str(FUNDS)}]}

    receipts = {
        name: stack.gql("query($t: String!) { receipt(txId: $t) { status reason height index } }", t=tid)["receipt"]
        for name, tid in txs.items()
    }
    assert receipts == {
        "ok": {"status": "applied", "reason": None, "height": 1, "index": 0},
        "bad_nonce": {"status": "rejected", "reason": "bad_nonce", "height": 1, "index": 1},
        "poor": {"status": "rejected", "reason": "insufficient_funds", "height": 1, "index": 2},
        "back": {"status": "applied", "reason": None, "height": 2, "index": 0},
    }

    stats = stack.gql("{ stats(window: 3) { totalBlocks txsApplied txsRejected windowBlocks lastBlockHeight"
                      " volume { asset amount } fees { asset amount } } }")["stats"]
    assert stats == {
        "totalBlocks": 4, "txsApplied": "2", "txsRejected": "2", "windowBlocks": 3, "lastBlockHeight": 3,
        "volume": [{"asset": "CELL", "amount": str(7 * CELL)}], "fees": [{"asset": "CELL", "amount": "17"}],
    }


def test_paging_walks_visit_everything_once(stack: Stack) -> None:
    run_history(stack)
    stack.sync()
    query = """query($after: String) { blocks(first: 1, after: $after) {
        edges { node { height } } pageInfo { hasNextPage endCursor } } }"""
    heights, after = [], None
    while True:
        page = stack.gql(query, after=after)["blocks"]
        heights += [e["node"]["height"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert heights == [3, 2, 1, 0]

    query = """query($after: String, $a: String) { transactions(first: 2, after: $after, address: $a) {
        edges { node { height index } } pageInfo { hasNextPage endCursor } } }"""
    for address, expected in ((None, [(2, 0), (1, 2), (1, 1), (1, 0)]), (ALICE.address, [(2, 0), (1, 2), (1, 0)])):
        keys, after = [], None
        while True:
            page = stack.gql(query, after=after, a=address)["transactions"]
            keys += [(e["node"]["height"], e["node"]["index"]) for e in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert keys == expected, address


def test_http_and_in_process_submissions_answer_alike(stack: Stack) -> None:
    """A non-integer number is refused with the reason of its place, exactly as the service answers in-process."""
    run_history(stack)
    position = stack.service.max_position()
    good = build.transfer(CHAIN, ALICE, BOB.address, 1, nonce=1)
    cases = [
        stack.block([{**good, "amount": 1.5}]),  # a tx field: malformed_tx
        {**stack.block([good]), "timestamp_ms": float(stack.timestamps[3] + 1000)},  # a header field
        {**stack.votes(3)[0], "height": 3.0},
        {"kind": "block"},
        {"kind": "transfer"},
    ]
    over_http = stack.post(cases)
    in_process = [stack.service.submit(copy.deepcopy(c)) for c in cases]
    assert [{k: v for k, v in r.items() if k != "index"} for r in over_http] == in_process
    assert [r["reason"] for r in over_http] == [
        "malformed_tx", "malformed_block", "malformed_vote", "malformed_block", "unknown_command",
    ]
    assert stack.service.max_position() == position  # nothing appended


def test_metrics_show_the_log_and_the_projection(stack: Stack) -> None:
    run_history(stack)
    stack.sync()
    text = stack.client.get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    log_position = stack.service.max_position()
    assert samples[("tally_log_position", ())] == log_position
    assert samples[("tally_projection_position", ())] == log_position
    assert samples[("tally_projection_lag_events", ())] == 0
    assert samples[("tally_follower_lag_events", ())] == 0
    assert samples[("tally_follower_events_projected_total", ())] == log_position
    accepted = (("kind", "block"), ("reason", "none"), ("status", "accepted"))
    assert samples[("tally_commands_total", accepted)] == 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_served_by_uvicorn(stack: Stack) -> None:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(stack.app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-e2e", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/healthz").json() == {"status": "ok"}
            block = stack.block([build.transfer(CHAIN, ALICE, CAROL.address, 3, nonce=0)])
            answer = http.post("/v1/commands", content=json.dumps([block]).encode()).json()
            assert answer[0]["status"] == "accepted" and answer[0]["index"] == 0

            def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
                yield b"["
                for _ in range(64):
                    yield b" " * (1024 * 1024)

            too_big = http.post("/v1/commands", content=chunks())
            assert too_big.status_code == 413 and too_big.json()["reason"] == "payload_too_large"

            stack.sync()
            got = http.post("/graphql", json={"query": "{ head { height } }"}).json()
            assert got == {"data": {"head": {"height": 1}}}
            assert "graphiql" in http.get("/graphql", headers={"accept": "text/html"}).text.lower()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive()
