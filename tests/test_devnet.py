"""The devnet builders produce what DOMAIN.md accepts; the loop resumes from the ledger with its keys."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pqcrypto
import pytest
from pqcrypto.sign import ml_dsa_65

from schemas.canonical import address_of, block_hash, canonical_bytes, genesis_hash, tx_id, tx_root
from schemas.limits import PARAM_DEFAULTS, PK_BYTES
from writes.devnet import (
    ACCOUNT_FUNDS,
    SEED_FILE,
    Devnet,
    build_block,
    build_chain,
    build_votes,
    derive_keys,
    devnet_genesis,
    header_bytes,
    load_or_create_seed,
    next_block,
    plan_transfers,
    sign_planned,
    voters_for,
)

SEED = bytes(range(32))


def _sig_ok(key: dict[str, str], message: bytes, sig_hex: str) -> bool:
    """pqcrypto, the reference verifier, on an ML-DSA-65 key (the devnet signs with `cryptography`)."""
    assert key["alg"] == "ml-dsa-65"
    try:
        ml_dsa_65.verify(bytes.fromhex(key["pk"]), message, bytes.fromhex(sig_hex))
    except pqcrypto.InvalidSignatureError:
        return False
    return True


def _reference_receipts(plans_txs: list[dict[str, Any]], nonces: dict[str, int], cell: dict[str, int]) -> list[str]:
    """DOMAIN.md's transfer rules for CELL, in order: bad_nonce, then insufficient_funds, else applied."""
    nonce, bal, out = dict(nonces), dict(cell), []
    for tx in plans_txs:
        sender = tx["from"]
        if tx["nonce"] != nonce[sender]:
            out.append("bad_nonce")
        elif bal[sender] < tx["fee"] + tx["amount"]:
            out.append("insufficient_funds")
        else:
            nonce[sender] += 1
            bal[sender] -= tx["fee"] + tx["amount"]
            bal[tx["to"]] += tx["amount"]
            out.append("applied")
    return out


def test_keys_are_deterministic_per_seed() -> None:
    a, b = derive_keys(SEED), derive_keys(SEED)
    assert [k.address for k in a.accounts] == [k.address for k in b.accounts]
    assert [v.key.pk for v in a.validators] == [v.key.pk for v in b.validators]
    other = derive_keys(bytes(32))
    assert a.accounts[0].address != other.accounts[0].address
    assert len({k.address for k in a.accounts}) == 20
    assert len({v.key.pk for v in a.validators}) == 4


def test_genesis_shape() -> None:
    genesis, keys = devnet_genesis(SEED, timestamp_ms=1_700_000_000_000)
    assert set(genesis) == {
        "kind",
        "chain_id",
        "timestamp_ms",
        "params",
        "allocations",
        "validators",
        "relayers",
    }
    assert genesis["kind"] == "genesis" and genesis["chain_id"] == "devnet"
    assert genesis["params"] == PARAM_DEFAULTS
    assert genesis["allocations"] == [
        {"address": k.address, "asset": "CELL", "amount": ACCOUNT_FUNDS} for k in keys.accounts
    ]
    assert len(genesis["validators"]) == 4
    for v, dv in zip(genesis["validators"], keys.validators, strict=True):
        assert set(v) == {"node_id", "operator", "key", "gpu_uuid", "stake"}
        assert v["stake"] >= PARAM_DEFAULTS["min_stake"]
        assert v["key"]["alg"] == "ml-dsa-65" and len(bytes.fromhex(v["key"]["pk"])) == PK_BYTES["ml-dsa-65"]
        assert v["operator"] in {a["address"] for a in genesis["allocations"]}
        assert v["node_id"] == dv.node_id
    assert len({v["gpu_uuid"] for v in genesis["validators"]}) == 4
    # the genesis is plain JSON
    assert canonical_bytes(genesis)


def test_block_header_signature_and_tx_root() -> None:
    keys = derive_keys(SEED)
    addresses = [k.address for k in keys.accounts]
    plans = plan_transfers(random.Random(1), addresses, [0] * 20, [ACCOUNT_FUNDS] * 20, 12)
    txs = sign_planned(keys, "devnet", plans)
    proposer = keys.proposer(5)
    block = build_block(proposer, chain_id="devnet", height=5, parent="ab" * 32, timestamp_ms=10, txs=txs)
    assert set(block) == {
        "kind",
        "chain_id",
        "height",
        "parent",
        "proposer",
        "timestamp_ms",
        "tx_root",
        "txs",
        "sig",
    }
    assert block["proposer"] == proposer.node_id == "devnet-node-1"
    assert block["tx_root"] == tx_root([tx_id(tx) for tx in txs])
    assert _sig_ok(proposer.key.key, header_bytes(block), block["sig"])
    # the signature covers the header only: txs are bound through tx_root
    assert header_bytes(block) == canonical_bytes({k: v for k, v in block.items() if k not in ("txs", "sig")})
    for tx in txs:
        assert set(tx) == {
            "kind",
            "chain_id",
            "signer",
            "key",
            "from",
            "to",
            "asset",
            "amount",
            "fee",
            "nonce",
            "sig",
        }
        assert tx["signer"] == tx["from"] == address_of(tx["key"]["alg"], bytes.fromhex(tx["key"]["pk"]))
        assert _sig_ok(tx["key"], canonical_bytes(tx, drop_sig=True), tx["sig"])
        assert 0 < tx["amount"] < 2**63 and tx["fee"] >= 0


def test_empty_block_has_the_empty_root() -> None:
    keys = derive_keys(SEED)
    block = build_block(keys.proposer(1), chain_id="devnet", height=1, parent="00" * 32, timestamp_ms=0, txs=[])
    assert block["tx_root"] == tx_root([]) and block["txs"] == []


def test_planned_rejections_are_what_the_rules_give() -> None:
    keys = derive_keys(SEED, accounts=5)
    addresses = [k.address for k in keys.accounts]
    nonces, balances = [3, 0, 1, 0, 9], [ACCOUNT_FUNDS, 50, 10**9, 1_001, 0]
    plans = plan_transfers(random.Random(7), addresses, nonces, balances, 400, bad_per_mille=200)
    intents = [p.intent for p in plans]
    assert intents.count("bad_nonce") > 5 and intents.count("insufficient_funds") > 5
    assert intents.count("applied") > 100
    txs = sign_planned(keys, "devnet", plans[:60])  # signing is the slow part: check a prefix end to end
    expected = _reference_receipts(
        txs, dict(zip(addresses, nonces, strict=True)), dict(zip(addresses, balances, strict=True))
    )
    assert expected == intents[:60]
    # and the whole plan, without signatures
    unsigned = [
        {"from": addresses[p.sender], "to": p.to, "amount": p.amount, "fee": p.fee, "nonce": p.nonce} for p in plans
    ]
    assert (
        _reference_receipts(
            unsigned, dict(zip(addresses, nonces, strict=True)), dict(zip(addresses, balances, strict=True))
        )
        == intents
    )
    for p in plans:
        assert p.to != addresses[p.sender]


def test_votes_carry_more_than_two_thirds_of_the_stake() -> None:
    keys = derive_keys(SEED)
    stake = {v.node_id: v.stake for v in keys.validators}
    for height in range(1, 9):
        votes = build_votes(keys, chain_id="devnet", height=height, block_hash="cd" * 32)
        voters = [v["node_id"] for v in votes]
        assert len(set(voters)) == len(voters)
        voting = sum(stake[n] for n in voters)
        assert 3 * voting > 2 * keys.total_stake
        # minimal: without the last voter it would not finalize
        assert 3 * (voting - stake[voters[-1]]) <= 2 * keys.total_stake
        by_node = {v.node_id: v for v in voters_for(keys, height)}
        for vote in votes:
            assert set(vote) == {"kind", "chain_id", "node_id", "height", "block_hash", "sig"}
            assert vote["kind"] == "vote" and vote["height"] == height and vote["block_hash"] == "cd" * 32
            assert _sig_ok(by_node[vote["node_id"]].key.key, canonical_bytes(vote, drop_sig=True), vote["sig"])


def test_seed_is_created_once_and_reused(tmp_path: Path) -> None:
    seed = load_or_create_seed(tmp_path / "d")
    assert len(seed) == 32
    assert (tmp_path / "d" / SEED_FILE).read_text().strip() == seed.hex()
    assert load_or_create_seed(tmp_path / "d") == seed


# ---------------------------------------------------------------- against the real ledger


@pytest.fixture
def service(tmp_path: Path) -> Any:
    service_mod = pytest.importorskip("writes.service")
    from schemas.settings import from_env

    svc = service_mod.LedgerService(from_env(data_dir=tmp_path / "data"))
    yield svc
    svc.close()


def test_ledger_accepts_devnet_blocks_and_votes(service: Any) -> None:
    genesis, keys = devnet_genesis(SEED, timestamp_ms=1_000)
    assert service.submit(genesis)["status"] == "accepted"
    rng = random.Random(3)
    for step in range(1, 4):
        block, plans = next_block(keys, service, rng, chain_id="devnet", now_ms=1_000 + step, txs_per_block=15)
        result = service.submit(block)
        assert result["status"] == "accepted", result
        assert result["height"] == step and result["hash"] == block_hash(block)
        got = [r["reason"] or r["status"] for r in result["receipts"]]
        assert got == [p.intent for p in plans]
        votes = build_votes(keys, chain_id="devnet", height=step, block_hash=result["hash"])
        results = service.submit_many(votes)
        assert all(r["status"] == "accepted" for r in results), results
        assert results[-1]["finalized_height"] == step


def test_devnet_loop_resumes_with_the_same_keys(service: Any, tmp_path: Path) -> None:
    first = Devnet(service, tmp_path / "data")
    first.step()
    first.step()
    head = service.head("devnet")
    assert head is not None and head[0] == 2
    again = Devnet(service, tmp_path / "data")  # a restart: the genesis exists, the seed file gives the keys
    result = again.step()
    assert result["status"] == "accepted" and result["height"] == 3
    assert again.blocks_accepted == 1 and again.errors == 0


def test_offline_chain_links_blocks_and_plans_from_tracked_state() -> None:
    chain = build_chain(SEED, blocks=3, txs_per_block=6, rng=random.Random(5), start_ms=1_000, interval_ms=10)
    genesis, rest = chain.commands[0], chain.commands[1:]
    blocks = [c for c in rest if c["kind"] == "block"]
    assert [b["height"] for b in blocks] == [1, 2, 3]
    assert blocks[0]["parent"] == genesis_hash(genesis)
    assert [b["parent"] for b in blocks[1:]] == [block_hash(b) for b in blocks[:-1]]
    assert [b["timestamp_ms"] for b in blocks] == [1_010, 1_020, 1_030]
    votes = [c for c in rest if c["kind"] == "vote"]
    assert {(v["height"], v["block_hash"]) for v in votes} == {(b["height"], block_hash(b)) for b in blocks}
    assert [len(i) for i in chain.intents] == [len(b["txs"]) for b in blocks]


def test_ledger_accepts_an_offline_chain(service: Any) -> None:
    chain = build_chain(SEED, blocks=4, txs_per_block=12, rng=random.Random(11))
    results = service.submit_many(chain.commands)
    assert all(r["status"] == "accepted" for r in results), [r for r in results if r["status"] != "accepted"]
    receipts = [[r["reason"] or r["status"] for r in res["receipts"]] for res in results if res["kind"] == "block"]
    assert receipts == chain.intents
    assert results[-1]["finalized_height"] == 4


def test_a_lost_seed_is_named_not_hidden(service: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    genesis, _ = devnet_genesis(SEED, timestamp_ms=1_000)  # the chain was made from another seed
    assert service.submit(genesis)["status"] == "accepted"
    devnet = Devnet(service, tmp_path / "other")
    result = devnet.step()
    assert result["status"] == "rejected" and result["reason"] == "bad_signature"
    assert devnet.blocks_rejected == 1
    assert SEED_FILE in caplog.text
