"""Token datasets for training and evaluating the transformer.

Token data lives in numpy arrays (often ``np.memmap`` files, nanoGPT style: prepared once, read
many times without loading). Two layouts:

* 1-D: one long stream of packed documents (bytes for M1 and the base model, or any token ids
  with an end-of-document id, see :func:`pack_documents`). Training samples random contiguous
  blocks of ``seq_len + 1`` tokens (inputs and next-token targets); evaluation reads sequential
  blocks that overlap by one token, so every token after the first is predicted exactly once.
* 2-D ``[n_examples, example_len]``: fixed-length examples (e.g. M2's compressed examples trimmed
  to 512 tokens and padded). Blocks are example prefixes; they never cross examples.

Targets equal to ``pad_id`` (and the padding of a short final block) get
:data:`IGNORE_INDEX`, so they count neither in the loss nor in the token count of an evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from compresslm.errors import ConfigError, DataError

IGNORE_INDEX = -100
DEFAULT_BYTE_SEPARATOR = b"\x00"


class TokenStream:
    """Integer tokens (1-D stream or 2-D examples) that yield ``(inputs, targets)`` LongTensors."""

    def __init__(self, tokens: np.ndarray, *, pad_id: int | None = None, name: str = "") -> None:
        if not isinstance(tokens, np.ndarray):
            raise ConfigError(f"TokenStream needs a numpy array or np.memmap, got {type(tokens).__name__}")
        if tokens.dtype.kind not in "ui":
            raise ConfigError(f"TokenStream needs integer tokens, got dtype {tokens.dtype}")
        if tokens.ndim not in (1, 2):
            raise ConfigError(f"TokenStream needs a 1-D stream or 2-D examples, got shape {tokens.shape}")
        self.tokens = tokens
        self.pad_id = pad_id
        self.name = name

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        dtype: str | np.dtype = "uint16",
        *,
        example_len: int | None = None,
        pad_id: int | None = None,
    ) -> TokenStream:
        """Memory-map a raw token file (no header); ``example_len`` reads it as 2-D examples."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: token file not found")
        dt = np.dtype(dtype)
        size = path.stat().st_size
        if size % dt.itemsize:
            raise DataError(f"{path}: {size} bytes is not a whole number of {dt} tokens")
        n = size // dt.itemsize
        if n == 0:
            raise DataError(f"{path}: token file is empty")
        shape: tuple[int, ...] = (n,)
        if example_len is not None:
            if n % example_len:
                raise DataError(f"{path}: {n} tokens is not a whole number of examples of {example_len}")
            shape = (n // example_len, example_len)
        return cls(np.memmap(path, dtype=dt, mode="r", shape=shape), pad_id=pad_id, name=path.stem)

    def __len__(self) -> int:
        """Number of tokens (all of them, padding included, for 2-D examples)."""
        return int(self.tokens.size)

    def __repr__(self) -> str:
        return f"TokenStream(name={self.name!r}, shape={self.tokens.shape}, dtype={self.tokens.dtype})"

    def split(self, fraction: float) -> tuple[TokenStream, TokenStream]:
        """Two contiguous parts (first ``fraction`` of the tokens or examples, then the rest): a
        held-out split that shares no tokens with the training part."""
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"split fraction must be in (0, 1), got {fraction}")
        cut = int(len(self.tokens) * fraction)
        return (
            TokenStream(self.tokens[:cut], pad_id=self.pad_id, name=f"{self.name}[:{fraction:g}]"),
            TokenStream(self.tokens[cut:], pad_id=self.pad_id, name=f"{self.name}[{fraction:g}:]"),
        )

    # -- blocks --------------------------------------------------------------------------------

    def n_blocks(self, seq_len: int) -> int:
        """Number of sequential evaluation blocks of ``seq_len`` predictions each."""
        if self.tokens.ndim == 2:
            return self.tokens.shape[0]
        return max(0, -(-(len(self.tokens) - 1) // seq_len))  # ceil((N - 1) / seq_len)

    def _block(self, i: int, seq_len: int) -> np.ndarray:
        if self.tokens.ndim == 2:
            return np.asarray(self.tokens[i, : seq_len + 1])
        return np.asarray(self.tokens[i * seq_len : i * seq_len + seq_len + 1])

    def _to_batch(self, blocks: Sequence[np.ndarray], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack blocks (each <= seq_len + 1 tokens) into inputs/targets (B, seq_len) int64."""
        fill = 0 if self.pad_id is None else self.pad_id
        inputs = np.full((len(blocks), seq_len), fill, dtype=np.int64)
        targets = np.full((len(blocks), seq_len), IGNORE_INDEX, dtype=np.int64)
        for row, block in enumerate(blocks):
            n = len(block) - 1
            if n <= 0:
                continue
            inputs[row, :n] = block[:-1]
            targets[row, :n] = block[1:]
        if self.pad_id is not None:
            targets[targets == self.pad_id] = IGNORE_INDEX
        return torch.from_numpy(inputs), torch.from_numpy(targets)

    def sample_batch(
        self, batch_size: int, seq_len: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random blocks (uniform offsets in a 1-D stream, uniform examples in 2-D); the same rng
        state gives the same batch."""
        if self.tokens.ndim == 2:
            rows = rng.integers(0, self.tokens.shape[0], size=batch_size)
            return self._to_batch([np.asarray(self.tokens[r, : seq_len + 1]) for r in rows], seq_len)
        if len(self.tokens) < seq_len + 1:
            raise DataError(
                f"token stream {self.name!r} has {len(self.tokens)} tokens, fewer than seq_len + 1 = {seq_len + 1}"
            )
        starts = rng.integers(0, len(self.tokens) - seq_len, size=batch_size)  # last start N - seq_len - 1
        return self._to_batch([np.asarray(self.tokens[s : s + seq_len + 1]) for s in starts], seq_len)

    def eval_block_ids(self, seq_len: int, max_tokens: int | None = None) -> np.ndarray:
        """The fixed set of blocks an evaluation reads: all blocks, or ``ceil(max_tokens / seq_len)``
        of them spread evenly over the data (deterministic: same data, same blocks)."""
        total = self.n_blocks(seq_len)
        if max_tokens is None:
            return np.arange(total)
        want = min(total, max(1, -(-max_tokens // seq_len)))
        return (np.arange(want, dtype=np.int64) * total) // want

    def sequential_batches(
        self, batch_size: int, seq_len: int, *, max_tokens: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of the blocks from :meth:`eval_block_ids`, in order; the last batch may be smaller."""
        ids = self.eval_block_ids(seq_len, max_tokens)
        for start in range(0, len(ids), batch_size):
            yield self._to_batch(
                [self._block(int(i), seq_len) for i in ids[start : start + batch_size]], seq_len
            )


def smallest_dtype(max_id: int) -> np.dtype:
    """uint8, uint16 or int32: the smallest dtype that holds ids 0..max_id."""
    for dt in (np.uint8, np.uint16, np.int32):
        if max_id <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ConfigError(f"token id {max_id} does not fit in int32")


def pack_documents(
    documents: Iterable[Sequence[int] | np.ndarray], eos_id: int, dtype: str | np.dtype | None = None
) -> np.ndarray:
    """Concatenate documents into one 1-D stream, each followed by ``eos_id``.

    ``dtype`` defaults to the smallest of uint8/uint16/int32 that holds every id.
    """
    parts: list[np.ndarray] = []
    eos = np.array([eos_id], dtype=np.int64)
    for doc in documents:
        parts.append(np.asarray(doc, dtype=np.int64).reshape(-1))
        parts.append(eos)
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if stream.size and stream.min() < 0:
        raise ConfigError("pack_documents: token ids must be non-negative")
    out_dtype = np.dtype(dtype) if dtype is not None else smallest_dtype(int(stream.max(initial=eos_id)))
    if stream.size and stream.max() > np.iinfo(out_dtype).max:
        raise ConfigError(f"pack_documents: id {int(stream.max())} does not fit in {out_dtype}")
    return stream.astype(out_dtype)


def bytes_to_tokens(texts: Iterable[str | bytes], separator: bytes = DEFAULT_BYTE_SEPARATOR) -> np.ndarray:
    """UTF-8 bytes of each text followed by ``separator``, as one uint8 stream (vocabulary 256).

    The default separator is a NUL byte: it never occurs in text documents, so the model learns it
    as "end of document" without confusing it with a character of the text (the window coder's
    alphabet is the 256 byte values, so there is no id above them to spare).
    """
    chunks: list[bytes] = []
    for text in texts:
        chunks.append(text.encode("utf-8") if isinstance(text, str) else bytes(text))
        chunks.append(separator)
    return np.frombuffer(b"".join(chunks), dtype=np.uint8).copy()
