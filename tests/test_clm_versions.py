"""Files written by earlier releases keep opening: the .clm files in ``tests/data/clm-v2`` were
written by the version 2 writer (commit 5d5ba83) with the small exact M1 stored beside them, from
the inputs of ``tests/clm_fixtures.py``; each must restore byte for byte, modes and mtimes
included, and a wrong model must still be refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from clm_fixtures import DATA, make_file, make_folder, snapshot
from compresslm.coding.compress import decompress, inspect, load
from compresslm.coding.m1 import M1
from compresslm.errors import IntegrityError

V2 = DATA / "clm-v2"


@pytest.fixture(scope="module")
def v2_m1() -> M1:
    return M1.load(V2 / "m1", threads=1)


def umask() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("stream-file.clm", make_file),
        ("windows-file.clm", make_file),
        ("stream-folder.clm", make_folder),
        ("windows-folder.clm", make_folder),
    ],
)
def test_version_2_files_restore_exactly(tmp_path: Path, v2_m1: M1, name: str, make) -> None:
    clm = V2 / name
    assert clm.read_bytes()[8:10] == b"\x02\x00"  # really written by the version 2 writer
    original = make(tmp_path / ("in" if "folder" in name else "in.txt"))
    out = tmp_path / "out"
    decompress(clm, out, model=v2_m1)
    mask = umask()
    expected = {k: (kind, mode & ~mask, t, d) for k, (kind, mode, t, d) in snapshot(original).items()}
    assert snapshot(out) == expected
    assert inspect(clm, model=v2_m1).document_bytes == sum(e.nbytes for e in load(clm).docs)


def test_version_2_files_refuse_another_model(tmp_path: Path) -> None:
    from test_m1_exact import random_exact

    other = random_exact(8, d_model=16, n_heads=2, n_layers=1, d_mlp=32, max_seq_len=64).save(tmp_path / "m")
    with pytest.raises(IntegrityError, match="weights sha256"):
        decompress(V2 / "stream-file.clm", tmp_path / "out", model=M1.load(other, threads=1))
    assert not (tmp_path / "out").exists()
