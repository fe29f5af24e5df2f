"""The integer-exact M1: the fast path equals the numpy int64 reference, the bound check refuses
models that could overflow, and .clm files decode byte-identically under other CPU code paths,
thread counts and batch sizes (in subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compresslm.coding.compress import compress, decompress, load
from compresslm.coding.exact import GEMM_CHUNK, ExactModel, check_bounds
from compresslm.coding.exact_ref import window_tables
from compresslm.coding.m1 import M1, ExactM1, fingerprint, session_tables
from compresslm.coding.m1_qat import Observer, QATTransformer, from_float, to_exact
from compresslm.coding.m1_train import quantize_m1, train_m1
from compresslm.coding.window_coder import IDLE, RESTART, START
from compresslm.errors import ConfigError
from compresslm.models import Transformer, TransformerConfig, config_for_size, save_model

STDLIB = Path(sysconfig.get_paths()["stdlib"])
SRC = str(Path(__file__).resolve().parents[1] / "src")


def random_exact(
    seed: int,
    *,
    d_model: int = 16,
    n_heads: int = 2,
    n_layers: int = 2,
    d_mlp: int = 32,
    max_seq_len: int = 40,
    activation: str = "relu",
    spread: float = 1.0,
) -> ExactModel:
    """A random integer model: random float weights, observers set to random maxima (small ones
    force the saturating clamps), converted like a trained one."""
    config = TransformerConfig(
        vocab_size=256,
        d_model=d_model,
        n_heads=n_heads,
        n_layers=n_layers,
        d_mlp=d_mlp,
        max_seq_len=max_seq_len,
        activation=activation,
    )
    qat = QATTransformer(config, seed=seed)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in qat.parameters():
            p.mul_(float(rng.uniform(1, 40)) if p.ndim == 2 else 1.0).add_(
                torch.from_numpy(rng.normal(0, 0.3, p.shape)).float() if p.ndim == 1 else 0.0
            )
    for m in qat.modules():
        if isinstance(m, Observer):
            m.amax.fill_(float(rng.uniform(0.05, 8.0) * spread))
    return to_exact(qat)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    shape=st.sampled_from([(16, 2, 1, 32), (16, 4, 2, 24), (8, 1, 2, 16)]),
    activation=st.sampled_from(["relu", "gelu"]),
    spread=st.sampled_from([0.01, 1.0, 30.0]),
    windows=st.lists(st.binary(min_size=0, max_size=20), min_size=1, max_size=4),
)
def test_fast_path_equals_numpy_reference(seed, shape, activation, spread, windows) -> None:
    d, nh, nl, m = shape
    model = random_exact(
        seed, d_model=d, n_heads=nh, n_layers=nl, d_mlp=m, activation=activation, spread=spread
    )
    m1 = ExactM1(model, threads=1)
    fast = session_tables(m1, windows, 24, n_rows=len(windows) + 3, rows_of=list(range(3, 3 + len(windows))))
    for w, tables in zip(windows, fast, strict=True):
        ref = window_tables(model.tensors, nl, nh, w, m1.precision)
        assert np.array_equal(tables, ref)
        assert np.all(np.diff(tables, axis=1) >= 1) and np.all(tables[:, -1] <= 1 << m1.precision)


def test_long_reductions_are_split_and_still_exact() -> None:
    """A 1100-wide MLP (GEMM chunks of 1040) and 560 cached positions (weights x values in chunks
    of 518): the fast path still equals the reference."""
    model = random_exact(3, d_model=8, n_heads=1, n_layers=1, d_mlp=GEMM_CHUNK + 60, max_seq_len=600)
    m1 = ExactM1(model, threads=1)
    window = bytes(np.random.default_rng(0).integers(32, 127, size=560, dtype=np.uint8))
    fast = session_tables(m1, [window], 600)[0]
    assert np.array_equal(fast, window_tables(model.tensors, 1, 1, window, m1.precision))


@pytest.mark.parametrize("kernels", [True, False])
def test_attention_weights_by_table_and_by_arithmetic_agree(
    monkeypatch: pytest.MonkeyPatch, kernels: bool
) -> None:
    """Layers tabulate the attention weight per score difference unless the table would be too
    long; then they compute the exp-table index. Both give the reference's tables, through the
    fused kernels and through torch."""
    import compresslm.coding.exact as exact

    model = random_exact(5, spread=30.0)
    windows = [b"attention weights", b"", b"by table and by arithmetic, same ints"]
    ref = [window_tables(model.tensors, 2, 2, w, 14) for w in windows]
    for limit in (exact._WEIGHT_TABLE_MAX, 0):
        monkeypatch.setattr(exact, "_WEIGHT_TABLE_MAX", limit)
        m1 = ExactM1(model, threads=1, kernels=kernels)
        assert all(layer.index_scale is None for layer in m1.net.layers) == (limit > 0)
        fast = session_tables(m1, windows, 40, n_rows=5, rows_of=[4, 0, 2])
        assert all(np.array_equal(f, r) for f, r in zip(fast, ref, strict=True))


@pytest.mark.parametrize(("context", "threads"), [(8, 1), (40, 2)])
def test_stream_encoder_by_chunks_writes_the_step_by_step_codes(
    monkeypatch: pytest.MonkeyPatch, context: int, threads: int
) -> None:
    """The exact M1's encoder takes the intervals of whole chunks at once (full GEMMs); the codes
    are those of the step-by-step encoder, which mirrors the decoder."""
    from compresslm.coding.stream import StreamCoder

    m1 = ExactM1(random_exact(9), threads=threads)
    rng = np.random.default_rng(1)
    segments = [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in (1, 7, 8, 9, 40, 41, 100, 0, 3)]
    chunked = StreamCoder(m1, context=context, batch_size=4)
    codes = chunked.encode_many(segments)
    monkeypatch.setattr(StreamCoder, "chunk_encoder", False)
    stepped = StreamCoder(m1, context=context, batch_size=4)
    assert stepped.encode_many(segments) == codes
    assert chunked.stats.positions == stepped.stats.positions
    assert chunked.stats.ideal_bits == pytest.approx(stepped.stats.ideal_bits)
    assert stepped.decode_many(codes, [len(s) for s in segments]) == segments


def test_rows_restart_and_idle_do_not_change_a_row() -> None:
    m1 = ExactM1(random_exact(7), threads=1)
    rng = np.random.default_rng(2)
    first, second = rng.integers(0, 256, 9), rng.integers(0, 256, 9)
    a, b = m1.session(9, 16), m1.session(9, 16)
    try:
        assert np.array_equal(a.step(np.full(9, START)), np.tile(a.start_table, (9, 1)))
        stepped = [a.step(first), a.step(second)]
        merged = [b.step(first + RESTART), b.step(np.where(np.arange(9) % 3 == 0, IDLE, second))]
    finally:
        a.close()
        b.close()
    assert np.array_equal(stepped[0], merged[0])
    live = np.arange(9) % 3 != 0
    assert np.array_equal(stepped[1][live], merged[1][live])


def test_finished_rows_compact_the_cache_without_changing_any_row() -> None:
    """40 rows of different lengths: as rows go idle the cache is compacted (at 20, 10 ... rows);
    every window's tables still equal the reference, and coding with rows that take new windows
    after a compaction gives the bits of coding one window at a time."""
    from compresslm.coding.equal_info import EqualInfoCoder

    model = random_exact(11)
    m1 = ExactM1(model, threads=1)
    rng = np.random.default_rng(5)
    windows = [bytes(rng.integers(0, 256, int(n), dtype=np.uint8)) for n in rng.integers(0, 23, 40)]
    fast = session_tables(m1, windows, 24)
    for w, tables in zip(windows, fast, strict=True):
        assert np.array_equal(tables, window_tables(model.tensors, 2, 2, w, m1.precision))
    docs = [bytes(rng.integers(97, 123, int(n), dtype=np.uint8)) for n in rng.integers(0, 60, 50)]
    one = EqualInfoCoder(m1, 16, max_window_bytes=24, batch_size=1).encode_many(docs)
    many = EqualInfoCoder(m1, 16, max_window_bytes=24, batch_size=33)
    assert many.encode_many(docs) == one and many.decode_many(one) == docs


def test_bound_check_refuses_a_reduction_that_could_overflow() -> None:
    model = random_exact(1, d_model=8, n_heads=1, n_layers=1, d_mlp=GEMM_CHUNK + 60)
    tensors = dict(model.tensors)
    check_bounds(model.config, tensors)  # the model as converted passes
    w = tensors["blocks.0.out.w"].copy()
    w[0, 0] = -128  # a chunk of 1040 terms of 127 * 128 reaches 2**24: not exact in float32
    with pytest.raises(ConfigError, match="blocks.0.out.w.*2\\*\\*24"):
        ExactModel(model.config, {**tensors, "blocks.0.out.w": w})
    m = tensors["blocks.0.fc.m"].copy()
    m[0] = 2**31 - 1
    s = tensors["blocks.0.fc.s"].copy()
    s[0] = 0
    with pytest.raises(ConfigError, match="blocks.0.fc"):
        ExactModel(model.config, {**tensors, "blocks.0.fc.m": m, "blocks.0.fc.s": s})
    wide = TransformerConfig(vocab_size=256, d_model=1088, n_heads=1, n_layers=1, d_mlp=8, max_seq_len=4)
    with pytest.raises(ConfigError, match="head size 1088"):
        check_bounds(wide, {})


# -------------------------------------------------------------------- portability in subprocesses


def _texts() -> list[str]:
    return [(STDLIB / n).read_text(encoding="utf-8") for n in ("textwrap.py", "colorsys.py", "bisect.py")]


@pytest.fixture(scope="module")
def exact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exact") / "m1"
    _, report = train_m1(
        _texts(),
        size="tiny",
        context=64,
        max_tokens=24_000,
        batch_size=8,
        lr=3e-3,
        threads=1,
        progress=False,
        out=out,
    )
    assert report.numerics == "exact" and report.heldout_bits_per_byte < 7.0
    return out


_CHILD = """
import json, sys, torch
from compresslm.coding.compress import compress, decompress
from compresslm.coding.m1 import M1, fingerprint
clm, model, out, batch, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
m1 = M1.load(model, threads=threads)
decompress(clm, out + ".txt", model=m1, batch_size=batch)
compress(sys.argv[6], out + ".clm", model=m1, batch_size=batch)
print(json.dumps({"fingerprint": fingerprint(m1, 64), "capability": torch.backends.cpu.get_cpu_capability()}))
"""


def test_clm_decodes_identically_in_other_processes_threads_and_batches(
    exact_dir: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    words = " ".join(_texts()).split()
    rows = [{"text": " ".join(words[i : i + int(rng.integers(1, 12))])} for i in range(0, 180, 12)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    m1 = M1.load(exact_dir, threads=1)
    clm = tmp_path / "a.clm"
    compress(source, clm, model=m1, batch_size=512)
    assert load(clm).header["model"]["numerics"] == "int8-exact-v1"
    variants = [
        ({"ATEN_CPU_CAPABILITY": "default"}, 1, 1),
        ({"MKL_CBWR": "COMPATIBLE"}, 7, 2),
        ({"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}, 512, 2),
    ]
    procs = []
    for i, (env, batch, threads) in enumerate(variants):
        child_env = {**os.environ, **env, "PYTHONPATH": SRC, "OMP_NUM_THREADS": str(threads)}
        args = [str(clm), str(exact_dir), str(tmp_path / f"out{i}"), str(batch), str(threads), str(source)]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, *args],
                env=child_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    want = fingerprint(m1, 64)
    for i, (proc, (env, _, _)) in enumerate(zip(procs, variants, strict=True)):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        info = json.loads(out.strip().splitlines()[-1])
        if env.get("ATEN_CPU_CAPABILITY") == "default":
            assert info["capability"] == "DEFAULT"
        assert info["fingerprint"] == want
        assert (tmp_path / f"out{i}.txt").read_bytes() == source.read_bytes()
        assert (tmp_path / f"out{i}.clm").read_bytes() == clm.read_bytes()


def test_float_clm_files_still_decode(tmp_path: Path) -> None:
    """A float M1 (no numerics in its config, as before) still writes and reads .clm files, and a
    file's numerics must match the model's."""
    model = Transformer(config_for_size("tiny", vocab_size=256, max_seq_len=64), seed=1)
    save_model(tmp_path / "float", model)
    source = tmp_path / "a.txt"
    source.write_bytes(b"float files keep decoding where their fingerprint matches\n" * 3)
    compress(source, tmp_path / "a.clm", model=tmp_path / "float", batch_size=16)
    header = load(tmp_path / "a.clm").header
    assert header["model"]["numerics"] == "float32"
    decompress(tmp_path / "a.clm", tmp_path / "b.txt", model=tmp_path / "float")
    assert (tmp_path / "b.txt").read_bytes() == source.read_bytes()


def test_quantize_a_float_m1_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from compresslm.cli import main

    texts = _texts()
    float_model, _ = train_m1(
        texts,
        size="tiny",
        context=64,
        max_tokens=16_000,
        batch_size=8,
        lr=3e-3,
        threads=1,
        progress=False,
        out=tmp_path / "float",
        numerics="float",
    )
    assert isinstance(float_model, Transformer) and not isinstance(float_model, QATTransformer)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(texts):
        (corpus / f"{i}.txt").write_text(text, encoding="utf-8")
    args = ["m1", "quantize", "--model", str(tmp_path / "float"), "-o", str(tmp_path / "exact")]
    args += ["--calibration", str(corpus), "--tokens", "4k", "--batch-size", "8", "--threads", "1"]
    assert main([*args, "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    loaded = M1.load(tmp_path / "exact", threads=1)
    assert isinstance(loaded, ExactM1)
    meta = json.loads((tmp_path / "exact" / "config.json").read_text())
    assert meta["numerics"] == "int8-exact-v1" and meta["config"]["activation"] == "gelu"
    assert report["tokens_seen"] == 4_000 // (8 * 64) * (8 * 64)  # whole steps of 8 blocks of 64
    # the exact model costs little against the float one, both through their frequency tables
    assert report["heldout_bits_per_byte"] < report["float_bits_per_byte"] * 1.05
    assert main([*args, "--no-progress"]) == 2  # exists without --force
    with pytest.raises(ConfigError, match="already an exact M1"):
        quantize_m1(tmp_path / "exact", texts, max_tokens=0, progress=False)


def test_from_float_keeps_the_weights() -> None:
    model = Transformer(config_for_size("tiny", vocab_size=256, max_seq_len=16), seed=2)
    qat = from_float(model)
    assert torch.equal(qat.wte.weight, model.wte.weight) and qat.lm_head.weight is qat.wte.weight
