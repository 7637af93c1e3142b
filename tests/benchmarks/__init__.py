"""Benchmarks run by `make bench` (never by `make test`): machine-readable JSON, ratios against baselines
measured in the same run."""
