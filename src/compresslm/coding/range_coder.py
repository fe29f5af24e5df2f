"""The range coder of stream mode: one arithmetic code per segment, driven exactly by integer
cumulative frequency tables (the same tables as the window coder, see :mod:`.intervals`).

Two implementations of one coder: :class:`RangeEncoder` / :class:`RangeDecoder` code one stream
with Python integers (the reference), :class:`VectorEncoder` / :class:`VectorDecoder` advance many
streams (the rows of a model batch) by one symbol each with numpy operations. Property tests check
that both write the same bytes and read them back.

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

from collections.abc import Sequence

import numpy as np

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


class VectorEncoder:
    """Many streams, one row each; :meth:`encode` advances a set of rows by one symbol each.

    Same arithmetic as :class:`RangeEncoder` in int64 (``r * cum < 2**32``, ``low < 2**33``). Each
    row's bytes grow in a (rows, capacity) buffer; :meth:`finish` returns a row's code and frees it.
    """

    def __init__(self, n_rows: int) -> None:
        self.low = np.zeros(n_rows, dtype=np.int64)
        self.range = np.full(n_rows, TOP, dtype=np.int64)
        self.n = np.zeros(n_rows, dtype=np.int64)
        self.buf = np.zeros((n_rows, 256), dtype=np.uint8)

    def encode(self, rows: np.ndarray, start: np.ndarray, freq: np.ndarray, total: np.ndarray) -> None:
        """Row ``rows[k]`` codes the symbol with cumulative ``start[k]``, frequency ``freq[k]`` in a
        table of total ``total[k]`` (int64 arrays; ``rows`` without repeats)."""
        r = self.range[rows] // total
        low = self.low[rows] + r * start
        rng = r * freq
        carry = low >= TOP
        if carry.any():
            low[carry] -= TOP
            self._carry(rows[carry])
        need = int(self.n[rows].max(initial=0)) + 3
        if need > self.buf.shape[1]:
            grown = np.zeros((self.buf.shape[0], max(need, 2 * self.buf.shape[1])), dtype=np.uint8)
            grown[:, : self.buf.shape[1]] = self.buf
            self.buf = grown
        while True:
            shift = rng < BOTTOM
            if not shift.any():
                break
            at = rows[shift]
            self.buf[at, self.n[at]] = (low[shift] >> 24).astype(np.uint8)
            self.n[at] += 1
            low[shift] = (low[shift] << 8) & MASK
            rng[shift] <<= 8
        self.low[rows] = low
        self.range[rows] = rng

    def _carry(self, rows: np.ndarray) -> None:
        at = self.n[rows] - 1
        while len(rows):
            self.buf[rows, at] += 1  # uint8: 0xff wraps to 0 and carries on
            wrapped = self.buf[rows, at] == 0
            rows, at = rows[wrapped], at[wrapped] - 1

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

    def decode(self, rows: np.ndarray, cum: np.ndarray) -> np.ndarray:
        """The next symbol of each row in ``rows``, given its table ``cum[k]`` (k, 257)."""
        total = cum[:, _N]
        r = self.range[rows] // total
        v = np.minimum(self.value[rows] // r, total - 1)
        sym = np.count_nonzero(cum[:, 1:] <= v[:, None], axis=1)
        k = np.arange(len(rows))
        lo = cum[k, sym]
        value = self.value[rows] - r * lo
        rng = r * (cum[k, sym + 1] - lo)
        pos = self.pos[rows]
        end = self.end[rows]
        sentinel = len(self.data) - 1
        while True:
            shift = rng < BOTTOM
            if not shift.any():
                break
            p = pos[shift]
            byte = self.data[np.where(p < end[shift], p, sentinel)].astype(np.int64)
            value[shift] = (value[shift] << 8) | byte
            rng[shift] <<= 8
            pos[shift] = p + 1
        self.value[rows] = np.minimum(value, rng - 1)
        self.range[rows] = rng
        self.pos[rows] = pos
        return sym
