"""Stream mode: each segment of bytes is one range code (:mod:`.range_coder`) driven by M1 with
its full context, every segment a row of the batched model.

**Context.** M1 has learned absolute positions up to its ``max_seq_len`` (its *context*, ``L``),
trained on ``[BOS] + L - 1`` bytes from random offsets. A segment is read in *chunks* of ``L``
bytes; each chunk restarts the row at BOS, so chunk byte ``j`` is predicted from the ``j`` bytes
before it in the chunk (at most ``L - 1``), exactly as in training, at one model position per
byte. The alternative, a sliding window (keep the last ``K`` bytes as the new chunk's context),
has to recompute those ``K`` positions at every chunk, because positions are absolute; it was
measured with ``benchmarks/compress.py --context-study`` (see the benchmark's docs) and bought
less than its cost in model positions, so chunks restart.

**Per step.** Every busy row codes one byte: a row whose next byte opens a chunk takes M1's
constant start table (no model position; the row is idle in that step), any other row sends the
previous byte (``RESTART + b`` when that byte opened its chunk) and codes the next one with the
table the step returns. Encoder and decoder make the same session calls with the same tokens, so
they see the same tables; the decoder's tokens are the bytes it has just decoded.

**Rows.** A row that finishes its segment writes the code (encoder) and takes the next segment,
longest first; many rows share one fixed-shape model step, and the model's ``lanes`` split the
rows into sessions stepped from parallel threads, as in the window coder.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from compresslm.coding.range_coder import MAX_TOTAL, VectorDecoder, VectorEncoder
from compresslm.coding.window_coder import (
    DEFAULT_BATCH_ROWS,
    IDLE,
    RESTART,
    START,
    FrequencyModel,
    FrequencySession,
    StepTrace,
    run_lanes,
)
from compresslm.errors import ConfigError, IntegrityError

MODE = "stream"


@dataclass(frozen=True)
class StreamParams:
    """What encoder and decoder share (stored in a .clm header): the tables' ``precision`` and the
    ``context``, the chunk length after which a row restarts at BOS."""

    precision: int = 14
    context: int = 128

    def __post_init__(self) -> None:
        for name in ("precision", "context"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"stream parameter {name} must be a positive integer, got {value!r}")
        if not 9 <= self.precision <= 24 or (1 << self.precision) > MAX_TOTAL:
            raise ConfigError(f"stream precision must be in 9..24, got {self.precision}")

    def to_dict(self) -> dict[str, int]:
        return {"precision": self.precision, "context": self.context}


@dataclass
class StreamStats:
    """What the encoder did: segments, bytes, code bytes and the tables' cross-entropy in bits."""

    segments: int = 0
    bytes: int = 0
    code_bytes: int = 0
    ideal_bits: float = 0.0
    positions: int = 0  # model positions computed for busy rows


class StreamCoder:
    """Stream-mode coder over ``model`` (an M1 or any model whose sessions serve rows of ``context``
    positions). ``context`` defaults to the model's ``max_context``. ``chunk_encoder``: encode with
    the intervals of whole chunks where the session offers them (the exact M1), else step by step."""

    chunk_encoder = True

    def __init__(
        self,
        model: FrequencyModel,
        *,
        context: int | None = None,
        batch_size: int = DEFAULT_BATCH_ROWS,
    ) -> None:
        limit = getattr(model, "max_context", None)
        if context is None:
            if limit is None:
                raise ConfigError("this model has no max_context: pass the stream context")
            context = int(limit)
        if limit is not None and context > limit:
            raise ConfigError(f"stream context {context} exceeds the model's {limit} positions")
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
        self.model = model
        self.params = StreamParams(precision=model.precision, context=context)
        self.batch_size = batch_size
        self.stats = StreamStats()

    def encode_many(
        self,
        segments: Sequence[bytes],
        on_bytes: Callable[[int], None] | None = None,
        trace: StepTrace | None = None,
    ) -> list[bytes]:
        """One code per segment (an empty segment's code is empty)."""
        lengths = np.array([len(s) for s in segments], dtype=np.int64)
        flat = np.frombuffer(b"".join(segments), dtype=np.uint8).copy()
        codes: list[bytes] = [b""] * len(segments)
        self._drive(flat, lengths, None, codes, on_bytes, trace)
        self.stats.segments += len(segments)
        self.stats.bytes += int(lengths.sum())
        self.stats.code_bytes += sum(len(c) for c in codes)
        return codes

    def decode_many(
        self,
        codes: Sequence[bytes],
        lengths: Sequence[int],
        on_bytes: Callable[[int], None] | None = None,
    ) -> list[bytes]:
        """The segments back from their codes and byte counts."""
        if len(codes) != len(lengths):
            raise IntegrityError(f"{len(codes)} codes for {len(lengths)} segment lengths")
        n = np.array(lengths, dtype=np.int64)
        if len(n) and n.min() < 0:
            raise IntegrityError("a segment length is negative")
        flat = np.zeros(int(n.sum()), dtype=np.uint8)
        self._drive(flat, n, list(codes), None, on_bytes, None)
        ends = np.cumsum(n)
        return [flat[e - k : e].tobytes() for e, k in zip(ends.tolist(), n.tolist(), strict=True)]

    def _drive(
        self,
        flat: np.ndarray,
        lengths: np.ndarray,
        codes_in: list[bytes] | None,
        codes_out: list[bytes] | None,
        on_bytes: Callable[[int], None] | None,
        trace: StepTrace | None,
    ) -> None:
        order = [int(u) for u in np.argsort(-lengths, kind="stable") if lengths[u] > 0]
        if not order:
            return
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        blob, code_offsets = b"", np.zeros(0, dtype=np.int64)
        if codes_in is not None:
            blob = b"".join(codes_in)
            code_offsets = np.concatenate([[0], np.cumsum([len(c) for c in codes_in])[:-1]]).astype(np.int64)
        pending = iter(order)
        lock = threading.Lock()

        def lane(session: FrequencySession, failed: threading.Event) -> None:
            def take() -> int:
                with lock:
                    return -1 if failed.is_set() else next(pending, -1)

            def done(n: int) -> None:
                if on_bytes is not None:
                    with lock:
                        on_bytes(n)

            run = _Lane(session, self.params.context, flat, offsets, lengths, take, done, trace, failed)
            if codes_in is not None:
                run.decoder = VectorDecoder(session.n_rows, blob)
                run.code_at = [(int(o), len(c)) for o, c in zip(code_offsets, codes_in, strict=True)]
            else:
                run.encoder = VectorEncoder(session.n_rows)
                run.codes = codes_out
            run.run()
            with lock:
                self.stats.ideal_bits += run.ideal_bits
                self.stats.positions += run.positions

        run_lanes(self.model, min(self.batch_size, len(order)), self.params.context, lane)


class _Lane:
    """One session's rows: the vectorized step loop of the module docstring."""

    encoder: VectorEncoder | None = None
    decoder: VectorDecoder | None = None
    codes: list[bytes] | None = None
    code_at: list[tuple[int, int]] | None = None

    def __init__(
        self,
        session: FrequencySession,
        context: int,
        flat: np.ndarray,
        offsets: np.ndarray,
        lengths: np.ndarray,
        take: Callable[[], int],
        done: Callable[[int], None],
        trace: StepTrace | None,
        failed: threading.Event,
    ) -> None:
        self.session = session
        self.context = context
        self.flat = flat
        self.offsets = offsets
        self.lengths = lengths
        self.take = take
        self.done = done
        self.trace = trace
        self.failed = failed
        n = session.n_rows
        self.unit = np.full(n, -1, dtype=np.int64)
        self.pos = np.zeros(n, dtype=np.int64)  # the row's next byte within its segment
        self.base = np.zeros(n, dtype=np.int64)  # the segment's first byte in ``flat``
        self.end = np.zeros(n, dtype=np.int64)  # its length
        self.ideal_bits = 0.0
        self.positions = 0

    def _assign(self, row: int) -> None:
        u = self.take()
        self.unit[row] = u
        self.pos[row] = 0
        if u < 0:
            return
        self.base[row] = self.offsets[u]
        self.end[row] = self.lengths[u]
        if self.decoder is not None and self.code_at is not None:
            self.decoder.start(row, *self.code_at[u])

    def run(self) -> None:
        session, flat, context = self.session, self.flat, self.context
        for row in range(session.n_rows):
            self._assign(row)
        if (
            self.encoder is not None
            and StreamCoder.chunk_encoder
            and hasattr(self.session, "chunk_intervals")
        ):
            return self._run_chunks()
        start_table: np.ndarray | None = getattr(session, "start_table", None)
        tokens = np.full(session.n_rows, IDLE, dtype=np.int64)
        found = np.empty(session.n_rows, dtype=np.int64)  # rows found by the lane's kernels
        # A decoder over a session that decodes in its step (the exact M1's kernels) skips the
        # tables; it needs the start table, so that no token is START
        fused = self.decoder is not None and start_table is not None and hasattr(session, "step_decode")
        while not self.failed.is_set():
            if start_table is not None:
                # Bytes that open a chunk take the constant start table, before the model step: so
                # every busy row computes in the step (none idles at its chunk boundary).
                while k := _chunk_openings(self.unit, self.pos, context, found):
                    rows = found[:k].copy()
                    self._code(rows, np.broadcast_to(start_table, (k, len(start_table))))
            k = _step_tokens(
                self.unit, self.pos, self.base, flat, context, start_table is not None, tokens, found
            )
            if not k:
                return
            rows = found[:k].copy()
            self.positions += k
            if fused:  # the session's step decodes too (rows are exactly the non-IDLE tokens)
                self._next(rows, session.step_decode(tokens, self.decoder))  # type: ignore[attr-defined]
            else:
                tables = session.step(tokens)
                if k < len(tables):  # else rows are all rows, in order: no copy of the tables
                    tables = tables[rows]
                self._code(rows, tables)
            if self.trace is not None:
                self.trace.append((k, session.n_rows, time.perf_counter()))

    def _run_chunks(self) -> None:
        """The encoder over a model that gives the intervals of whole chunks at once (the exact
        M1: its integers do not depend on how they are computed): every busy row is at a chunk
        boundary here, the intervals of all its next chunk's bytes come from one call, then one
        call codes them (each row its chunk): exactly the symbols and intervals of :meth:`run`."""
        assert self.encoder is not None
        session, flat, context = self.session, self.flat, self.context
        while not self.failed.is_set():
            rows = np.flatnonzero(self.unit >= 0)
            if not len(rows):
                return
            at = self.base[rows] + self.pos[rows]
            k = np.minimum(self.end[rows] - self.pos[rows], context)  # the chunk's bytes, per row
            T = int(k.max())
            j = np.arange(T)
            chunks = flat[np.minimum(at[:, None] + j[None, :], len(flat) - 1)].astype(np.int64)
            chunks[j[None, :] >= k[:, None]] = 0
            start, freq, total = session.chunk_intervals(chunks)  # type: ignore[attr-defined]
            self.positions += int((k - 1).sum())
            self.ideal_bits += self.encoder.encode_runs(rows, start, freq, total, k)
            if self.trace is not None:
                now = time.perf_counter()
                self.trace.extend((int((k > t).sum()), session.n_rows, now) for t in range(T))
            self.pos[rows] += k
            for row in rows[self.pos[rows] == self.end[rows]].tolist():
                if self.codes is not None:
                    self.codes[int(self.unit[row])] = self.encoder.finish(row)
                self.done(int(self.end[row]))
                self._assign(row)

    def _code(self, rows: np.ndarray, tables: np.ndarray) -> None:
        """Code the next byte of every row in ``rows`` with its table; finished rows take new work."""
        if self.encoder is not None:
            k = np.arange(len(rows))
            sym = self.flat[self.base[rows] + self.pos[rows]].astype(np.int64)
            lo, hi = tables[k, sym], tables[k, sym + 1]
            self.encoder.encode(rows, lo, hi - lo, tables[:, 256])
            self.ideal_bits += float(np.log2(tables[:, 256] / (hi - lo)).sum())
            self._next(rows, None)
        else:
            assert self.decoder is not None
            self._next(rows, self.decoder.decode(rows, tables))

    def _next(self, rows: np.ndarray, decoded: np.ndarray | None) -> None:
        """``rows`` have coded their next byte (``decoded``: the bytes a decoder read, stored);
        finished rows take new work."""
        finished = np.empty(len(rows), dtype=np.int64)
        write = decoded is not None
        n = _advance(
            rows, decoded if write else rows, write, self.pos, self.base, self.end, self.flat, finished
        )
        for row in finished[:n].tolist():
            if self.encoder is not None and self.codes is not None:
                self.codes[int(self.unit[row])] = self.encoder.finish(row)
            self.done(int(self.end[row]))
            self._assign(row)


# The lane's bookkeeping per step in compiled loops over its rows: a dozen numpy operations on
# arrays of a few hundred rows cost more than the loops (about 1 us each, and the lane holds the
# GIL meanwhile, which the other lanes wait for).


@njit(cache=True, nogil=True)
def _chunk_openings(unit, pos, context, rows):  # pragma: no cover - compiled
    """The busy rows (``unit >= 0``) whose next byte opens a chunk into ``rows``; their count."""
    k = 0
    for r in range(unit.shape[0]):
        if unit[r] >= 0 and pos[r] % context == 0:
            rows[k] = r
            k += 1
    return k


@njit(cache=True, nogil=True)
def _step_tokens(unit, pos, base, flat, context, restart, tokens, rows):  # pragma: no cover - compiled
    """Every row's token for the next model step (module docstring): a busy row sends its previous
    byte (``RESTART + b`` when that byte opened its chunk and the session has a start table,
    ``restart``; without one a row at a chunk's start sends START), the others IDLE. The busy rows
    go to ``rows``; returns their count."""
    k = 0
    for r in range(unit.shape[0]):
        if unit[r] < 0:
            tokens[r] = IDLE
            continue
        j = pos[r] % context
        previous = np.int64(flat[max(base[r] + pos[r] - 1, 0)])
        if restart:
            tokens[r] = previous + RESTART if j == 1 else previous
        else:
            tokens[r] = START if j == 0 else previous
        rows[k] = r
        k += 1
    return k


@njit(cache=True, nogil=True)
def _advance(rows, decoded, write, pos, base, end, flat, finished):  # pragma: no cover - compiled
    """Rows ``rows`` move past their next byte (a decoder first stores it: ``write``, the bytes in
    ``decoded``); the rows that reach their segment's end go to ``finished``; returns their count."""
    n = 0
    for i in range(rows.shape[0]):
        r = rows[i]
        p = pos[r]
        if write:
            flat[base[r] + p] = decoded[i]
        pos[r] = p + 1
        if p + 1 == end[r]:
            finished[n] = r
            n += 1
    return n
