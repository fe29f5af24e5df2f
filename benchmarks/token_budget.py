"""What a token budget costs: selection with ``--budget-tokens`` and a real tokenizer.json vs ``--k``.

    .venv/bin/python benchmarks/token_budget.py [--pool builtin:pool] [--targets builtin:humaneval-target]
        [--method zipfit] [--tokenizer path/to/tokenizer.json] [--budget 2M] [--repeats 1]

Without ``--tokenizer`` a byte-level BPE (GPT-2's scheme, 16,384 tokens) is trained offline on
``builtin:mixture`` first and saved under ``--out``. The same method then selects from the same pool
twice, in this one process: by count (``k`` = about as many documents as the budget selects) and by
token budget; the table gives both wall times and the budget's overhead. A second table times the
counting alone: one ``encode`` per document (how the pool counted before) against one
``encode_batch_fast`` per batch of 256 (how it counts now).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


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

    def run(spec: SelectionSpec) -> tuple[float, dict[str, float], int]:
        method = make_method(args.method, workers=args.workers, seed=0)
        t0 = time.perf_counter()
        result = run_selection(method, targets, [args.pool], spec)
        return time.perf_counter() - t0, result.seconds, len(result.selected)

    run(SelectionSpec(k=10))  # warm-up: built-in corpora, imports
    budget_runs = [
        run(SelectionSpec(budget_tokens=args.budget, tokenizer=tokenizer)) for _ in range(args.repeats)
    ]
    n_selected = budget_runs[0][2]
    k_runs = [run(SelectionSpec(k=n_selected)) for _ in range(args.repeats)]
    b, k = statistics.median(r[0] for r in budget_runs), statistics.median(r[0] for r in k_runs)
    print(f"\npool {args.pool}, method {args.method}, tokenizer {tokenizer}\n")
    print("| selection | documents | wall s | score s |")
    print("|---|---|---|---|")
    print(
        f"| --k {n_selected} | {n_selected} | {k:.1f} | {statistics.median(r[1]['score'] for r in k_runs):.1f} |"
    )
    print(
        f"| --budget-tokens {args.budget:,} | {n_selected} | {b:.1f} | "
        f"{statistics.median(r[1]['score'] for r in budget_runs):.1f} |"
    )
    print(f"\nbudget overhead: {b / k:.2f}x the time of --k")

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
