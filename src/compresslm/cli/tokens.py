"""`compresslm tokenize`, `train`, `eval` and `generate`: token datasets for every scheme, M2 on
them, its bits/byte, and samples decoded through M1 (thin wrappers over
:mod:`compresslm.tokenizers` and :mod:`compresslm.m2`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from compresslm.cli.common import add_read_options, parse_count, rich_console, run_guarded
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
    from compresslm.data.writers import check_not_input
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
    check_not_input([args.out], args.corpus)
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
    console = rich_console()
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
    from compresslm.m2 import M2Config, evaluate_m2, train_m2

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
    from compresslm.m2 import evaluate_m2, load_m2

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
    rich_console().print(t)


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
    from compresslm.m2 import generate, load_generation_tokenizer, load_m2

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
