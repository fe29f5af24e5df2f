"""compress / decompress / inspect end to end with a tiny trained M1: byte-identical restores of
JSONL, text, folders and records; damaged or mismatched inputs are clear errors, never output."""

from __future__ import annotations

import io
import json
import struct
import sysconfig
import zlib
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compresslm.cli import main
from compresslm.coding.compress import (
    DEFAULT_SEGMENT_BYTES,
    compress,
    decompress,
    inspect,
    stream_segment_bytes,
)
from compresslm.coding.container import read_container
from compresslm.coding.equal_info import EqualInfoCoder
from compresslm.coding.m1 import M1
from compresslm.coding.m1_train import train_m1
from compresslm.coding.window_coder import exception_table
from compresslm.errors import ConfigError, IntegrityError, OutputExistsError
from compresslm.models import Transformer, save_model

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [
        (STDLIB / name).read_text(encoding="utf-8") for name in ("textwrap.py", "colorsys.py", "bisect.py")
    ]
    out = tmp_path_factory.mktemp("m1") / "tiny"
    train_m1(
        texts,
        size="tiny",
        context=64,
        max_tokens=32_000,
        batch_size=8,
        lr=3e-3,
        threads=1,
        progress=False,
        out=out,
    )
    return out


@pytest.fixture(scope="module")
def m1(model_dir: Path) -> M1:
    return M1.load(model_dir, threads=1)


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    rows = [
        {"id": 1, "text": "def add(a, b):\n    return a + b\n", "meta": {"lang": "py"}},
        {"id": 2, "text": "naïve café — 日本語 🙂"},
        {"text": 'quotes " and \\ backslashes\ttabs', "id": 3},
        {"id": 4, "text": ""},
    ]
    lines = [
        json.dumps(rows[0]),
        json.dumps(rows[1], ensure_ascii=False),
        json.dumps(rows[2]),
        json.dumps(rows[3]),
        "not json at all",
        '{"text": 17}',
        '{"a": 1,  "text" :  "sp\\u00e9ced"}',
        '{"text": "escaped \\/ slash"}',
        "",
    ]
    (folder / "data.jsonl").write_text("\n".join(lines), encoding="utf-8")
    (folder / "notes.txt").write_bytes(b"plain text\r\nwith CRLF and a \xff byte that is not UTF-8\n")
    (folder / "sub" / "code.py").write_bytes((STDLIB / "bisect.py").read_bytes()[:600])
    (folder / "sub" / "empty.txt").write_bytes(b"")
    return folder


def run(tmp: Path, source: Path | str, m1: M1, **kwargs: object) -> tuple[Path, Path]:
    clm, out = tmp / "out.clm", tmp / "restored"
    kwargs.setdefault("segment_bytes", 128)  # many independent segments: rows for the batch
    compress(source, clm, model=m1, threads=1, **kwargs)  # type: ignore[arg-type]
    decompress(clm, out, model=m1)
    return clm, out


@pytest.mark.parametrize(
    ("mode", "code"), [("stream", "straddle"), ("windows", "straddle"), ("windows", "zeros")]
)
def test_jsonl_round_trip_is_byte_identical(
    tmp_path: Path, inputs: Path, m1: M1, mode: str, code: str
) -> None:
    clm, out = run(tmp_path, inputs / "data.jsonl", m1, mode=mode, code=code, segment_bytes=16)
    assert out.read_bytes() == (inputs / "data.jsonl").read_bytes()
    c = read_container(clm.read_bytes())
    # Lines with the field: text coded by M1, the JSON around it verbatim; the others coded whole.
    assert c.header["source"]["record_lines"] == 5 and c.header["source"]["whole_lines"] == 3
    assert c.header["mode"] == mode
    if mode == "windows":
        assert c.header["coder"]["code"] == code
    else:
        assert c.header["coder"]["context"] == m1.max_context
        assert len(c.payload) == sum(d.windows for d in c.docs)


def test_folder_round_trip(tmp_path: Path, inputs: Path, m1: M1) -> None:
    _, out = run(tmp_path, inputs, m1)
    restored = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert restored == ["data.jsonl", "notes.txt", "sub/code.py", "sub/empty.txt"]
    for rel in restored:
        assert (out / rel).read_bytes() == (inputs / rel).read_bytes()


def test_records_round_trip_as_jsonl(tmp_path: Path, m1: M1) -> None:
    """Inputs the data layer reads but cannot be restored verbatim (here a JSON array) come back
    as JSON Lines of id and text; a rejected record is counted, not stored."""
    rows = [{"text": f"record {i}: " + "abc " * i} for i in range(1, 6)] + [{"text": ""}]
    src = tmp_path / "records.json"
    src.write_text(json.dumps(rows), encoding="utf-8")
    clm, out = run(tmp_path, src, m1, mode="windows", window_bits=24)
    back = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in back] == [r["text"] for r in rows[:-1]]
    assert [r["id"] for r in back] == [f"{src}:{i}" for i in range(5)]
    assert read_container(clm.read_bytes()).header["source"]["rejected"] == 1
    report = inspect(clm, model=m1, n_windows=3)
    assert report.documents == 5 and len(report.first_windows) == 3
    assert "record 1: abc ".startswith(report.first_windows[0][1])


def test_outputs_are_never_overwritten_without_force(tmp_path: Path, inputs: Path, m1: M1) -> None:
    clm, out = run(tmp_path, inputs / "notes.txt", m1)
    with pytest.raises(OutputExistsError):
        compress(inputs / "notes.txt", clm, model=m1)
    with pytest.raises(OutputExistsError):
        decompress(clm, out, model=m1)
    decompress(clm, out, model=m1, force=True)
    assert out.read_bytes() == (inputs / "notes.txt").read_bytes()


def test_damaged_files_are_clear_errors(tmp_path: Path, inputs: Path, m1: M1) -> None:
    clm, _ = run(tmp_path, inputs / "sub" / "code.py", m1)
    data = clm.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "truncated-by-one": data[:-1],
        "flipped": data[:-40] + bytes([data[-40] ^ 4]) + data[-39:],
    }
    for name, damaged in cases.items():
        bad = tmp_path / f"{name}.clm"
        bad.write_bytes(damaged)
        with pytest.raises(IntegrityError, match=f"{bad}: (truncated|corrupt)"):
            decompress(bad, tmp_path / f"{name}.out", model=m1)
        assert not (tmp_path / f"{name}.out").exists()


@pytest.mark.parametrize("mode", ["windows", "stream"])
def test_consistent_but_wrong_window_bits_fail_the_digest(
    tmp_path: Path, inputs: Path, m1: M1, mode: str
) -> None:
    """Even damaged codes whose file CRC was recomputed cannot produce output."""
    clm, _ = run(tmp_path, inputs / "sub" / "code.py", m1, mode=mode)
    data = bytearray(clm.read_bytes())
    start = len(data) - 12 - len(read_container(bytes(data)).payload)
    data[start + 3] ^= 0x01  # windows: low bit of the second window's code; stream: a code byte
    struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])))
    bad = tmp_path / "bad.clm"
    bad.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="digest|decodes|length|no bytes"):
        decompress(bad, tmp_path / "bad.out", model=m1)
    assert not (tmp_path / "bad.out").exists()


def test_wrong_model_is_a_clear_error(tmp_path: Path, inputs: Path, m1: M1) -> None:
    clm, _ = run(tmp_path, inputs / "notes.txt", m1)
    other = tmp_path / "other"
    save_model(other, Transformer(m1.model.config, seed=99))
    with pytest.raises(IntegrityError, match="written with M1 weights sha256"):
        decompress(clm, tmp_path / "x", model=other)


def test_cli_compress_decompress_inspect(
    tmp_path: Path, inputs: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = torch.get_num_threads()
    src, clm, out = inputs / "data.jsonl", tmp_path / "o.clm", tmp_path / "r.jsonl"
    common = ["--threads", "1", "--no-progress"]
    assert main(["compress", str(src), "-o", str(clm), "--model", str(model_dir), "--json", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "stream" and report["code_bytes"] > 0 and report["bits_per_byte"] > 0
    assert report["segment_bytes"] == stream_segment_bytes(
        report["document_bytes"], 512
    )  # the library default
    assert main(["decompress", str(clm), "-o", str(out), *common]) == 0  # model found from the header
    assert out.read_bytes() == src.read_bytes()
    assert main(["inspect", str(clm), "--threads", "1"]) == 0
    assert "stream" in capsys.readouterr().out
    windows = ["--mode", "windows", "--json"]
    assert (
        main(["compress", str(src), "-o", str(clm), "--model", str(model_dir), "--force", *windows, *common])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["windows"] > 0 and report["segment_bytes"] == DEFAULT_SEGMENT_BYTES
    assert main(["decompress", str(clm), "-o", str(out), "--force", *common]) == 0
    assert out.read_bytes() == src.read_bytes()
    assert main(["inspect", str(clm), "--windows", "4", "--threads", "1"]) == 0
    shown = capsys.readouterr().out
    assert "bits/byte" in shown and "window   0" in shown
    assert main(["decompress", str(clm), "-o", str(out), *common]) == 2  # exists, no --force
    assert "exists" in capsys.readouterr().err
    (tmp_path / "t.clm").write_bytes(clm.read_bytes()[:100])
    assert main(["decompress", str(tmp_path / "t.clm"), "-o", str(tmp_path / "t"), *common]) == 2
    assert "truncated" in capsys.readouterr().err
    torch.set_num_threads(before)


def test_cli_m1_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text((STDLIB / "colorsys.py").read_text(encoding="utf-8"), encoding="utf-8")
    args = [
        "m1",
        "train",
        "--corpus",
        str(corpus),
        "--size",
        "tiny",
        "--out",
        str(tmp_path / "m1"),
        "--context",
        "32",
        "--train-tokens",
        "4k",
        "--batch-size",
        "4",
        "--threads",
        "1",
        "--no-progress",
        "--json",
    ]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["documents"] == 1 and report["heldout_bits_per_byte"] > 0
    assert M1.load(tmp_path / "m1").max_context == 32
    assert main(args) == 2  # exists without --force
    bad = [a if a != "4k" else "lots" for a in args]
    assert main([*bad, "--force"]) == 2
    assert "--train-tokens" in capsys.readouterr().err


text_st = st.one_of(
    st.text(max_size=60).map(lambda s: s.encode("utf-8")),
    st.binary(max_size=40),
    st.lists(st.sampled_from([b"def ", b"return ", b"    ", b"\n", b"x", b"()"]), max_size=20).map(b"".join),
)


@given(
    st.lists(text_st, min_size=1, max_size=4),
    st.sampled_from([16, 32]),
    st.sampled_from(["straddle", "zeros"]),
)
@settings(max_examples=15, deadline=None)
def test_equal_info_coder_round_trips(m1: M1, docs: list[bytes], bits: int, code: str) -> None:
    coder = EqualInfoCoder(m1, bits, code=code, max_window_bytes=48)
    coded = coder.encode_many(docs)
    assert coder.decode_many(coded) == docs
    for doc, windows in zip(docs, coded, strict=True):
        tokens = coder.tokens(windows, 8)
        assert len(tokens) == len(windows) * bits // 8
        codes = coder.codes_from_tokens(tokens, 8)
        assert coder.decode(codes, exceptions=exception_table(windows), length=len(doc)) == doc


class _Stdio:
    """A stand-in for sys.stdin / sys.stdout: text unused, bytes through ``buffer``."""

    def __init__(self, data: bytes = b"") -> None:
        self.buffer = io.BytesIO(data)

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def test_cli_stdin_to_stdout_and_back(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``compress - -o -`` reads standard input and writes the .clm to standard output (its report
    goes to standard error); ``decompress - -o -`` restores the bytes the same way."""
    data = (STDLIB / "bisect.py").read_bytes()[:3000] + b"\xff\x00 raw bytes"
    common = ["--model", str(model_dir), "--threads", "1", "--no-progress"]
    stdout = _Stdio()
    monkeypatch.setattr("sys.stdin", _Stdio(data))
    monkeypatch.setattr("sys.stdout", stdout)
    assert main(["compress", "-", "-o", "-", *common]) == 0
    clm = stdout.buffer.getvalue()
    assert read_container(clm).header["source"]["kind"] == "file"
    assert "compress" in capsys.readouterr().err
    restored = _Stdio()
    monkeypatch.setattr("sys.stdin", _Stdio(clm))
    monkeypatch.setattr("sys.stdout", restored)
    assert main(["decompress", "-", "-o", "-", *common]) == 0
    assert restored.buffer.getvalue() == data
    assert not list(tmp_path.iterdir())  # nothing written anywhere


def test_folder_archive_cannot_go_to_stdout(
    tmp_path: Path, inputs: Path, m1: M1, monkeypatch: pytest.MonkeyPatch
) -> None:
    clm, _ = run(tmp_path, inputs, m1)
    monkeypatch.setattr("sys.stdout", _Stdio())
    with pytest.raises(ConfigError, match="standard output"):
        decompress(clm, "-", model=m1)


def test_stream_mode_beats_windows_mode(tmp_path: Path, m1: M1) -> None:
    """Full context and one code per segment: fewer bits than 16-bit windows on the same text."""
    src = tmp_path / "text.py"
    src.write_bytes((STDLIB / "textwrap.py").read_bytes()[:6000])
    sizes = {}
    for mode in ("stream", "windows"):
        report = compress(src, tmp_path / f"{mode}.clm", model=m1, mode=mode, threads=1)
        decompress(tmp_path / f"{mode}.clm", tmp_path / f"{mode}.out", model=m1)
        assert (tmp_path / f"{mode}.out").read_bytes() == src.read_bytes()
        sizes[mode] = report.bits_per_byte
    assert sizes["stream"] < sizes["windows"]


def test_demo_compression_step(tmp_path: Path, model_dir: Path) -> None:
    """`make demo` step 4 on a small folder: the archive restores byte for byte and the table has
    every peer, per file and as one stream."""
    from compresslm.demo import run_compression_demo

    src = tmp_path / "src"
    src.mkdir()
    for name in ("colorsys.py", "bisect.py"):
        (src / name).write_bytes((STDLIB / name).read_bytes()[:1500])
    r = run_compression_demo(tmp_path / "demo", model_dir, sources=src)
    assert r["identical"] and r["files"] == 2 and r["bytes"] == 3000
    assert set(r["peers"]) == {"gzip -9", "xz -9e", "zstd -19"}
    assert r["clm_bits_per_byte"] > r["code_bits_per_byte"] > 0
    assert (tmp_path / "demo" / "compression" / "restored" / "bisect.py").read_bytes() == (
        src / "bisect.py"
    ).read_bytes()
