"""The exact M1's chunk encoder (stream mode's encoder: the intervals of whole chunks at once)
through the fused kernels gives the torch path's and the numpy int64 definition's intervals, and
codes byte for byte what the scalar reference coder writes with the definition's tables."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compresslm.coding.exact import chunk_intervals
from compresslm.coding.exact_ref import window_tables
from compresslm.coding.m1 import ExactM1
from compresslm.coding.range_coder import RangeEncoder
from compresslm.coding.stream import StreamCoder
from test_exact_kernels import SHAPES
from test_m1_exact import random_exact


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    shape=st.sampled_from(SHAPES),
    spread=st.sampled_from([0.01, 1.0, 30.0]),
    n=st.integers(1, 7),
    T=st.integers(1, 24),
    rows_per_pass=st.integers(1, 4),
    n_rows=st.integers(1, 6),
)
def test_kernel_chunks_equal_torch_chunks_and_reference(
    seed: int,
    shape: tuple[int, int, int, int],
    spread: float,
    n: int,
    T: int,
    rows_per_pass: int,
    n_rows: int,
) -> None:
    """``n`` chunks of ``T`` bytes in passes of ``rows_per_pass`` chunks, in a session of
    ``n_rows`` cache rows (so passes reuse rows): kernels, torch and the definition agree."""
    d, nh, nl, m = shape
    model = random_exact(seed, d_model=d, n_heads=nh, n_layers=nl, d_mlp=m, spread=spread, activation="gelu")
    m1 = ExactM1(model, threads=1)
    chunks = np.random.default_rng(seed).integers(0, 256, (n, T))
    chunks[0] = chunks[0, 0]  # a repeated byte: peaked attention
    session = m1.session(n_rows, 24)
    try:
        fast = session._chunk_intervals_kernels(chunks, rows_per_pass=rows_per_pass)
    finally:
        session.close()
    torch_path = chunk_intervals(m1.net, chunks, m1.precision)
    for f, t in zip(fast, torch_path, strict=True):
        assert np.array_equal(f, t)
    start, freq, total = fast
    for r in range(n):
        tables = window_tables(model.tensors, nl, nh, bytes(chunks[r].astype(np.uint8)), m1.precision)[:T]
        k = np.arange(T)
        assert np.array_equal(start[r], tables[k, chunks[r]])
        assert np.array_equal(freq[r], tables[k, chunks[r] + 1] - tables[k, chunks[r]])
        assert np.array_equal(total[r], tables[:, 256])


def test_stream_codes_equal_scalar_coder_with_reference_tables() -> None:
    """Segments longer than the context, two lanes: each code is the scalar coder's bytes over the
    definition's tables (chunks restart at BOS), and decodes back."""
    model = random_exact(3, max_seq_len=16)
    m1 = ExactM1(model, threads=2)
    rng = np.random.default_rng(5)
    segments = [bytes(rng.integers(97, 101, k, dtype=np.uint8)) for k in (1, 15, 16, 17, 50, 33, 0, 2)]
    coder = StreamCoder(m1, batch_size=3)
    codes = coder.encode_many(segments)
    for seg, code in zip(segments, codes, strict=True):
        enc = RangeEncoder()
        for c0 in range(0, len(seg), 16):
            chunk = seg[c0 : c0 + 16]
            tables = window_tables(model.tensors, 2, 2, chunk[:-1], m1.precision)
            for t, b in enumerate(chunk):
                enc.encode(tables[t], b)
        assert enc.finish() == code
    assert coder.decode_many(codes, [len(s) for s in segments]) == segments


def test_kernel_chunks_longer_than_an_int32_block() -> None:
    """Windows of more than 512 positions (the weights x values sums go through float64 between
    int32 blocks) and of lengths that are not multiples of the query block: kernels = torch."""
    model = random_exact(12, d_model=8, n_heads=1, n_layers=1, d_mlp=16, max_seq_len=600)
    m1 = ExactM1(model, threads=1)
    chunks = np.random.default_rng(12).integers(0, 256, (2, 530))
    chunks[1, ::3] = 7
    session = m1.session(2, 600)
    try:
        fast = session._chunk_intervals_kernels(chunks)
    finally:
        session.close()
    for f, t in zip(fast, chunk_intervals(m1.net, chunks, m1.precision), strict=True):
        assert np.array_equal(f, t)
