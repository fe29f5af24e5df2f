"""The subword baseline: a SentencePiece unigram model (the T5 vocabulary's kind) trained on the corpus.

Trained for exact round trips, which SentencePiece's defaults do not give: identity normalisation (no
NFKC), no dummy prefix, whitespace kept as is (runs of spaces and newlines are pieces, so code
indentation compresses), byte fallback for any character outside the vocabulary (``<unk>`` is never
produced). The model file is SentencePiece's own protobuf (``spm.model``), not a pickle.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compresslm.errors import ConfigError, DataError, IntegrityError
from compresslm.tokenizers.base import Ids, Tokenizer

if TYPE_CHECKING:
    from compresslm.tokenizers.registry import SchemeSpec

MODEL_FILE = "spm.model"
DEFAULT_VOCAB_SIZE = 8192
#: Training "sentences" are documents cut at line ends into pieces of at most this many characters
#: (SentencePiece drops longer sentences; pieces never cross whitespace, so nothing is lost).
_SENTENCE_CHARS = 4096


def _sentences(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        start = 0
        while start < len(text):
            end = min(len(text), start + _SENTENCE_CHARS)
            if end < len(text):
                cut = text.rfind("\n", start, end)
                end = cut + 1 if cut > start else end
            yield text[start:end]
            start = end


class SentencePieceTokenizer(Tokenizer):
    scheme = "spm"

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        *,
        max_sentences: int = 2_000_000,
        threads: int | None = None,
    ) -> SentencePieceTokenizer:
        """Train a unigram model of at most ``vocab_size`` pieces (including 256 byte pieces and
        ``<unk>``); a corpus too small for that many gets fewer."""
        import sentencepiece as spm

        if vocab_size < 260:
            raise ConfigError(
                f"SentencePiece vocab size must be at least 260 (256 byte pieces + 4), got {vocab_size}"
            )
        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_sentences(texts),
                model_writer=buf,
                vocab_size=vocab_size,
                hard_vocab_limit=False,  # a small corpus gets the pieces it supports (see data_vocab_size)
                model_type="unigram",
                byte_fallback=True,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                allow_whitespace_only_pieces=True,
                split_digits=False,
                character_coverage=0.9995,  # rarer characters fall back to byte pieces
                user_defined_symbols=["\n"],
                max_sentence_length=_SENTENCE_CHARS * 4 + 16,
                input_sentence_size=max_sentences,
                shuffle_input_sentence=True,
                num_threads=threads or os.cpu_count() or 1,
                unk_id=0,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                minloglevel=2,
            )
        except RuntimeError as exc:  # e.g. "Vocabulary size is too high" for a small corpus
            raise ConfigError(f"SentencePiece training failed (vocab size {vocab_size}): {exc}") from exc
        return cls(buf.getvalue())

    @classmethod
    def build(
        cls, spec: SchemeSpec, *, texts: Callable[[], Iterable[str]] | None = None, **_: Any
    ) -> SentencePieceTokenizer:
        assert texts is not None, "the registry passes the training texts"
        return cls.train(texts(), spec.spm_vocab_size or DEFAULT_VOCAB_SIZE)

    @classmethod
    def load(cls, directory: str | Path, config: dict[str, Any], **_: Any) -> SentencePieceTokenizer:
        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise ConfigError(f"{path}: SentencePiece model missing")
        proto = path.read_bytes()
        digest = hashlib.sha256(proto).hexdigest()
        if config.get("sha256") not in (None, digest):
            raise IntegrityError(f"{path}: sha256 {digest} does not match the tokenizer config")
        return cls(proto)

    @property
    def data_vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    @property
    def name(self) -> str:
        return f"SentencePiece[{self.data_vocab_size}]"

    def encode_bytes(self, data: bytes) -> np.ndarray:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.name}: input is not UTF-8: {exc}") from exc
        return np.asarray(self._sp.encode(text), dtype=self.dtype)

    def decode_bytes(self, ids: Ids) -> bytes:
        arr = self._check_ids(ids, skip_special=False)
        return self._sp.decode(arr.tolist()).encode("utf-8")

    def config(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "vocab_size": self.data_vocab_size,
            "sha256": hashlib.sha256(self.model_proto).hexdigest(),
        }

    def save(self, directory: str | Path) -> None:
        from compresslm.data.writers import atomic_output

        with atomic_output(Path(directory) / MODEL_FILE, mode="wb", force=True) as f:
            f.write(self.model_proto)
