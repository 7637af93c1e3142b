"""The GraphQL schema: root fields, their resolvers, limits and error handling.

Root fields (a contract: names and arguments are fixed by issues 2 and 3): `head`, `block(height, hash)`,
`blocks(first, after, proposer)`, `account(address!, atHeight)`, `transactions(address, first, after)`,
`receipt(txId!)`, `stats(window)`, `reorgs(first, after)`; each also takes `chainId`, defaulting to the read
model's default chain. `block`, `blocks`, `account`, `transactions` and `stats` take `finality` (LATEST, the
default, or FINALIZED): the head they are relative to. `block` with neither height nor hash is that head.
`receipt` without `chainId` looks the tx id up on every chain: a tx id already commits to its chain, because the
signed tx carries `chain_id`.

Arguments are checked (api/args.py) before any read; a bad one is a GraphQL error whose message starts with the
argument's name and whose `extensions` say `{"code": "BAD_ARGUMENT", "argument": ...}`. Unexpected failures are
logged and answered as "internal error" without details.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext
from strawberry.utils.logging import StrawberryLogger

from api import args, cursors
from api.gql_families import families
from api.gql_types import (
    BIGINT_SCALAR,
    Account,
    BigInt,
    Block,
    BlockConnection,
    BlockEdge,
    Finality,
    Head,
    PageInfo,
    Receipt,
    ReorgConnection,
    ReorgEdge,
    Stats,
    TransactionConnection,
    TransactionEdge,
    account_of,
    block_of,
    head_of,
    receipt_of,
    reorg_of,
    stats_of,
    transaction_of,
)
from api.reads import Reads
from schemas import limits

# Parsed documents and validation results kept per distinct query text (bounded: query texts come from clients).
_QUERY_CACHE_ENTRIES_MAX = 512
_CLIENT_ERRORS = (args.BadArgument, args.UnknownChain, GraphQLError)


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | WebSocket | None
    reads: Reads


Info = strawberry.Info[Context, None]
ChainArg = Annotated[
    str | None, strawberry.argument(description="chain to read; defaults to the ledger's default chain")
]
FirstArg = Annotated[
    int | None,
    strawberry.argument(
        description=f"page size, 1..{limits.PAGE_SIZE_MAX} (default {limits.PAGE_SIZE_DEFAULT})"
    ),
]
AfterArg = Annotated[str | None, strawberry.argument(description="`pageInfo.endCursor` of the previous page")]
HeightArg = Annotated[int | None, strawberry.argument(description="block height (0 is the genesis)")]
HashArg = Annotated[str | None, strawberry.argument(name="hash", description="block hash, 64 lowercase hex")]
AddressArg = Annotated[str, strawberry.argument(description="0x + 40 lowercase hex")]
FinalityArg = Annotated[
    Finality,
    strawberry.argument(
        description="the head the read is relative to: LATEST (default) the canonical tip, FINALIZED the newest"
        " final block (answers that can no longer change)"
    ),
]


def _chain_arg(chain_id: str | None) -> str | None:
    return None if chain_id is None else args.identifier(chain_id, "chainId")


@strawberry.type
class Query:
    @strawberry.field(description="The canonical tip and the newest finalized block.")
    async def head(self, info: Info, chain_id: ChainArg = None) -> Head | None:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)

        def read() -> Head | None:
            row = reads.model.head(reads.chain(chain_arg))
            return None if row is None else head_of(row)

        return await reads.run(read)

    @strawberry.field(
        description="A block: the canonical one at `height`, any recorded one by `hash` (with its status), or"
        " without either the head at `finality`. With FINALIZED, only final blocks are answered."
    )
    async def block(
        self,
        info: Info,
        height: HeightArg = None,
        hash_: HashArg = None,
        finality: FinalityArg = Finality.LATEST,
        chain_id: ChainArg = None,
    ) -> Block | None:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        at_height, at_hash = args.block_key(height, hash_)

        def read() -> Block | None:
            row = reads.model.block(reads.chain(chain_arg), height=at_height, hash=at_hash, finality=finality.value)
            return None if row is None else block_of(row)

        return await reads.run(read)

    @strawberry.field(
        description="Canonical blocks up to the head at `finality`, newest first; `proposer` filters by node_id."
    )
    async def blocks(
        self,
        info: Info,
        first: FirstArg = None,
        after: AfterArg = None,
        proposer: Annotated[str | None, strawberry.argument(description="node_id of the proposer")] = None,
        finality: FinalityArg = Finality.LATEST,
        chain_id: ChainArg = None,
    ) -> BlockConnection:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        size, before = args.page_size(first), args.block_after(after)
        node_id = None if proposer is None else args.identifier(proposer, "proposer")
        level = finality.value

        def read() -> list[dict[str, Any]]:
            chain = reads.chain(chain_arg)
            rows = reads.model.blocks(chain, size + 1, before_height=before, proposer=node_id, finality=level)
            if len(rows) == size:  # no probe row: the read model may cap a page at PAGE_SIZE_MAX; ask once more
                last = int(rows[-1]["height"])
                rows += reads.model.blocks(chain, 1, before_height=last, proposer=node_id, finality=level)
            return rows

        page = cursors.page_of(await reads.run(read), size, lambda r: cursors.block_cursor(int(r["height"])))
        return BlockConnection(
            edges=[BlockEdge(cursor=c, node=block_of(r)) for c, r in page.rows],
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
        )

    @strawberry.field(
        description="Balances per asset and next nonce of an address, at the head at `finality` or after"
        " `atHeight` (at most that head)."
    )
    async def account(
        self,
        info: Info,
        address: AddressArg,
        at_height: Annotated[
            int | None, strawberry.argument(description="read the state after this block (default: the head)")
        ] = None,
        finality: FinalityArg = Finality.LATEST,
        chain_id: ChainArg = None,
    ) -> Account:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        who, at = args.address(address), args.height(at_height, "atHeight")

        def read() -> Account:
            chain = reads.chain(chain_arg)
            row = reads.model.account(chain, who, at_height=at, finality=finality.value)
            if row is None:  # the chain has no head yet
                raise args.UnknownChain(f"chainId: chain {chain!r} has no blocks projected yet")
            return account_of(row)

        return await reads.run(read)

    @strawberry.field(
        description="Transactions of canonical blocks up to the head at `finality`, with their receipts, newest"
        " first; `address` filters by party. Reverted transactions are not listed (see `receipt`)."
    )
    async def transactions(
        self,
        info: Info,
        address: Annotated[
            str | None, strawberry.argument(description="only txs this address signed, sent or received")
        ] = None,
        first: FirstArg = None,
        after: AfterArg = None,
        finality: FinalityArg = Finality.LATEST,
        chain_id: ChainArg = None,
    ) -> TransactionConnection:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        who = None if address is None else args.address(address)
        size, before = args.page_size(first), args.tx_after(after)
        level = finality.value

        def read() -> list[dict[str, Any]]:
            chain = reads.chain(chain_arg)
            rows = reads.model.transactions(chain, address=who, first=size + 1, before=before, finality=level)
            if len(rows) == size:  # no probe row: the read model may cap a page at PAGE_SIZE_MAX; ask once more
                last = (int(rows[-1]["height"]), int(rows[-1]["index"]))
                rows += reads.model.transactions(chain, address=who, first=1, before=last, finality=level)
            return rows

        def cursor_of(row: dict[str, Any]) -> str:
            return cursors.tx_cursor(int(row["height"]), int(row["index"]))

        page = cursors.page_of(await reads.run(read), size, cursor_of)
        return TransactionConnection(
            edges=[TransactionEdge(cursor=c, node=transaction_of(r)) for c, r in page.rows],
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
        )

    @strawberry.field(
        description="The receipt of a transaction: the canonical applied one, else the latest canonical rejected"
        " one, else the most recently reverted one (status `reverted`, original reason); without `chainId`,"
        " searched on every chain."
    )
    async def receipt(
        self,
        info: Info,
        tx_id: Annotated[str, strawberry.argument(description="tx id, 64 lowercase hex")],
        chain_id: ChainArg = None,
    ) -> Receipt | None:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        tx = args.hash_hex(tx_id, "txId")

        def read() -> Receipt | None:
            chain = None if chain_arg is None else reads.chain(chain_arg)
            row = reads.model.receipt(tx, chain_id=chain)
            return None if row is None else receipt_of(row)

        return await reads.run(read)

    @strawberry.field(
        description=f"Totals of the canonical chain up to the head at `finality`, and rolling figures over its"
        f" newest `window` blocks (1..{limits.STATS_WINDOW_MAX}, default {args.STATS_WINDOW_DEFAULT})."
    )
    async def stats(
        self,
        info: Info,
        window: Annotated[int | None, strawberry.argument(description="number of newest blocks")] = None,
        finality: FinalityArg = Finality.LATEST,
        chain_id: ChainArg = None,
    ) -> Stats:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        blocks = args.window(window)

        def read() -> Stats:
            chain = reads.chain(chain_arg)
            return stats_of(chain, reads.model.stats(chain, blocks, finality=finality.value))

        return await reads.run(read)

    @strawberry.field(description="Reorganizations of the chain, newest first.")
    async def reorgs(
        self,
        info: Info,
        first: FirstArg = None,
        after: AfterArg = None,
        chain_id: ChainArg = None,
    ) -> ReorgConnection:
        reads, chain_arg = info.context.reads, _chain_arg(chain_id)
        size, before = args.page_size(first), args.reorg_after(after)

        def read() -> list[dict[str, Any]]:
            chain = reads.chain(chain_arg)
            rows = reads.model.reorgs(chain, size + 1, before_position=before)
            if len(rows) == size:  # no probe row: the read model may cap a page at PAGE_SIZE_MAX; ask once more
                rows += reads.model.reorgs(chain, 1, before_position=int(rows[-1]["position"]))
            return rows

        page = cursors.page_of(await reads.run(read), size, lambda r: cursors.reorg_cursor(int(r["position"])))
        return ReorgConnection(
            edges=[ReorgEdge(cursor=c, node=reorg_of(r)) for c, r in page.rows],
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
        )


def _is_internal(error: GraphQLError) -> bool:
    """A resolver failure that is not the client's doing: log it, and do not show its details."""
    original = error.original_error
    return original is not None and not isinstance(original, _CLIENT_ERRORS)


class _Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Client mistakes (syntax, validation, bad arguments) are answered, not logged.
        for error in errors:
            if _is_internal(error):
                StrawberryLogger.error(error, execution_context)


# Built once: a limiter constructed per request would carry new rule classes, and the validation cache,
# keyed by the rules, would never hit.
_LIMIT_RULES = [
    *QueryDepthLimiter(max_depth=limits.GRAPHQL_DEPTH_MAX).validation_rules,
    *MaxAliasesLimiter(max_alias_count=limits.GRAPHQL_ALIASES_MAX).validation_rules,
]


def query_type() -> type:
    """The root Query: the core fields above and those of each domain family (validators, bridge reserves), each
    in its own module with its own `Query` type (api/gql_families.py)."""
    extra = families()
    return merge_types("Query", (Query, *extra)) if extra else Query


def build_schema() -> strawberry.Schema:
    return _Schema(
        query=query_type(),
        config=StrawberryConfig(scalar_map={BigInt: BIGINT_SCALAR}),
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=limits.GRAPHQL_TOKENS_MAX),
            lambda: AddValidationRules(_LIMIT_RULES),
            lambda: ParserCache(maxsize=_QUERY_CACHE_ENTRIES_MAX),
            lambda: ValidationCache(maxsize=_QUERY_CACHE_ENTRIES_MAX),
            lambda: MaskErrors(should_mask_error=_is_internal, error_message="internal error"),
        ],
    )


class GraphQLApp(GraphQL[Context, None]):
    """strawberry's ASGI view (GraphiQL on GET from a browser) with the read model in the context."""

    def __init__(self, schema: strawberry.Schema, reads: Reads) -> None:
        super().__init__(schema, graphql_ide="graphiql")
        self._reads = reads

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        return Context(request=request, response=response, reads=self._reads)
