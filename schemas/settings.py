"""Runtime settings: every DSN and path, from arguments, then TALLY_* environment variables, then a settings file
(TOML, named by TALLY_SETTINGS_FILE: keys are the field names below, e.g. `kafka_bootstrap = "kafka:9092"`), then
the defaults."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

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
    # PostgreSQL event store (event_store = "postgres"): eventsourcing's POSTGRES_* settings.
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_dbname: str = "tally"
    postgres_user: str = "tally"
    postgres_password: str = ""
    # Scaled deployment: the Kafka log (streams/relay.py) and the Faust workers (streams/faust_app.py).
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "tally"  # topics are PREFIX.blocks, PREFIX.votes, ..., PREFIX.relay, PREFIX.dead-letter
    topic_partitions: int = limits.TOPIC_PARTITIONS
    topic_replication: int = 1  # 3 in production (deploy/compose.yaml runs one broker, so 1 there)
    relay_batch_events_max: int = limits.RELAY_BATCH_EVENTS_MAX
    relay_poll_interval_ms: int = limits.FOLLOWER_POLL_INTERVAL_MS
    relay_metrics_host: str = "127.0.0.1"  # the relay's /metrics: loopback unless told otherwise
    relay_metrics_port: int = 6065
    stream_batch_events_max: int = limits.STREAM_BATCH_EVENTS_MAX
    stream_batch_wait_ms: int = limits.STREAM_BATCH_WAIT_MS
    stream_session_timeout_ms: int = limits.STREAM_SESSION_TIMEOUT_MS
    # The event families a worker projects (comma-separated; empty: all). Workers serving the same families form
    # one consumer group and share its partitions; see docs/operations.md, Scale.
    stream_families: str = ""
    # Appended to the consumer group's name. Leave empty in production. The tests' broker (noida-db) never
    # expires the session of a member killed with SIGKILL, so a restarted worker there joins a group of its own.
    stream_group_suffix: str = ""
    stream_web_host: str = "127.0.0.1"  # the Faust worker's web server (/metrics): loopback unless told otherwise
    stream_web_port: int = 6066

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
            return {
                "PERSISTENCE_MODULE": "eventsourcing.postgres",
                "POSTGRES_HOST": self.postgres_host,
                "POSTGRES_PORT": str(self.postgres_port),
                "POSTGRES_DBNAME": self.postgres_dbname,
                "POSTGRES_USER": self.postgres_user,
                "POSTGRES_PASSWORD": self.postgres_password,
                # The single stream's appends wait on one another; fail a stuck one rather than hang.
                "POSTGRES_LOCK_TIMEOUT": "10",
            }
        raise ValueError(f"unknown event store {self.event_store!r}: expected 'sqlite' or 'postgres'")

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def from_env(**overrides: object) -> Settings:
    """Settings from explicit overrides (None values are ignored), then TALLY_<FIELD> variables (TALLY_PORT,
    TALLY_KAFKA_BOOTSTRAP, ...), then the TOML file named by TALLY_SETTINGS_FILE, then the defaults.
    Eventsourcing's own POSTGRES_* variables fill the postgres_* fields when TALLY_POSTGRES_* are unset."""
    env = os.environ
    values: dict[str, Any] = {}
    settings_file = env.get("TALLY_SETTINGS_FILE", "")
    if settings_file:
        with open(settings_file, "rb") as fh:
            values.update(tomllib.load(fh))
    types = {f.name: f.type for f in fields(Settings)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ValueError(f"{settings_file}: unknown settings {unknown}")
    for name in types:
        for var in (f"TALLY_{name.upper()}", name.upper() if name.startswith("postgres_") else None):
            if var and var in env:
                values[name] = env[var]
                break
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**{name: _coerce(name, types[name], value) for name, value in values.items()})


def _coerce(name: str, type_name: Any, value: Any) -> Any:
    """A setting's value in its field's type; a clear error naming the setting otherwise."""
    try:
        if type_name in ("int", int):
            if isinstance(value, bool):
                raise ValueError("a boolean is not an integer")
            return int(value)
        if type_name in ("Path", Path):
            return Path(value)
        if type_name in ("str", str):
            if not isinstance(value, str):
                raise ValueError(f"expected a string, got {type(value).__name__}")
            return value
    except ValueError as exc:
        raise ValueError(f"setting {name}: {value!r} is not valid: {exc}") from None
    return value
