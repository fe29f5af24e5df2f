"""The inputs behind the checked-in .clm files of ``tests/data/`` (one definition, used to write
them once and by the tests that restore them), and a snapshot of a restored tree."""

from __future__ import annotations

import os
import stat
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
FILE_TEXT = (
    "Old formats must keep opening: a .clm written by an earlier release is restored byte for byte.\n"
    "def f(x):\n    return x * 2  # code, too\n"
)
MTIME_NS = 1_700_000_000_123_456_789


def make_file(path: Path) -> Path:
    """A single text file with a non-default mode and a nanosecond mtime."""
    path.write_text(FILE_TEXT)
    os.chmod(path, 0o640)
    os.utime(path, ns=(MTIME_NS, MTIME_NS))
    return path


def make_folder(root: Path) -> Path:
    """A folder with what an archive must keep: nested and empty folders, a hidden file, JSON Lines
    (split into text documents and verbatim pieces), modes and mtimes."""
    (root / "src" / "empty").mkdir(parents=True)
    (root / ".hidden").write_text("KEY=1\n")
    (root / "src" / "run.sh").write_text("#!/bin/sh\necho hello\n")
    (root / "src" / "data.jsonl").write_text(
        '{"id": 1, "text": "hello world"}\n{"text": "caf\\u00e9"}\nnot json\n'
    )
    (root / "README.md").write_text("# Fixture\n\nA folder archive.\n")
    os.chmod(root / "src" / "run.sh", 0o755)
    os.chmod(root / "src" / "empty", 0o700)
    for i, p in enumerate(sorted(root.rglob("*"), key=lambda p: (-len(p.parts), p.as_posix()))):
        os.utime(p, ns=(MTIME_NS, MTIME_NS + 1_000_003 * i))
    os.utime(root, ns=(MTIME_NS, MTIME_NS - 5))
    return root


def snapshot(root: Path) -> dict[str, tuple[str, int, int, bytes]]:
    """Kind, permission bits, mtime (ns) and content of ``root`` (a file or folder), by relative path."""
    found = {}
    for p in [root, *(root.rglob("*") if root.is_dir() else [])]:
        st_ = p.lstat()
        kind = "dir" if stat.S_ISDIR(st_.st_mode) else "file"
        data = p.read_bytes() if kind == "file" else b""
        found[p.relative_to(root).as_posix()] = (kind, stat.S_IMODE(st_.st_mode), st_.st_mtime_ns, data)
    return found


def write_v2(header: dict, docs: list, layout: bytes, payload: bytes) -> bytes:
    """A version 2 file from its parts, every section CRC valid: how a hostile version 2 file is
    made now that only the reader remains (the layout as the version 2 writer wrote it)."""
    import json
    import struct
    import zlib

    from compresslm.coding.binary import put_varint

    table = bytearray()
    put_varint(table, len(docs))
    for d in docs:
        put_varint(table, d.nbytes)
        table += struct.pack("<I", d.crc32)
        put_varint(table, len(d.segment_windows))
        for n in d.segment_windows:
            put_varint(table, n)
        put_varint(table, len(d.exceptions))
        for w, n in d.exceptions:
            put_varint(table, w)
            put_varint(table, n)
    out = bytearray(b"\x89CLM\r\n\x1a\n" + struct.pack("<H", 2))
    head = header if isinstance(header, bytes) else json.dumps(header, sort_keys=True).encode("utf-8")
    for tag, part in (
        (b"HEAD", head),
        (b"DOCS", bytes(table)),
        (b"LAYO", layout),
        (b"WIND", payload),
        (b"END!", b""),
    ):
        out += tag + struct.pack("<Q", len(part)) + part + struct.pack("<I", zlib.crc32(part))
    return bytes(out)
