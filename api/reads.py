"""The API's port to the read model (projections/queries.py `ReadModel`): chain resolution and the threadpool.

The read model is synchronous (a ClickHouse query takes 2-3 ms), so every call runs in a worker thread, never on
the event loop: a slow query must not stall intake, health checks or other requests. One root field makes one
thread hop, which resolves the chain and runs the query together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from starlette.concurrency import run_in_threadpool

from api.args import UnknownChain

T = TypeVar("T")


class ReadModel(Protocol):
    """What the API needs of projections/queries.py; every method returns plain dicts (see docs/architecture.md).

    `finality` is "latest" (the canonical tip) or "finalized" (the newest final block)."""

    def chains(self) -> list[str]: ...
    def default_chain(self) -> str | None: ...
    def head(self, chain_id: str) -> dict[str, Any] | None: ...
    def block(
        self, chain_id: str, height: int | None = None, hash: str | None = None, finality: str = "latest"
    ) -> dict[str, Any] | None: ...
    def blocks(
        self,
        chain_id: str,
        first: int,
        before_height: int | None = None,
        proposer: str | None = None,
        finality: str = "latest",
    ) -> list[dict[str, Any]]: ...
    def account(
        self, chain_id: str, address: str, at_height: int | None = None, finality: str = "latest"
    ) -> dict[str, Any] | None: ...
    def transactions(
        self,
        chain_id: str,
        address: str | None = None,
        first: int = 20,
        before: tuple[int, int] | None = None,
        finality: str = "latest",
    ) -> list[dict[str, Any]]: ...
    def receipt(self, tx_id: str, chain_id: str | None = None) -> dict[str, Any] | None: ...
    def reorgs(self, chain_id: str, first: int, before_position: int | None = None) -> list[dict[str, Any]]: ...
    def stats(self, chain_id: str, window: int, finality: str = "latest") -> dict[str, Any]: ...
    def position(self) -> int: ...


class Reads:
    def __init__(self, model: ReadModel, log: Any = None) -> None:
        """`log`: the raw log's reader (api/gql_log.py LogReader), where this process can read the event store."""
        self.model = model
        self.log = log
        self.proofs: Any = None  # api/proofs.py LiabilityProofs, where this server holds the reserves secret
        # Chains are only ever added (a genesis is never reverted), so a name seen once stays valid:
        # the read model is asked for the list again only when a name is not in this set. The default chain
        # is the one whose genesis came first (docs/decisions.md), so once known it never changes either;
        # caching it saves a query (several ms on chdb) on every request that names no chain.
        self._known_chains: set[str] = set()
        self._default_chain: str | None = None

    def chain(self, chain_id: str | None) -> str:
        """The chain a query reads: the one asked for if it exists, else the read model's default. Blocking."""
        if chain_id is None:
            if self._default_chain is None:
                self._default_chain = self.model.default_chain()
            if self._default_chain is None:
                raise UnknownChain("chainId: no chain yet (no genesis has been accepted)")
            return self._default_chain
        if chain_id not in self._known_chains:
            self._known_chains.update(self.model.chains())
            if chain_id not in self._known_chains:
                raise UnknownChain(f"chainId: no chain {chain_id!r} (no genesis accepted for it)")
        return chain_id

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking read in a worker thread."""
        return await run_in_threadpool(fn, *args)
