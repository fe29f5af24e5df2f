"""compress / decompress on hostile and real-world input: --force deletes nothing but the output it
replaces, outputs are never inputs, folders are archived as tar would (hidden files, empty folders,
modes, mtimes), and hostile .clm files with valid checksums are refused at once with clear errors.

The M1 here is untrained (random weights): coding is exact with any model, and it loads fast."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import sys
import tracemalloc
import types
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clm_fixtures import DATA, make_folder, snapshot, write_v2
from compresslm.cli import main
from compresslm.coding.compress import compress, decompress, inspect, layout_of, layout_table, load
from compresslm.coding.container import Container, DocEntry, encode_docs, read_container, write_container
from compresslm.coding.header import encode_header
from compresslm.coding.layout import (
    CODEC_ZSTD,
    FILE,
    FOLDER,
    JSON_ASCII,
    RAW,
    VERBATIM,
    LayoutFile,
    decode_layout,
    decode_layout_v2,
    encode_layout,
)
from compresslm.coding.m1 import M1
from compresslm.data import writers
from compresslm.errors import CompressLMError, ConfigError, IntegrityError, OutputExistsError
from compresslm.models import Transformer, save_model
from compresslm.models.transformer import config_for_size


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("m1") / "m1"
    save_model(out, Transformer(config_for_size("tiny", vocab_size=256, max_seq_len=64), seed=0))
    return out


@pytest.fixture(scope="module")
def m1(model_dir: Path) -> M1:
    return M1.load(model_dir, threads=1)


def make_tree(root: Path) -> Path:
    """A folder with what tar users expect kept: hidden files and folders, empty folders, modes."""
    (root / ".git" / "objects").mkdir(parents=True)
    (root / "empty" / "nested-empty").mkdir(parents=True)
    (root / "src").mkdir()
    (root / ".env").write_text("KEY=1\n")
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "src" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "src" / "data.jsonl").write_text('{"text": "hello"}\n{"text": "world"}\n')
    (root / "readonly.txt").write_text("do not edit\n")
    os.chmod(root / "src" / "run.sh", 0o755)
    os.chmod(root / "readonly.txt", 0o444)
    os.chmod(root / "empty", 0o750)
    for i, p in enumerate(sorted(root.rglob("*"), key=lambda p: -len(p.parts))):
        os.utime(p, ns=(1_500_000_000_000_000_000 + i, 1_000_000_000_123_456_789 + i))
    os.utime(root, ns=(0, 1_200_000_000_000_000_000))
    return root


def tree(root: Path) -> dict[str, tuple[str, int, int, bytes]]:
    """Everything under ``root``: kind, permission bits, mtime (ns) and content, by relative path."""
    found = {}
    for p in [root, *root.rglob("*")]:
        st_ = p.lstat()
        kind = "dir" if stat.S_ISDIR(st_.st_mode) else "file"
        data = p.read_bytes() if kind == "file" else b""
        found[p.relative_to(root).as_posix()] = (kind, stat.S_IMODE(st_.st_mode), st_.st_mtime_ns, data)
    return found


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------- folder archive


def test_folder_archive_keeps_what_tar_keeps(tmp_path: Path, m1: M1) -> None:
    src = make_tree(tmp_path / "src")
    clm, out = tmp_path / "a.clm", tmp_path / "restored"
    report = compress(src, clm, model=m1, threads=1)
    assert (report.files, report.folders, report.skipped) == (5, 6, [])  # root, .git, objects, empty x2, src
    back = decompress(clm, out, model=m1)
    assert (back.files, back.folders) == (5, 6)
    expected = tree(src)
    mask = current_umask()
    expected = {k: (kind, mode & ~mask, mtime, data) for k, (kind, mode, mtime, data) in expected.items()}
    assert tree(out) == expected  # hidden and empty folders, modes (minus umask), mtimes: all back


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs symlinks and FIFOs")
def test_links_and_special_files_are_skipped_and_reported(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    (src / "to-a").symlink_to("a.txt")
    (src / "to-etc").symlink_to("/etc")
    os.mkfifo(src / "pipe")
    args = ["compress", str(src), "-o", str(tmp_path / "a.clm"), "--model", str(model_dir)]
    assert main([*args, "--threads", "1", "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["skipped"] == ["pipe (FIFO)", "to-a (symbolic link)", "to-etc (symbolic link)"]
    assert "skipped to-etc (symbolic link)" in captured.err
    assert load(tmp_path / "a.clm").header["source"]["skipped"] == 3
    assert main(["decompress", str(tmp_path / "a.clm"), "-o", str(tmp_path / "r"), "--no-progress"]) == 0
    assert names(tmp_path / "r") == ["a.txt"]


def test_single_file_keeps_its_mode_and_mtime(tmp_path: Path, m1: M1) -> None:
    src = tmp_path / "tool.py"
    src.write_text("print('x')\n")
    os.chmod(src, 0o750)
    os.utime(src, ns=(0, 1_111_111_111_000_000_007))
    compress(src, tmp_path / "t.clm", model=m1, threads=1)
    decompress(tmp_path / "t.clm", tmp_path / "back.py", model=m1)
    st_ = (tmp_path / "back.py").stat()
    assert stat.S_IMODE(st_.st_mode) == 0o750 & ~current_umask()
    assert st_.st_mtime_ns == 1_111_111_111_000_000_007


# ----------------------------------------------------------------------------------- --force and inputs


def test_decompress_into_the_current_folder_deletes_nothing(
    tmp_path: Path,
    model_dir: Path,
    m1: M1,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = make_tree(tmp_path / "src")
    clm = tmp_path / "a.clm"
    compress(src, clm, model=m1, threads=1)
    work = tmp_path / "work"
    (work / "mine").mkdir(parents=True)
    (work / "notes.txt").write_text("precious")
    monkeypatch.chdir(work)
    before = tree(work)
    code = main(["decompress", str(clm), "-o", ".", "--force", "--model", str(model_dir), "--no-progress"])
    assert code == 2 and "current folder" in capsys.readouterr().err
    assert tree(work) == before and names(tmp_path) == ["a.clm", "src", "work"]


def test_force_replaces_only_an_earlier_restore(tmp_path: Path, m1: M1) -> None:
    src = make_tree(tmp_path / "src")
    clm, out = tmp_path / "a.clm", tmp_path / "out"
    compress(src, clm, model=m1, threads=1)
    decompress(clm, out, model=m1)
    os.chmod(out / "readonly.txt", 0o644)
    (out / "readonly.txt").write_text("edited")
    with pytest.raises(OutputExistsError):
        decompress(clm, out, model=m1)
    decompress(clm, out, model=m1, force=True)  # an earlier restore: replaced
    assert (out / "readonly.txt").read_text() == "do not edit\n"
    (out / "src" / "my-work.txt").write_text("not in the archive")
    with pytest.raises(ConfigError, match="not an earlier restore of this archive"):
        decompress(clm, out, model=m1, force=True)
    assert (out / "src" / "my-work.txt").read_text() == "not in the archive"
    assert names(tmp_path) == ["a.clm", "out", "src"]


def test_a_failed_restore_leaves_the_old_output(
    tmp_path: Path, m1: M1, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_tree(tmp_path / "src")
    clm, out = tmp_path / "a.clm", tmp_path / "out"
    compress(src, clm, model=m1, threads=1)
    decompress(clm, out, model=m1)
    before = tree(out)
    import compresslm.coding.compress as module

    real = module._fill_folder

    def fill_then_fail(*args: Any) -> None:
        real(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "_fill_folder", fill_then_fail)
    with pytest.raises(KeyboardInterrupt):
        decompress(clm, out, model=m1, force=True)
    assert tree(out) == before and names(tmp_path) == ["a.clm", "out", "src"]


def test_outputs_that_are_inputs_are_refused(tmp_path: Path, m1: M1) -> None:
    src = make_tree(tmp_path / "src")
    clm = tmp_path / "a.clm"
    with pytest.raises(ConfigError, match="lies inside the input"):
        compress(src, src / "self.clm", model=m1, threads=1)
    compress(src, clm, model=m1, threads=1)
    data = clm.read_bytes()
    with pytest.raises(ConfigError, match="is also an input"):
        decompress(clm, clm, model=m1, force=True)
    assert clm.read_bytes() == data


def test_tokenize_refuses_its_corpus_and_folders_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("some text " * 20)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    common = ["--scheme", "bytes", "--workers", "1", "--val-fraction", "0.5", "--force"]
    assert main(["tokenize", str(corpus), "-o", str(corpus), *common]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert main(["tokenize", str(corpus), "-o", str(corpus / "tok"), *common]) == 2
    assert "inside the input" in capsys.readouterr().err
    assert main(["tokenize", str(corpus), "-o", str(other), *common]) == 2
    assert "is not a token dataset" in capsys.readouterr().err
    assert names(corpus) == ["a.txt"] and names(other) == ["cat.jpg"]


def test_select_refuses_an_output_equal_to_its_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(5)))
    target = tmp_path / "target.jsonl"
    target.write_text(json.dumps({"text": "doc"}) + "\n")
    data = pool.read_bytes()
    args = ["select", "--source", str(pool), "--target", str(target), "--k", "2", "--force"]
    assert main([*args, "--out", str(pool)]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert main([*args, "--out", str(target)]) == 2
    assert pool.read_bytes() == data


# ---------------------------------------------------------------------------------------- hostile .clm


def rewrite(clm: Path, dest: Path, **change: Any) -> Path:
    """``clm`` with parts replaced (header, docs, layout, payload) and every CRC made valid, in
    its own version."""
    c = read_container(clm.read_bytes())
    fields = {"header": c.header, "docs": c.docs, "layout": c.layout, "payload": c.payload}
    fields.update(change)
    if c.version == 2:
        dest.write_bytes(write_v2(**fields))
        return dest
    buf = io.BytesIO()
    write_container(buf, Container(**fields, digest=c.digest))
    dest.write_bytes(buf.getvalue())
    return dest


@pytest.fixture(scope="module")
def v2_m1() -> M1:
    return M1.load(DATA / "clm-v2" / "m1", threads=1)


@pytest.fixture(params=["v3-stream", "v3-windows", "v2-stream", "v2-windows"])
def small_clm(tmp_path: Path, m1: M1, v2_m1: M1, request: pytest.FixtureRequest) -> tuple[Path, M1]:
    """A small folder archive of each version and mode, and the M1 it needs (version 2: a file
    the version 2 writer wrote, see test_clm_versions.py)."""
    version, mode = request.param.split("-")
    if version == "v2":
        return DATA / "clm-v2" / f"{mode}-folder.clm", v2_m1
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("hello hello hello\n")
    compress(tmp_path / "in", tmp_path / "s.clm", model=m1, threads=1, segment_bytes=8, mode=mode)
    return tmp_path / "s.clm", m1


def test_a_huge_declared_document_fails_before_any_work(tmp_path: Path, small_clm: tuple[Path, M1]) -> None:
    clm = small_clm[0]
    c = read_container(clm.read_bytes())
    header = json.loads(json.dumps(c.header))
    header["segment_bytes"] = None
    if c.version == 2:
        header["document_bytes"] += 2**40 - sum(d.nbytes for d in c.docs)
        header["documents"] = 1
    doc = DocEntry(2**40, c.docs[0].crc32, [sum(d.windows for d in c.docs)])
    bad = rewrite(clm, tmp_path / "huge.clm", header=header, docs=[doc])
    assert bad.stat().st_size < 2_000
    with pytest.raises(
        IntegrityError, match="(windows cannot code|code cannot hold) a 1099511627776-byte segment"
    ):
        load(bad)
    if c.version == 2:
        header["documents"] = 10**9  # a count the document table does not hold
        bad = rewrite(clm, tmp_path / "count.clm", header=header, docs=c.docs)
        with pytest.raises(IntegrityError, match="HEAD declares"):
            load(bad)
    else:  # a billion one-byte documents in a file of a few hundred bytes
        body = bad.read_bytes()[:-4]
        docs_at = len(body) - 8 - len(c.payload) - len(encode_docs([doc], header["mode"] == "windows"))
        hostile = body[:docs_at] + b"\x80\x94\xeb\xdc\x03" + body[docs_at + 1 :]
        bad.write_bytes(hostile + struct.pack("<I", zlib.crc32(hostile)))
        with pytest.raises(IntegrityError, match="declares 1000000000 documents"):
            load(bad)


def test_a_zstd_bomb_in_the_layout_is_refused_without_allocating(
    tmp_path: Path, small_clm: tuple[Path, M1]
) -> None:
    clm = small_clm[0]
    c = read_container(clm.read_bytes())
    bomb = bytes([CODEC_ZSTD]) + zstandard.ZstdCompressor(level=19).compress(bytes(1 << 28))
    header = json.loads(json.dumps(c.header))
    if c.version == 2:
        header["layout_bytes"] = 1 << 28
    bad = rewrite(clm, tmp_path / "bomb.clm", header=header, layout=bomb)
    tracemalloc.start()
    try:
        with pytest.raises(IntegrityError, match="more than a .*-byte file can hold"):
            layout_of(load(bad), str(bad))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    # A frame that lies about its size, or is followed by more data, is refused too.
    table = layout_table(c, str(clm))
    longer = bytes([CODEC_ZSTD]) + zstandard.ZstdCompressor().compress(table + bytes(1000))
    bad = rewrite(clm, tmp_path / "long.clm", layout=longer)
    with pytest.raises(IntegrityError, match="LAYO.s zstd frame holds|trailing bytes|fails its sha256"):
        layout_of(load(bad), str(bad))
    packed = bytes([CODEC_ZSTD]) + zstandard.ZstdCompressor().compress(table)
    bad = rewrite(clm, tmp_path / "trail.clm", layout=packed + b"\x00junk")
    with pytest.raises(IntegrityError, match="followed by other data|does not decompress"):
        layout_of(load(bad), str(bad))


HOSTILE_HEADERS: dict[str, Any] = {
    "source not an object": lambda h: h.update(source=[]),
    "model not an object": lambda h: h.update(model="m1"),
    "segment_bytes a string": lambda h: h.update(segment_bytes="8"),
    "max_window_bytes 0": lambda h: h["coder"].update(max_window_bytes=0),
    "window_bits 12": lambda h: h["coder"].update(window_bits=12),
    "a 5000-digit count": lambda h: h.update(windows="HUGE"),
    "a boolean count": lambda h: h.update(documents=True),
    "deep nesting": lambda h: h.update(stats=json.loads("[" * 500 + "]" * 500)),
    "unknown field": lambda h: h.update(numerics_v9="int8"),
    "NUL in the name": lambda h: h["source"].update(name="a\x00b"),
    "5000-character name": lambda h: h["source"].update(name="x" * 5000),
    "missing coder": lambda h: h.pop("coder"),
    "bad sha256": lambda h: h["model"].update(sha256="../../etc/passwd"),
}


@pytest.mark.parametrize("mode", ["stream", "windows"])
@pytest.mark.parametrize("case", sorted(HOSTILE_HEADERS))
def test_hostile_version_2_headers_are_clear_errors(tmp_path: Path, v2_m1: M1, mode: str, case: str) -> None:
    clm = DATA / "clm-v2" / f"{mode}-folder.clm"
    header = json.loads(json.dumps(load(clm).header))
    HOSTILE_HEADERS[case](header)
    head = json.dumps(header).replace('"HUGE"', "9" * 5000).encode("utf-8")  # json cannot write it
    bad = with_head(clm, tmp_path / "bad.clm", head)
    for action in (lambda: decompress(bad, tmp_path / "out", model=v2_m1), lambda: inspect(bad, model=v2_m1)):
        with pytest.raises(IntegrityError, match=rf"^{bad}: "):
            action()
    assert not (tmp_path / "out").exists()


def _flags(h: bytes, value: int) -> bytes:
    return bytes([value]) + h[1:]


HOSTILE_BINARY_HEADERS: dict[str, tuple[Any, str]] = {
    # name: (header bytes -> hostile header bytes, expected message)
    "an unknown source kind": (lambda h: _flags(h, h[0] | 0b110), "unknown source kind 3"),
    "unknown numerics": (lambda h: _flags(h, h[0] | 0b11000), "unknown numerics"),
    "window_bits 0": (lambda h: h[:1] + b"\x00" + h[2:], "window_bits: expected an integer in 16..256"),
    "a 70-bit number": (lambda h: h[:1] + b"\xff" * 10 + h[2:], "number too long"),
    "a path with NUL": (lambda h: _flags(h, h[0] | 0x40) + b"\x03a\x00b", "path"),
    "a 5000-byte path": (lambda h: _flags(h, h[0] | 0x40) + b"\x88\x27" + b"x" * 5000, "longer than 4096"),
    "a path that is not UTF-8": (lambda h: _flags(h, h[0] | 0x40) + b"\x02\xff\xfe", "not UTF-8"),
    "an unknown field": (lambda h: _flags(h, h[0] | 0x80) + b"\x01\x63\x01", "unknown or out of order"),
    "fields out of order": (lambda h: _flags(h, h[0] | 0x80) + b"\x02\x03\x01\x02\x01", "out of order"),
    "a billion fields": (lambda h: _flags(h, h[0] | 0x80) + b"\x80\x94\xeb\xdc\x03", "cannot hold them"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_BINARY_HEADERS))
def test_hostile_version_3_headers_are_clear_errors(tmp_path: Path, m1: M1, case: str) -> None:
    """Version 3 headers are bytes: wrong values, unknown codes and overlong fields (the file's CRC
    recomputed, as an attacker would) are each one clear error, from decompress and inspect."""
    src = tmp_path / "a.txt"
    src.write_text("hello hello\n")
    clm = tmp_path / "a.clm"
    compress(src, clm, model=m1, threads=1, mode="windows")
    data = clm.read_bytes()
    header = read_container(data).header
    end = 5 + len(encode_header(header))
    header["model"]["path"] = None  # the hostile fields go at the header's end
    assert header["source"] == {**header["source"], "record_lines": 0, "skipped": 0}
    mutate, message = HOSTILE_BINARY_HEADERS[case]
    body = data[:5] + mutate(encode_header(header)) + data[end:-4]
    bad = tmp_path / "bad.clm"
    bad.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    for action in (lambda: decompress(bad, tmp_path / "out", model=m1), lambda: inspect(bad, model=m1)):
        with pytest.raises(IntegrityError, match=rf"^{bad}: HEAD.*{message}"):
            action()
    assert not (tmp_path / "out").exists()


def replace_head(data: bytes, head: bytes) -> bytes:
    """A version 2 file's bytes with the HEAD section's payload replaced (and its CRC made valid)."""
    start = data.index(b"HEAD") + 12
    (length,) = struct.unpack_from("<Q", data, start - 8)
    return (
        data[: start - 8]
        + struct.pack("<Q", len(head))
        + head
        + struct.pack("<I", zlib.crc32(head))
        + data[start + length + 4 :]
    )


def with_head(clm: Path, dest: Path, head: bytes) -> Path:
    dest.write_bytes(replace_head(clm.read_bytes(), head))
    return dest


def test_a_json_nesting_bomb_is_a_clear_error(tmp_path: Path) -> None:
    clm = DATA / "clm-v2" / "stream-folder.clm"
    bad = with_head(clm, tmp_path / "nest.clm", b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")
    with pytest.raises(IntegrityError, match=rf"^{bad}: HEAD is nested too deeply"):
        load(bad)


def layout(entries: list[LayoutFile]) -> bytes:
    return encode_layout([LayoutFile("", kind=FOLDER), *entries])[1]


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (["a\x00b"], "NUL"),
        (["/etc/passwd"], "absolute"),
        (["../up"], "'..'"),
        (["a/./b"], "'.'"),
        (["x" * 5000], "longer than"),
        (["y" * 300], "longer than 255"),
        (["a", "a"], "twice"),
        (["a", "a/b"], "as a file and 'a/b' inside it"),
    ],
)
def test_hostile_stored_paths_are_refused(paths: list[str], message: str) -> None:
    entries = [LayoutFile(p, b"\x00" * 32, [], kind=FILE) for p in paths]
    with pytest.raises(IntegrityError, match=message):
        decode_layout(layout(entries), "x.clm")
    with pytest.raises(IntegrityError, match=message):  # the same rules for version 2 files
        decode_layout_v2(layout_v2(entries), "x.clm")


def layout_v2(entries: list[LayoutFile]) -> bytes:
    """A version 2 layout table (full paths, each file's sha256)."""
    from compresslm.coding.binary import put_varint

    out = bytearray()
    put_varint(out, len(entries))
    for f in entries:
        out.append(1 if f.kind == FOLDER else 0)
        path = f.path.encode("utf-8")
        put_varint(out, len(path))
        out += path
        if f.kind == FILE:
            out += f.sha256
            put_varint(out, 0)
    return bytes(out)


def test_folders_and_files_may_nest_legitimately() -> None:
    entries = [
        LayoutFile("", kind=FOLDER, mode=0o755, mtime_ns=-5),
        LayoutFile("a", kind=FOLDER, mode=0o700, mtime_ns=7),
        LayoutFile("a/b", b"", [(RAW, b"x"), (VERBATIM, 0)], mode=0o644, mtime_ns=2**62),
        LayoutFile("a/c", b"", [(VERBATIM, 1)], mode=0o644, mtime_ns=2**62 + 10**9),
        LayoutFile("b", b"", [], mode=0o4755, mtime_ns=-(2**62)),
        LayoutFile("c", b"", [(JSON_ASCII, 2)]),
    ]
    assert decode_layout(encode_layout(entries)[1], "x.clm") == entries


# -------------------------------------------------------------------------------------- modes, HF


def test_model_files_respect_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writers, "_umask", None)
    old = os.umask(0o022)
    try:
        save_model(tmp_path / "m", Transformer(config_for_size("tiny", vocab_size=256, max_seq_len=16)))
    finally:
        os.umask(old)
        writers._umask = None
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "m").iterdir()}
    assert modes == {"config.json": 0o644, "model.safetensors": 0o644}  # not 0o600


def test_hf_models_load_from_safetensors_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from compresslm.models.hf import load_hf_causal_lm

    calls: list[dict[str, Any]] = []

    class Auto:
        @staticmethod
        def from_pretrained(path: str, **kwargs: Any) -> torch.nn.Module:
            calls.append(kwargs)
            return torch.nn.Linear(1, 1)

    fake = types.SimpleNamespace(AutoModelForCausalLM=Auto)
    monkeypatch.setitem(sys.modules, "transformers", fake)
    load_hf_causal_lm(tmp_path)
    assert calls == [{"local_files_only": True, "use_safetensors": True}]


# ---------------------------------------------------------------------------------- property: damage


@pytest.fixture(scope="module")
def property_case(tmp_path_factory: pytest.TempPathFactory, m1: M1) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("prop")
    src = make_tree(root / "src")
    compress(src, root / "p.clm", model=m1, threads=1, segment_bytes=16)
    return root / "p.clm", tree(src)


def damage(raw: bytes, start: int, end: int, how: str, data: st.DataObject) -> bytes:
    """``raw`` with ``raw[start:end]`` flipped, set, cut or grown at one place."""
    part = bytearray(raw[start:end])
    pos = data.draw(st.integers(0, max(0, len(part) - 1)))
    if how == "flip" and part:
        part[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "set" and part:
        part[pos] = data.draw(st.integers(0, 255))
    elif how == "insert":
        part[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    elif how == "delete" and part:
        del part[pos : pos + data.draw(st.integers(1, 8))]
    return raw[:start] + bytes(part) + raw[end:]


def refused_or_exact(clm: bytes, m1: M1, original: dict[str, Any], folder: Path) -> None:
    bad, out = folder / "bad.clm", folder / "out"
    bad.write_bytes(clm)
    try:
        decompress(bad, out, model=m1)
    except CompressLMError:
        assert not out.exists()
        return
    assert tree(out) == {
        k: (kind, mode & ~current_umask(), t, d) for k, (kind, mode, t, d) in original.items()
    }


DAMAGE = st.sampled_from(["flip", "set", "truncate", "insert", "delete"])


@given(data=st.data(), how=DAMAGE, fix_crc=st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_damaged_files_are_refused_or_restored_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    m1: M1,
    property_case: tuple[Path, dict[str, Any]],
    data: st.DataObject,
    how: str,
    fix_crc: bool,
) -> None:
    """Any byte of a version 3 file changed, inserted or deleted, with or without the file's CRC
    recomputed (what an attacker would do): the restore fails with a clear error and writes
    nothing, or it is exactly the original (names, modes and mtimes included: the digest covers
    the layout)."""
    clm, original = property_case
    raw = clm.read_bytes()
    if how == "truncate":
        damaged = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        damaged = damage(raw[:-4], 0, len(raw) - 4, how, data)
        damaged += struct.pack("<I", zlib.crc32(damaged) if fix_crc else zlib.crc32(raw[:-4]))
    refused_or_exact(damaged, m1, original, tmp_path_factory.mktemp("damaged"))


@given(data=st.data(), how=DAMAGE, fix_crc=st.booleans())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_damaged_version_2_files_are_refused_or_restored_exactly(
    tmp_path_factory: pytest.TempPathFactory, v2_m1: M1, data: st.DataObject, how: str, fix_crc: bool
) -> None:
    """The same for a file the version 2 writer wrote, section by section (its CRCs are per
    section)."""
    raw = (DATA / "clm-v2" / "windows-folder.clm").read_bytes()
    folder = tmp_path_factory.mktemp("damaged2")
    original = snapshot(make_folder(folder / "src"))
    if how == "truncate":
        damaged = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        tag = data.draw(st.sampled_from([b"HEAD", b"DOCS", b"LAYO", b"WIND"]))
        start = raw.index(tag) + 12
        (length,) = struct.unpack_from("<Q", raw, start - 8)
        changed = damage(raw, start, start + length, how, data)
        new_length = length + len(changed) - len(raw)
        payload = changed[start : start + new_length]
        crc = zlib.crc32(payload) if fix_crc else struct.unpack_from("<I", raw, start + length)[0]
        damaged = (
            raw[: start - 8]
            + struct.pack("<Q", new_length)
            + payload
            + struct.pack("<I", crc)
            + raw[start + length + 4 :]
        )
    refused_or_exact(damaged, v2_m1, original, folder)


def test_a_layout_beyond_the_readers_bound_is_stored_raw_and_still_restores() -> None:
    from compresslm.coding.layout import CODEC_RAW, layout_limit, unpack_layout

    entries = [LayoutFile("", b"", [(0, bytes(3 << 20))], mode=0o644, mtime_ns=1)]
    payload, table = encode_layout(entries)  # 3 MiB of zeros compress far beyond 1024x
    assert payload[0] == CODEC_RAW and len(table) > layout_limit(0)
    assert decode_layout(unpack_layout(payload, len(payload), "x"), "x") == entries
    payload, table = encode_layout(entries, other_bytes=1 << 20)  # a file this big may hold it
    assert payload[0] == CODEC_ZSTD
    size = len(payload) + (1 << 20)
    assert decode_layout(unpack_layout(payload, size, "x"), "x") == entries
    with pytest.raises(IntegrityError, match="more than a"):
        unpack_layout(payload, len(payload), "x")


def test_a_small_layout_is_stored_raw() -> None:
    """zstd only when it pays: a frame costs more than it saves on a few bytes."""
    payload, table = encode_layout([LayoutFile("", b"", [(1, 0)], mode=0o644, mtime_ns=1)])
    assert payload == bytes([0]) + table and len(table) <= 5


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(data=st.data(), value=json_values)
@settings(max_examples=150, deadline=None)
def test_any_version_2_header_value_is_accepted_or_a_clear_error(data: st.DataObject, value: Any) -> None:
    """Replace any one header field of a version 2 file (at any depth) by any JSON value: reading
    the file, its layout and its summary either works or raises IntegrityError, never anything else."""
    clm = DATA / "clm-v2" / "windows-folder.clm"
    header = json.loads(json.dumps(load(clm).header))
    node = header
    while True:
        key = data.draw(st.sampled_from(sorted(node)))
        if isinstance(node[key], dict) and data.draw(st.booleans()):
            node = node[key]
            continue
        node[key] = value
        break
    damaged = replace_head(clm.read_bytes(), json.dumps(header).encode("utf-8"))
    try:
        container = read_container(damaged, "x.clm")
        layout_of(container, "x.clm")
    except IntegrityError as exc:
        assert str(exc).startswith("x.clm: ")
