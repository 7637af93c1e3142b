"""Liability proofs for account holders: a request signed by the account's key, a proof rebuilt from the views.

**The request** (docs/proof-of-reserves.md) is the canonical JSON of

    {"kind": "liability_proof_request", "chain_id", "address", "asset", "height": int | null,
     "not_after_ms": int, "key": {"alg", "pk"}}

signed with ML-DSA (empty context) by `key`, whose address must be `address`: the ledger's own signature rule
(DOMAIN.md, canonical bytes), checked with the ledger's own code (schemas/commands.py for the key,
accelerators/verify.py for the signature). `not_after_ms` bounds a replay of an intercepted request: it must not
have passed, and may be at most REQUEST_TTL_MS_MAX ahead. `height` null asks for the newest attestation.

**The proof** is that of the attestation at `height` (ReservesAttested, in the log): the balances of every holder
of the asset at that height are read from the views, the tree is rebuilt with writes/reserves.build_tree and the
ledger's blinding secret, and its root and total must be the attested ones, or the proof is refused loudly (an
error in the log, ROOT_MISMATCH to the caller): a proof that does not lead to the published root is worse than
none. The answer carries the account secret, so the holder can recompute its blinded id at every attested height.

A tree of 1M holders takes seconds to rebuild (in a worker process: api/proof_trees.py), so the trees of the
latest attestations are kept, compactly (sorted leaf ids and each level's hashes and sums, ~110 bytes a leaf), up
to PROOF_CACHE_LEAVES_MAX leaves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from accelerators.verify import verify_one
from api import proof_format
from api.proof_trees import CompactTree, TreeBuilder
from projections.queries import ReadModel
from projections.reserve_queries import ReserveQueries
from schemas.canonical import address_of, canonical_bytes
from schemas.commands import Checker
from schemas.reasons import Rejection
from writes import reserves

log = logging.getLogger(__name__)

REQUEST_KIND = "liability_proof_request"
REQUEST_FIELDS = frozenset({"kind", "chain_id", "address", "asset", "height", "not_after_ms", "key"})
REQUEST_TTL_MS_MAX = 300_000  # a signed request is good for at most 5 minutes
PROOF_CACHE_LEAVES_MAX = 2**22  # about 450 MB of trees: the latest attestations of a few large assets


class ProofRefused(Exception):
    """A request answered with no proof: `code` (BAD_REQUEST, BAD_SIGNATURE, REQUEST_EXPIRED, NO_ATTESTATION,
    NOT_IN_TREE, PROOFS_UNAVAILABLE, ROOT_MISMATCH) and a message saying why."""

    def __init__(self, code: str, message: str, argument: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.argument = argument


def request_of(
    *, chain_id: str, address: str, asset: str, height: int | None, not_after_ms: int, key: Mapping[str, Any]
) -> dict[str, Any]:
    """The object a holder signs (then adds `sig`)."""
    return {
        "kind": REQUEST_KIND, "chain_id": chain_id, "address": address, "asset": asset, "height": height,
        "not_after_ms": not_after_ms, "key": dict(key),
    }


def check_request(request: Mapping[str, Any], signature: str, now_ms: int) -> None:
    """Raises ProofRefused unless `signature` is the address's key's signature of the request, in time."""
    if set(request) != REQUEST_FIELDS or request["kind"] != REQUEST_KIND:
        raise ProofRefused("BAD_REQUEST", f"a request holds exactly {', '.join(sorted(REQUEST_FIELDS))}")
    c = Checker("bad_request", "liability_proof_request")
    try:
        c.ident(request["chain_id"], "chain_id")
        c.address(request["address"], "address")
        c.asset(request["asset"], "asset")
        if request["height"] is not None:
            c.int_(request["height"], "height")
        c.int_(request["not_after_ms"], "not_after_ms")
        alg, pk = c.key(request["key"], "key")
    except Rejection as exc:
        raise ProofRefused("BAD_REQUEST", exc.message) from exc
    try:
        sig = bytes.fromhex(Checker("bad_request", "signature").hex_(signature, "signature"))
    except Rejection as exc:
        raise ProofRefused("BAD_REQUEST", exc.message, "signature") from exc
    if address_of(alg, pk) != request["address"]:
        raise ProofRefused("BAD_REQUEST", f"key: its address is {address_of(alg, pk)}, not {request['address']}",
                           "key")
    deadline = request["not_after_ms"]
    if deadline < now_ms:
        raise ProofRefused("REQUEST_EXPIRED", f"notAfterMs: the request expired at {deadline} (now {now_ms})",
                           "notAfterMs")
    if deadline > now_ms + REQUEST_TTL_MS_MAX:
        raise ProofRefused("BAD_REQUEST", f"notAfterMs: at most {REQUEST_TTL_MS_MAX} ms ahead of now ({now_ms})",
                           "notAfterMs")
    if not verify_one(alg, pk, canonical_bytes(request), sig):
        raise ProofRefused("BAD_SIGNATURE", "signature: it does not verify under key for the canonical JSON of the"
                           " request (docs/proof-of-reserves.md)", "signature")


class LiabilityProofs:
    """Proofs for signed requests, from the reserves views and the ledger's blinding secret (None: refused)."""

    def __init__(
        self, queries: ReserveQueries, secret: bytes | None, *, now_ms: Callable[[], int] | None = None,
        cache_leaves_max: int = PROOF_CACHE_LEAVES_MAX, builder: TreeBuilder | None = None,
    ) -> None:
        self.queries = queries
        self.builder = builder or TreeBuilder()
        self._secret = secret
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))
        self._cache: OrderedDict[tuple[str, str, int, str], CompactTree] = OrderedDict()
        self._cache_leaves_max = cache_leaves_max
        self._lock = threading.Lock()  # one build at a time: a second request for the same tree waits for it

    def proof(self, request: Mapping[str, Any], signature: str) -> dict[str, Any]:
        """The proof document (api/proof_format.py) for a signed request. Blocking; raises ProofRefused."""
        check_request(request, signature, self._now_ms())
        if self._secret is None:
            raise ProofRefused("PROOFS_UNAVAILABLE", "this server has no proof-of-reserves secret")
        chain_id, asset, height, address = request["chain_id"], request["asset"], request["height"], request["address"]
        attested = self.queries.attestation(chain_id, asset, height)
        if attested is None:
            at = "at any height" if height is None else f"at height {height}"
            raise ProofRefused("NO_ATTESTATION", f"no attestation of {asset} {at} on {chain_id}")
        tree = self.tree(attested)
        secret = reserves.account_secret(self._secret, chain_id, address)
        blinded = reserves.blinded_id(secret, chain_id, asset, attested["height"], address)
        index = tree.find(blinded)
        if index is None:
            raise ProofRefused("NOT_IN_TREE", f"{address} held no {asset} at height {attested['height']}: no leaf")
        document = proof_format.document(
            chain_id=chain_id, asset=asset, height=attested["height"], root=attested["root"],
            total=attested["total"], leaf_count=tree.leaves, address=address, account_secret=secret,
            blinded_id=blinded, balance=int(tree.sums[0][index]), path=tree.path(index),
        )
        # Checked again as the holder will check it (STYLE 3): a proof that fails here is never handed out.
        proof_format.verify(document, attested["root"])
        return {**document, "block_hash": attested["block_hash"], "attestation": attested}

    def tree(self, attested: Mapping[str, Any]) -> CompactTree:
        """The attested tree, rebuilt from the views (or kept from before); ROOT_MISMATCH when it differs."""
        key = (attested["chain_id"], attested["asset"], int(attested["height"]), attested["root"])
        with self._lock:
            kept = self._cache.get(key)
            if kept is not None:
                self._cache.move_to_end(key)
                return kept
            tree = self._rebuild(attested)
            self._cache[key] = tree
            while sum(t.leaves for t in self._cache.values()) > self._cache_leaves_max and len(self._cache) > 1:
                self._cache.popitem(last=False)
            return tree

    def _rebuild(self, attested: Mapping[str, Any]) -> CompactTree:
        assert self._secret is not None
        chain_id, asset, height = attested["chain_id"], attested["asset"], int(attested["height"])
        _, holdings = self.queries.holdings(chain_id, asset, height)
        built = self.builder.build(self._secret, chain_id, asset, height, holdings)
        root, total = built.root
        if root.hex() != attested["root"] or total != attested["total"] or built.leaves != attested["leaf_count"]:
            log.error(
                "proof of reserves: the tree rebuilt from the views for %s %s at height %d has root %s, total %d,"
                " %d leaves; the attestation says root %s, total %d, %d leaves. Refusing proofs for it.",
                chain_id, asset, height, root.hex(), total, built.leaves, attested["root"], attested["total"],
                attested["leaf_count"],
            )
            raise ProofRefused(
                "ROOT_MISMATCH", f"the balances of {asset} at height {height} in the views do not give the attested"
                f" root {attested['root']} (they give {root.hex()}): no proof is served for it; the operator is told",
            )
        return built

    def close(self) -> None:
        """Stops the tree builder's worker process, if one was started."""
        self.builder.close()


def liability_proofs(read_model: Any, service: Any) -> LiabilityProofs | None:
    """The proof service of an app (api/app.py): None where there is nothing to build proofs from (a stand-in read
    model without the views, or a service without the reserves secret)."""
    attestor = getattr(service, "attestor", None)
    if not isinstance(read_model, ReadModel) or attestor is None:
        return None
    return LiabilityProofs(ReserveQueries(read_model), attestor.secret)
