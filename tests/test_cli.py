"""`tally submit`: file parsing, batching, exit codes; then against a real `tally up --no-devnet`."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from api.cli import (
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_UNREACHABLE,
    Entry,
    batches,
    main,
    merge_results,
    parse_lines,
    request_body,
    submit_file,
)
from writes.devnet import build_chain

ROOT = Path(__file__).resolve().parent.parent
SEED = bytes(range(32))
READY_TIMEOUT_S = 90.0


def test_parse_lines_skips_blanks_and_refuses_non_json_in_place() -> None:
    entries = list(parse_lines(['{"kind":"vote"}\n', "\n", "   \n", "{nope\n", "[1, 2]\n"]))
    assert [e.lineno for e in entries] == [1, 4, 5]
    assert entries[0] == Entry(1, '{"kind":"vote"}')
    assert entries[1].raw is None and entries[1].result is not None
    assert entries[1].result["status"] == "rejected" and entries[1].result["reason"] == "malformed_command"
    assert entries[1].result["kind"] is None and "line 4" in entries[1].result["message"]
    assert entries[2].raw == "[1, 2]"  # JSON but no command: the server names the reason


def test_batches_keep_order_and_respect_both_limits() -> None:
    entries = [Entry(i, "x" * 10) for i in range(1, 8)] + [Entry(8, None, {"status": "rejected"})]
    groups = list(batches(entries, commands_max=3, bytes_max=1_000))
    assert [[e.lineno for e in g] for g in groups] == [[1, 2, 3], [4, 5, 6], [7, 8]]
    groups = list(batches(entries, commands_max=100, bytes_max=25))
    assert [[e.lineno for e in g] for g in groups] == [[1, 2], [3, 4], [5, 6], [7, 8]]
    # a command larger than the byte limit still goes, alone
    assert [len(g) for g in batches([Entry(1, "y" * 99), Entry(2, "z")], bytes_max=10)] == [1, 1]


def test_request_body_is_the_lines_own_text() -> None:
    group = [Entry(1, '{"a": 1}'), Entry(2, None, {}), Entry(3, "7")]
    assert request_body(group) == b'[{"a": 1},7]'
    answers = [{"n": 1, "index": 0}, {"n": 3, "index": 1}]
    assert merge_results(group, answers) == [{"line": 1, "n": 1}, {"line": 2}, {"line": 3, "n": 3}]


def _fake_server(answer: Any) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        commands = json.loads(request.content)
        return httpx.Response(200, json=[answer(c) for c in commands])

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_submit_file_prints_one_result_per_line_and_sets_the_exit_status() -> None:
    def answer(c: Any) -> dict[str, Any]:
        ok = c.get("ok", False)
        return {"status": "accepted" if ok else "rejected", "kind": "vote", "n": c["n"]}

    out = io.StringIO()
    lines = ['{"n": 1, "ok": true}', "", "garbage", '{"n": 2, "ok": false}']
    assert submit_file(_fake_server(answer), "http://x/v1/commands", lines, out) == EXIT_REJECTED
    printed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [p.get("n") for p in printed] == [1, None, 2]
    assert [p["line"] for p in printed] == [1, 3, 4]
    assert printed[1]["reason"] == "malformed_command"

    out = io.StringIO()
    assert submit_file(_fake_server(answer), "http://x/v1/commands", ['{"n": 3, "ok": true}'], out) == EXIT_OK


def test_submit_reports_an_unreachable_server(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"kind": "vote"}\n')
    result = CliRunner().invoke(main, ["submit", str(path), "--url", f"http://127.0.0.1:{_free_port()}"])
    assert result.exit_code == EXIT_UNREACHABLE
    assert "cannot reach" in result.stderr


# ---------------------------------------------------------------- against `tally up --no-devnet`


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def start_tally_up(data_dir: Path, port: int, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`tally up` as a child process; its output goes to a log file next to the data dir."""
    cmd = [sys.executable, "-m", "api", "up", "--data-dir", str(data_dir), "--port", str(port), *args]
    with open(data_dir.parent / "tally-up.log", "a") as log:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, cwd=ROOT, env=env or _env(), stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_ready(proc: subprocess.Popen[str], url: str, timeout_s: float = READY_TIMEOUT_S) -> float:
    """Seconds until GET /readyz answers 200; fails if the process dies first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise AssertionError(f"tally up exited early with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"tally up not ready after {timeout_s} s")


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def needs_the_stack() -> None:
    """Skip until every part `tally up` wires has landed."""
    for module in ("writes.service", "projections.store", "projections.queries", "streams.follower", "api.app"):
        pytest.importorskip(module)


@pytest.fixture
def tally_up(tmp_path: Path) -> Iterator[str]:
    needs_the_stack()
    port = _free_port()
    proc = start_tally_up(tmp_path / "data", port, "--no-devnet")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        yield url
    finally:
        code = stop(proc)
    assert code == 0, "tally up must shut down cleanly on SIGTERM"


def _run_submit(path: Path, url: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "api", "submit", str(path), "--url", url]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_submit_against_tally_up(tally_up: str, tmp_path: Path) -> None:
    from schemas.settings import from_env
    from writes.service import LedgerService

    chain = build_chain(SEED, blocks=3, txs_per_block=10, rng=random.Random(2))
    commands = chain.commands
    # a signed header whose tx_root does not match the txs carried (one dropped): refused whole
    bad_root = {**commands[1], "txs": commands[1]["txs"][:-1]}
    path = tmp_path / "chain.jsonl"
    lines = [json.dumps(c) for c in commands[:1]] + ["", json.dumps(bad_root), "{not json"]
    lines += [json.dumps(c) for c in commands[1:]]
    path.write_text("\n".join(lines) + "\n")

    done = _run_submit(path, tally_up)
    assert done.returncode == EXIT_REJECTED, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(printed) == len(commands) + 2
    assert [p.pop("line") for p in printed] == [1, *range(3, len(commands) + 4)]  # line 2 is blank

    # the same commands straight into a ledger of our own give the same answers
    reference = LedgerService(from_env(data_dir=tmp_path / "reference"))
    try:
        expected = [reference.submit(c) for c in [commands[0], bad_root]]
        expected.append(printed[2])  # the line that is not JSON never reaches a ledger
        expected += [reference.submit(c) for c in commands[1:]]
    finally:
        reference.close()
    assert printed == expected
    assert printed[1]["reason"] == "bad_tx_root" and printed[2]["reason"] == "malformed_command"
    blocks = [p for p in printed if p.get("kind") == "block" and p["status"] == "accepted"]
    assert [[r["reason"] or r["status"] for r in b["receipts"]] for b in blocks] == chain.intents
    assert printed[-1]["finalized_height"] == 3

    # all accepted: a repeated vote is accepted (and not recorded twice)
    again = tmp_path / "again.jsonl"
    again.write_text(json.dumps(commands[-1]) + "\n")
    done = _run_submit(again, tally_up)
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    assert json.loads(done.stdout)["status"] == "accepted"


