"""The exact M1's fused decoding step (``exact_kernels.decode``: the tables' frequencies and the
range decoder's step in one kernel, what stream mode's decoder runs) gives the symbols and decoder
states of the tables (``exact_kernels.tables``) then ``VectorDecoder.decode``: on random models and
accumulators, random (damaged) codes, rows that end and restart between steps, any row order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compresslm.coding import exact_kernels as K
from compresslm.coding.exact import ExactNet
from compresslm.coding.m1 import ExactM1
from compresslm.coding.range_coder import VectorDecoder
from compresslm.coding.window_coder import IDLE, RESTART, START
from compresslm.errors import ConfigError
from test_exact_kernels import SHAPES
from test_m1_exact import random_exact


def _decoder(rng: np.random.Generator, n_rows: int, blob: bytes) -> VectorDecoder:
    dec = VectorDecoder(n_rows, blob)
    for r in range(n_rows):
        _restart(rng, dec, r, len(blob))
    return dec


def _restart(rng: np.random.Generator, dec: VectorDecoder, row: int, size: int) -> None:
    """Row ``row`` starts a random stretch of the blob (some shorter than 4 bytes, some empty)."""
    offset = int(rng.integers(0, size))
    dec.start(row, offset, int(rng.integers(0, size - offset + 1)))


def _twin(dec: VectorDecoder, blob: bytes) -> VectorDecoder:
    """A second decoder over the same bytes in the same state."""
    twin = VectorDecoder(len(dec.value), blob)
    for x, y in zip(twin.state()[:4], dec.state()[:4], strict=True):
        x[:] = y
    return twin


def _same_state(a: VectorDecoder, b: VectorDecoder) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.state(), b.state(), strict=True))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    spread=st.sampled_from([0.01, 1.0, 30.0]),
    n_rows=st.integers(1, 12),
    precision=st.sampled_from([9, 14, 16, 24]),
    scale=st.sampled_from([1, 300, 30_000]),
)
def test_fused_decode_equals_tables_then_decoder(
    seed: int, spread: float, n_rows: int, precision: int, scale: int
) -> None:
    """Steps of a random subset of rows in random order, with accumulators from flat to very
    peaked tables (``scale``), over random bytes (every code is damaged: the decoder's clamp is
    exercised) and streams that end (zeros past their end) and restart between steps."""
    rng = np.random.default_rng(seed)
    net = ExactNet(random_exact(seed, spread=spread))
    head = net.head
    blob = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    ref = _decoder(rng, n_rows, blob)
    fused = _twin(ref, blob)
    for _ in range(12):
        rows = rng.permutation(n_rows)[: int(rng.integers(1, n_rows + 1))]
        acc = rng.integers(-scale, scale + 1, (len(rows), 256)).astype(np.int32)
        cum = np.empty((len(rows), 257), dtype=np.int64)
        K.tables(acc, head.scale_np, head.c_np, net.exp_logits_np, precision, cum, np.arange(len(rows)))
        expected = ref.decode(rows, cum)
        sym = np.empty(len(rows), dtype=np.int64)
        K.decode(acc, head.scale_np, head.c_np, net.exp_logits_np, precision, *fused.state(), rows, sym)
        assert np.array_equal(sym, expected)
        assert _same_state(ref, fused)
        for row in rng.permutation(n_rows)[: int(rng.integers(0, 3))]:  # a stream ends, another starts
            state = rng.bit_generator.state
            _restart(rng, ref, int(row), len(blob))
            rng.bit_generator.state = state
            _restart(rng, fused, int(row), len(blob))


def _tokens(rng: np.random.Generator, pos: np.ndarray, max_len: int, idle: float) -> np.ndarray:
    """Stream-mode tokens: rows open with RESTART + b, continue with bytes, go IDLE (ending their
    window; a busy row with probability ``idle``) and reopen; no START (the start table needs no
    step)."""
    tokens = np.full(len(pos), IDLE, dtype=np.int64)
    for r in range(len(pos)):
        u = rng.random()
        if pos[r] < 0 or pos[r] >= max_len - 1 or u < 0.1:
            if u < 0.03:
                pos[r] = -1
            else:
                tokens[r], pos[r] = RESTART + rng.integers(256), 1
        elif u < 0.1 + idle:
            pos[r] = -1
        else:
            tokens[r] = rng.integers(256)
            pos[r] += 1
    return tokens


@pytest.mark.parametrize(
    ("n_rows", "seed", "kernels"), [(1, 0, True), (7, 1, True), (20, 2, True), (40, 4, True), (5, 3, False)]
)
def test_session_step_decode_equals_step_then_decoder(n_rows: int, seed: int, kernels: bool) -> None:
    """An exact M1 session's ``step_decode`` against a twin session's ``step`` then the vector
    decoder, on random schedules (rows idle, compact the cache and reopen; every tenth step most
    rows go idle, so the cache shrinks, then grows back) and random codes; and its errors."""
    d, nh, nl, m = SHAPES[seed % len(SHAPES)]
    model = random_exact(seed, d_model=d, n_heads=nh, n_layers=nl, d_mlp=m, activation="gelu")
    m1 = ExactM1(model, threads=1, kernels=kernels)
    rng = np.random.default_rng(seed)
    blob = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    ref = _decoder(rng, n_rows, blob)
    fused = _twin(ref, blob)
    pos = np.full(n_rows, -1)
    a, b = m1.session(n_rows, 24), m1.session(n_rows, 24)
    try:
        for step in range(40):
            tokens = _tokens(rng, pos, 24, 0.7 if step % 10 == 9 else 0.05)
            rows = np.flatnonzero(tokens != IDLE)
            expected = ref.decode(rows, a.step(tokens)[rows])
            assert np.array_equal(b.step_decode(tokens, fused), expected)
            assert _same_state(ref, fused)
        with pytest.raises(ConfigError, match="START"):
            b.step_decode(np.full(n_rows, START), fused)
        b.step_decode(np.full(n_rows, IDLE), fused)  # every row idle: their contexts end
        with pytest.raises(ConfigError, match="lost its context"):
            b.step_decode(np.full(n_rows, 7), fused)  # rows open with RESTART + b, not a byte
        b.step_decode(np.full(n_rows, RESTART + 1), fused)
        with pytest.raises(ConfigError, match="ran past"):
            for _ in range(24):
                b.step_decode(np.full(n_rows, 1), fused)
    finally:
        a.close()
        b.close()
