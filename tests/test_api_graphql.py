"""GraphQL shape and argument handling, against an in-memory stand-in for projections/queries.py's ReadModel.

The stand-in only answers the documented method signatures with plain dicts; tests/test_api_e2e.py runs the same
queries against the real read model.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from graphql import get_introspection_query
from test_api_client import Client

from api import create_app
from api.cursors import tx_cursor
from schemas import limits

CHAIN = "devnet"
OTHER_CHAIN = "side-1"
BLOCKS = 25  # heights 0..24
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
CAROL = "0x" + "c3" * 20
BIG = 2**63 - 1


def block_hash(chain: str, height: int) -> str:
    return f"{sum(map(ord, chain)):08x}{height:056x}"


ORPHAN = "e" * 64  # a side block at height 3 that the fake knows by hash
# Newest first, positions 90, 70, ..., 10: a reorg of depth 1 + i % 3 down to height 10 + i.
REORGS = [
    {"position": 90 - 20 * i, "cause": "finality" if i == 0 else "longer_branch", "depth": 1 + i % 3,
     "height": 10 + i, "ancestor_hash": "a" * 64, "old_tip": {"height": 11 + i + i % 3, "hash": "b" * 64},
     "new_tip": {"height": 12 + i, "hash": "c" * 64}, "reverted": ["b" * 64] * (1 + i % 3), "applied": ["c" * 64]}
    for i in range(5)
]


def tx_id(chain: str, height: int, index: int) -> str:
    return f"{sum(map(ord, chain)):08x}{height:048x}{index:08x}"


class FakeReadModel:
    """Two chains; every block above 0 holds an applied transfer A->B and a rejected one B->C."""

    def __init__(self, page_cap: int = limits.PAGE_SIZE_MAX) -> None:
        self.page_cap = page_cap  # like the real read model, never more rows than this per call
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail: str | None = None
        self.checkpoint = 0
        self._blocks = {c: [self._block(c, h) for h in range(BLOCKS)] for c in (CHAIN, OTHER_CHAIN)}
        self._txs = {c: [t for h in range(1, BLOCKS) for t in self._txs_of(c, h)] for c in self._blocks}

    @staticmethod
    def _block(chain: str, height: int) -> dict[str, Any]:
        return {
            "chain_id": chain, "height": height, "hash": block_hash(chain, height),
            "parent": block_hash(chain, height - 1) if height else None,
            "proposer": f"node-{height % 3}" if height else None, "operator": ALICE if height else None,
            "timestamp_ms": 1_700_000_000_000 + 1000 * height, "tx_root": "0" * 64,
            "tx_count": 2 if height else 0, "applied_count": 1 if height else 0,
            "rejected_count": 1 if height else 0, "reward": 2_000_000 if height else 0,
            "fees": 10 if height else 0, "finalized": height <= BLOCKS - 3, "canonical": True,
            "status": "finalized" if height <= BLOCKS - 3 else "canonical", "position": 2 * height + 1,
        }

    @staticmethod
    def _txs_of(chain: str, height: int) -> list[dict[str, Any]]:
        common = {"height": height, "block_hash": block_hash(chain, height), "kind": "transfer", "asset": "CELL"}
        return [
            {**common, "tx_id": tx_id(chain, height, 0), "index": 0, "signer": ALICE, "from": ALICE,
             "to": BOB, "amount": BIG - height, "fee": 10, "nonce": height - 1, "status": "applied",
             "reason": ""},
            {**common, "tx_id": tx_id(chain, height, 1), "index": 1, "signer": BOB, "from": BOB,
             "to": CAROL, "amount": BIG, "fee": 0, "nonce": 7, "status": "rejected",
             "reason": "insufficient_funds"},
        ]

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.fail == name:
            raise RuntimeError("secret connection string in the message")

    def chains(self) -> list[str]:
        self._call("chains")
        return list(self._blocks)

    def default_chain(self) -> str | None:
        self._call("default_chain")
        return CHAIN

    def _top(self, finality: str) -> int:
        return BLOCKS - 1 if finality == "latest" else BLOCKS - 3

    def head(self, chain_id: str) -> dict[str, Any] | None:
        self._call("head", chain_id)
        tip, final = self._blocks[chain_id][-1], self._blocks[chain_id][BLOCKS - 3]
        return {
            "chain_id": chain_id, "height": tip["height"], "hash": tip["hash"],
            "timestamp_ms": tip["timestamp_ms"], "finalized_height": final["height"],
            "finalized_hash": final["hash"], "tip": tip, "finalized": final,
        }

    def block(
        self, chain_id: str, height: int | None = None, hash: str | None = None, finality: str = "latest"
    ) -> dict[str, Any] | None:
        self._call("block", chain_id, height, hash, finality)
        if height is None and hash is None:
            height = self._top(finality)
        if hash == ORPHAN:
            return {**self._blocks[chain_id][3], "hash": ORPHAN, "canonical": False, "finalized": False,
                    "status": "orphaned"}
        found = [b for b in self._blocks[chain_id] if b["height"] == height or b["hash"] == hash]
        return found[0] if found and found[0]["height"] <= self._top(finality) else None

    def blocks(
        self,
        chain_id: str,
        first: int,
        before_height: int | None = None,
        proposer: str | None = None,
        finality: str = "latest",
    ) -> list[dict[str, Any]]:
        self._call("blocks", chain_id, first, before_height, proposer, finality)
        rows = [
            b for b in reversed(self._blocks[chain_id])
            if (before_height is None or b["height"] < before_height)
            and (proposer is None or b["proposer"] == proposer) and b["height"] <= self._top(finality)
        ]
        return rows[: min(first, self.page_cap)]

    def account(
        self, chain_id: str, address: str, at_height: int | None = None, finality: str = "latest"
    ) -> dict[str, Any]:
        self._call("account", chain_id, address, at_height, finality)
        height = min(self._top(finality), BLOCKS - 1 if at_height is None else at_height)
        balances = [{"asset": "CELL", "amount": BIG}, {"asset": "WETH", "amount": 5}] if address == ALICE else []
        return {"address": address, "height": height, "balances": balances, "nonce": height}

    def transactions(
        self,
        chain_id: str,
        address: str | None = None,
        first: int = 20,
        before: tuple[int, int] | None = None,
        finality: str = "latest",
    ) -> list[dict[str, Any]]:
        self._call("transactions", chain_id, address, first, before, finality)
        rows = [
            t for t in reversed(self._txs[chain_id])
            if (before is None or (t["height"], t["index"]) < before)
            and (address is None or address in (t["from"], t["to"])) and t["height"] <= self._top(finality)
        ]
        return rows[: min(first, self.page_cap)]

    def reorgs(self, chain_id: str, first: int, before_position: int | None = None) -> list[dict[str, Any]]:
        self._call("reorgs", chain_id, first, before_position)
        rows = [r for r in REORGS if before_position is None or r["position"] < before_position]
        return [{**r, "chain_id": chain_id} for r in rows][: min(first, self.page_cap)]

    def receipt(self, tx_id: str, chain_id: str | None = None) -> dict[str, Any] | None:
        self._call("receipt", tx_id, chain_id)
        for chain in [chain_id] if chain_id else list(self._txs):
            for t in self._txs[chain]:
                if t["tx_id"] == tx_id:
                    keys = ("tx_id", "status", "reason", "height", "index", "block_hash")
                    return {**{k: t[k] for k in keys}, "chain_id": chain}
        return None

    def stats(self, chain_id: str, window: int, finality: str = "latest") -> dict[str, Any]:
        self._call("stats", chain_id, window, finality)
        return {
            "total_blocks": self._top(finality) + 1, "txs_applied": 2**40, "txs_rejected": BLOCKS - 1,
            "volume": [{"asset": "CELL", "amount": 2**70}], "fees": [{"asset": "CELL", "amount": 240}],
            "supply": [{"asset": "CELL", "amount": 10**20}], "rolling_tps": 1.5,
            "rolling_block_time_ms": 1000.0, "window_blocks": min(window, BLOCKS),
            "finality_delay_ms": 2000, "finality_delay_blocks": 1.5, "last_block_height": BLOCKS - 1,
            "last_block_timestamp_ms": 1_700_000_024_000,
        }

    def position(self) -> int:
        self._call("position")
        return self.checkpoint


class IdleService:
    def submit(self, obj: Any) -> dict[str, Any]:
        raise AssertionError("no writes in GraphQL tests")

    def submit_many(self, objs: list[Any]) -> list[dict[str, Any]]:
        raise AssertionError("no writes in GraphQL tests")

    def max_position(self) -> int:
        return 0


@pytest.fixture
def model() -> FakeReadModel:
    return FakeReadModel()


@pytest.fixture
def client(model: FakeReadModel) -> Client:
    return Client(create_app(model, IdleService()))


def gql(client: Client, query: str, **variables: Any) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def data(client: Client, query: str, **variables: Any) -> dict[str, Any]:
    body = gql(client, query, **variables)
    assert "errors" not in body, body["errors"]
    result: dict[str, Any] = body["data"]
    return result


def error(client: Client, query: str, **variables: Any) -> dict[str, Any]:
    body = gql(client, query, **variables)
    assert body.get("errors"), body
    first: dict[str, Any] = body["errors"][0]
    return first


# ------------------------------------------------------------------------------------------- head


def test_head_defaults_to_the_default_chain(client: Client) -> None:
    head = data(client, "{ head { chainId height hash timestampMs finalizedHeight finalizedHash } }")["head"]
    assert head == {
        "chainId": CHAIN, "height": BLOCKS - 1, "hash": block_hash(CHAIN, BLOCKS - 1),
        "timestampMs": str(1_700_000_024_000), "finalizedHeight": BLOCKS - 3,
        "finalizedHash": block_hash(CHAIN, BLOCKS - 3),
    }


def test_head_has_the_tip_and_the_finalized_block(client: Client) -> None:
    head = data(client, "{ head { tip { height hash status } finalized { height hash status canonical } } }")["head"]
    assert head == {
        "tip": {"height": BLOCKS - 1, "hash": block_hash(CHAIN, BLOCKS - 1), "status": "CANONICAL"},
        "finalized": {"height": BLOCKS - 3, "hash": block_hash(CHAIN, BLOCKS - 3), "status": "FINALIZED",
                      "canonical": True},
    }


def test_head_of_a_named_chain(client: Client, model: FakeReadModel) -> None:
    head = data(client, "query($c: String) { head(chainId: $c) { chainId hash } }", c=OTHER_CHAIN)["head"]
    assert head == {"chainId": OTHER_CHAIN, "hash": block_hash(OTHER_CHAIN, BLOCKS - 1)}
    assert ("default_chain", ()) not in model.calls


def test_unknown_and_malformed_chain_ids(client: Client, model: FakeReadModel) -> None:
    err = error(client, '{ head(chainId: "nope") { height } }')
    assert err["extensions"] == {"code": "UNKNOWN_CHAIN", "argument": "chainId"}
    assert "nope" in err["message"]
    err = error(client, '{ head(chainId: "bad chain!") { height } }')
    assert err["extensions"] == {"code": "BAD_ARGUMENT", "argument": "chainId"}
    assert err["message"].startswith("chainId:")


def test_known_chains_are_looked_up_once(client: Client, model: FakeReadModel) -> None:
    for _ in range(3):
        data(client, "{ head(chainId: %s) { height } }" % f'"{OTHER_CHAIN}"')  # noqa: UP031
    assert [c for c in model.calls if c[0] == "chains"] == [("chains", ())]


# ------------------------------------------------------------------------------------------ block

BLOCK_FIELDS = """chainId height hash parent proposer operator timestampMs txRoot txCount appliedCount
    rejectedCount reward fees finalized canonical status position"""


def test_block_by_height_and_by_hash(client: Client) -> None:
    by_height = data(client, "{ block(height: 4) { %s } }" % BLOCK_FIELDS)["block"]  # noqa: UP031
    assert by_height == {
        "chainId": CHAIN, "height": 4, "hash": block_hash(CHAIN, 4), "parent": block_hash(CHAIN, 3),
        "proposer": "node-1", "operator": ALICE, "timestampMs": "1700000004000", "txRoot": "0" * 64,
        "txCount": 2, "appliedCount": 1, "rejectedCount": 1, "reward": "2000000", "fees": "10",
        "finalized": True, "canonical": True, "status": "FINALIZED", "position": "9",
    }
    by_hash = data(client, "query($h: String) { block(hash: $h) { height } }", h=block_hash(CHAIN, 4))
    assert by_hash["block"] == {"height": 4}


def test_block_without_height_or_hash_is_the_head_at_the_finality_level(client: Client, model: FakeReadModel) -> None:
    got = data(client, "{ tip: block { height status } final: block(finality: FINALIZED) { height status } }")
    assert got == {"tip": {"height": BLOCKS - 1, "status": "CANONICAL"},
                   "final": {"height": BLOCKS - 3, "status": "FINALIZED"}}
    assert ("block", (CHAIN, None, None, "finalized")) in model.calls
    assert data(client, "{ block(height: 23, finality: FINALIZED) { height } }") == {"block": None}


def test_an_orphaned_block_by_hash(client: Client) -> None:
    got = data(client, "query($h: String) { block(hash: $h) { height status canonical finalized } }", h=ORPHAN)
    assert got["block"] == {"height": 3, "status": "ORPHANED", "canonical": False, "finalized": False}


def test_genesis_block_has_no_parent_or_proposer(client: Client) -> None:
    genesis = data(client, "{ block(height: 0) { height parent proposer operator txCount } }")["block"]
    assert genesis == {"height": 0, "parent": None, "proposer": None, "operator": None, "txCount": 0}


def test_missing_block_is_null(client: Client) -> None:
    assert data(client, "{ block(height: 999) { hash } }") == {"block": None}
    assert data(client, "query($h: String) { block(hash: $h) { hash } }", h="f" * 64) == {"block": None}


@pytest.mark.parametrize(
    ("args", "argument", "words"),
    [
        (f'height: 1, hash: "{"0" * 64}"', "height/hash", "both"),
        ("finality: SAFE", "finality", "SAFE"),
        ("height: -1", "height", ">= 0"),
        ('hash: "ABC"', "hash", "64 lowercase hex"),
        (f'hash: "{"A" * 64}"', "hash", "64 lowercase hex"),
    ],
)
def test_block_argument_errors(
    client: Client, model: FakeReadModel, args: str, argument: str, words: str
) -> None:
    err = error(client, "{ block(%s) { hash } }" % args)  # noqa: UP031
    if argument == "finality":  # an enum value GraphQL itself refuses, before any resolver
        assert "Finality" in err["message"] and words in err["message"]
    else:
        assert err["extensions"] == {"code": "BAD_ARGUMENT", "argument": argument}
        assert err["message"].startswith(f"{argument}:") and words in err["message"]
    assert model.calls == []  # refused before any read


# ----------------------------------------------------------------------------------------- blocks

BLOCKS_QUERY = """query($first: Int, $after: String, $proposer: String, $chainId: String) {
  blocks(first: $first, after: $after, proposer: $proposer, chainId: $chainId) {
    edges { cursor node { height proposer chainId } }
    pageInfo { hasNextPage endCursor }
  }
}"""


BLOCKS_QUERY_FINAL = """query($first: Int, $after: String) {
  blocks(first: $first, after: $after, finality: FINALIZED) {
    edges { cursor node { height } } pageInfo { hasNextPage endCursor }
  }
}"""


def walk(client: Client, query: str, field: str, **variables: Any) -> list[list[dict[str, Any]]]:
    pages, after = [], None
    while True:
        conn = data(client, query, after=after, **variables)[field]
        pages.append([edge["node"] for edge in conn["edges"]])
        if conn["edges"]:
            assert conn["pageInfo"]["endCursor"] == conn["edges"][-1]["cursor"]
        if not conn["pageInfo"]["hasNextPage"]:
            return pages
        after = conn["pageInfo"]["endCursor"]
        assert len(pages) <= BLOCKS * 2, "paging does not end"


def test_blocks_default_page(client: Client, model: FakeReadModel) -> None:
    conn = data(client, "{ blocks { edges { node { height } } pageInfo { hasNextPage endCursor } } }")["blocks"]
    assert [e["node"]["height"] for e in conn["edges"]] == list(range(24, 4, -1))
    assert conn["pageInfo"]["hasNextPage"] is True
    # One probe row beyond the page says whether there is a next page.
    assert ("blocks", (CHAIN, limits.PAGE_SIZE_DEFAULT + 1, None, None, "latest")) in model.calls


@pytest.mark.parametrize("first", [1, 7, 24, 25, 26, limits.PAGE_SIZE_MAX])
def test_blocks_walk_visits_every_block_once_newest_first(client: Client, first: int) -> None:
    pages = walk(client, BLOCKS_QUERY, "blocks", first=first)
    heights = [b["height"] for page in pages for b in page]
    assert heights == list(range(BLOCKS - 1, -1, -1))
    assert all(len(page) == first for page in pages[:-1])


@pytest.mark.parametrize("first", [5, 6])
def test_walks_survive_a_read_model_that_caps_its_pages(first: int) -> None:
    # The real read model never returns more than PAGE_SIZE_MAX rows, so at first=PAGE_SIZE_MAX the probe
    # row is missing; the API asks once more instead of ending the walk early.
    client = Client(create_app(FakeReadModel(page_cap=first), IdleService()))
    heights = [b["height"] for page in walk(client, BLOCKS_QUERY, "blocks", first=first) for b in page]
    assert heights == list(range(BLOCKS - 1, -1, -1))
    keys = [(t["height"], t["index"]) for page in walk(client, TXS_QUERY, "transactions", first=first) for t in page]
    assert keys == [(h, i) for h in range(BLOCKS - 1, 0, -1) for i in (1, 0)]


def test_blocks_at_the_finalized_head(client: Client, model: FakeReadModel) -> None:
    heights = [b["height"] for page in walk(client, BLOCKS_QUERY_FINAL, "blocks", first=7) for b in page]
    assert heights == list(range(BLOCKS - 3, -1, -1))
    assert ("blocks", (CHAIN, 8, None, None, "finalized")) in model.calls


def test_blocks_walk_by_proposer_on_another_chain(client: Client) -> None:
    pages = walk(client, BLOCKS_QUERY, "blocks", first=3, proposer="node-2", chainId=OTHER_CHAIN)
    nodes = [b for page in pages for b in page]
    assert [b["height"] for b in nodes] == [h for h in range(BLOCKS - 1, 0, -1) if h % 3 == 2]
    assert {(b["proposer"], b["chainId"]) for b in nodes} == {("node-2", OTHER_CHAIN)}


@pytest.mark.parametrize(
    ("variables", "argument", "words"),
    [
        ({"first": 0}, "first", f"between 1 and {limits.PAGE_SIZE_MAX}"),
        ({"first": -5}, "first", "got -5"),
        ({"first": limits.PAGE_SIZE_MAX + 1}, "first", f"got {limits.PAGE_SIZE_MAX + 1}"),
        ({"after": "not-a-cursor"}, "after", "not a cursor issued by this server"),
        ({"after": tx_cursor(3, 1)}, "after", "not a blocks cursor"),
        ({"proposer": "node 1"}, "proposer", "must match"),
    ],
)
def test_blocks_argument_errors(
    client: Client, model: FakeReadModel, variables: dict[str, Any], argument: str, words: str
) -> None:
    err = error(client, BLOCKS_QUERY, **variables)
    assert err["extensions"] == {"code": "BAD_ARGUMENT", "argument": argument}
    assert err["message"].startswith(f"{argument}:") and words in err["message"]
    assert model.calls == []


# ---------------------------------------------------------------------------------------- account


def test_account_now_and_at_height(client: Client, model: FakeReadModel) -> None:
    query = "query($a: String!, $h: Int) { account(address: $a, atHeight: $h) { address height nonce %s } }"
    now = data(client, query % "balances { asset amount }", a=ALICE)["account"]
    assert now == {
        "address": ALICE, "height": BLOCKS - 1, "nonce": str(BLOCKS - 1),
        "balances": [{"asset": "CELL", "amount": str(BIG)}, {"asset": "WETH", "amount": "5"}],
    }
    then = data(client, query % "", a=BOB, h=3)["account"]
    assert then == {"address": BOB, "height": 3, "nonce": "3"}
    assert ("account", (CHAIN, BOB, 3, "latest")) in model.calls


def test_account_at_the_finalized_head(client: Client, model: FakeReadModel) -> None:
    query = "query($a: String!, $h: Int) { account(address: $a, atHeight: $h, finality: FINALIZED) { height } }"
    assert data(client, query, a=ALICE)["account"] == {"height": BLOCKS - 3}
    assert data(client, query, a=ALICE, h=BLOCKS - 1)["account"] == {"height": BLOCKS - 3}
    assert ("account", (CHAIN, ALICE, None, "finalized")) in model.calls


@pytest.mark.parametrize(
    ("variables", "argument"),
    [
        ({"a": "0x" + "A1" * 20}, "address"),
        ({"a": "a1" * 21}, "address"),
        ({"a": "0x" + "a1" * 19}, "address"),
        ({"a": ALICE, "h": -1}, "atHeight"),
    ],
)
def test_account_argument_errors(
    client: Client, model: FakeReadModel, variables: dict[str, Any], argument: str
) -> None:
    err = error(client, "query($a: String!, $h: Int) { account(address: $a, atHeight: $h) { nonce } }", **variables)
    assert err["extensions"]["argument"] == argument and err["message"].startswith(f"{argument}:")
    assert model.calls == []


def test_account_address_is_required(client: Client) -> None:
    err = error(client, "{ account { nonce } }")
    assert "address" in err["message"]


# ----------------------------------------------------------------------------------- transactions

TXS_QUERY = """query($first: Int, $after: String, $address: String) {
  transactions(first: $first, after: $after, address: $address) {
    edges { cursor node { txId height index blockHash kind signer from to asset amount fee nonce status reason } }
    pageInfo { hasNextPage endCursor }
  }
}"""


def test_transactions_default_page(client: Client) -> None:
    conn = data(client, TXS_QUERY)["transactions"]
    assert len(conn["edges"]) == limits.PAGE_SIZE_DEFAULT and conn["pageInfo"]["hasNextPage"]
    newest, second = (e["node"] for e in conn["edges"][:2])
    assert newest == {
        "txId": tx_id(CHAIN, 24, 1), "height": 24, "index": 1, "blockHash": block_hash(CHAIN, 24),
        "kind": "transfer", "signer": BOB, "from": BOB, "to": CAROL, "asset": "CELL", "amount": str(BIG),
        "fee": "0", "nonce": "7", "status": "rejected", "reason": "insufficient_funds",
    }
    assert second["status"] == "applied" and second["reason"] is None and second["amount"] == str(BIG - 24)


@pytest.mark.parametrize("first", [1, 5, 48, 100])
def test_transactions_walk_visits_every_tx_once(client: Client, first: int) -> None:
    pages = walk(client, TXS_QUERY, "transactions", first=first)
    keys = [(t["height"], t["index"]) for page in pages for t in page]
    assert keys == [(h, i) for h in range(BLOCKS - 1, 0, -1) for i in (1, 0)]


def test_transactions_at_the_finalized_head(client: Client, model: FakeReadModel) -> None:
    query = "{ transactions(first: 500, finality: FINALIZED) { edges { node { height } } } }"
    heights = {e["node"]["height"] for e in data(client, query)["transactions"]["edges"]}
    assert max(heights) == BLOCKS - 3
    assert ("transactions", (CHAIN, None, 501, None, "finalized")) in model.calls


def test_transactions_of_an_address(client: Client, model: FakeReadModel) -> None:
    pages = walk(client, TXS_QUERY, "transactions", first=10, address=CAROL)
    txs = [t for page in pages for t in page]
    assert len(txs) == BLOCKS - 1 and {t["to"] for t in txs} == {CAROL}
    assert model.calls[-1][1][1] == CAROL


@pytest.mark.parametrize(
    ("variables", "argument"),
    [({"first": 0}, "first"), ({"after": "Zm9v"}, "after"), ({"address": "bob"}, "address")],
)
def test_transactions_argument_errors(
    client: Client, model: FakeReadModel, variables: dict[str, Any], argument: str
) -> None:
    err = error(client, TXS_QUERY, **variables)
    assert err["extensions"]["argument"] == argument
    assert model.calls == []


# ---------------------------------------------------------------------------------------- receipt


def test_receipt_found_missing_and_scoped(client: Client, model: FakeReadModel) -> None:
    query = "query($t: String!, $c: String) { receipt(txId: $t, chainId: $c) { %s } }"
    fields = "txId status reason height index blockHash chainId"
    found = data(client, query % fields, t=tx_id(OTHER_CHAIN, 5, 1))["receipt"]
    assert found == {
        "txId": tx_id(OTHER_CHAIN, 5, 1), "status": "rejected", "reason": "insufficient_funds", "height": 5,
        "index": 1, "blockHash": block_hash(OTHER_CHAIN, 5), "chainId": OTHER_CHAIN,
    }
    assert ("receipt", (tx_id(OTHER_CHAIN, 5, 1), None)) in model.calls  # every chain when none is named
    applied = data(client, query % "status reason", t=tx_id(CHAIN, 5, 0), c=CHAIN)["receipt"]
    assert applied == {"status": "applied", "reason": None}
    assert data(client, query % "status", t=tx_id(OTHER_CHAIN, 5, 1), c=CHAIN) == {"receipt": None}


def test_receipt_argument_errors(client: Client) -> None:
    err = error(client, '{ receipt(txId: "xyz") { status } }')
    assert err["extensions"]["argument"] == "txId" and "64 lowercase hex" in err["message"]
    assert "txId" in error(client, "{ receipt { status } }")["message"]


# ------------------------------------------------------------------------------------------ stats

STATS_FIELDS = """chainId totalBlocks txsApplied txsRejected volume { asset amount } fees { asset amount }
    supply { asset amount } rollingTps rollingBlockTimeMs windowBlocks finalityDelayMs finalityDelayBlocks
    lastBlockHeight lastBlockTimestampMs"""


def test_stats_default_and_given_window(client: Client, model: FakeReadModel) -> None:
    stats = data(client, "{ stats { %s } }" % STATS_FIELDS)["stats"]  # noqa: UP031
    assert stats == {
        "chainId": CHAIN, "totalBlocks": BLOCKS, "txsApplied": str(2**40), "txsRejected": str(BLOCKS - 1),
        "volume": [{"asset": "CELL", "amount": str(2**70)}], "fees": [{"asset": "CELL", "amount": "240"}],
        "supply": [{"asset": "CELL", "amount": str(10**20)}], "rollingTps": 1.5,
        "rollingBlockTimeMs": 1000.0, "windowBlocks": BLOCKS, "finalityDelayMs": 2000.0,
        "finalityDelayBlocks": 1.5, "lastBlockHeight": BLOCKS - 1, "lastBlockTimestampMs": "1700000024000",
    }
    assert data(client, "{ stats(window: 10) { windowBlocks } }") == {"stats": {"windowBlocks": 10}}
    assert ("stats", (CHAIN, 10, "latest")) in model.calls


def test_stats_at_the_finalized_head(client: Client, model: FakeReadModel) -> None:
    assert data(client, "{ stats(finality: FINALIZED) { totalBlocks } }") == {"stats": {"totalBlocks": BLOCKS - 2}}
    assert ("stats", (CHAIN, 100, "finalized")) in model.calls


@pytest.mark.parametrize("window", [0, -1, limits.STATS_WINDOW_MAX + 1])
def test_stats_window_bounds(client: Client, window: int) -> None:
    err = error(client, "query($w: Int) { stats(window: $w) { windowBlocks } }", w=window)
    assert err["extensions"]["argument"] == "window" and str(window) in err["message"]


# ----------------------------------------------------------------------------------------- reorgs

REORGS_QUERY = """query($first: Int, $after: String, $chainId: String) {
  reorgs(first: $first, after: $after, chainId: $chainId) {
    edges { cursor node { chainId position cause depth height ancestorHash oldTip { height hash }
                          newTip { height hash } reverted applied } }
    pageInfo { hasNextPage endCursor }
  }
}"""


def test_reorgs_newest_first(client: Client, model: FakeReadModel) -> None:
    conn = data(client, REORGS_QUERY, first=1)["reorgs"]
    assert conn["pageInfo"]["hasNextPage"] is True
    assert conn["edges"][0]["node"] == {
        "chainId": CHAIN, "position": "90", "cause": "finality", "depth": 1, "height": 10, "ancestorHash": "a" * 64,
        "oldTip": {"height": 11, "hash": "b" * 64}, "newTip": {"height": 12, "hash": "c" * 64},
        "reverted": ["b" * 64], "applied": ["c" * 64],
    }
    assert ("reorgs", (CHAIN, 2, None)) in model.calls


@pytest.mark.parametrize("first", [1, 2, 5, 6])
def test_reorgs_walk_visits_every_reorg_once(client: Client, first: int) -> None:
    pages = walk(client, REORGS_QUERY, "reorgs", first=first, chainId=OTHER_CHAIN)
    nodes = [r for page in pages for r in page]
    assert [r["position"] for r in nodes] == ["90", "70", "50", "30", "10"]
    assert {r["chainId"] for r in nodes} == {OTHER_CHAIN}


@pytest.mark.parametrize(
    ("variables", "words"),
    [({"first": 0}, "between 1 and"), ({"after": "!!!"}, "not a cursor issued"),
     ({"after": tx_cursor(3, 1)}, "not a reorgs cursor")],
)
def test_reorgs_argument_errors(client: Client, model: FakeReadModel, variables: dict[str, Any], words: str) -> None:
    err = error(client, REORGS_QUERY, **variables)
    assert err["extensions"]["code"] == "BAD_ARGUMENT" and words in err["message"]
    assert model.calls == []


# ------------------------------------------------------------------------------ limits and errors


def test_too_deep_query_is_refused(client: Client, model: FakeReadModel) -> None:
    deep = "{ blocks { edges { node { " + "a { " * 8 + "b" + " }" * 8 + " } } } }"
    messages = [e["message"] for e in gql(client, deep)["errors"]]
    assert f"exceeds maximum operation depth of {limits.GRAPHQL_DEPTH_MAX}" in " ".join(messages)
    assert model.calls == []


def test_too_many_aliases_are_refused(client: Client, model: FakeReadModel) -> None:
    fine = " ".join(f"h{i}: head {{ height }}" for i in range(limits.GRAPHQL_ALIASES_MAX))
    assert len(data(client, "{ %s }" % fine)) == limits.GRAPHQL_ALIASES_MAX  # noqa: UP031
    model.calls.clear()
    many = " ".join(f"h{i}: head {{ height }}" for i in range(limits.GRAPHQL_ALIASES_MAX + 1))
    err = error(client, "{ %s }" % many)  # noqa: UP031
    assert f"Allowed: {limits.GRAPHQL_ALIASES_MAX}" in err["message"]
    assert model.calls == []


def test_too_many_tokens_are_refused(client: Client) -> None:
    query = "{ head { " + "height " * limits.GRAPHQL_TOKENS_MAX + "} }"
    err = error(client, query)
    assert f"more than {limits.GRAPHQL_TOKENS_MAX} tokens" in err["message"]


def test_introspection_for_graphiql_passes_the_limits(client: Client) -> None:
    schema = data(client, get_introspection_query(descriptions=True))["__schema"]
    assert schema["queryType"]["name"] == "Query"
    names = {t["name"] for t in schema["types"]}
    assert {"BigInt", "BlockConnection", "PageInfo", "Receipt", "Reorg", "BlockStatus", "Finality"} <= names


def test_graphiql_page_and_get_queries(client: Client) -> None:
    page = client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    answer = client.get("/graphql", params={"query": "{ head { height } }"})
    assert answer.json() == {"data": {"head": {"height": BLOCKS - 1}}}


def test_internal_errors_are_logged_and_masked(
    client: Client, model: FakeReadModel, caplog: pytest.LogCaptureFixture
) -> None:
    model.fail = "stats"
    with caplog.at_level(logging.ERROR, logger="strawberry.execution"):
        body = gql(client, "{ head { height } stats { totalBlocks } }")
    assert body["data"] is None  # stats is non-null, so the error nulls the whole response
    assert [e["message"] for e in body["errors"]] == ["internal error"]
    assert "secret" not in str(body)
    assert "secret connection string" in caplog.text


def test_client_errors_are_not_logged(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="strawberry.execution"):
        error(client, "{ block(height: -1) { hash } }")
        error(client, "{ nosuchfield }")
    assert caplog.records == []


def test_every_root_field_in_one_request(client: Client) -> None:
    query = f"""{{
      head {{ height }} block(height: 1) {{ height }} blocks(first: 2) {{ edges {{ node {{ height }} }} }}
      account(address: "{ALICE}") {{ nonce }} transactions(first: 1) {{ edges {{ node {{ index }} }} }}
      receipt(txId: "{tx_id(CHAIN, 1, 0)}") {{ status }} stats(window: 5) {{ windowBlocks }}
      reorgs(first: 1) {{ edges {{ node {{ depth }} }} }}
    }}"""
    got = data(client, query)
    assert got["head"] == {"height": 24} and got["receipt"] == {"status": "applied"}
    assert got["stats"] == {"windowBlocks": 5} and len(got["blocks"]["edges"]) == 2
    assert got["reorgs"] == {"edges": [{"node": {"depth": 1}}]}
