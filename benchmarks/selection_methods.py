"""Selection wall time of every method on the same pool in one run, with precision@k.

    .venv/bin/python benchmarks/selection_methods.py [--pool builtin:pool] [--targets builtin:python-targets]
        [--k 1000] [--repeats 3] [--methods zipfit,zipfit:gzip9,...] [--out bench-out/selection_methods.json]

Every method goes through the same pipeline (:func:`compresslm.select.pipeline.run_selection`) on
the same pool, targets and cores, in this one process, one after the other; the time is the whole
selection (prepare + score + collecting the selected records), median of ``--repeats`` runs, with
the min and max beside it. Ratios to DSIR are from the same run, so they survive a noisy machine.
D4 gets a fresh embedding cache for every repeat: embedding is its main cost, and a warm cache would
hide it. precision@k is the share of the ``python`` domain among the k selected documents (the
built-in pool is about 20% Python). "overlap" is the share of a method's k documents that the
``--reference`` method (default ``zipfit:lz4+all``: every target scored) also selects: it shows what
the default mode's target sample changes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

DEFAULT_METHODS = (
    "zipfit",
    "zipfit:lz4+all",
    "zipfit:gzip9",
    "zipfit:lz4+contrast",
    "zipfit:gzip9+contrast",
    "dsir",
    "dsir:topk",
    "d4",
    "d4:hashing",
    "random",
    "compel",
)


def run_method(
    spec: str, targets: list[str], pool: str, k: int, workers: int | None, cache: str
) -> dict[str, Any]:
    from compresslm.select.methods import make_method
    from compresslm.select.pipeline import SelectionSpec, run_selection

    opts: dict[str, Any] = {"workers": workers, "seed": 0}
    if spec.startswith("d4"):
        opts["cache_dir"] = cache
    method = make_method(spec, **opts)
    t0 = time.perf_counter()
    result = run_selection(method, targets, [pool], SelectionSpec(k=k))
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "seconds": result.seconds,
        "precision": result.precision_at(k, "python"),
        "selected": len(result.selected),
        "ids": [s.id for s in result.selected],
        "method": result.method_info,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", default="builtin:pool")
    ap.add_argument("--targets", default="builtin:python-targets")
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    ap.add_argument("--workers", type=int, help="scoring processes (default: all cores)")
    ap.add_argument(
        "--reference", default="zipfit:lz4+all", help="method the top-k overlap is measured against"
    )
    ap.add_argument("--out", default="bench-out/selection_methods.json")
    args = ap.parse_args(argv)

    from compresslm.select.pipeline import load_targets
    from compresslm.select.pool import ReadOptions

    targets = load_targets([args.targets], ReadOptions())
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"pool {args.pool}, {len(targets)} targets from {args.targets}, k = {args.k}, {args.repeats} repeats, "
        f"{cores} cores, zlib {zlib.ZLIB_RUNTIME_VERSION}",
        file=sys.stderr,
    )
    # Warm-up: build the built-in corpora once so the first method does not pay for it.
    run_method("random", targets, args.pool, args.k, args.workers, "")

    rows: dict[str, Any] = {}
    selected: dict[str, set[str]] = {}
    for spec in methods:
        runs = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache:
                try:
                    runs.append(run_method(spec, targets, args.pool, args.k, args.workers, cache))
                except Exception as exc:  # a missing optional extra (e.g. D4's sentence-transformers)
                    print(f"{spec}: skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
                    break
        if not runs:
            rows[spec] = {"skipped": True}
            continue
        selected[spec] = set(runs[0]["ids"])
        walls = [r["wall_s"] for r in runs]
        rows[spec] = {
            "median_s": statistics.median(walls),
            "min_s": min(walls),
            "max_s": max(walls),
            "prepare_s": statistics.median(r["seconds"].get("prepare", 0.0) for r in runs),
            "precision": runs[0]["precision"],
            "method": runs[0]["method"],
            "targets_scored": runs[0]["method"].get("targets_scored"),
            "repeats": len(runs),
        }
        print(
            f"{spec}: {rows[spec]['median_s']:.2f} s, precision@{args.k} {rows[spec]['precision']}",
            file=sys.stderr,
        )

    reference = selected.get(args.reference)
    for spec, r in rows.items():
        if spec in selected and reference:
            r["overlap_with_reference"] = len(selected[spec] & reference) / max(1, len(reference))
    dsir = rows.get("dsir", {}).get("median_s")
    print(
        f"\n| method | targets scored | median s (min–max) | × DSIR time | precision@{args.k} (python) "
        f"| overlap with {args.reference} |"
    )
    print("|---|---|---|---|---|---|")
    for spec, r in rows.items():
        if r.get("skipped"):
            print(f"| {spec} | | skipped | | | |")
            continue
        ratio = f"{r['median_s'] / dsir:.2f}" if dsir else "–"
        prec = "–" if r["precision"] is None else f"{r['precision']:.3f}"
        scored = "–" if r["targets_scored"] is None else str(r["targets_scored"])
        overlap = f"{r['overlap_with_reference']:.3f}" if "overlap_with_reference" in r else "–"
        print(
            f"| {spec} | {scored} | {r['median_s']:.2f} ({r['min_s']:.2f}–{r['max_s']:.2f}) | {ratio} | {prec} "
            f"| {overlap} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "pool": args.pool,
                "targets": args.targets,
                "n_targets": len(targets),
                "k": args.k,
                "reference": args.reference,
                "cores": cores,
                "zlib": zlib.ZLIB_RUNTIME_VERSION,
                "methods": rows,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
