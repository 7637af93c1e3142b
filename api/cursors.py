"""Opaque keyset cursors for newest-first pages, and the pure paging step every connection shares.

A cursor names the last row a client has seen; the next page holds the rows strictly older than it. Blocks are
keyed by height, transactions by (height, index), reorganizations by log position. On the wire a cursor is
unpadded base64url of `v1:block:<height>`, `v1:tx:<height>:<index>` or `v1:reorg:<position>`: opaque to
clients (they must only hand it back), versioned so the key can change, and tagged so a transactions cursor
handed to `blocks` is refused instead of misread.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from schemas import limits

_VERSION = "v1"
_BLOCK = "block"
_TX = "tx"
_REORG = "reorg"
# Decimal without sign or leading zeros: one spelling per number, so a cursor has one encoding.
_NUMBER = r"(0|[1-9][0-9]{0,18})"
_BLOCK_RE = re.compile(rf"{_VERSION}:{_BLOCK}:{_NUMBER}")
_TX_RE = re.compile(rf"{_VERSION}:{_TX}:{_NUMBER}:{_NUMBER}")
_REORG_RE = re.compile(rf"{_VERSION}:{_REORG}:{_NUMBER}")
# A valid cursor is short; refusing long input early keeps decoding cheap.
_CURSOR_CHARS_MAX = 64

Row = TypeVar("Row")


class CursorError(ValueError):
    """A cursor that this server did not issue (or issued for another list)."""


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")


def _decode(cursor: str) -> str:
    if not cursor or len(cursor) > _CURSOR_CHARS_MAX or not re.fullmatch(r"[A-Za-z0-9_-]+", cursor):
        raise CursorError("not a cursor issued by this server")
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        return base64.urlsafe_b64decode(padded).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise CursorError("not a cursor issued by this server") from exc


def _bounded(value: str) -> int:
    number = int(value)
    if number > limits.AMOUNT_MAX:
        raise CursorError("cursor position out of range")
    return number


def block_cursor(height: int) -> str:
    return _encode(f"{_VERSION}:{_BLOCK}:{height}")


def decode_block_cursor(cursor: str) -> int:
    """The height of the last block seen; the next page starts below it."""
    match = _BLOCK_RE.fullmatch(_decode(cursor))
    if match is None:
        raise CursorError("not a blocks cursor")
    return _bounded(match.group(1))


def tx_cursor(height: int, index: int) -> str:
    return _encode(f"{_VERSION}:{_TX}:{height}:{index}")


def decode_tx_cursor(cursor: str) -> tuple[int, int]:
    """(height, index) of the last transaction seen; the next page starts below it."""
    match = _TX_RE.fullmatch(_decode(cursor))
    if match is None:
        raise CursorError("not a transactions cursor")
    return _bounded(match.group(1)), _bounded(match.group(2))


def reorg_cursor(position: int) -> str:
    return _encode(f"{_VERSION}:{_REORG}:{position}")


def decode_reorg_cursor(cursor: str) -> int:
    """The log position of the last reorganization seen; the next page starts before it."""
    match = _REORG_RE.fullmatch(_decode(cursor))
    if match is None:
        raise CursorError("not a reorgs cursor")
    return _bounded(match.group(1))


@dataclass(frozen=True)
class Page(Generic[Row]):
    rows: list[tuple[str, Row]]  # (cursor, row), newest first
    has_next_page: bool
    end_cursor: str | None


def page_of(rows: Sequence[Row], first: int, cursor_of: Callable[[Row], str]) -> Page[Row]:
    """Cut a page from `rows`, fetched with a limit of `first + 1`: the extra row only says a next page exists."""
    shown = list(rows[:first])
    edges = [(cursor_of(row), row) for row in shown]
    return Page(rows=edges, has_next_page=len(rows) > first, end_cursor=edges[-1][0] if edges else None)
