"""A corpus of real text and code gathered from this machine, for training the shipped M1.

The shipped byte model must learn what people compress (source code, documentation, prose, logs,
configuration) and nothing may be downloaded, so the corpus is what a Debian machine with Python
already holds. Sources, in this order (each optional: a missing folder contributes nothing):

========================  =============================================  ==============================
source                    where                                          licence
========================  =============================================  ==============================
``python-stdlib``         the interpreter's library (``sysconfig``       PSF License 2.0
                          ``stdlib``; ``site-packages`` excluded)
``debian-python-stdlib``  ``/usr/lib/python3.*`` (Debian's interpreter)  PSF License 2.0
``debian-python``         ``/usr/lib/python3/dist-packages``             per package, see
                                                                         ``/usr/share/doc/*/copyright``
``perl``                  ``/usr/share/perl``, ``/usr/share/perl5``,     GPL-1+ or Artistic (Perl's
                          ``/usr/lib/x86_64-linux-gnu/perl*``            terms) and per module
``c-headers``             ``/usr/include``                               per package (glibc: LGPL-2.1+,
                                                                         Linux UAPI: GPL-2 with syscall
                                                                         note, ...)
``man``                   ``/usr/share/man`` (gzip-compressed roff)      per package
``info``                  ``/usr/share/info`` (gzip-compressed)          GFDL / per package
``doc``                   ``/usr/share/doc`` (READMEs, changelogs,       per package
                          copyright files, examples)
========================  =============================================  ==============================

The model is trained on these texts and ships as weights only; no text of the corpus is shipped.

**What is a document.** One regular file (symbolic links are skipped: they would only repeat a
file). ``.gz`` files are decompressed (their name loses the suffix). A file is used when its bytes
(after decompression) are at most :data:`MAX_FILE_BYTES`, hold no NUL byte (the stream's document
separator, and a sign of binary data) and decode as strict UTF-8. Everything else is skipped and
counted by reason: binaries, images and the rare Latin-1 text. Keeping them as bytes would teach the
model machine code that ``compress`` is not meant for and cost training time on a small CPU budget.

**Held out by file.** A file's *key* is its path relative to its source folder (without ``.gz``),
so the same library file under two interpreters (``json/decoder.py``) is on the same side. A file
is held out when ``sha256(key)`` falls into :data:`HELDOUT_PER_10K` of 10,000 buckets (2%). Files
are deduplicated by content (the first in walk order wins), and a training file whose bytes equal a
held-out file's is dropped, so no held-out byte sequence is in the training stream as a whole file.

**Outputs** (:func:`build`): ``train.u8`` (every training document followed by a NUL byte, the
stream :func:`compresslm.coding.m1_train.train_m1` reads), ``heldout.u8`` (the same for the held-out
files), ``heldout/<source>/<key>`` (the held-out files' bytes, for benchmarks) and
``manifest.json`` (per-source counts, skip reasons, the held-out list with sizes and sha256).
Every walk is sorted, so a machine gives the same corpus on every run.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from compresslm.errors import DataError

MAX_FILE_BYTES = 1 << 20
"""Largest document (after decompression); larger text files are mostly generated tables."""
HELDOUT_PER_10K = 200
"""Held-out share of the files, in 1/10,000 (2%)."""
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", ".git"})
MANIFEST = "manifest.json"
TRAIN_STREAM = "train.u8"
HELDOUT_STREAM = "heldout.u8"
HELDOUT_DIR = "heldout"


@dataclass(frozen=True)
class Source:
    """A named group of folders and the licence terms its files come under."""

    name: str
    roots: tuple[str, ...]
    licence: str
    skip_dirs: frozenset[str] = _SKIP_DIRS


def default_sources() -> tuple[Source, ...]:
    """The machine's sources in corpus order (see the module docstring)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    return (
        Source("python-stdlib", (stdlib,), "PSF License 2.0"),
        Source(
            "debian-python-stdlib",
            tuple(p for p in sorted(glob.glob("/usr/lib/python3.*")) if os.path.realpath(p) != stdlib),
            "PSF License 2.0",
        ),
        Source(
            "debian-python",
            ("/usr/lib/python3/dist-packages",),
            "per package: /usr/share/doc/<package>/copyright",
            skip_dirs=frozenset({"__pycache__", ".git"}),
        ),
        Source(
            "perl",
            (
                "/usr/share/perl",
                "/usr/share/perl5",
                "/usr/lib/x86_64-linux-gnu/perl",
                "/usr/lib/x86_64-linux-gnu/perl-base",
                "/usr/lib/x86_64-linux-gnu/perl5",
            ),
            "Perl's terms (GPL-1+ or Artistic) and per module",
        ),
        Source("c-headers", ("/usr/include",), "per package: /usr/share/doc/<package>/copyright"),
        Source("man", ("/usr/share/man",), "per package: /usr/share/doc/<package>/copyright"),
        Source("info", ("/usr/share/info",), "GFDL and per package"),
        Source("doc", ("/usr/share/doc",), "per package: /usr/share/doc/<package>/copyright"),
    )


@dataclass(frozen=True)
class Entry:
    """One candidate file: its source, absolute path and key (relative path without ``.gz``)."""

    source: str
    path: str
    key: str


def walk(source: Source) -> Iterator[Entry]:
    """Regular files under the source's roots, sorted, symbolic links skipped."""
    for root in source.roots:
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(
                d
                for d in dirnames
                if d not in source.skip_dirs and not os.path.islink(os.path.join(dirpath, d))
            )
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                rel = os.path.relpath(path, root)
                yield Entry(source.name, path, rel[:-3] if rel.endswith(".gz") else rel)


def is_heldout(key: str) -> bool:
    """Whether the file with this key is in the held-out set (a fixed hash split, see module doc)."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()[:8], "big")
    return bucket % 10_000 < HELDOUT_PER_10K


def read_document(path: str) -> tuple[bytes | None, str]:
    """The file's text bytes, or None and the reason it is skipped."""
    try:
        if os.path.getsize(path) > MAX_FILE_BYTES and not path.endswith(".gz"):
            return None, "too large"
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
    except (OSError, EOFError, gzip.BadGzipFile):
        return None, "unreadable"
    if len(data) > MAX_FILE_BYTES:
        return None, "too large"
    if not data:
        return None, "empty"
    if b"\x00" in data:
        return None, "binary (NUL byte)"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8"
    return data, ""


def _safe_key(key: str) -> str:
    parts = [p for p in Path(key).parts if p not in ("", ".", "..")]
    return os.path.join(*parts) if parts else "_"


def build(out: str | Path, sources: tuple[Source, ...] | None = None, *, progress: bool = True) -> dict:
    """Gather the corpus into ``out`` (see the module docstring for the files); returns the manifest.

    Refuses a folder that already holds a manifest: a corpus is built once and then only read.
    """
    out = Path(out)
    if (out / MANIFEST).exists():
        raise DataError(f"{out}: a corpus is already built there ({MANIFEST} exists)")
    sources = default_sources() if sources is None else sources
    out.mkdir(parents=True, exist_ok=True)
    entries = [e for s in sources for e in walk(s)]
    heldout_entries = [e for e in entries if is_heldout(e.key)]
    train_entries = [e for e in entries if not is_heldout(e.key)]
    seen: set[bytes] = set()
    skipped: dict[str, int] = {}
    per_source = {
        s.name: {"roots": list(s.roots), "licence": s.licence, "train_files": 0, "train_bytes": 0,
                 "heldout_files": 0, "heldout_bytes": 0}
        for s in sources
    }  # fmt: skip
    heldout_list = []

    def documents(group: list[Entry]) -> Iterator[tuple[Entry, bytes, str]]:
        for i, e in enumerate(group):
            if progress and i % 2000 == 0:
                print(f"  {i}/{len(group)} {e.path}", file=sys.stderr, flush=True)
            data, why = read_document(e.path)
            if data is None:
                skipped[why] = skipped.get(why, 0) + 1
                continue
            digest = hashlib.sha256(data).digest()
            if digest in seen:
                skipped["duplicate"] = skipped.get("duplicate", 0) + 1
                continue
            seen.add(digest)
            yield e, data, digest.hex()

    tmp_held, tmp_train = out / (HELDOUT_STREAM + ".part"), out / (TRAIN_STREAM + ".part")
    with open(tmp_held, "wb") as stream:
        for e, data, sha in documents(heldout_entries):
            target = out / HELDOUT_DIR / e.source / _safe_key(e.key)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            stream.write(data + b"\x00")
            per_source[e.source]["heldout_files"] += 1
            per_source[e.source]["heldout_bytes"] += len(data)
            heldout_list.append(
                {"source": e.source, "path": e.path, "file": str(target.relative_to(out)),
                 "bytes": len(data), "sha256": sha}
            )  # fmt: skip
    with open(tmp_train, "wb") as stream:
        for e, data, _ in documents(train_entries):
            stream.write(data + b"\x00")
            per_source[e.source]["train_files"] += 1
            per_source[e.source]["train_bytes"] += len(data)
    os.replace(tmp_held, out / HELDOUT_STREAM)
    os.replace(tmp_train, out / TRAIN_STREAM)
    manifest = {
        "python": sys.version.split()[0],
        "max_file_bytes": MAX_FILE_BYTES,
        "heldout_per_10k": HELDOUT_PER_10K,
        "sources": per_source,
        "skipped": dict(sorted(skipped.items())),
        "train_files": sum(s["train_files"] for s in per_source.values()),
        "train_bytes": sum(s["train_bytes"] for s in per_source.values()),
        "heldout_files": len(heldout_list),
        "heldout_bytes": sum(h["bytes"] for h in heldout_list),
        "heldout": heldout_list,
    }
    tmp = out / (MANIFEST + ".part")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, out / MANIFEST)
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m compresslm.data.machine_corpus",
        description="Gather this machine's text and code into an M1 training corpus (see the module doc).",
    )
    p.add_argument("out", help="output folder (must not hold a corpus yet)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    manifest = build(args.out, progress=not args.no_progress)
    for name, s in manifest["sources"].items():
        print(f"{name:22s} train {s['train_files']:6d} files {s['train_bytes']:12,d} B   "
              f"held out {s['heldout_files']:4d} files {s['heldout_bytes']:10,d} B")  # fmt: skip
    print(f"skipped: {manifest['skipped']}")
    print(f"total: train {manifest['train_bytes']:,} B, held out {manifest['heldout_bytes']:,} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
