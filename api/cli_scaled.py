"""The scaled deployment's commands (deploy/, docs/operations.md), on the `tally` group:

  tally topics create|check     the Kafka topics, created by the project with the configured partitions
  tally views create            the projection tables on the ClickHouse server (the DDL, rebuilt when it changed)
  tally relay                   the event store's log onto Kafka (streams/relay.py)
  tally stream                  one Faust worker (streams/faust_app.py); run several to share the partitions
  tally writer                  the write side alone: intake and devnet on the event store, no projection
  tally api                     a stateless read replica: GraphQL, /healthz, /readyz, /metrics
  tally dashboards push         Grafana dashboards of deploy/grafana/ through grafana-api

Settings come from TALLY_* variables and TALLY_SETTINGS_FILE (schemas/settings.py); options override them.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click

from schemas.settings import Settings, from_env

log = logging.getLogger("tally")
DASHBOARDS_DIR = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards"
EXIT_FAILED = 1


def _logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _fail(message: str) -> None:
    click.echo(f"tally: {message}", err=True)
    sys.exit(EXIT_FAILED)


# ---------------------------------------------------------------------------------------------- topics


@click.group()
def topics() -> None:
    """The Kafka topics of the scaled deployment."""


@topics.command("create")
@click.option("--partitions", type=click.IntRange(min=1), default=None, help="Partitions per data topic.")
def topics_create(partitions: int | None) -> None:
    """Create every missing topic (existing ones are left as they are)."""
    from streams.topics import create_topics

    settings = from_env(topic_partitions=partitions)
    for topic, outcome in create_topics(settings).items():
        click.echo(f"{topic}: {outcome}")


@topics.command("check")
def topics_check() -> None:
    """Print every topic and its partitions; exit 1 when one is missing."""
    from streams.topics import TopicsMissing, partition_counts

    try:
        counts = partition_counts(from_env())
    except TopicsMissing as exc:
        _fail(str(exc))
    for topic, n in counts.items():
        click.echo(f"{topic}: {n} partitions")


# ----------------------------------------------------------------------------------------------- views


@click.group()
def views() -> None:
    """The projection tables."""


@views.command("create")
def views_create() -> None:
    """Create the tables on TALLY_PROJECTION_DSN; a changed DDL drops and recreates them (a replay follows)."""
    from projections.store import ProjectionStore

    settings = from_env()
    store = ProjectionStore(settings.views_dsn)
    try:
        click.echo(f"views in {store.database} at {_redacted(settings.views_dsn)}: DDL {store.ddl_fingerprint()}")
    finally:
        store.close()


def _redacted(dsn: str) -> str:
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return dsn


def open_views(settings: Settings) -> Any:
    """The projection store, checked to hold the tables of this version's DDL (never created here: two workers
    starting at once must not both rebuild them; `tally views create` does it once)."""
    from projections.store import ProjectionStore, ddl_fingerprint

    store = ProjectionStore(settings.views_dsn, create=False)
    stored = store.ddl_fingerprint() if store.database in _databases(store) else None
    if stored != ddl_fingerprint():
        store.close()
        _fail(f"the views at {_redacted(settings.views_dsn)} are {'missing' if stored is None else 'of another DDL'}"
              ": run `tally views create` first")
    return store


def _databases(store: Any) -> list[str]:
    return [str(r[0]) for r in store.client.query("SELECT name FROM system.databases").result_rows]


# ----------------------------------------------------------------------------------------------- relay


@click.command()
@click.option("--metrics-port", type=int, default=None, help="The relay's /metrics [default: 6065].")
@click.option("--metrics-host", default=None, help="Its address [default: 127.0.0.1].")
def relay(metrics_port: int | None, metrics_host: str | None) -> None:
    """Publish the event store's log to Kafka, in order, resuming after the last position published."""
    from streams.relay import Relay, RelayError, serve_metrics
    from streams.topics import TopicsMissing, partition_counts
    from writes.service import LedgerApplication

    _logging()
    settings = from_env(relay_metrics_port=metrics_port, relay_metrics_host=metrics_host)
    try:
        partition_counts(settings)
    except TopicsMissing as exc:
        _fail(str(exc))
    app = LedgerApplication(env=settings.event_store_env())
    publisher = Relay(app, settings)
    _stop_on_signals(publisher.stop)
    try:
        server = serve_metrics(publisher, settings.relay_metrics_host, settings.relay_metrics_port)
    except OSError as exc:
        publisher.close()
        app.close()
        _fail(f"--metrics-port {settings.relay_metrics_port}: cannot listen on {settings.relay_metrics_host}: {exc}")
    click.echo(f"tally relay: {settings.event_store} log -> {settings.kafka_bootstrap}, after position "
               f"{publisher.position}; /metrics on {settings.relay_metrics_host}:{settings.relay_metrics_port}",
               err=True)
    try:
        publisher.run()
    except RelayError as exc:
        _fail(str(exc))
    finally:
        server.shutdown()
        publisher.close()
        app.close()


def _stop_on_signals(stop: Any) -> None:
    def handle(signum: int, frame: Any) -> None:
        stop()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


# ---------------------------------------------------------------------------------------------- stream


@click.command()
@click.option("--web-port", type=int, default=None, help="The worker's web server (/metrics) [default: 6066].")
@click.option("--web-host", default=None, help="Its address [default: 127.0.0.1].")
@click.option("--families", default=None, help="Families to project, e.g. blocks,transactions [default: all].")
def stream(web_port: int | None, web_host: str | None, families: str | None) -> None:
    """Run one Faust worker projecting the Kafka topics into the views (topics and views checked first)."""
    from faust.worker import Worker

    from streams.faust_app import build_app, served_families
    from streams.topics import TopicsMissing, data_partition_counts

    _logging()
    settings = from_env(stream_web_port=web_port, stream_web_host=web_host, stream_families=families)
    try:
        served_families(settings)
        partitions = data_partition_counts(settings)
    except (TopicsMissing, ValueError) as exc:
        _fail(str(exc))
    store = open_views(settings)
    app, projector = build_app(settings, store, partitions)
    click.echo(f"tally stream: {sum(partitions.values())} partitions of {len(partitions)} topics at "
               f"{settings.kafka_bootstrap}; metrics at http://{settings.stream_web_host}:"
               f"{settings.stream_web_port}/metrics", err=True)
    worker = Worker(app, loglevel="WARNING", redirect_stdouts=False, override_logging=False)
    try:
        worker.execute_from_commandline()
    finally:
        projector.close()
        store.close()


# ---------------------------------------------------------------------------------------- writer / api


@click.command()
@click.option("--no-devnet", is_flag=True, help="Do not run the devnet generator.")
@click.option("--block-interval-ms", type=click.IntRange(min=10), default=1000, show_default=True,
              envvar="TALLY_DEVNET_BLOCK_INTERVAL_MS")
@click.option("--txs-per-block", type=click.IntRange(min=0), default=20, show_default=True,
              envvar="TALLY_DEVNET_TXS_PER_BLOCK")
def writer(no_devnet: bool, block_interval_ms: int, txs_per_block: int) -> None:
    """The write side of the scaled deployment: intake (and a devnet) on the event store; the workers project.
    One writer per log. Also serves GraphQL from the views, like a replica."""
    from projections.queries import ReadModel
    from writes.devnet import CHAIN_ID, Devnet
    from writes.service import LedgerService
    from writes.txpool import TxPool

    _logging()
    settings = from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    service = LedgerService(settings)
    store = open_views(settings)
    generator = None
    pool = None if no_devnet else TxPool(CHAIN_ID)
    try:
        if not no_devnet:
            generator = Devnet(service, settings.data_dir, block_interval_ms=block_interval_ms,
                               txs_per_block=txs_per_block, pool=pool)
            generator.start()
        _serve(settings, ReadModel(store), service, pool)
    finally:
        if generator is not None:
            generator.stop()
        store.close()
        service.close()


class ReplicaLog:
    """What a read replica needs of the write side: the log's last position (for /readyz and /metrics). It
    appends nothing: commands go to the writer."""

    REASON = "read_replica"

    def __init__(self, settings: Settings) -> None:
        from writes.service import LedgerApplication

        self._app = LedgerApplication(env=settings.event_store_env())

    def max_position(self) -> int:
        return self._app.recorder.max_notification_id() or 0

    def submit(self, obj: Any) -> dict[str, Any]:
        kind = obj.get("kind") if isinstance(obj, dict) else None
        return {"status": "rejected", "kind": kind if isinstance(kind, str) else None, "reason": self.REASON,
                "message": "this is a read replica: send commands to the writer"}

    def submit_many(self, objs: list[Any]) -> list[dict[str, Any]]:
        return [self.submit(obj) for obj in objs]

    def close(self) -> None:
        self._app.close()


@click.command()
@click.option("--port", type=int, default=None, help="API port [default: 8000].")
@click.option("--host", default=None, help="API host [default: 127.0.0.1].")
def api(port: int | None, host: str | None) -> None:
    """A stateless read replica: GraphQL over the views, /healthz, /readyz, /metrics; run as many as needed."""
    from projections.queries import ReadModel

    _logging()
    settings = from_env(port=port, host=host)
    store = open_views(settings)
    replica = ReplicaLog(settings)
    try:
        _serve(settings, ReadModel(store), replica, None)
    finally:
        replica.close()
        store.close()


def _serve(settings: Settings, read_model: Any, service: Any, pool: Any) -> None:
    import uvicorn

    from api.app import create_app

    app = create_app(read_model, service, settings=settings, pool=pool)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning"))
    click.echo(f"tally: GraphQL at http://{settings.host}:{settings.port}/graphql", err=True)
    server.run()


# ------------------------------------------------------------------------------------------ dashboards


@click.group()
def dashboards() -> None:
    """Grafana dashboards (deploy/grafana/dashboards/*.json)."""


@dashboards.command("push")
@click.option("--url", required=True, help="Grafana's base URL, e.g. http://grafana:3000.")
@click.option("--api-key", required=True, envvar="GRAFANA_API_KEY", help="A Grafana API key (or service token).")
@click.option("--folder-id", type=int, default=0, show_default=True, help="Grafana folder id (0: General).")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A folder of dashboard JSON files [default: deploy/grafana/dashboards of this checkout].")
def dashboards_push(url: str, api_key: str, folder_id: int, folder: Path | None) -> None:
    """Create or update every dashboard (overwrite by uid)."""
    from api.dashboards import DashboardError, push_dashboards

    folder = folder or DASHBOARDS_DIR
    if not folder.is_dir():
        _fail(f"--dir {folder}: no such folder (outside a checkout, give the dashboards' folder)")
    try:
        for title, outcome in push_dashboards(url, api_key, folder, folder_id=folder_id):
            click.echo(f"{title}: {outcome}")
    except DashboardError as exc:
        _fail(str(exc))


COMMANDS = (topics, views, relay, stream, writer, api, dashboards)


def register(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)

