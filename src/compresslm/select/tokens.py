"""Measuring documents in budget units: tokens of a local tokenizer, whitespace words, or bytes.

The ZIP-FIT paper selects by *token* budget, counted with the fine-tuned model's tokenizer. Any
Hugging Face ``tokenizer.json`` works here (loaded with the ``tokenizers`` library, offline);
without one, budgets count whitespace-separated words, and ``--budget-bytes`` counts UTF-8 bytes.

A counter is a callable ``counter(text) -> int``; ``count_many`` does the same for a batch (the
Rust tokenizer parallelises it) and ``truncate(text, n)`` returns a prefix of ``text`` of at most
``n`` units, for the document a budget cuts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from compresslm.errors import ConfigError

_WORD = re.compile(r"\S+")


@runtime_checkable
class TokenCounter(Protocol):
    """Counts a text in one unit; ``truncate`` never returns more than ``n`` units."""

    name: str
    unit: str

    def __call__(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> np.ndarray: ...

    def truncate(self, text: str, n: int) -> str: ...


class _Counter:
    name = ""
    unit = ""

    def __call__(self, text: str) -> int:
        raise NotImplementedError

    def count_many(self, texts: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self, texts), np.int64, len(texts))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class WordCounter(_Counter):
    """Whitespace-separated words (``len(text.split())``), the budget unit without a tokenizer."""

    name = "whitespace"
    unit = "words"

    def __call__(self, text: str) -> int:
        return len(text.split())

    def truncate(self, text: str, n: int) -> str:
        """The text up to the end of its ``n``-th word (original spacing kept)."""
        if n <= 0:
            return ""
        end = 0
        for count, match in enumerate(_WORD.finditer(text), start=1):
            end = match.end()
            if count == n:
                return text[:end]
        return text


class ByteCounter(_Counter):
    """UTF-8 bytes, for ``--budget-bytes``."""

    name = "bytes"
    unit = "bytes"

    def __call__(self, text: str) -> int:
        return len(text.encode("utf-8"))

    def truncate(self, text: str, n: int) -> str:
        """The longest prefix of at most ``n`` bytes that ends on a character boundary."""
        data = text.encode("utf-8")
        if len(data) <= n:
            return text
        return data[: max(n, 0)].decode("utf-8", errors="ignore")


class HFTokenCounter(_Counter):
    """Tokens of a Hugging Face ``tokenizer.json``, without special tokens (BOS/EOS are not text)."""

    unit = "tokens"

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer

        p = Path(path)
        if p.is_dir():
            p = p / "tokenizer.json"
        if not p.is_file():
            raise ConfigError(f"--tokenizer {path}: no such file (expected a Hugging Face tokenizer.json)")
        try:
            self._tokenizer = Tokenizer.from_file(str(p))
        except Exception as exc:  # the library raises a bare Exception on malformed files
            raise ConfigError(f"--tokenizer {path}: not a readable tokenizer.json ({exc})") from None
        self.name = str(p)

    def __call__(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def count_many(self, texts: Sequence[str]) -> np.ndarray:
        """One call for the batch: the Rust tokenizer encodes it in its own threads, and the fast
        variant (tokenizers >= 0.20) skips the character offsets that counting does not need."""
        encode = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        encodings = encode(list(texts), add_special_tokens=False)
        return np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))

    def truncate(self, text: str, n: int) -> str:
        """Cut after the ``n``-th token, then back off while re-tokenising gives more than ``n``."""
        if n <= 0:
            return ""
        offsets = self._tokenizer.encode(text, add_special_tokens=False).offsets
        if len(offsets) <= n:
            return text
        # Tokenisation is not prefix-stable in general (a cut can split a merge), hence the check.
        for k in range(n, 0, -1):
            prefix = text[: offsets[k - 1][1]]
            if self(prefix) <= n:
                return prefix
        return ""


def get_token_counter(tokenizer: str | Path | None, unit: str = "tokens") -> TokenCounter:
    """The counter for a budget: ``unit`` is ``"tokens"`` (``tokenizer`` = path to a tokenizer.json,
    or ``None`` for whitespace words), ``"words"`` or ``"bytes"``."""
    if unit == "bytes":
        if tokenizer is not None:
            raise ConfigError("--budget-bytes counts bytes; it cannot be combined with --tokenizer")
        return ByteCounter()
    if unit == "words":
        if tokenizer is not None:
            raise ConfigError("a word budget cannot be combined with --tokenizer")
        return WordCounter()
    if unit != "tokens":
        raise ConfigError(f"unknown budget unit '{unit}' (choose from: tokens, words, bytes)")
    return WordCounter() if tokenizer is None else HFTokenCounter(tokenizer)
