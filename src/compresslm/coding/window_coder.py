"""The Equal-Info window coder (docs/design.md#the-window-coder): bytes -> b-bit windows -> bytes, exactly.

Every window is coded on its own: the interval restarts at ``[0, 2**(b+G))`` and the model's
context restarts (a START token), so each window decodes from its own ``b`` bits.

Encoder (per unit of bytes, e.g. one document): add bytes while the next one *fits* (its child
holds a whole cell) and the window has fewer than ``max_window_bytes``; that is the greedy end
``n``. With ``code="straddle"`` the window ends at the longest *stoppable* prefix ``k <= n`` (its
interval holds a whole cell that straddles a boundary between its children, or ``k`` is the cap)
and its code is the lowest such cell; when no prefix is stoppable the greedy window is kept and
recorded as an exception. With ``code="zeros"`` (the paper's) the window is always the greedy one
and its code the shortest dyadic interval, zero-padded; when that cell sits inside one child of
the last interval the token-only decoder would run past the end: an exception.

Decoder (tokens only): from cell ``C``, take the child holding ``C``'s start; if ``C`` lies inside
it, that is the next byte; if ``C`` straddles a boundary, or the cap is reached, the window is
complete. For an exception window the decoder instead takes exactly the recorded byte count.

Why this decodes exactly: ``C`` lies inside the interval of every prefix of the window, hence
inside the child of each of its bytes, and it straddles at the end by construction.

Models are queried through :class:`FrequencyModel` sessions that serve many rows (windows of
different units) per step, which is how M1 batches one fixed-shape forward across documents.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from compresslm.coding.intervals import (
    N_SYMBOLS,
    CoderParams,
    cell_straddles,
    check_table,
    find_child,
    lowest_straddling_cell,
    shortest_dyadic_cell,
    whole_cells,
)
from compresslm.errors import IntegrityError

START = 256  # token that resets a row: the next table is for the first byte of a window
IDLE = -1  # token for a row with nothing to do; its table is ignored
# Token RESTART + b: START and byte b in one step, for a session whose ``start_table`` is known.
# Every window's first table depends on nothing (a window's context restarts), so such a session
# never computes it, and a window of n bytes costs n model positions instead of n + 1.
RESTART = 512

#: Rows (independent units) coded per model step. 512 rather than 256 because M1's GEMMs over more
#: rows run closer to the machine's matmul rate (measured in docs/benchmarks.md, "Neural
#: compression"), while the rows' KV caches stay small: about 0.2 MB each for the 3m model.
DEFAULT_BATCH_ROWS = 512


@dataclass(frozen=True, slots=True)
class Window:
    """One coded window: ``code`` is the cell index (``window_bits`` bits, MSB first when packed),
    ``nbytes`` the bytes it covers. ``exception`` marks windows whose byte count the tokens alone
    do not give (the decoder needs ``nbytes`` from the exception table)."""

    code: int
    nbytes: int
    exception: bool = False


class FrequencySession(Protocol):
    """Rows of independent contexts, advanced one position per :meth:`step`."""

    n_rows: int

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """``tokens[r]``: a byte (0..255) appended to row ``r``, :data:`START` to reset it, or
        :data:`IDLE`. Returns a fresh int64 array (rows, 257): row ``r``'s cumulative frequency
        table for its next byte (rubbish for idle rows).

        Optional extras: ``close()``, called when the coder is done with the session, and
        ``start_table``, the (constant) table after START; a session that has one also takes
        :data:`RESTART` ``+ b`` (START, then byte ``b``, in one step), and the coder feeds
        ``start_table`` itself instead of spending a step on START."""
        ...


class FrequencyModel(Protocol):
    """A next-byte model the coder can drive: quantized tables, one session per batch (or one per
    lane: a model may have ``lanes``, the number of sessions the coder runs in parallel threads)."""

    precision: int

    def session(self, n_rows: int, max_len: int) -> FrequencySession:
        """A session of ``n_rows`` rows; a row never holds more than ``max_len`` positions."""
        ...


class CallableModel:
    """A :class:`FrequencyModel` from a Python function of the window prefix (bytes since START).

    For tests, static models (unigram) and experiments; M1 has its own batched session.
    """

    def __init__(
        self, table: Callable[[bytes], np.ndarray], precision: int = 14, *, start_table: bool = False
    ) -> None:
        self.table = table
        self.precision = precision
        self.start_table = start_table

    def session(self, n_rows: int, max_len: int) -> FrequencySession:
        return _CallableSession(self, n_rows)


class _CallableSession:
    """With ``start_table`` (like M1's sessions) the table after START is known up front and the
    session takes :data:`RESTART` ``+ b``."""

    def __init__(self, model: CallableModel, n_rows: int) -> None:
        self.model = model
        self.n_rows = n_rows
        self.prefixes = [bytearray() for _ in range(n_rows)]
        if model.start_table:
            self.start_table = np.asarray(model.table(b""), dtype=np.int64)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        out = np.zeros((len(self.prefixes), 257), dtype=np.int64)
        for r, tok in enumerate(int(t) for t in tokens):
            if tok == IDLE:
                continue
            if tok == START:
                self.prefixes[r].clear()
            elif tok >= RESTART:
                self.prefixes[r][:] = bytes([tok - RESTART])
            else:
                self.prefixes[r].append(tok)
            cum = np.asarray(self.model.table(bytes(self.prefixes[r])), dtype=np.int64)
            check_table(cum, self.model.precision)
            out[r] = cum
        return out


class _UnitEncoder:
    """Encodes one unit of bytes into windows, fed one frequency table per step."""

    def __init__(self, data: bytes, params: CoderParams) -> None:
        self.data = data
        self.params = params
        self.guard_bits = params.guard_bits
        self.max_window_bytes = params.max_window_bytes
        self.windows: list[Window] = []
        self.start = 0  # first byte of the current window
        self.backed_off = 0  # windows that ended before their greedy end
        self.positions = 0  # model positions consumed (for the waste accounting)
        self.ideal_bits = 0.0
        self._new_window()

    def _new_window(self) -> None:
        self.t = 0
        self.tables: list[np.ndarray] = []  # tables[i]: distribution of the window's byte i
        self.bounds: list[tuple[int, int]] = [(0, self.params.scale)]  # bounds[i]: interval of i bytes

    @property
    def done(self) -> bool:
        return self.start >= len(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def next_token(self) -> int:
        return START if self.t == 0 else self.data[self.start + self.t - 1]

    def feed(self, cum: np.ndarray) -> int:
        """Consume the table for the window's next byte; returns bytes finished (0 while open)."""
        self.positions += 1
        self.tables.append(cum)
        t = self.t
        if self.start + t == len(self.data):
            return self._finish(t)
        # intervals.child and intervals.fits, inlined: this runs once per byte and model position.
        lo, hi = self.bounds[t]
        x = self.data[self.start + t]
        w, total = hi - lo, int(cum[N_SYMBOLS])
        lo, hi = lo + (w * int(cum[x])) // total, lo + (w * int(cum[x + 1])) // total
        g = self.guard_bits
        if (lo + (1 << g) - 1) >> g > (hi >> g) - 1:  # no whole cell: the byte does not fit
            return self._finish(t)
        self.t = t + 1
        self.bounds.append((lo, hi))
        if self.t == self.max_window_bytes:
            return self._finish(self.t)
        return 0

    def _finish(self, n: int) -> int:
        p = self.params
        if p.code == "zeros":
            lo, hi = self.bounds[n]
            cell = shortest_dyadic_cell(lo, hi, p.window_bits, p.guard_bits)
            over_runs = n < p.max_window_bytes and not cell_straddles(
                lo, hi, self.tables[n], cell, p.guard_bits
            )
            window = Window(cell, n, over_runs)
        else:
            window = self._stoppable(n)
        if window.nbytes < n:
            self.backed_off += 1
        for t in range(window.nbytes):  # the information the window carries, -log2 p(x_t | prefix)
            cum, x = self.tables[t], self.data[self.start + t]
            self.ideal_bits += math.log2(int(cum[N_SYMBOLS]) / int(cum[x + 1] - cum[x]))
        self.windows.append(window)
        self.start += window.nbytes
        self._new_window()
        return window.nbytes

    def _stoppable(self, n: int) -> Window:
        """The longest stoppable prefix of the greedy window ``n`` (an exception when none is)."""
        g = self.params.guard_bits
        if n == self.params.max_window_bytes:
            return Window(whole_cells(*self.bounds[n], g)[0], n)
        for k in range(n, 0, -1):
            cell = lowest_straddling_cell(*self.bounds[k], self.tables[k], g)
            if cell is not None:
                return Window(cell, k)
        return Window(whole_cells(*self.bounds[n], g)[0], n, True)


class _UnitDecoder:
    """Decodes the windows of one unit, fed one frequency table per step."""

    def __init__(
        self, codes: Sequence[int], exceptions: Mapping[int, int], params: CoderParams, length: int | None
    ) -> None:
        self.codes = codes
        self.exceptions = exceptions
        self.params = params
        self.length = length
        self.out = bytearray()
        self.w = 0  # current window
        self.t = 0
        self.lo, self.hi = 0, params.scale

    @property
    def done(self) -> bool:
        return self.w >= len(self.codes)

    @property
    def size(self) -> int:
        return self.length if self.length is not None else len(self.codes)

    def next_token(self) -> int:
        return START if self.t == 0 else self.out[-1]

    def feed(self, cum: np.ndarray) -> int:
        p = self.params
        start = self.codes[self.w] << p.guard_bits
        s, lo, hi = find_child(self.lo, self.hi, cum, start)
        limit = self.exceptions.get(self.w)
        if limit is None and hi < start + (1 << p.guard_bits):  # the cell straddles: window complete
            if self.t == 0:
                raise IntegrityError(f"window {self.w} decodes to no bytes: the window bits are corrupt")
            return self._end_window()
        self.out.append(s)
        self.t += 1
        self.lo, self.hi = lo, hi
        if self.length is not None and len(self.out) > self.length:
            raise IntegrityError(
                f"window {self.w} decodes past the recorded length of {self.length} bytes: the window "
                "bits, the exception table or the model do not match"
            )
        if self.t == (p.max_window_bytes if limit is None else limit):
            return self._end_window()
        return 0

    def _end_window(self) -> int:
        n = self.t
        self.w += 1
        self.t = 0
        self.lo, self.hi = 0, self.params.scale
        return n


# (busy rows, rows of the lane, perf_counter() at the end of the step): one per model step.
StepTrace = list[tuple[int, int, float]]


def _drive(
    units: Sequence[_UnitEncoder | _UnitDecoder],
    model: FrequencyModel,
    batch_size: int,
    on_bytes: Callable[[int], None] | None,
    trace: StepTrace | None = None,
) -> None:
    """Run every unit to completion, ``batch_size`` rows at a time; a row that finishes its unit
    takes the next one, so one session step always serves as many windows as there are rows.
    Longest units go first (LPT scheduling): the tail, where rows run out of work, is then short.

    A model with ``lanes`` > 1 gets its rows split into that many sessions, each stepped by its own
    thread from one shared queue of units. The model's arithmetic runs with the GIL released, so
    one lane's Python coder overlaps another lane's forward pass; a unit's results cannot depend on
    its lane, because rows never influence each other."""
    order = [u for u in sorted(units, key=lambda u: -u.size) if not u.done]
    if not order:
        return
    n_rows = max(1, min(batch_size, len(order)))
    pending = iter(order)
    lock = threading.Lock()

    def done_bytes(n: int) -> None:
        if n and on_bytes is not None:
            with lock:
                on_bytes(n)

    def lane(session: FrequencySession, failed: threading.Event) -> None:
        def take() -> _UnitEncoder | _UnitDecoder | None:
            with lock:
                return None if failed.is_set() else next(pending, None)

        _run_lane(session, take, done_bytes, trace, failed)

    run_lanes(model, n_rows, order[0].params.max_window_bytes, lane)


def run_lanes(
    model: FrequencyModel,
    n_rows: int,
    max_len: int,
    lane: Callable[[FrequencySession, threading.Event], None],
) -> None:
    """Split ``n_rows`` rows into the model's ``lanes`` sessions and run ``lane(session, failed)``
    for each in its own thread (in this one for a single lane). ``failed`` is set when a lane
    raises, so the others stop at their next step; the first error is re-raised here. Sessions
    are opened in the calling thread before any lane starts (M1 sets its thread count when the
    first session opens) and always closed."""
    lanes = max(1, min(int(getattr(model, "lanes", 1)), n_rows))
    failed = threading.Event()

    started = getattr(model, "lane_started", None)  # per-thread setup (M1: torch's thread count)

    def run(session: FrequencySession) -> None:
        try:
            if started is not None and lanes > 1:
                started()
            lane(session, failed)
        except BaseException:
            failed.set()
            raise

    sessions = [model.session(-(-n_rows // lanes), max_len) for _ in range(lanes)]
    try:
        if lanes == 1:
            run(sessions[0])
        else:
            with ThreadPoolExecutor(lanes, thread_name_prefix="coder-lane") as pool:
                for future in [pool.submit(run, s) for s in sessions]:
                    future.result()
    finally:
        for session in sessions:
            close = getattr(session, "close", None)
            if close is not None:
                close()


def _run_lane(
    session: FrequencySession,
    take: Callable[[], _UnitEncoder | _UnitDecoder | None],
    done_bytes: Callable[[int], None],
    trace: StepTrace | None,
    failed: threading.Event,
) -> None:
    """Step one session until the shared queue of units is empty and its rows are finished (or
    another lane has ``failed``)."""
    rows = [take() for _ in range(session.n_rows)]
    start_table: np.ndarray | None = getattr(session, "start_table", None)

    def report(finished: int, i: int) -> None:
        done_bytes(finished)
        if rows[i].done:  # type: ignore[union-attr]
            rows[i] = take()

    def token(i: int) -> int:
        """Row i's next token; with a ``start_table``, windows are opened here, without a step."""
        fresh = False
        while (unit := rows[i]) is not None:
            tok = unit.next_token()
            if tok != START or start_table is None:
                return tok + RESTART if fresh else tok
            fresh = True
            report(unit.feed(start_table), i)
        return IDLE

    while True:
        tokens = np.array([token(i) for i in range(len(rows))], dtype=np.int64)
        if np.all(tokens == IDLE) or failed.is_set():
            return
        tables = session.step(tokens)
        for i, unit in enumerate(rows):
            if unit is not None:
                report(unit.feed(tables[i]), i)
        if trace is not None:
            trace.append((int(np.sum(tokens != IDLE)), len(rows), time.perf_counter()))


@dataclass
class EncodeStats:
    """What the encoder did, for reports: back-offs and model positions per coded byte."""

    windows: int = 0
    bytes: int = 0
    exceptions: int = 0
    backed_off: int = 0
    positions: int = 0
    ideal_bits: float = 0.0  # sum of -log2 p over coded bytes: the model's cross-entropy in windows


def encode_units(
    units: Sequence[bytes],
    model: FrequencyModel,
    params: CoderParams,
    *,
    batch_size: int = DEFAULT_BATCH_ROWS,
    on_bytes: Callable[[int], None] | None = None,
    stats: EncodeStats | None = None,
    trace: StepTrace | None = None,
    vectorized: bool = True,
) -> list[list[Window]]:
    """Windows of every unit (each coded independently), batching ``batch_size`` units per step.

    ``vectorized`` (the default) runs :mod:`.window_vector`, numpy over all rows of a step; False
    runs this module's per-row classes, the reference both are tested against (same windows)."""
    if vectorized:
        from compresslm.coding.window_vector import encode_vector  # it builds on this module

        return encode_vector(
            units, model, params, batch_size=batch_size, on_bytes=on_bytes, stats=stats, trace=trace
        )
    encoders = [_UnitEncoder(bytes(u), params) for u in units]
    _drive(encoders, model, batch_size, on_bytes, trace)
    if stats is not None:
        for e in encoders:
            stats.windows += len(e.windows)
            stats.bytes += len(e.data)
            stats.exceptions += sum(w.exception for w in e.windows)
            stats.backed_off += e.backed_off
            stats.positions += e.positions
            stats.ideal_bits += e.ideal_bits
    return [e.windows for e in encoders]


def decode_units(
    units: Sequence[tuple[Sequence[int], Mapping[int, int]]],
    model: FrequencyModel,
    params: CoderParams,
    *,
    lengths: Sequence[int] | None = None,
    batch_size: int = DEFAULT_BATCH_ROWS,
    on_bytes: Callable[[int], None] | None = None,
    vectorized: bool = True,
) -> list[bytes]:
    """Bytes of every unit from its window codes and exception table ``{window index: nbytes}``.

    ``lengths`` (optional) are the expected byte counts: decoding past one is an IntegrityError
    at once instead of a run to the cap, and a shorter result is one too. ``vectorized``: as in
    :func:`encode_units`.
    """
    limits: Sequence[int | None] = list(lengths) if lengths is not None else [None] * len(units)
    if lengths is not None and len(limits) != len(units):
        raise IntegrityError(f"{len(units)} units for {len(limits)} recorded lengths")
    for i, (codes, exceptions) in enumerate(units):
        _check_unit(i, codes, exceptions, params)
    if vectorized:
        from compresslm.coding.window_vector import decode_vector  # it builds on this module

        out = decode_vector(units, model, params, lengths=lengths, batch_size=batch_size, on_bytes=on_bytes)
    else:
        decoders = [
            _UnitDecoder(list(codes), dict(exc), params, limit)
            for (codes, exc), limit in zip(units, limits, strict=True)
        ]
        _drive(decoders, model, batch_size, on_bytes)
        out = [bytes(d.out) for d in decoders]
    if lengths is not None:
        for i, (data, n) in enumerate(zip(out, lengths, strict=True)):
            if len(data) != n:
                raise IntegrityError(f"unit {i} decodes to {len(data)} bytes, the container records {n}")
    return out


def _check_unit(index: int, codes: Sequence[int], exceptions: Mapping[int, int], params: CoderParams) -> None:
    top = 1 << params.window_bits
    for c in codes:
        if not 0 <= c < top:
            raise IntegrityError(f"unit {index}: window code {c} does not fit in {params.window_bits} bits")
    for w, n in exceptions.items():
        if not 0 <= w < len(codes) or not 1 <= n <= params.max_window_bytes:
            raise IntegrityError(
                f"unit {index}: exception (window {w}, {n} bytes) is outside the unit's {len(codes)} windows "
                f"or the 1..{params.max_window_bytes} byte range"
            )


def exception_table(windows: Iterable[Window]) -> dict[int, int]:
    """``{window index: nbytes}`` for the windows the tokens alone cannot delimit."""
    return {i: w.nbytes for i, w in enumerate(windows) if w.exception}
