"""The devnet's tx pool (writes/txpool.py) and its HTTP face `POST /v1/txs` (api/intake.py: TxIntake): txs checked
with the ledger's own code, queued once, bounded, taken oldest first; 503 without a devnet or when full."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_api_client import Client

from api import create_app
from schemas import build
from schemas.settings import Settings
from schemas.signing import KeyPair
from tests.chain import ALICE, BOB, CAROL
from writes.txpool import PoolFull, TxPool, check_tx

CHAIN = "devnet"
URL = "/v1/txs"


def transfer(nonce: int = 0, sender: KeyPair = ALICE, chain_id: str = CHAIN, **change: Any) -> dict[str, Any]:
    tx = build.transfer(chain_id, sender, BOB.address, 5, nonce=nonce, fee=1)
    return {**tx, **change}


def test_a_good_tx_is_queued_once_and_taken_oldest_first() -> None:
    pool = TxPool(CHAIN, txs_max=10)
    a, b, c = transfer(0), transfer(1), transfer(0, CAROL)  # CAROL signs with ML-DSA-87
    first = pool.offer([a, b])
    assert [r["status"] for r in first] == ["queued", "queued"]
    assert [r["tx_id"] for r in first] == [check_tx(a, 0, CHAIN), check_tx(b, 0, CHAIN)]
    again = pool.offer([b, c])
    assert [(r["status"], r["duplicate"]) for r in again] == [("queued", True), ("queued", False)]
    assert len(pool) == 3
    assert pool.take(2) == [a, b] and pool.take(5) == [c] and pool.take(5) == []


@pytest.mark.parametrize(
    ("change", "reason", "words"),
    [
        ({"nonce": -1}, "malformed_tx", "tx 0: nonce must be between 0 and 2**63-1"),
        ({"amount": 0}, "malformed_tx", "tx 0: amount must be between 1"),
        ({"to": "0xABC"}, "malformed_tx", "tx 0: to must be an address"),
        ({"extra": 1}, "malformed_tx", "tx 0: unknown field(s) extra"),
        ({"chain_id": "other"}, "malformed_tx", "tx 0: chain_id 'other' differs from the block's 'devnet'"),
        ({"kind": "mint"}, "malformed_tx", "tx 0: unknown tx kind 'mint'"),
        ({"signer": BOB.address, "from": BOB.address}, "signer_mismatch", "is not the address of key"),
        ({"fee": 2}, "bad_tx_signature", "tx 0: sig does not verify under key"),
    ],
)
def test_a_bad_tx_is_refused_naming_what_is_wrong(change: dict[str, Any], reason: str, words: str) -> None:
    pool = TxPool(CHAIN)
    [result] = pool.offer([transfer(**change)])
    assert result["status"] == "rejected" and result["reason"] == reason, result
    assert words in result["message"]
    assert len(pool) == 0


def test_validator_txs_pass_the_same_checks() -> None:
    pool = TxPool(CHAIN)
    votes = build.evidence(CHAIN, "node-x", BOB, 3, ("aa" * 32, "bb" * 32))
    txs = [
        build.enroll(CHAIN, ALICE, "node-x", "GPU-X", 20_000_000, BOB, nonce=0),
        build.unenroll(CHAIN, ALICE, "node-x", nonce=1),
        build.slash(CHAIN, CAROL, "node-x", votes, nonce=0),
        {**build.slash(CHAIN, CAROL, "node-x", votes[:1], nonce=0)},
    ]
    results = pool.offer(txs)
    assert [r["status"] for r in results] == ["queued", "queued", "queued", "rejected"]
    assert results[3]["message"] == "tx 3: evidence must be a list of two votes"


def test_a_full_pool_refuses_the_whole_offer() -> None:
    pool = TxPool(CHAIN, txs_max=2)
    queued = transfer(0)  # signing is randomized (hedged ML-DSA): every build is another tx
    pool.offer([queued])
    with pytest.raises(PoolFull, match="holds 1 txs and its limit is 2"):
        pool.offer([transfer(1), transfer(2)])
    assert len(pool) == 1
    # a tx already queued takes no room; a refused one neither
    assert [r["status"] for r in pool.offer([queued, transfer(nonce=-1), transfer(1)])] == [
        "queued", "rejected", "queued",
    ]
    assert len(pool) == 2


# ---------------------------------------------------------------- POST /v1/txs


class NoReads:
    def position(self) -> int:
        return 0


class NoService:
    def submit(self, obj: Any) -> dict[str, Any]:
        raise AssertionError("txs never reach the ledger on their own")

    def submit_many(self, objs: list[Any]) -> list[dict[str, Any]]:
        raise AssertionError("txs never reach the ledger on their own")

    def max_position(self) -> int:
        return 0


def client(pool: TxPool | None, bytes_max: int = 1 << 20) -> Client:
    settings = Settings().with_(request_bytes_max=bytes_max)
    return Client(create_app(NoReads(), NoService(), settings=settings, pool=pool))  # type: ignore[arg-type]


def test_post_one_tx_answers_its_tx_id() -> None:
    pool = TxPool(CHAIN)
    tx = transfer()
    response = client(pool).post(URL, json=tx)
    assert response.status_code == 200
    assert response.json() == {"status": "queued", "kind": "transfer", "tx_id": check_tx(tx, 0, CHAIN),
                               "duplicate": False}
    assert pool.take(1) == [tx]


def test_post_an_array_answers_each_tx_in_place() -> None:
    pool = TxPool(CHAIN)
    txs = [transfer(0), transfer(1, amount=0), "nope", transfer(2)]
    response = client(pool).post(URL, json=txs)
    assert response.status_code == 200
    answers = response.json()
    assert [(a["index"], a["status"]) for a in answers] == [(0, "queued"), (1, "rejected"), (2, "rejected"),
                                                            (3, "queued")]
    assert answers[1]["message"].startswith("tx 1: amount") and answers[1]["kind"] == "transfer"
    assert answers[2] == {"status": "rejected", "kind": None, "reason": "malformed_tx",
                          "message": "tx 2: tx must be an object", "index": 2}
    assert len(pool) == 2


def test_a_repeated_key_refuses_only_its_tx() -> None:
    pool = TxPool(CHAIN)
    good = json.dumps(transfer(0))
    body = f'[{good}, {{"kind": "transfer", "kind": "transfer"}}]'
    answers = client(pool).post(URL, content=body, headers={"content-type": "application/json"}).json()
    assert [a["status"] for a in answers] == ["queued", "rejected"]
    assert answers[1]["reason"] == "malformed_tx" and answers[1]["message"].startswith("tx 1: ")
    assert "kind" in answers[1]["message"]


def test_without_a_devnet_the_answer_is_503_saying_where_txs_go() -> None:
    response = client(None).post(URL, json=transfer())
    assert response.status_code == 503
    body = response.json()
    assert body["reason"] == "no_block_producer"
    assert "inside a block" in body["message"] and "--no-devnet" in body["message"]


def test_a_full_pool_answers_503_and_queues_nothing() -> None:
    pool = TxPool(CHAIN, txs_max=1)
    api = client(pool)
    assert api.post(URL, json=transfer(0)).status_code == 200
    response = api.post(URL, json=[transfer(1)])
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["reason"] == "pool_full" and "limit is 1" in response.json()["message"]
    assert len(pool) == 1


def test_bodies_that_are_no_txs_are_400_and_oversized_ones_413() -> None:
    pool = TxPool(CHAIN, txs_max=2)
    api = client(pool, bytes_max=20_000)
    assert api.post(URL, content=b"{nope").status_code == 400
    assert api.post(URL, json=7).json()["reason"] == "malformed_command"
    too_many = api.post(URL, json=[{}, {}, {}])
    assert too_many.status_code == 413 and "at most 2" in too_many.json()["message"]
    assert api.post(URL, json=[transfer(0), transfer(1), transfer(2)]).status_code == 413  # > 20,000 bytes
