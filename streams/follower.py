"""The embedded stream: follow the event store's notification log in-process and project it in batches.

Thin by design (STYLE 5): read a batch of notifications, decode, call the pure `project`, hand the rows and the
batch's last position to the sink, which writes the rows and then the checkpoint. On start the sink deletes
whatever a crash left past its checkpoint and the follower resumes from there, so a restart neither loses nor
doubles anything. The SQLite recorder cannot `subscribe()`, so the follower polls.

An event that cannot be decoded or projected becomes a `projection_errors` row (data, not a dead worker); a
failing write (the store is down) is retried from the same position after a pause.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from eventsourcing.application import Application
from eventsourcing.persistence import Mapper, Notification

from projections.project import Row, Rows, project, project_error
from projections.store import ProjectionStore
from schemas import limits

log = logging.getLogger(__name__)

# A batch's bytes are the stored size of its events; a BlockApplied of 1,000 ML-DSA txs is ~10-14 MB.
# (Belongs with the other limits in schemas/limits.py.)
# The recorder returns whole pages, so the follower guesses event sizes to size a page: it starts from the
# largest event it expects (a full block of ML-DSA-87 txs), learns from each page, and forgets slowly.
EVENT_BYTES_GUESS_MAX = 16 * 1024 * 1024
EVENT_BYTES_GUESS_MIN = 1024
RETRY_PAUSE_MS_MAX = 5_000


class Follower:
    def __init__(
        self,
        app: Application[Any],
        store: ProjectionStore,
        *,
        batch_events_max: int = limits.FOLLOWER_BATCH_EVENTS_MAX,
        batch_bytes_max: int = limits.FOLLOWER_BATCH_BYTES_MAX,
        poll_interval_ms: int = limits.FOLLOWER_POLL_INTERVAL_MS,
    ) -> None:
        if batch_events_max < 1 or batch_bytes_max < 1 or poll_interval_ms < 1:
            raise ValueError("batch_events_max, batch_bytes_max and poll_interval_ms must be positive")
        self._app = app
        self._store = store
        self._events_max = batch_events_max
        self._bytes_max = batch_bytes_max
        self._poll_s = poll_interval_ms / 1000
        self._position = 0
        self._resumed = False
        self._event_bytes_guess = EVENT_BYTES_GUESS_MAX
        self._run_lock = threading.Lock()  # one batch at a time, whoever calls
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.events_projected = 0
        self.batches = 0
        self.rows_written = 0
        self.poison_events = 0
        self.failed_batches = 0
        self.recovered_rows = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------------------------------------- figures

    @property
    def position(self) -> int:
        """The last log position projected and checkpointed."""
        return self._position

    def log_position(self) -> int:
        """The last position of the log (0 when empty)."""
        return self._app.recorder.max_notification_id() or 0

    def lag(self) -> int:
        """Log events not projected yet."""
        return max(0, self.log_position() - self._position)

    def counters(self) -> dict[str, int]:
        """Monotonic counters since this follower was made (for /metrics)."""
        return {
            "events_projected": self.events_projected,
            "batches": self.batches,
            "rows_written": self.rows_written,
            "poison_events": self.poison_events,
            "failed_batches": self.failed_batches,
        }

    # ------------------------------------------------------------------------------------------ batches

    def resume(self) -> int:
        """Recovers the store (rows past its checkpoint go) and resumes from the checkpoint. Runs once."""
        with self._run_lock:
            return self._resume()

    def _resume(self) -> int:
        if not self._resumed:
            deleted = self._store.recover()
            self.recovered_rows += sum(deleted.values())
            if deleted:
                log.warning("projection recovery deleted rows past the checkpoint: %s", deleted)
            self._position = self._store.checkpoint()
            self._resumed = True
        return self._position

    def run_once(self) -> int:
        """Projects one batch (bounded by events and by bytes); returns the number of events projected."""
        with self._run_lock:
            self._resume()
            batch = self._read_batch()
            if not batch:
                return 0
            rows: Rows = defaultdict(list)
            for notification in batch:
                for table, table_rows in self._project(notification).items():
                    rows[table].extend(table_rows)
            last = batch[-1].id
            try:
                self.rows_written += self._store.write(rows, last)
            except BaseException:
                # Some tables may hold this batch's rows already: recover before the batch is tried again.
                self._resumed = False
                raise
            self._position = last
            self.events_projected += len(batch)
            self.batches += 1
            return len(batch)

    def run_until_caught_up(self) -> int:
        """Projects batches until the log has nothing new; returns the events projected."""
        total = 0
        while n := self.run_once():
            total += n
        return total

    def _read_batch(self) -> list[Notification]:
        """Notifications after the position: at most `batch_events_max`, and at most `batch_bytes_max` bytes
        unless a single event alone is larger (it then forms a batch by itself)."""
        batch: list[Notification] = []
        size = 0
        start = self._position + 1
        while len(batch) < self._events_max and size < self._bytes_max:
            limit = min(self._events_max - len(batch), max(1, (self._bytes_max - size) // self._event_bytes_guess))
            page: Sequence[Notification] = self._app.recorder.select_notifications(
                start, limit, inclusive_of_start=True
            )
            largest = 0
            for notification in page:
                nbytes = len(notification.state)
                largest = max(largest, nbytes)
                if batch and size + nbytes > self._bytes_max:
                    # Over budget: the rest of the page is read again by the next batch.
                    self._learn(largest)
                    return batch
                batch.append(notification)
                size += nbytes
            self._learn(largest)
            if len(page) < limit:
                break  # the log has nothing more for now
            start = page[-1].id + 1
        return batch

    def _learn(self, largest: int) -> None:
        self._event_bytes_guess = max(EVENT_BYTES_GUESS_MIN, largest, self._event_bytes_guess // 2)

    def _project(self, notification: Notification) -> dict[str, list[Row]]:
        """The event's rows, or its `projection_errors` row when it cannot be decoded or projected."""
        rows, error = project_notification(self._app.mapper, notification)
        if error is not None:
            self.poison_events += 1
            log.error("log position %d (%s): %s", notification.id, notification.topic, error)
        return rows

    # ------------------------------------------------------------------------------------------- thread

    def start(self) -> None:
        """Resumes (in the caller's thread, so that a broken store fails loudly) and polls in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("the follower is already running")
        self.resume()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="tally-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stops polling after the batch in flight, if any."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        pause_s = self._poll_s
        while not self._stopping.is_set():
            try:
                projected = self.run_once()
            except Exception as exc:  # the store or the log failed: keep the position, retry after a pause
                self.failed_batches += 1
                self.last_error = repr(exc)
                log.exception("projection batch failed after position %d; retrying", self._position)
                self._stopping.wait(pause_s)
                pause_s = min(pause_s * 2, RETRY_PAUSE_MS_MAX / 1000)
                continue
            pause_s = self._poll_s
            if not projected:
                self._stopping.wait(self._poll_s)


def project_notification(mapper: Mapper[Any], notification: Notification) -> tuple[Rows, str | None]:
    """(rows, None) of a stored event; (its `projection_errors` row, the error) when it cannot be decoded or
    projected. The embedded follower and the scaled workers (streams/faust_app.py) both project through this,
    so the same log gives the same rows, error rows included."""
    try:
        event = mapper.to_domain_event(notification)
    except Exception as exc:  # a poison message is data, never a dead follower (STYLE 5)
        error = f"cannot decode: {exc!r}"
        return project_error(notification.id, notification.topic, error, ""), error
    try:
        return project(notification.id, event), None  # type: ignore[arg-type]
    except Exception as exc:
        error = f"cannot project: {exc!r}"
        chain_id = str(getattr(event, "chain_id", ""))
        return project_error(notification.id, notification.topic, error, chain_id), error
