"""Grafana dashboards as JSON (deploy/grafana/dashboards/), pushed with grafana-api (`tally dashboards push`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class DashboardError(Exception):
    """A dashboard file is invalid or Grafana refused it (the message names which)."""


def load_dashboards(folder: Path) -> list[dict[str, Any]]:
    """Every dashboard of the folder, checked: JSON objects with a uid, a title and panels."""
    dashboards = []
    for path in sorted(folder.glob("*.json")):
        try:
            board = json.loads(path.read_text("utf-8"))
        except ValueError as exc:
            raise DashboardError(f"{path.name}: not JSON: {exc}") from None
        for field in ("uid", "title", "panels"):
            if field not in board:
                raise DashboardError(f"{path.name}: no {field!r}")
        dashboards.append(board)
    if not dashboards:
        raise DashboardError(f"no dashboards in {folder}")
    return dashboards


def push_dashboards(url: str, api_key: str, folder: Path, *, folder_id: int = 0) -> Iterator[tuple[str, str]]:
    """Creates or updates (by uid) each dashboard; yields (title, Grafana's status)."""
    from grafana_api.grafana_face import GrafanaFace

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DashboardError(f"--url {url!r} is not an http(s) URL")
    # grafana-api builds "{protocol}://{host}:{port}/{prefix}api": a prefix (Grafana under a sub-path) needs its
    # own trailing slash.
    prefix = parts.path.strip("/")
    grafana = GrafanaFace(
        auth=api_key, host=parts.hostname, port=parts.port, protocol=parts.scheme,
        url_path_prefix=f"{prefix}/" if prefix else "", verify=True,
    )
    for board in load_dashboards(folder):
        payload = {"dashboard": {**board, "id": None}, "folderId": folder_id, "overwrite": True,
                   "message": "tally dashboards push"}
        try:
            answer = grafana.dashboard.update_dashboard(payload)
        except Exception as exc:
            raise DashboardError(f"{board['title']}: Grafana at {url} refused it: {exc}") from exc
        yield board["title"], str(answer.get("status", answer))
