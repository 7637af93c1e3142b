"""/healthz, /readyz and /metrics: readiness by projection lag, Prometheus text that parses, live values."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_api_client import Client

from api import create_app
from api.app import readiness
from api.metrics import command_labels
from schemas.settings import Settings

LAG_MAX = 10


class Log:
    def __init__(self) -> None:
        self.position = 0
        self.down = False

    def max_position(self) -> int:
        if self.down:
            raise OSError("event store unreachable")
        return self.position

    def submit(self, obj: Any) -> dict[str, Any]:
        self.position += 1
        return {"status": "accepted", "kind": "vote", "counted": True}

    def submit_many(self, objs: list[Any]) -> list[dict[str, Any]]:
        return [self.submit(o) for o in objs]


class Projection:
    def __init__(self) -> None:
        self.checkpoint = 0

    def position(self) -> int:
        return self.checkpoint


class Follower:
    def __init__(self) -> None:
        self.position = 0

    def lag(self) -> int:
        return 3

    def counters(self) -> dict[str, int]:
        return {"events_projected": 40, "batches_total": 2, "Bad Name": 1}


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def projection() -> Projection:
    return Projection()


@pytest.fixture
def client(log: Log, projection: Projection) -> Client:
    settings = Settings().with_(ready_lag_events_max=LAG_MAX)
    return Client(create_app(projection, log, follower=Follower(), settings=settings))  # type: ignore[arg-type]


def scrape(client: Client) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    matching = [v for got, v in samples.get(name, []) if all(got.get(k) == w for k, w in labels.items())]
    assert len(matching) == 1, (name, labels, samples.get(name))
    return matching[0]


def test_healthz(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_follows_the_lag(client: Client, log: Log, projection: Projection) -> None:
    assert client.get("/readyz").status_code == 200
    log.position = 100
    projection.checkpoint = 100 - LAG_MAX - 1
    behind = client.get("/readyz")
    assert behind.status_code == 503
    assert behind.json() == {
        "ready": False, "log_position": 100, "projection_position": 89, "lag_events": 11, "lag_events_max": LAG_MAX,
    }
    projection.checkpoint = 100 - LAG_MAX
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_when_a_store_cannot_be_read(client: Client, log: Log) -> None:
    log.down = True
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["ready"] is False and "unreachable" in response.json()["error"]


def test_readiness_is_pure() -> None:
    assert readiness(5, 5, 0)["ready"] is True
    assert readiness(6, 5, 0) == {
        "ready": False, "log_position": 6, "projection_position": 5, "lag_events": 1, "lag_events_max": 0,
    }


def test_metrics_live_positions_and_follower(client: Client, log: Log, projection: Projection) -> None:
    log.position, projection.checkpoint = 120, 100
    samples = scrape(client)
    assert value(samples, "tally_log_position") == 120
    assert value(samples, "tally_events_appended_total") == 120
    assert value(samples, "tally_projection_position") == 100
    assert value(samples, "tally_projection_lag_events") == 20
    assert value(samples, "tally_follower_position") == 0
    assert value(samples, "tally_follower_lag_events") == 3
    assert value(samples, "tally_follower_events_projected_total") == 40
    assert value(samples, "tally_follower_batches_total") == 2
    assert not [n for n in samples if "Bad" in n]
    for source in ("log", "projection", "follower"):
        assert value(samples, "tally_metrics_source_up", source=source) == 1
    log.position = 130  # read at scrape time, not cached
    assert value(scrape(client), "tally_log_position") == 130


def test_metrics_survive_a_source_that_is_down(client: Client, log: Log) -> None:
    log.down = True
    samples = scrape(client)
    assert "tally_log_position" not in samples and "tally_projection_lag_events" not in samples
    assert value(samples, "tally_metrics_source_up", source="log") == 0
    assert value(samples, "tally_projection_position") == 0


def test_commands_and_request_durations_are_counted(client: Client) -> None:
    client.post("/v1/commands", json={"kind": "vote"})
    client.post("/v1/commands", json=[{"kind": "vote"}, {"kind": "vote"}])
    client.post("/v1/commands", content=b"{")
    client.get("/no/such/path")
    client.request("BREW", "/healthz")
    samples = scrape(client)
    accepted = value(samples, "tally_commands_total", kind="vote", status="accepted", reason="none")
    assert accepted == 3
    assert value(samples, "tally_commands_total", kind="none", status="rejected", reason="malformed_command") == 1
    count = "tally_http_request_duration_seconds_count"
    assert value(samples, count, route="/v1/commands", method="POST", status="200") == 2
    assert value(samples, count, route="/v1/commands", method="POST", status="400") == 1
    assert value(samples, count, route="other", method="GET", status="404") == 1
    assert value(samples, count, route="/healthz", method="other", status="405") == 1
    assert value(samples, "tally_http_request_duration_seconds_bucket", route="/v1/commands", method="POST",
                 status="200", le="+Inf") == 2


def test_each_app_has_its_own_registry(log: Log, projection: Projection) -> None:
    first = Client(create_app(projection, log))  # type: ignore[arg-type]
    second = Client(create_app(projection, log))  # type: ignore[arg-type]
    first.post("/v1/commands", json={"kind": "vote"})
    assert "tally_commands_total" not in scrape(second)
    assert "tally_follower_position" not in scrape(second)  # no follower given


@pytest.mark.parametrize(
    ("result", "labels"),
    [
        ({"status": "accepted", "kind": "block"}, ("block", "accepted", "none")),
        (
            {"status": "rejected", "kind": "x" * 500, "reason": "unknown_command"},
            ("other", "rejected", "unknown_command"),
        ),
        ({"status": "rejected", "kind": None, "reason": "Not A Reason!"}, ("none", "rejected", "none")),
        ({"status": "weird"}, ("none", "rejected", "none")),
    ],
)
def test_command_labels_are_bounded(result: dict[str, Any], labels: tuple[str, str, str]) -> None:
    assert command_labels(result) == labels


def _write(store: Any, events: list[Any]) -> None:
    """Projects the events the store has not seen yet, and checkpoints the last one."""
    from projections.project import project

    rows: dict[str, list[Any]] = {}
    for position, event in enumerate(events, start=1):
        if position > store.checkpoint():
            for table, table_rows in project(position, event).items():
                rows.setdefault(table, []).extend(table_rows)
    store.write(rows, len(events))


def test_finality_gauges_read_the_views(projection_store: Any, event_log: Any, log: Log) -> None:
    """tally_head_height, tally_finalized_height and the finality delay, in blocks and in ms of block time, per
    chain, as the views show them after each write."""
    from projections.queries import ReadModel

    operator = "0x" + "0a" * 20
    genesis = event_log.genesis("alpha", 1_000, [], [("n1", operator, 10_000_000)])
    parent, hashes = genesis.block_hash, {}
    for height in range(1, 5):  # blocks 1..4, one second apart
        block = event_log.block("alpha", height, parent, "n1", operator, 1_000 + 1_000 * height)
        parent = hashes[height] = block.block_hash
    event_log.finalized("alpha", [(1, hashes[1]), (2, hashes[2])], 4, 5_000, 10_000_000, 10_000_000)
    event_log.genesis("beta", 7_000, [], [("n1", operator, 10_000_000)])
    client = Client(create_app(ReadModel(projection_store), log))  # type: ignore[arg-type]
    empty = scrape(client)
    assert [n for n in empty if n.startswith(("tally_head", "tally_finali"))] == []  # no chain yet: no samples
    _write(projection_store, event_log.events)
    samples = scrape(client)
    assert value(samples, "tally_head_height", chain_id="alpha") == 4
    assert value(samples, "tally_finalized_height", chain_id="alpha") == 2
    assert value(samples, "tally_finality_delay_blocks", chain_id="alpha") == 2
    assert value(samples, "tally_finality_delay_ms", chain_id="alpha") == 5_000 - 3_000
    for name in ("tally_head_height", "tally_finalized_height", "tally_finality_delay_blocks",
                 "tally_finality_delay_ms"):
        assert value(samples, name, chain_id="beta") == 0  # a genesis alone is final
    event_log.finalized("alpha", [(3, hashes[3]), (4, hashes[4])], 4, 5_000, 10_000_000, 10_000_000)
    _write(projection_store, event_log.events)
    samples = scrape(client)
    assert value(samples, "tally_finalized_height", chain_id="alpha") == 4
    assert value(samples, "tally_finality_delay_blocks", chain_id="alpha") == 0
    assert value(samples, "tally_finality_delay_ms", chain_id="alpha") == 0
