"""`events(fromPosition, kinds, first, after)`: browse the raw log, oldest first, with positions and hashes.

Read from the event store itself (the log is the truth; the views are derived), through `LogReader`. A kind filter
is applied on the stored topic, so events of other kinds are skipped without being decoded; a request scans at
most LOG_SCAN_MAX notifications, and its cursor lets the next request go on from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
import strawberry
from eventsourcing.utils import get_topic

from api import args
from api.args import BadArgument
from api.gql_types import BigInt, PageInfo
from schemas.events import EVENT_TYPES

LOG_SCAN_MAX = 20_000
_SECTION = 500
_PREFIX = "log:v1:"


@dataclass
class LogRow:
    position: int
    seq: int
    kind: str
    chain_id: str
    hash: str
    prev_hash: str
    recorded_at: str
    payload: dict[str, Any]


class LogReader:
    """The log as stored, from an eventsourcing application (its recorder and mapper). Blocking."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._kind_of_topic = {get_topic(cls): kind for kind, cls in EVENT_TYPES.items()}

    def events(self, start: int, kinds: frozenset[str] | None, want: int) -> tuple[list[LogRow], int]:
        """Up to `want` events at positions >= start (of `kinds`, when given), and the last position scanned."""
        rows: list[LogRow] = []
        scanned_to = start - 1
        cursor = start
        while len(rows) < want and cursor - start < LOG_SCAN_MAX:
            section = self._app.recorder.select_notifications(cursor, _SECTION)
            if not section:
                break
            for notification in section:
                scanned_to = notification.id
                kind = self._kind_of_topic.get(notification.topic, notification.topic)
                if kinds is not None and kind not in kinds:
                    continue
                event = self._app.mapper.to_domain_event(notification)
                rows.append(LogRow(
                    notification.id, event.seq, event.KIND, event.chain_id, event.hash(), event.prev_hash,
                    event.timestamp.isoformat(), event.payload(),
                ))
                if len(rows) == want:
                    break
            cursor = scanned_to + 1
        return rows, scanned_to


@strawberry.type(description="One event of the log, as stored.")
class LogEvent:
    position: BigInt = strawberry.field(description="Its place in the log (the notification id).")
    seq: BigInt = strawberry.field(description="Its sequence number in the hash chain.")
    kind: str
    chain_id: str
    hash: str = strawberry.field(description="blake3 of canonical {kind, seq, data}: the next event's prevHash.")
    prev_hash: str
    recorded_at: str = strawberry.field(description="When it was saved (recording metadata, outside the hash).")
    _payload: strawberry.Private[dict[str, Any]]

    @strawberry.field(description="The event's payload (its `data`, prevHash included) as canonical JSON text.")
    def data(self) -> str:
        try:
            return orjson.dumps(self._payload, option=orjson.OPT_SORT_KEYS).decode("utf-8")
        except TypeError:  # integers beyond 64 bits
            return json.dumps(self._payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@strawberry.type
class LogEventEdge:
    cursor: str
    node: LogEvent


@strawberry.type(description="Events of the log, oldest first.")
class LogEventConnection:
    edges: list[LogEventEdge]
    page_info: PageInfo


def _cursor(position: int) -> str:
    return f"{_PREFIX}{position}"


def _after(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.startswith(_PREFIX) or not cursor[len(_PREFIX):].isdigit() or len(cursor) > 40:
        raise BadArgument("after", "not an events cursor issued by this server")
    return int(cursor[len(_PREFIX):])


@strawberry.type
class Query:
    @strawberry.field(
        description="The raw log, oldest first, from `fromPosition` (default 1), optionally only some `kinds`"
        " (e.g. block_applied, chain_reorganized); each event with its position, hash and payload."
    )
    async def events(
        self,
        info: strawberry.Info,
        from_position: Annotated[BigInt | None, strawberry.argument(name="fromPosition")] = None,
        kinds: list[str] | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> LogEventConnection:
        reads = info.context.reads
        log: LogReader | None = getattr(reads, "log", None)
        if log is None:
            raise BadArgument("events", "this API process has no access to the log")
        size = args.page_size(first)
        wanted = None
        if kinds is not None:
            unknown = sorted(set(kinds) - set(EVENT_TYPES))
            if unknown:
                raise BadArgument("kinds", f"unknown kind(s) {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}")
            wanted = frozenset(kinds)
        start = max(1, int(from_position or 1))
        last_seen = _after(after)
        if last_seen is not None:
            start = max(start, last_seen + 1)

        def read() -> tuple[list[LogRow], int]:
            return log.events(start, wanted, size + 1)

        rows, scanned_to = await reads.run(read)
        more = len(rows) > size
        rows = rows[:size]
        end = rows[-1].position if rows else None
        if not more and len(rows) < size and scanned_to - start + 1 >= LOG_SCAN_MAX:
            more, end = True, scanned_to  # the scan limit was reached: go on from where it stopped
        edges = [
            LogEventEdge(cursor=_cursor(r.position), node=LogEvent(
                position=BigInt(r.position), seq=BigInt(r.seq), kind=r.kind, chain_id=r.chain_id, hash=r.hash,
                prev_hash=r.prev_hash, recorded_at=r.recorded_at, _payload=r.payload,
            ))
            for r in rows
        ]
        return LogEventConnection(
            edges=edges, page_info=PageInfo(has_next_page=more, end_cursor=_cursor(end) if end is not None else None)
        )
