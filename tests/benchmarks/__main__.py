"""`python -m tests.benchmarks [--only NAME] [--out FILE]`: run benchmarks, print JSON lines, write a JSON file."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from tests.benchmarks import accelerators, account, compliance, ingest, projection, reorg, reserves, scaled

BENCHES: dict[str, Callable[[], dict[str, Any]]] = {
    "ingest": lambda: ingest.ingest_rate(blocks_n=8, txs_per_block=1000),
    "projection_devnet_blocks": lambda: projection.projection_rate(blocks=2000, txs_per_block=20, votes_per_block=3),
    "projection_small_events": lambda: projection.projection_rate(blocks=10000, txs_per_block=0, votes_per_block=3),
    "graphql_account": lambda: account.account_latency(accounts=100_000, queries=1_000),
    "accelerators": accelerators.accelerator_rates,
    "reorg": lambda: reorg.reorg_cost(depths=(1, 10, 100), txs_per_block=1000),
    "compliance": compliance.compliance_rates,
    "reserves": lambda: reserves.reserves_rates(accounts=1_000_000),
    "scaled": scaled.scaled_rates,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks")
    parser.add_argument("--only", action="append", choices=sorted(BENCHES), help="run only these")
    parser.add_argument("--out", default="bench-results.json")
    args = parser.parse_args(argv)
    results = []
    for name in args.only or BENCHES:
        started = time.time()
        result = BENCHES[name]()
        result["wall_s"] = round(time.time() - started, 2)
        print(json.dumps(result), flush=True)
        results.append(result)
    report = {
        "command": "make bench",
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": _cpus()},
        "results": results,
    }
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2)
    return 0


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
