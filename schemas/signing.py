"""Keys, signing and verification as DOMAIN.md defines them.

Signing uses `cryptography` (OpenSSL's ML-DSA, ~10x faster than pqcrypto's signing here); verification
uses pqcrypto, the reference the ledger validates with (`accelerators.verify`). Both follow FIPS 204 with
an empty context, so a signature from one verifies under the other (tests/test_signing.py checks it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa

from schemas.canonical import address_of, canonical_bytes

ALGS = ("ml-dsa-65", "ml-dsa-87")
_PRIVATE = {"ml-dsa-65": mldsa.MLDSA65PrivateKey, "ml-dsa-87": mldsa.MLDSA87PrivateKey}


@dataclass(frozen=True)
class KeyPair:
    alg: str
    private: Any  # cryptography MLDSA65PrivateKey | MLDSA87PrivateKey
    pk: bytes

    @classmethod
    def from_seed(cls, seed: bytes, alg: str = "ml-dsa-65") -> KeyPair:
        """A deterministic key from a 32-byte seed (FIPS 204 xi); any longer seed is hashed down."""
        xi = seed if len(seed) == 32 else hashlib.sha256(seed).digest()
        private = _PRIVATE[alg].from_seed_bytes(xi)
        pk = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(alg, private, pk)

    @classmethod
    def generate(cls, alg: str = "ml-dsa-65") -> KeyPair:
        private = _PRIVATE[alg].generate()
        pk = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(alg, private, pk)

    @property
    def key(self) -> dict[str, str]:
        """The wire form of the public key."""
        return {"alg": self.alg, "pk": self.pk.hex()}

    @property
    def address(self) -> str:
        return address_of(self.alg, self.pk)

    def sign_bytes(self, message: bytes) -> bytes:
        return self.private.sign(message)


def sign(obj: Mapping[str, Any], keypair: KeyPair) -> dict[str, Any]:
    """The object with `sig` set to the hex signature of its canonical bytes (sig excluded)."""
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    return {**unsigned, "sig": keypair.sign_bytes(canonical_bytes(unsigned)).hex()}

