"""Builders of signed commands in the wire format of DOMAIN.md: the devnet, the CLI and the tests all
build payloads with this code, and the ledger validates them with the same canonical bytes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.canonical import tx_id, tx_root
from schemas.signing import KeyPair, sign


def genesis(
    chain_id: str,
    timestamp_ms: int,
    *,
    allocations: Sequence[tuple[str, int]] = (),
    validators: Sequence[tuple[str, str, KeyPair, str, int]] = (),
    relayers: Sequence[tuple[str, KeyPair]] = (),
    params: dict[str, int] | None = None,
) -> dict[str, Any]:
    """validators: (node_id, operator address, validator key, gpu_uuid, stake)."""
    return {
        "kind": "genesis", "chain_id": chain_id, "timestamp_ms": timestamp_ms, "params": dict(params or {}),
        "allocations": [{"address": a, "asset": "CELL", "amount": n} for a, n in allocations],
        "validators": [
            {"node_id": n, "operator": op, "key": k.key, "gpu_uuid": g, "stake": s} for n, op, k, g, s in validators
        ],
        "relayers": [{"relayer_id": r, "key": k.key} for r, k in relayers],
    }


def transfer(
    chain_id: str, sender: KeyPair, to: str, amount: int, *, nonce: int, fee: int = 0, asset: str = "CELL"
) -> dict[str, Any]:
    tx = {
        "kind": "transfer", "chain_id": chain_id, "signer": sender.address, "key": sender.key,
        "from": sender.address, "to": to, "asset": asset, "amount": amount, "fee": fee, "nonce": nonce,
    }
    return sign(tx, sender)


def block(
    chain_id: str, height: int, parent: str, proposer: str, proposer_key: KeyPair, timestamp_ms: int,
    txs: Sequence[dict[str, Any]] = (), *, root: str | None = None,
) -> dict[str, Any]:
    """A block whose header is signed by the proposer's validator key; `root` overrides tx_root."""
    header = {
        "kind": "block", "chain_id": chain_id, "height": height, "parent": parent, "proposer": proposer,
        "timestamp_ms": timestamp_ms, "tx_root": root if root is not None else tx_root([tx_id(t) for t in txs]),
    }
    return {**sign(header, proposer_key), "txs": list(txs)}


def vote(chain_id: str, node_id: str, key: KeyPair, height: int, block_hash: str) -> dict[str, Any]:
    return sign(
        {"kind": "vote", "chain_id": chain_id, "node_id": node_id, "height": height, "block_hash": block_hash}, key
    )


def enroll(
    chain_id: str, operator: KeyPair, node_id: str, gpu_uuid: str, stake: int, validator_key: KeyPair, *, nonce: int
) -> dict[str, Any]:
    """The operator bonds `stake` CELL for a new validator signing with `validator_key`."""
    tx = {
        "kind": "enroll", "chain_id": chain_id, "signer": operator.address, "key": operator.key,
        "operator": operator.address, "node_id": node_id, "gpu_uuid": gpu_uuid, "stake": stake,
        "validator_key": validator_key.key, "nonce": nonce,
    }
    return sign(tx, operator)


def unenroll(chain_id: str, operator: KeyPair, node_id: str, *, nonce: int) -> dict[str, Any]:
    tx = {
        "kind": "unenroll", "chain_id": chain_id, "signer": operator.address, "key": operator.key,
        "operator": operator.address, "node_id": node_id, "nonce": nonce,
    }
    return sign(tx, operator)


def slash(
    chain_id: str, reporter: KeyPair, node_id: str, evidence: Sequence[dict[str, Any]], *, nonce: int
) -> dict[str, Any]:
    """A report of two votes by `node_id` (see `evidence`)."""
    tx = {
        "kind": "slash", "chain_id": chain_id, "signer": reporter.address, "key": reporter.key,
        "reporter": reporter.address, "node_id": node_id, "evidence": [dict(v) for v in evidence], "nonce": nonce,
    }
    return sign(tx, reporter)


def evidence(
    chain_id: str, node_id: str, key: KeyPair, height: int, block_hashes: tuple[str, str]
) -> list[dict[str, Any]]:
    """Two votes by one validator at one height for two block hashes: what a slash carries."""
    return [vote(chain_id, node_id, key, height, h) for h in block_hashes]


def bridge_deposit(
    chain_id: str, relayer: KeyPair, reserve_id: str, asset: str, to: str, amount: int, *,
    from_chain: str = "ethereum", external_tx: str = "0xexternal",
) -> dict[str, Any]:
    """A relayer credits `to` with `amount` of a bridged asset locked on `from_chain`."""
    tx = {
        "kind": "bridge_deposit", "chain_id": chain_id, "signer": relayer.address, "key": relayer.key,
        "relayer": relayer.address, "reserve_id": reserve_id, "asset": asset, "to": to, "amount": amount,
        "from_chain": from_chain, "external_tx": external_tx,
    }
    return sign(tx, relayer)


def withdraw_request(
    chain_id: str, owner: KeyPair, reserve_id: str, asset: str, amount: int, *, nonce: int,
    to_chain: str = "ethereum", external_address: str = "0xdestination",
) -> dict[str, Any]:
    tx = {
        "kind": "withdraw_request", "chain_id": chain_id, "signer": owner.address, "key": owner.key,
        "owner": owner.address, "reserve_id": reserve_id, "asset": asset, "amount": amount, "to_chain": to_chain,
        "external_address": external_address, "nonce": nonce,
    }
    return sign(tx, owner)


def withdraw_confirm(chain_id: str, relayer: KeyPair, reserve_id: str, external_tx: str = "0xpayout") -> dict[str, Any]:
    tx = {
        "kind": "withdraw_confirm", "chain_id": chain_id, "signer": relayer.address, "key": relayer.key,
        "relayer": relayer.address, "reserve_id": reserve_id, "external_tx": external_tx,
    }
    return sign(tx, relayer)


def withdraw_reject(chain_id: str, relayer: KeyPair, reserve_id: str, reason: str = "refused") -> dict[str, Any]:
    tx = {
        "kind": "withdraw_reject", "chain_id": chain_id, "signer": relayer.address, "key": relayer.key,
        "relayer": relayer.address, "reserve_id": reserve_id, "reason": reason,
    }
    return sign(tx, relayer)
