"""The vectorized window coder against the scalar reference: the same windows (codes, byte counts,
exceptions), the same bytes back and the same errors, on random frequency tables (flat, peaked,
extreme ones with frequency-1 symbols), random inputs, every window width, rows of unequal length
and empty rows."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compresslm.coding.intervals import CoderParams, quantize
from compresslm.coding.window_coder import (
    CallableModel,
    EncodeStats,
    decode_units,
    encode_units,
    exception_table,
)
from compresslm.coding.window_vector import interval_dtype
from compresslm.errors import IntegrityError


def extreme_table(rng: np.random.Generator, precision: int) -> np.ndarray:
    """A table where a few symbols share almost all of ``2**precision`` and the rest have frequency 1."""
    freqs = np.ones(256, dtype=np.int64)
    heavy = rng.choice(256, size=int(rng.integers(1, 4)), replace=False)
    budget = (1 << precision) - 256 - int(rng.integers(0, 50))
    split = np.sort(rng.integers(0, budget + 1, size=len(heavy) - 1))
    freqs[heavy] += np.diff(np.concatenate([[0], split, [budget]]))
    cum = np.zeros(257, dtype=np.int64)
    np.cumsum(freqs, out=cum[1:])
    return cum


def random_model(seed: int, kind: str, precision: int, start_table: bool) -> CallableModel:
    """Tables that depend on the window prefix's last two bytes and length; ``kind`` picks them."""
    rng = np.random.default_rng(seed)
    tables = []
    for i in range(16):
        if kind == "extreme" or (kind == "mixed" and i % 2):
            tables.append(extreme_table(rng, precision))
        else:
            alpha = {"flat": 3.0, "peaked": 0.02, "mixed": 0.1}[kind]
            probs = rng.dirichlet(np.full(256, alpha)).astype(np.float32)
            tables.append(quantize(probs, precision))
    return CallableModel(
        lambda prefix: tables[zlib.crc32(prefix[-2:] + bytes([len(prefix) % 5])) % len(tables)],
        precision,
        start_table=start_table,
    )


def sample(model: CallableModel, n: int, seed: int) -> bytes:
    """``n`` bytes drawn from the model itself: long windows, caps, back-offs and exceptions."""
    rng = np.random.default_rng(seed)
    out = bytearray()
    for _ in range(n):
        cum = model.table(bytes(out[-2:]))
        out.append(int(np.searchsorted(cum, rng.integers(0, cum[-1]), side="right")) - 1)
    return bytes(out)


params_st = st.builds(
    CoderParams,
    window_bits=st.sampled_from([16, 24, 32, 40, 64, 128]),
    precision=st.sampled_from([9, 14]),
    guard_bits=st.sampled_from([1, 4, 16]),
    max_window_bytes=st.sampled_from([1, 2, 7, 64, 300]),
    code=st.sampled_from(["straddle", "zeros"]),
)
unit_st = st.one_of(
    st.binary(max_size=120),
    st.lists(st.sampled_from(b"ab \n"), max_size=200).map(bytes),  # runs: long windows, caps
)


@given(
    st.lists(unit_st, max_size=6),
    st.lists(st.integers(0, 150), max_size=2),
    params_st,
    st.sampled_from(["flat", "peaked", "extreme", "mixed"]),
    st.integers(0, 3),
    st.booleans(),
    st.sampled_from([2, 512]),
)
@settings(max_examples=100, deadline=None)
def test_vector_coder_matches_the_scalar_reference(
    units: list[bytes],
    sampled: list[int],
    p: CoderParams,
    kind: str,
    seed: int,
    start_table: bool,
    batch_size: int,
) -> None:
    model = random_model(seed, kind, p.precision, start_table)
    units = units + [sample(model, n, seed + i) for i, n in enumerate(sampled)]
    scalar_stats, vector_stats = EncodeStats(), EncodeStats()
    scalar = encode_units(units, model, p, batch_size=batch_size, stats=scalar_stats, vectorized=False)
    vector = encode_units(units, model, p, batch_size=batch_size, stats=vector_stats)
    assert vector == scalar
    for field in ("windows", "bytes", "exceptions", "backed_off", "positions"):
        assert getattr(vector_stats, field) == getattr(scalar_stats, field), field
    assert vector_stats.ideal_bits == pytest.approx(scalar_stats.ideal_bits, rel=1e-9, abs=1e-9)
    coded = [([w.code for w in ws], exception_table(ws)) for ws in scalar]
    lengths = [len(u) for u in units]
    assert decode_units(coded, model, p, lengths=lengths, batch_size=batch_size) == units
    assert decode_units(coded, model, p, batch_size=batch_size) == units  # no lengths: the codes delimit
    # Each window on its own row, as the tokenizer decodes ids (every window is its own unit).
    alone = [([w.code], {0: w.nbytes} if w.exception else {}) for ws in scalar for w in ws]
    assert decode_units(alone, model, p, batch_size=batch_size) == decode_units(
        alone, model, p, batch_size=batch_size, vectorized=False
    )


def test_wide_windows_use_python_integers() -> None:
    """int64 exactly while w * cum < 2**63; wider windows switch to exact Python integers."""
    assert interval_dtype(CoderParams(window_bits=32, precision=14, guard_bits=16)) is np.int64
    assert interval_dtype(CoderParams(window_bits=40, precision=14, guard_bits=16)) is object
    assert interval_dtype(CoderParams(window_bits=32, precision=24, guard_bits=16)) is object


def test_lanes_and_row_order_do_not_change_the_result() -> None:
    """Rows split over parallel lanes (threads) and any batch size give the same windows and bytes,
    on units that need back-offs and exceptions."""
    model = random_model(1, "extreme", 14, start_table=True)
    units = [sample(model, n, seed) for seed, n in enumerate([0, 5, 150, 90, 40, 150, 1, 120])]
    p = CoderParams(window_bits=16, guard_bits=4, max_window_bytes=64)
    stats = EncodeStats()
    reference = encode_units(units, model, p, stats=stats, vectorized=False)
    assert stats.backed_off > 0 and stats.exceptions > 0
    model.lanes = 3  # type: ignore[attr-defined]
    for batch_size in (1, 3, 512):
        assert encode_units(units, model, p, batch_size=batch_size) == reference
    coded = [([w.code for w in ws], exception_table(ws)) for ws in reference]
    assert decode_units(coded, model, p, lengths=[len(u) for u in units], batch_size=3) == units


def test_progress_counts_every_byte_once() -> None:
    units = [b"abc" * 50, b"", b"hello world"]
    p = CoderParams(max_window_bytes=16)
    model = random_model(2, "peaked", 14, start_table=False)
    seen: list[int] = []
    windows = encode_units(units, model, p, on_bytes=seen.append)
    assert sum(seen) == sum(map(len, units))
    seen.clear()
    coded = [([w.code for w in ws], exception_table(ws)) for ws in windows]
    assert decode_units(coded, model, p, on_bytes=seen.append) == units
    assert sum(seen) == sum(map(len, units))


@pytest.mark.parametrize("vectorized", [False, True])
def test_corrupt_input_raises_integrity_errors_in_both(vectorized: bool) -> None:
    p = CoderParams(max_window_bytes=8)
    model = random_model(0, "flat", 14, start_table=False)
    data = b"hello hello hello"
    [windows] = encode_units([data], model, p, vectorized=vectorized)
    codes = [w.code for w in windows]
    exc = exception_table(windows)
    with pytest.raises(IntegrityError, match="past the recorded length"):
        decode_units([(codes, exc)], model, p, lengths=[len(data) - 2], vectorized=vectorized)
    with pytest.raises(IntegrityError, match="decodes to 17 bytes"):
        decode_units([(codes, exc)], model, p, lengths=[18], vectorized=vectorized)
    # A cell that straddles a boundary of the very first byte decodes to nothing.
    start = model.table(b"")
    boundary = (int(start[100]) << (p.window_bits + p.guard_bits)) // int(start[256])
    with pytest.raises(IntegrityError, match="decodes to no bytes"):
        decode_units([([boundary >> p.guard_bits], {})], model, p, vectorized=vectorized)


def test_an_exact_m1_gives_the_same_windows_through_both_coders() -> None:
    """With a real M1 session (start table, RESTART tokens, row independence) both coders write
    the same windows, and they decode back."""
    from compresslm.coding.equal_info import EqualInfoCoder
    from compresslm.coding.m1 import M1

    m1 = M1.load(Path(__file__).parent / "data" / "clm-v2" / "m1", threads=1)
    docs = [b"", b"def f(x):\n    return x * 2\n" * 2, bytes(range(0, 256, 5)), b"aaaa" * 16, b"x"]
    scalar = EqualInfoCoder(m1, 16, max_window_bytes=32, batch_size=8)
    scalar.vectorized = False
    vector = EqualInfoCoder(m1, 16, max_window_bytes=32, batch_size=8)
    windows = scalar.encode_many(docs)
    assert vector.encode_many(docs) == windows
    assert vector.stats.positions == scalar.stats.positions
    assert vector.decode_many(windows, lengths=[len(d) for d in docs]) == docs
