"""Pure checks of GraphQL arguments: each returns the value to use or raises `BadArgument` naming what is wrong.

Formats are DOMAIN.md's: addresses `0x` + 40 lowercase hex, hashes and tx ids 64 lowercase hex, identifiers
`[A-Za-z0-9._:-]{1,128}`.
"""

from __future__ import annotations

import re

from api import cursors
from schemas import limits

ADDRESS_RE = re.compile(r"0x[0-9a-f]{40}")
HASH_RE = re.compile(r"[0-9a-f]{64}")
IDENTIFIER_RE = re.compile(rf"[A-Za-z0-9._:-]{{1,{limits.ID_LEN_MAX}}}")
# Not in schemas/limits.py yet: the window `stats` uses when none is given.
STATS_WINDOW_DEFAULT = 100


class BadArgument(ValueError):
    """A client error in one argument; graphql-core copies `extensions` into the GraphQL error."""

    def __init__(self, argument: str, problem: str) -> None:
        self.argument = argument
        self.message = f"{argument}: {problem}"
        self.extensions = {"code": "BAD_ARGUMENT", "argument": argument}
        super().__init__(self.message)


class UnknownChain(LookupError):
    """The chain asked for has no genesis (or no chain has one yet)."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.extensions = {"code": "UNKNOWN_CHAIN", "argument": "chainId"}
        super().__init__(message)


def _shown(value: str) -> str:
    """A client's value quoted in an error message, cut short so errors stay small."""
    return repr(value if len(value) <= 80 else value[:80] + "...")


def page_size(first: int | None) -> int:
    if first is None:
        return limits.PAGE_SIZE_DEFAULT
    if not 1 <= first <= limits.PAGE_SIZE_MAX:
        raise BadArgument("first", f"must be between 1 and {limits.PAGE_SIZE_MAX}, got {first}")
    return first


def height(value: int | None, argument: str) -> int | None:
    if value is not None and value < 0:
        raise BadArgument(argument, f"must be >= 0, got {value}")
    return value


def address(value: str, argument: str = "address") -> str:
    if not ADDRESS_RE.fullmatch(value):
        raise BadArgument(argument, f"must be 0x followed by 40 lowercase hex characters, got {_shown(value)}")
    return value


def hash_hex(value: str, argument: str) -> str:
    if not HASH_RE.fullmatch(value):
        raise BadArgument(argument, f"must be 64 lowercase hex characters, got {_shown(value)}")
    return value


def identifier(value: str, argument: str) -> str:
    if not IDENTIFIER_RE.fullmatch(value):
        raise BadArgument(argument, f"must match [A-Za-z0-9._:-]{{1,{limits.ID_LEN_MAX}}}, got {_shown(value)}")
    return value


def block_key(height_: int | None, hash_: str | None) -> tuple[int | None, str | None]:
    """`block` is looked up by one of height and hash, or by neither (the tip at the finality level)."""
    if height_ is not None and hash_ is not None:
        raise BadArgument("height/hash", "give at most one of height and hash (both were given)")
    if hash_ is not None:
        return None, hash_hex(hash_, "hash")
    return height(height_, "height"), None


def window(value: int | None) -> int:
    if value is None:
        return STATS_WINDOW_DEFAULT
    if not 1 <= value <= limits.STATS_WINDOW_MAX:
        raise BadArgument("window", f"must be between 1 and {limits.STATS_WINDOW_MAX}, got {value}")
    return value


def block_after(after: str | None) -> int | None:
    if after is None:
        return None
    try:
        return cursors.decode_block_cursor(after)
    except cursors.CursorError as exc:
        raise BadArgument("after", f"{exc} (pass a cursor from a previous blocks page)") from exc


def reorg_after(after: str | None) -> int | None:
    if after is None:
        return None
    try:
        return cursors.decode_reorg_cursor(after)
    except cursors.CursorError as exc:
        raise BadArgument("after", f"{exc} (pass a cursor from a previous reorgs page)") from exc


def tx_after(after: str | None) -> tuple[int, int] | None:
    if after is None:
        return None
    try:
        return cursors.decode_tx_cursor(after)
    except cursors.CursorError as exc:
        raise BadArgument("after", f"{exc} (pass a cursor from a previous transactions page)") from exc
