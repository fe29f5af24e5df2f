"""The shipped M1 against gzip -9, zstd -19 and xz -9e on held-out files of the machine corpus.

    python -m compresslm.data.machine_corpus corpus/          # once: gathers corpus/heldout/...
    python benchmarks/shipped_m1.py corpus/ --max-bytes 300k  # a deterministic sample of files

The held-out files are the ones the shipped M1 never saw in training (2% of the machine's files by
a hash of their path, see :mod:`compresslm.data.machine_corpus`). A sample is taken in the order
of the manifest's sha256 (so it is the same on every run and not biased to one source) until
``--max-bytes``. Every file is compressed with ``compresslm compress``'s library call (default
mode, shipped model unless ``--model``), decompressed and compared byte for byte; the peers run
on the same bytes, per file (each file its own archive, what a user compressing one file gets) and
as one stream (the sample's files concatenated). Sizes are whole files: the .clm's header and
tables count, as gzip's and xz's headers do.

``--min-match`` compares the long-range match stage's settings in one run (0: off), e.g.
``--min-match 0 16 32 64``: one compresslm column each, with the matches found in the stream.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import sys
import tempfile
import time
from pathlib import Path

import zstandard

from compresslm.cli.common import parse_count
from compresslm.coding.compress import CompressReport, compress, decompress
from compresslm.coding.default_model import default_m1_path
from compresslm.coding.header import DEFAULT_MIN_MATCH
from compresslm.coding.m1 import M1


def peers(data: bytes) -> dict[str, int]:
    """Compressed sizes of ``data`` with the classic compressors at their strongest usual settings."""
    return {
        "gzip -9": len(gzip.compress(data, compresslevel=9, mtime=0)),
        "zstd -19": len(zstandard.ZstdCompressor(level=19).compress(data)),
        "xz -9e": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
    }


def neural(
    m1: M1, data: bytes, tmp: Path, name: str, threads: int | None, min_match: int = DEFAULT_MIN_MATCH
) -> tuple[int, float, float, CompressReport]:
    """(.clm bytes, encode seconds, decode seconds, compress's report) of ``data``, round trip
    checked."""
    src, clm, back = tmp / name, tmp / (name + ".clm"), tmp / (name + ".out")
    src.write_bytes(data)
    t = time.perf_counter()
    report = compress(src, clm, model=m1, threads=threads, force=True, min_match=min_match)
    enc = time.perf_counter() - t
    t = time.perf_counter()
    decompress(clm, back, model=m1, threads=threads, force=True)
    dec = time.perf_counter() - t
    if back.read_bytes() != data:
        raise SystemExit(f"round trip failed for {name}")
    size = clm.stat().st_size
    for p in (src, clm, back):
        p.unlink()
    return size, enc, dec, report


def label(min_match: int) -> str:
    return "compresslm" + (f" M={min_match}" if min_match else " (no LR)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("corpus", help="a machine corpus folder (manifest.json and heldout/)")
    p.add_argument("--model", help="M1 folder (default: the shipped M1)")
    p.add_argument("--max-bytes", default="300k", help="sample size in bytes (default 300k; 0: all)")
    p.add_argument("--threads", type=int, help="coding lanes / torch threads (default: all cores)")
    p.add_argument("--no-per-file", action="store_true", help="only the concatenated stream")
    p.add_argument(
        "--min-match",
        type=int,
        nargs="+",
        default=[0, DEFAULT_MIN_MATCH],
        help=f"long-range match settings to compare, 0: off (default: 0 {DEFAULT_MIN_MATCH})",
    )
    p.add_argument("--json", help="write every number here")
    args = p.parse_args(argv)
    corpus = Path(args.corpus)
    manifest = json.loads((corpus / "manifest.json").read_text())
    limit = parse_count(args.max_bytes, "--max-bytes") if args.max_bytes not in ("0", "all") else None
    files, total = [], 0
    for h in sorted(manifest["heldout"], key=lambda h: h["sha256"]):
        if limit is not None and total + h["bytes"] > limit:
            continue
        files.append(h)
        total += h["bytes"]
    model_dir = Path(args.model) if args.model else default_m1_path()
    m1 = M1.load(model_dir, threads=args.threads)
    rows: list[dict] = []
    ours = [label(m) for m in args.min_match]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        blobs = [(corpus / h["file"]).read_bytes() for h in files]
        if not args.no_per_file:
            for h, data in zip(files, blobs, strict=True):
                row: dict = {"file": h["file"], "bytes": len(data), **peers(data)}
                for m, name in zip(args.min_match, ours, strict=True):
                    size, enc, dec, _ = neural(m1, data, tmp, "f", args.threads, m)
                    row.update({name: size, f"{name} encode_s": enc, f"{name} decode_s": dec})
                rows.append(row)
                print(f"{h['file']}: {len(data)} -> " + ", ".join(str(row[n]) for n in ours), file=sys.stderr)
        whole = b"".join(blobs)
        stream: dict = {"bytes": len(whole), **peers(whole)}
        for m, name in zip(args.min_match, ours, strict=True):
            size, enc, dec, report = neural(m1, whole, tmp, "all", args.threads, m)
            stream.update({name: size, f"{name} encode_s": enc, f"{name} decode_s": dec,
                           f"{name} matches": report.matches, f"{name} matched": report.matched_bytes})  # fmt: skip
    names = [*ours, "gzip -9", "zstd -19", "xz -9e"]
    width = max(12, *(len(n) + 2 for n in names))
    print(f"Shipped M1 ({model_dir}) on {len(files)} held-out files, {total:,} bytes")
    print(f"{'':24s}" + "".join(f"{n:>{width}s}" for n in names))
    if rows:
        per_file = {n: sum(r[n] for r in rows) for n in names}
        print(
            f"{'per file, bits/byte':24s}" + "".join(f"{8 * per_file[n] / total:{width}.3f}" for n in names)
        )
        for n in ours:
            wins = sum(r[n] < r["xz -9e"] for r in rows)
            print(f"{n}: files smaller than xz -9e: {wins} of {len(rows)}")
    print(
        f"{'one stream, bits/byte':24s}"
        + "".join(f"{8 * stream[n] / stream['bytes']:{width}.3f}" for n in names)
    )
    for n in ours:
        print(
            f"{n}, one stream: {stream[f'{n} matches']:,} matches cover {stream[f'{n} matched']:,} bytes "
            f"({100 * stream[f'{n} matched'] / max(1, stream['bytes']):.1f}%); "
            f"encode {stream['bytes'] / stream[f'{n} encode_s'] / 1e3:.1f} kB/s, "
            f"decode {stream['bytes'] / stream[f'{n} decode_s'] / 1e3:.1f} kB/s"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"model": str(model_dir), "files": rows, "stream": stream}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
