"""M1 for coding: the KV-step path against Transformer.forward, determinism across batch sizes and
thread counts, the numerics fingerprint, and training."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from compresslm.coding.equal_info import EqualInfoCoder
from compresslm.coding.m1 import (
    BOS,
    M1,
    ModelCheck,
    check_row_independence,
    fingerprint,
    reference_tables,
    session_tables,
    verify_model,
)
from compresslm.coding.m1_train import ResetStream, train_m1
from compresslm.coding.window_coder import RESTART, START
from compresslm.errors import ConfigError, IntegrityError
from compresslm.models import Transformer, config_for_size, weights_sha256

L = 32
WINDOWS = [b"", b"a", b"def f(x):\n    return x", "naïve café".encode(), bytes(range(200, 231)), b" " * 31]


@pytest.fixture(scope="module")
def m1() -> M1:
    model = Transformer(config_for_size("tiny", vocab_size=256, max_seq_len=64), seed=5)
    with torch.no_grad():  # larger logits than the 0.02 init, so tables are far from uniform
        model.wte.weight.mul_(40)
    return M1(model, threads=1)


@pytest.fixture()
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_step_path_agrees_with_forward(m1: M1) -> None:
    step = session_tables(m1, WINDOWS, L)
    ref = reference_tables(m1, WINDOWS, L)
    for a, b in zip(step, ref, strict=True):
        assert a.shape == b.shape == (a.shape[0], 257)
        assert np.abs(a - b).max() <= 2  # float32 rounding may move a floor by one


def test_same_tables_for_batch_sizes_1_and_64_and_threads_1_and_2(m1: M1, threads_restored: None) -> None:
    # Windows up to 18 bytes: both cache pages are used (16 near positions), and the 2-thread run
    # stays short (on a loaded 2-core machine every 2-thread op can wait for a time slice).
    windows = [w[:18] for w in WINDOWS]
    alone = [session_tables(m1, [w], L)[0] for w in windows]
    rng = np.random.default_rng(1)
    others = [
        bytes(rng.integers(0, 256, size=int(rng.integers(0, 19)), dtype=np.uint8))
        for _ in range(64 - len(windows))
    ]
    rows = rng.permutation(64).tolist()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        batched = session_tables(m1, [*windows, *others], L, n_rows=64, rows_of=rows)
        for a, b in zip(alone, batched, strict=False):
            assert np.array_equal(a, b)


def test_coder_bits_identical_across_batch_sizes_and_lanes(m1: M1, threads_restored: None) -> None:
    """threads = lanes: rows split over parallel sessions, each with single-threaded torch ops."""
    docs = [b"The quick brown fox jumps over the lazy dog.", "naïve café".encode(), b"ab", b"", b"x" * 40]
    docs += [bytes(range(i, i + 30)) for i in range(0, 200, 40)]
    results = {}
    for batch_size, threads in ((1, 1), (64, 1), (64, 2), (3, 2)):
        torch.set_num_threads(2)
        coder = EqualInfoCoder(
            M1(m1.model, threads=threads, sha256=m1.sha256), 16, max_window_bytes=L, batch_size=batch_size
        )
        results[batch_size, threads] = coded = coder.encode_many(docs)
        assert coder.decode_many(coded) == docs
        assert torch.get_num_threads() == 2  # restored once the last session closed
    assert results[64, 1] == results[1, 1]
    assert results[64, 2] == results[1, 1]
    assert results[3, 2] == results[1, 1]


def test_restart_token_equals_start_then_byte(m1: M1) -> None:
    """A window opened by RESTART + b (no step for START) gets exactly the tables of START, then b;
    the constant start table is what a computed first position gives."""
    rng = np.random.default_rng(3)
    first = rng.integers(0, 256, size=20)
    second = rng.integers(0, 256, size=20)
    a, b = m1.session(20, L), m1.session(20, L)
    try:
        assert np.array_equal(a.step(np.full(20, START)), np.tile(a.start_table, (20, 1)))
        stepped = [a.step(first), a.step(second)]
        merged = [b.step(first + RESTART), b.step(second)]
    finally:
        a.close()
        b.close()
    assert all(np.array_equal(x, y) for x, y in zip(stepped, merged, strict=True))
    ref = reference_tables(m1, [bytes([int(x)]) for x in first[:3]], L)
    assert np.abs(ref[0][0] - a.start_table).max() <= 2


def test_a_failing_lane_stops_the_others(m1: M1) -> None:
    docs = [bytes(rng_bytes) for rng_bytes in np.random.default_rng(4).integers(32, 127, size=(12, 30))]
    coder = EqualInfoCoder(M1(m1.model, threads=2, sha256=m1.sha256), 16, max_window_bytes=L, batch_size=4)
    coded = coder.encode_many(docs)
    lengths = [len(d) for d in docs]
    lengths[5] -= 3
    with pytest.raises(IntegrityError, match="past the recorded length"):
        coder.decode_many(coded, lengths=lengths)


def test_fingerprint_is_stable_and_detects_changes(m1: M1) -> None:
    fp = fingerprint(m1, L)
    assert fp == fingerprint(m1, L)
    assert fp != fingerprint(m1, L + 8)
    check_row_independence(m1, L, 40)
    verify_model(m1, ModelCheck(m1.sha256, fp), L, "x.clm")
    other = Transformer(m1.model.config, seed=6)
    with pytest.raises(IntegrityError, match="x.clm: written with M1 weights sha256"):
        verify_model(M1(other, threads=1), ModelCheck(m1.sha256, fp), L, "x.clm")
    with pytest.raises(IntegrityError, match="numerics fingerprint differs"):
        verify_model(m1, ModelCheck(m1.sha256, "0" * 64), L, "x.clm")
    # Version 3 .clm files keep prefixes (16 and 8 hex digits); shorter ones prove nothing.
    verify_model(m1, ModelCheck(m1.sha256[:16], fp[:8]), L, "x.clm")
    with pytest.raises(IntegrityError, match="numerics fingerprint differs"):
        verify_model(m1, ModelCheck(m1.sha256[:16], ("0" if fp[0] != "0" else "1") + fp[1:8]), L, "x.clm")
    with pytest.raises(IntegrityError, match="written with M1 weights sha256"):
        verify_model(m1, ModelCheck(m1.sha256[:8], fp[:8]), L, "x.clm")
    with pytest.raises(IntegrityError, match="numerics fingerprint differs"):
        verify_model(m1, ModelCheck(m1.sha256[:16], ""), L, "x.clm")


def test_windows_longer_than_the_context_are_refused(m1: M1) -> None:
    with pytest.raises(ConfigError, match="exceeds M1's context"):
        EqualInfoCoder(m1, 16, max_window_bytes=65)
    assert EqualInfoCoder(m1, 16).params.max_window_bytes == 64  # 4 x b, capped by the context


def test_reset_stream_blocks_start_with_bos() -> None:
    tokens = np.frombuffer(b"abcdefghij", dtype=np.uint8).copy()
    stream = ResetStream(tokens)
    x, y = stream.sample_batch(4, 5, np.random.default_rng(0))
    assert (x[:, 0] == BOS).all()
    assert torch.equal(x[:, 1:], y[:, :-1])
    blocks = list(stream.sequential_batches(8, 4))
    targets = torch.cat([b[1] for b in blocks])
    assert bytes(targets[targets >= 0].tolist()) == b"abcdefghij"  # every byte predicted once


def test_train_m1_tiny_saves_a_loadable_model(tmp_path: Path) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / name).read_text(encoding="utf-8") for name in ("textwrap.py", "colorsys.py")]
    model, report = train_m1(
        texts,
        size="tiny",
        context=64,
        max_tokens=16_000,
        batch_size=8,
        lr=3e-3,
        threads=1,
        progress=False,
        out=tmp_path / "m1",
        numerics="float",
    )
    assert report.n_params == model.n_params() and report.tokens_seen >= 15_000
    assert report.heldout_bits_per_byte is not None and report.heldout_bits_per_byte < 7.5
    loaded = M1.load(tmp_path / "m1", threads=1)
    assert loaded.sha256 == weights_sha256(tmp_path / "m1") == weights_sha256(model)
    assert loaded.max_context == 64
