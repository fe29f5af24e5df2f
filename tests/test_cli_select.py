"""`compresslm select` / `align` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compresslm.cli import main


def _write(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    target = _write(
        tmp_path / "target.jsonl", ["def f(a, b):\n    return a + b\n", "def g(x):\n    return x * 2\n"]
    )
    source = _write(
        tmp_path / "source.jsonl",
        [
            "def h(a, b):\n    return a - b\n",
            "Rain fell on the quiet town all night long.",
            "def k(x):\n    return x * 3\n",
            "The committee will meet again next spring to decide.",
        ],
    )
    return target, source


def test_select_cli_writes_outputs(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    target, source = files
    out, scores = tmp_path / "sel.jsonl", tmp_path / "scores.parquet"
    code = main(
        [
            "select",
            "--target",
            str(target),
            "--source",
            str(source),
            "--k",
            "2",
            "--compressor",
            "gzip:9",
            "--workers",
            "1",
            "--out",
            str(out),
            "--scores",
            str(scores),
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"].startswith("def") for r in rows] == [True, True]
    printed = capsys.readouterr().out
    assert "selected" in printed and "not selected" in printed


def test_select_cli_reports_user_errors(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    target, source = files
    out = tmp_path / "sel.jsonl"
    out.write_text("")
    code = main(["select", "--target", str(target), "--source", str(source), "--k", "1", "--out", str(out)])
    assert code == 2
    assert "--force" in capsys.readouterr().err
    code = main(["select", "--target", str(tmp_path / "missing.jsonl"), "--source", str(source), "--k", "1"])
    assert code == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_select_cli_rejects_gzip_level_zero(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    target, source = files
    code = main(
        ["select", "--target", str(target), "--source", str(source), "--k", "1", "--compressor", "gzip:0"]
    )
    assert code == 2
    assert "gzip" in capsys.readouterr().err


def test_align_cli(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    target, source = files
    assert main(["align", str(source), str(target), "--compressor", "gzip:9"]) == 0
    line = capsys.readouterr().out
    value = float(line.split("=")[1].split()[0])
    assert -0.1 < value < 1.0


def test_select_cli_max_targets(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    target, source = files
    base = [
        "select",
        "--target",
        str(target),
        "--source",
        str(source),
        "--k",
        "1",
        "--workers",
        "1",
        "--json",
    ]
    assert main([*base, "--max-targets", "1"]) == 0
    method = json.loads(capsys.readouterr().out)["method"]
    assert (method["targets"], method["targets_scored"], method["max_targets"]) == (2, 1, 1)
    assert main([*base, "--max-targets", "all"]) == 0
    assert json.loads(capsys.readouterr().out)["method"]["targets_scored"] == 2
    assert main([*base, "--max-targets", "0"]) == 2
    assert "positive number or 'all'" in capsys.readouterr().err
