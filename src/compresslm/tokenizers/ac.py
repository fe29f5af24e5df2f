"""AC[v]: each 10,240-byte chunk arithmetic-coded as ONE stream under M1's next-byte distributions
(the paper's plain AC baseline, §2.2), cut into 8- or 16-bit ids. Its output is near-uniform and the
paper finds it unlearnable: M2 stays at the uniform bound log2(v) / ratio.

M1 context: the paper's M1 has relative positions and reads the whole chunk; ours has learned
absolute positions, so M1 reads the chunk in blocks of its context length (``m1_context`` bytes,
each block restarting from BOS), while the arithmetic-coded stream runs through the whole chunk.
Probabilities come from the same deterministic M1 path as the window coder (``M1Session``) and are
quantised to 14 bits; the stream coder and its framing are :mod:`compresslm.tokenizers.stream`.

Encoding runs every block of every chunk as one batched row; decoding is sequential (each byte's
distribution needs the bytes before it), one M1 step per byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compresslm.coding.window_coder import DEFAULT_BATCH_ROWS
from compresslm.errors import ConfigError
from compresslm.tokenizers.base import CHUNK_BYTES, ChunkedTokenizer
from compresslm.tokenizers.m1_support import load_m1, load_saved_m1, m1_config, probabilities, save_m1
from compresslm.tokenizers.stream import StreamDecoder, encode_stream, read_frame

if TYPE_CHECKING:
    from compresslm.coding.m1 import M1
    from compresslm.tokenizers.registry import SchemeSpec


class ACTokenizer(ChunkedTokenizer):
    scheme = "ac"
    uses_m1 = True

    def __init__(
        self,
        m1: M1,
        token_bits: int = 8,
        chunk_bytes: int = CHUNK_BYTES,
        *,
        context: int | None = None,
        batch_size: int = DEFAULT_BATCH_ROWS,
        saved_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(token_bits, chunk_bytes)
        self.m1 = m1
        self.context = context or m1.max_context
        if not 1 <= self.context <= m1.max_context:
            raise ConfigError(f"AC context must be in 1..{m1.max_context} (M1's context), got {self.context}")
        self.batch_size = batch_size
        self._saved_config = saved_config

    @classmethod
    def from_checkpoint(
        cls, m1_dir: str | Path, token_bits: int = 8, *, threads: int | None = 1, **kwargs: Any
    ) -> ACTokenizer:
        return cls(load_m1(m1_dir, threads=threads), token_bits, **kwargs)

    @classmethod
    def build(
        cls, spec: SchemeSpec, *, texts: Any = None, m1: str | Path | None = None, **m1_options: Any
    ) -> ACTokenizer:
        assert m1 is not None, "the registry passes the M1 checkpoint"
        return cls.from_checkpoint(m1, spec.token_bits, chunk_bytes=spec.chunk_bytes, **m1_options)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        config: dict[str, Any],
        *,
        threads: int | None = 1,
        batch_size: int = DEFAULT_BATCH_ROWS,
    ) -> ACTokenizer:
        m1 = load_saved_m1(directory, config, config["context"], threads=threads)
        return cls(
            m1,
            config["token_bits"],
            config["chunk_bytes"],
            context=config["context"],
            batch_size=batch_size,
            saved_config=config,
        )

    @property
    def name(self) -> str:
        return f"AC[v={self.v_label}]"

    # -- M1 tables -------------------------------------------------------------------------------

    def block_probabilities(self, blocks: Sequence[bytes]) -> list[np.ndarray]:
        """(len(block), 256) distributions of each block's bytes, each block from a fresh context."""
        from compresslm.coding.window_coder import IDLE, START

        out: list[np.ndarray] = []
        for g in range(0, len(blocks), self.batch_size):
            group = blocks[g : g + self.batch_size]
            session = self.m1.session(len(group), self.context)
            tables: list[list[np.ndarray]] = [[] for _ in group]
            for t in range(max(len(b) for b in group)):
                tokens = np.array(
                    [START if t == 0 else (b[t - 1] if t < len(b) else IDLE) for b in group], dtype=np.int64
                )
                cum = session.step(tokens)
                for r, b in enumerate(group):
                    if t < len(b):
                        tables[r].append(cum[r])
            out.extend(probabilities(np.stack(t)) for t in tables)
        return out

    def _blocks(self, chunk: bytes) -> list[bytes]:
        return [chunk[i : i + self.context] for i in range(0, len(chunk), self.context)]

    # -- coding ----------------------------------------------------------------------------------

    def encode_documents(self, docs: Sequence[bytes]) -> list[tuple[list[np.ndarray], list[int]]]:
        chunks = [list(self.chunks(d)) for d in docs]
        blocks = [b for doc in chunks for c in doc for b in self._blocks(c)]
        probs = iter(self.block_probabilities(blocks))
        out: list[tuple[list[np.ndarray], list[int]]] = []
        for doc in chunks:
            ids: list[np.ndarray] = []
            for c in doc:
                p = np.concatenate([next(probs) for _ in self._blocks(c)])
                ids.append(
                    encode_stream(np.frombuffer(c, dtype=np.uint8), p, self.token_bits).astype(self.dtype)
                )
            out.append((ids, [len(c) for c in doc]))
        return out

    def encode_chunk(self, chunk: bytes) -> np.ndarray:
        return self.encode_documents([chunk])[0][0][0] if chunk else np.zeros(0, dtype=self.dtype)

    def decode_chunk(self, ids: np.ndarray) -> tuple[bytes, int]:
        from compresslm.coding.window_coder import START

        n, words, used = read_frame(ids, self.token_bits, self.chunk_bytes)
        decoder = StreamDecoder(words)
        out = bytearray()
        session = self.m1.session(1, self.context)
        for i in range(n):
            token = START if i % self.context == 0 else out[-1]
            p = probabilities(session.step(np.array([token], dtype=np.int64)))
            out.append(int(decoder.decode_rows(p)[0]))
        return bytes(out), used

    # -- persistence -----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        base = {**super().config(), "context": self.context}
        if self._saved_config is None:
            self._saved_config = {**base, **m1_config(self.m1, self.context)}
        return {**self._saved_config, **base}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "token_bits": self.token_bits,
            "m1_params_non_embedding": self.m1.n_params,
        }

    def save(self, directory: str | Path) -> None:
        save_m1(self.m1, directory)
