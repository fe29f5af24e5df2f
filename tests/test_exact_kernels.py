"""The exact M1's fused numba step (:mod:`compresslm.coding.exact_kernels`, the CPU default) gives
the torch path's tables and the numpy int64 definition's, bit for bit: on random exact models,
ragged windows (rows at different positions), START / RESTART / IDLE tokens, one row and many."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compresslm.coding.exact as exact
from compresslm.coding.exact_ref import window_tables
from compresslm.coding.m1 import ExactM1, session_tables
from compresslm.coding.window_coder import IDLE, RESTART, START
from test_m1_exact import SRC, random_exact

SHAPES = [(16, 2, 1, 32), (24, 3, 2, 40), (8, 1, 2, 16), (32, 2, 1, 64)]  # d_model, heads, layers, d_mlp


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    shape=st.sampled_from(SHAPES),
    spread=st.sampled_from([0.01, 1.0, 30.0]),
    windows=st.lists(st.binary(min_size=0, max_size=30), min_size=1, max_size=5),
    extra_rows=st.integers(0, 3),
)
def test_kernel_step_equals_torch_step_and_reference(seed, shape, spread, windows, extra_rows) -> None:
    """Windows of different lengths in scattered rows of one session (so rows sit at different
    positions, and rows go idle and compact the cache): three paths, the same tables."""
    d, nh, nl, m = shape
    model = random_exact(seed, d_model=d, n_heads=nh, n_layers=nl, d_mlp=m, spread=spread, activation="gelu")
    n_rows = len(windows) + extra_rows
    rows_of = list(np.random.default_rng(seed).permutation(n_rows)[: len(windows)])
    fast = session_tables(ExactM1(model, threads=1), windows, 32, n_rows=n_rows, rows_of=rows_of)
    slow = session_tables(
        ExactM1(model, threads=1, kernels=False), windows, 32, n_rows=n_rows, rows_of=rows_of
    )
    for w, f, s in zip(windows, fast, slow, strict=True):
        assert np.array_equal(f, s)
        assert np.array_equal(f, window_tables(model.tensors, nl, nh, w, 14))


def _schedule(rng: np.random.Generator, n_rows: int, steps: int, max_len: int) -> list[np.ndarray]:
    """Random session tokens: rows open with START or RESTART + b, continue with bytes, restart,
    go IDLE (which ends their window) and reopen, never past ``max_len`` positions."""
    pos = np.full(n_rows, -1)  # -1: idle, no context
    out = []
    for _ in range(steps):
        tokens = np.full(n_rows, IDLE, dtype=np.int64)
        for r in range(n_rows):
            u = rng.random()
            if pos[r] < 0 or pos[r] >= max_len - 1 or u < 0.1:
                choice = rng.integers(3) if u >= 0.02 else 2
                if choice == 0:
                    tokens[r], pos[r] = START, 0
                elif choice == 1:
                    tokens[r], pos[r] = RESTART + rng.integers(256), 1
                else:
                    pos[r] = -1
            elif u < 0.15:
                pos[r] = -1
            else:
                tokens[r] = rng.integers(256)
                pos[r] += 1
        out.append(tokens)
    return out


@pytest.mark.parametrize(
    ("n_rows", "seed", "int8"), [(1, 0, True), (3, 1, False), (40, 2, True), (40, 3, False)]
)
def test_kernel_session_equals_torch_session_on_random_schedules(
    monkeypatch: pytest.MonkeyPatch, n_rows: int, seed: int, int8: bool
) -> None:
    """Step by step, with every kind of token in every row, the two sessions' tables agree (and
    rows that neither compute nor start get the all-zero table in both); with the int8 GEMMs
    where this machine's are exact, and with the float32 ones."""
    if not int8:
        monkeypatch.setattr(exact, "int8_gemm_exact", lambda: False)
    model = random_exact(seed + 20, n_layers=2, n_heads=2, d_model=16, d_mlp=24)
    fast = ExactM1(model, threads=1).session(n_rows, 12)
    slow = ExactM1(model, threads=1, kernels=False).session(n_rows, 12)
    try:
        for tokens in _schedule(np.random.default_rng(seed), n_rows, 60, 12):
            assert np.array_equal(fast.step(tokens), slow.step(tokens))
        assert (fast._buffers["a"].dtype == np.int8) == (int8 and exact.int8_gemm_exact())
    finally:
        fast.close()
        slow.close()


@pytest.mark.parametrize("int8", [True, False])
def test_kernel_session_in_lockstep_equals_torch_and_reference(
    monkeypatch: pytest.MonkeyPatch, int8: bool
) -> None:
    """Stream mode's usual step: consecutive rows, all at one position (``attend``'s contiguous
    path), until some rows end and the rest go on (its general path), one and many rows; the
    tables are the torch path's and the definition's."""
    if not int8:
        monkeypatch.setattr(exact, "int8_gemm_exact", lambda: False)
    model = random_exact(31, n_layers=2, n_heads=2, d_model=16, d_mlp=24, spread=1.0)
    rng = np.random.default_rng(5)
    for lengths in ([20], [20] * 7, [20] * 5 + [9, 14]):
        windows = [bytes(rng.integers(0, 256, n).astype(np.uint8)) for n in lengths]
        fast = session_tables(ExactM1(model, threads=1), windows, 32)
        slow = session_tables(ExactM1(model, threads=1, kernels=False), windows, 32)
        for w, f, s in zip(windows, fast, slow, strict=True):
            assert np.array_equal(f, s)
            assert np.array_equal(f, window_tables(model.tensors, 2, 2, w, 14))


def test_kernels_are_the_default_and_use_an_int8_cache() -> None:
    m1 = ExactM1(random_exact(4), threads=1)
    session = m1.session(2, 8)
    try:
        assert session.kernels and session.keys.dtype == np.int8 and session.values.dtype == np.int8
    finally:
        session.close()


_SATURATING = """
import json, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from test_m1_exact import SRC, random_exact
from compresslm.coding.exact import int8_gemm_exact
from compresslm.coding.exact_ref import window_tables
from compresslm.coding.m1 import ExactM1, session_tables
a = np.full((4, 64), 127, dtype=np.int8)
w = np.full((64, 8), 127, dtype=np.int8)
direct = torch._int_mm(torch.from_numpy(a), torch.from_numpy(w)).numpy()
model = random_exact(8, d_model=32, n_heads=2, d_mlp=64, spread=30.0)
windows = [b"an int8 GEMM that saturates", b"must not change a table"]
fast = session_tables(ExactM1(model, threads=1), windows, 32)
same = all(np.array_equal(f, window_tables(model.tensors, 2, 2, w_, 14)) for f, w_ in zip(fast, windows))
print(json.dumps({"direct_exact": bool((direct == 64 * 127 * 127).all()), "probe": int8_gemm_exact(), "same": same}))
"""


def test_int8_gemm_is_used_only_where_it_is_exact() -> None:
    """oneDNN's int8 GEMM saturates 16-bit pair sums on x86 CPUs without VNNI (forced here with
    ONEDNN_MAX_CPU_ISA=AVX2): the probe must see it, and the tables stay the reference's."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "PYTHONPATH": SRC}
    tests = str(Path(__file__).resolve().parent)
    out = subprocess.run(
        [sys.executable, "-c", _SATURATING, tests], env=env, capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["same"]
    if not result["direct_exact"]:
        assert not result["probe"]
