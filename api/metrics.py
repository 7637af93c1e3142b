"""Prometheus metrics of one app: a registry of its own, live figures read at scrape time, intake and HTTP counts.

Exposed:
  tally_log_position                      gauge    last log position (service.max_position())
  tally_events_appended_total             counter  events appended to the log (= the log position)
  tally_projection_position               gauge    projection checkpoint (read_model.position())
  tally_projection_lag_events             gauge    log position - projection checkpoint
  tally_follower_position                 gauge    follower.position, when a follower is given
  tally_follower_lag_events               gauge    follower.lag()
  tally_follower_<name>_total             counter  each entry of follower.counters(), when it has them
  tally_metrics_source_up{source}         gauge    1 when reading log / projection / follower worked
  tally_commands_total{kind,status,reason} counter  commands answered at intake
  tally_slashes_total{chain_id,status,reason}           counter  slash receipts put on the canonical chain
  tally_slashes_reverted_total{chain_id,status,reason}  counter  ... and taken off it by reorganizations
  tally_validators{chain_id,phase}        gauge    validators per phase at the head
  tally_validators_bonded_stake{chain_id} gauge    stake of active and unbonding validators, micro-units
  tally_validators_slashed_stake{chain_id} / _burned_stake{chain_id}  gauges  totals at the head
  tally_reserves_ratio{chain_id,asset}    gauge    escrow / liabilities of a bridged asset at the head (none when
                                                   nothing is owed); _escrow, _liabilities, _pending beside it
  tally_reserves_attested_height{chain_id,asset}  gauge  height of the newest proof-of-reserves attestation
  tally_head_height{chain_id}             gauge    height of the canonical head
  tally_finalized_height{chain_id}        gauge    height of the newest final block
  tally_finality_delay_blocks{chain_id}   gauge    head height - finalized height (0: the head is final)
  tally_finality_delay_ms{chain_id}       gauge    head block timestamp - newest final block timestamp (block time,
                                                   not wall time: it does not grow while no block comes)
  tally_http_request_duration_seconds{route,method,status}  histogram

The live figures come from a custom collector, so nothing polls in the background and a scrape shows the values
of the moment. Reading them is blocking I/O: render the exposition off the event loop.

The head and finality figures are read from the projection too (ReadModel.head: one snapshot), so every replica
of a scaled deployment shows what its views show.

The validator figures are read from the projection (projections/validator_queries.py), so they agree with the views:
a slash receipt counts in tally_slashes_total each time a block carrying it is put on the canonical chain and in
tally_slashes_reverted_total each time one is taken off, so both only grow and their difference is what the views
show now.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Label values that clients control are bucketed, so a client cannot grow the label set without bound.
COMMAND_KINDS = frozenset({"genesis", "block", "vote"})
HTTP_METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS"})
OTHER = "other"
NONE = "none"
_REASON_RE = re.compile(r"[a-z_]{1,64}")
_COUNTER_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Seconds; from a cached GraphQL lookup (~1 ms) up to a full block of 1,000 ML-DSA transfers (seconds).
HTTP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PositionSource(Protocol):
    def max_position(self) -> int: ...


class ProjectionSource(Protocol):
    def position(self) -> int: ...


def command_labels(result: Mapping[str, Any]) -> tuple[str, str, str]:
    """(kind, status, reason) of one intake result, with client-controlled values bucketed."""
    kind = result.get("kind")
    reason = result.get("reason")
    return (
        kind if kind in COMMAND_KINDS else (NONE if kind is None else OTHER),
        "accepted" if result.get("status") == "accepted" else "rejected",
        reason if isinstance(reason, str) and _REASON_RE.fullmatch(reason) else NONE,
    )


def _read(source: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # a scrape must still answer when one source is down; it says so in *_source_up
        log.warning("metrics: reading the %s failed", source, exc_info=True)
        return None


class LedgerCollector(Collector):
    """Reads positions and lags when scraped."""

    def __init__(self, service: PositionSource, read_model: ProjectionSource, follower: Any = None) -> None:
        self._service = service
        self._read_model = read_model
        self._follower = follower

    def describe(self) -> list[Metric]:
        # Live values: nothing to read at registration time.
        return []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("tally_metrics_source_up", "1 when the source could be read", labels=["source"])
        log_position = _read("log", self._service.max_position)
        projection = _read("projection", self._read_model.position)
        up.add_metric(["log"], float(log_position is not None))
        up.add_metric(["projection"], float(projection is not None))
        if log_position is not None:
            yield GaugeMetricFamily("tally_log_position", "last position of the event log", value=log_position)
            yield CounterMetricFamily(
                "tally_events_appended", "events appended to the log", value=log_position
            )
        if projection is not None:
            yield GaugeMetricFamily(
                "tally_projection_position", "projection checkpoint (last fully written position)",
                value=projection,
            )
        if log_position is not None and projection is not None:
            yield GaugeMetricFamily(
                "tally_projection_lag_events", "log events not yet projected",
                value=max(log_position - projection, 0),
            )
        if self._follower is not None:
            ok = True
            for metric in self._follower_metrics():
                ok = ok and metric is not None
                if metric is not None:
                    yield metric
            up.add_metric(["follower"], float(ok))
        yield up

    def _follower_metrics(self) -> Iterator[Metric | None]:
        follower = self._follower
        position = _read("follower position", lambda: follower.position)
        yield None if position is None else GaugeMetricFamily(
            "tally_follower_position", "last log position the follower projected", value=position
        )
        lag = _read("follower lag", follower.lag)
        yield None if lag is None else GaugeMetricFamily(
            "tally_follower_lag_events", "log events the follower has not projected yet", value=lag
        )
        counters = getattr(follower, "counters", None)
        if counters is None:
            return
        values = _read("follower counters", counters if callable(counters) else lambda: counters)
        if values is None:
            yield None
            return
        for name, value in sorted(values.items()):
            if _COUNTER_NAME_RE.fullmatch(name):
                name = name.removesuffix("_total")
                yield CounterMetricFamily(f"tally_follower_{name}", f"follower counter {name}", value=value)


class ValidatorCollector(Collector):
    """Validator gauges and slash counters, read from the projection when scraped (two queries)."""

    def __init__(self, read_model: Any) -> None:
        from projections.validator_queries import ValidatorQueries

        self._queries = ValidatorQueries(read_model)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        figures = _read("validator views", self._queries.validator_metrics)
        if figures is None:  # logged by _read; the projection's own source_up says whether it can be read at all
            return
        labels = ["chain_id", "status", "reason"]
        counted = CounterMetricFamily(
            "tally_slashes", "slash receipts put on the canonical chain (applied or rejected)", labels=labels
        )
        reverted = CounterMetricFamily(
            "tally_slashes_reverted", "slash receipts taken off the canonical chain by reorganizations", labels=labels
        )
        phases = GaugeMetricFamily("tally_validators", "validators per phase at the head", labels=["chain_id", "phase"])
        amounts = {
            name: GaugeMetricFamily(f"tally_validators_{name}", help_text, labels=["chain_id"])
            for name, help_text in (
                ("bonded_stake", "stake of active and unbonding validators at the head, micro-units"),
                ("slashed_stake", "stake taken by applied slashes up to the head, micro-units"),
                ("burned_stake", "slashed stake burned up to the head, micro-units"),
            )
        }
        for chain_id, chain in sorted(figures.items()):
            for family, counts in ((counted, chain["counted"]), (reverted, chain["reverted"])):
                for (status, reason), n in sorted(counts.items()):
                    shown = reason if _REASON_RE.fullmatch(reason) else NONE
                    family.add_metric([chain_id, status, shown], n)
            totals = chain["totals"]
            for phase in ("active", "unbonding", "released"):
                phases.add_metric([chain_id, phase], totals[f"{phase}_count"])
            amounts["bonded_stake"].add_metric([chain_id], totals["bonded_stake"])
            amounts["slashed_stake"].add_metric([chain_id], totals["slashed_total"])
            amounts["burned_stake"].add_metric([chain_id], totals["burned_total"])
        yield from (counted, reverted, phases, *amounts.values())


class ReservesCollector(Collector):
    """Bridge reserves gauges per chain and asset at the head, read from the reserves views when scraped (two
    queries per chain): the ratio is DOMAIN.md's invariant made visible (1 while liabilities equal escrow)."""

    def __init__(self, read_model: Any) -> None:
        from projections.reserve_queries import ReserveQueries

        self._model = read_model
        self._queries = ReserveQueries(read_model)

    def describe(self) -> list[Metric]:
        return []

    def _figures(self) -> list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]:
        return [
            (chain, self._queries.bridged_assets(chain), self._queries.latest_attestations(chain))
            for chain in self._model.chains()
        ]

    def collect(self) -> Iterator[Metric]:
        figures = _read("reserves views", self._figures)
        if figures is None:  # logged by _read
            return
        labels = ["chain_id", "asset"]
        ratio = GaugeMetricFamily(
            "tally_reserves_ratio", "escrow / liabilities of a bridged asset at the head (1: fully backed)",
            labels=labels,
        )
        amounts = {
            name: GaugeMetricFamily(f"tally_reserves_{name}", help_text, labels=labels)
            for name, help_text in (
                ("escrow", "deposited - withdrawn at the head, micro-units"),
                ("liabilities", "balances + pending withdrawals at the head, micro-units"),
                ("pending", "withdrawals waiting for a relayer at the head, micro-units"),
            )
        }
        attested = GaugeMetricFamily(
            "tally_reserves_attested_height", "height of the newest proof-of-reserves attestation", labels=labels
        )
        for chain_id, assets, attestations in figures:
            for row in assets:
                key = [chain_id, row["asset"]]
                if row["liabilities"] > 0:
                    ratio.add_metric(key, row["escrow"] / row["liabilities"])
                for name, family in amounts.items():
                    family.add_metric(key, row[name])
            for row in attestations:
                attested.add_metric([chain_id, row["asset"]], row["height"])
        yield from (ratio, *amounts.values(), attested)


class FinalityCollector(Collector):
    """Head and finality gauges per chain, read from the views when scraped (ReadModel.head: the snapshot and the
    two pointer blocks, kept between scrapes while the embedded store has not changed)."""

    def __init__(self, read_model: Any) -> None:
        self._model = read_model

    def describe(self) -> list[Metric]:
        return []

    def _heads(self) -> list[dict[str, Any]]:
        heads = (self._model.head(chain_id) for chain_id in self._model.chains())
        return [head for head in heads if head is not None]

    def collect(self) -> Iterator[Metric]:
        heads = _read("chain heads", self._heads)
        if heads is None:  # logged by _read
            return
        labels = ["chain_id"]
        head = GaugeMetricFamily("tally_head_height", "height of the canonical head", labels=labels)
        final = GaugeMetricFamily("tally_finalized_height", "height of the newest final block", labels=labels)
        blocks = GaugeMetricFamily(
            "tally_finality_delay_blocks", "head height - newest final height (0: the head is final)", labels=labels
        )
        ms = GaugeMetricFamily(
            "tally_finality_delay_ms", "head block timestamp - newest final block timestamp, ms of block time",
            labels=labels,
        )
        for row in heads:
            key = [row["chain_id"]]
            head.add_metric(key, row["height"])
            final.add_metric(key, row["finalized_height"])
            # A final block is never reverted, so the head never goes below it; max() only guards the gauge.
            blocks.add_metric(key, max(0, row["height"] - row["finalized_height"]))
            finalized = row.get("finalized")
            if finalized is not None:  # its row is written before the pointer (chain_head last): always found
                ms.add_metric(key, max(0, row["timestamp_ms"] - finalized["timestamp_ms"]))
        yield from (head, final, blocks, ms)


class Metrics:
    """One app's metrics. `render()` reads live values: call it in a worker thread."""

    def __init__(self, service: PositionSource, read_model: ProjectionSource, follower: Any = None) -> None:
        self.registry = CollectorRegistry()
        self._commands = Counter(
            "tally_commands", "commands answered at intake", ["kind", "status", "reason"],
            registry=self.registry,
        )
        self._http = Histogram(
            "tally_http_request_duration_seconds", "HTTP request duration, by route",
            ["route", "method", "status"], buckets=HTTP_BUCKETS_S, registry=self.registry,
        )
        self.registry.register(LedgerCollector(service, read_model, follower))
        if hasattr(read_model, "snapshot") and hasattr(read_model, "chains"):  # the views' read model
            self.registry.register(FinalityCollector(read_model))
            self.registry.register(ReservesCollector(read_model))
            self.registry.register(ValidatorCollector(read_model))

    def count_command(self, result: Mapping[str, Any]) -> None:
        self._commands.labels(*command_labels(result)).inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        shown_method = method if method in HTTP_METHODS else OTHER
        self._http.labels(route, shown_method, str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
