"""Files written by earlier releases keep opening: the .clm files in ``tests/data/clm-v2`` were
written by the version 2 writer (commit 5d5ba83), those in ``tests/data/clm-v3`` by the version 3
writer (commit 01eb97c), both with the small exact M1 of ``tests/data/clm-v2/m1``, from the inputs
of ``tests/clm_fixtures.py``; each must restore byte for byte, modes and mtimes included, and a
wrong model must still be refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from clm_fixtures import DATA, make_file, make_folder, snapshot
from compresslm.coding.compress import decompress, inspect, load
from compresslm.coding.m1 import M1
from compresslm.errors import IntegrityError

V2 = DATA / "clm-v2"
V3 = DATA / "clm-v3"
FIXTURES = [
    ("stream-file.clm", make_file),
    ("windows-file.clm", make_file),
    ("stream-folder.clm", make_folder),
    ("windows-folder.clm", make_folder),
]


@pytest.fixture(scope="module")
def v2_m1() -> M1:
    return M1.load(V2 / "m1", threads=1)


def umask() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _restores_exactly(tmp_path: Path, m1: M1, clm: Path, make) -> None:
    original = make(tmp_path / ("in" if "folder" in clm.name else "in.txt"))
    out = tmp_path / "out"
    decompress(clm, out, model=m1)
    mask = umask()
    expected = {k: (kind, mode & ~mask, t, d) for k, (kind, mode, t, d) in snapshot(original).items()}
    assert snapshot(out) == expected
    assert inspect(clm, model=m1).document_bytes == sum(e.nbytes for e in load(clm).docs)


@pytest.mark.parametrize(("name", "make"), FIXTURES)
def test_version_3_files_restore_exactly(tmp_path: Path, v2_m1: M1, name: str, make) -> None:
    clm = V3 / name
    assert clm.read_bytes()[:5] == b"\x89CLM\x03"  # really written by the version 3 writer
    assert load(clm).version == 3
    _restores_exactly(tmp_path, v2_m1, clm, make)


@pytest.mark.parametrize(("name", "make"), FIXTURES)
def test_version_2_files_restore_exactly(tmp_path: Path, v2_m1: M1, name: str, make) -> None:
    clm = V2 / name
    assert clm.read_bytes()[8:10] == b"\x02\x00"  # really written by the version 2 writer
    _restores_exactly(tmp_path, v2_m1, clm, make)


def test_version_2_files_refuse_another_model(tmp_path: Path) -> None:
    from test_m1_exact import random_exact

    other = random_exact(8, d_model=16, n_heads=2, n_layers=1, d_mlp=32, max_seq_len=64).save(tmp_path / "m")
    with pytest.raises(IntegrityError, match="weights sha256"):
        decompress(V2 / "stream-file.clm", tmp_path / "out", model=M1.load(other, threads=1))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("name", "which"),
    [
        ("stream-file.clm", "the restored file fails"),
        ("stream-folder.clm", r"one or more of the \d+ restored files fail"),
    ],
)
def test_a_failed_digest_names_what_it_can(tmp_path: Path, v2_m1: M1, name: str, which: str) -> None:
    """Damaged codes with the CRC recomputed decode to other bytes: the digest refuses them, naming
    the file when the archive holds one (one digest covers the archive, so no more can be told)."""
    import struct
    import zlib

    raw = bytearray((V3 / name).read_bytes()[:-4])
    raw[-20] ^= 0x55  # inside the codes
    bad = tmp_path / "bad.clm"
    bad.write_bytes(bytes(raw) + struct.pack("<I", zlib.crc32(raw)))
    with pytest.raises(IntegrityError, match=f"{which}.* the archive's digest check"):
        decompress(bad, tmp_path / "out", model=v2_m1)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("folder", [V2, V3])
def test_inspect_json_reports_what_the_file_holds(
    folder: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``inspect --json`` gives the format, numerics, files, documents, segments and, where the
    layout alone tells it, the restored bytes (a folder with JSON Lines needs decoding for that)."""
    import json

    from clm_fixtures import FILE_TEXT
    from compresslm.cli import main

    for name in ("stream-file.clm", "windows-folder.clm"):
        assert main(["inspect", str(folder / name), "--json", "--model", str(V2 / "m1")]) == 0
        shown = json.loads(capsys.readouterr().out)
        container = load(folder / name)
        assert shown["format_version"] == container.version
        assert shown["numerics"] == "int8-exact-v1"
        assert shown["documents"] == len(container.docs)
        assert shown["segments"] == sum(len(d.segment_windows) for d in container.docs)
        if name == "stream-file.clm":
            assert (shown["files"], shown["folders"]) == (1, 0)
            assert shown["input_bytes"] == len(FILE_TEXT.encode())
        else:
            restored = make_folder(tmp_path / folder.name)
            on_disk = [p for p in restored.rglob("*")]
            assert shown["files"] == sum(p.is_file() for p in on_disk)
            assert shown["folders"] == 1 + sum(p.is_dir() for p in on_disk)
            expected = sum(p.stat().st_size for p in on_disk if p.is_file()) if folder == V2 else None
            assert shown["input_bytes"] == expected
