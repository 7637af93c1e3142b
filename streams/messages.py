"""The wire format of the scaled log's messages. Pure: bytes in, bytes out.

A message value is one line of JSON (the header), a newline, then the body:

    event      {"v": 1, "type": "event", "position", "originator_id", "originator_version", "topic", "kind"}
               body: the event's stored state exactly as the event store holds it, so a worker decodes it with
               the same mapper (and upcasters) as the embedded follower and projects identical rows
    watermark  {"v": 1, "type": "watermark", "position"}   no body: the relay has published every event at a
               log position <= position (sent to every partition of every data topic after a flush)
    progress   {"v": 1, "type": "progress", "position"}    the relay's own checkpoint (the relay topic)

Anything else (not this framing, an unknown version or type, a field missing or of the wrong type) is
`Undecodable`: a worker sends it to the dead-letter topic and goes on.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import orjson

VERSION = 1
EVENT, WATERMARK, PROGRESS = "event", "watermark", "progress"


class Undecodable(ValueError):
    """A message that is not in this format."""


@dataclass(frozen=True)
class EventMessage:
    position: int
    originator_id: uuid.UUID
    originator_version: int
    topic: str  # the event store's topic of the event's class (eventsourcing)
    kind: str
    state: bytes


@dataclass(frozen=True)
class Watermark:
    position: int


@dataclass(frozen=True)
class Progress:
    position: int


Message = EventMessage | Watermark | Progress


def encode_event(m: EventMessage) -> bytes:
    header = {
        "v": VERSION, "type": EVENT, "position": m.position, "originator_id": str(m.originator_id),
        "originator_version": m.originator_version, "topic": m.topic, "kind": m.kind,
    }
    return orjson.dumps(header) + b"\n" + m.state


def encode_watermark(position: int) -> bytes:
    return orjson.dumps({"v": VERSION, "type": WATERMARK, "position": position}) + b"\n"


def encode_progress(position: int) -> bytes:
    return orjson.dumps({"v": VERSION, "type": PROGRESS, "position": position}) + b"\n"


def decode(value: bytes | None) -> Message:
    """The message, or Undecodable saying what is wrong with it."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise Undecodable(f"expected bytes, got {type(value).__name__}")
    raw = bytes(value)
    newline = raw.find(b"\n")
    if newline < 0:
        raise Undecodable("no header line")
    try:
        header = orjson.loads(raw[:newline])
    except orjson.JSONDecodeError as exc:
        raise Undecodable(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("v") != VERSION:
        raise Undecodable(f"header is not a version {VERSION} object")
    kind = header.get("type")
    position = _int(header, "position")
    if position < 1:
        raise Undecodable(f"position {position} is not a log position")
    if kind == WATERMARK:
        return Watermark(position)
    if kind == PROGRESS:
        return Progress(position)
    if kind != EVENT:
        raise Undecodable(f"unknown message type {kind!r}")
    try:
        originator_id = uuid.UUID(str(header.get("originator_id")))
    except ValueError:
        raise Undecodable("originator_id is not a UUID") from None
    return EventMessage(
        position=position, originator_id=originator_id, originator_version=_int(header, "originator_version"),
        topic=_str(header, "topic"), kind=_str(header, "kind"), state=raw[newline + 1 :],
    )


def _int(header: dict[str, object], name: str) -> int:
    value = header.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Undecodable(f"{name} is not an integer")
    return value


def _str(header: dict[str, object], name: str) -> str:
    value = header.get(name)
    if not isinstance(value, str):
        raise Undecodable(f"{name} is not a string")
    return value
