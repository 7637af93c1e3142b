"""`events(fromPosition, kinds, first, after)`: the raw log through GraphQL, from the event store, with positions
and hashes that link, a kind filter, paging that visits every event once, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_api_client import Client

from api import create_app
from projections.queries import ReadModel
from projections.store import ProjectionStore
from schemas.events import event_hash
from schemas.settings import Settings
from tests.rich_log import EVERY
from writes.service import LedgerService


@pytest.fixture
def data_dir(rich_log: Path) -> Path:
    return rich_log


@pytest.fixture
def client(data_dir: Path, projection_store: ProjectionStore) -> Any:
    service = LedgerService(Settings(data_dir=data_dir, verify_workers=1, reserves_every_blocks=EVERY))
    yield Client(create_app(ReadModel(projection_store), service)), service
    service.close()


QUERY = """query($from: BigInt, $kinds: [String!], $first: Int, $after: String) {
  events(fromPosition: $from, kinds: $kinds, first: $first, after: $after) {
    edges { cursor node { position seq kind chainId hash prevHash recordedAt data } }
    pageInfo { hasNextPage endCursor } } }"""


def gql(client: Client, **variables: Any) -> dict[str, Any]:
    body = client.post("/graphql", json={"query": QUERY, "variables": variables}).json()
    return body  # type: ignore[no-any-return]


def test_paging_visits_the_whole_log_once_and_the_hashes_link(client: Any) -> None:
    http, service = client
    seen, after, prev = [], None, "00" * 32
    while True:
        page = gql(http, first=7, after=after)["data"]["events"]
        for edge in page["edges"]:
            node = edge["node"]
            data = json.loads(node["data"])
            assert data["prev_hash"] == node["prevHash"] == prev
            assert event_hash(node["kind"], int(node["seq"]), data) == node["hash"]
            prev = node["hash"]
            seen.append(int(node["position"]))
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == list(range(1, service.max_position() + 1))


def test_a_kind_filter_and_a_starting_position(client: Any) -> None:
    http, _ = client
    page = gql(http, kinds=["chain_reorganized", "reserves_attested"], first=50)["data"]["events"]
    kinds = [e["node"]["kind"] for e in page["edges"]]
    assert kinds and set(kinds) == {"chain_reorganized", "reserves_attested"}
    later = gql(http, **{"from": 5}, first=2)["data"]["events"]["edges"]
    assert [e["node"]["position"] for e in later] == ["5", "6"]


@pytest.mark.parametrize(
    ("variables", "words"),
    [({"kinds": ["block_exploded"]}, "unknown kind"), ({"after": "nonsense"}, "not an events cursor"),
     ({"first": 0}, "first")],
)
def test_bad_arguments_are_named(client: Any, variables: dict[str, Any], words: str) -> None:
    http, _ = client
    body = gql(http, **variables)
    assert body["errors"] and words in body["errors"][0]["message"]
