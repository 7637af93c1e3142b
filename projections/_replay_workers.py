"""Replay's worker processes (projections/replay.py): each decodes, projects and encodes ranges of the log in a
process of its own, and hands back Arrow IPC bytes; the replaying process only writes them, in log order.

Workers start with `forkserver`, never `fork`: the replaying process runs the chdb engine's threads. Each opens
the event store itself (the application's class and environment: an SQLite file or PostgreSQL, which other
processes can read), once, and exits when its owner is gone (accelerators/verify.py says why a worker must watch).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from accelerators.verify import exit_with_owner
from projections.columnar import by_schema, ipc_stream, record_batch
from projections.family import Rows, merge_rows
from projections.project import COLUMNS, project, project_error
from schemas.events import BlockApplied, BlockReapplied, LedgerEvent

_worker: dict[str, Any] = {}  # this worker's application and column types (set by `start`)


@dataclass
class Section:
    """What a run of consecutive notifications projected to: rows, and how far it went."""

    rows: Rows = field(default_factory=dict)
    position: int = 0  # the last position projected (0: none)
    events: int = 0
    poison: int = 0
    log_bytes: int = 0
    stopped: bool = False  # it met the first block above the height the replay stops at
    cpu_s: float = 0.0  # CPU seconds a worker process spent on it (0 when projected by the replaying process)


def above_height(event: LedgerEvent, height: int) -> bool:
    """Whether the event puts a block above `height` on the canonical chain (where a truncated replay stops)."""
    return isinstance(event, (BlockApplied, BlockReapplied)) and event.height > height


def project_section(mapper: Any, section: Sequence[Any], to_height: int | None) -> Section:
    """Decode and project notifications in order, until the first block above `to_height` (not projected). An
    event that cannot be decoded or projected becomes its `projection_errors` row, as the follower's do."""
    out = Section()
    for notification in section:
        try:
            event = mapper.to_domain_event(notification)
        except Exception as error:  # noqa: BLE001 - recorded as data, as the follower does
            merge_rows(out.rows, project_error(notification.id, notification.topic, f"{type(error).__name__}: {error}"))
            out.poison += 1
        else:
            if to_height is not None and above_height(event, to_height):
                out.stopped = True
                return out
            try:
                merge_rows(out.rows, project(notification.id, event))
            except Exception as error:  # noqa: BLE001
                merge_rows(out.rows, project_error(notification.id, notification.topic,
                                                   f"{type(error).__name__}: {error}", event.chain_id))
                out.poison += 1
        out.position = notification.id
        out.events += 1
        out.log_bytes += len(notification.state)
    return out


def record_batches(rows: Rows, types: dict[str, list[str]]) -> dict[str, list[pa.RecordBatch]]:
    return {table: [record_batch(COLUMNS[table], types[table], r)] for table, r in rows.items() if r}


# ------------------------------------------------------------------------------------------- in the worker


def start(app_class: type, env: dict[str, str], types: dict[str, list[str]], owner_pid: int) -> None:
    """Pool initializer: open the event store, keep the column types, watch the owner."""
    _worker["app"] = app_class(env=env)
    _worker["types"] = types

    exit_with_owner(owner_pid)


def prepare(
    first: int, last: int, to_height: int | None, section_events: int
) -> tuple[Section, dict[str, list[bytes]]]:
    """Positions `first`..`last` decoded, projected and encoded: (the range's Section, without its rows; per table,
    Arrow IPC streams, one per schema). Read `section_events` at a time."""
    began = time.process_time()
    app, types = _worker["app"], _worker["types"]
    done = Section(position=first - 1)
    batches: dict[str, list[pa.RecordBatch]] = {}
    cursor = first
    while cursor <= last and not done.stopped:
        notifications = app.recorder.select_notifications(cursor, min(section_events, last - cursor + 1))
        if not notifications:
            break
        part = project_section(app.mapper, notifications, to_height)
        for table, table_batches in record_batches(part.rows, types).items():
            batches.setdefault(table, []).extend(table_batches)
        done.position = part.position or done.position
        done.events += part.events
        done.poison += part.poison
        done.log_bytes += part.log_bytes
        done.stopped = part.stopped
        cursor = notifications[-1].id + 1
    streams = {table: [ipc_stream(group) for group in by_schema(b)] for table, b in batches.items()}
    done.cpu_s = time.process_time() - began
    return done, streams
