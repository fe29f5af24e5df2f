"""The machine corpus: text files gathered by source, gzip decompressed, binaries and non-UTF-8 skipped,
duplicates dropped, a held-out set by file that never reaches the training stream; and `m1 train` on
its streams, resumable from a work folder."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from compresslm.cli import main
from compresslm.data import machine_corpus as mc
from compresslm.errors import DataError


def _tree(root: Path) -> mc.Source:
    (root / "pkg").mkdir(parents=True)
    for i in range(120):
        (root / "pkg" / f"mod{i:03d}.py").write_text(f"def f{i}(x):\n    return x * {i}  # module {i}\n" * 8)
    (root / "pkg" / "copy.py").write_bytes((root / "pkg" / "mod007.py").read_bytes())  # a duplicate
    (root / "man1").mkdir()
    (root / "man1" / "tool.1.gz").write_bytes(gzip.compress(b".TH TOOL 1\n.SH NAME\ntool \\- does things\n"))
    (root / "blob.bin").write_bytes(b"\x7fELF\x00\x01\x02")
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "link.py").symlink_to(root / "pkg" / "mod001.py")
    return mc.Source("test", (str(root),), "test licence")


def test_build_splits_by_file_and_keeps_text_only(tmp_path: Path) -> None:
    source = _tree(tmp_path / "src")
    first_held = next(e for e in mc.walk(source) if mc.is_heldout(e.key))
    # a training file with a held-out file's bytes must not carry them into the training stream
    twin = tmp_path / "src" / "twin"
    twin.write_bytes(Path(first_held.path).read_bytes())
    assert not mc.is_heldout("twin")
    manifest = mc.build(tmp_path / "corpus", (source,), progress=False)
    held = manifest["heldout"]
    keys = [e.key for e in mc.walk(source)]
    assert "man1/tool.1" in keys and "link.py" not in keys
    expected_held = sorted(k for k in keys if mc.is_heldout(k))
    assert sorted(Path(h["file"]).relative_to("heldout/test").as_posix() for h in held) == expected_held
    assert manifest["skipped"] == {"binary (NUL byte)": 1, "duplicate": 2, "not UTF-8": 1}
    train = (tmp_path / "corpus" / mc.TRAIN_STREAM).read_bytes()
    docs = train.split(b"\x00")[:-1]
    assert len(docs) == manifest["train_files"] == 122 - len(expected_held) - 1
    assert b".TH TOOL 1\n.SH NAME\ntool \\- does things\n" in docs or "man1/tool.1" in expected_held
    for h in held:  # held-out bytes: in their own files and stream, never in the training stream
        data = (tmp_path / "corpus" / h["file"]).read_bytes()
        assert data not in docs
    heldout_stream = (tmp_path / "corpus" / mc.HELDOUT_STREAM).read_bytes()
    assert heldout_stream.split(b"\x00")[:-1] == [
        (tmp_path / "corpus" / h["file"]).read_bytes() for h in held
    ]
    assert json.loads((tmp_path / "corpus" / mc.MANIFEST).read_text()) == manifest
    with pytest.raises(DataError, match="already built"):
        mc.build(tmp_path / "corpus", (source,), progress=False)
    # the same files give the same corpus
    again = mc.build(tmp_path / "again", (source,), progress=False)
    assert (tmp_path / "again" / mc.TRAIN_STREAM).read_bytes() == train
    assert again["heldout"] == held


def test_heldout_share_is_about_two_percent() -> None:
    share = np.mean([mc.is_heldout(f"lib/module_{i}.py") for i in range(20_000)])
    assert 0.015 < share < 0.025


def test_m1_train_on_streams_resumes_from_its_work_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    words = [b"def ", b"return ", b"x", b" + ", b"\n", b"    ", b"(", b")"]
    (tmp_path / "train.u8").write_bytes(b"".join(words[i] for i in rng.integers(0, len(words), 6000)))
    (tmp_path / "held.u8").write_bytes(b"".join(words[i] for i in rng.integers(0, len(words), 600)))
    args = ["m1", "train", "--stream", str(tmp_path / "train.u8"), "--heldout-stream", str(tmp_path / "held.u8"),
            "--size", "tiny", "--context", "32", "--train-tokens", "4k", "--batch-size", "8", "--threads", "1",
            "--activation", "relu", "--work-dir", str(tmp_path / "work"), "--no-progress", "--json"]  # fmt: skip
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    first = json.loads(capsys.readouterr().out)
    state = json.loads((tmp_path / "work" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4000 // (8 * 32) == first["tokens_seen"] // 256
    # started again, the run is complete: no step is trained twice and the same model is saved
    assert main([*args, "-o", str(tmp_path / "b")]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["heldout_bits_per_byte"] == first["heldout_bits_per_byte"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()
    config = json.loads((tmp_path / "a" / "config.json").read_text())["config"]
    assert config["activation"] == "relu" and config["max_seq_len"] == 32


def test_m1_train_extends_a_finished_run_and_refuses_other_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "train.u8").write_bytes(rng.integers(97, 105, 6000, dtype=np.uint8).tobytes())
    args = ["m1", "train", "--stream", str(tmp_path / "train.u8"), "--size", "tiny", "--context", "32",
            "--batch-size", "8", "--threads", "1", "--numerics", "float", "--work-dir", str(tmp_path / "work"),
            "--no-progress", "--json", "--force", "-o", str(tmp_path / "m")]  # fmt: skip
    assert main([*args, "--train-tokens", "2k"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["tokens_seen"] == 7 * 256 and first["resumed_step"] is None
    # a larger budget continues from the saved step (7) to the new end, not from scratch
    assert main([*args, "--train-tokens", "4k"]) == 0
    extended = json.loads(capsys.readouterr().out)
    assert extended["resumed_step"] == 7 and extended["tokens_seen"] == 15 * 256
    state = json.loads((tmp_path / "work" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 15 and state["rewarm"]["step"] == 7
    steps = [e["step"] for e in state["curve"]]
    assert steps == sorted(set(steps)) and steps[-1] == 15  # no step trained twice
    # anything else that shapes the run is still refused, naming what changed
    for change in (["--lr", "2e-3"], ["--batch-size", "4"], ["--seed", "1"]):
        assert main([*args, "--train-tokens", "8k", *change]) != 0
        err = capsys.readouterr().err
        assert "another config" in err and change[0][2:].replace("-", "_") in err
    assert json.loads((tmp_path / "work" / "checkpoint" / "state.json").read_text())["step"] == 15


def test_m1_train_bf16_trains_nearly_the_same_float_model_and_may_be_switched_on_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(2)
    words = [b"def ", b"return ", b"x", b" + ", b"\n", b"    ", b"(", b")"]
    (tmp_path / "train.u8").write_bytes(b"".join(words[i] for i in rng.integers(0, len(words), 6000)))
    args = ["m1", "train", "--stream", str(tmp_path / "train.u8"), "--size", "tiny", "--context", "32",
            "--batch-size", "8", "--threads", "1", "--numerics", "float", "--train-tokens", "4k",
            "--heldout", "0.1", "--no-progress", "--json"]  # fmt: skip
    assert main([*args, "-o", str(tmp_path / "f32")]) == 0
    f32 = json.loads(capsys.readouterr().out)
    assert main([*args, "--bf16", "-o", str(tmp_path / "bf16")]) == 0
    bf16 = json.loads(capsys.readouterr().out)
    # bf16 rounds the forward differently (other weights) but learns as well
    assert (tmp_path / "f32" / "model.safetensors").read_bytes() != (
        tmp_path / "bf16" / "model.safetensors"
    ).read_bytes()
    assert bf16["heldout_bits_per_byte"] == pytest.approx(f32["heldout_bits_per_byte"], abs=0.05)
    # a resumable run may switch to it; quantization-aware training refuses it
    work = ["--work-dir", str(tmp_path / "work"), "--force", "-o", str(tmp_path / "w")]
    assert main([*args, "--train-tokens", "2k", *work]) == 0
    capsys.readouterr()
    assert main([*args, "--bf16", *work]) == 0
    assert json.loads(capsys.readouterr().out)["resumed_step"] == 7
    assert main([*args, "--numerics", "exact", "--bf16", "-o", str(tmp_path / "q")]) != 0
    assert "--bf16 trains the float M1 only" in capsys.readouterr().err
