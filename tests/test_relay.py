"""The relay's Kafka client (streams/relay.py) as installed: what its speed depends on."""

from __future__ import annotations

from kafka.record import util

from streams.relay import PRODUCER_SETTINGS


def test_kafka_python_computes_crc32c_natively() -> None:
    """kafka-python writes a CRC-32C over every record batch the relay sends. Without the crc32c package it falls
    back to pure Python (~12 MB/s here), and that bounded the relay: 177 events/s of devnet blocks (8 MB/s) in
    the `scaled` bench before, over 1,000 after."""
    assert util.crc32c_c is not None, "install crc32c (pyproject.toml): kafka-python would checksum in Python"
    data = bytes(range(256)) * 64
    assert util.calc_crc32c(data) == util.crc32c_py(data)  # the native path answers as the reference does


def test_the_producer_settings_are_explicit() -> None:
    assert PRODUCER_SETTINGS["acks"] == "all"
    assert PRODUCER_SETTINGS["enable_idempotence"] is True
    assert PRODUCER_SETTINGS["max_in_flight_requests_per_connection"] <= 5  # the idempotent producer's order
