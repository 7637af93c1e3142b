"""The HTTP face of the ledger: GraphQL reads, command intake, health and metrics (see api/app.py).

`create_app` is imported on first use, so `tally submit` (api/cli.py) does not pay for strawberry's import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
