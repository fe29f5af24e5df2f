"""`compresslm m1 train`, `compress`, `decompress`, `inspect`: thin wrappers over
:mod:`compresslm.coding`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compresslm.cli.common import (
    add_progress_option,
    add_threads_option,
    at_least,
    count,
    count_or_zero,
    fraction,
    model_size,
    non_negative_int,
    positive_float,
    positive_int,
    run_guarded,
    threads,
)
from compresslm.coding.header import DEFAULT_MIN_MATCH

if TYPE_CHECKING:
    import numpy as np

# M1 codes with lanes, not torch's intra-op threads: each lane is a thread stepping its own rows with
# single-threaded torch ops, so rounding never depends on the thread count (coding/m1.py).
LANES_HELP = (
    "coding lanes: threads that each run M1 on their own rows, one torch thread each (default: all cores)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    m1 = subparsers.add_parser("m1", help="train M1, the byte model of the neural compressor")
    m1_sub = m1.add_subparsers(dest="m1_command", metavar="<m1 command>")
    t = m1_sub.add_parser(
        "train",
        help="train a byte-level M1 on any corpus",
        description="Train M1 (byte-level, contexts reset like the coder's windows) and save it as "
        "safetensors + config.json; prints held-out bits/byte.",
    )
    source = t.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--corpus", nargs="+", help="files/folders/globs or builtin:NAME (default: none; this or --stream)"
    )
    source.add_argument(
        "--stream",
        help="a ready byte stream (documents separated by NUL bytes), e.g. train.u8 of "
        "`python -m compresslm.data.machine_corpus`; read memory-mapped (default: none; this or --corpus)",
    )
    t.add_argument(
        "--heldout-stream",
        help="held-out byte stream (default: none, the --heldout tail fraction of the training bytes)",
    )
    t.add_argument(
        "--size",
        type=model_size,
        default="3m",
        help="model preset: tiny, small, 3m (the paper's M1), base, 25m (default 3m)",
    )
    t.add_argument("-o", "--out", required=True, help="output folder")
    t.add_argument(
        "--context",
        type=at_least(2, "a context of positions"),
        default=128,
        help="positions per training row = max window bytes (default 128)",
    )
    t.add_argument(
        "--train-tokens",
        type=count,
        default="2M",
        help="training tokens (bytes) to see, e.g. 300k (default 2M; named like train's --train-tokens: "
        "--tokens always means a token dataset folder). With --work-dir it may change between starts: "
        "a larger value extends the run from its checkpoint (also a finished one), a smaller one ends "
        "it sooner; the learning rate re-warms from its last value onto the cosine of the new length",
    )
    t.add_argument("--batch-size", type=positive_int, default=32, help="rows per step (default 32)")
    t.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate (default 1e-3)")
    t.add_argument(
        "--heldout",
        type=fraction,
        default=0.05,
        help="fraction of the bytes held out for bits/byte (default 0.05)",
    )
    t.add_argument(
        "--seed", type=non_negative_int, default=0, help="initialisation and sampling seed (default 0)"
    )
    add_threads_option(t)
    t.add_argument(
        "--bf16",
        action="store_true",
        help="forward in bfloat16 autocast, weights and optimizer in float32: about 1.6x less CPU per "
        "step on CPUs with AVX512-BF16, same held-out loss in our measurement (docs/benchmarks.md); "
        "may change when a run resumes",
    )
    t.add_argument(
        "--work-dir",
        help="resumable run: checkpoints (weights, optimizer, RNG) go here every --checkpoint-every "
        "seconds, and a run started again with the same folder and settings continues from the last; "
        "only --train-tokens, --threads, --bf16 and --eval-every may differ, other changes are refused "
        "(default: none, not resumable)",
    )
    t.add_argument(
        "--checkpoint-every", type=positive_float, default=600.0, help="seconds between checkpoints (600)"
    )
    t.add_argument(
        "--eval-every",
        type=count,
        help="held-out evaluation every N training tokens, e.g. 2M (default: at the end only)",
    )
    t.add_argument("--text-field", default="text", help="field holding the text (default: text)")
    t.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    t.add_argument("--force", action="store_true", help="overwrite an existing model in --out")
    add_progress_option(t)
    t.add_argument("--json", action="store_true", help="print the report as JSON")
    t.add_argument(
        "--numerics",
        choices=["exact", "float"],
        default="exact",
        help="exact (default): quantization-aware training of the integer-exact M1, whose files decode "
        "identically on every machine; float: the float model (files decode only where the numerics match)",
    )
    t.add_argument(
        "--activation",
        choices=["relu", "gelu"],
        help="MLP activation (default: relu for exact, gelu for float)",
    )
    t.set_defaults(func=lambda a: run_guarded(_train, a))
    q = m1_sub.add_parser(
        "quantize",
        help="turn a float M1 into an integer-exact M1 (calibration + short QAT fine-tune)",
        description="Calibrate the activation scales of a float M1 on a corpus, fine-tune it with "
        "quantization-aware training and save the integer-exact M1 (int8 safetensors). Prints the "
        "held-out bits/byte of the float and the exact model through their frequency tables.",
    )
    q.add_argument("--model", required=True, help="float M1 folder (from `m1 train --numerics float`)")
    q.add_argument("-o", "--out", required=True, help="output folder for the exact M1")
    q.add_argument(
        "--calibration",
        nargs="+",
        default=["builtin:pool:2000"],
        help="files/folders/globs or builtin:NAME to calibrate and fine-tune on (default builtin:pool:2000; "
        "best: the float model's own training corpus)",
    )
    q.add_argument(
        "--train-tokens",
        "--tokens",
        dest="train_tokens",
        type=count_or_zero,
        default="500k",
        help="QAT fine-tuning tokens (bytes), e.g. 500k; 0: calibrate only (default 500k)",
    )
    q.add_argument("--batch-size", type=positive_int, default=32, help="rows per step (default 32)")
    q.add_argument("--lr", type=positive_float, default=1e-4, help="fine-tuning learning rate (default 1e-4)")
    q.add_argument(
        "--heldout",
        type=fraction,
        default=0.05,
        help="fraction of the bytes held out for bits/byte (default 0.05)",
    )
    q.add_argument("--seed", type=non_negative_int, default=0, help="sampling seed (default 0)")
    add_threads_option(q)
    q.add_argument("--text-field", default="text", help="field holding the text (default: text)")
    q.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    q.add_argument("--force", action="store_true", help="overwrite an existing model in --out")
    q.add_argument("--no-progress", action="store_true")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.set_defaults(func=lambda a: run_guarded(_quantize, a))
    m1.set_defaults(func=lambda a: (m1.print_help(), 2)[1])

    c = subparsers.add_parser(
        "compress",
        help="compress losslessly with M1 into a .clm file (stream mode, or Equal-Info windows)",
        description="Code an input (.jsonl, .txt or any file, a folder, records the data layer reads, "
        "or - for standard input) with M1: one arithmetic code per segment with M1's full context "
        "(--mode stream, the default), or b-bit Equal-Info windows (--mode windows, the format M2 "
        "trains on); decompress restores it byte for byte.",
    )
    c.add_argument("input", help="file, folder, builtin:NAME / .parquet / .json records, or - (stdin)")
    c.add_argument("-o", "--out", required=True, help="output .clm file, or - (stdout)")
    c.add_argument(
        "--model", help="M1 folder (from `compresslm m1 train`; default: the M1 shipped with compresslm)"
    )
    c.add_argument(
        "--mode",
        choices=["stream", "windows"],
        default="stream",
        help="stream: full context, the smallest files (default); windows: Equal-Info windows",
    )
    c.add_argument(
        "--window-bits",
        type=positive_int,
        default=16,
        help="windows mode: bits per window: 16 (default), 24, 32, 64, 128",
    )
    c.add_argument(
        "--code",
        choices=["straddle", "zeros"],
        default="straddle",
        help="windows mode: straddle: self-delimiting windows (default); zeros: the paper's zero-padded code",
    )
    c.add_argument(
        "--max-window-bytes",
        type=at_least(2, "a window size in bytes"),
        help="windows mode: cap on bytes per window (default 4 x window bits)",
    )
    c.add_argument(
        "--segment-bytes",
        type=count_or_zero,
        help="documents are coded in independent segments of this many bytes (default: windows "
        "mode 1 KiB; stream mode enough segments for every row of the batch, 1 KiB to 1 MiB; "
        "0: never split)",
    )
    c.add_argument(
        "--min-match",
        type=non_negative_int,
        default=DEFAULT_MIN_MATCH,
        help=f"stream mode: copy repeats of at least this many bytes from earlier in the input "
        f"instead of coding them with M1 (default {DEFAULT_MIN_MATCH}; 0: off)",
    )
    c.add_argument(
        "--no-long-range",
        dest="long_range",
        action="store_false",
        help="stream mode: no long-range matches, M1 codes every byte (same as --min-match 0)",
    )
    c.add_argument("--text-field", default="text", help="JSON field holding the text (default: text)")
    c.add_argument(
        "--on-error",
        choices=["fail", "skip"],
        default="fail",
        help="for record inputs read by the data layer: stop on malformed records or skip them",
    )
    _add_run_options(c)
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=lambda a: run_guarded(_compress, a))

    d = subparsers.add_parser("decompress", help="restore the input of a .clm file, verified")
    d.add_argument("clm", help=".clm file, or - (stdin)")
    d.add_argument(
        "-o", "--out", required=True, help="output file (or folder, for a folder input), or - (stdout)"
    )
    d.add_argument("--model", help="M1 folder (default: the path recorded in the .clm)")
    _add_run_options(d)
    d.set_defaults(func=lambda a: run_guarded(_decompress, a))

    i = subparsers.add_parser("inspect", help="what a .clm file holds: windows, bits/byte, exceptions")
    i.add_argument("clm", help=".clm file")
    i.add_argument(
        "--model", help="M1 folder, to show the first windows as text (default: the recorded path)"
    )
    i.add_argument(
        "--windows", type=non_negative_int, default=12, help="how many leading windows to show (default 12)"
    )
    i.add_argument("--threads", type=threads, help=LANES_HELP)
    i.add_argument("--json", action="store_true", help="print as JSON")
    i.set_defaults(func=lambda a: run_guarded(_inspect, a))


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--batch-size", type=positive_int, default=512, help="segments coded per model step (default 512)"
    )
    p.add_argument("--threads", type=threads, help=LANES_HELP)
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing output once the new one is complete (a folder only if it holds "
        "nothing but what the archive restores)",
    )
    add_progress_option(p)


def _table(title: str, rows: list[tuple[str, str]], stderr: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("what")
    table.add_column("value", justify="right")
    for k, v in rows:
        table.add_row(k, v)
    Console(stderr=stderr).print(table)


def _print_json(obj: dict[str, Any], stderr: bool = False) -> None:
    out = sys.stderr if stderr else sys.stdout
    json.dump(obj, out, indent=2, sort_keys=True, default=str)
    print(file=out)


def _texts(sources: list[str], args: argparse.Namespace) -> tuple[list[str], int]:
    from compresslm.data.readers import read_records
    from compresslm.data.records import Record

    texts: list[str] = []
    rejected = 0
    for item in read_records(sources, text_field=args.text_field, on_error=args.on_error):
        if isinstance(item, Record):
            texts.append(item.text)
        else:
            rejected += 1
    return texts, rejected


def _check_model_out(args: argparse.Namespace, sources: list[str]) -> None:
    from compresslm.data.writers import check_not_input, check_outputs_free
    from compresslm.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE

    check_outputs_free([Path(args.out) / WEIGHTS_FILE, Path(args.out) / CONFIG_FILE], args.force)
    check_not_input([args.out], sources)


def _quantize(args: argparse.Namespace) -> int:
    from compresslm.coding.m1_train import quantize_m1

    _check_model_out(args, [*args.calibration, args.model])
    texts, rejected = _texts(args.calibration, args)
    _, report = quantize_m1(
        args.model,
        texts,
        out=args.out,
        max_tokens=args.train_tokens,
        batch_size=args.batch_size,
        lr=args.lr,
        heldout_fraction=args.heldout,
        seed=args.seed,
        threads=args.threads,
        progress=not args.no_progress,
        force=args.force,
    )
    summary = {**report.to_dict(), "documents": len(texts), "rejected": rejected, "out": args.out}
    if args.json:
        _print_json(summary)
        return 0

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    _table(
        "M1 quantized (int8-exact)",
        [
            ("source", f"{report.source} ({report.source_sha256[:12]}…)"),
            ("documents (rejected)", f"{len(texts):,} ({rejected:,})"),
            ("calibration / held-out bytes", f"{report.calibration_bytes:,} / {report.heldout_bytes:,}"),
            ("QAT tokens", f"{report.tokens_seen:,}"),
            ("held-out bits/byte, float", fmt(report.float_bits_per_byte)),
            ("held-out bits/byte, exact calibrated", fmt(report.calibrated_bits_per_byte)),
            ("held-out bits/byte, exact after QAT", fmt(report.heldout_bits_per_byte)),
            ("seconds", f"{report.seconds:.1f}"),
            ("saved to", args.out),
        ],
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from compresslm.coding.m1_train import train_m1

    _check_model_out(args, args.corpus or [args.stream])
    texts: list[str] | np.ndarray
    if args.stream:
        texts, rejected = _byte_stream(args.stream), 0
    else:
        texts, rejected = _texts(args.corpus, args)
    _, report = train_m1(
        texts,
        heldout=_byte_stream(args.heldout_stream) if args.heldout_stream else None,
        work_dir=args.work_dir,
        checkpoint_every_s=args.checkpoint_every,
        eval_every_tokens=args.eval_every,
        bf16=args.bf16,
        size=args.size,
        context=args.context,
        max_tokens=args.train_tokens,
        batch_size=args.batch_size,
        lr=args.lr,
        heldout_fraction=args.heldout,
        seed=args.seed,
        threads=args.threads,
        progress=not args.no_progress,
        out=args.out,
        force=args.force,
        numerics=args.numerics,
        activation=args.activation,
    )
    summary = {k: v for k, v in report.to_dict().items() if k != "curve"}
    n_docs = len(texts) if isinstance(texts, list) else int((texts == 0).sum())
    summary.update(documents=n_docs, rejected=rejected, out=args.out)
    if args.json:
        _print_json(summary)
        return 0
    bpb = report.heldout_bits_per_byte
    _table(
        f"M1 {report.size} ({report.numerics})",
        [
            ("documents (rejected)", f"{n_docs:,} ({rejected:,})"),
            ("parameters (non-embedding)", f"{report.n_params:,}"),
            ("train / held-out bytes", f"{report.train_bytes:,} / {report.heldout_bytes:,}"),
            ("tokens seen", f"{report.tokens_seen:,}"),
            ("held-out bits/byte", "n/a" if bpb is None else f"{bpb:.3f}"),
            ("seconds", f"{report.seconds:.1f}"),
            ("saved to", args.out),
        ],
    )
    return 0


def _byte_stream(path: str) -> np.ndarray:
    import numpy as np

    from compresslm.errors import DataError

    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        raise DataError(f"{path}: byte stream not found or empty")
    return np.memmap(p, dtype=np.uint8, mode="r")


def _compress(args: argparse.Namespace) -> int:
    from compresslm.coding.compress import STDIO, compress

    segment_bytes = "auto" if args.segment_bytes is None else args.segment_bytes or None
    report = compress(
        args.input,
        args.out,
        model=args.model,
        mode=args.mode,
        window_bits=args.window_bits,
        code=args.code,
        max_window_bytes=args.max_window_bytes,
        segment_bytes=segment_bytes,
        long_range=args.long_range,
        min_match=args.min_match,
        text_field=args.text_field,
        on_error=args.on_error,
        batch_size=args.batch_size,
        threads=args.threads,
        force=args.force,
        progress=not args.no_progress,
    )
    for item in report.skipped:
        print(f"skipped {item}: only files and folders are archived", file=sys.stderr)
    to_stderr = args.out == STDIO  # standard output holds the .clm
    if args.json:
        _print_json(report.to_dict(), stderr=to_stderr)
        return 0
    rows = [
        ("input", f"{args.input} ({report.source_kind}, {report.input_bytes:,} bytes)"),
        ("documents / segments", f"{report.documents:,} / {report.segments:,}"),
    ]
    if report.mode == "stream":
        rows += [
            ("mode", f"stream (segments of {report.segment_bytes or 'any'} bytes)"),
            ("long-range matches", _matches_row(report.matches, report.matched_bytes, report.document_bytes)),
            ("code bytes", f"{report.code_bytes:,}"),
            ("bits/byte (codes)", f"{report.bits_per_byte:.3f}"),
            ("M1 cross-entropy (bits/byte)", f"{report.m1_bits_per_byte:.3f}"),
        ]
    else:
        rows += [
            ("windows", f"{report.windows:,} x {report.window_bits} bits ({report.code})"),
            ("bytes per window", f"{report.bytes_per_window:.2f}"),
            ("bits/byte (windows, incl. padding)", f"{report.bits_per_byte:.3f}"),
            ("exceptions", f"{report.exceptions:,} ({100 * report.exception_rate:.3f}%)"),
            ("backed-off windows", f"{report.backed_off:,}"),
        ]
    rows += [
        ("bits/byte (whole .clm / input)", f"{report.file_bits_per_byte:.3f}"),
        ("encode speed", f"{report.bytes_per_second:,.0f} bytes/s"),
        ("output", f"{report.output} ({report.clm_bytes:,} bytes)"),
    ]
    if report.source_kind == "folder":
        rows.insert(1, ("files / folders archived", f"{report.files:,} / {report.folders:,}"))
    if report.skipped:
        rows.append(("skipped (not archived)", f"{len(report.skipped):,}"))
    if report.rejected:
        rows.append(("rejected records (not stored)", f"{report.rejected:,}"))
    _table("compress", rows, stderr=to_stderr)
    return 0


def _matches_row(matches: int, matched: int, total: int) -> str:
    """The match stage's effect: matches and the bytes they copy instead of M1 coding them."""
    share = 100 * matched / total if total else 0.0
    return f"{matches:,} covering {matched:,} bytes ({share:.1f}%)"


def _decompress(args: argparse.Namespace) -> int:
    from compresslm.coding.compress import decompress

    report = decompress(
        args.clm,
        args.out,
        model=args.model,
        batch_size=args.batch_size,
        threads=args.threads,
        force=args.force,
        progress=not args.no_progress,
    )
    folders = f", {report.folders} folder(s)" if report.folders else ""
    print(
        f"restored {report.bytes:,} bytes ({report.files} file(s){folders}, {report.documents:,} documents, "
        f"verified) to {report.output} in {report.seconds:.1f}s "
        f"({report.bytes_per_second:,.0f} bytes/s)",
        file=sys.stderr if args.out == "-" else sys.stdout,  # standard output holds the data
    )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from compresslm.coding.compress import inspect

    report = inspect(args.clm, model=args.model, n_windows=args.windows, threads=args.threads)
    h = report.header
    if args.json:
        _print_json(
            {
                "header": h,
                "format_version": report.version,
                "mode": report.mode,
                "numerics": h.get("model", {}).get("numerics") or "float32",
                "input_bytes": report.input_bytes,
                "files": report.files,
                "folders": report.folders,
                "documents": report.documents,
                "segments": report.segments,
                "windows": report.windows,
                "document_bytes": report.document_bytes,
                "exceptions": report.exceptions,
                "code_bytes": report.code_bytes,
                "matches": report.matches,
                "matched_bytes": report.matched_bytes,
                "bits_per_byte": report.bits_per_byte,
                "exception_rate": report.exception_rate,
                "clm_bytes": report.clm_bytes,
                "sizes": report.sizes,
                "first_windows": [{"code": c, "text": t, "exception": e} for c, t, e in report.first_windows],
            }
        )
        return 0
    coder, model, source = h.get("coder", {}), h.get("model", {}), h.get("source", {})
    shown_source = str(source.get("kind"))
    if report.version == 2:  # version 3 does not store the input's name or its counts
        shown_source = f"{source.get('name')} ({shown_source}, {source.get('files')} file(s))"
    rows = [
        ("format", f".clm version {report.version}"),
        ("source", shown_source),
        ("mode", report.mode),
        ("coder", ", ".join(f"{k}={v}" for k, v in sorted(coder.items()))),
        ("segment bytes", "one per document" if h.get("segment_bytes") is None else str(h["segment_bytes"])),
        (
            "model",
            f"sha256 {str(model.get('sha256'))[:16]}…, fingerprint {str(model.get('fingerprint'))[:8]}…, "
            f"{model.get('numerics') or 'float32'}",
        ),
        ("documents", f"{report.documents:,}"),
        ("bytes", f"{report.document_bytes:,}"),
    ]
    if report.mode == "stream":
        rows += [
            ("long-range matches", _matches_row(report.matches, report.matched_bytes, report.document_bytes)),
            ("code bytes", f"{report.code_bytes:,}"),
            ("bits/byte (codes)", f"{report.bits_per_byte:.3f}"),
        ]
    else:
        rows += [
            ("windows", f"{report.windows:,}"),
            ("bytes per window", f"{report.document_bytes / max(1, report.windows):.2f}"),
            ("bits/byte (windows)", f"{report.bits_per_byte:.3f}"),
            ("exceptions", f"{report.exceptions:,} ({100 * report.exception_rate:.3f}%)"),
        ]
    parts = ", ".join(f"{name} {n:,}" for name, n in report.sizes.items() if name != "codes")
    rows += [
        ("file size", f"{report.clm_bytes:,} bytes"),
        ("container overhead", f"{report.overhead:,} bytes beyond the codes ({parts})"),
    ]
    _table(str(args.clm), rows)
    if report.mode == "stream":
        return 0
    if report.first_windows:
        width = coder.get("window_bits", 16)
        for k, (code, text, exc) in enumerate(report.first_windows):
            mark = " (exception)" if exc else ""
            print(f"  window {k:>3}  {code:0{width}b}  {text!r}{mark}")
    elif not report.model_found:
        print("  (model not found: pass --model to show the first windows as text)")
    return 0
