"""Signatures made with `cryptography` verify under pqcrypto, the ledger's reference verifier."""

from __future__ import annotations

import pytest

from accelerators.verify import BatchVerifier, Item, verify_one
from schemas.canonical import canonical_bytes
from schemas.limits import PK_BYTES, SIG_BYTES
from schemas.signing import ALGS, KeyPair, sign

MESSAGE = b'{"chain_id":"tally-test","kind":"vote"}'


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


@pytest.mark.parametrize("alg", ALGS)
def test_cryptography_signature_verifies_under_pqcrypto(alg: str) -> None:
    key = KeyPair.from_seed(b"signing" * 5, alg)
    sig = key.sign_bytes(MESSAGE)
    assert len(key.pk) == PK_BYTES[alg]
    assert len(sig) == SIG_BYTES[alg]
    assert verify_one(alg, key.pk, MESSAGE, sig)


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("where", ["sig_first", "sig_last", "message", "pk"])
def test_a_flipped_byte_fails(alg: str, where: str) -> None:
    key = KeyPair.from_seed(b"signing" * 5, alg)
    sig, message, pk = key.sign_bytes(MESSAGE), MESSAGE, key.pk
    if where == "sig_first":
        sig = flip(sig, 0)
    elif where == "sig_last":
        sig = flip(sig, len(sig) - 1)
    elif where == "message":
        message = flip(message, 3)
    else:
        pk = flip(pk, 100)
    assert not verify_one(alg, pk, message, sig)


@pytest.mark.parametrize("alg", ALGS)
def test_wrong_key_truncated_or_garbage_signatures_fail(alg: str) -> None:
    key = KeyPair.from_seed(b"one", alg)
    other = KeyPair.from_seed(b"two", alg)
    sig = key.sign_bytes(MESSAGE)
    assert not verify_one(alg, other.pk, MESSAGE, sig)
    assert not verify_one(alg, key.pk, MESSAGE, sig[:-1])
    assert not verify_one(alg, key.pk, MESSAGE, b"")
    assert not verify_one(alg, key.pk[:-1], MESSAGE, sig)
    assert not verify_one("ml-dsa-44", key.pk, MESSAGE, sig)


def test_ml_dsa_65_signature_does_not_verify_as_87() -> None:
    key = KeyPair.from_seed(b"one", "ml-dsa-65")
    assert not verify_one("ml-dsa-87", key.pk, MESSAGE, key.sign_bytes(MESSAGE))


def test_from_seed_is_deterministic_and_distinct() -> None:
    assert KeyPair.from_seed(b"a").pk == KeyPair.from_seed(b"a").pk
    assert KeyPair.from_seed(b"a").pk != KeyPair.from_seed(b"b").pk
    assert KeyPair.from_seed(bytes(32)).pk != KeyPair.from_seed(bytes(32), "ml-dsa-87").pk


def test_sign_signs_the_canonical_bytes_without_sig() -> None:
    key = KeyPair.from_seed(b"signer")
    signed = sign({"kind": "vote", "sig": "stale", "height": 2}, key)
    assert set(signed) == {"kind", "height", "sig"}
    message = canonical_bytes({"height": 2, "kind": "vote"})
    assert verify_one(key.alg, key.pk, message, bytes.fromhex(signed["sig"]))
    assert signed["sig"] == signed["sig"].lower()


def _items(count: int) -> list[Item]:
    """`count` items, every third one invalid (a flipped signature byte)."""
    keys = [KeyPair.from_seed(f"pool-{i % 4}".encode(), ALGS[i % 2]) for i in range(count)]
    items: list[Item] = []
    for i, key in enumerate(keys):
        message = f"message {i}".encode()
        sig = key.sign_bytes(message)
        items.append((key.alg, key.pk, message, (flip(sig, 10) if i % 3 == 0 else sig).hex()))
    return items


def test_batch_verifier_inline_matches_verify_one() -> None:
    items = _items(8)
    expected = [i % 3 != 0 for i in range(8)]
    assert BatchVerifier(workers=1).verify(items) == expected
    assert BatchVerifier(workers=1).verify([]) == []


def test_batch_verifier_pool_gives_the_same_results_in_order() -> None:
    items = _items(70)  # above POOL_BATCH_MIN: the pool is used
    inline = BatchVerifier(workers=1).verify(items)
    pool = BatchVerifier(workers=2)
    try:
        assert pool.verify(items) == inline
        assert pool._pool is not None  # the batch really went to the worker processes
        assert pool.verify(items[:5]) == inline[:5]  # below the threshold: inline
    finally:
        pool.close()
    assert inline == [i % 3 != 0 for i in range(70)]
