"""Synthetic JSONL pools of any size, for scale tests and the scale-out benchmark.

The built-in pools (:mod:`compresslm.data.builtin`) are real text, but drawing millions of
documents from them costs minutes. Pipeline mechanics (sharding, resuming, memory flat in N) do
not depend on what the text says, so this writes seeded word salad from a small Python-flavoured
vocabulary: two million documents in seconds, the same bytes for the same seed on every machine.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     paths = write_word_shards(Path(d), docs=10, shards=3)
...     [sum(1 for _ in open(p)) for p in paths]
[4, 3, 3]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from compresslm.data.writers import atomic_output

#: Code-like and prose-like words, so targets of Python snippets have something to align with.
WORDS = [
    "def",
    "return",
    "class",
    "import",
    "self",
    "print",
    "for",
    "in",
    "range",
    "if",
    "else",
    "while",
    "the",
    "of",
    "and",
    "to",
    "a",
    "is",
    "was",
    "with",
    "lambda",
    "yield",
    "try",
    "except",
    "finally",
    "raise",
    "from",
    "as",
    "not",
    "or",
    "None",
    "True",
    "False",
    "data",
    "value",
    "index",
]


def _domain(i: int) -> str:
    return "code" if i % 5 == 0 else "other"


def write_word_shards(
    folder: Path,
    *,
    docs: int,
    shards: int,
    seed: int = 0,
    name: str = "part-{:05d}.jsonl",
    domain: Callable[[int], str] = _domain,
    mean_log_words: float = 3.0,
) -> list[str]:
    """``docs`` records ``{"text", "domain", "n"}`` split as evenly as possible over ``shards``
    files named by ``name``; returns their paths. Document lengths are log-normal in words (median
    ``exp(mean_log_words)``), as real pools' are, not equal. A shard already present is kept (a
    rerun of a benchmark reuses its pool); each is written atomically, so a killed run never leaves
    half a shard behind."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = np.asarray(WORDS)
    per, extra = divmod(docs, shards)
    paths = []
    for s in range(shards):
        path = folder / name.format(s)
        paths.append(str(path))
        n_docs = per + (1 if s < extra else 0)
        lengths = np.maximum(2, rng.lognormal(mean_log_words, 0.8, n_docs).astype(np.int64))
        ids = rng.integers(0, len(words), int(lengths.sum()))
        if path.exists():
            continue
        tokens = words[ids].tolist()
        lines, start = [], 0
        for i, n in enumerate(lengths.tolist()):
            text = " ".join(tokens[start : start + n])
            start += n
            lines.append(json.dumps({"text": text, "domain": domain(i), "n": i}) + "\n")
        with atomic_output(path) as f:
            f.write("".join(lines))
    return paths
