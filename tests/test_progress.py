"""Progress where stderr is a log: whole lines with total and ETA, not carriage-return redraws."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from compresslm.cli import main
from compresslm.progress import progress_bar


def test_lines_with_total_percentage_and_eta_when_not_a_terminal() -> None:
    log = io.StringIO()
    with progress_bar(desc="scoring", total=40, unit="doc", file=log, mininterval=0) as bar:
        for _ in range(4):
            bar.update(10)
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines[0].startswith("scoring:   0% 0/40 doc") and lines[-1].startswith("scoring: 100% 40/40 doc")
    assert all("left" in line for line in lines)  # the ETA
    unknown = io.StringIO()
    with progress_bar(desc="tokenize", unit="B", unit_scale=True, file=unknown, mininterval=0) as bar:
        bar.update(2048)
    assert unknown.getvalue().splitlines()[-1].startswith("tokenize: 2.05k B")


def test_disabled_bar_writes_nothing() -> None:
    log = io.StringIO()
    with progress_bar(desc="x", total=3, disable=True, file=log) as bar:
        bar.update(3)
    assert log.getvalue() == ""


@pytest.fixture()
def small(tmp_path: Path) -> tuple[Path, Path]:
    target, source = tmp_path / "t.jsonl", tmp_path / "s.jsonl"
    target.write_text('{"text": "def f(x):\\n    return x + 1\\n"}\n')
    source.write_text("".join(json.dumps({"text": f"def g{i}(y): return y * {i}"}) + "\n" for i in range(6)))
    return target, source


def test_select_reports_progress_lines_and_says_when_nothing_is_written(
    small: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    target, source = small
    assert (
        main(["select", "--target", str(target), "--source", str(source), "--k", "2", "--workers", "1"]) == 0
    )
    err = capsys.readouterr().err
    assert "scoring: 100% 6/6 doc" in err  # a log gets lines (stderr is not a terminal here)
    assert "preparing zipfit: 1 targets" in err and "prepared in" in err  # no silent preparation
    assert "no --out given: the selected records were not written" in err


def test_select_exits_non_zero_when_nothing_is_selected(
    small: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    target, source = small
    argv = ["select", "--target", str(target), "--source", str(source), "--k", "2", "--workers", "1"]
    assert main([*argv, "--min-tokens", "1000", "--no-progress", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["accounting"]["selected"] == 0
    assert "nothing was selected" in captured.err and "scoring" not in captured.err


def test_json_to_a_closed_pipe_ends_quietly(small: tuple[Path, Path]) -> None:
    """`compresslm select ... --json | head -1`: no BrokenPipeError traceback."""
    target, source = small
    many = source.parent / "many.jsonl"
    many.write_text("".join(json.dumps({"text": f"x{i} = {i} * y"}) + "\n" for i in range(3000)))
    code = "import sys; from compresslm.cli import main; sys.exit(main())"
    argv = ["select", "--target", str(target), "--source", str(many), "--k", "3000", "--workers", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv, "--json", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after one line
    err = proc.stderr.read().decode()
    assert proc.wait() == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err
