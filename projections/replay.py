"""Replay: rebuild every projection from the log into a store (`tally replay`).

The same pure `project` as the follower and the Faust workers, the same sink rules (rows, then the checkpoint;
`recover` on start), so a replay is deterministic (the same log gives identical tables) and resumable (an
interrupted replay resumes from the store's checkpoint). A replay can stop before the first block above a height,
giving the views as they were when the chain stood there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from projections.family import Rows, merge_rows
from projections.project import project, project_error
from projections.store import ProjectionStore
from schemas import limits
from schemas.events import BlockApplied, BlockReapplied, LedgerEvent

SECTION_EVENTS = 2_000
BATCH_BYTES_MAX = limits.FOLLOWER_BATCH_BYTES_MAX


@dataclass
class ReplayResult:
    start: int  # the first position replayed
    position: int  # the last position replayed (and checkpointed)
    events: int
    poison: int
    seconds: float
    stopped_at_height: bool = False

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class ReplayGap(ValueError):
    """Replaying from a position would leave positions unprojected (or project some twice)."""


def above_height(event: LedgerEvent, height: int) -> bool:
    """Whether the event puts a block above `height` on the canonical chain (where a truncated replay stops)."""
    return isinstance(event, (BlockApplied, BlockReapplied)) and event.height > height


def replay(
    app: Any,
    store: ProjectionStore,
    *,
    from_position: int | None = None,
    to_height: int | None = None,
    progress: Callable[[int], None] = lambda _: None,
) -> ReplayResult:
    """Project the log into `store` from its checkpoint (or `from_position`, which must follow it) to the end of
    the log as it stands now, or until the first block above `to_height`. `progress(n)` after each batch."""
    store.recover()
    checkpoint = store.checkpoint()
    start = checkpoint + 1 if from_position is None else from_position
    if from_position is not None and checkpoint not in (0, from_position - 1):
        raise ReplayGap(
            f"the store is checkpointed at {checkpoint}: replay from {checkpoint + 1} (or into a fresh store)"
        )
    end = app.recorder.max_notification_id() or 0
    began = time.perf_counter()
    events = poison = 0
    position = start - 1
    rows: Rows = {}
    pending_bytes = 0
    stopped = False
    cursor = start
    while cursor <= end and not stopped:
        section = app.recorder.select_notifications(cursor, min(SECTION_EVENTS, end - cursor + 1))
        if not section:
            break
        for notification in section:
            try:
                event = app.mapper.to_domain_event(notification)
            except Exception as error:  # noqa: BLE001 - recorded as data, as the follower does
                merge_rows(rows, project_error(notification.id, notification.topic, f"{type(error).__name__}: {error}"))
                poison += 1
            else:
                if to_height is not None and above_height(event, to_height):
                    stopped = True
                    break
                try:
                    merge_rows(rows, project(notification.id, event))
                except Exception as error:  # noqa: BLE001
                    merge_rows(rows, project_error(notification.id, notification.topic,
                                                   f"{type(error).__name__}: {error}", event.chain_id))
                    poison += 1
            position = notification.id
            events += 1
            pending_bytes += len(notification.state)
            if pending_bytes >= BATCH_BYTES_MAX:
                store.write(rows, position)
                progress(events)
                rows, pending_bytes = {}, 0
        cursor = section[-1].id + 1
        if rows or position > store.checkpoint():
            store.write(rows, position)
            progress(events)
            rows, pending_bytes = {}, 0
    return ReplayResult(start, position, events, poison, time.perf_counter() - began, stopped)
