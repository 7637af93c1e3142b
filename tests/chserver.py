"""A ClickHouse HTTP endpoint over the in-process ClickHouse engine (chdb), for tests of the scaled deployment.

No ClickHouse server can be installed here, and chdb opens one data path in one process only, so two Faust
workers and two API replicas cannot share a chdb path. This process owns the path and answers ClickHouse's HTTP
interface, so every other process uses the production client path unchanged: `clickhouse_connect.get_client(
dsn="http://127.0.0.1:PORT")`, Native format over HTTP, compressed inserts, bound parameters, settings.

What it implements of the interface is what clickhouse-connect sends: the query in the URL (`query=`) or the
body, `database`, `param_*` bound parameters, settings as URL parameters (transport-only ones ignored), an
insert's data in the body (lz4/zstd/gzip as Content-Encoding) when the query is in the URL, the response's
`X-ClickHouse-Format`/`-Timezone`/`-Summary` headers, and errors as HTTP 500 with `X-ClickHouse-Exception-Code`.
Requests are served one at a time (the engine is one process; it also avoids sharing a handle across threads).

Run: `python -m tests.chserver --path DIR --port N` (prints "ready" when it answers).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb
from clickhouse_connect.driver._backend.chdb_backend import CHDB_TRANSPORT_SETTINGS, _decompress

_TRANSPORT = set(CHDB_TRANSPORT_SETTINGS) | {"default_format", "query", "database", "extremes"}
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_INLINE_INSERT = re.compile(rb"\s*INSERT\s[^\n]*?\bFORMAT\s+\w+[ \t]*\r?\n", re.IGNORECASE)
_CODE = re.compile(r"Code: (\d+)")
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Engine:
    """The chdb engine of this process, one request at a time, each on a handle of its own."""

    def __init__(self, path: str) -> None:
        self.path = os.path.realpath(path)
        self._keep = chdb.connect(self.path)  # holds the engine open between requests
        self._lock = threading.Lock()

    def execute(self, params: dict[str, str], body: bytes) -> tuple[bytes, str | None, int]:
        """(response body, result format or None, rows written)."""
        query = params.get("query", "")
        insert_data = bool(query) and bool(body)
        inline = None if query else _INLINE_INSERT.match(body)
        if inline:  # clickhouse-connect puts "INSERT ... FORMAT Native\n" before the data of its first block
            query, body, insert_data = inline.group(0).decode("utf-8").strip(), body[inline.end():], True
        sql = query if insert_data else (query + ("\n" if query and body else "") + body.decode("utf-8"))
        fmt_match = _TRAILING_FORMAT.search(sql)
        fmt = fmt_match.group(1) if fmt_match else params.get("default_format", "TabSeparated")
        binds = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        settings = {k: v for k, v in params.items() if k not in _TRANSPORT and not k.startswith("param_")}
        with self._lock:
            conn = chdb.connect(self.path)
            try:
                if params.get("database"):
                    conn.query(f"USE `{params['database']}`", "TabSeparated")
                for key, value in settings.items():
                    if not _SETTING_NAME.fullmatch(key):
                        raise ValueError(f"Code: 115. DB::Exception: Unknown setting {key}")
                    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
                    conn.query(f"SET {key} = '{escaped}'", "TabSeparated")
                if insert_data:
                    return self._insert(conn, sql, fmt, body), None, 0
                result = conn.query(sql, fmt, params=binds)
                data = result.bytes() if hasattr(result, "bytes") else bytes(result)
                return data, fmt if fmt_match or _is_select(sql) else None, 0
            finally:
                conn.close()

    def _insert(self, conn: Any, sql: str, fmt: str, data: bytes) -> bytes:
        with tempfile.NamedTemporaryFile(suffix=".native", delete=False) as fh:
            fh.write(data)
            path = fh.name
        try:
            head = _TRAILING_FORMAT.sub("", sql).rstrip()
            conn.query(f"{head} FROM INFILE '{path}' FORMAT {fmt}", "TabSeparated")
        finally:
            os.unlink(path)
        return b""


def _is_select(sql: str) -> bool:
    return sql.lstrip().split(None, 1)[0].upper() in ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS")


def make_handler(engine: Engine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY, as a ClickHouse server sends: a reply goes out in two writes (headers, then body), and
        # without it the second waits for the client's delayed ACK, 40 ms a request (tests/test_chserver.py).
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _answer(self) -> None:
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            body = self._body()
            encoding = self.headers.get("Content-Encoding")
            if url.path.rstrip("/") == "/ping":
                return self._send(200, b"Ok.\n", {})
            try:
                if body and encoding:
                    body = _decompress(body, encoding)
                data, fmt, _ = engine.execute(params, body)
            except Exception as exc:
                message = str(exc)
                idx = message.find("Code: ")
                message = message[idx:] if idx >= 0 else f"Code: 1001. DB::Exception: {message}"
                code = _CODE.search(message)
                return self._send(500, message.encode(), {"X-ClickHouse-Exception-Code": code.group(1) if code
                                                          else "1001"})
            headers = {"X-ClickHouse-Timezone": "UTC", "X-ClickHouse-Summary": json.dumps(
                {"read_rows": "0", "read_bytes": "0", "written_rows": "0", "written_bytes": "0"})}
            if fmt:
                headers["X-ClickHouse-Format"] = fmt
            if "query_id" in params:
                headers["X-ClickHouse-Query-Id"] = params["query_id"]
            self._send(200, data, headers)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # inserts stream their blocks
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _answer
        do_POST = _answer

    return Handler


def serve(path: str, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(Engine(path)))
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.chserver")
    parser.add_argument("--path", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = serve(args.path, args.port)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
