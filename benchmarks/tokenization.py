"""The tokenization study on built-in data, plus tokenizer throughput (bytes/s) and generation bytes/step.

    .venv/bin/python benchmarks/tokenization.py                 # the README table (~1-2 h on 2 CPU cores)
    .venv/bin/python benchmarks/tokenization.py --quick         # a few minutes: tiny M2, one seed

Prints two markdown tables: held-out bits/byte per scheme and M2 size (mean ± sd over seeds; 3 seeds
for the key schemes bytes, spm, eqinfo16-256, eqinfo16-65k) with the uniform and unigram bounds, our
compression ratio beside the paper's, FLOPs/byte and wall time; then encode/decode throughput per
scheme (one process, one torch thread; the study's own tokenization used every core). Everything
lands in ``--out`` (the study folder; rerunning reuses finished parts) and ``--out/benchmark.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from compresslm.experiments.tokenization_study import (
    DEFAULT_SCHEMES,
    PAPER_RATIOS,
    TokenizationStudySettings,
    findings,
    markdown_table,
    parse_list,
    run_tokenization_study,
)
from compresslm.tokenizers.dataset import TokenDataset

EXTRA_SCHEMES = ("gzip-65k", "static-ac-65k", "ac-65k", "eqinfo24-65k", "eqinfo64-256", "eqinfo128-256")


def throughput(dataset: TokenDataset, texts: list[bytes], repeats: int) -> dict[str, Any]:
    """Median encode and decode bytes/s of the dataset's tokenizer over ``texts`` (one process)."""
    tok = dataset.tokenizer
    n = sum(map(len, texts))
    enc, dec = [], []
    encoded: list[Any] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        encoded = tok.encode_documents(texts)
        enc.append(n / (time.perf_counter() - t0))
    ids = [sum((c.tolist() for c in chunks), []) for chunks, _ in encoded]
    keep = 1 if tok.scheme == "ac" else len(ids)  # AC decodes one M1 step per byte: time one document
    n_dec = sum(len(t) for t in texts[:keep])
    for _ in range(repeats):
        t0 = time.perf_counter()
        for doc_ids in ids[:keep]:
            tok.decode_bytes(doc_ids)
        dec.append(n_dec / (time.perf_counter() - t0))
    return {
        "name": tok.name,
        "encode_bytes_per_s": statistics.median(enc),
        "decode_bytes_per_s": statistics.median(dec),
        "bytes": n,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench-out/tokenization")
    p.add_argument("--quick", action="store_true", help="tiny M2 only, one seed, fewer tokens")
    p.add_argument(
        "--schemes",
        help=f"comma list (default: {','.join(DEFAULT_SCHEMES)}; more: {','.join(EXTRA_SCHEMES)})",
    )
    p.add_argument("--sizes", default="tiny,small")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--train-tokens", type=int, default=150_000)
    p.add_argument("--limit-bytes", type=int, default=600_000)
    p.add_argument("--m1-size", default="tiny")
    p.add_argument("--m1-tokens", type=int, default=1_500_000)
    p.add_argument("--jobs", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--throughput-bytes", type=int, default=50_000)
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)

    schemes = parse_list(args.schemes) if args.schemes else list(DEFAULT_SCHEMES)
    settings = TokenizationStudySettings(
        corpus=["builtin:mixture"],
        schemes=schemes,
        sizes=["tiny"] if args.quick else parse_list(args.sizes),
        seeds=list(range(1 if args.quick else args.seeds)),
        m1_size="tiny" if args.quick else args.m1_size,
        m1_context=64,
        m1_tokens=500_000 if args.quick else args.m1_tokens,
        limit_bytes=300_000 if args.quick else args.limit_bytes,
        val_fraction=0.1,
        spm_vocab_size=4096,
        train_tokens=60_000 if args.quick else args.train_tokens,
        seq_len=128,
        batch_size=16,
        lr=2e-3,
        eval_points=4,
        jobs=args.jobs,
        device=args.device,
        out=args.out,
        force=args.force,
    )
    t0 = time.perf_counter()
    results = run_tokenization_study(settings, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(
        f"\n## Held-out bits/byte ({settings.limit_bytes:,} bytes of builtin:mixture, M1 {settings.m1_size}, "
        f"{settings.train_tokens:,} M2 training positions per run)\n"
    )
    print(markdown_table(results))
    print()
    for note in findings(results):
        print(f"- {note}")

    rows = []
    for spec in settings.specs:
        ds = TokenDataset(Path(args.out) / "tokens" / spec.label)
        val = ds.split_info("val")["documents"]
        texts, total = [], 0
        for i in range(val):
            if total >= args.throughput_bytes:
                break
            data = ds.tokenizer.decode_bytes(ds.document_ids("val", i))
            texts.append(data)
            total += len(data)
        row = throughput(ds, texts, repeats=1 if spec.uses_m1 else 3)
        sample = results["samples"].get(spec.label, {})
        rows.append(
            {
                **row,
                "label": spec.label,
                "ratio": ds.meta["compression_ratio"],
                "paper_ratio": PAPER_RATIOS.get(spec.label if spec.scheme != "spm" else "spm"),
                "study_bytes_per_s": ds.meta["bytes_per_second"],
                "sample_bytes_per_step": sample.get("bytes_per_step"),
                "sample_steps_per_s": sample.get("steps_per_second"),
            }
        )
    print("\n## Tokenizers: throughput (1 process, 1 thread) and generation\n")
    print(
        "| scheme | ratio | paper ratio | encode B/s | decode B/s | study tokenize B/s (all cores) | "
        "sampled bytes/step | M2 steps/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        paper = "-" if r["paper_ratio"] is None else f"{r['paper_ratio']:.2f}"
        bps = "-" if r["sample_bytes_per_step"] is None else f"{r['sample_bytes_per_step']:.2f}"
        sps = "-" if r["sample_steps_per_s"] is None else f"{r['sample_steps_per_s']:.0f}"
        print(
            f"| {r['name']} | {r['ratio']:.2f} | {paper} | {r['encode_bytes_per_s']:,.0f} | "
            f"{r['decode_bytes_per_s']:,.0f} | {r['study_bytes_per_s']:,.0f} | {bps} | {sps} |"
        )
    out = Path(args.out) / "benchmark.json"
    out.write_text(
        json.dumps(
            {"study": results, "throughput": rows, "seconds": time.perf_counter() - t0}, indent=2, default=str
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"\n(total {time.perf_counter() - t0:.0f} s; {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
