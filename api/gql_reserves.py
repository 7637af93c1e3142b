"""Bridge reserves and proof-of-reserves root fields (issue 5), read through projections/reserve_queries.py and
api/proofs.py; merged into the root Query by api/gql_families.py.

- `reserves(asset, atHeight)`: an asset's figures after a height (deposited, withdrawn, pending, escrow,
  liabilities and their ratio); `reserveTransfer(reserveId)`: a deposit's or withdrawal's record and the history
  of its changes (reverted ones marked); `withdrawals(status, first, after)`: withdrawals in request order (the
  queue's order), a Relay connection whose cursor is the (requested height, reserve_id) of the last one seen.
- `proofOfReserves(asset, height)`: the attestation at that height, or the newest one.
- `liabilityProof(asset, address, height, notAfterMs, key, signature)`: the holder's inclusion proof and account
  secret, for a request signed by the account's key (api/proofs.py; docs/proof-of-reserves.md).

Like the core reads, every field takes `chainId`; the head-relative ones take `finality`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError

from api import args
from api.gql_types import BigInt, Finality, PageInfo
from api.proofs import LiabilityProofs, ProofRefused, request_of
from projections.reserve_queries import ReserveQueries
from schemas import limits
from writes import reserves as por

_WITHDRAWAL_CURSOR = re.compile(rf"v1:withdrawal:(0|[1-9][0-9]{{0,18}}):([A-Za-z0-9._:-]{{1,{limits.ID_LEN_MAX}}})")
_CURSOR_CHARS_MAX = 4 * (len("v1:withdrawal::") + 19 + limits.ID_LEN_MAX) // 3 + 4

ChainArg = Annotated[
    str | None, strawberry.argument(description="chain to read; defaults to the ledger's default chain")
]
AssetArg = Annotated[str, strawberry.argument(description="a bridged asset symbol, e.g. USDC")]
FinalityArg = Annotated[
    Finality,
    strawberry.argument(
        description="the head the read is relative to: LATEST (default) the canonical tip, FINALIZED the newest"
        " final block (answers that can no longer change)"
    ),
]


@strawberry.enum(description="What a reserve_id records.")
class ReserveKind(enum.Enum):
    DEPOSIT = strawberry.enum_value("deposit", description="a relayer credited an account (bridge_deposit)")
    WITHDRAWAL = strawberry.enum_value("withdrawal", description="an owner asked to withdraw (withdraw_request)")


@strawberry.enum(description="Where a deposit or withdrawal stands.")
class ReserveStatus(enum.Enum):
    DEPOSITED = strawberry.enum_value("deposited", description="a deposit (final as soon as applied)")
    PENDING = strawberry.enum_value("pending", description="a withdrawal waiting for a relayer")
    CONFIRMED = strawberry.enum_value("confirmed", description="paid out on the external chain")
    REJECTED = strawberry.enum_value("rejected", description="refused by a relayer: the owner was refunded")


@strawberry.enum(description="Withdrawal statuses.")
class WithdrawalStatus(enum.Enum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


@strawberry.type(description="An asset's bridge figures after a block (micro-units).")
class Reserves:
    chain_id: str
    asset: str
    height: int = strawberry.field(description="the height read (at most the head at the finality level)")
    deposited: BigInt
    withdrawn: BigInt
    pending: BigInt = strawberry.field(description="requested withdrawals not yet confirmed or rejected")
    escrow: BigInt = strawberry.field(description="deposited - withdrawn: what the bridge holds externally")
    balances: BigInt = strawberry.field(description="the sum of every account's balance of the asset")
    liabilities: BigInt = strawberry.field(description="balances + pending: what the ledger owes")
    ratio: str | None = strawberry.field(
        description="escrow / liabilities, 6 decimals, truncated; null when nothing is owed"
    )
    pending_withdrawals: int = strawberry.field(description="withdrawals in the queue")


@strawberry.type(description="One change of a reserve record, by the block that made it.")
class ReserveChange:
    height: int
    block_hash: str
    status: ReserveStatus
    external_tx: str
    reason: str
    relayer: str = strawberry.field(description="address of the relayer that acted ('' for a request)")
    reverted: bool = strawberry.field(description="a reorganization took its block off the canonical chain")
    position: BigInt = strawberry.field(description="log position of the block event that made the change")


@strawberry.type(description="A deposit or a withdrawal, by reserve_id.")
class ReserveTransfer:
    chain_id: str
    reserve_id: str
    kind: ReserveKind
    asset: str
    amount: BigInt
    owner: str = strawberry.field(description="the account credited (deposit) or debited (withdrawal)")
    status: ReserveStatus
    external_chain: str = strawberry.field(description="from_chain of a deposit, to_chain of a withdrawal")
    external_address: str = strawberry.field(description="a withdrawal's destination ('' for a deposit)")
    external_tx: str = strawberry.field(description="a deposit's source tx, a confirmation's payout tx")
    reason: str = strawberry.field(description="a rejection's reason")
    relayer: str = strawberry.field(description="the relayer that last acted ('' for a pending withdrawal)")
    created_height: int
    updated_height: int
    history: list[ReserveChange] | None = strawberry.field(
        description="every change, oldest first, reverted ones marked (only from `reserveTransfer`; null in"
        " `withdrawals`)"
    )


@strawberry.type
class WithdrawalEdge:
    cursor: str
    node: ReserveTransfer


@strawberry.type(description="Withdrawals in request order.")
class WithdrawalConnection:
    edges: list[WithdrawalEdge]
    page_info: PageInfo


@strawberry.type(description="A proof-of-reserves attestation (ReservesAttested in the log) of a final height.")
class ProofOfReserves:
    chain_id: str
    asset: str
    height: int
    block_hash: str = strawberry.field(description="the final block attested")
    scheme: str = strawberry.field(description="tally-por-v1 (docs/proof-of-reserves.md)")
    root: str = strawberry.field(description="the sum tree's root hash: what a liability proof leads to")
    total: BigInt = strawberry.field(description="the root's sum: every balance of the asset")
    escrow: BigInt
    pending: BigInt
    liabilities: BigInt = strawberry.field(description="total + pending")
    deposited: BigInt
    withdrawn: BigInt
    ratio: str | None = strawberry.field(description="escrow / liabilities, 6 decimals, truncated")
    leaf_count: int = strawberry.field(description="leaves, padded to a power of two")
    cause: str = strawberry.field(description="schedule (every N final blocks) or request (attest_reserves)")
    position: BigInt


@strawberry.input(description="A public key, as in DOMAIN.md.")
class KeyInput:
    alg: str = strawberry.field(description="ml-dsa-65 or ml-dsa-87")
    pk: str = strawberry.field(description="hex")


@strawberry.type(description="One step up from the leaf: the sibling, on its side.")
class ProofStep:
    side: str = strawberry.field(description="left or right: where the sibling sits")
    hash: str
    sum: BigInt


@strawberry.type(description="An account holder's inclusion proof in an attested sum tree (tally-por-v1).")
class LiabilityProof:
    chain_id: str
    asset: str
    height: int
    block_hash: str
    root: str
    total: BigInt
    leaf_count: int
    address: str
    account_secret: str = strawberry.field(
        description="hex: recomputes the account's blinded id at every attested height (keep it private)"
    )
    blinded_id: str
    balance: BigInt
    path: list[ProofStep]
    document: str = strawberry.field(
        description="the proof as canonical JSON: save it as is and check it with `tally verify-proof`"
    )
    attestation: ProofOfReserves


def withdrawal_cursor(requested_height: int, reserve_id: str) -> str:
    raw = f"v1:withdrawal:{requested_height}:{reserve_id}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_withdrawal_cursor(cursor: str) -> tuple[int, str]:
    problem = args.BadArgument("after", "not a withdrawals cursor (pass `pageInfo.endCursor` of a previous page)")
    if not cursor or len(cursor) > _CURSOR_CHARS_MAX or not re.fullmatch(r"[A-Za-z0-9_-]+", cursor):
        raise problem
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise problem from exc
    match = _WITHDRAWAL_CURSOR.fullmatch(text)
    if match is None or int(match.group(1)) > limits.AMOUNT_MAX:
        raise problem
    return int(match.group(1)), match.group(2)


def _asset(value: str, argument: str = "asset") -> str:
    if not re.fullmatch(r"[A-Z][A-Z0-9]{1,15}", value):
        raise args.BadArgument(argument, f"must be an asset symbol [A-Z][A-Z0-9]{{1,15}}, got {value[:40]!r}")
    return value


def _chain_arg(chain_id: str | None) -> str | None:
    return None if chain_id is None else args.identifier(chain_id, "chainId")


def _reserves_of(row: Mapping[str, Any]) -> Reserves:
    return Reserves(
        chain_id=row["chain_id"], asset=row["asset"], height=row["height"], deposited=row["deposited"],
        withdrawn=row["withdrawn"], pending=row["pending"], escrow=row["escrow"], balances=row["balances"],
        liabilities=row["liabilities"], ratio=por.ratio(row["escrow"], row["liabilities"]),
        pending_withdrawals=row["pending_count"] or 0,
    )


def _transfer_of(row: Mapping[str, Any]) -> ReserveTransfer:
    history = row.get("history")
    return ReserveTransfer(
        chain_id=row["chain_id"], reserve_id=row["reserve_id"], kind=ReserveKind(row["kind"]), asset=row["asset"],
        amount=row["amount"], owner=row["owner"], status=ReserveStatus(row["status"]),
        external_chain=row["external_chain"], external_address=row["external_address"],
        external_tx=row["external_tx"], reason=row["reason"], relayer=row["relayer"],
        created_height=row["created_height"], updated_height=row["updated_height"],
        history=None if history is None else [
            ReserveChange(height=h["height"], block_hash=h["block_hash"], status=ReserveStatus(h["status"]),
                          external_tx=h["external_tx"], reason=h["reason"], relayer=h["relayer"],
                          reverted=h["reverted"], position=h["position"])
            for h in history
        ],
    )


def _attestation_of(row: Mapping[str, Any]) -> ProofOfReserves:
    return ProofOfReserves(**{k: row[k] for k in (
        "chain_id", "asset", "height", "block_hash", "scheme", "root", "total", "escrow", "pending", "liabilities",
        "deposited", "withdrawn", "ratio", "leaf_count", "cause", "position",
    )})


def _proof_of(proof: Mapping[str, Any]) -> LiabilityProof:
    document = {k: v for k, v in proof.items() if k not in ("block_hash", "attestation")}
    leaf = document["leaf"]
    return LiabilityProof(
        chain_id=document["chain_id"], asset=document["asset"], height=document["height"],
        block_hash=proof["block_hash"], root=document["root"], total=document["total"],
        leaf_count=document["leaf_count"], address=leaf["address"], account_secret=leaf["account_secret"],
        blinded_id=leaf["blinded_id"], balance=leaf["balance"],
        path=[ProofStep(side=s["side"], hash=s["hash"], sum=s["sum"]) for s in document["path"]],
        document=json.dumps(document, sort_keys=True, separators=(",", ":")),
        attestation=_attestation_of(proof["attestation"]),
    )


def _queries(reads: Any) -> ReserveQueries:
    """The reserves reads over the API's read model (a thin wrapper: it keeps nothing of its own)."""
    return ReserveQueries(reads.model)


@strawberry.type
class Query:
    @strawberry.field(
        description="A bridged asset's figures after `atHeight` (default: the head at `finality`); null when the"
        " asset is not bridged there."
    )
    async def reserves(
        self,
        info: strawberry.Info,
        asset: AssetArg,
        at_height: Annotated[int | None, strawberry.argument(description="default: the head")] = None,
        finality: FinalityArg = Finality.LATEST,
        chain_id: ChainArg = None,
    ) -> Reserves | None:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        symbol, at = _asset(asset), args.height(at_height, "atHeight")

        def read() -> Reserves | None:
            row = _queries(reads).reserves(reads.chain(chain_arg), symbol, at, finality.value)
            return None if row is None else _reserves_of(row)

        return await reads.run(read)  # type: ignore[no-any-return]

    @strawberry.field(description="A deposit or withdrawal by reserve_id, with every change of it; null if none.")
    async def reserve_transfer(
        self, info: strawberry.Info, reserve_id: str, finality: FinalityArg = Finality.LATEST,
        chain_id: ChainArg = None,
    ) -> ReserveTransfer | None:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        rid = args.identifier(reserve_id, "reserveId")

        def read() -> ReserveTransfer | None:
            row = _queries(reads).reserve(reads.chain(chain_arg), rid, finality=finality.value)
            return None if row is None else _transfer_of(row)

        return await reads.run(read)  # type: ignore[no-any-return]

    @strawberry.field(
        description="Withdrawals in request order (requested height, then reserve_id: the queue's order);"
        " `status` filters (PENDING is the queue)."
    )
    async def withdrawals(
        self,
        info: strawberry.Info,
        status: WithdrawalStatus | None = None,
        first: int | None = None,
        after: str | None = None,
        asset: str | None = None,
        finality: FinalityArg = Finality.LATEST,
        chain_id: ChainArg = None,
    ) -> WithdrawalConnection:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        size = args.page_size(first)
        key = None if after is None else decode_withdrawal_cursor(after)
        symbol = None if asset is None else _asset(asset)
        wanted = None if status is None else status.value

        def read() -> list[dict[str, Any]]:
            return _queries(reads).withdrawals(reads.chain(chain_arg), wanted, size + 1, key, symbol, finality.value)

        rows = await reads.run(read)
        shown = rows[:size]
        edges = [WithdrawalEdge(cursor=withdrawal_cursor(r["created_height"], r["reserve_id"]), node=_transfer_of(r))
                 for r in shown]
        return WithdrawalConnection(edges=edges, page_info=PageInfo(
            has_next_page=len(rows) > size, end_cursor=edges[-1].cursor if edges else None,
        ))

    @strawberry.field(description="The attestation of `asset` at `height`, or the newest one; null when none.")
    async def proof_of_reserves(
        self, info: strawberry.Info, asset: AssetArg, height: int | None = None, chain_id: ChainArg = None,
    ) -> ProofOfReserves | None:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        symbol, at = _asset(asset), args.height(height, "height")

        def read() -> ProofOfReserves | None:
            row = _queries(reads).attestation(reads.chain(chain_arg), symbol, at)
            return None if row is None else _attestation_of(row)

        return await reads.run(read)  # type: ignore[no-any-return]

    @strawberry.field(
        description="An account holder's inclusion proof in the attested tree at `height` (default: the newest"
        " attestation) and its account secret. `signature`: hex ML-DSA signature by `key` (whose address is"
        " `address`) of the canonical JSON of {kind: 'liability_proof_request', chain_id, address, asset, height"
        " (null for the newest), not_after_ms, key} (docs/proof-of-reserves.md)."
    )
    async def liability_proof(
        self,
        info: strawberry.Info,
        asset: AssetArg,
        address: str,
        not_after_ms: Annotated[BigInt, strawberry.argument(description="the request is void after this time")],
        key: KeyInput,
        signature: str,
        height: int | None = None,
        chain_id: ChainArg = None,
    ) -> LiabilityProof:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        symbol, who, at = _asset(asset), args.address(address), args.height(height, "height")
        proofs: LiabilityProofs | None = getattr(reads, "proofs", None)

        def read() -> LiabilityProof:
            if proofs is None:
                raise ProofRefused("PROOFS_UNAVAILABLE", "this server does not serve liability proofs")
            request = request_of(chain_id=reads.chain(chain_arg), address=who, asset=symbol, height=at,
                                 not_after_ms=int(not_after_ms), key={"alg": key.alg, "pk": key.pk})
            return _proof_of(proofs.proof(request, signature))

        try:
            return await reads.run(read)  # type: ignore[no-any-return]
        except ProofRefused as refused:
            extensions = {"code": refused.code, **({"argument": refused.argument} if refused.argument else {})}
            raise GraphQLError(refused.message, extensions=extensions) from refused
