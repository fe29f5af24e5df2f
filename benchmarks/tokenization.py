"""The tokenization study on built-in data, plus tokenizer throughput (bytes/s) and generation bytes/step.

    .venv/bin/python benchmarks/tokenization.py                 # the README table (~1-2 h on 2 CPU cores)
    .venv/bin/python benchmarks/tokenization.py --quick         # a few minutes: tiny M2, one seed
    .venv/bin/python benchmarks/tokenization.py --tables-from OUT/benchmark.json   # reprint the tables

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
    sample_bytes_per_step,
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


def throughput_table(results: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The throughput and generation table, with a note on every sample that does not decode.

    "bytes/step" is what a generation step yields on held-out text (the held-out compression ratio);
    "sampled" is measured on one M2 sample of ``generate_steps`` ids after the prompt. A sample of a
    stream scheme (GZip, StaticAC, AC) decodes only if M2 produced a valid stream (a zlib header; a
    frame header whose word count the ids then supply), which an M2 at the uniform bound does not:
    those show ``n/a`` and the decoder's error below the table, never a 0.00."""
    lines = [
        "| scheme | held-out ratio | paper ratio | encode B/s | decode B/s | study tokenize B/s (all cores) | "
        "bytes/step (held-out) | sampled bytes/step | M2 steps/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in rows:
        ds = results["datasets"][r["label"]]
        held_out = ds["splits"]["val"]["compression_ratio"]
        paper = "-" if r["paper_ratio"] is None else f"{r['paper_ratio']:.2f}"
        sample = results["samples"].get(r["label"])
        sampled = "-" if sample is None else sample_bytes_per_step(sample)
        if sample is not None and sample.get("text") is None:
            sampled += f" [{len(notes) + 1}]"
            notes.append(f"[{len(notes) + 1}] {r['name']}: the sampled ids do not decode: {sample['error']}")
        sps = "-" if r["sample_steps_per_s"] is None else f"{r['sample_steps_per_s']:.0f}"
        lines.append(
            f"| {r['name']} | {held_out:.2f} | {paper} | {r['encode_bytes_per_s']:,.0f} | "
            f"{r['decode_bytes_per_s']:,.0f} | {r['study_bytes_per_s']:,.0f} | {held_out:.2f} | {sampled} | {sps} |"
        )
    if notes:
        lines += [
            "",
            "n/a: the sample is not a valid stream, so there are no bytes to count. GZip ids must start "
            "with a zlib header, StaticAC/AC ids with a 32-bit frame header (bytes, words) followed by that "
            "many coder words; an M2 at the uniform bound samples neither, and even a perfect one would "
            "have to sample a whole chunk (thousands of ids) before any byte decodes.",
            *notes,
        ]
    return "\n".join(lines)


def print_study_tables(results: dict[str, Any]) -> None:
    st = results["settings"]
    limit = "all" if st["limit_bytes"] is None else f"{st['limit_bytes']:,}"
    print(
        f"\n## Held-out bits/byte ({limit} bytes of {' '.join(st['corpus'])}, M1 {st['m1_size']}, "
        f"{st['train_tokens']:,} M2 training positions per run)\n"
    )
    print(markdown_table(results))
    print()
    for note in findings(results):
        print(f"- {note}")


def print_throughput_table(results: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print("\n## Tokenizers: throughput (1 process, 1 thread) and generation\n")
    print(throughput_table(results, rows))


def print_tables(bench: dict[str, Any]) -> None:
    """Both tables of a finished run (``benchmark.json``), recomputed from its numbers."""
    print_study_tables(bench["study"])
    print_throughput_table(bench["study"], bench["throughput"])
    print(f"\n(total {bench['seconds']:.0f} s)")


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
    p.add_argument("--threads", type=int, help="torch threads for M1's training (1 on a busy machine)")
    p.add_argument("--device", default="auto")
    p.add_argument("--throughput-bytes", type=int, default=50_000)
    p.add_argument("--force", action="store_true")
    p.add_argument(
        "--tables-from", metavar="JSON", help="reprint the tables of an earlier benchmark.json and exit"
    )
    args = p.parse_args(argv)
    if args.tables_from:
        print_tables(json.loads(Path(args.tables_from).read_text(encoding="utf-8")))
        return 0

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
        threads=args.threads,
        device=args.device,
        out=args.out,
        force=args.force,
    )
    t0 = time.perf_counter()
    results = run_tokenization_study(settings, log=lambda m: print(m, file=sys.stderr, flush=True))
    print_study_tables(results)

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
                "ratio": ds.meta["compression_ratio"],  # whole corpus; the table shows the held-out ratio
                "paper_ratio": PAPER_RATIOS.get(spec.label if spec.scheme != "spm" else "spm"),
                "study_bytes_per_s": ds.meta["bytes_per_second"],
                "sample_bytes_per_step": sample.get("bytes_per_step"),
                "sample_steps_per_s": sample.get("steps_per_second"),
            }
        )
    print_throughput_table(results, rows)
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
