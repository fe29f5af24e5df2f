"""One arithmetic-coded stream per chunk, for StaticAC and AC: constriction's range coder with our
14-bit quantised distributions, framed so that the ids alone say where each chunk ends.

Why constriction: it is a well-kept Rust entropy-coding library whose range coder is exact integer
arithmetic (encode and decode agree bit for bit given the same float probabilities) and codes a whole
chunk in one vectorised call. Its output is a sequence of 32-bit words; a chunk is framed as

    [header word: n_bytes << 16 | n_words] [n_words words of the range coder]

written big-endian (MSB-first) as 8- or 16-bit ids, so a chunk is a whole number of ids at both widths.
The header costs 32 bits per 10,240-byte chunk (0.003 bits/byte) plus the coder's own termination
(at most two words); the paper's coder (TensorFlow Compression) also emits whole bytes and relies on
the decoder knowing the length. ``n_bytes`` and ``n_words`` must each fit in 16 bits, so chunks are
at most 65,535 bytes.

Probabilities are quantised the way the window coder does it (docs/design.md#frequencies): ``f_s = 1 + floor(p_s *
(2^P - 256))``, every symbol at least ``2^-P`` (P = 14), and ``f / sum(f)`` is what constriction sees.
"""

from __future__ import annotations

import numpy as np

from compresslm.coding.packing import bytes_to_ids, ids_to_bytes
from compresslm.errors import ConfigError, DataError

PRECISION = 14
MAX_FIELD = (1 << 16) - 1


def quantize(probs: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Integer frequencies ``1 + floor(p * (2^P - 256))`` over the last axis (256 symbols), float64
    normalised: the exact distribution the coder uses."""
    p = np.asarray(probs, dtype=np.float64)
    f = 1.0 + np.floor(p * ((1 << precision) - p.shape[-1]))
    return f / f.sum(axis=-1, keepdims=True)


def _family():  # type: ignore[no-untyped-def]
    import constriction

    return constriction.stream.model.Categorical(perfect=False)


def encode_stream(symbols: np.ndarray, probs: np.ndarray, token_bits: int) -> np.ndarray:
    """Ids of one framed chunk. ``probs`` is (256,) for a static model or (n, 256), one row per symbol."""
    import constriction

    n = len(symbols)
    if n > MAX_FIELD:
        raise ConfigError(f"a coded chunk holds at most {MAX_FIELD} bytes, got {n}")
    encoder = constriction.stream.queue.RangeEncoder()
    if n:
        sym = np.asarray(symbols, dtype=np.int32)
        if probs.ndim == 1:
            encoder.encode(sym, constriction.stream.model.Categorical(probs, perfect=False))
        else:
            encoder.encode(sym, _family(), np.ascontiguousarray(probs, dtype=np.float64))
    words = encoder.get_compressed()
    if len(words) > MAX_FIELD:
        raise ConfigError(f"chunk of {n} bytes coded to {len(words)} words, more than the frame allows")
    header = np.array([(n << 16) | len(words)], dtype=np.uint32)
    return bytes_to_ids(np.concatenate([header, words]).astype(">u4").tobytes(), token_bits)


#: No byte costs less than -log2(16129 / 16384) = 0.0227 bits under 14-bit quantisation, so a frame of
#: w words holds at most 32 w / 0.02 bytes: a bound that rejects random ids before a long decode.
MIN_BITS_PER_BYTE = 0.02


def read_frame(ids: np.ndarray, token_bits: int, max_bytes: int | None = None) -> tuple[int, np.ndarray, int]:
    """(n_bytes, coder words, ids used) of the framed chunk at the start of ``ids``; DataError when
    the header is impossible (more than ``max_bytes``, or more bytes than the words can hold)."""
    per_word = 32 // token_bits
    if len(ids) < per_word:
        raise DataError("coded chunk truncated: no header")
    (header,) = np.frombuffer(ids_to_bytes(ids[:per_word], token_bits), dtype=">u4")
    n_bytes, n_words = int(header) >> 16, int(header) & MAX_FIELD
    used = per_word * (1 + n_words)
    if len(ids) < used:
        raise DataError(
            f"coded chunk truncated: header announces {n_words} words, {len(ids) // per_word - 1} left"
        )
    if (max_bytes is not None and n_bytes > max_bytes) or n_bytes * MIN_BITS_PER_BYTE > 32 * n_words + 64:
        raise DataError(f"coded chunk header is impossible: {n_bytes} bytes in {n_words} words")
    words = np.frombuffer(ids_to_bytes(ids[per_word:used], token_bits), dtype=">u4").astype(np.uint32)
    return n_bytes, words, used


class StreamDecoder:
    """Decodes one framed chunk symbol by symbol (AC, whose next distribution depends on the past)
    or all at once (a static model)."""

    def __init__(self, words: np.ndarray) -> None:
        import constriction

        self._decoder = constriction.stream.queue.RangeDecoder(np.ascontiguousarray(words, dtype=np.uint32))

    def decode_static(self, probs: np.ndarray, n: int) -> np.ndarray:
        import constriction

        if n == 0:
            return np.zeros(0, dtype=np.int64)
        model = constriction.stream.model.Categorical(np.asarray(probs, dtype=np.float64), perfect=False)
        return np.asarray(self._decoder.decode(model, n), dtype=np.int64)

    def decode_rows(self, probs: np.ndarray) -> np.ndarray:
        """Symbols for the distributions ``probs`` (n, 256), one per row, in order."""
        return np.asarray(
            self._decoder.decode(_family(), np.ascontiguousarray(probs, dtype=np.float64)), dtype=np.int64
        )
