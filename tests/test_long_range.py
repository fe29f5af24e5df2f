"""The long-range match stage of stream mode (coding/long_range.py) and the .clm version 4 that
stores it: any parse rebuilds its input, hostile match tables are refused before any work, files
restore exactly through every input kind, and what needs no matches is written as before."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clm_fixtures import DATA, make_file, make_folder, snapshot
from compresslm.cli import main
from compresslm.coding.compress import compress, decompress, inspect, load
from compresslm.coding.container import Container, DocEntry, read_container, write_container
from compresslm.coding.long_range import (
    MAX_MATCH,
    Match,
    decode_matches,
    encode_matches,
    find_matches,
    matched_per_document,
    restore,
)
from compresslm.coding.m1 import M1
from compresslm.errors import ConfigError, IntegrityError
from test_clm_container import header
from test_clm_files import _Stdio
from test_clm_safety import refused_or_exact

LICENCE = (
    b"Permission is hereby granted, free of charge, to any person obtaining a copy of this "
    b"software and associated documentation files, to deal in the Software without restriction.\n"
)


@pytest.fixture(scope="module")
def m1() -> M1:
    return M1.load(DATA / "clm-v2" / "m1", threads=1)


def rebuilt(docs: list[bytes], min_match: int) -> list[bytes]:
    """``docs`` through a parse, its table's bytes and the reader's checks, and back."""
    parse = find_matches(docs, min_match)
    matches = decode_matches(encode_matches(parse.matches, min_match), min_match, "t")
    assert matches == parse.matches
    lengths = [len(d) for d in docs]
    matched = matched_per_document(matches, lengths, "t")  # the reader's checks accept it
    assert [len(lit) + n for lit, n in zip(parse.literals, matched, strict=True)] == lengths
    assert all(m.length >= min_match for m in matches)
    return restore(parse.literals, matches, lengths)


# ------------------------------------------------------------------------------- parse and rebuild

repetitive = st.lists(
    st.sampled_from([b"ab", b"abc", b"x" * 9, LICENCE[:40], b"\n", b"\x00\xff"]), max_size=40
)
documents = st.lists(
    st.one_of(st.binary(max_size=60), repetitive.map(b"".join)),
    max_size=8,
)


@given(docs=documents, min_match=st.integers(1, 12))
@settings(max_examples=300, deadline=None)
def test_any_parse_rebuilds_its_documents(docs: list[bytes], min_match: int) -> None:
    """Random and repetitive documents, empty ones among them: the literal documents and the
    matches give back every document exactly, with every match inside one document."""
    assert rebuilt(docs, min_match) == docs


def test_overlapping_copies_repeat_a_pattern() -> None:
    docs = [b"ab" * 500, b"z" * 3000]
    parse = find_matches(docs, 4)
    assert any(m.distance < m.length for m in parse.matches)  # a copy overlapping its source
    assert sum(map(len, parse.literals)) < 10
    assert rebuilt(docs, 4) == docs


def test_matches_reach_document_edges_but_never_cross_them() -> None:
    """A document repeating an earlier one is one match from its first byte to its last; a repeat
    running over a document boundary is cut there."""
    docs = [LICENCE, LICENCE, b"", LICENCE + LICENCE[:50], LICENCE[50:] + b"tail"]
    parse = find_matches(docs, 16)
    assert parse.literals[1] == b"" and parse.literals[2] == b""
    matched = matched_per_document(parse.matches, [len(d) for d in docs], "t")
    assert matched[1] == len(LICENCE) and matched[3] == len(LICENCE) + 50
    assert rebuilt(docs, 16) == docs


def test_many_documents_and_long_runs() -> None:
    """Copies across many documents, and runs longer than MAX_MATCH (split into several)."""
    docs = [LICENCE + f"file {i}\n".encode() + LICENCE for i in range(200)] + [b"\x00" * (3 * MAX_MATCH)]
    parse = find_matches(docs, 32)
    assert parse.matched_bytes > 0.9 * sum(map(len, docs))
    assert max(m.length for m in parse.matches) == MAX_MATCH
    assert rebuilt(docs, 32) == docs


def test_nothing_to_match() -> None:
    docs = [bytes(range(256)), b"", b"short"]
    parse = find_matches(docs, 32)
    assert parse.matches == [] and parse.literals == docs


# ----------------------------------------------------------------------------- hostile match tables


@pytest.mark.parametrize(
    ("matches", "message"),
    [
        ([Match(5, 6, 4)], "before the start"),
        ([Match(5, 0, 4)], "before the start"),
        ([Match(8, 2, 4)], "runs past the end of document 0"),
        ([Match(12, 2, 9)], "runs past the end of document 1"),
        ([Match(30, 2, 4)], "past the end"),
        (
            [Match(1, 1, 9), Match(0, 1, 10), Match(0, 1, 1)],
            "match 2 starts at byte 20, past the end",
        ),
    ],
)
def test_hostile_matches_are_refused(matches: list[Match], message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        matched_per_document(matches, [10, 10], "x.clm: MATCH")


def test_a_match_table_that_cannot_hold_its_count_is_refused() -> None:
    with pytest.raises(IntegrityError, match="declares 1000 matches"):
        decode_matches(b"\xe8\x07" + bytes(30), 32, "x.clm: MATCH")
    with pytest.raises(IntegrityError, match="ends inside a number"):
        decode_matches(b"\x01\x00\x80\x80", 32, "x.clm: MATCH")


def stream_header(min_match: int) -> dict[str, Any]:
    h = header("stream", segment_bytes=None)
    h["coder"]["min_match"] = min_match
    return h


def v4_file(docs: list[DocEntry], matches: list[Match], payload: bytes = bytes(4)) -> bytes:
    buf = io.BytesIO()
    write_container(
        buf, Container(stream_header(4), docs, b"\x00x", payload, digest=b"digest!!", matches=matches)
    )
    return buf.getvalue()


def test_version_4_container_round_trip() -> None:
    docs = [DocEntry(10, None, [2], matched=20), DocEntry(0, None, [], matched=0), DocEntry(5, None, [2])]
    matches = [Match(4, 3, 8), Match(2, 10, 12)]
    data = v4_file(docs, matches)
    assert data[4] == 4
    back = read_container(data, "x.clm")
    assert back.version == 4 and back.matches == matches and back.docs == docs
    assert back.header["coder"]["min_match"] == 4 and "match table" in back.sizes


def test_a_match_table_pointing_before_the_start_is_refused_when_read() -> None:
    docs = [DocEntry(10, None, [4], matched=8)]
    with pytest.raises(IntegrityError, match=r"x\.clm: MATCH: match 0 .*before the start"):
        read_container(v4_file(docs, [Match(2, 3, 8)]), "x.clm")


def test_a_match_bomb_is_refused_before_any_work() -> None:
    """A few bytes declaring a gigabyte of copies: refused from the arithmetic alone."""
    docs = [DocEntry(1, None, [4], matched=1 << 30)]
    data = v4_file(docs, [Match(1, 1, 1 << 30)])
    assert len(data) < 100
    with pytest.raises(IntegrityError, match="MATCH copies 1,073,741,824 bytes, more than a"):
        read_container(data, "x.clm")


# ------------------------------------------------------------------------------------ end to end


def folder_with_repeats(root: Path) -> Path:
    make_folder(root)
    for i in range(4):
        (root / f"lib{i}.py").write_bytes(b"# " + LICENCE + f"def f{i}(x):\n    return x + {i}\n".encode())
    (root / "empty.txt").write_bytes(b"")
    return root


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_files_and_folders_round_trip_with_matches(tmp_path: Path, m1: M1, kind: str) -> None:
    src = tmp_path / "in"
    if kind == "file":
        src.write_bytes(LICENCE * 3 + b"the end\n")
    else:
        folder_with_repeats(src)
    clm, out = tmp_path / "x.clm", tmp_path / "out"
    report = compress(src, clm, model=m1, threads=1)
    assert report.matches > 0 and report.matched_bytes >= 2 * len(LICENCE) - 64
    assert load(clm).version == 4
    decompress(clm, out, model=m1)
    assert {k: v[3] for k, v in snapshot(out).items()} == {k: v[3] for k, v in snapshot(src).items()}
    shown = inspect(clm, model=m1)
    assert (shown.matches, shown.matched_bytes) == (report.matches, report.matched_bytes)
    assert shown.document_bytes == report.document_bytes
    plain = compress(src, tmp_path / "plain.clm", model=m1, threads=1, long_range=False)
    assert plain.matches == 0 and plain.clm_bytes > report.clm_bytes


def test_records_round_trip_with_matches(tmp_path: Path, m1: M1) -> None:
    rows = [{"text": LICENCE.decode() + f" record {i}"} for i in range(6)]
    src = tmp_path / "records.json"
    src.write_text(json.dumps(rows), encoding="utf-8")
    clm, out = tmp_path / "r.clm", tmp_path / "r.jsonl"
    report = compress(src, clm, model=m1, threads=1)
    assert report.matches >= 5
    decompress(clm, out, model=m1)
    assert [json.loads(line)["text"] for line in out.read_text().splitlines()] == [r["text"] for r in rows]


def test_cli_stdin_to_stdout_with_matches_and_the_switches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = LICENCE * 4 + bytes(range(256))
    common = ["--model", str(DATA / "clm-v2" / "m1"), "--threads", "1", "--no-progress"]
    sizes = {}
    for flags in ([], ["--no-long-range"], ["--min-match", "0"], ["--min-match", "64"]):
        stdout = _Stdio()
        monkeypatch.setattr("sys.stdin", _Stdio(data))
        monkeypatch.setattr("sys.stdout", stdout)
        assert main(["compress", "-", "-o", "-", *common, *flags]) == 0
        clm = stdout.buffer.getvalue()
        sizes[" ".join(flags)] = (read_container(clm).version, len(clm))
        restored = _Stdio()
        monkeypatch.setattr("sys.stdin", _Stdio(clm))
        monkeypatch.setattr("sys.stdout", restored)
        assert main(["decompress", "-", "-o", "-", *common]) == 0
        assert restored.buffer.getvalue() == data
    assert sizes["--no-long-range"] == sizes["--min-match 0"]
    assert sizes[""][0] == sizes["--min-match 64"][0] == 4 and sizes["--no-long-range"][0] == 3
    assert sizes[""][1] < sizes["--no-long-range"][1]
    assert not list(tmp_path.iterdir())


def test_a_bad_min_match_is_a_clear_error(tmp_path: Path, m1: M1) -> None:
    (tmp_path / "a").write_bytes(b"x")
    with pytest.raises(ConfigError, match="--min-match"):
        compress(tmp_path / "a", tmp_path / "a.clm", model=m1, min_match=-1)


@pytest.mark.parametrize("mode", ["stream", "windows"])
def test_files_that_need_no_matches_are_written_as_before(tmp_path: Path, m1: M1, mode: str) -> None:
    """Windows mode ignores the match stage, and a stream-mode file without matches is the
    version 3 file: both byte for byte what long_range=False writes."""
    src = make_file(tmp_path / "notes.txt") if mode == "stream" else folder_with_repeats(tmp_path / "in")
    a, b = tmp_path / "a.clm", tmp_path / "b.clm"
    compress(src, a, model=m1, threads=1, mode=mode)
    compress(src, b, model=m1, threads=1, mode=mode, long_range=False)
    assert a.read_bytes() == b.read_bytes() and a.read_bytes()[4] == 3


# ----------------------------------------------------------------------------- damage, property


@pytest.fixture(scope="module")
def v4_case(tmp_path_factory: pytest.TempPathFactory, m1: M1) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("v4")
    src = folder_with_repeats(root / "src")
    compress(src, root / "p.clm", model=m1, threads=1, min_match=16, segment_bytes=64)
    assert load(root / "p.clm").version == 4
    return root / "p.clm", snapshot(src)


@given(data=st.data(), fix_crc=st.booleans())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_damaged_version_4_files_are_refused_or_restored_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    m1: M1,
    v4_case: tuple[Path, dict[str, Any]],
    data: st.DataObject,
    fix_crc: bool,
) -> None:
    """Any byte of a version 4 file changed (its match table included), with or without the CRC
    recomputed: a clear error and nothing written, or exactly the original."""
    clm, original = v4_case
    raw = bytearray(clm.read_bytes()[:-4])
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] = data.draw(st.integers(0, 255))
    crc = zlib.crc32(raw) if fix_crc else zlib.crc32(clm.read_bytes()[:-4])
    refused_or_exact(bytes(raw) + struct.pack("<I", crc), m1, original, tmp_path_factory.mktemp("bad"))
