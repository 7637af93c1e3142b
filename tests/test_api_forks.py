"""GraphQL over the real read model and the forked history of tests/test_queries_forks.py: block statuses, head
tips, the finality argument, receipts after reorgs and the reorgs connection."""

from __future__ import annotations

from typing import Any

import pytest
from test_api_client import Client
from test_queries_forks import A1, A2, A3, A4, CELL, D2, D3, FEE, A, G, forked_history, write_batch

from api import create_app
from projections.queries import ReadModel
from projections.store import ProjectionStore


@pytest.fixture
def model(projection_store: ProjectionStore, event_log: Any, make_transfer: Any) -> tuple[ReadModel, dict[str, Any]]:
    history = forked_history(event_log, make_transfer)
    write_batch(projection_store, history["events"], 0, len(history["events"]))
    return ReadModel(projection_store), history


class _NoWrites:
    def submit(self, obj: Any) -> dict[str, Any]:
        raise AssertionError("no writes here")

    def submit_many(self, objs: list[Any]) -> list[dict[str, Any]]:
        raise AssertionError("no writes here")

    def max_position(self) -> int:
        return 0


def _gql(client: Client, query: str, **variables: Any) -> dict[str, Any]:
    body = client.post("/graphql", json={"query": query, "variables": variables}).json()
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


def test_graphql_over_the_forked_history(model: tuple[ReadModel, dict[str, Any]]) -> None:
    client = Client(create_app(model[0], _NoWrites()))
    tx = model[1]["tx"]
    head = _gql(client, "{ head { height finalizedHeight tip { hash status canonical } finalized { hash status } } }")
    assert head["head"] == {
        "height": 3, "finalizedHeight": 2, "tip": {"hash": D3, "status": "CANONICAL", "canonical": True},
        "finalized": {"hash": D2, "status": "FINALIZED"},
    }
    query = "query($h: String) { block(hash: $h) { height status canonical finalized } }"
    assert _gql(client, query, h=A4)["block"] == {"height": 4, "status": "ORPHANED", "canonical": False,
                                                   "finalized": False}
    assert _gql(client, "{ block { hash } f: block(finality: FINALIZED) { hash } }") == {
        "block": {"hash": D3}, "f": {"hash": D2},
    }
    blocks = _gql(client, "{ blocks(finality: FINALIZED) { edges { node { hash status } } } }")["blocks"]
    assert [e["node"] for e in blocks["edges"]] == [
        {"hash": D2, "status": "FINALIZED"}, {"hash": A1, "status": "FINALIZED"}, {"hash": G, "status": "FINALIZED"}
    ]
    account = f'{{ account(address: "{A}", finality: FINALIZED) {{ height nonce balances {{ amount }} }} }}'
    assert _gql(client, account)["account"] == {"height": 2, "nonce": "2",
                                                "balances": [{"amount": str(893 * CELL - FEE)}]}
    txs = _gql(client, "{ transactions { edges { node { txId status } } } }")["transactions"]
    assert [e["node"]["txId"] for e in txs["edges"]] == [tx[7], tx[6], tx[1]]
    receipt = _gql(client, "query($t: String!) { receipt(txId: $t) { status reason height blockHash } }", t=tx[4])
    assert receipt["receipt"] == {"status": "reverted", "reason": "bad_nonce", "height": 3, "blockHash": A3}
    stats = _gql(client, "{ s: stats { totalBlocks } f: stats(finality: FINALIZED) { totalBlocks } }")
    assert stats == {"s": {"totalBlocks": 4}, "f": {"totalBlocks": 3}}
    reorgs_query = """query($after: String) { reorgs(first: 2, after: $after) {
        edges { cursor node { position cause depth height ancestorHash oldTip { height hash }
                newTip { height hash } reverted applied } }
        pageInfo { hasNextPage endCursor } } }"""
    page = _gql(client, reorgs_query)["reorgs"]
    assert [e["node"]["position"] for e in page["edges"]] == ["18", "11"] and page["pageInfo"]["hasNextPage"]
    assert page["edges"][0]["node"] == {
        "position": "18", "cause": "finality", "depth": 3, "height": 1, "ancestorHash": A1,
        "oldTip": {"height": 4, "hash": A4}, "newTip": {"height": 2, "hash": D2}, "reverted": [A4, A3, A2],
        "applied": [D2],
    }
    last = _gql(client, reorgs_query, after=page["pageInfo"]["endCursor"])["reorgs"]
    assert [e["node"]["position"] for e in last["edges"]] == ["6"] and not last["pageInfo"]["hasNextPage"]
