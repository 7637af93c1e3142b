"""Real parts of the scaled deployment, started on 127.0.0.1 by the tests and benchmarks that use them, and
stopped by them (each by the process id it started): PostgreSQL from the machine's binaries, the Kafka-protocol
broker of noida-db, the ClickHouse HTTP endpoint over chdb (tests/chserver.py), Prometheus (Debian's package,
installed here when missing), and `tally` processes (relay, workers, API replicas).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import noida_db

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/local/bin")
NOIDA_BIN = Path(noida_db.__file__).resolve().parent / "noida-db"
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = START_TIMEOUT_S, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL: the process this test started, by its id."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(30)


# ------------------------------------------------------------------------------------------- PostgreSQL


def _as_postgres(cmd: Sequence[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its binaries as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


@contextlib.contextmanager
def postgres(base: Path) -> Iterator[dict[str, str]]:
    """A PostgreSQL cluster of its own (trust auth on 127.0.0.1); yields eventsourcing's POSTGRES_* settings
    (`host`, `port`, `dbname`, `user`) and, for `postgres_stop` and `postgres_start`, its `data` and `options`."""
    if os.geteuid() == 0:
        # The postgres user cannot enter root's private temporary folders: a folder of its own under /tmp.
        base = Path(tempfile.mkdtemp(prefix="tally-pg-"))
        shutil.chown(base, "postgres")
    data = base / "pgdata"
    data.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    port = free_port()
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "tally", "--auth=trust",
                                 "-E", "UTF8", "--no-sync"]), check=True, capture_output=True)
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                                 str(data / "log"), "-w", "-t", "60", "start"]), check=True, capture_output=True)
    try:
        subprocess.run(_as_postgres(["/usr/lib/postgresql/15/bin/createdb", "-h", "127.0.0.1", "-p", str(port),
                                     "-U", "tally", "tally"]), check=True, capture_output=True)
        yield {"host": "127.0.0.1", "port": str(port), "dbname": "tally", "user": "tally", "data": str(data),
               "options": options}
    finally:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True)
        if os.geteuid() == 0:
            shutil.rmtree(base, ignore_errors=True)


def postgres_stop(cfg: dict[str, str]) -> None:
    """Stops the cluster of `postgres()` (fast shutdown: sessions are cut), to see what its outage does."""
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", cfg["data"], "-m", "fast", "-w", "stop"]),
                   check=True, capture_output=True)


def postgres_start(cfg: dict[str, str]) -> None:
    """Starts it again, on the same port and data."""
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", cfg["data"], "-o", cfg["options"], "-l",
                                 str(Path(cfg["data"]) / "log"), "-w", "-t", "60", "start"]),
                   check=True, capture_output=True)


# ----------------------------------------------------------------------------------------------- broker


@contextlib.contextmanager
def broker(base: Path, port: int | None = None) -> Iterator[str]:
    """noida-db speaking the Kafka protocol; yields its bootstrap address. Given the port and `base` of one
    stopped before, it starts that broker again, its data kept."""
    port = port or free_port()
    (base / "broker").mkdir(parents=True, exist_ok=True)
    proc = spawn([str(NOIDA_BIN), "start", "--data-dir", str(base / "broker"), "--host", "127.0.0.1", "--only",
                  "kafka", "--kafka-port", str(port)], base / "broker.log")
    try:
        wait_port(port, proc=proc)
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


# ----------------------------------------------------------------------------------- ClickHouse over chdb


@contextlib.contextmanager
def clickhouse(base: Path, port: int | None = None) -> Iterator[str]:
    """tests/chserver.py on a chdb path of its own; yields the http:// DSN. Given the port and `base` of one
    stopped before, it serves that path again."""
    port = port or free_port()
    proc = spawn([sys.executable, "-m", "tests.chserver", "--path", str(base / "chdb"), "--port", str(port)],
                 base / "clickhouse.log")
    try:
        wait_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


# ---------------------------------------------------------------------------------------------- processes


def spawn(cmd: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A child process with its output in `log_path` (appended: restarts share the file)."""
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=ROOT, env={**os.environ, **(env or {})})


def tally(args: Sequence[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return spawn([sys.executable, "-m", "api", *args], log_path, env)


def scaled_env(*, postgres_cfg: dict[str, str] | None, bootstrap: str, dsn: str, prefix: str,
               partitions: int, data_dir: Path) -> dict[str, str]:
    env = {
        "TALLY_KAFKA_BOOTSTRAP": bootstrap, "TALLY_PROJECTION_DSN": dsn, "TALLY_TOPIC_PREFIX": prefix,
        "TALLY_TOPIC_PARTITIONS": str(partitions), "TALLY_DATA_DIR": str(data_dir),
        "TALLY_STREAM_SESSION_TIMEOUT_MS": os.environ.get("SESSION_MS", "6000"), "TALLY_STREAM_BATCH_WAIT_MS": "100",
        "TALLY_VERIFY_WORKERS": "1", "PYTHONUNBUFFERED": "1",
        "TALLY_RELAY_METRICS_PORT": str(free_port()),  # never the default port another run may hold
    }
    if postgres_cfg is not None:
        env.update({"TALLY_EVENT_STORE": "postgres", "TALLY_POSTGRES_HOST": postgres_cfg["host"],
                    "TALLY_POSTGRES_PORT": postgres_cfg["port"], "TALLY_POSTGRES_DBNAME": postgres_cfg["dbname"],
                    "TALLY_POSTGRES_USER": postgres_cfg["user"]})
    return env


def wait_http(url: str, timeout_s: float = START_TIMEOUT_S, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout_s} s")


# ------------------------------------------------------------------------------------------- Prometheus


def prometheus_binary() -> str:
    """Debian's Prometheus, installed when missing (apt-get: needs root and the package registry)."""
    found = shutil.which("prometheus")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"], check=True,
                   capture_output=True, env=env)
    # The package starts a service on :9090 where systemd runs; the tests start their own on a free port.
    return shutil.which("prometheus") or "/usr/bin/prometheus"


@contextlib.contextmanager
def prometheus(base: Path, targets: dict[str, list[str]], scrape_interval_ms: int = 1000) -> Iterator[str]:
    """Prometheus scraping `targets` (job -> ["127.0.0.1:port", ...]); yields its base URL."""
    binary = prometheus_binary()
    port = free_port()
    jobs = "\n".join(
        f"  - job_name: {job}\n    metrics_path: /metrics\n    static_configs:\n      - targets: {list(addrs)!r}"
        for job, addrs in targets.items()
    )
    config = base / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: {scrape_interval_ms}ms\n  evaluation_interval: 1s\n"
                      f"scrape_configs:\n{jobs}\n")
    proc = spawn([binary, f"--config.file={config}", f"--storage.tsdb.path={base / 'prom-data'}",
                  f"--web.listen-address=127.0.0.1:{port}"], base / "prometheus.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
