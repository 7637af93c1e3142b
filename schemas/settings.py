"""Runtime settings: every DSN and path, from arguments, then TALLY_* environment variables, then defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from schemas import limits


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8000
    # Event store: "sqlite" (default, a file under data_dir) or "postgres" (scaled deployment).
    event_store: str = "sqlite"
    # Projection store DSN; empty means the chdb engine under data_dir/views.
    projection_dsn: str = ""
    ready_lag_events_max: int = limits.READY_LAG_EVENTS_MAX
    follower_batch_events_max: int = limits.FOLLOWER_BATCH_EVENTS_MAX
    follower_poll_interval_ms: int = limits.FOLLOWER_POLL_INTERVAL_MS
    request_bytes_max: int = limits.REQUEST_BYTES_MAX
    verify_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    # Proof of reserves: attest every bridged asset each time finality passes a multiple of this height (0: only
    # on request), with leaf ids blinded by the secret in this file (created on first start; empty: under data_dir).
    reserves_every_blocks: int = limits.RESERVES_EVERY_BLOCKS
    reserves_secret_file: str = ""

    @property
    def reserves_secret_path(self) -> Path:
        if self.reserves_secret_file:
            return Path(self.reserves_secret_file)
        return self.data_dir.resolve() / "reserves.key"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir.resolve() / "events.sqlite"

    @property
    def views_dsn(self) -> str:
        return self.projection_dsn or f"chdb://{(self.data_dir.resolve() / 'views').as_posix()}"

    def event_store_env(self) -> dict[str, str]:
        """The eventsourcing library's environment for the chosen event store."""
        if self.event_store == "sqlite":
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.sqlite_path),
                "SQLITE_LOCK_TIMEOUT": "10",
            }
        if self.event_store == "postgres":
            keys = ("POSTGRES_DBNAME", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD")
            env = {"PERSISTENCE_MODULE": "eventsourcing.postgres"}
            env.update({k: os.environ[k] for k in keys if k in os.environ})
            return env
        raise ValueError(f"unknown event store {self.event_store!r}: expected 'sqlite' or 'postgres'")

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def from_env(**overrides: object) -> Settings:
    """Settings from TALLY_* variables, then explicit overrides (None values are ignored)."""
    env = os.environ
    base = Settings(
        data_dir=Path(env.get("TALLY_DATA_DIR", "data")),
        host=env.get("TALLY_HOST", "127.0.0.1"),
        port=int(env.get("TALLY_PORT", "8000")),
        event_store=env.get("TALLY_EVENT_STORE", "sqlite"),
        projection_dsn=env.get("TALLY_PROJECTION_DSN", ""),
        ready_lag_events_max=int(env.get("TALLY_READY_LAG_EVENTS_MAX", str(limits.READY_LAG_EVENTS_MAX))),
        reserves_every_blocks=int(env.get("TALLY_RESERVES_EVERY_BLOCKS", str(limits.RESERVES_EVERY_BLOCKS))),
        reserves_secret_file=env.get("TALLY_RESERVES_SECRET_FILE", ""),
    )
    return base.with_(**{k: v for k, v in overrides.items() if v is not None})
