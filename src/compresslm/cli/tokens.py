"""`compresslm tokenize`, `train`, `eval` and `generate`: token datasets for every scheme, M2 on
them, its bits/byte, and samples decoded through M1 (thin wrappers over
:mod:`compresslm.tokenizers` and :mod:`compresslm.m2`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from compresslm.cli.common import (
    add_device_option,
    add_progress_option,
    add_read_options,
    add_threads_option,
    at_least,
    count,
    fraction,
    model_size,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    rich_console,
    run_guarded,
    set_threads,
)
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
        "--window-bits",
        type=positive_int,
        help="equal-info: bits per window b (16, 24, 32, 64, 128; default 16)",
    )
    p.add_argument(
        "--token-bits",
        type=int,
        choices=[8, 16],
        help="bits per token: 8 (v=256) or 16 (v=65,536) (default: the scheme's own)",
    )
    p.add_argument(
        "--model",
        help="M1 folder (from `compresslm m1 train`) for ac and equal-info (default: the shipped M1)",
    )
    p.add_argument("--vocab-size", type=at_least(2), help="spm: vocabulary size (default 8192)")
    p.add_argument(
        "--chunk-bytes",
        type=count,
        default=10_240,
        help="bytes per independently coded chunk, e.g. 10240 or 10k (default 10240)",
    )
    p.add_argument(
        "--val-fraction",
        type=fraction,
        default=0.05,
        help="share of documents held out (by a hash of the id: same documents for every scheme; "
        "`train` needs some, default 0.05)",
    )
    p.add_argument(
        "--limit-bytes",
        type=count,
        help="only the first documents up to this many bytes, e.g. 2M (default: all)",
    )
    p.add_argument("--workers", type=positive_int, help="processes (default: all cores)")
    p.add_argument(
        "--shard-bytes",
        type=count,
        help="documents per unit of work and of resumption, in bytes, e.g. 256k (default 2 MiB; "
        "workers take whole shards, so a corpus of one shard runs on one core)",
    )
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="where shards are tokenized: this machine's processes (local, default) or a Ray cluster "
        "through Ray Data (ray: shards are spilled to --out, so it must be on storage every node sees)",
    )
    p.add_argument(
        "--ray-address",
        help="Ray cluster to use (default: $RAY_ADDRESS, else a local Ray started and stopped here)",
    )
    p.add_argument("--num-cpus", type=positive_float, default=1, help="CPUs per Ray worker (default 1)")
    p.add_argument("--force", action="store_true", help="replace an existing dataset in --out")
    add_progress_option(p)
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
        limit_bytes=args.limit_bytes,
        progress=not args.no_progress,
        engine=args.engine,
        ray_address=args.ray_address,
        num_cpus=args.num_cpus,
        **({"shard_bytes": args.shard_bytes} if args.shard_bytes else {}),
    )
    if args.ray_address and args.engine != "ray":
        raise ConfigError("--ray-address needs --engine ray")
    check_not_input([args.out], args.corpus)
    read_kwargs = _read_kwargs(args)

    def records() -> Any:
        return read_records(args.corpus, **read_kwargs)

    from compresslm.select.parallel import sigterm_as_interrupt

    with sigterm_as_interrupt():
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
    # Every record read is tokenized, rejected or past --limit-bytes: say all three, so the counts add up.
    beyond = acct.get("beyond --limit-bytes", 0)
    console.print(
        f"vocabulary {meta['tokenizer']['vocab_size']:,} (data ids 0..{meta['eod_id'] - 1}, end of document "
        f"{meta['eod_id']}, padding {meta['pad_id']}); records read {acct.get('read', 0):,}, tokenized "
        f"{acct.get('tokenized', 0):,}, rejected {acct.get('rejected', 0):,}"
        + (f", beyond --limit-bytes {beyond:,}" if beyond else "")
        + f"; {meta['bytes_per_second']:,.0f} bytes/s in {meta['seconds']['total']:.1f} s"
    )
    if meta.get("shards_reused"):
        console.print(f"resumed: {meta['shards_reused']:,} finished shards of an interrupted run reused")


# -- train / eval ---------------------------------------------------------------------------------


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train M2 (the shared transformer) on a token dataset",
        description="Train M2 on the training split of a token dataset (from `compresslm tokenize`), evaluate it "
        "on the held-out split (bits/byte, FLOPs/byte, uniform and unigram bounds), then save it as "
        "safetensors + config.json with eval.json: a run that fails or is interrupted leaves no model.",
    )
    p.add_argument("--tokens", required=True, help="token dataset folder (from `compresslm tokenize`)")
    p.add_argument("-o", "--out", required=True, help="output folder for M2")
    p.add_argument("--size", type=model_size, default="tiny", help="model preset: tiny, small, 3m, base, 25m")
    p.add_argument("--seq-len", type=at_least(2), default=128, help="ids per example")
    p.add_argument("--batch-size", type=positive_int, default=16, help="examples per step")
    p.add_argument("--train-tokens", type=count, default="200k", help="training positions, e.g. 200k, 2M")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate")
    p.add_argument("--seed", type=non_negative_int, default=0, help="initialisation and data-order seed")
    p.add_argument("--eval-points", type=positive_int, default=5, help="held-out evaluations along the way")
    add_device_option(p)
    add_threads_option(p)
    p.add_argument("--force", action="store_true", help="overwrite a model in --out")
    add_progress_option(p)
    p.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    p.set_defaults(func=lambda a: run_guarded(_train, a))


def _train(args: argparse.Namespace) -> int:
    from compresslm.m2 import M2Config
    from compresslm.m2.train import train_and_evaluate

    config = M2Config(
        size=args.size,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        max_tokens=args.train_tokens,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        eval_every_tokens=max(1, args.train_tokens // args.eval_points),
    )
    _, _, result = train_and_evaluate(
        args.tokens, config, args.out, force=args.force, progress=not args.no_progress
    )
    _print_eval(result, args.json)
    return 0


def _register_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="bits/byte of an M2 on the held-out split of its token dataset",
        description="Evaluate M2 on every id of the held-out split: bits/byte, bits/token, compression ratio, "
        "FLOPs/byte (2N/ratio, + 2 N_M1 for M1 schemes), the uniform bound log2(v)/ratio and the "
        "unigram bound beside it, and wall time. The dataset's tokenizer must be the one M2 was "
        "trained on.",
    )
    p.add_argument("--model", required=True, help="M2 folder (from `compresslm train`)")
    p.add_argument(
        "--tokens", help="token dataset folder (default: the one M2 was trained on, recorded in it)"
    )
    p.add_argument("--split", default="val", help="split to evaluate")
    p.add_argument("--batch-size", type=positive_int, default=32, help="examples per forward pass")
    add_device_option(p)
    add_threads_option(p)
    p.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    p.set_defaults(func=lambda a: run_guarded(_eval, a))


def _eval(args: argparse.Namespace) -> int:
    from compresslm.m2 import evaluate_m2, load_m2
    from compresslm.m2.train import check_tokenizer, dataset_tokenizer_identity
    from compresslm.models.train import resolve_device
    from compresslm.tokenizers.dataset import TokenDataset

    set_threads(args.threads)
    model, summary = load_m2(args.model, device=str(resolve_device(args.device)))
    ds = TokenDataset(_dataset_of(args.tokens, summary, args.model))
    check_tokenizer(summary, dataset_tokenizer_identity(ds), model=args.model, tokenizer=str(ds.directory))
    result = evaluate_m2(model, ds, split=args.split, batch_size=args.batch_size)
    _print_eval(result, args.json)
    return 0


def _dataset_of(given: str | None, summary: dict[str, Any], model: str) -> str:
    """``--tokens`` if given, else the dataset recorded in the M2 (an error if neither is known)."""
    if given:
        return given
    recorded = summary.get("dataset")
    if not recorded:
        raise ConfigError(f"{model} does not record its token dataset: pass --tokens")
    if not Path(recorded).is_dir():
        raise ConfigError(f"{model} was trained on {recorded}, which is not here: pass --tokens")
    return str(recorded)


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


# -- generate -------------------------------------------------------------------------------------


def _register_generate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="sample M2 ids after a prompt and decode them to text (through M1 for equal-info)",
        description="Encode the prompt with the dataset's tokenizer, sample M2 ids, decode them to text (the window "
        "decoder driven by M1 for EqualInfoAC) and report steps/s and bytes/step. The tokenizer must "
        "be the one M2 was trained on.",
    )
    p.add_argument("--model", required=True, help="M2 folder (from `compresslm train`)")
    p.add_argument(
        "--tokens",
        help="token dataset folder, or its tokenizer/ folder (default: the dataset M2 was trained on, "
        "recorded in it)",
    )
    p.add_argument("--prompt", default="", help="text to continue (default: empty, a new document)")
    p.add_argument("--max-steps", type=positive_int, default=64, help="ids to sample at most")
    p.add_argument(
        "--temperature", type=non_negative_float, default=1.0, help="sampling temperature; 0 is greedy"
    )
    p.add_argument("--top-k", type=positive_int, help="sample among the k most likely ids (default: all)")
    p.add_argument("--samples", type=positive_int, default=1, help="number of samples (seeds seed..seed+N-1)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the first sample")
    add_threads_option(p)
    p.add_argument("--json", action="store_true", help="print the samples as JSON")
    p.set_defaults(func=lambda a: run_guarded(_generate, a))


def _generate(args: argparse.Namespace) -> int:
    from compresslm.m2 import generate, load_generation_tokenizer, load_m2
    from compresslm.m2.train import check_tokenizer
    from compresslm.tokenizers.dataset import TOKENIZER_DIR
    from compresslm.tokenizers.registry import tokenizer_identity

    set_threads(args.threads)
    model, summary = load_m2(args.model)
    where = Path(_dataset_of(args.tokens, summary, args.model))
    folder = where / TOKENIZER_DIR if (where / TOKENIZER_DIR).is_dir() else where
    check_tokenizer(summary, tokenizer_identity(folder), model=args.model, tokenizer=str(where))
    tokenizer = load_generation_tokenizer(where)
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
