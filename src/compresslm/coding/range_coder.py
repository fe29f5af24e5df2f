"""The range coder of stream mode: one arithmetic code per segment, driven exactly by integer
cumulative frequency tables (the same tables as the window coder, see :mod:`.intervals`).

Two implementations of one coder: :class:`RangeEncoder` / :class:`RangeDecoder` code one stream
with Python integers (the reference), :class:`VectorEncoder` / :class:`VectorDecoder` advance many
streams (the rows of a model batch) in compiled (numba) loops: the decoder one symbol per row and
call, the encoder a run of symbols per row (a whole chunk, whose intervals the encoder knows in
advance). Property tests check that both write the same bytes and read them back.

Why our own and not ``constriction``'s ``RangeEncoder``: constriction takes float probabilities and
re-quantizes them with its own rounding (so our integer tables would not drive it exactly), and
each of its coders is one stream, so a batch of 512 rows would cost 512 Python calls per byte.

State and invariants (all integers; ``T = cum[256] <= 2**24`` is the table's total):

* ``low`` in ``[0, 2**32)`` and ``range`` in ``[2**24, 2**32]`` between symbols. After ``n``
  output bytes ``B`` the coded interval is ``[B * 2**32 + low, B * 2**32 + low + range)``, scaled
  by ``256**-(n + 4)``; it starts as ``[0, 2**32)``, i.e. ``[0, 1)``.
* A symbol ``s`` narrows it to ``low += r * cum[s]``, ``range = r * (cum[s+1] - cum[s])`` with
  ``r = range // T``: children of different symbols are disjoint and lie inside the parent, which
  is why the decoder (which finds the ``s`` with ``r * cum[s] <= code - low < r * cum[s+1]``) reads
  back exactly what was written. ``r >= 2**24 / T``: at precision 14 the rounding of ``r`` costs at
  most ``log2(1 + 2**-10)`` bits per symbol.
* A new interval can end above ``2**32`` (a carry into the bytes already written): at most once per
  written byte, because after the carry the interval lies below ``2**32`` until the next shift.
  The carry is added to the written bytes at once (through trailing ``0xff`` bytes).
* ``range < 2**24`` shifts the top byte of ``low`` out. At the end, the number with the most
  trailing zero bits inside the final interval is written and trailing zero bytes are dropped: the
  decoder reads zeros past the end of its input, so they carry no information.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit

TOP = 1 << 32
BOTTOM = 1 << 24
MASK = TOP - 1
MAX_TOTAL = BOTTOM  # tables must sum to at most this (precision <= 24), so that r >= 1
_N = 256


def _flush_value(low: int, rng: int) -> int:
    """The number in ``[low, low + rng)`` with the most trailing zero bits (may be >= 2**32)."""
    hi = low + rng - 1
    if hi == low:
        return low
    d = (low ^ hi).bit_length() - 1  # highest bit where low and hi differ: low has 0, hi has 1
    if low & ((2 << d) - 1) == 0:  # low is itself a multiple of 2**(d + 1)
        return low
    return (hi >> d) << d


def _finish(out: bytearray, low: int, rng: int) -> bytes:
    value = _flush_value(low, rng)
    if value >= TOP:
        _carry(out)
        value -= TOP
    out += value.to_bytes(4, "big")
    return bytes(out).rstrip(b"\0")


def _carry(out: bytearray) -> None:
    i = len(out) - 1
    while out[i] == 0xFF:
        out[i] = 0
        i -= 1
    out[i] += 1


class RangeEncoder:
    """One stream, Python integers: the reference the vectorized encoder is tested against."""

    def __init__(self) -> None:
        self.low = 0
        self.range = TOP
        self.out = bytearray()

    def encode(self, cum: Sequence[int] | np.ndarray, symbol: int) -> None:
        total = int(cum[_N])
        r = self.range // total
        self.low += r * int(cum[symbol])
        self.range = r * (int(cum[symbol + 1]) - int(cum[symbol]))
        if self.low >= TOP:
            self.low -= TOP
            _carry(self.out)
        while self.range < BOTTOM:
            self.out.append(self.low >> 24)
            self.low = (self.low << 8) & MASK
            self.range <<= 8

    def finish(self) -> bytes:
        """The code: every symbol encoded so far, decodable by :class:`RangeDecoder`."""
        return _finish(self.out, self.low, self.range)


class RangeDecoder:
    """Reads what :class:`RangeEncoder` wrote, given the same tables in the same order."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 4
        self.range = TOP
        self.value = int.from_bytes(data[:4].ljust(4, b"\0"), "big")  # code - low

    def decode(self, cum: Sequence[int] | np.ndarray) -> int:
        total = int(cum[_N])
        r = self.range // total
        v = min(self.value // r, total - 1)
        s = int(np.searchsorted(np.asarray(cum), v, side="right")) - 1
        self.value -= r * int(cum[s])
        self.range = r * (int(cum[s + 1]) - int(cum[s]))
        while self.range < BOTTOM:
            byte = self.data[self.pos] if self.pos < len(self.data) else 0
            self.pos += 1
            self.value = (self.value << 8) | byte
            self.range <<= 8
        self.value = min(self.value, self.range - 1)  # only a damaged code gets here; keeps it bounded
        return s


# ------------------------------------------------------------------ the vectorized coder (numba)
#
# The vectorized coder's arithmetic runs in compiled loops over rows (and, for the encoder, over a
# row's whole run of symbols): the same integer operations as :class:`RangeEncoder` in int64
# (``range < 2**33``, ``r * cum <= range < 2**33``, ``low < 2**33``), one call per batch instead of a
# dozen numpy operations per symbol. ``nogil``: the coder lanes (threads) run them in parallel.


@njit(cache=True, nogil=True)
def _encode_runs(low, rng, n, buf, rows, start, freq, total, count):  # pragma: no cover - compiled
    """Row ``rows[i]`` codes ``count[i]`` symbols: symbol t has cumulative ``start[i, t]`` and
    frequency ``freq[i, t]`` in a table of total ``total[i, t]``. Its bytes go to ``buf[rows[i]]``
    after its first ``n[rows[i]]`` (the caller leaves room for 3 bytes per symbol: a symbol shifts
    out at most 3, since ``r * freq >= 1``). Returns the symbols' information, sum log2(total/freq)."""
    bits = 0.0
    for i in range(rows.shape[0]):
        row = rows[i]
        lo, rg, m = low[row], rng[row], n[row]
        out = buf[row]
        for t in range(count[i]):
            r = rg // total[i, t]
            lo += r * start[i, t]
            rg = r * freq[i, t]
            bits += math.log2(total[i, t] / freq[i, t])
            if lo >= TOP:  # a carry into the bytes already written (through trailing 0xff)
                lo -= TOP
                j = m - 1
                while out[j] == 0xFF:
                    out[j] = 0
                    j -= 1
                out[j] += 1
            while rg < BOTTOM:
                out[m] = lo >> 24
                m += 1
                lo = (lo << 8) & MASK
                rg <<= 8
        low[row], rng[row], n[row] = lo, rg, m
    return bits


@njit(cache=True, nogil=True)
def decode_advance(value, rng, pos, end, data, row, r, start, freq):  # pragma: no cover - compiled
    """Row ``row`` has decoded the symbol of cumulative ``start`` and frequency ``freq`` (at
    ``r = range // total``): narrow its interval, then read bytes ``data[pos]`` while ``pos < end``
    (zeros after, from the sentinel at ``data[-1]``) until ``range >= 2**24``. The part of a
    decoding step after the search, shared by :func:`_decode_step` and the exact M1's fused
    decoding kernel (``exact_kernels.decode``), so both advance a row by the same operations."""
    val = value[row] - r * start
    rg = r * freq
    p, e = pos[row], end[row]
    sentinel = data.shape[0] - 1
    while rg < BOTTOM:
        val = (val << 8) | data[p if p < e else sentinel]
        rg <<= 8
        p += 1
    value[row] = min(val, rg - 1)  # only a damaged code gets here; keeps it bounded
    rng[row] = rg
    pos[row] = p


@njit(cache=True, nogil=True)
def _decode_step(value, rng, pos, end, data, rows, cum, sym):  # pragma: no cover - compiled
    """Row ``rows[i]`` decodes one symbol with table ``cum[i]`` into ``sym[i]``: the ``s`` with
    ``r cum[s] <= value < r cum[s + 1]`` (binary search for the last ``cum[s] <= v``, as the
    reference's ``searchsorted``), then :func:`decode_advance`."""
    for i in range(rows.shape[0]):
        row = rows[i]
        tot = cum[i, _N]
        r = rng[row] // tot
        v = min(value[row] // r, tot - 1)
        a, b = 0, _N  # cum[a] <= v < cum[b]
        while b - a > 1:
            mid = (a + b) >> 1
            if cum[i, mid] <= v:
                a = mid
            else:
                b = mid
        sym[i] = a
        decode_advance(value, rng, pos, end, data, row, r, cum[i, a], cum[i, a + 1] - cum[i, a])


class VectorEncoder:
    """Many streams, one row each: :meth:`encode` advances a set of rows by one symbol each,
    :meth:`encode_runs` by a run of symbols each (one compiled call either way).

    Same arithmetic as :class:`RangeEncoder` in int64. Each row's bytes grow in a (rows, capacity)
    buffer; :meth:`finish` returns a row's code and frees it.
    """

    def __init__(self, n_rows: int) -> None:
        self.low = np.zeros(n_rows, dtype=np.int64)
        self.range = np.full(n_rows, TOP, dtype=np.int64)
        self.n = np.zeros(n_rows, dtype=np.int64)
        self.buf = np.zeros((n_rows, 256), dtype=np.uint8)

    def encode(self, rows: np.ndarray, start: np.ndarray, freq: np.ndarray, total: np.ndarray) -> None:
        """Row ``rows[k]`` codes the symbol with cumulative ``start[k]``, frequency ``freq[k]`` in a
        table of total ``total[k]`` (int64 arrays; ``rows`` without repeats)."""
        rows = np.asarray(rows, dtype=np.int64)
        self.encode_runs(
            rows,
            *(np.asarray(a, dtype=np.int64)[:, None] for a in (start, freq, total)),
            np.ones(len(rows), np.int64),
        )

    def encode_runs(
        self, rows: np.ndarray, start: np.ndarray, freq: np.ndarray, total: np.ndarray, count: np.ndarray
    ) -> float:
        """Row ``rows[k]`` codes ``count[k]`` symbols, symbol t with ``start[k, t]``, ``freq[k, t]``
        and ``total[k, t]`` ((len(rows), T) int64 arrays; ``rows`` without repeats). Returns their
        information in bits (sum of log2(total / freq))."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        count = np.ascontiguousarray(count, dtype=np.int64)
        if not len(rows):
            return 0.0
        need = int((self.n[rows] + 3 * count).max())
        if need > self.buf.shape[1]:
            grown = np.zeros((self.buf.shape[0], max(need, 2 * self.buf.shape[1])), dtype=np.uint8)
            grown[:, : self.buf.shape[1]] = self.buf
            self.buf = grown
        return float(
            _encode_runs(
                self.low,
                self.range,
                self.n,
                self.buf,
                rows,
                *(np.ascontiguousarray(a, dtype=np.int64) for a in (start, freq, total)),
                count,
            )
        )

    def finish(self, row: int) -> bytes:
        """Row ``row``'s code; the row is then empty, ready for a new stream."""
        out = bytearray(self.buf[row, : self.n[row]].tobytes())
        code = _finish(out, int(self.low[row]), int(self.range[row]))
        self.low[row], self.range[row], self.n[row] = 0, TOP, 0
        return code


class VectorDecoder:
    """Many streams read from one byte buffer: row ``r`` reads ``data[offset : offset + length]``
    (zeros past its end); :meth:`decode` advances a set of rows by one symbol each."""

    def __init__(self, n_rows: int, data: bytes | np.ndarray) -> None:
        self.data = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
        self.data = np.concatenate([self.data, np.zeros(1, dtype=np.uint8)])  # reads past an end land here
        self.value = np.zeros(n_rows, dtype=np.int64)
        self.range = np.full(n_rows, TOP, dtype=np.int64)
        self.pos = np.zeros(n_rows, dtype=np.int64)
        self.end = np.zeros(n_rows, dtype=np.int64)

    def start(self, row: int, offset: int, length: int) -> None:
        """Row ``row`` begins the stream stored at ``data[offset : offset + length]``."""
        head = bytes(self.data[offset : offset + min(length, 4)]).ljust(4, b"\0")
        self.value[row] = int.from_bytes(head, "big")
        self.range[row] = TOP
        self.pos[row] = offset + 4
        self.end[row] = offset + length

    def state(self) -> tuple[np.ndarray, ...]:
        """The arrays a compiled decoding step updates in place, in the order of
        :func:`decode_advance`'s first five arguments: value, range, pos, end and data."""
        return self.value, self.range, self.pos, self.end, self.data

    def decode(self, rows: np.ndarray, cum: np.ndarray) -> np.ndarray:
        """The next symbol of each row in ``rows``, given its table ``cum[k]`` (k, 257)."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        sym = np.empty(len(rows), dtype=np.int64)
        _decode_step(
            self.value,
            self.range,
            self.pos,
            self.end,
            self.data,
            rows,
            np.ascontiguousarray(cum, dtype=np.int64),
            sym,
        )
        return sym
