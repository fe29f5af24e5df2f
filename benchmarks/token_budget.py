"""What a token budget costs: selection with ``--budget-tokens`` and a real tokenizer.json vs ``--k``.

    .venv/bin/python benchmarks/token_budget.py [--pool builtin:pool] [--targets builtin:humaneval-target]
        [--method zipfit] [--tokenizer path/to/tokenizer.json] [--budget 2M] [--repeats 1]

Without ``--tokenizer`` a byte-level BPE (GPT-2's scheme, 16,384 tokens) is trained offline on
``builtin:mixture`` first and saved under ``--out``. The same method then selects from the same pool
in this one process: by count (``k`` = as many documents as the budget selects), by token budget
counting only the documents that can still enter the budget (the pipeline's way), and by token
budget counting every document (the previous way); repeats interleave the three. A second table times the
counting alone: one ``encode`` per document (how the pool counted before) against one
``encode_batch_fast`` per batch of 256 (how it counts now).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def train_tokenizer(path: Path, docs: int = 4000, vocab: int = 16_384) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from compresslm.data.builtin import generic_mixture

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator((r.text for r in generic_mixture(docs)), trainer=trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", default="builtin:pool")
    ap.add_argument("--targets", default="builtin:humaneval-target")
    ap.add_argument("--method", default="zipfit")
    ap.add_argument("--tokenizer", help="a Hugging Face tokenizer.json (default: train one, see above)")
    ap.add_argument("--budget", type=int, default=2_000_000, help="token budget")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--out", default="bench-out/token_budget")
    args = ap.parse_args(argv)

    from compresslm.select.methods import make_method
    from compresslm.select.pipeline import SelectionSpec, load_targets, run_selection
    from compresslm.select.pool import ReadOptions, SourcePool
    from compresslm.select.tokens import get_token_counter

    tokenizer = args.tokenizer
    if tokenizer is None:
        tokenizer = str(Path(args.out) / "bpe16k" / "tokenizer.json")
        if not Path(tokenizer).is_file():
            t0 = time.perf_counter()
            train_tokenizer(Path(tokenizer))
            print(f"trained {tokenizer} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    targets = load_targets([args.targets], ReadOptions())

    import compresslm.select.pipeline as pipeline

    lazy_pool = pipeline.SourcePool

    def count_all(*a: Any, **kw: Any) -> SourcePool:
        # The previous path: every document counted (batched) in the scoring pass.
        return lazy_pool(*a, **{**kw, "defer_sizes": False})

    def run(spec: SelectionSpec, every_document: bool = False) -> tuple[float, dict[str, float], int]:
        method = make_method(args.method, workers=args.workers, seed=0)
        pipeline.SourcePool = count_all if every_document else lazy_pool  # type: ignore[assignment,misc]
        try:
            t0 = time.perf_counter()
            result = run_selection(method, targets, [args.pool], spec)
            return time.perf_counter() - t0, result.seconds, len(result.selected)
        finally:
            pipeline.SourcePool = lazy_pool  # type: ignore[misc]

    run(SelectionSpec(k=10))  # warm-up: built-in corpora, imports
    budget = SelectionSpec(budget_tokens=args.budget, tokenizer=tokenizer)
    rows: dict[str, list[tuple[float, dict[str, float], int]]] = {"k": [], "lazy": [], "all": []}
    n_selected = run(budget)[2]  # warm-up of the tokenizer, and the document count for --k
    for _ in range(args.repeats):  # interleaved, so load changes hit every row alike
        rows["k"].append(run(SelectionSpec(k=n_selected)))
        rows["lazy"].append(run(budget))
        rows["all"].append(run(budget, every_document=True))
    wall = {name: statistics.median(r[0] for r in runs) for name, runs in rows.items()}
    score = {name: statistics.median(r[1]["score"] for r in runs) for name, runs in rows.items()}
    print(
        f"\npool {args.pool}, method {args.method}, tokenizer {tokenizer}, {args.repeats} repeats (median)\n"
    )
    print("| selection | documents | wall s | score s | × --k |")
    print("|---|---|---|---|---|")
    labels = {
        "k": f"--k {n_selected}",
        "all": f"--budget-tokens {args.budget:,}, every document counted (before)",
        "lazy": f"--budget-tokens {args.budget:,}, candidates counted (now)",
    }
    for name in ("k", "all", "lazy"):
        print(
            f"| {labels[name]} | {n_selected} | {wall[name]:.1f} | {score[name]:.1f} | {wall[name] / wall['k']:.2f} |"
        )

    counter = get_token_counter(tokenizer)
    texts = [t for batch in SourcePool([args.pool], ReadOptions())() for _, t in batch]
    t0 = time.perf_counter()
    one = [counter(t) for t in texts]
    per_doc = time.perf_counter() - t0
    t0 = time.perf_counter()
    many = [int(x) for i in range(0, len(texts), 256) for x in counter.count_many(texts[i : i + 256])]
    batched = time.perf_counter() - t0
    assert one == many, "batched counts differ from per-document counts"
    print(f"\n| counting {len(texts):,} documents ({sum(one):,} tokens) | s |")
    print("|---|---|")
    print(f"| one encode per document | {per_doc:.2f} |")
    print(f"| encode_batch_fast per 256 documents | {batched:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
