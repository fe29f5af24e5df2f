"""`compresslm select` and `compresslm align`: thin wrappers over :mod:`compresslm.select`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from compresslm.cli.common import (
    add_progress_option,
    add_read_options,
    count,
    count_or_zero,
    method_spec,
    non_negative_int,
    outputs_dict,
    positive_float,
    positive_int,
    print_selection_summary,
    read_options_from,
    run_guarded,
    suffix_path,
    template,
)
from compresslm.data.readers import DEFAULT_MAX_BYTES
from compresslm.errors import ConfigError
from compresslm.select.parallel import sigterm_as_interrupt

if TYPE_CHECKING:
    from compresslm.select.pool import ReadOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "select",
        help="rank a source pool against a target set and keep the best documents",
        description=(
            "Rank every source document by alignment with the target set (ZIP-FIT by default; DSIR, "
            "D4 and random as baselines) and keep the top k or a token/byte budget. Every input record "
            "is accounted for: selected, not selected, or rejected with a reason."
        ),
    )
    p.add_argument("--target", nargs="+", required=True, help="target files/globs or builtin:NAME")
    p.add_argument("--source", nargs="+", required=True, help="source files/globs/folders or builtin:NAME")
    p.add_argument(
        "--method",
        type=method_spec,
        default="zipfit",
        help="zipfit[:variant] | dsir[:topk] | d4 | random | compel (default zipfit)",
    )
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument(
        "--k",
        type=count,
        help="number of documents to keep, e.g. 10000 or 10k (default: none; one of --k, --budget-* is required)",
    )
    size.add_argument(
        "--budget-tokens",
        type=count,
        help="keep the best documents up to this many tokens, e.g. 2M (default: none)",
    )
    size.add_argument(
        "--budget-bytes",
        type=count,
        help="keep the best documents up to this many bytes, e.g. 50M (default: none)",
    )
    p.add_argument(
        "--tokenizer",
        help="tokenizer.json (Hugging Face tokenizers) for token budgets; default: whitespace words",
    )
    p.add_argument(
        "--truncate-last",
        action="store_true",
        help="with a budget, cut the document that overflows so the budget is met exactly "
        "(the ZIP-FIT paper's scripts); default: stop before it",
    )
    p.add_argument(
        "--min-tokens",
        type=non_negative_int,
        default=0,
        help="reject documents under this many tokens (default 0)",
    )
    z = p.add_argument_group("ZIP-FIT")
    z.add_argument(
        "--compressor",
        help="gzip:9 (the paper), lz4, zstd:LEVEL, brotli, lzma, bz2, ... (default: lz4, the default mode)",
    )
    z.add_argument(
        "--contrast",
        choices=["none", "background"],
        help="subtract alignment to a seeded sample of the pool (cancels length/boilerplate bias); "
        "default: background, except none with gzip:9 (the paper's exact mode)",
    )
    z.add_argument("--contrast-size", type=positive_int, help="background sample size (default 64)")
    z.add_argument(
        "--max-targets",
        type=_max_targets,
        metavar="N|all",
        help="score against a seeded sample of at most N targets (default 64, except 'all' "
        "with gzip:9, the paper's exact mode); 'all' scores every target",
    )
    z.add_argument(
        "--chunk-bytes",
        type=non_negative_int,
        help="score documents by pieces of about N bytes (default 512; 0 = whole documents, "
        "the default with gzip:9)",
    )
    z.add_argument(
        "--max-chunks",
        type=non_negative_int,
        help="score at most N evenly spaced pieces of a long document (default 4; 0 = every piece)",
    )
    z.add_argument(
        "--dictionary",
        choices=["on", "off"],
        help="add the dictionary contrast (every target piece as one zstd dictionary against the "
        "pool's, weighted by a fit on held-out pieces; docs/benchmarks.md); default: on with pieces "
        "and background contrast, off with gzip:9",
    )
    b = p.add_argument_group("baselines")
    b.add_argument("--dsir-buckets", type=positive_int, help="DSIR hashed n-gram buckets (default 10000)")
    b.add_argument(
        "--dsir-min-words", type=non_negative_int, help="DSIR minimum example length in words (default 0)"
    )
    b.add_argument("--d4-embedder", help="D4 embedding backend: minilm (default) or hashing")
    b.add_argument(
        "--d4-clusters", type=positive_int, help="D4 number of k-means clusters (default: round(sqrt(N)))"
    )
    b.add_argument("--cache-dir", help="cache for D4 embeddings (default ~/.cache/compresslm/embeddings)")
    b.add_argument(
        "--compel-band",
        type=_band,
        help="Compel: keep LZ4 compression ratios (compressed/original) in LOW,HIGH (default 0.65,0.80)",
    )
    add_read_options(p, domain=True)
    p.add_argument("--target-field", help="text field of target records (default: --text-field)")
    p.add_argument(
        "--target-template",
        type=template,
        help='target text template, e.g. "{prompt}\\n{canonical_solution}" (default: --template)',
    )
    o = p.add_argument_group("outputs")
    o.add_argument(
        "-o",
        "--out",
        help="selected records, best first: a file (.jsonl/.jsonl.gz/.jsonl.zst/.parquet), or a folder "
        "(a name without an extension, or ending in /) for one file per input shard in the input's "
        "format (runs the staged engine); default: not written, the summary only",
    )
    o.add_argument(
        "--scores",
        type=suffix_path(".parquet"),
        help="Parquet file with record_id, source, score, bytes, size, domain, selected, rank of every "
        "scored record (default: not written)",
    )
    o.add_argument("--rejects", help="JSONL of every rejected record with its reason (default: not written)")
    o.add_argument("--report", help="JSON report (+ a PNG score histogram beside it; default: not written)")
    o.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--workers", type=positive_int, help="worker processes (default: all cores)")
    e = p.add_argument_group("engines (scale-out and resumable runs; see docs/scale-out.md)")
    e.add_argument(
        "--engine",
        choices=["local", "ray"],
        help="run as resumable stages (plan, score, select, write) per input shard: 'local' on this "
        "machine's process pool, 'ray' on a Ray cluster through Ray Data (zipfit, dsir, random, compel). "
        "(default: one streaming process pipeline, or 'local' with --work-dir or --out FOLDER)",
    )
    e.add_argument(
        "--ray-address",
        help="Ray cluster to use (default: $RAY_ADDRESS, else a local Ray started and stopped here)",
    )
    e.add_argument("--num-cpus", type=positive_float, default=1, help="CPUs per Ray worker (default 1)")
    e.add_argument(
        "--work-dir",
        help="keep stage outputs and completion markers here; rerunning the same command after a "
        "crash, kill or Ctrl-C skips finished shards and gives the same outputs (default: a temporary "
        "folder, removed at the end)",
    )
    e.add_argument("--overwrite", action="store_true", help="discard what --work-dir holds and start over")
    p.add_argument(
        "--batch-size", type=positive_int, default=256, help="documents per scoring batch (default 256)"
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed for sampling (contrast, DSIR Gumbel, random; default 0)",
    )
    add_progress_option(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.set_defaults(func=lambda a: run_guarded(_select, a))

    a = subparsers.add_parser(
        "align",
        help="dataset-level ZIP-FIT alignment between two datasets",
        description="Mean (1 - NCD) over (a, b) pairs: all pairs, or a seeded sample with --max-pairs.",
    )
    a.add_argument("a", help="first dataset (the 'source' side: it comes first in each concatenation)")
    a.add_argument("b", help="second dataset")
    a.add_argument("--compressor", default="gzip:9", help="compressor spec (default gzip:9, the paper's)")
    a.add_argument(
        "--max-pairs",
        type=count_or_zero,
        default=200_000,
        help="sample this many pairs, e.g. 50k (0 = all; default 200k)",
    )
    a.add_argument("--seed", type=non_negative_int, default=0, help="seed of the pair sample (default 0)")
    add_read_options(a)
    a.add_argument("--b-template", type=template, help="text template for B (default: --template)")
    a.set_defaults(func=lambda a: run_guarded(_align, a))


def _select(args: argparse.Namespace) -> int:
    from compresslm.select.methods import make_method
    from compresslm.select.pipeline import Outputs, SelectionSpec, load_targets, run_selection

    read = read_options_from(args)
    target_read = read_options_from(
        args, field=args.target_field or args.text_field, template=args.target_template
    )
    target_read.max_bytes = max(read.max_bytes, DEFAULT_MAX_BYTES)
    spec = SelectionSpec(
        k=args.k,
        budget_tokens=args.budget_tokens,
        budget_bytes=args.budget_bytes,
        tokenizer=args.tokenizer,
        truncate_last=args.truncate_last,
        min_tokens=args.min_tokens,
    )
    spec.validate()
    out_dir = args.out if args.out and not _is_record_file(args.out) else None
    outputs = Outputs(None if out_dir else args.out, args.scores, args.rejects, args.report, args.force)
    staged = bool(args.engine or args.work_dir or out_dir)
    if not staged:
        for flag, value in (("--ray-address", args.ray_address), ("--overwrite", args.overwrite)):
            if value:
                raise ConfigError(f"{flag} needs --engine or --work-dir")
    from compresslm.data.writers import check_not_input

    outputs.check()
    check_not_input([*outputs.paths(), out_dir, args.work_dir], [*args.source, *args.target])
    targets = load_targets(args.target, target_read)
    method_options = dict(
        compressor=args.compressor,
        contrast=args.contrast,
        contrast_size=args.contrast_size,
        max_targets=args.max_targets,
        chunk=args.chunk_bytes,
        max_chunks=args.max_chunks,
        dictionary=None if args.dictionary is None else args.dictionary == "on",
        workers=args.workers,
        seed=args.seed,
        num_buckets=args.dsir_buckets,
        min_example_length=args.dsir_min_words,
        embedder=args.d4_embedder,
        n_clusters=args.d4_clusters,
        cache_dir=args.cache_dir,
        band=args.compel_band,
    )
    with sigterm_as_interrupt():
        if staged:
            from compresslm.select.stages import StagedOptions, run_staged_selection

            options = StagedOptions(
                engine=args.engine or "local",
                workers=args.workers,
                num_cpus=args.num_cpus,
                ray_address=args.ray_address,
                work_dir=args.work_dir,
                overwrite=args.overwrite,
                out_dir=out_dir,
                progress=not args.no_progress,
            )
            method_options.pop("workers")
            result = run_staged_selection(
                args.method,
                method_options,
                targets,
                args.source,
                spec,
                read_options=read,
                outputs=outputs,
                options=options,
                batch_size=args.batch_size,
                seed=args.seed,
            )
        else:
            method = make_method(args.method, **method_options)
            progress = not args.no_progress
            result = run_selection(
                method,
                targets,
                args.source,
                spec,
                read_options=read,
                outputs=outputs,
                batch_size=args.batch_size,
                progress=progress,
            )
    if out_dir:
        outputs.selected = out_dir
    if args.json:
        import json

        print(json.dumps(result.to_dict() | {"outputs": outputs_dict(outputs)}, indent=2))
    else:
        print_selection_summary(result, outputs=outputs)
    if not args.out:
        print(
            "note: no --out given: the selected records were not written (pass --out FILE.jsonl to keep them)",
            file=sys.stderr,
        )
    if not result.selected:
        print("compresslm: nothing was selected (see the accounting above)", file=sys.stderr)
        return 1
    return 0


def _band(value: str) -> tuple[float, float]:
    """``--compel-band LOW,HIGH`` as a checked pair."""
    from compresslm.errors import ConfigError
    from compresslm.select.compel import parse_band

    try:
        return parse_band(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _is_record_file(path: str) -> bool:
    """Whether ``--out`` names one records file; a folder of per-shard files is a name without an
    extension, one ending in ``/``, or an existing folder (a typo such as ``x.csv`` stays a file
    and fails the format check)."""
    from pathlib import Path

    return not (path.endswith(("/", os.sep)) or Path(path).is_dir() or not Path(path).suffix)


def _max_targets(value: str) -> int:
    """``--max-targets``: a positive count, or ``all`` (0 to the API: every target)."""
    if value.lower() == "all":
        return 0
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'all', got '{value}'") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'all', got '{value}'")
    return n


def _align(args: argparse.Namespace) -> int:
    from compresslm.select.zipfit import alignment

    a, a_rejected = _align_texts(args.a, read_options_from(args))
    b, b_rejected = _align_texts(args.b, read_options_from(args, template=args.b_template or args.template))
    value = alignment(a, b, compressor=args.compressor, max_pairs=args.max_pairs or None, seed=args.seed)
    print(f"alignment({args.a} -> {args.b}) = {value:.6f}  [{args.compressor}, {len(a)}x{len(b)} docs]")
    if a_rejected or b_rejected:
        print(f"rejected records (not used): {a_rejected:,} in {args.a}, {b_rejected:,} in {args.b}")
    return 0


def _align_texts(path: str, options: ReadOptions) -> tuple[list[str], int]:
    """The accepted texts of one side and how many records were rejected (``--on-error`` applies)."""
    from compresslm.data.readers import read_records
    from compresslm.data.records import Record
    from compresslm.errors import DataError

    texts, rejected = [], 0
    for item in read_records(
        [path],
        text_field=options.text_field,
        template=options.template,
        on_error=options.on_error,  # type: ignore[arg-type]
        max_bytes=options.max_bytes,
        min_bytes=options.min_bytes,
    ):
        if isinstance(item, Record):
            texts.append(item.text)
        else:
            rejected += 1
    if not texts:
        raise DataError(f"no usable documents in {path} ({rejected:,} rejected)")
    return texts, rejected
