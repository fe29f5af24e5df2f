"""`compresslm demo`: the main job on built-in data (what `make demo` runs)."""

from __future__ import annotations

import argparse
import sys

from compresslm.cli.common import count, positive_int, print_selection_summary, run_guarded


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the main job on built-in data (no downloads)")
    p.add_argument("-o", "--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--k", type=count, default=1000, help="documents to select (default 1000)")
    p.add_argument("--workers", type=positive_int, help="worker processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="overwrite outputs of an earlier demo")
    p.add_argument("--skip-study", action="store_true", help="skip step 2, the small selection study")
    p.add_argument(
        "--skip-tokenization", action="store_true", help="skip step 3, the small tokenization study"
    )
    p.add_argument(
        "--skip-compression", action="store_true", help="skip step 4, neural compression of a folder"
    )
    p.set_defaults(func=lambda a: run_guarded(_demo, a))


def _demo(args: argparse.Namespace) -> int:
    from compresslm.demo import DEMO_POOL, DEMO_TARGETS, run_selection_demo

    print(
        f"[1] ZIP-FIT: select {args.k} Python-like documents from {DEMO_POOL} against {DEMO_TARGETS}",
        flush=True,
    )
    result = run_selection_demo(
        args.out, k=args.k, force=args.force, workers=args.workers, progress=sys.stderr.isatty()
    )
    print_selection_summary(result)
    p = result.precision_at(len(result.selected), "python")
    if p is not None:
        print(f"precision@{len(result.selected)} of the python domain: {p:.3f}")
    print(f"outputs in {args.out}/: selected.jsonl, scores.parquet, rejects.jsonl, report.json, report.png")
    if not args.skip_study:
        _study(args)
    if not args.skip_tokenization:
        from compresslm.cli.study import tokenization_demo_step

        tokenization_demo_step(args)
    if not args.skip_compression:
        return _compression(args)
    return 0


def _compression(args: argparse.Namespace) -> int:
    from compresslm.demo import demo_compression_folder, demo_m1, run_compression_demo

    model = demo_m1(args.out)
    folder = demo_compression_folder()
    if model is None:
        print("\n[4] neural compression: skipped (no shipped M1, and step 3 did not train one)")
        return 0
    print(
        f"\n[4] neural compression: {folder} with M1 {model} (stream mode), restored and compared "
        "byte for byte",
        flush=True,
    )
    r = run_compression_demo(args.out, model, force=args.force, progress=sys.stderr.isatty())
    print(f"{r['files']} files, {r['bytes']:,} bytes; bits/byte (lower is better):")
    print(f"  {'compressor':<28}{'per file':>10}{'one stream':>12}")
    print(f"  {'compresslm (whole .clm)':<28}{r['clm_bits_per_byte']:>10.3f}{'':>12}")
    print(f"  {'  of which the codes':<28}{r['code_bits_per_byte']:>10.3f}{'':>12}")
    for name, (per_file, joined) in r["peers"].items():
        print(f"  {name:<28}{per_file:>10.3f}{joined:>12.3f}")
    print(
        f"round trip: {'byte-identical' if r['identical'] else 'MISMATCH ' + ', '.join(r['mismatched'])}; "
        f"encode {r['encode_seconds']:.1f} s, decode {r['decode_seconds']:.1f} s; archive {r['output']}"
    )
    return 0 if r["identical"] else 1


def _study(args: argparse.Namespace) -> None:
    from compresslm.cli.study import print_study_summary
    from compresslm.demo import (
        DEMO_STUDY_BUDGET,
        DEMO_STUDY_METHODS,
        DEMO_STUDY_POOL,
        DEMO_STUDY_SEEDS,
        run_study_demo,
    )

    print(
        f"\n[2] selection study: {', '.join(DEMO_STUDY_METHODS)} select {DEMO_STUDY_BUDGET:,} bytes from "
        f"{DEMO_STUDY_POOL} against HumanEval's first half; a tiny byte-level model is fine-tuned on each "
        f"selection ({len(DEMO_STUDY_SEEDS)} seeds) and scored on HumanEval's second half",
        flush=True,
    )
    results = run_study_demo(
        args.out, force=args.force, workers=args.workers, log=lambda m: print(m, file=sys.stderr, flush=True)
    )
    print_study_summary(results)
    print(f"study report: {args.out}/study/report/index.html (results.json, loss curves PNG)")
