"""StaticAC[v]: arithmetic coding of each chunk with a static byte-unigram model estimated from the
training corpus (the paper's §3.3 control: M1 replaced by p(x_i) alone; its output is as unlearnable
as full AC's, which puts the blame on the coding, not on the model)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compresslm.errors import ConfigError
from compresslm.tokenizers.base import CHUNK_BYTES, ChunkedTokenizer
from compresslm.tokenizers.stream import PRECISION, StreamDecoder, encode_stream, quantize, read_frame

if TYPE_CHECKING:
    from compresslm.tokenizers.registry import SchemeSpec


def byte_counts(texts: Iterable[str | bytes]) -> np.ndarray:
    """Occurrences of each byte value over ``texts`` (UTF-8), int64 (256,)."""
    counts = np.zeros(256, dtype=np.int64)
    for text in texts:
        data = text.encode("utf-8") if isinstance(text, str) else text
        counts += np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    return counts


class StaticACTokenizer(ChunkedTokenizer):
    scheme = "static-ac"

    def __init__(
        self,
        counts: Iterable[int],
        token_bits: int = 8,
        chunk_bytes: int = CHUNK_BYTES,
        precision: int = PRECISION,
    ) -> None:
        super().__init__(token_bits, chunk_bytes)
        arr = np.asarray(list(counts), dtype=np.int64)
        if arr.shape != (256,) or arr.min() < 0 or arr.sum() <= 0:
            raise ConfigError("StaticAC needs 256 non-negative byte counts with a positive total")
        self.counts = arr
        self.precision = precision
        self.probs = quantize(arr / arr.sum(), precision)  # every byte >= 2^-P: any input codes

    @classmethod
    def train(cls, texts: Iterable[str | bytes], token_bits: int = 8, **kwargs: Any) -> StaticACTokenizer:
        return cls(byte_counts(texts), token_bits, **kwargs)

    @classmethod
    def build(
        cls, spec: SchemeSpec, *, texts: Callable[[], Iterable[str]] | None = None, **_: Any
    ) -> StaticACTokenizer:
        assert texts is not None, "the registry passes the training texts"
        return cls.train(texts(), spec.token_bits, chunk_bytes=spec.chunk_bytes)

    @classmethod
    def load(cls, directory: str | Path, config: dict[str, Any], **_: Any) -> StaticACTokenizer:
        return cls(config["counts"], config["token_bits"], config["chunk_bytes"], config["precision"])

    @property
    def name(self) -> str:
        return f"StaticAC[v={self.v_label}]"

    def encode_chunk(self, chunk: bytes) -> np.ndarray:
        return encode_stream(np.frombuffer(chunk, dtype=np.uint8), self.probs, self.token_bits)

    def decode_chunk(self, ids: np.ndarray) -> tuple[bytes, int]:
        n, words, used = read_frame(ids, self.token_bits, self.chunk_bytes)
        symbols = StreamDecoder(words).decode_static(self.probs, n)
        return symbols.astype(np.uint8).tobytes(), used

    def entropy_bits_per_byte(self) -> float:
        """Cross-entropy of the training bytes under the quantised model: the rate this coder achieves."""
        p = self.counts / self.counts.sum()
        return float(-(p[p > 0] * np.log2(self.probs[p > 0])).sum())

    def config(self) -> dict[str, Any]:
        return {**super().config(), "precision": self.precision, "counts": self.counts.tolist()}
