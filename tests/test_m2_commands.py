"""`train`, `eval` and `generate` as commands: no model left by a failed run, the held-out split
checked before training, and an M2 tied to the tokenizer whose ids it learned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compresslm.cli import main
from compresslm.data.records import Record
from compresslm.tokenizers import build_tokenizer
from compresslm.tokenizers.dataset import TokenDataset, TokenizeOptions, tokenize_corpus

TEXTS = [f"def cube_{i}(x):\n    return x * x * x - {i % 5}\n" for i in range(80)]


def _dataset(path: Path, scheme: str, val_fraction: float = 0.2) -> Path:
    records = [Record(id=f"doc:{i}", source="mem", index=i, text=t) for i, t in enumerate(TEXTS)]
    tokenize_corpus(
        records, build_tokenizer(scheme), path, TokenizeOptions(val_fraction=val_fraction, workers=1)
    )
    return path


@pytest.fixture(scope="module")
def bytes_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _dataset(tmp_path_factory.mktemp("t") / "bytes", "bytes")


def _train(tokens: Path, out: Path, *extra: str) -> int:
    argv = ["train", "--tokens", str(tokens), "-o", str(out), "--train-tokens", "1k", "--seq-len", "32"]
    return main([*argv, "--batch-size", "4", "--device", "cpu", "--threads", "1", *extra])


def test_train_interrupted_in_its_final_evaluation_leaves_no_model(
    bytes_ds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import compresslm.m2.evaluate
    import compresslm.m2.train

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    for module in (compresslm.m2.evaluate, compresslm.m2.train):  # wherever train looks it up
        monkeypatch.setattr(module, "evaluate_m2", interrupted, raising=False)
    out = tmp_path / "m2"
    assert _train(bytes_ds, out) == 130
    assert not out.exists() or not any(out.iterdir())


def test_train_refuses_a_dataset_without_held_out_documents_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_val = _dataset(tmp_path / "noval", "bytes", val_fraction=0.0)
    assert _train(no_val, tmp_path / "m2", "--train-tokens", "1G") == 2  # 1G would take hours
    assert "--val-fraction" in capsys.readouterr().err
    assert not (tmp_path / "m2").exists()


def test_m2_is_checked_against_the_tokenizer_it_learned(
    bytes_ds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gzip_ds = _dataset(tmp_path / "gzip", "gzip")
    assert TokenDataset(gzip_ds).vocab_size == TokenDataset(bytes_ds).vocab_size  # same shape, other ids
    m2 = tmp_path / "m2"
    assert _train(bytes_ds, m2, "--json") == 0
    trained = json.loads(capsys.readouterr().out)
    assert json.loads((m2 / "eval.json").read_text())["bits_per_byte"] == trained["bits_per_byte"]
    assert main(["eval", "--model", str(m2), "--json", "--device", "cpu"]) == 0  # recorded dataset
    assert json.loads(capsys.readouterr().out)["bits_per_byte"] == pytest.approx(trained["bits_per_byte"])
    assert main(["eval", "--model", str(m2), "--tokens", str(gzip_ds)]) == 2
    assert "trained on the ids of another tokenizer" in capsys.readouterr().err
    assert main(["generate", "--model", str(m2), "--tokens", str(gzip_ds), "--max-steps", "2"]) == 2
    assert "another tokenizer" in capsys.readouterr().err
    assert main(["generate", "--model", str(m2), "--max-steps", "2", "--threads", "1"]) == 0
