"""`compresslm study select|alignment|tokenization`: the studies (every `study` command is here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from compresslm.cli.common import (
    add_device_option,
    add_progress_option,
    add_read_options,
    add_threads_option,
    at_least,
    count,
    count_list,
    count_or_zero,
    fraction,
    method_list,
    method_spec,
    model_size,
    non_negative_int,
    positive_float,
    positive_int,
    read_options_from,
    rich_console,
    run_guarded,
    seed_list,
    size_list,
    template,
)
from compresslm.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("study", help="fine-tuning studies: selection methods, alignment vs loss")
    sub = p.add_subparsers(dest="study", metavar="<study>")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    _register_select(sub)
    _register_alignment(sub)
    _register_tokenization(sub)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("base model and fine-tuning")
    m.add_argument(
        "--base-model",
        help="compresslm checkpoint folder or local Hugging Face causal LM folder "
        "(default: pretrain a byte-level model on builtin:mixture, cached)",
    )
    m.add_argument(
        "--base-size",
        type=model_size,
        default="small",
        help="size preset of the default base model (default small)",
    )
    m.add_argument(
        "--pretrain-tokens",
        type=count,
        default="2M",
        help="pretraining bytes of the default base model (default 2M)",
    )
    m.add_argument("--cache-dir", help="cache folder (default $COMPRESSLM_CACHE or ~/.cache/compresslm)")
    m.add_argument(
        "--seeds",
        type=seed_list,
        default="3",
        help="N (seeds 0..N-1) or a comma list, e.g. 0,5,9 (default 3)",
    )
    m.add_argument("--lr", type=positive_float, default=3e-4, help="peak learning rate (default 3e-4)")
    m.add_argument("--warmup", type=fraction, default=0.1, help="warmup share of the steps (default 0.1)")
    m.add_argument("--batch-size", type=positive_int, default=8, help="sequences per step (default 8)")
    m.add_argument("--seq-len", type=at_least(2), default=256, help="tokens per sequence (default 256)")
    m.add_argument(
        "--eval-points", type=positive_int, default=10, help="test evaluations per run (default 10)"
    )
    m.add_argument(
        "--eval-tokens", type=count, help="test tokens per evaluation (default: the whole test set)"
    )
    add_device_option(m)
    m.add_argument(
        "--jobs", type=positive_int, help="fine-tuning runs at once (default: all cores on CPU, 1 on GPU)"
    )
    p.add_argument("-o", "--out", default="study-out", help="output folder; the report goes to OUT/report/")
    p.add_argument("--force", action="store_true", help="overwrite an earlier report")
    p.add_argument("--json", action="store_true", help="print results.json instead of the summary table")


def _register_select(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "select",
        help="select with each method, fine-tune on each selection, compare target loss curves",
        description="For each method and budget: select from the sources against the target set, fine-tune the "
        "same base model on the selection for the same number of tokens, record the test loss "
        "along the way, and write report/ (results.json, index.html, PNGs).",
    )
    p.add_argument(
        "--target",
        nargs="+",
        default=None,
        help="target files/globs or builtin:NAME (default: builtin:humaneval-target)",
    )
    p.add_argument(
        "--test",
        nargs="+",
        default=None,
        help="test set for the loss (default: builtin:humaneval-test with the default target, "
        "else the second half of the target records)",
    )
    p.add_argument("--source", nargs="+", default=["builtin:pool"], help="source pool (default builtin:pool)")
    p.add_argument(
        "--methods",
        type=method_list,
        default=None,
        help="comma list, variants allowed (default: zipfit,zipfit:lz4+nocontrast,zipfit:gzip9,"
        "dsir,d4,random: our default mode, plain lz4 and the paper's gzip-9 against every baseline)",
    )
    p.add_argument(
        "--budgets",
        type=count_list,
        default="200k",
        help="comma list of token budgets, e.g. 200k,500k (bytes for the byte-level base model)",
    )
    p.add_argument(
        "--domain", default="python", help="domain whose share is reported as precision (default python)"
    )
    p.add_argument(
        "--selection-seed", type=non_negative_int, default=0, help="seed of the selection methods (default 0)"
    )
    p.add_argument("--workers", type=positive_int, help="selection scoring processes (default: all cores)")
    p.add_argument("--keep-selections", action="store_true", help="write OUT/selections/METHOD@BUDGET.jsonl")
    p.add_argument(
        "--target-sizes",
        type=_target_sizes,
        help="target-set size ablation, e.g. 1,4,16,64,all: per size and seed, select with "
        "--ablation-method against a seeded sample of that many targets and fine-tune on it (default: none)",
    )
    p.add_argument(
        "--ablation-method",
        type=method_spec,
        default="zipfit",
        help="method of the target-size ablation (default zipfit; it scores every sampled target)",
    )
    p.add_argument("--target-field", help="text field of target/test records (default: --text-field)")
    p.add_argument(
        "--target-template",
        type=template,
        help='target/test text template, e.g. "{prompt}\\n{canonical_solution}" (default: --template)',
    )
    add_read_options(p, domain=True)
    _add_model_options(p)
    p.set_defaults(func=lambda a: run_guarded(_select, a))


def _register_alignment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "alignment",
        help="fine-tune on datasets of differing alignment; R² of alignment vs test loss",
        description="Fine-tune the base model on several datasets for the same tokens, compute each dataset's "
        "ZIP-FIT alignment with the test set, and fit test loss on alignment (R², scatter plot).",
    )
    p.add_argument(
        "--test",
        nargs="+",
        default=["builtin:humaneval-test"],
        help="test set (alignment and loss), default builtin:humaneval-test",
    )
    p.add_argument(
        "--dataset",
        action="append",
        default=None,
        help="DOMAIN, DOMAIN+DOMAIN (built-in pool) or NAME=PATH[,PATH]; repeat (default: every "
        "built-in domain and two mixtures)",
    )
    p.add_argument("--pool", default="builtin:pool", help="where built-in domain datasets come from")
    p.add_argument("--budget", type=count, default="100k", help="training tokens per dataset (default 100k)")
    p.add_argument("--compressor", help="alignment compressor (default: ZIP-FIT's default)")
    p.add_argument(
        "--max-pairs",
        type=count_or_zero,
        default=20_000,
        help="alignment pairs sampled per dataset (default 20000)",
    )
    p.add_argument("--workers", type=positive_int, help="alignment processes (default: all cores)")
    p.add_argument("--target-field", help="text field of test records (default: --text-field)")
    p.add_argument("--target-template", type=template, help="test text template (default: --template)")
    add_read_options(p)
    _add_model_options(p)
    p.set_defaults(func=lambda a: run_guarded(_alignment, a))


def _common(args: argparse.Namespace) -> dict[str, Any]:
    from compresslm.experiments.base_model import PretrainSettings
    from compresslm.experiments.finetune import FinetuneSettings

    if args.base_model is None and args.seq_len > PretrainSettings().seq_len:
        # Checked now: the default base model is pretrained first, for minutes, before the run's own check.
        raise ConfigError(
            f"--seq-len {args.seq_len} is longer than the default base model's "
            f"{PretrainSettings().seq_len} positions; pass --base-model with a longer context or lower it"
        )
    return {
        "out": args.out,
        "seeds": args.seeds,
        "base_model": args.base_model,
        "pretrain": PretrainSettings(size=args.base_size, tokens=args.pretrain_tokens),
        "finetune": FinetuneSettings(
            lr=args.lr,
            warmup_fraction=args.warmup,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            eval_points=args.eval_points,
            eval_tokens=args.eval_tokens,
            device=args.device,
        ),
        "finetune_workers": args.jobs,
        "cache_dir": args.cache_dir,
        "force": args.force,
    }


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _select(args: argparse.Namespace) -> int:
    from compresslm.experiments.selection_study import (
        DEFAULT_METHODS,
        HUMANEVAL_TARGET,
        HUMANEVAL_TEST,
        StudyConfig,
        run_selection_study,
    )

    targets = args.target or [HUMANEVAL_TARGET]
    test = args.test if args.test is not None else ([HUMANEVAL_TEST] if args.target is None else None)
    methods = args.methods or list(DEFAULT_METHODS)
    config = StudyConfig(
        targets=targets,
        test=test,
        sources=args.source,
        methods=methods,
        budgets=args.budgets,
        read_options=read_options_from(args),
        target_options=read_options_from(args, field=args.target_field, template=args.target_template),
        domain=args.domain or None,
        selection_seed=args.selection_seed,
        selection_workers=args.workers,
        keep_selections=args.keep_selections,
        target_sizes=args.target_sizes,
        ablation_method=args.ablation_method,
        **_common(args),
    )
    results = run_selection_study(config, log=_log)
    if args.json:
        import json

        print(json.dumps(results, indent=1))
    else:
        print_study_summary(results)
        print(f"report: {args.out}/report/index.html")
    return 0


def _alignment(args: argparse.Namespace) -> int:
    from compresslm.experiments.alignment_study import (
        AlignmentStudyConfig,
        default_datasets,
        parse_dataset,
        run_alignment_study,
    )

    config = AlignmentStudyConfig(
        test=args.test,
        test_options=read_options_from(args, field=args.target_field, template=args.target_template),
        datasets=[parse_dataset(d) for d in args.dataset] if args.dataset else default_datasets(),
        pool=args.pool,
        read_options=read_options_from(args),
        budget=args.budget,
        compressor=args.compressor,
        max_pairs=args.max_pairs,
        alignment_workers=args.workers,
        **_common(args),
    )
    results = run_alignment_study(config, log=_log)
    if args.json:
        import json

        print(json.dumps(results, indent=1))
    else:
        print_alignment_summary(results)
        print(f"report: {args.out}/report/index.html")
    return 0


def print_study_summary(results: dict[str, Any]) -> None:
    """One table per budget: lowest loss, tokens to it, selection time, precision, X% faster."""
    from rich.console import Console
    from rich.table import Table

    from compresslm.experiments.selection_report import spread_text

    console = Console()
    unit = results["unit"]
    baselines = results["baselines"]
    domain = results["config"].get("domain")
    for b in results["budgets"]:
        t = Table(
            title=f"selection study, budget {b['label']} {unit}, {len(results['config']['seeds'])} seeds; "
            f"base model test loss {results['base_loss']:.4f}"
        )
        t.add_column("method", no_wrap=True)
        for col in ("lowest loss", f"{unit} to lowest", "select s", f"{domain or 'domain'} share"):
            t.add_column(col, justify="right")
        for bl in baselines:
            t.add_column(f"faster vs {bl}", justify="right")
        for spec, m in b["methods"].items():
            s = m["summary"]
            prec = m["selection"]["precision"]
            t.add_row(
                spec,
                spread_text(s["lowest"]),
                spread_text(s["tokens_to_lowest"], ",.0f"),
                f"{m['selection']['seconds']:.1f}",
                "–" if prec is None else f"{prec:.3f}",
                *["–" if bl == spec else _faster_cell(b["faster"][spec][bl]) for bl in baselines],
            )
        console.print(t)
    if results.get("target_sizes"):
        a = results["target_sizes"]
        t = Table(title=f"target-set size ablation: {a['method']}, budget {a['budget']:,} {unit}")
        for col in ("targets", f"{domain or 'domain'} share", "lowest loss"):
            t.add_column(col, justify="right")
        for row in a["rows"]:
            prec = "–" if row["precision"] is None else spread_text(row["precision"], ".3f")
            t.add_row(row["n"], prec, spread_text(row["lowest"]))
        console.print(t)
    console.print(
        "faster vs X: 1 − (tokens to reach X's lowest loss) / (tokens X needs to reach it), on the mean "
        "curves (± over seeds); never: does not reach it; n/a: X never improved on the base model. "
        "Details per seed in the report."
    )


def _target_sizes(text: str) -> list[int]:
    """``--target-sizes 1,4,16,64,all``: positive counts, ``all`` = every target (0)."""
    sizes = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        if part == "all":
            sizes.append(0)
            continue
        try:
            sizes.append(positive_int(part))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"expected counts or 'all', e.g. 1,4,16,64,all; got {text!r}"
            ) from None
    if not sizes or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(
            f"expected distinct counts or 'all', e.g. 1,4,16,64,all; got {text!r}"
        )
    return sizes


def _faster_cell(f: dict[str, Any]) -> str:
    """Compact: "74.2% ±7.1", "never", "n/a"; the per-seed details are in the report."""
    head = f["mean_curve"]
    if head["value"] is None:
        return "never" if head["reason"] == "never" else "n/a"
    spread = f["spread"]
    tail = f" ±{100 * spread['std']:.1f}" if spread is not None and spread["n"] > 1 else ""
    return f"{100 * head['value']:.1f}%{tail}"


def print_alignment_summary(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"alignment vs test loss ({results['compressor']}, {results['budget']:,} {results['unit']} each)"
    )
    for col in ("dataset", "alignment", "lowest loss", "final loss"):
        t.add_column(col, justify="left" if col == "dataset" else "right")
    for name, d in sorted(results["datasets"].items(), key=lambda kv: -kv[1]["alignment"]):
        s = d["summary"]
        t.add_row(name, f"{d['alignment']:.4f}", f"{s['lowest']['mean']:.4f}", f"{s['final']['mean']:.4f}")
    console = Console()
    console.print(t)
    f = results["fit_final"]
    console.print(
        f"final loss ~ alignment: R² = {f['r_squared']:.3f}, r = {f['r']:.3f}, slope = {f['slope']:.3f}, "
        f"permutation p = {f['p_value']:.3g} (n = {f['n']})"
    )


# -- study tokenization ---------------------------------------------------------------------------


def _register_tokenization(sub: argparse._SubParsersAction) -> None:
    """`study tokenization` (added to the `study` command group)."""
    from compresslm.experiments.tokenization_study import DEFAULT_SCHEMES

    p = sub.add_parser(
        "tokenization",
        help="train M2 over every tokenization; bits/byte against FLOPs/byte",
        description="Train M1 (unless --m1 is given), tokenize the corpus with every scheme, train M2 of every size "
        "and seed on each, evaluate bits/byte on the same held-out bytes, and write OUT/report/ "
        "(results.json, report.md, index.html, bits_per_byte_vs_flops.png). Rerun to resume.",
    )
    p.add_argument(
        "--corpus", nargs="+", default=["builtin:mixture"], help="corpus (default builtin:mixture)"
    )
    p.add_argument(
        "--schemes",
        default=",".join(DEFAULT_SCHEMES),
        help=f"comma list (default {','.join(DEFAULT_SCHEMES)})",
    )
    p.add_argument(
        "--sizes",
        type=size_list,
        default="tiny,small",
        help="M2 size presets, comma list (default tiny,small)",
    )
    p.add_argument(
        "--seeds", type=seed_list, default="1", help="N (seeds 0..N-1) or a comma list (default 1)"
    )
    p.add_argument(
        "--key-schemes", help="schemes that get every seed (default bytes,spm,eqinfo16-256,eqinfo16-65k)"
    )
    p.add_argument("--m1", help="an M1 folder (default: train one on the training split, OUT/m1)")
    p.add_argument(
        "--m1-size", type=model_size, default="tiny", help="size of the M1 trained here (default tiny)"
    )
    p.add_argument(
        "--m1-context", type=at_least(2), default=64, help="M1 context = max window bytes (default 64)"
    )
    p.add_argument("--m1-tokens", type=count, default="1M", help="M1 training bytes (default 1M)")
    p.add_argument(
        "--limit-bytes",
        type=count_or_zero,
        default="1M",
        help="corpus prefix to use, e.g. 500k, 5M (default 1M; 0: all)",
    )
    p.add_argument(
        "--val-fraction", type=fraction, default=0.1, help="held-out share of documents (default 0.1)"
    )
    p.add_argument(
        "--vocab-size", type=at_least(2), default=4096, help="SentencePiece vocabulary (default 4096)"
    )
    p.add_argument(
        "--train-tokens", type=count, default="200k", help="M2 training positions per run (default 200k)"
    )
    p.add_argument("--seq-len", type=at_least(2), default=128, help="M2 sequence length (default 128)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="M2 batch size (default 16)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="M2 peak learning rate (default 1e-3)")
    p.add_argument("--workers", type=positive_int, help="tokenization processes (default: all cores)")
    p.add_argument("--jobs", type=positive_int, help="M2 runs at once (default: all cores on CPU, 1 on GPU)")
    add_threads_option(p, "torch CPU threads for training M1")
    add_device_option(p)
    p.add_argument(
        "-o", "--out", default="tokenization-study", help="output folder (default tokenization-study)"
    )
    p.add_argument("--force", action="store_true", help="redo every step instead of reusing finished ones")
    add_progress_option(p)
    p.set_defaults(func=lambda a: run_guarded(_study, a))


def study_settings(args: argparse.Namespace) -> Any:
    from compresslm.experiments.tokenization_study import TokenizationStudySettings, parse_list

    limit = args.limit_bytes or None
    return TokenizationStudySettings(
        corpus=list(args.corpus),
        schemes=parse_list(args.schemes),
        sizes=args.sizes,
        seeds=args.seeds,
        key_schemes=parse_list(args.key_schemes) if args.key_schemes else None,
        m1=args.m1,
        m1_size=args.m1_size,
        m1_context=args.m1_context,
        m1_tokens=args.m1_tokens,
        limit_bytes=limit,
        val_fraction=args.val_fraction,
        spm_vocab_size=args.vocab_size,
        train_tokens=args.train_tokens,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        lr=args.lr,
        workers=args.workers,
        jobs=args.jobs,
        threads=args.threads,
        device=args.device,
        out=args.out,
        force=args.force,
        progress=not args.no_progress,
    )


def _study(args: argparse.Namespace) -> int:
    from compresslm.experiments.tokenization_study import run_tokenization_study

    results = run_tokenization_study(study_settings(args), log=lambda m: print(m, flush=True))
    print_study_table(results)
    print(
        f"report: {Path(args.out) / 'report'}/ (index.html, report.md, results.json, bits_per_byte_vs_flops.png)"
    )
    return 0


def print_study_table(results: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from compresslm.experiments.tokenization_study import (
        COST_HEADERS,
        QUALITY_HEADERS,
        cost_rows,
        findings,
        table_rows,
    )

    console = rich_console()
    for title, headers, rows in (
        ("tokenization study: held-out bits/byte", QUALITY_HEADERS, table_rows(results)),
        ("costs", COST_HEADERS, cost_rows(results)),
    ):
        t = Table(title=title)
        for i, h in enumerate(headers):
            t.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for row in rows:
            t.add_row(*[escape(c) for c in row])
        console.print(t)
    for note in findings(results):
        console.print(f"- {escape(note)}")


def tokenization_demo_step(args: argparse.Namespace) -> None:
    """`compresslm demo` step 3: the tokenization study at demo scale (report in OUT/tokenization/)."""
    from compresslm.experiments.tokenization_study import (
        DEMO_CORPUS,
        DEMO_LIMIT_BYTES,
        demo_settings,
        run_tokenization_study,
    )

    settings = demo_settings(args.out, force=args.force, workers=args.workers)
    print(
        f"\n[3] tokenization study: M2 (tiny) over {', '.join(settings.schemes)} on the first "
        f"{DEMO_LIMIT_BYTES // 1000} kB of {DEMO_CORPUS}; M1 (tiny) drives AC and Equal-Info windows; "
        "bits/byte on the same held-out bytes",
        flush=True,
    )
    results = run_tokenization_study(settings, log=lambda m: print(m, file=sys.stderr, flush=True))
    print_study_table(results)
    print(f"tokenization report: {settings.out}/report/index.html (report.md, results.json, plot)")
