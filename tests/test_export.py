"""`tally export` / `tally verify-export` (api/export.py) and the auditor's script in docs/compliance.md: an export
verifies with nothing but its files, in both formats and for a range; a changed, deleted or reordered line is
found by both checkers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from api.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "compliance.md"


@pytest.fixture
def data_dir(rich_log: Path) -> Path:
    return rich_log


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = DOC.read_text("utf-8")
    found = re.search(r"<!-- auditor-script:begin -->\n```python\n(.*?)```\n<!-- auditor-script:end -->", text, re.S)
    assert found, "docs/compliance.md lost its auditor script"
    path = tmp_path_factory.mktemp("script") / "check_export.py"
    path.write_text(found.group(1), "utf-8")
    return path


def export(data_dir: Path, out: Path, *args: str) -> None:
    result = CliRunner().invoke(main, ["export", "--data-dir", str(data_dir), *args, str(out)])
    assert result.exit_code == 0, result.output
    assert "events" in result.output and "MB/s" in result.output


def verify_export(out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["verify-export", str(out)])
    return result.exit_code, result.output


def run_script(script: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=120)


def test_a_jsonl_export_verifies_with_tally_and_with_the_auditors_script(data_dir: Path, tmp_path: Path,
                                                                         script: Path) -> None:
    out = tmp_path / "export"
    export(data_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["first_position"] == 1 and manifest["first_prev_hash"] == "00" * 32
    assert manifest["last_hash"] == manifest["head_hash"] and manifest["count"] == manifest["last_seq"]
    assert verify_export(out) == (0, f"tally verify-export: {manifest['count']} events, every hash and link intact\n")
    assert run_script(script, out).stdout == "export intact\n"


def test_a_range_and_a_parquet_export_verify(data_dir: Path, tmp_path: Path, script: Path) -> None:
    export(data_dir, tmp_path / "range", "--from", "4", "--to", "9")
    manifest = json.loads((tmp_path / "range" / "manifest.json").read_text())
    assert (manifest["count"], manifest["first_position"], manifest["last_position"]) == (6, 4, 9)
    assert verify_export(tmp_path / "range")[0] == 0
    assert run_script(script, tmp_path / "range").returncode == 0
    export(data_dir, tmp_path / "parquet", "--format", "parquet")
    assert verify_export(tmp_path / "parquet")[0] == 0


def test_exporting_into_a_used_directory_is_refused(data_dir: Path, tmp_path: Path) -> None:
    export(data_dir, tmp_path / "once")
    result = CliRunner().invoke(main, ["export", "--data-dir", str(data_dir), str(tmp_path / "once")])
    assert result.exit_code != 0 and "exists" in result.output


@pytest.mark.parametrize("damage", ["edit", "delete", "swap"])
def test_damage_is_found_by_both_checkers(data_dir: Path, tmp_path: Path, script: Path, damage: str) -> None:
    out = tmp_path / "export"
    export(data_dir, out)
    lines = (out / "events.jsonl").read_text("utf-8").splitlines(keepends=True)
    if damage == "edit":
        lines[5] = lines[5].replace('"height":', '"height":1', 1) if '"height":' in lines[5] else lines[5][:-3] + "}\n"
    elif damage == "delete":
        del lines[5]
    else:
        lines[5], lines[6] = lines[6], lines[5]
    (out / "events.jsonl").write_text("".join(lines), "utf-8")
    code, output = verify_export(out)
    assert code == 1 and "position" in output
    checked = run_script(script, out)
    # Line 6 holds position 6. An edit is found there; after a deletion or a swap, line 6 holds position 7's
    # record, the first out of place, and both checkers name it.
    located = 6 if damage == "edit" else 7
    assert checked.returncode == 1 and f"position {located}:" in checked.stdout
    assert f"position {located}:" in output
