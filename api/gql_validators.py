"""Validator root fields (issue 4): `validator(nodeId, atHeight)`, `validators(phase, first, after)`,
`slashReceipt(txId)`, `slashes(nodeId, first, after)` and `validatorTotals(atHeight)`, read through
projections/validator_queries.py. Merged into the root Query by api/gql_families.py.

Like the core reads, every field takes `chainId` (default: the default chain) and the head-relative ones take
`finality` (LATEST, the canonical tip, or FINALIZED). `validators` pages in node_id order with the node_id as the
cursor: a node_id is never reused, so a walk meets every validator that exists throughout it exactly once, however
many enroll, unbond or are released between its pages. `slashes` pages newest first by (height, index).
`slashReceipt` follows DOMAIN.md's receipt ranking (the canonical applied one, else the latest canonical rejected
one, else the most recently reverted one); without `chainId` it searches every chain, as `receipt` does.

A validator's public key is large (about 4 KB of hex): it is read only when a query selects `key`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import strawberry

from api import args
from api.gql_types import BigInt, Finality, PageInfo
from projections.validator_queries import HISTORY_ENTRIES_MAX, ValidatorQueries
from schemas import limits

_VALIDATOR_CURSOR = re.compile(rf"v1:validator:([A-Za-z0-9._:-]{{1,{limits.ID_LEN_MAX}}})")
_SLASH_CURSOR = re.compile(r"v1:slash:(0|[1-9][0-9]{0,18}):(0|[1-9][0-9]{0,9})")
_CURSOR_CHARS_MAX = 4 * (len("v1:validator:") + limits.ID_LEN_MAX) // 3 + 4
_TX_INDEX_MAX = 2**32 - 1  # tx indexes are UInt32 in the views

ChainArg = Annotated[
    str | None, strawberry.argument(description="chain to read; defaults to the ledger's default chain")
]
FirstArg = Annotated[
    int | None,
    strawberry.argument(description=f"page size, 1..{limits.PAGE_SIZE_MAX} (default {limits.PAGE_SIZE_DEFAULT})"),
]
AfterArg = Annotated[str | None, strawberry.argument(description="`pageInfo.endCursor` of the previous page")]
FinalityArg = Annotated[
    Finality,
    strawberry.argument(
        description="the head the read is relative to: LATEST (default) the canonical tip, FINALIZED the newest"
        " final block (answers that can no longer change)"
    ),
]
AtHeightArg = Annotated[
    int | None, strawberry.argument(description="read the state after this block (default: the head)")
]


@strawberry.enum(description="Where a validator is in its life: active -> unbonding -> released.")
class ValidatorPhase(enum.Enum):
    ACTIVE = strawberry.enum_value("active", description="bonded; proposes and votes")
    UNBONDING = strawberry.enum_value(
        "unbonding", description="unenrolled or auto-revoked: still bonded (and slashable) until released"
    )
    RELEASED = strawberry.enum_value("released", description="its stake went back to its operator")


@strawberry.enum(description="What happened to a validator.")
class ValidatorEventKind(enum.Enum):
    ENROLLED = strawberry.enum_value("enrolled", description="enrolled (at genesis, or by an enroll tx)")
    UNENROLLED = strawberry.enum_value("unenrolled", description="its operator unenrolled it: unbonding starts")
    SLASHED = strawberry.enum_value("slashed", description="an applied slash took part of its stake")
    REVOKED = strawberry.enum_value(
        "revoked", description="auto-revoked: a slash left it below min_stake (gpu_uuid released at once)"
    )
    RELEASED = strawberry.enum_value("released", description="its unbond window ended: stake paid back")


@strawberry.type(description="A validator's public key.")
class ValidatorKey:
    alg: str
    pk: str = strawberry.field(description="hex")


@strawberry.type(description="One entry of a validator's history.")
class ValidatorEvent:
    kind: ValidatorEventKind
    height: int
    index: int | None = strawberry.field(description="index of the tx in its block; null when no tx is known")
    block_hash: str
    tx_id: str | None = strawberry.field(
        description="the tx that did it; null for the genesis, a release, and an unenrollment whose tx the block"
        " summary cannot tell (one operator unenrolling several validators in one block)"
    )
    amount: BigInt = strawberry.field(
        description="stake bonded (ENROLLED), taken (SLASHED), left (REVOKED), paid back (RELEASED); 0 otherwise"
    )
    reverted: bool = strawberry.field(description="its block was taken off the canonical chain by a reorganization")


@strawberry.type(description="A validator after the block at `height`.")
class Validator:
    chain_id: str
    node_id: str
    height: int = strawberry.field(description="the height read")
    operator: str = strawberry.field(description="address that bonded the stake and gets it back")
    key: ValidatorKey
    gpu_uuid: str
    stake: BigInt = strawberry.field(description="bonded stake, micro-units (0 once released)")
    phase: ValidatorPhase
    slashable: bool = strawberry.field(description="stake above zero, in any phase")
    revoked: bool = strawberry.field(description="auto-revoked by a slash that left it below min_stake")
    enrolled_height: int
    unbond_at_ms: BigInt | None = strawberry.field(description="when its stake is released (once unbonding)")
    unbond_height: int | None = strawberry.field(description="height where it left the active phase")
    released_height: int | None = strawberry.field(description="height where its stake was released")

    @strawberry.field(
        description=f"What happened to it up to `height`, oldest first (at most {HISTORY_ENTRIES_MAX} entries):"
        " canonical blocks only, unless `includeReverted`."
    )
    async def history(
        self,
        info: strawberry.Info,
        include_reverted: Annotated[
            bool, strawberry.argument(description="also entries of blocks a reorganization took off")
        ] = False,
        first: Annotated[int | None, strawberry.argument(description=f"1..{HISTORY_ENTRIES_MAX}")] = None,
    ) -> list[ValidatorEvent]:
        size = HISTORY_ENTRIES_MAX if first is None else _bounded_first(first, HISTORY_ENTRIES_MAX)
        reads = info.context.reads

        def read() -> list[ValidatorEvent]:
            rows = _queries(reads).validator_history(
                self.chain_id, self.node_id, at_height=self.height, include_reverted=include_reverted, first=size
            )
            return [_event_of(r) for r in rows]

        return await reads.run(read)  # type: ignore[no-any-return]


@strawberry.type
class ValidatorEdge:
    cursor: str
    node: Validator


@strawberry.type(description="Validators in node_id order.")
class ValidatorConnection:
    edges: list[ValidatorEdge]
    page_info: PageInfo


@strawberry.type(description="The receipt of a slash tx, with what it did.")
class SlashReceipt:
    tx_id: str
    chain_id: str
    status: str = strawberry.field(description="applied | rejected | reverted")
    reason: str | None = strawberry.field(description="rejection reason code; null when applied")
    node_id: str = strawberry.field(description="the accused validator")
    offence_height: int = strawberry.field(description="height of the two votes")
    reporter: str
    slashed: BigInt = strawberry.field(description="stake taken (0 unless applied)")
    to_reporter: BigInt = strawberry.field(description="paid to the reporter")
    burned: BigInt = strawberry.field(description="slashed - to the reporter")
    revoked: bool = strawberry.field(description="the validator is revoked after this slash")
    height: int
    index: int
    block_hash: str


@strawberry.type
class SlashEdge:
    cursor: str
    node: SlashReceipt


@strawberry.type(description="Slash receipts, newest first (by height, then index).")
class SlashConnection:
    edges: list[SlashEdge]
    page_info: PageInfo


@strawberry.type(description="Validator totals after the block at `height`.")
class ValidatorTotals:
    chain_id: str
    height: int
    validator_count: int = strawberry.field(description="every validator that exists, any phase")
    active_count: int
    unbonding_count: int
    released_count: int
    bonded_stake: BigInt = strawberry.field(description="stake of active and unbonding validators")
    slashed_total: BigInt = strawberry.field(description="stake taken by applied slashes")
    burned_total: BigInt = strawberry.field(description="slashed stake burned (not paid to reporters)")


@strawberry.type
class Query:
    @strawberry.field(
        description="A validator after `atHeight` (default: the head at `finality`; a height above that head reads"
        " the head); null when it does not exist there."
    )
    async def validator(
        self,
        info: strawberry.Info,
        node_id: Annotated[str, strawberry.argument(description="the validator's node_id")],
        at_height: AtHeightArg = None,
        finality: FinalityArg = Finality.LATEST,
        chain_id: ChainArg = None,
    ) -> Validator | None:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        node, at = args.identifier(node_id, "nodeId"), args.height(at_height, "atHeight")
        with_key = _selects(info.selected_fields, "key")

        def read() -> Validator | None:
            row = _queries(reads).validator(
                reads.chain(chain_arg), node, at_height=at, finality=finality.value, with_key=with_key
            )
            return None if row is None else _validator_of(row)

        return await reads.run(read)  # type: ignore[no-any-return]

    @strawberry.field(
        description="Validators at the head at `finality` (or after `atHeight`), in node_id order, every phase"
        " unless `phase`. Cursors are node_ids: a walk never skips or repeats a validator that exists throughout it."
    )
    async def validators(
        self,
        info: strawberry.Info,
        phase: ValidatorPhase | None = None,
        first: FirstArg = None,
        after: AfterArg = None,
        at_height: AtHeightArg = None,
        finality: FinalityArg = Finality.LATEST,
        chain_id: ChainArg = None,
    ) -> ValidatorConnection:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        size, last, at = args.page_size(first), validator_after(after), args.height(at_height, "atHeight")
        with_key = _selects(info.selected_fields, "key")

        def read() -> list[dict[str, Any]]:
            return _queries(reads).validators(
                reads.chain(chain_arg), size + 1, after=last, phase=None if phase is None else phase.value,
                finality=finality.value, with_key=with_key, at_height=at,
            )

        rows = await reads.run(read)
        shown = rows[:size]
        edges = [ValidatorEdge(cursor=validator_cursor(r["node_id"]), node=_validator_of(r)) for r in shown]
        return ValidatorConnection(
            edges=edges,
            page_info=PageInfo(has_next_page=len(rows) > size, end_cursor=edges[-1].cursor if edges else None),
        )

    @strawberry.field(
        description="The receipt of a slash tx: the canonical applied one, else the latest canonical rejected one,"
        " else the most recently reverted one (status `reverted`, original reason); without `chainId`, searched"
        " on every chain. Null for a tx that is not a slash or that no canonical block carried."
    )
    async def slash_receipt(
        self,
        info: strawberry.Info,
        tx_id: Annotated[str, strawberry.argument(description="tx id, 64 lowercase hex")],
        chain_id: ChainArg = None,
    ) -> SlashReceipt | None:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        tx = args.hash_hex(tx_id, "txId")

        def read() -> SlashReceipt | None:
            chain = None if chain_arg is None else reads.chain(chain_arg)
            row = _queries(reads).slash_receipt(tx, chain_id=chain)
            return None if row is None else _slash_of(row)

        return await reads.run(read)  # type: ignore[no-any-return]

    @strawberry.field(
        description="Slash receipts (applied and rejected) of canonical blocks up to the head at `finality`,"
        " newest first; `nodeId` filters by the accused validator."
    )
    async def slashes(
        self,
        info: strawberry.Info,
        node_id: Annotated[str | None, strawberry.argument(description="the accused validator")] = None,
        first: FirstArg = None,
        after: AfterArg = None,
        finality: FinalityArg = Finality.LATEST,
        chain_id: ChainArg = None,
    ) -> SlashConnection:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        node = None if node_id is None else args.identifier(node_id, "nodeId")
        size, before = args.page_size(first), slash_after(after)

        def read() -> list[dict[str, Any]]:
            return _queries(reads).slashes(
                reads.chain(chain_arg), node_id=node, first=size + 1, before=before, finality=finality.value
            )

        rows = await reads.run(read)
        edges = [SlashEdge(cursor=slash_cursor(r["height"], r["index"]), node=_slash_of(r)) for r in rows[:size]]
        return SlashConnection(
            edges=edges,
            page_info=PageInfo(has_next_page=len(rows) > size, end_cursor=edges[-1].cursor if edges else None),
        )

    @strawberry.field(
        description="Validator counts per phase, bonded stake, slashed and burned totals after `atHeight` (default:"
        " the head at `finality`)."
    )
    async def validator_totals(
        self,
        info: strawberry.Info,
        at_height: AtHeightArg = None,
        finality: FinalityArg = Finality.LATEST,
        chain_id: ChainArg = None,
    ) -> ValidatorTotals:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        at = args.height(at_height, "atHeight")

        def read() -> ValidatorTotals:
            chain = reads.chain(chain_arg)
            row = _queries(reads).validator_totals(chain, at_height=at, finality=finality.value)
            if row is None:  # the chain has no head yet
                raise args.UnknownChain(f"chainId: chain {chain!r} has no blocks projected yet")
            return ValidatorTotals(**row)

        return await reads.run(read)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------- cursors


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")


def _decode(cursor: str, what: str) -> str:
    if not cursor or len(cursor) > _CURSOR_CHARS_MAX or not re.fullmatch(r"[A-Za-z0-9_-]+", cursor):
        raise args.BadArgument("after", f"not a cursor issued by this server (pass a cursor from a previous {what})")
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise args.BadArgument("after", f"not a cursor issued by this server (pass a cursor from a previous {what})"
                               ) from exc  # fmt: skip


def validator_cursor(node_id: str) -> str:
    """Opaque on the wire: unpadded base64url of `v1:validator:<node_id>`."""
    return _encode(f"v1:validator:{node_id}")


def validator_after(after: str | None) -> str | None:
    if after is None:
        return None
    match = _VALIDATOR_CURSOR.fullmatch(_decode(after, "validators page"))
    if match is None:
        raise args.BadArgument("after", "not a validators cursor (pass a cursor from a previous validators page)")
    return match.group(1)


def slash_cursor(height: int, index: int) -> str:
    return _encode(f"v1:slash:{height}:{index}")


def slash_after(after: str | None) -> tuple[int, int] | None:
    if after is None:
        return None
    match = _SLASH_CURSOR.fullmatch(_decode(after, "slashes page"))
    if match is None:
        raise args.BadArgument("after", "not a slashes cursor (pass a cursor from a previous slashes page)")
    height, index = int(match.group(1)), int(match.group(2))
    if height > limits.AMOUNT_MAX or index > _TX_INDEX_MAX:
        raise args.BadArgument("after", "cursor position out of range")
    return height, index


# -------------------------------------------------------------------------------------------- conversions


def _queries(reads: Any) -> ValidatorQueries:
    """The validator reads over the API's read model (a thin wrapper: it keeps nothing of its own)."""
    return ValidatorQueries(reads.model)


def _chain_arg(chain_id: str | None) -> str | None:
    return None if chain_id is None else args.identifier(chain_id, "chainId")


def _bounded_first(first: int, most: int) -> int:
    if not 1 <= first <= most:
        raise args.BadArgument("first", f"must be between 1 and {most}, got {first}")
    return first


def _selects(fields: Iterable[Any], name: str) -> bool:
    """Whether the selection (fragments included) asks for a field called `name` at any depth."""
    for field in fields:
        if getattr(field, "name", None) == name:
            return True
        if _selects(getattr(field, "selections", ()) or (), name):
            return True
    return False


def _big(value: Any) -> BigInt | None:
    return None if value is None else BigInt(int(value))


def _validator_of(row: Mapping[str, Any]) -> Validator:
    return Validator(
        chain_id=row["chain_id"], node_id=row["node_id"], height=row["height"],
        operator=row["operator"], key=ValidatorKey(alg=row["key_alg"], pk=row.get("key_pk", "")),
        gpu_uuid=row["gpu_uuid"], stake=BigInt(row["stake"]), phase=ValidatorPhase(row["phase"]),
        slashable=row["slashable"], revoked=row["revoked"], enrolled_height=row["enrolled_height"],
        unbond_at_ms=_big(row["unbond_at_ms"]), unbond_height=row["unbond_height"],
        released_height=row["released_height"],
    )


def _event_of(row: Mapping[str, Any]) -> ValidatorEvent:
    return ValidatorEvent(
        kind=ValidatorEventKind(row["kind"]), height=row["height"], index=row["index"], block_hash=row["block_hash"],
        tx_id=row["tx_id"], amount=BigInt(row["amount"]), reverted=row["reverted"],
    )


def _slash_of(row: Mapping[str, Any]) -> SlashReceipt:
    return SlashReceipt(
        tx_id=row["tx_id"], chain_id=row["chain_id"], status=row["status"], reason=row["reason"] or None,
        node_id=row["node_id"], offence_height=row["offence_height"], reporter=row["reporter"],
        slashed=BigInt(row["slashed"]), to_reporter=BigInt(row["to_reporter"]), burned=BigInt(row["burned"]),
        revoked=row["revoked"], height=row["height"], index=row["index"], block_hash=row["block_hash"],
    )
