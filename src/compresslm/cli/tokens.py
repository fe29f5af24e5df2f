"""`compresslm tokenize`, `train`, `eval`, `generate` and `study tokenization`: token datasets for
every scheme, M2 on them, its bits/byte, and samples decoded through M1 (thin wrappers over
:mod:`compresslm.tokenizers` and :mod:`compresslm.experiments`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from compresslm.cli.common import add_read_options, parse_count, run_guarded
from compresslm.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_tokenize(subparsers)
    _register_train(subparsers)
    _register_eval(subparsers)
    _register_generate(subparsers)


# -- tokenize -------------------------------------------------------------------------------------


def _register_tokenize(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tokenize",
        help="tokenize a corpus with any scheme into memory-mapped token arrays",
        description="Tokenize a corpus (bytes, spm, gzip, static-ac, ac, equal-info) into OUT/{train,val}.bin "
        "plus metadata (bytes covered, tokens, compression ratio). Documents are cut into "
        "10,240-byte chunks coded independently; end-of-document and padding ids sit above the data "
        "ids. Runs on all cores; rerun the same command to resume an interrupted run.",
    )
    p.add_argument("corpus", nargs="+", help="files/folders/globs or builtin:NAME")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument(
        "--scheme",
        default="equal-info",
        help="bytes, spm[-N], gzip[-65k], static-ac[-65k], ac[-65k], equal-info, eqinfo{b}-{256|65k} "
        "(default equal-info)",
    )
    p.add_argument(
        "--window-bits", type=int, help="equal-info: bits per window b (16, 24, 32, 64, 128; default 16)"
    )
    p.add_argument(
        "--token-bits", type=int, choices=[8, 16], help="bits per token: 8 (v=256) or 16 (v=65,536)"
    )
    p.add_argument("--model", help="M1 folder (from `compresslm m1 train`) for ac and equal-info")
    p.add_argument("--vocab-size", type=int, help="spm: vocabulary size (default 8192)")
    p.add_argument(
        "--chunk-bytes", type=int, default=10_240, help="bytes per independently coded chunk (10240)"
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.05,
        help="share of documents held out (by a hash of the id: same documents for every scheme)",
    )
    p.add_argument("--limit-bytes", help="only the first documents up to this many bytes, e.g. 2M")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.add_argument(
        "--shard-bytes",
        help="documents per unit of work and of resumption, in bytes, e.g. 256k (default 2 MiB; "
        "workers take whole shards, so a corpus of one shard runs on one core)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing dataset in --out")
    p.add_argument("--json", action="store_true", help="print the metadata as JSON")
    add_read_options(p)
    p.set_defaults(func=lambda a: run_guarded(_tokenize, a))


def _tokenize(args: argparse.Namespace) -> int:
    from compresslm.data.readers import read_records
    from compresslm.tokenizers import build_tokenizer, parse_scheme
    from compresslm.tokenizers.dataset import TokenizeOptions, tokenize_corpus, training_texts

    spec = parse_scheme(
        args.scheme,
        token_bits=args.token_bits,
        window_bits=args.window_bits,
        spm_vocab_size=args.vocab_size,
        chunk_bytes=args.chunk_bytes,
    )
    options = TokenizeOptions(
        val_fraction=args.val_fraction,
        workers=args.workers,
        force=args.force,
        limit_bytes=parse_count(args.limit_bytes, "--limit-bytes") if args.limit_bytes else None,
        progress=sys.stderr.isatty(),
        **({"shard_bytes": parse_count(args.shard_bytes, "--shard-bytes")} if args.shard_bytes else {}),
    )
    read_kwargs = _read_kwargs(args)

    def records() -> Any:
        return read_records(args.corpus, **read_kwargs)

    tokenizer = build_tokenizer(spec, texts=lambda: training_texts(records(), options), m1=args.model)
    meta = tokenize_corpus(records(), tokenizer, args.out, options, source=" ".join(args.corpus))
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True, default=str))
    else:
        print_dataset_summary(meta, args.out)
    return 0


def _read_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "text_field": args.text_field,
        "template": args.template,
        "on_error": args.on_error,
        "max_bytes": args.max_bytes,
        "min_bytes": args.min_bytes,
    }


def _console() -> Any:
    """A rich console that does not squeeze wide tables when the output is a file or a pipe."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def print_dataset_summary(meta: dict[str, Any], out: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"{meta['tokenizer']['name']} -> {out}"))
    for col in ("split", "documents", "bytes", "tokens", "bytes/token"):
        t.add_column(col, justify="right")
    for split, s in meta["splits"].items():
        ratio = s["compression_ratio"]
        t.add_row(
            split,
            f"{s['documents']:,}",
            f"{s['bytes']:,}",
            f"{s['tokens']:,}",
            "-" if ratio is None else f"{ratio:.3f}",
        )
    console = _console()
    console.print(t)
    acct = meta.get("accounting", {})
    console.print(
        f"vocabulary {meta['tokenizer']['vocab_size']:,} (data ids 0..{meta['eod_id'] - 1}, end of document "
        f"{meta['eod_id']}, padding {meta['pad_id']}); records read {acct.get('read', 0):,}, tokenized "
        f"{acct.get('tokenized', 0):,}, rejected {acct.get('rejected', 0):,}; "
        f"{meta['bytes_per_second']:,.0f} bytes/s in {meta['seconds']['total']:.1f} s"
    )
    if meta.get("shards_reused"):
        console.print(f"resumed: {meta['shards_reused']:,} finished shards of an interrupted run reused")


# -- train / eval ---------------------------------------------------------------------------------


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train M2 (the shared transformer) on a token dataset",
        description="Train M2 on the training split of a token dataset (from `compresslm tokenize`), save it as "
        "safetensors + config.json, then evaluate it on the held-out split (bits/byte, FLOPs/byte, "
        "uniform and unigram bounds).",
    )
    p.add_argument("--tokens", required=True, help="token dataset folder")
    p.add_argument("-o", "--out", required=True, help="output folder for M2")
    p.add_argument("--size", default="tiny", help="model preset: tiny, small, 3m, base, 25m (default tiny)")
    p.add_argument("--seq-len", type=int, default=128, help="ids per example (default 128)")
    p.add_argument("--batch-size", type=int, default=16, help="examples per step (default 16)")
    p.add_argument("--train-tokens", default="200k", help="training positions, e.g. 200k, 2M (default 200k)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--eval-points", type=int, default=5, help="held-out evaluations along the way (default 5)"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--force", action="store_true", help="overwrite a model in --out")
    p.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    p.set_defaults(func=lambda a: run_guarded(_train, a))


def _train(args: argparse.Namespace) -> int:
    from compresslm.experiments.m2 import M2Config, evaluate_m2, train_m2

    max_tokens = parse_count(args.train_tokens, "--train-tokens")
    config = M2Config(
        size=args.size,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        max_tokens=max_tokens,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        eval_every_tokens=max(1, max_tokens // max(1, args.eval_points)),
    )
    model, summary = train_m2(args.tokens, config, args.out, force=args.force, progress=sys.stderr.isatty())
    result = evaluate_m2(model, args.tokens, extra={"train_seconds": summary["train_seconds"]})
    _write_json(Path(args.out) / "eval.json", result.to_dict())
    _print_eval(result, args.json)
    return 0


def _register_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="bits/byte of an M2 on the held-out split of its token dataset",
        description="Evaluate M2 on every id of the held-out split: bits/byte, bits/token, compression ratio, "
        "FLOPs/byte (2N/ratio, + 2 N_M1 for M1 schemes), the uniform bound log2(v)/ratio and the "
        "unigram bound beside it, and wall time.",
    )
    p.add_argument("--model", required=True, help="M2 folder (from `compresslm train`)")
    p.add_argument("--tokens", required=True, help="token dataset folder")
    p.add_argument("--split", default="val", help="split to evaluate (default val)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    p.set_defaults(func=lambda a: run_guarded(_eval, a))


def _eval(args: argparse.Namespace) -> int:
    from compresslm.experiments.m2 import evaluate_m2, load_m2

    _set_threads(args.threads)
    model, _ = load_m2(args.model, device=args.device)
    result = evaluate_m2(model, args.tokens, split=args.split, batch_size=args.batch_size)
    _print_eval(result, args.json)
    return 0


def _print_eval(result: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
        return
    from rich.markup import escape
    from rich.table import Table

    t = Table(
        title=escape(
            f"M2 on {result.name} ({result.split}: {result.bytes:,} bytes, {result.targets:,} targets)"
        )
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("bits/byte", f"{result.bits_per_byte:.4f}")
    t.add_row("  uniform bound log2(v)/ratio", f"{result.uniform_bits_per_byte:.4f}")
    t.add_row("  unigram bound", f"{result.unigram_bits_per_byte:.4f}")
    t.add_row("bits/token", f"{result.bits_per_token:.4f}")
    t.add_row("compression ratio (bytes/token)", f"{result.compression_ratio:.3f}")
    t.add_row("FLOPs/byte", f"{result.flops_per_byte:,.0f}")
    t.add_row(
        "M2 parameters (non-embedding / total)", f"{result.params_non_embedding:,} / {result.params_total:,}"
    )
    if result.m1_params_non_embedding:
        t.add_row("M1 parameters (non-embedding)", f"{result.m1_params_non_embedding:,}")
    t.add_row("eval wall time", f"{result.seconds:.2f} s ({result.targets_per_second:,.0f} targets/s)")
    if "train_seconds" in result.extra:
        t.add_row("train wall time", f"{result.extra['train_seconds']:.1f} s")
    _console().print(t)


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    from compresslm.data.writers import atomic_output

    with atomic_output(path, force=True) as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


# -- generate -------------------------------------------------------------------------------------


def _register_generate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="sample M2 ids after a prompt and decode them to text (through M1 for equal-info)",
        description="Encode the prompt with the dataset's tokenizer, sample M2 ids, decode them to text (the window "
        "decoder driven by M1 for EqualInfoAC) and report steps/s and bytes/step.",
    )
    p.add_argument("--model", required=True, help="M2 folder (from `compresslm train`)")
    p.add_argument("--tokenizer", required=True, help="token dataset folder (or its tokenizer/ folder)")
    p.add_argument("--prompt", default="", help="text to continue (default: empty, a new document)")
    p.add_argument("--max-steps", type=int, default=64, help="ids to sample at most (default 64)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 is greedy")
    p.add_argument("--top-k", type=int, help="sample among the k most likely ids")
    p.add_argument("--samples", type=int, default=1, help="number of samples (seeds seed..seed+N-1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's; 1 is often faster for one sample on a busy machine)",
    )
    p.add_argument("--json", action="store_true", help="print the samples as JSON")
    p.set_defaults(func=lambda a: run_guarded(_generate, a))


def _generate(args: argparse.Namespace) -> int:
    from compresslm.experiments.generate import generate, load_generation_tokenizer
    from compresslm.experiments.m2 import load_m2

    if args.samples < 1:
        raise ConfigError(f"--samples must be positive, got {args.samples}")
    _set_threads(args.threads)
    model, _ = load_m2(args.model)
    tokenizer = load_generation_tokenizer(args.tokenizer)
    samples = [
        generate(
            model,
            tokenizer,
            args.prompt,
            max_steps=args.max_steps,
            temperature=args.temperature,
            top_k=args.top_k,
            seed=args.seed + i,
        )
        for i in range(args.samples)
    ]
    if args.json:
        print(json.dumps([s.to_dict() for s in samples], indent=2))
        return 0
    for i, s in enumerate(samples):
        print(f"--- sample {i + 1} ({tokenizer.name}) ---")
        print(f"{s.prompt}{s.text if s.text is not None else ''}")
        if s.error:
            print(
                f"(the sampled ids do not decode: {s.error}; a stream scheme's sample decodes only if M2 "
                "learned the stream format)"
            )
        bps = "n/a" if s.bytes_per_step is None else f"{s.bytes_per_step:.2f}"
        print(
            f"--- {s.steps} steps ({s.stopped}), {s.bytes} bytes, {bps} bytes/step, "
            f"{s.steps_per_second:.1f} steps/s (M2), decode {s.decode_seconds * 1000:.0f} ms"
        )
    return 0


# -- study tokenization ---------------------------------------------------------------------------


def register_study(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--sizes", default="tiny,small", help="M2 size presets, comma list (default tiny,small)")
    p.add_argument("--seeds", default="1", help="N (seeds 0..N-1) or a comma list (default 1)")
    p.add_argument(
        "--key-schemes", help="schemes that get every seed (default bytes,spm,eqinfo16-256,eqinfo16-65k)"
    )
    p.add_argument("--m1", help="an M1 folder (default: train one on the training split, OUT/m1)")
    p.add_argument("--m1-size", default="tiny", help="size of the M1 trained here (default tiny)")
    p.add_argument("--m1-context", type=int, default=64, help="M1 context = max window bytes (default 64)")
    p.add_argument("--m1-tokens", default="1M", help="M1 training bytes (default 1M)")
    p.add_argument(
        "--limit-bytes", default="1M", help="corpus prefix to use, e.g. 500k, 5M (default 1M; 0: all)"
    )
    p.add_argument(
        "--val-fraction", type=float, default=0.1, help="held-out share of documents (default 0.1)"
    )
    p.add_argument("--vocab-size", type=int, default=4096, help="SentencePiece vocabulary (default 4096)")
    p.add_argument("--train-tokens", default="200k", help="M2 training positions per run (default 200k)")
    p.add_argument("--seq-len", type=int, default=128, help="M2 sequence length (default 128)")
    p.add_argument("--batch-size", type=int, default=16, help="M2 batch size (default 16)")
    p.add_argument("--lr", type=float, default=1e-3, help="M2 peak learning rate (default 1e-3)")
    p.add_argument("--workers", type=int, help="tokenization processes (default: all cores)")
    p.add_argument("--jobs", type=int, help="M2 runs at once (default: all cores on CPU, 1 on GPU)")
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads for training M1 (default: torch's; 1 on a busy machine)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--out", default="tokenization-study", help="output folder (default tokenization-study)")
    p.add_argument("--force", action="store_true", help="redo every step instead of reusing finished ones")
    p.set_defaults(func=lambda a: run_guarded(_study, a))


def study_settings(args: argparse.Namespace) -> Any:
    from compresslm.cli.study import parse_seeds
    from compresslm.experiments.tokenization_study import TokenizationStudySettings, parse_list

    limit = parse_count(args.limit_bytes, "--limit-bytes") if args.limit_bytes not in ("0", "") else None
    return TokenizationStudySettings(
        corpus=list(args.corpus),
        schemes=parse_list(args.schemes),
        sizes=parse_list(args.sizes),
        seeds=parse_seeds(args.seeds),
        key_schemes=parse_list(args.key_schemes) if args.key_schemes else None,
        m1=args.m1,
        m1_size=args.m1_size,
        m1_context=args.m1_context,
        m1_tokens=parse_count(args.m1_tokens, "--m1-tokens"),
        limit_bytes=limit,
        val_fraction=args.val_fraction,
        spm_vocab_size=args.vocab_size,
        train_tokens=parse_count(args.train_tokens, "--train-tokens"),
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        lr=args.lr,
        workers=args.workers,
        jobs=args.jobs,
        threads=args.threads,
        device=args.device,
        out=args.out,
        force=args.force,
        progress=sys.stderr.isatty(),
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

    from compresslm.experiments.tokenization_study import _HEADERS, findings, table_rows

    t = Table(title="tokenization study: held-out bits/byte")
    for i, h in enumerate(_HEADERS):
        t.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in table_rows(results):
        t.add_row(*[escape(c) for c in row])
    console = _console()
    console.print(t)
    for note in findings(results):
        console.print(f"- {escape(note)}")


def demo_step(args: argparse.Namespace) -> None:
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
