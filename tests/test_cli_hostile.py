"""Hostile and unusual input through the commands: huge JSON integers, NaN, FIFOs, odd file names.

Each test names the defect it guards against (issue: hardening); the M1 here has random weights,
which is enough for lossless round trips (the coder is exact whatever the model predicts).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from compresslm.cli import main
from compresslm.coding.compress import compress, decompress
from compresslm.errors import DataError
from compresslm.models import Transformer, save_model
from compresslm.models.transformer import config_for_size

HUGE = "7" * 5000  # over Python's 4,300-digit int-string limit


@pytest.fixture(scope="module")
def m1_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("m1") / "random"
    save_model(out, Transformer(config_for_size("tiny", vocab_size=256, max_seq_len=64), seed=0))
    return out


@pytest.fixture()
def hostile_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "pool.jsonl"
    lines = [
        '{"text": "def f(x):\\n    return x + 1\\n"}',
        '{"text": "huge", "n": ' + HUGE + "}",
        '{"text": "not a number", "x": NaN}',
        *[f'{{"text": "print({i})"}}' for i in range(8)],
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_compress_round_trips_lines_python_cannot_parse(
    tmp_path: Path, hostile_jsonl: Path, m1_dir: Path
) -> None:
    clm, out = tmp_path / "o.clm", tmp_path / "r.jsonl"
    compress(hostile_jsonl, clm, model=m1_dir, threads=1, progress=False)
    decompress(clm, out, model=m1_dir, threads=1, progress=False)
    assert out.read_bytes() == hostile_jsonl.read_bytes()


def test_compress_refuses_a_non_utf8_file_name_before_coding(tmp_path: Path, m1_dir: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "ok.txt").write_text("fine")
    try:
        (Path(os.fsdecode(bytes(folder) + b"/caf\xe9.txt"))).write_text("latin-1 name")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    with pytest.raises(DataError, match=r"file name 'caf\\\\xe9.txt' is not valid UTF-8"):
        compress(folder, tmp_path / "o.clm", model=m1_dir, threads=1, progress=False)
    assert not (tmp_path / "o.clm").exists()


def test_select_align_tokenize_skip_huge_integers(
    tmp_path: Path, hostile_jsonl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "t.jsonl"
    target.write_text('{"text": "def g(y):\\n    return y * 2\\n"}\n')
    out = tmp_path / "sel.jsonl"
    argv = ["select", "--target", str(target), "--source", str(hostile_jsonl), "--k", "1"]
    assert main([*argv, "--out", str(out), "--on-error", "skip", "--workers", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accounting"]["rejected"] == 2 and result["accounting"]["selected"] == 1
    assert main([*argv, "--workers", "1"]) == 2  # default --on-error fail: a clear error, no traceback
    err = capsys.readouterr().err
    assert "pool.jsonl:2: bad JSON: an integer of 5,000 digits" in err
    assert main(["align", str(target), str(hostile_jsonl), "--on-error", "skip", "--max-pairs", "4"]) == 0
    capsys.readouterr()
    tok = ["tokenize", str(hostile_jsonl), "-o", str(tmp_path / "tok"), "--scheme", "bytes", "--workers", "1"]
    assert main([*tok, "--on-error", "skip", "--val-fraction", "0.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accounting"]["rejected"] == 2


def test_select_refuses_a_fifo_instead_of_waiting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "t.jsonl"
    target.write_text('{"text": "x = 1"}\n')
    fifo = tmp_path / "pool.jsonl"
    os.mkfifo(fifo)
    argv = ["select", "--target", str(target), "--source", str(fifo), "--k", "1", "--workers", "1"]
    for engine in ([], ["--engine", "local"]):  # the streaming pipeline and the staged engine
        assert main([*argv, *engine]) == 2
        assert "is a FIFO, not a regular file" in capsys.readouterr().err


def test_model_config_with_bad_types_is_refused() -> None:
    from compresslm.errors import ConfigError
    from compresslm.models.transformer import TransformerConfig

    base = config_for_size("tiny", vocab_size=256, max_seq_len=64).to_dict()
    for key, value in (
        ("bias", "false"),
        ("tie_embeddings", 1),
        ("dropout", "0.1"),
        ("init_std", float("nan")),
    ):
        with pytest.raises(ConfigError, match=f"TransformerConfig.{key}"):
            TransformerConfig.from_dict(base | {key: value})


def test_config_that_does_not_match_its_weights_fails_before_allocating(m1_dir: Path, tmp_path: Path) -> None:
    """A config.json declaring d_model 2**20 (terabytes of weights) beside tiny weights: a clear error,
    not an attempt to allocate the declared model."""
    import shutil

    from compresslm.errors import IntegrityError
    from compresslm.models import load_model

    bad = tmp_path / "bad"
    shutil.copytree(m1_dir, bad)
    meta = json.loads((bad / "config.json").read_text())
    meta["config"] |= {"d_model": 1 << 20, "d_mlp": 1 << 22}
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match="tensor .* the config needs"):
        load_model(bad)


def test_select_reads_a_folder_of_shards_as_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "00.jsonl").write_text(
        "".join(json.dumps({"text": f"def f{i}(): pass"}) + "\n" for i in range(5))
    )
    with zstandard.open(shards / "01.jsonl.zst", "wt") as f:
        f.write("".join(json.dumps({"text": f"x = {i}"}) + "\n" for i in range(4)))
    pq.write_table(pa.table({"text": [f"print({i})" for i in range(3)]}), shards / "02.parquet")
    target = tmp_path / "t.jsonl"
    target.write_text('{"text": "def g(): pass"}\n')
    argv = ["select", "--target", str(target), "--source", str(shards), "--k", "2", "--workers", "1"]
    assert main([*argv, "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (
        result["accounting"]["read"] == 12 and result["accounting"]["rejected"] == 0
    )  # records, not 3 files
