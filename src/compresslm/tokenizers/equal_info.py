"""EqualInfoAC[b, v]: text cut into windows that each compress to exactly ``b`` bits under M1 with
the coder and M1's context reset at every window (the Equal-Info paper's method, docs/design.md#the-window-coder); the
windows' bits, MSB-first, are the ids (b/8 ids per window at v = 256, b/16 at v = 65k).

The window coder is :mod:`compresslm.coding` (self-delimiting "straddle" code): every window decodes
from its own bits, so the ids of a document decode without any side information, and unit (chunk)
boundaries are invisible to the decoder. Chunks of 10,240 bytes are coded as separate units (their
last window ends at the chunk end, as in the paper) and all chunks of a batch of documents share
M1's batched forward passes.

Exceptions: the coder marks the rare window whose byte count its bits do not give (no stoppable
prefix). The tokenizer then cuts the unit just before that window (1, 2, ... bytes earlier), which
moves the window boundaries, and codes the two parts separately; if no cut helps it raises DataError.
So every id sequence it emits decodes exactly from the ids alone.

Units: each chunk is coded as units of at most ``unit_bytes`` (default 32 * b: 512 bytes at b = 16)
bytes, each ending in a window boundary. The coder steps all units of a batch side by side, one M1
position per step, so on a small corpus shorter units mean more rows per step and far fewer steps (a
10,240-byte unit needs ~13,000 sequential M1 steps, a 512-byte one ~650). The price is one forced
window end per unit: about half a window in ~32 * bits-per-byte windows, i.e. ~0.5-1% more ids.
On a large corpus the batch is full (``DEFAULT_BATCH_ROWS`` rows, as in ``compress``) either way.

Ids and windows: at b = 24, v = 65k ids straddle windows (as in the paper's App. A.1); a document's
window bytes are packed once and padded with one zero byte to a whole id, and a chunk's ids start at
the id holding its first bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compresslm.coding.packing import bytes_to_ids, ids_to_bytes
from compresslm.coding.window_coder import DEFAULT_BATCH_ROWS
from compresslm.errors import ConfigError, DataError
from compresslm.tokenizers.base import CHUNK_BYTES, Ids, Tokenizer
from compresslm.tokenizers.m1_support import load_m1, load_saved_m1, m1_config, save_m1

if TYPE_CHECKING:
    from compresslm.coding.equal_info import EqualInfoCoder
    from compresslm.coding.m1 import M1
    from compresslm.coding.window_coder import Window
    from compresslm.tokenizers.registry import SchemeSpec

#: Cuts tried before an exception window (bytes moved into the next unit).
MAX_RECUTS = 16
UNIT_BYTES_PER_WINDOW_BIT = 32


class EqualInfoTokenizer(Tokenizer):
    scheme = "equal-info"
    uses_m1 = True

    def __init__(
        self,
        m1: M1,
        window_bits: int = 16,
        token_bits: int = 16,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        unit_bytes: int | None = None,
        max_window_bytes: int | None = None,
        batch_size: int = DEFAULT_BATCH_ROWS,
        saved_config: dict[str, Any] | None = None,
    ) -> None:
        from compresslm.coding.equal_info import EqualInfoCoder

        if token_bits not in (8, 16):
            raise ConfigError(f"token bits must be 8 or 16, got {token_bits}")
        if window_bits % 8 or window_bits < 16:
            raise ConfigError(f"--window-bits must be a multiple of 8 and at least 16, got {window_bits}")
        unit_bytes = unit_bytes or UNIT_BYTES_PER_WINDOW_BIT * window_bits
        if chunk_bytes < 1 or unit_bytes < 1:
            raise ConfigError(f"chunk and unit bytes must be positive, got {chunk_bytes} and {unit_bytes}")
        self.m1 = m1
        self.unit_bytes = min(unit_bytes, chunk_bytes)
        self.window_bits = window_bits
        self.token_bits = token_bits
        self.chunk_bytes = chunk_bytes
        self.coder: EqualInfoCoder = EqualInfoCoder(
            m1, window_bits, max_window_bytes=max_window_bytes, batch_size=batch_size
        )
        self._saved_config = saved_config
        self.recuts = 0  # exception windows avoided by cutting a unit (for reports)

    @classmethod
    def from_checkpoint(
        cls,
        m1_dir: str | Path,
        window_bits: int = 16,
        token_bits: int = 16,
        *,
        threads: int | None = 1,
        **kwargs: Any,
    ) -> EqualInfoTokenizer:
        return cls(load_m1(m1_dir, threads=threads), window_bits, token_bits, **kwargs)

    @classmethod
    def build(
        cls, spec: SchemeSpec, *, texts: Any = None, m1: str | Path | None = None, **m1_options: Any
    ) -> EqualInfoTokenizer:
        assert m1 is not None, "the registry passes the M1 checkpoint"
        return cls.from_checkpoint(
            m1, spec.window_bits, spec.token_bits, chunk_bytes=spec.chunk_bytes, **m1_options
        )

    @classmethod
    def load(
        cls,
        directory: str | Path,
        config: dict[str, Any],
        *,
        threads: int | None = 1,
        batch_size: int = DEFAULT_BATCH_ROWS,
    ) -> EqualInfoTokenizer:
        m1 = load_saved_m1(directory, config, config["max_window_bytes"], threads=threads)
        return cls(
            m1,
            config["window_bits"],
            config["token_bits"],
            chunk_bytes=config["chunk_bytes"],
            unit_bytes=config.get("unit_bytes", config["chunk_bytes"]),
            max_window_bytes=config["max_window_bytes"],
            batch_size=batch_size,
            saved_config=config,
        )

    # -- vocabulary ------------------------------------------------------------------------------

    @property
    def data_vocab_size(self) -> int:
        return 1 << self.token_bits

    @property
    def name(self) -> str:
        v = "65k" if self.token_bits == 16 else "256"
        return f"EqualInfoAC[b={self.window_bits}, v={v}]"

    @property
    def window_bytes(self) -> int:
        return self.window_bits // 8

    @property
    def ids_per_window(self) -> float:
        return self.window_bits / self.token_bits

    # -- coding ----------------------------------------------------------------------------------

    def _windows(self, units: Sequence[bytes]) -> list[list[Window]]:
        """Windows of each unit, none of them an exception (see the module docstring)."""
        out = self.coder.encode_many(units)
        for i, wins in enumerate(out):
            if any(w.exception for w in wins):
                out[i] = self._recut(units[i], wins, depth=0)
        return out

    def _recut(self, data: bytes, wins: list[Window], depth: int) -> list[Window]:
        first = next(i for i, w in enumerate(wins) if w.exception)
        start = sum(w.nbytes for w in wins[:first])
        for back in range(1, MAX_RECUTS + 1):
            cut = start - back
            if cut <= 0:
                break
            head, tail = self.coder.encode_many([data[:cut], data[cut:]])
            if any(w.exception for w in head):
                continue
            if any(w.exception for w in tail):
                if depth >= MAX_RECUTS:
                    continue
                tail = self._recut(data[cut:], tail, depth + 1)
            self.recuts += 1
            return head + tail
        raise DataError(
            f"{self.name}: a window at byte {start} has no self-delimiting code and no cut within "
            f"{MAX_RECUTS} bytes before it helps"
        )

    def encode_documents(self, docs: Sequence[bytes]) -> list[tuple[list[np.ndarray], list[int]]]:
        units: list[bytes] = []
        owner: list[tuple[int, int]] = []  # (document, chunk) of each unit
        n_chunks: list[int] = []
        for d, data in enumerate(docs):
            chunks = [data[s : s + self.chunk_bytes] for s in range(0, len(data), self.chunk_bytes)]
            n_chunks.append(len(chunks))
            for c, chunk in enumerate(chunks):
                for start in range(0, len(chunk), self.unit_bytes):
                    units.append(chunk[start : start + self.unit_bytes])
                    owner.append((d, c))
        windows = self._windows(units)
        packed: list[list[list[bytes]]] = [[[] for _ in range(n)] for n in n_chunks]
        sizes: list[list[int]] = [[0] * n for n in n_chunks]
        for u, wins in enumerate(windows):
            d, c = owner[u]
            packed[d][c].append(self._pack(wins))
            sizes[d][c] += len(units[u])
        per_doc = [
            [(b"".join(parts), n) for parts, n in zip(doc, sizes[d], strict=True)]
            for d, doc in enumerate(packed)
        ]
        out: list[tuple[list[np.ndarray], list[int]]] = []
        for parts in per_doc:
            ids = bytes_to_ids(b"".join(p for p, _ in parts), self.token_bits).astype(self.dtype)
            bit_starts = np.cumsum([0] + [8 * len(p) for p, _ in parts])
            id_starts = [int(b) // self.token_bits for b in bit_starts[:-1]] + [len(ids)]
            chunks = [ids[id_starts[i] : id_starts[i + 1]] for i in range(len(parts))]
            out.append((chunks, [n for _, n in parts]))
        return out

    def _pack(self, windows: Sequence[Window]) -> bytes:
        return b"".join(w.code.to_bytes(self.window_bytes, "big") for w in windows)

    def encode_bytes(self, data: bytes) -> np.ndarray:
        chunks, _ = self.encode_documents([data])[0]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=self.dtype)

    def codes(self, ids: Ids, *, strict: bool = True) -> list[int]:
        """Window codes held by ``ids``; ``strict``: the ids must end on a window (up to the zero
        padding of the last id), else a partial last window is dropped (sampled ids)."""
        raw = ids_to_bytes(np.asarray(ids, dtype=np.int64), self.token_bits)
        n = len(raw) // self.window_bytes
        rest = raw[n * self.window_bytes :]
        if strict and (len(rest) >= self.token_bits // 8 or any(rest)):
            raise DataError(f"{self.name}: the ids end inside a window ({len(rest)} stray bytes)")
        w = self.window_bytes
        return [int.from_bytes(raw[i * w : (i + 1) * w], "big") for i in range(n)]

    def decode_windows(self, codes: Sequence[int]) -> bytes:
        """Bytes of the windows ``codes``. Every window is its own unit: nothing carries over between
        windows, so all of them decode side by side, one batched M1 step per byte position."""
        if not codes:
            return b""
        return b"".join(self.coder.decode_many([[c] for c in codes]))

    def decode_bytes(self, ids: Ids) -> bytes:
        arr = self._check_ids(ids, skip_special=False)
        try:
            return self.decode_windows(self.codes(arr))
        except DataError:
            raise
        except Exception as exc:  # IntegrityError from the coder: corrupt window bits
            raise DataError(f"{self.name}: ids do not decode: {exc}") from exc

    # -- persistence -----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        p = self.coder.params
        base = {
            "scheme": self.scheme,
            "window_bits": self.window_bits,
            "token_bits": self.token_bits,
            "chunk_bytes": self.chunk_bytes,
            "unit_bytes": self.unit_bytes,
            "max_window_bytes": p.max_window_bytes,
            "guard_bits": p.guard_bits,
            "code": p.code,
        }
        if self._saved_config is None:
            self._saved_config = {**base, **m1_config(self.m1, p.max_window_bytes)}
        return {**self._saved_config, **base}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "window_bits": self.window_bits,
            "token_bits": self.token_bits,
            "m1_params_non_embedding": self.m1.n_params,
        }

    def save(self, directory: str | Path) -> None:
        save_m1(self.m1, directory)
