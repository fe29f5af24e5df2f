"""Exact integer arithmetic of the Equal-Info window coder (docs/design.md#the-window-coder). No torch, no floats
after quantization.

Conventions (``b`` window bits, ``G`` guard bits, ``P`` frequency precision):

* A frequency table is a cumulative array ``cum`` of 257 non-decreasing integers, ``cum[0] == 0``,
  ``cum[s + 1] - cum[s] >= 1`` (every byte codable) and ``T = cum[256] <= 2**P``.
* Intervals are half-open integer ranges ``[lo, hi)`` on the scale ``2**(b + G)``; a window starts
  at ``[0, 2**(b + G))``. The child of byte ``s`` is
  ``[lo + (w * cum[s]) // T, lo + (w * cum[s + 1]) // T)`` with ``w = hi - lo``; children tile the
  parent exactly (the first starts at ``lo``, the last ends at ``hi``) and some may be empty.
* A **cell** ``j`` is ``[j << G, (j + 1) << G)``: the window's code is one cell, i.e. ``b`` bits.
  A cell is *whole* in an interval when it lies entirely inside it.

All functions take Python integers, so the same code serves b = 16 and b = 128; numpy only searches
frequency tables, whose values stay below ``2**P``. Products like ``w * cum[s]`` reach
``2**(b + G + P)``; Python integers never overflow. The vectorized coder
(:mod:`.window_vector`) computes the same expressions on int64 arrays while ``b + G + P <= 62``
and on arrays of Python integers beyond.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compresslm.errors import ConfigError

CODES = ("straddle", "zeros")
N_SYMBOLS = 256


@dataclass(frozen=True)
class CoderParams:
    """Parameters that encoder and decoder must share; all of them are stored in a .clm header.

    ``window_bits`` (b): bits per window, a multiple of 8 (windows pack into whole bytes).
    ``precision`` (P): frequencies sum to at most ``2**P``; every byte gets at least 1.
    ``guard_bits`` (G): extra resolution below one cell, so rounding the children costs little.
    ``max_window_bytes``: the cap; a window never holds more bytes (M1's row length).
    ``code``: ``"straddle"`` (self-delimiting, decodes from the cell alone) or ``"zeros"`` (the
    paper's shortest dyadic interval, zero-padded; over-runs are recorded as exceptions).
    """

    window_bits: int = 16
    precision: int = 14
    guard_bits: int = 16
    max_window_bytes: int = 64
    code: str = "straddle"

    def __post_init__(self) -> None:
        b, p = self.window_bits, self.precision
        for name in ("window_bits", "precision", "guard_bits", "max_window_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"coder parameter {name} must be a positive integer, got {value!r}")
        if b % 8:
            raise ConfigError(f"--window-bits must be a multiple of 8 (windows pack into bytes), got {b}")
        if not 9 <= p <= 24:
            raise ConfigError(f"coder precision must be in 9..24 (256 symbols need 2**P > 256), got {p}")
        if b < p + 2:
            # The first byte's child is then at least 2**(b+G-P) >= 4 cells wide, so it always holds a
            # whole cell: every window codes at least one byte and the encoder always makes progress.
            raise ConfigError(f"--window-bits {b} must be at least precision + 2 = {p + 2}")
        if self.code not in CODES:
            raise ConfigError(f"--code must be one of {', '.join(CODES)}, got {self.code!r}")

    @property
    def scale(self) -> int:
        """Width of the initial interval, ``2**(b + G)``."""
        return 1 << (self.window_bits + self.guard_bits)

    def to_dict(self) -> dict[str, int | str]:
        return {
            "window_bits": self.window_bits,
            "precision": self.precision,
            "guard_bits": self.guard_bits,
            "max_window_bytes": self.max_window_bytes,
            "code": self.code,
        }


def quantize(probs: np.ndarray, precision: int) -> np.ndarray:
    """Cumulative frequency tables from probabilities: ``f_s = 1 + floor(p_s * (2**P - 256))``.

    ``probs`` is (..., 256) float32 (M1's softmax). The product is formed in float64, where a
    float32 times a 14-bit integer is exact, so ``floor`` is exact and the same on every machine.
    If float32 rounding makes the probabilities sum above 1 so that ``T > 2**P``, the largest
    frequency gives up the excess (never happens for a softmax in practice; it keeps the invariant).
    Returns int64 (..., 257) with ``cum[..., 0] == 0``.
    """
    if probs.shape[-1] != N_SYMBOLS:
        raise ConfigError(f"expected {N_SYMBOLS} probabilities per row, got {probs.shape[-1]}")
    p = np.asarray(probs, dtype=np.float32).astype(np.float64)
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ConfigError("probabilities must be finite and non-negative")
    budget = (1 << precision) - N_SYMBOLS
    freqs = 1 + np.floor(p * budget).astype(np.int64)
    excess = freqs.sum(axis=-1) - (1 << precision)
    if np.any(excess > 0):
        flat = freqs.reshape(-1, N_SYMBOLS)
        over = np.flatnonzero(excess.reshape(-1) > 0)
        top = flat[over].argmax(axis=-1)
        flat[over, top] -= excess.reshape(-1)[over]
        freqs = flat.reshape(freqs.shape)
    cum = np.zeros(freqs.shape[:-1] + (N_SYMBOLS + 1,), dtype=np.int64)
    np.cumsum(freqs, axis=-1, out=cum[..., 1:])
    return cum


def check_table(cum: np.ndarray, precision: int) -> None:
    """Raise ConfigError unless ``cum`` is a valid cumulative table (for tables from outside M1)."""
    cum = np.asarray(cum)
    if cum.shape != (N_SYMBOLS + 1,):
        raise ConfigError(f"frequency table must have {N_SYMBOLS + 1} entries, got shape {cum.shape}")
    if cum[0] != 0 or np.any(np.diff(cum) < 1) or cum[-1] > (1 << precision):
        raise ConfigError(
            f"invalid frequency table: need cum[0] = 0, every frequency >= 1, total <= 2**{precision}"
        )


def child(lo: int, hi: int, cum: np.ndarray, s: int) -> tuple[int, int]:
    """The sub-interval of byte ``s`` in ``[lo, hi)``."""
    w, total = hi - lo, int(cum[N_SYMBOLS])
    return lo + (w * int(cum[s])) // total, lo + (w * int(cum[s + 1])) // total


def find_child(lo: int, hi: int, cum: np.ndarray, point: int) -> tuple[int, int, int]:
    """The byte whose child contains ``point`` (``lo <= point < hi``), with that child's bounds.

    ``lo + (w * c) // T <= point`` holds exactly when ``c <= ((point - lo + 1) * T - 1) // w``, so a
    search on the table itself (values below 2**P) finds the last child starting at or before the
    point; empty children before it are skipped because the search takes the last such index.
    """
    w, total = hi - lo, int(cum[N_SYMBOLS])
    limit = ((point - lo + 1) * total - 1) // w
    s = int(np.searchsorted(cum, limit, side="right")) - 1
    s = min(s, N_SYMBOLS - 1)
    return s, lo + (w * int(cum[s])) // total, lo + (w * int(cum[s + 1])) // total


def whole_cells(lo: int, hi: int, guard_bits: int) -> tuple[int, int]:
    """First and last whole cell of ``[lo, hi)`` (first > last when there is none)."""
    return (lo + (1 << guard_bits) - 1) >> guard_bits, (hi >> guard_bits) - 1


def fits(lo: int, hi: int, guard_bits: int) -> bool:
    """A prefix fits when its interval contains a whole cell."""
    first, last = whole_cells(lo, hi, guard_bits)
    return first <= last


def lowest_straddling_cell(lo: int, hi: int, cum: np.ndarray, guard_bits: int) -> int | None:
    """The lowest whole cell of ``[lo, hi)`` that no single child contains, or None.

    Walks child by child: the cell at ``start`` straddles when the child holding ``start`` ends
    inside it; otherwise that child's end is the next place a straddling cell can begin. Each
    iteration passes a whole child, so the loop ends after at most 256 steps.
    """
    first, last = whole_cells(lo, hi, guard_bits)
    unit = 1 << guard_bits
    j = first
    while j <= last:
        start = j << guard_bits
        _, _, end = find_child(lo, hi, cum, start)
        if end < start + unit:
            return j
        j = end >> guard_bits  # the cell holding the child's end (straddles unless end is aligned)
        if (end & (unit - 1)) == 0:
            continue
        if j <= last:
            return j
        return None
    return None


def cell_straddles(lo: int, hi: int, cum: np.ndarray, cell: int, guard_bits: int) -> bool:
    """True when ``cell`` (inside ``[lo, hi)``) is not contained in a single child."""
    start = cell << guard_bits
    _, _, end = find_child(lo, hi, cum, start)
    return end < start + (1 << guard_bits)


def shortest_dyadic_cell(lo: int, hi: int, window_bits: int, guard_bits: int) -> int:
    """The paper's code: the shortest bit string whose dyadic interval lies inside ``[lo, hi)``
    (ties: the lowest), zero-padded to ``window_bits`` bits and returned as a cell index.

    Requires that ``[lo, hi)`` contains a whole cell (then length ``b`` always succeeds).
    """
    total = window_bits + guard_bits
    for length in range(window_bits + 1):
        size = 1 << (total - length)
        m = (lo + size - 1) // size
        if (m + 1) * size <= hi:
            return m << (window_bits - length)
    raise ValueError("interval holds no whole cell")  # callers only pass fitting intervals
