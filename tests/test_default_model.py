"""The shipped default M1: compress and tokenize use it without --model, decompression finds it when the
folder a .clm recorded is gone, and an installation without it says so and names --model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from compresslm.cli import main
from compresslm.coding import default_model
from compresslm.coding.compress import compress, decompress, load
from compresslm.errors import ConfigError, IntegrityError
from compresslm.models import Transformer, config_for_size, save_model
from compresslm.tokenizers import build_tokenizer

TEXT = "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # five\n" * 3


def _m1_folder(path: Path, seed: int) -> Path:
    # untrained weights code as well as trained ones (only worse): enough to test the wiring
    model = Transformer(config_for_size("tiny", vocab_size=256, max_seq_len=64), seed=seed)
    return save_model(path, model)


@pytest.fixture()
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = _m1_folder(tmp_path / "shipped" / "m1", seed=1)
    monkeypatch.setattr(default_model, "SHIPPED_M1_DIR", folder)
    return folder


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    path = tmp_path / "add.py"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_missing_default_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: Path
) -> None:
    monkeypatch.setattr(default_model, "SHIPPED_M1_DIR", tmp_path / "nothing")
    assert not default_model.has_default_m1()
    with pytest.raises(ConfigError, match="--model"):
        default_model.default_m1_path()
    with pytest.raises(ConfigError, match="no default M1"):
        compress(source, tmp_path / "x.clm", threads=1)
    assert not (tmp_path / "x.clm").exists()


def test_compress_without_model_uses_the_shipped_m1(tmp_path: Path, shipped: Path, source: Path) -> None:
    compress(source, tmp_path / "a.clm", threads=1)
    compress(source, tmp_path / "b.clm", model=shipped, threads=1)
    assert (tmp_path / "a.clm").read_bytes() == (tmp_path / "b.clm").read_bytes()
    assert load(tmp_path / "a.clm").header["model"]["path"] is None  # found by its sha256, not stored
    decompress(tmp_path / "a.clm", tmp_path / "a.py", threads=1)
    assert (tmp_path / "a.py").read_text(encoding="utf-8") == TEXT


def test_decompress_falls_back_to_the_shipped_m1_by_sha256(
    tmp_path: Path, shipped: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # written with a copy of the shipped weights in a folder that is gone when decompressing
    elsewhere = shutil.copytree(shipped, tmp_path / "elsewhere")
    compress(source, tmp_path / "a.clm", model=elsewhere, threads=1)
    assert load(tmp_path / "a.clm").header["model"]["path"] == str(elsewhere)  # not the shipped folder
    shutil.rmtree(elsewhere)
    decompress(tmp_path / "a.clm", tmp_path / "a.py", threads=1)
    assert (tmp_path / "a.py").read_text(encoding="utf-8") == TEXT
    # another shipped M1 (an upgrade): the recorded sha256 refuses it, no output is written
    monkeypatch.setattr(default_model, "SHIPPED_M1_DIR", _m1_folder(tmp_path / "other", seed=2))
    with pytest.raises(IntegrityError, match="sha256"):
        decompress(tmp_path / "a.clm", tmp_path / "b.py", threads=1)
    assert not (tmp_path / "b.py").exists()


def test_cli_compress_and_tokenizer_default(tmp_path: Path, shipped: Path, source: Path) -> None:
    out = tmp_path / "cli.clm"
    assert main(["compress", str(source), "-o", str(out), "--threads", "1", "--no-progress"]) == 0
    assert (
        main(["decompress", str(out), "-o", str(tmp_path / "cli.py"), "--threads", "1", "--no-progress"]) == 0
    )
    assert (tmp_path / "cli.py").read_text(encoding="utf-8") == TEXT
    tokenizer = build_tokenizer("equal-info", threads=1)
    assert tokenizer.m1.sha256 == build_tokenizer("equal-info", m1=shipped, threads=1).m1.sha256


def test_the_package_ships_an_exact_m1_matching_its_model_card() -> None:
    from compresslm.coding.m1 import M1

    assert default_model.has_default_m1()
    m1 = M1.load(default_model.default_m1_path(), threads=1)
    card = (default_model.SHIPPED_M1_DIR / default_model.MODEL_CARD).read_text(encoding="utf-8")
    assert m1.exact and m1.sha256 in card
    assert m1.max_context == 512
