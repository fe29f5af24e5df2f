"""The selection study on built-in data: does ZIP-FIT-selected data reach the lowest target loss sooner?

    .venv/bin/python benchmarks/selection_study.py [--budgets 100k] [--seeds 3] [--pool builtin:pool]
        [--methods ...] [--target-sizes 1,4,16,64,all] [--demo-scale] [--out bench-out/selection-study]
        [--force]

Setting (the paper's code setting at toy scale): HumanEval's first 82 problems are the selection
target, its last 82 the test set; the source is the built-in mixed pool (about 20% Python); the base
model is the default byte-level "small" transformer pretrained on ``builtin:mixture`` (cached after
the first run). Every method's selection is fine-tuned for exactly the budget in bytes, with several
seeds. It prints a Markdown table for the README (lowest loss ± sample std over seeds, bytes to the
lowest loss, X% faster to the lowest loss against each baseline on the mean curves, selection
seconds, Python share of the selection) and writes the full report (results.json, index.html, PNGs)
under ``--out``.

``--demo-scale`` takes the base model and fine-tuning settings of ``compresslm demo`` step 2 (a tiny
model, cached; pool ``builtin:pool:5000`` unless ``--pool`` is given): minutes instead of an hour.
``--target-sizes`` adds the target-set size ablation (the default ZIP-FIT against seeded samples of
n targets, one fine-tuning run per size and seed) and prints its table.

D4 runs with the paper's embedder (all-MiniLM-L6-v2) when the optional ``d4`` extra is installed;
otherwise this script substitutes ``d4:hashing`` and says so.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

METHODS = ("zipfit", "zipfit:lz4+nocontrast+all", "zipfit:gzip9", "dsir", "d4", "random", "compel")


def _minilm_available() -> bool:
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def markdown(results: dict[str, Any]) -> str:
    from compresslm.experiments.selection_report import spread_text

    lines = []
    baselines = results["baselines"]
    for b in results["budgets"]:
        lines.append(
            f"\nBudget {b['label']} bytes, {len(results['config']['seeds'])} seeds, base model test loss "
            f"{results['base_loss']:.4f} nats/byte\n"
        )
        head = ["method", "lowest loss", "bytes to lowest", "select s", "python share"]
        head += [f"faster vs {x}" for x in baselines]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for spec, m in b["methods"].items():
            s = m["summary"]
            cells = [
                spec,
                spread_text(s["lowest"]),
                spread_text(s["tokens_to_lowest"], ",.0f"),
                f"{m['selection']['seconds']:.1f}",
                f"{m['selection']['precision']:.3f}",
            ]
            for x in baselines:
                if x == spec:
                    cells.append("–")
                    continue
                f = b["faster"][spec][x]
                seeds = f["spread"]
                extra = (
                    f" ({100 * seeds['mean']:.0f} ± {100 * seeds['std']:.0f}%)"
                    if seeds and seeds["n"] > 1
                    else ""
                )
                never = f", {f['never']}/{len(f['per_seed'])} never" if f["never"] else ""
                cells.append(f"{f['mean_curve']['text']}{extra}{never}")
            lines.append("| " + " | ".join(cells) + " |")
    if results.get("target_sizes"):
        a = results["target_sizes"]
        lines.append(f"\nTarget-set size ablation: {a['method']}, budget {a['budget']:,} bytes\n")
        lines.append("| targets | python share | lowest loss |")
        lines.append("|---|---|---|")
        for row in a["rows"]:
            prec = "–" if row["precision"] is None else spread_text(row["precision"], ".3f")
            lines.append(f"| {row['n']} | {prec} | {spread_text(row['lowest'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="100k")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pool", default="builtin:pool")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--eval-points", type=int, default=10)
    ap.add_argument("--jobs", type=int, help="fine-tuning runs at once (default: all cores)")
    ap.add_argument("--out", default="bench-out/selection-study")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--target-sizes", help="target-set size ablation, e.g. 1,4,16,64,all")
    ap.add_argument("--demo-scale", action="store_true", help="compresslm demo's tiny model and settings")
    args = ap.parse_args(argv)

    from compresslm.experiments.finetune import FinetuneSettings
    from compresslm.experiments.selection_study import StudyConfig, parse_budget, run_selection_study

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "d4" in methods and not _minilm_available():
        methods[methods.index("d4")] = "d4:hashing"
        print(
            "D4: sentence-transformers is not installed (pip install 'compresslm[d4]'); using d4:hashing, "
            "the cheap character n-gram embedder, instead of all-MiniLM-L6-v2",
            file=sys.stderr,
        )
    config = StudyConfig(
        out=args.out,
        sources=[args.pool],
        methods=methods,
        budgets=[parse_budget(b) for b in args.budgets.split(",")],
        seeds=list(range(args.seeds)),
        finetune=FinetuneSettings(eval_points=args.eval_points),
        finetune_workers=args.jobs,
        force=args.force,
    )
    if args.demo_scale:
        from compresslm.demo import DEMO_STUDY_POOL, demo_study_config

        demo = demo_study_config(args.out)
        config.pretrain, config.finetune = demo.pretrain, demo.finetune
        if args.pool == "builtin:pool":
            config.sources = [DEMO_STUDY_POOL]
    if args.target_sizes:
        config.target_sizes = [
            0 if x.strip() == "all" else int(x) for x in args.target_sizes.split(",") if x.strip()
        ]
    t0 = time.perf_counter()
    results = run_selection_study(config, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(markdown(results))
    print(
        f"\nwall time {time.perf_counter() - t0:.0f} s; report in {args.out}/report/index.html",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
