"""Property tests of the window coder alone (no M1): random context-dependent distributions, every
window size, both codes. The oracle re-derives each window from docs/design.md#the-window-coder by brute force."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compresslm.coding.intervals import CoderParams, quantize
from compresslm.coding.packing import from_tokens, pack_codes, to_tokens, unpack_codes
from compresslm.coding.window_coder import (
    CallableModel,
    EncodeStats,
    Window,
    decode_units,
    encode_units,
    exception_table,
)
from compresslm.errors import IntegrityError


def table_model(seed: int, concentration: float, n_tables: int = 24) -> CallableModel:
    """Distributions that depend on the last two bytes of the window prefix (and its length)."""
    rng = np.random.default_rng(seed)
    tables = [
        quantize(rng.dirichlet(np.full(256, concentration)).astype(np.float32), 14) for _ in range(n_tables)
    ]
    return CallableModel(lambda prefix: tables[zlib.crc32(prefix[-2:] + bytes([len(prefix) % 3])) % n_tables])


# A few fixed models keep the property tests fast: peaked ones give long windows, caps and runs.
MODELS = {c: table_model(7, c) for c in (0.003, 0.03, 0.3, 3.0)}


def bounds(lo: int, hi: int, cum: np.ndarray) -> list[int]:
    w, total = hi - lo, int(cum[-1])
    return [lo + w * int(c) // total for c in cum]


def oracle(data: bytes, model: CallableModel, p: CoderParams) -> list[Window]:
    """docs/design.md#the-window-coder by brute force over the 257 boundaries, independent of intervals.py."""
    g, unit = p.guard_bits, 1 << p.guard_bits
    out: list[Window] = []
    start = 0

    def lowest_whole(lo: int, hi: int) -> int:
        return -(-lo // unit)

    def straddlers(lo: int, hi: int, cum: np.ndarray) -> list[int]:
        """Whole cells with a child boundary strictly inside them."""
        cells = {x >> g for x in bounds(lo, hi, cum) if lo < x < hi and x % unit}
        return sorted(j for j in cells if lo <= j * unit and (j + 1) * unit <= hi)

    while start < len(data):
        ivs, tables = [(0, p.scale)], []
        n = 0
        while True:
            cum = model.table(data[start : start + n])
            tables.append(cum)
            if start + n == len(data) or n == p.max_window_bytes:
                break
            b = bounds(*ivs[n], cum)
            x = data[start + n]
            lo, hi = b[x], b[x + 1]
            if lowest_whole(lo, hi) * unit + unit > hi:  # no whole cell: the byte does not fit
                break
            ivs.append((lo, hi))
            n += 1
            if n == p.max_window_bytes:
                break
        if p.code == "zeros":
            lo, hi = ivs[n]
            cell = next(
                m << (p.window_bits - length)
                for length in range(p.window_bits + 1)
                for m in [-(-lo // (1 << (p.window_bits + g - length)))]
                if (m + 1) << (p.window_bits + g - length) <= hi
            )
            over_runs = False  # at the cap the decoder stops anyway
            if n < p.max_window_bytes:
                b = bounds(lo, hi, tables[n])
                over_runs = any(b[s] <= cell * unit and (cell + 1) * unit <= b[s + 1] for s in range(256))
            out.append(Window(cell, n, over_runs))
        elif n == p.max_window_bytes:
            out.append(Window(lowest_whole(*ivs[n]), n))
        else:
            for k in range(n, 0, -1):
                cells = straddlers(*ivs[k], tables[k])
                if cells:
                    out.append(Window(cells[0], k))
                    break
            else:
                out.append(Window(lowest_whole(*ivs[n]), n, True))
        start += out[-1].nbytes
    return out


params_st = st.builds(
    CoderParams,
    window_bits=st.sampled_from([16, 24, 32, 64, 128]),
    guard_bits=st.sampled_from([1, 4, 16]),
    max_window_bytes=st.sampled_from([1, 2, 5, 17, 64, 512]),
    code=st.sampled_from(["straddle", "zeros"]),
)
data_st = st.one_of(
    st.binary(max_size=160),
    st.lists(st.sampled_from(b"ab \n"), max_size=300).map(bytes),  # runs: long windows, caps
)


@given(data_st, st.sampled_from(sorted(MODELS)), params_st)
@settings(max_examples=250, deadline=None)
def test_round_trip_from_the_tokens_alone(data: bytes, concentration: float, p: CoderParams) -> None:
    model = MODELS[concentration]
    stats = EncodeStats()
    [windows] = encode_units([data], model, p, stats=stats)
    # Windows cover the input in order, each 1..cap bytes and exactly b bits.
    assert sum(w.nbytes for w in windows) == len(data)
    assert all(1 <= w.nbytes <= p.max_window_bytes for w in windows)
    assert all(0 <= w.code < 1 << p.window_bits for w in windows)
    assert len(pack_codes([w.code for w in windows], p.window_bits)) * 8 == len(windows) * p.window_bits
    # The whole unit decodes from the codes and the exception table only.
    codes = [w.code for w in windows]
    [restored] = decode_units([(codes, exception_table(windows))], model, p, lengths=[len(data)])
    assert restored == data
    # Every window decodes alone to exactly its bytes (the coder and the model reset per window).
    pieces = decode_units([([w.code], {0: w.nbytes} if w.exception else {}) for w in windows], model, p)
    offset = 0
    for w, piece in zip(windows, pieces, strict=True):
        assert piece == data[offset : offset + w.nbytes]
        offset += w.nbytes
    assert stats.windows == len(windows) and stats.exceptions == sum(w.exception for w in windows)


@given(data_st, st.sampled_from(sorted(MODELS)), params_st)
@settings(max_examples=120, deadline=None)
def test_windows_follow_the_specification(data: bytes, concentration: float, p: CoderParams) -> None:
    """Greedy windows ended at the longest stoppable prefix, the lowest straddling cell, exceptions
    exactly where the spec says (straddle), greedy zero-padded codes (zeros)."""
    model = MODELS[concentration]
    [windows] = encode_units([data], model, p)
    assert windows == oracle(data, model, p)


def test_batching_does_not_change_the_windows() -> None:
    rng = np.random.default_rng(3)
    units = [bytes(rng.integers(0, 4, size=rng.integers(0, 90)).astype(np.uint8) + 97) for _ in range(23)]
    p = CoderParams(window_bits=16, max_window_bytes=24)
    model = MODELS[0.03]
    alone = [encode_units([u], model, p)[0] for u in units]
    for batch_size in (1, 4, 64):
        assert encode_units(units, model, p, batch_size=batch_size) == alone
    restored = decode_units(
        [([w.code for w in ws], exception_table(ws)) for ws in alone], model, p, batch_size=5
    )
    assert restored == units


def test_straddle_code_decodes_without_exceptions_where_the_paper_code_needs_them() -> None:
    """The comparison behind --code: on the same text and model, the paper's zero-padded code
    over-runs often; the straddle code almost never needs side information."""
    text = b"the cat sat on the mat and the dog sat on the log; " * 20
    model = MODELS[0.03]
    rates = {}
    for code in ("straddle", "zeros"):
        [windows] = encode_units([text], model, CoderParams(code=code))
        rates[code] = sum(w.exception for w in windows) / len(windows)
    assert rates["zeros"] > 0.05
    assert rates["straddle"] < rates["zeros"] / 5


def test_empty_input_has_no_windows() -> None:
    assert encode_units([b""], MODELS[3.0], CoderParams()) == [[]]
    assert decode_units([([], {})], MODELS[3.0], CoderParams()) == [b""]


def test_corrupt_codes_are_integrity_errors() -> None:
    p = CoderParams(max_window_bytes=8)
    model = MODELS[0.3]
    [windows] = encode_units([b"hello hello hello"], model, p)
    codes = [w.code for w in windows]
    with pytest.raises(IntegrityError, match="does not fit"):
        decode_units([([1 << 16], {})], model, p)
    with pytest.raises(IntegrityError, match="exception"):
        decode_units([(codes, {len(codes): 1})], model, p)
    with pytest.raises(IntegrityError):  # one window too many for the recorded length
        decode_units([(codes + codes[:1], exception_table(windows))], model, p, lengths=[17])


def test_packing_matches_the_papers_figure_9() -> None:
    code = 0b1111000011110011
    assert to_tokens([code], 16, 8).tolist() == [240, 243]
    assert to_tokens([code], 16, 16).tolist() == [61683]
    assert to_tokens([0b1001000111111000, 0b1101100001000100], 16, 8).tolist() == [145, 248, 216, 68]


@given(st.sampled_from([16, 24, 32, 64, 128]), st.data())
@settings(max_examples=60, deadline=None)
def test_packing_round_trips(bits: int, data: st.DataObject) -> None:
    codes = data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=20))
    assert unpack_codes(pack_codes(codes, bits), bits) == codes
    assert from_tokens(to_tokens(codes, bits, 8), bits, 8) == codes
    if (len(codes) * bits) % 16 == 0:
        assert from_tokens(to_tokens(codes, bits, 16), bits, 16) == codes
