"""api/cursors.py: opaque keyset cursors and the paging step."""

from __future__ import annotations

import base64

import pytest

from api import cursors


@pytest.mark.parametrize("height", [0, 1, 41, 2**31, 2**63 - 1])
def test_block_cursor_round_trips(height: int) -> None:
    cursor = cursors.block_cursor(height)
    assert "=" not in cursor and str(height) not in cursor  # opaque, URL-safe
    assert cursors.decode_block_cursor(cursor) == height


@pytest.mark.parametrize(("height", "index"), [(0, 0), (7, 3), (2**63 - 1, 999)])
def test_tx_cursor_round_trips(height: int, index: int) -> None:
    assert cursors.decode_tx_cursor(cursors.tx_cursor(height, index)) == (height, index)


def _raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "a" * 65,
        "abc=",  # padding is never issued
        _raw("v1:block:-1"),
        _raw("v1:block:01"),
        _raw("v1:block:+1"),
        _raw("v1:block:1 "),
        _raw("v2:block:1"),
        _raw("v1:block:9223372036854775808"),  # 2**63
        _raw("v1:tx:1:2"),  # a transactions cursor
        base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),
    ],
)
def test_foreign_block_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(cursors.CursorError):
        cursors.decode_block_cursor(cursor)


@pytest.mark.parametrize("cursor", [_raw("v1:block:5"), _raw("v1:tx:5"), _raw("v1:tx:5:"), _raw("v1:tx:a:1")])
def test_foreign_tx_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(cursors.CursorError):
        cursors.decode_tx_cursor(cursor)


@pytest.mark.parametrize("position", [1, 77, 2**63 - 1])
def test_reorg_cursor_round_trips(position: int) -> None:
    assert cursors.decode_reorg_cursor(cursors.reorg_cursor(position)) == position


@pytest.mark.parametrize(
    "cursor", [_raw("v1:block:5"), _raw("v1:reorg:"), _raw("v1:reorg:05"), _raw("v1:reorg:9223372036854775808")]
)
def test_foreign_reorg_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(cursors.CursorError):
        cursors.decode_reorg_cursor(cursor)


def test_page_of_cuts_the_probe_row() -> None:
    rows = [{"h": 9}, {"h": 8}, {"h": 7}]

    def key(r: dict[str, int]) -> str:
        return cursors.block_cursor(r["h"])

    full = cursors.page_of(rows, 2, key)
    assert [r["h"] for _, r in full.rows] == [9, 8]
    assert full.has_next_page and full.end_cursor == cursors.block_cursor(8)

    last = cursors.page_of(rows, 3, key)
    assert not last.has_next_page and last.end_cursor == cursors.block_cursor(7)

    empty = cursors.page_of([], 5, key)
    assert empty.rows == [] and not empty.has_next_page and empty.end_cursor is None
