"""Strict JSON for commands: exact integers, no duplicate keys, valid UTF-8 and Unicode.

Numbers: DOMAIN.md wants integers parsed exactly (Python's json keeps big integers exact) and a fraction or an
exponent refused. A non-integer number is handed on as a Python `float`, which is never a JSON integer to the
ledger's checks (schemas/commands.py): the service refuses it with the reason DOMAIN.md gives for the place it
sits in (`malformed_block`, `malformed_tx`, `malformed_vote`, `invalid_genesis`) and a message naming the field,
exactly as it answers the same command submitted in-process. NaN and Infinity are handed on the same way.

Duplicate keys have no single reading (parsers disagree on which one wins, and a signature must cover exactly
one), and a lone surrogate escape is not Unicode. A repeated key replaces its object by an `Unacceptable`
marker; `problem_in` finds markers and lone surrogates, so that only the command holding one is
`malformed_command` and the other commands of an array are still answered one by one.
A body that is not JSON at all raises `StrictJSONError`. Pure: bytes in, `Document` out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# A lone surrogate can only arrive as a \uD800-\uDFFF escape (strict UTF-8 decoding refuses encoded ones);
# only a body that contains such an escape needs its strings checked.
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")
_SHOWN_CHARS_MAX = 40


class StrictJSONError(ValueError):
    """The body is not JSON; the message names the problem."""


@dataclass(frozen=True)
class Unacceptable:
    """Stands where the body held a value DOMAIN.md forbids; the command around it is malformed."""

    problem: str


@dataclass(frozen=True)
class Document:
    value: Any
    # False when no Unacceptable marker and no lone surrogate can be inside `value`: nothing to look for.
    suspicious: bool


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS_MAX else text[:_SHOWN_CHARS_MAX] + "..."


def _constant(name: str) -> float:
    # NaN, Infinity, -Infinity: not JSON, but refused by the ledger like any other non-integer number.
    return float(name)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any] | Unacceptable:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return Unacceptable(f"duplicate key {_shown(key)!r} in an object")
        seen.add(key)
    raise AssertionError("unreachable: fewer keys than pairs means a repeated key")


def loads(body: bytes) -> Document:
    """Parse a request body, or raise StrictJSONError naming what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StrictJSONError(f"the body is not UTF-8 (byte {exc.start})") from exc
    if not text.strip():
        raise StrictJSONError("the body is empty: expected a JSON command or an array of commands")
    marked = False

    def mark(marker: Unacceptable) -> Unacceptable:
        nonlocal marked
        marked = True
        return marker

    def on_object(pairs: list[tuple[str, Any]]) -> Any:
        obj = _object(pairs)
        return mark(obj) if isinstance(obj, Unacceptable) else obj

    try:
        value = json.loads(
            text,
            parse_float=float,
            parse_constant=_constant,
            object_pairs_hook=on_object,
        )
    except json.JSONDecodeError as exc:
        raise StrictJSONError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise StrictJSONError("invalid JSON: nested too deeply") from exc
    except ValueError as exc:
        # An integer longer than Python's int_max_str_digits (4300 digits): far beyond 2**63 anyway.
        raise StrictJSONError(f"invalid JSON: {exc}") from exc
    return Document(value, suspicious=marked or bool(_SURROGATE_ESCAPE_RE.search(text)))


def problem_in(value: Any) -> str | None:
    """A reason `value` is not acceptable, or None. Walks the whole value: call it on suspicious ones."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Unacceptable):
            return item.problem
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff) escape"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None
