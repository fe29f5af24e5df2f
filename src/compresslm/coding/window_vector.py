"""The vectorized Equal-Info window coder: the rules of :mod:`.window_coder` applied to every row of a
model batch at once with numpy operations; one step advances every busy row by one byte (or closes
its window), so a step of 512 rows costs a handful of array operations instead of 512 Python calls.

:mod:`.window_coder`'s per-row classes stay the reference: property tests check that both produce
the same windows (codes, byte counts, exceptions) and the same bytes back, on random tables and
inputs, for every window width.

**Encoder.** A row holds its window's interval ``[lo, hi)`` and byte count ``t``. Each table it is
fed is the distribution of the window's next byte, so it first decides whether the prefix of ``t``
bytes is *stoppable* (holds a whole cell straddling a child boundary) and remembers the longest
stoppable prefix with its lowest straddling cell; then it narrows to the next byte's child if that
child holds a whole cell. When the byte does not fit (or the unit ends) the window is the
remembered prefix, so the back-off the scalar encoder does by walking back through stored tables
costs here one table search per step and no history. At the cap the window ends at once, as in
the scalar encoder.

**Decoder.** A row searches its table for the child holding its cell's start: a straddling cell
closes the window, otherwise the child's byte is next. Exception windows take their recorded
byte count instead.

**Integers.** Products ``w * cum[s]`` reach ``2**(b + G + P)``. When that fits in int64 (b = 16,
24, 32 at the default G = 16, P = 14) intervals are int64 arrays; wider windows keep the same code
on numpy object arrays of Python integers, which are exact at any width (and slower). Table
searches always compare in int64: the search key is clipped to the table's total first.

Why hand-written rather than ``constriction``: its range and ANS coders write one continuous code
per stream in whole 32-bit words with their own renormalization and termination; none can end a
window where its cell straddles a child boundary or emit exactly ``b`` bits per window, which is
what makes the Equal-Info tokens self-delimiting (and its Python API steps one stream per call).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from compresslm.coding.intervals import N_SYMBOLS, CoderParams
from compresslm.coding.window_coder import (
    IDLE,
    RESTART,
    START,
    EncodeStats,
    FrequencyModel,
    FrequencySession,
    StepTrace,
    Window,
    run_lanes,
)
from compresslm.errors import IntegrityError

#: Decoded bytes are staged per row in blocks of this many bytes before joining a unit's output.
OUT_BLOCK = 4096


def interval_dtype(params: CoderParams) -> Any:
    """int64 when ``w * cum`` (below ``2**(b + G + P)``) cannot overflow it, else Python integers."""
    return np.int64 if params.window_bits + params.guard_bits + params.precision <= 62 else object


def _mask(a: np.ndarray) -> np.ndarray:
    """A comparison's result as a bool array (object arrays may give objects, where ``~`` is not not)."""
    return np.asarray(a, dtype=bool)


def find_children(
    lo: np.ndarray, hi: np.ndarray, cum: np.ndarray, point: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`.intervals.find_child` for many rows: row ``k``'s byte whose child of
    ``[lo[k], hi[k])`` holds ``point[k]``, and that child's bounds."""
    w = hi - lo
    total = cum[:, N_SYMBOLS]
    limit = np.minimum(((point - lo + 1) * total - 1) // w, total).astype(np.int64)
    s = np.count_nonzero(cum[:, 1:N_SYMBOLS] <= limit[:, None], axis=1)
    k = np.arange(len(s))
    return s, lo + (w * cum[k, s]) // total, lo + (w * cum[k, s + 1]) // total


def lowest_straddling_cells(lo: np.ndarray, hi: np.ndarray, cum: np.ndarray, guard_bits: int) -> np.ndarray:
    """:func:`.intervals.lowest_straddling_cell` for many rows (-1 where a row has none).

    The same walk, child by child, on the rows still searching; almost every row decides in the
    first round, a row continues only when a child ends exactly on a cell boundary."""
    unit = 1 << guard_bits
    out = np.full(len(lo), -1, dtype=lo.dtype)
    j = (lo + unit - 1) >> guard_bits
    last = (hi >> guard_bits) - 1
    idx = np.flatnonzero(_mask(j <= last))
    while len(idx):
        start = j[idx] << guard_bits
        if len(idx) == len(lo):  # every row: no copies
            _, _, end = find_children(lo, hi, cum, start)
        else:
            _, _, end = find_children(lo[idx], hi[idx], cum[idx], start)
        inside = _mask(end < start + unit)
        out[idx[inside]] = j[idx[inside]]
        nxt = end >> guard_bits
        aligned = _mask((end & (unit - 1)) == 0)
        within = _mask(nxt <= last[idx])
        hit = ~inside & ~aligned & within
        out[idx[hit]] = nxt[hit]
        go = ~inside & aligned & within
        j[idx[go]] = nxt[go]
        idx = idx[go]
    return out


def shortest_dyadic_cells(lo: np.ndarray, hi: np.ndarray, window_bits: int, guard_bits: int) -> np.ndarray:
    """:func:`.intervals.shortest_dyadic_cell` for many rows (each interval holds a whole cell)."""
    total = window_bits + guard_bits
    out = np.zeros(len(lo), dtype=lo.dtype)
    todo = np.ones(len(lo), dtype=bool)
    for length in range(window_bits + 1):
        size = 1 << (total - length)
        m = (lo + size - 1) // size
        ok = todo & _mask((m + 1) * size <= hi)
        out[ok] = m[ok] << (window_bits - length)
        todo &= ~ok
        if not todo.any():
            break
    return out


class _Lane:
    """What encoder and decoder lanes share: rows, their units and the step loop."""

    def __init__(
        self,
        session: FrequencySession,
        params: CoderParams,
        take: Callable[[], int],
        done_bytes: Callable[[int], None],
        trace: StepTrace | None,
        failed: threading.Event,
    ) -> None:
        self.session, self.params, self.trace, self.failed = session, params, trace, failed
        self.take, self.done_bytes = take, done_bytes  # next unit (-1: none), progress in bytes
        n = session.n_rows
        self.dtype = interval_dtype(params)
        self.unit = np.full(n, -1, dtype=np.int64)
        self.t = np.zeros(n, dtype=np.int64)  # bytes in the row's open window
        self.lo = np.zeros(n, dtype=self.dtype)
        self.hi = np.full(n, params.scale, dtype=self.dtype)
        self.positions = 0

    def run(self) -> None:
        session = self.session
        start_table: np.ndarray | None = getattr(session, "start_table", None)
        for row in range(session.n_rows):
            self._assign(row)
        tokens = np.full(session.n_rows, IDLE, dtype=np.int64)
        while not self.failed.is_set():
            if start_table is not None:
                # Windows open on the constant start table, without a model step (see window_coder).
                while len(rows := np.flatnonzero((self.unit >= 0) & (self.t == 0))):
                    self._open(rows, start_table)
            rows = np.flatnonzero(self.unit >= 0)
            if not len(rows):
                return
            t = self.t[rows]
            previous = self._previous(rows)
            tokens.fill(IDLE)
            if start_table is None:
                tokens[rows] = np.where(t == 0, START, previous)
            else:
                tokens[rows] = previous + np.where(t == 1, RESTART, 0)
            tables = session.step(tokens)
            self._feed(rows, tables if len(rows) == len(tables) else tables[rows])
            if self.trace is not None:
                self.trace.append((len(rows), session.n_rows, time.perf_counter()))

    def _reset_window(self, rows: np.ndarray) -> None:
        self.t[rows] = 0
        self.lo[rows] = 0
        self.hi[rows] = self.params.scale

    def _assign(self, row: int) -> None:
        raise NotImplementedError

    def _previous(self, rows: np.ndarray) -> np.ndarray:
        """The byte before each row's next one (any value where the window is empty)."""
        raise NotImplementedError

    def _feed(self, rows: np.ndarray, cum: np.ndarray) -> None:
        """Row ``rows[k]`` gets ``cum[k]``, the table of its window's next byte."""
        raise NotImplementedError

    def _open(self, rows: np.ndarray, start: np.ndarray) -> None:
        """:meth:`_feed` for rows whose window is empty, all with the same table ``start``: one
        1-D table, so its children are computed without a search over every row's table."""
        raise NotImplementedError

    def _start_children(self, start: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of byte ``s``'s child of the whole scale ``[0, 2**(b + G))`` under ``start``."""
        scale, total = self.params.scale, int(start[N_SYMBOLS])
        c0, c1 = start[s].astype(self.dtype), start[s + 1].astype(self.dtype)
        return (c0 * scale) // total, (c1 * scale) // total


class _EncodeLane(_Lane):
    """Encodes units of ``flat`` (unit ``u`` is ``flat[offsets[u] : offsets[u] + lengths[u]]``)."""

    def __init__(
        self, flat: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.flat, self.offsets, self.lengths = flat, offsets, lengths
        n = self.session.n_rows
        self.base = np.zeros(n, dtype=np.int64)  # the window's first byte in ``flat``
        self.end = np.zeros(n, dtype=np.int64)  # the unit's end in ``flat``
        self.stop_k = np.zeros(n, dtype=np.int64)  # longest stoppable prefix of the window so far (0: none)
        self.stop_cell = np.zeros(n, dtype=self.dtype)
        self.bits = np.zeros(n, dtype=np.float64)  # -log2 p of the window's bytes so far
        self.stop_bits = np.zeros(n, dtype=np.float64)
        self.events: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.stats = EncodeStats()

    def _assign(self, row: int) -> None:
        u = self.take()
        self.unit[row] = u
        self._reset_window(np.array([row]))
        if u >= 0:
            self.base[row] = self.offsets[u]
            self.end[row] = self.offsets[u] + self.lengths[u]

    def _previous(self, rows: np.ndarray) -> np.ndarray:
        return self.flat[self.base[rows] + np.maximum(self.t[rows] - 1, 0)].astype(np.int64)

    def _reset_window(self, rows: np.ndarray) -> None:
        super()._reset_window(rows)
        self.stop_k[rows] = 0
        self.bits[rows] = 0.0

    def _feed(self, rows: np.ndarray, cum: np.ndarray) -> None:
        p = self.params
        g, unit = p.guard_bits, 1 << p.guard_bits
        self.positions += len(rows)
        t, lo, hi = self.t[rows], self.lo[rows], self.hi[rows]
        total = cum[:, N_SYMBOLS]
        if p.code == "straddle":
            # Is the window's prefix of t bytes stoppable? (t = 0 never is: a window holds a byte.)
            cand = np.flatnonzero(t >= 1)
            if len(cand):
                if len(cand) == len(rows):  # every row: no copies
                    cells = lowest_straddling_cells(lo, hi, cum, g)
                else:
                    cells = lowest_straddling_cells(lo[cand], hi[cand], cum[cand], g)
                ok = _mask(cells >= 0)
                at = rows[cand[ok]]
                self.stop_k[at] = t[cand[ok]]
                self.stop_cell[at] = cells[ok]
                self.stop_bits[at] = self.bits[at]
        pos = self.base[rows] + t
        unit_end = pos == self.end[rows]
        x = self.flat[np.minimum(pos, len(self.flat) - 1)].astype(np.int64)
        k = np.arange(len(rows))
        c0, c1 = cum[k, x], cum[k, x + 1]
        w = hi - lo
        clo, chi = lo + (w * c0) // total, lo + (w * c1) // total
        fits = _mask(((clo + unit - 1) >> g) <= (chi >> g) - 1)
        self._grow(rows, t, ~unit_end & fits, clo, chi, np.log2(total / (c1 - c0)), cum)

    def _open(self, rows: np.ndarray, start: np.ndarray) -> None:
        # The first byte always fits: b >= P + 2 leaves every child of the whole scale 4 cells.
        self.positions += len(rows)
        x = self.flat[self.base[rows]].astype(np.int64)
        clo, chi = self._start_children(start, x)
        bits = np.log2(int(start[N_SYMBOLS]) / (start[x + 1] - start[x]))
        cum = np.broadcast_to(start, (len(rows), N_SYMBOLS + 1))
        self._grow(
            rows, np.zeros(len(rows), dtype=np.int64), np.ones(len(rows), dtype=bool), clo, chi, bits, cum
        )

    def _grow(
        self,
        rows: np.ndarray,
        t: np.ndarray,
        grow: np.ndarray,
        clo: np.ndarray,
        chi: np.ndarray,
        bits: np.ndarray,
        cum: np.ndarray,
    ) -> None:
        """Rows with ``grow`` take their next byte (child ``[clo, chi)``, ``bits`` of information);
        the others, and those reaching the cap, close their window."""
        at = rows[grow]
        self.lo[at], self.hi[at] = clo[grow], chi[grow]
        self.t[at] += 1
        self.bits[at] += bits[grow]
        capped = grow & (t + 1 == self.params.max_window_bytes)
        closing = ~grow | capped
        if closing.any():
            self._close(rows[closing], cum[closing], capped[closing])

    def _close(self, rows: np.ndarray, cum: np.ndarray, capped: np.ndarray) -> None:
        """End the windows of ``rows`` (greedy end: their current prefix) as the scalar encoder's
        ``_finish`` does; rows whose unit is then done take the next one."""
        p = self.params
        g = p.guard_bits
        n, lo, hi = self.t[rows], self.lo[rows], self.hi[rows]
        first = (lo + (1 << g) - 1) >> g
        if p.code == "zeros":
            cell = shortest_dyadic_cells(lo, hi, p.window_bits, g)
            nbytes = n
            exception = np.zeros(len(rows), dtype=bool)
            open_end = np.flatnonzero(~capped)
            if len(open_end):
                start = cell[open_end] << g
                _, _, end = find_children(lo[open_end], hi[open_end], cum[open_end], start)
                exception[open_end] = ~_mask(end < start + (1 << g))  # the cell sits inside one child
            bits = self.bits[rows]
        else:
            stop = ~capped & (self.stop_k[rows] > 0)
            exception = ~capped & ~stop
            cell = np.where(stop, self.stop_cell[rows], first)
            nbytes = np.where(stop, self.stop_k[rows], n)
            bits = np.where(stop, self.stop_bits[rows], self.bits[rows])
        st = self.stats
        st.windows += len(rows)
        st.exceptions += int(exception.sum())
        st.backed_off += int(np.count_nonzero(nbytes < n))
        st.ideal_bits += float(bits.sum())
        self.events.append((self.unit[rows].copy(), cell, nbytes, exception))
        self.base[rows] += nbytes
        self._reset_window(rows)
        finished = rows[self.base[rows] >= self.end[rows]]
        self.done_bytes(int(nbytes.sum()))
        for row in finished.tolist():
            self._assign(row)


class _DecodeLane(_Lane):
    """Decodes units from their window codes (unit ``u``: ``codes[starts[u] : starts[u + 1]]``,
    ``limits`` the recorded byte count of exception windows, -1 elsewhere)."""

    def __init__(
        self,
        codes: np.ndarray,
        limits: np.ndarray,
        starts: np.ndarray,
        lengths: np.ndarray | None,
        outputs: list[bytes],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.codes, self.limits, self.starts = codes, limits, starts
        self.lengths, self.outputs = lengths, outputs
        n = self.session.n_rows
        self.at = np.zeros(n, dtype=np.int64)  # the row's current window in ``codes``
        self.stop = np.zeros(n, dtype=np.int64)  # its unit's end in ``codes``
        self.made = np.zeros(n, dtype=np.int64)  # bytes of the unit decoded so far
        self.length = np.full(n, -1, dtype=np.int64)  # the unit's recorded length (-1: unknown)
        self.last = np.zeros(n, dtype=np.int64)
        self.block = np.zeros((n, OUT_BLOCK), dtype=np.uint8)
        self.fill = np.zeros(n, dtype=np.int64)
        self.parts: list[list[bytes]] = [[] for _ in range(n)]

    def _assign(self, row: int) -> None:
        u = self.take()
        self.unit[row] = u
        self._reset_window(np.array([row]))
        if u >= 0:
            self.at[row], self.stop[row] = self.starts[u], self.starts[u + 1]
            self.made[row] = 0
            self.length[row] = -1 if self.lengths is None else self.lengths[u]
            self.fill[row] = 0
            self.parts[row] = []

    def _previous(self, rows: np.ndarray) -> np.ndarray:
        return self.last[rows]

    def _feed(self, rows: np.ndarray, cum: np.ndarray) -> None:
        start = self.codes[self.at[rows]] << self.params.guard_bits
        self._grow(rows, start, *find_children(self.lo[rows], self.hi[rows], cum, start))

    def _open(self, rows: np.ndarray, table: np.ndarray) -> None:
        start = self.codes[self.at[rows]] << self.params.guard_bits
        total = int(table[N_SYMBOLS])
        limit = np.minimum(((start + 1) * total - 1) // self.params.scale, total).astype(np.int64)
        s = np.searchsorted(table[1:N_SYMBOLS], limit, side="right")
        self._grow(rows, start, s, *self._start_children(table, s))

    def _grow(
        self, rows: np.ndarray, start: np.ndarray, s: np.ndarray, clo: np.ndarray, chi: np.ndarray
    ) -> None:
        """Rows whose cell ``start`` lies inside the child ``[clo, chi)`` of byte ``s`` take that byte;
        a cell straddling the child's end closes the window."""
        p = self.params
        unit = 1 << p.guard_bits
        self.positions += len(rows)
        t, at = self.t[rows], self.at[rows]
        limit = self.limits[at]
        complete = (limit < 0) & _mask(chi < start + unit)
        if (complete & (t == 0)).any():
            r = rows[complete & (t == 0)][0]
            w = int(self.at[r] - self.starts[self.unit[r]])
            raise IntegrityError(f"window {w} decodes to no bytes: the window bits are corrupt")
        grow = ~complete
        e = rows[grow]
        self.lo[e], self.hi[e] = clo[grow], chi[grow]
        self.t[e] += 1
        self.last[e] = s[grow]
        self.block[e, self.fill[e]] = s[grow]
        self.fill[e] += 1
        self.made[e] += 1
        over = e[(self.length[e] >= 0) & (self.made[e] > self.length[e])]
        if len(over):
            r = over[0]
            w = int(self.at[r] - self.starts[self.unit[r]])
            raise IntegrityError(
                f"window {w} decodes past the recorded length of {self.length[r]} bytes: the window "
                "bits, the exception table or the model do not match"
            )
        for r in e[self.fill[e] == OUT_BLOCK].tolist():
            self.parts[r].append(self.block[r].tobytes())
            self.fill[r] = 0
        cap = np.where(limit < 0, p.max_window_bytes, limit)
        closing = complete | (grow & (t + 1 == cap))
        if closing.any():
            self._close(rows[closing])

    def _close(self, rows: np.ndarray) -> None:
        self.done_bytes(int(self.t[rows].sum()))
        self.at[rows] += 1
        self._reset_window(rows)
        for r in rows[self.at[rows] == self.stop[rows]].tolist():
            self.parts[r].append(self.block[r, : self.fill[r]].tobytes())
            self.outputs[int(self.unit[r])] = b"".join(self.parts[r])
            self._assign(r)


def _run(
    make: Callable[[FrequencySession, Callable[[], int], threading.Event], _Lane],
    sizes: np.ndarray,
    todo: np.ndarray,
    model: FrequencyModel,
    params: CoderParams,
    batch_size: int,
) -> list[_Lane]:
    """Drive lanes over the units with ``todo`` set, longest first (as the scalar ``_drive``)."""
    order = [int(u) for u in np.argsort(-sizes, kind="stable") if todo[u]]
    if not order:
        return []
    pending = iter(order)
    lock = threading.Lock()
    lanes: list[_Lane] = []

    def lane(session: FrequencySession, failed: threading.Event) -> None:
        def take() -> int:
            with lock:
                return -1 if failed.is_set() else next(pending, -1)

        run = make(session, take, failed)
        with lock:
            lanes.append(run)
        run.run()

    run_lanes(model, max(1, min(batch_size, len(order))), params.max_window_bytes, lane)
    return lanes


def _reporter(on_bytes: Callable[[int], None] | None) -> Callable[[int], None]:
    lock = threading.Lock()

    def report(n: int) -> None:
        if n and on_bytes is not None:
            with lock:
                on_bytes(n)

    return report


def encode_vector(
    units: Sequence[bytes],
    model: FrequencyModel,
    params: CoderParams,
    *,
    batch_size: int,
    on_bytes: Callable[[int], None] | None = None,
    stats: EncodeStats | None = None,
    trace: StepTrace | None = None,
) -> list[list[Window]]:
    """The vectorized :func:`.window_coder.encode_units` (same arguments, same windows)."""
    lengths = np.array([len(u) for u in units], dtype=np.int64)
    flat = np.frombuffer(b"".join(units) + b"\0", dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    report = _reporter(on_bytes)

    def make(session: FrequencySession, take: Callable[[], int], failed: threading.Event) -> _Lane:
        return _EncodeLane(flat, offsets, lengths, session, params, take, report, trace, failed)

    lanes = _run(make, lengths, lengths > 0, model, params, batch_size)
    out: list[list[Window]] = [[] for _ in units]
    events = [e for lane in lanes for e in lane.events]  # type: ignore[attr-defined]
    if events:
        owner = np.concatenate([e[0] for e in events])
        order = np.argsort(owner, kind="stable")  # a unit's windows were closed in order
        cells = np.concatenate([e[1] for e in events])[order].tolist()
        nbytes = np.concatenate([e[2] for e in events])[order].tolist()
        exc = np.concatenate([e[3] for e in events])[order].tolist()
        windows = list(map(Window, cells, nbytes, exc))
        ends = np.cumsum(np.bincount(owner, minlength=len(units))).tolist()
        out = [windows[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    if stats is not None:
        stats.bytes += int(lengths.sum())
        for lane in lanes:
            s: EncodeStats = lane.stats  # type: ignore[attr-defined]
            stats.windows += s.windows
            stats.exceptions += s.exceptions
            stats.backed_off += s.backed_off
            stats.ideal_bits += s.ideal_bits
            stats.positions += lane.positions
    return out


def decode_vector(
    units: Sequence[tuple[Sequence[int], Mapping[int, int]]],
    model: FrequencyModel,
    params: CoderParams,
    *,
    lengths: Sequence[int] | None,
    batch_size: int,
    on_bytes: Callable[[int], None] | None = None,
) -> list[bytes]:
    """The vectorized :func:`.window_coder.decode_units` body (units already checked)."""
    dtype = interval_dtype(params)
    counts = np.array([len(c) for c, _ in units], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    codes = np.zeros(int(starts[-1]) + 1, dtype=dtype)  # never empty
    codes[:-1] = [int(x) for c, _ in units for x in c]
    limits = np.full(len(codes), -1, dtype=np.int64)
    for u, (_, exc) in enumerate(units):
        for w, nb in exc.items():
            limits[starts[u] + w] = nb
    sizes = np.array(lengths, dtype=np.int64) if lengths is not None else counts
    outputs = [b""] * len(units)
    report = _reporter(on_bytes)

    def make(session: FrequencySession, take: Callable[[], int], failed: threading.Event) -> _Lane:
        known = None if lengths is None else sizes
        return _DecodeLane(codes, limits, starts, known, outputs, session, params, take, report, None, failed)

    _run(make, sizes, counts > 0, model, params, batch_size)
    return outputs
