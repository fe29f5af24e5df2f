"""The integer-exact M1: inference *defined* in integers, so every machine computes the same tables.

The semantics are in docs/numerics.md and, executable, in :mod:`compresslm.coding.exact_ref`
(numpy int64, the definition). This module holds the model (int8 weights, int32 scales and tables,
stored as safetensors), the bound check every load runs, and the fast path used for coding.

**Why the fast path is exact.** Every GEMM multiplies integers: int8 activations in [-127, 127]
by int8 weights. Done as a float32 GEMM, every partial sum of a reduction of K <= 1040 terms is
an integer below 2**24 in magnitude, so it is represented exactly and the result is the same in any
summation order, with or without FMA, on any BLAS, thread count or GPU; longer reductions are
split into chunks of at most 1040 whose results are added. Attention weights (up to 2**15) are
split into a high and a low byte so weights x values is two such GEMMs (chunks of 518 positions);
both bytes are looked up per score difference in a table each layer builds once from the
definition in exact integers, and the values carry a column of ones so the same GEMM sums the
weights. Over at most 24 positions (a step in windows mode) the whole weights multiply the values
in float64 instead (products below 2**22, sums below 2**53): fewer ops, and a step of a small model
is bound by its number of ops.
Everything else (requantization, LayerNorm, the exp tables, the frequency table) is elementwise
arithmetic on integers held in float64, all below 2**53: additions, products and multiplications
by powers of two are then exact, and the floor of a correctly rounded quotient of two such
integers is the exact integer floor (see :func:`_rdiv`); IEEE 754 requires these operations to be
correctly rounded on every machine, so float64 here is just a fast integer machine (int64 division
is several times slower). :func:`check_bounds` proves, from the stored tensors, that no int8
operand, no GEMM partial sum and no other intermediate can leave its range, and refuses the model
otherwise.

**Two implementations of the step.** On the CPU (the default) the session's step runs the linear
layers as the same float32 GEMMs over the rows it computes, and everything between two GEMMs as one
fused numba kernel (:mod:`.exact_kernels`, with an int8 KV cache): a step of a small model is bound
by the number of operations it issues, and the kernels make about ``8 L + 3`` calls instead of
~270 torch ops. The torch ops below stay as the reference the kernels are tested against
(``ExactM1(kernels=False)``); both compute the same integers (tests/test_exact_kernels.py).

**What exactness simplifies.** Rows are independent by construction, so the session needs no row
padding for MKL and no row-independence probe; a row attends over exactly the positions it has
(cache slices are free to vary from step to step); and torch may use any thread count. The coder
still runs one session per lane with single-threaded ops, because that is faster on a busy machine
(a lane's Python coder overlaps another lane's GEMMs).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from compresslm.coding.exact_ref import (
    ACT_MAX,
    BOS,
    EXP_ATTENTION_ONE,
    EXP_ENTRIES,
    EXP_LOGITS_ONE,
    LN_GAIN_BITS,
    N_SYMBOLS,
    RESIDUAL_MAX,
)
from compresslm.coding.range_coder import VectorDecoder
from compresslm.coding.window_coder import IDLE, RESTART, START
from compresslm.errors import ConfigError
from compresslm.models.checkpoint import (
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    _atomic_write,
    read_weights,
)
from compresslm.models.transformer import TransformerConfig

NUMERICS = "int8-exact-v1"
FLOAT_NUMERICS = "float32"
GEMM_CHUNK = ((1 << 24) - 1) // (ACT_MAX * ACT_MAX)  # 1040: K * 127 * 127 < 2**24
PV_CHUNK = ((1 << 24) - 1) // (255 * ACT_MAX)  # 518 positions: byte-sized weights x int8 values
MIN_ROWS = 16  # the cache is not compacted below this many rows
_WEIGHT_TABLE_MAX = 1 << 18  # attention weights tabulated per score difference up to this many
_EXACT_LIMIT = 1 << 53  # every intermediate stays below this: exact in int64 and in float64

LINEARS = ("attn", "proj", "fc", "out")
LAYER_NORMS = ("ln_1", "ln_2")


def tensor_names(config: TransformerConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every stored tensor: name -> (shape, dtype)."""
    C, M, L, V = config.d_model, config.d_mlp, config.max_seq_len, N_SYMBOLS
    names: dict[str, tuple[tuple[int, ...], str]] = {
        "tok_emb": ((V, C), "int8"),
        "tok_emb.m": ((V,), "int32"),
        "tok_emb.s": ((V,), "int32"),
        "pos_emb": ((L, C), "int8"),
        "pos_emb.m": ((L,), "int32"),
        "pos_emb.s": ((L,), "int32"),
        "exp_attention": ((EXP_ENTRIES,), "int32"),
        "exp_logits": ((EXP_ENTRIES,), "int32"),
    }

    def lin(prefix: str, n_out: int, n_in: int) -> None:
        names[prefix + ".w"] = ((n_out, n_in), "int8")
        for part in ("bias", "m", "s"):
            names[f"{prefix}.{part}"] = ((n_out,), "int32")

    def norm(prefix: str) -> None:
        names[prefix + ".g"] = ((C,), "int32")
        names[prefix + ".b"] = ((C,), "int32")
        names[prefix + ".eps"] = ((1,), "int32")

    for i in range(config.n_layers):
        p = f"blocks.{i}."
        norm(p + "ln_1")
        lin(p + "attn", 3 * C, C)
        names[p + "attn.index"] = ((2,), "int32")
        lin(p + "proj", C, C)
        norm(p + "ln_2")
        lin(p + "fc", M, C)
        names[p + "act.lut"] = ((2 * ACT_MAX + 1,), "int32")
        lin(p + "out", C, M)
    norm("ln_f")
    lin("head", V, C)
    return names


def _maxabs(a: np.ndarray) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int64)).max()) if a.size else 0


def check_bounds(config: TransformerConfig, w: Mapping[str, np.ndarray], where: str = "exact M1") -> None:
    """Refuse (ConfigError naming the tensor) any model for which the fast path could be inexact:
    a GEMM partial sum reaching 2**24, any other intermediate reaching 2**53, a table out of its range.
    Proved from the tensors' extreme values, so it holds for every input."""

    def refuse(name: str, why: str) -> None:
        raise ConfigError(f"{where}: {name}: {why}; the integer path could overflow, refusing this model")

    expected = tensor_names(config)
    if config.vocab_size != N_SYMBOLS:
        raise ConfigError(f"{where}: an exact M1 is a byte model (vocabulary 256), not {config.vocab_size}")
    hs = config.head_dim
    if hs * ACT_MAX * ACT_MAX >= 1 << 24:
        refuse("attention", f"head size {hs} makes q.k reach 2**24 (at most {GEMM_CHUNK})")
    if set(w) != set(expected):
        missing, extra = sorted(set(expected) - set(w)), sorted(set(w) - set(expected))
        raise ConfigError(
            f"{where}: tensors do not match the config (missing {missing[:3]}, extra {extra[:3]})"
        )
    for name, (shape, dtype) in expected.items():
        if tuple(w[name].shape) != shape or str(w[name].dtype) != dtype:
            raise ConfigError(
                f"{where}: tensor {name} is {tuple(w[name].shape)} {w[name].dtype}, expected {shape} {dtype}"
            )

    def requant_site(name: str, acc_max: int) -> None:
        m, s = np.asarray(w[name + ".m"], dtype=np.int64), np.asarray(w[name + ".s"], dtype=np.int64)
        if m.size and (m.min() < 0 or s.min() < 1 or s.max() > 62):
            refuse(name, "multipliers must be >= 0 and shifts in 1..62")
        if (acc_max * _maxabs(m) + (1 << int(s.max()) if s.size else 0)) >= _EXACT_LIMIT:
            refuse(name, f"accumulator bound {acc_max} times multiplier {_maxabs(m)} reaches 2**53")

    for name in ("tok_emb", "pos_emb"):
        if _maxabs(w[name]) > ACT_MAX:
            refuse(name, "int8 values must be in [-127, 127]")
        requant_site(name, ACT_MAX)
    for name, (shape, _) in expected.items():
        if not name.endswith(".w"):
            continue
        site = name[:-2]
        k = shape[1]
        wmax = _maxabs(w[name])
        if min(k, GEMM_CHUNK) * ACT_MAX * wmax >= 1 << 24:
            refuse(name, f"a reduction chunk of {min(k, GEMM_CHUNK)} terms with |w| <= {wmax} reaches 2**24")
        requant_site(site, k * ACT_MAX * wmax + _maxabs(w[site + ".bias"]))
    for i in range(config.n_layers):
        p = f"blocks.{i}."
        lut = w[p + "act.lut"]
        if _maxabs(lut) > ACT_MAX:
            refuse(p + "act.lut", "activation table values must be in [-127, 127]")
        m, s = (int(v) for v in w[p + "attn.index"])
        if m < 0 or not 1 <= s <= 62 or 2 * hs * ACT_MAX * ACT_MAX * m + (1 << s) >= _EXACT_LIMIT:
            refuse(p + "attn.index", "score multiplier out of range")
    for prefix in [f"blocks.{i}.{n}" for i in range(config.n_layers) for n in LAYER_NORMS] + ["ln_f"]:
        if int(w[prefix + ".eps"][0]) < 1:
            refuse(prefix + ".eps", "LayerNorm epsilon must be >= 1 (sigma > 0)")
        if _maxabs(w[prefix + ".b"]) > 1 << 24:
            refuse(prefix + ".b", "bias beyond 2**24")
        # |x - mu| < 2**21 and |g| < 2**31: 2 (x - mu) g stays below 2**53
    if config.d_model >= 1 << 11:
        refuse("d_model", "too wide: the variance's sum of C squares of 2**21 must stay below 2**53")
    for name, one in (("exp_attention", EXP_ATTENTION_ONE), ("exp_logits", EXP_LOGITS_ONE)):
        table = np.asarray(w[name], dtype=np.int64)
        if table.min() < 0 or table.max() > one or table[0] < 1 or np.any(np.diff(table) > 0):
            refuse(name, f"must be non-increasing, in [0, {one}], with entry 0 >= 1")


# ---------------------------------------------------------------------------------------- the model


class ExactModel:
    """An exact M1's tensors (numpy, as stored) and its shape; ``sha256`` of the weights file."""

    def __init__(
        self, config: TransformerConfig, tensors: Mapping[str, np.ndarray], extra: dict | None = None
    ):
        self.config = config
        self.tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        self.extra = extra or {}
        check_bounds(config, self.tensors)

    def weights_bytes(self) -> bytes:
        return st_save(
            dict(sorted(self.tensors.items())), metadata={"numerics": NUMERICS}
        )  # one key: safetensors orders metadata arbitrarily

    def sha256(self) -> str:
        return hashlib.sha256(self.weights_bytes()).hexdigest()

    def n_params(self, non_embedding: bool = True) -> int:
        return self.config.n_params(non_embedding)

    def save(self, directory: str | Path, *, force: bool = False) -> Path:
        """``model.safetensors`` (int8 / int32 tensors) and ``config.json`` (with ``numerics``),
        written like :func:`compresslm.models.save_model` (atomic, config last)."""
        from compresslm.errors import OutputExistsError

        directory = Path(directory)
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            if (directory / name).exists() and not force:
                raise OutputExistsError(f"{directory / name} exists; pass --force to overwrite")
        data = self.weights_bytes()
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "numerics": NUMERICS,
            "config": self.config.to_dict(),
            "weights_sha256": hashlib.sha256(data).hexdigest(),
            "n_params": self.config.n_params(non_embedding=False),
            "n_params_non_embedding": self.config.n_params(non_embedding=True),
            "extra": self.extra,
        }
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(directory / WEIGHTS_FILE, data)
        text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n"
        _atomic_write(directory / CONFIG_FILE, text.encode("utf-8"))
        return directory

    @classmethod
    def load(cls, directory: str | Path, meta: dict[str, Any]) -> ExactModel:
        tensors = read_weights(Path(directory) / WEIGHTS_FILE, meta.get("weights_sha256"), load=st_load)
        config = TransformerConfig.from_dict(meta["config"])
        return cls(config, tensors, meta.get("extra", {}))


def numerics_of(meta: Mapping[str, Any]) -> str:
    """A checkpoint's numerics mode (checkpoints before the exact M1 have none: float)."""
    return str(meta.get("numerics", FLOAT_NUMERICS))


# --------------------------------------------------------------------------------- the fast path


F64 = torch.float64
INT8_GEMM_MAX_K = ((1 << 31) - 1) // (ACT_MAX * 128)  # int32 accumulators: K * 127 * 128 < 2**31


@functools.cache
def int8_gemm_exact() -> bool:
    """Whether this process's int8 GEMM (``torch._int_mm``: int8 x int8 -> int32) is exact here.

    With int32 accumulators an int8 GEMM of K <= ``INT8_GEMM_MAX_K`` terms is exact in any order,
    and on CPUs with VNNI (or AMX, or ARM's dot products) it is about 4x faster than the float32
    GEMM. But on x86 CPUs without VNNI, oneDNN's int8 kernels (``vpmaddubsw``) saturate pairs of
    products at 16 bits: measured here with ``ONEDNN_MAX_CPU_ISA=AVX2``, the tiny M1's GEMMs come
    out wrong. So every process checks its backend once, on the inputs that saturate first (all
    products at their extremes) and on random ones, over several shapes, against exact int64
    products; anything short of exact (or no ``_int_mm``) keeps the float32 GEMMs.
    ``COMPRESSLM_INT8_GEMM=0`` turns the int8 path off."""
    if os.environ.get("COMPRESSLM_INT8_GEMM", "1") == "0" or not hasattr(torch, "_int_mm"):
        return False
    rng = np.random.default_rng(0)
    try:
        for m, k, n in ((1, 64, 192), (7, 8, 24), (64, 256, 64), (256, 64, 256), (33, 1040, 40)):
            cases = [rng.integers(-127, 128, (m, k)), np.full((m, k), 127), np.full((m, k), -127)]
            weights = [rng.integers(-128, 128, (k, n)), np.full((k, n), 127), np.full((k, n), -128)]
            for a in cases:
                for w in weights:
                    a8, w8 = a.astype(np.int8), w.astype(np.int8)
                    want = a8.astype(np.int64) @ w8.astype(np.int64)
                    got = torch._int_mm(torch.from_numpy(a8), torch.from_numpy(w8)).numpy()
                    # and as the kernels call it: transposed (_Linear.gemm_t, the weights first),
                    # and on a transposed view (the projection reads attend's y_t.T; one row is
                    # passed as a plain (1, k) array, see _head_kernels)
                    got_t = torch._int_mm(torch.from_numpy(w8.T.copy()), torch.from_numpy(a8).T).numpy()
                    view = torch.from_numpy(a8.T.copy()).T if m > 1 else torch.from_numpy(a8)
                    got_v = torch._int_mm(view, torch.from_numpy(w8)).numpy()
                    if not all(np.array_equal(g, want) for g in (got, got_t.T, got_v)):
                        return False
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    return True


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a tensor of integer-valued indices (any dtype; exact integers below
    2**24 in float32 convert exactly): rows of ``table``, shaped like ``index`` (``take`` and
    ``index_select`` are several times faster than advanced indexing)."""
    flat = index.to(torch.int64)
    if table.dim() == 1:
        return table.take(flat)
    return table.index_select(0, flat.view(-1)).view(*index.shape, *table.shape[1:])


def _rdiv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """rdiv on float64 integers: ``floor((2a + b) / 2b)``. Exact when ``|2a + b| < 2**53``: the
    correctly rounded quotient is within ``|q| 2**-53 < 1 / 2b`` of the true one, which is at least
    ``1 / 2b`` from the next integer, so the floor cannot change. Computed as ``(a + b / 2) / b``
    (three ops, not five): ``a + b / 2`` is exact (a half-integer below 2**52), and the quotient is
    the same real number, so the same correctly rounded one."""
    return torch.add(a, b, alpha=0.5).div_(b).floor_()


def _isqrt_(v: np.ndarray) -> np.ndarray:
    """floor(sqrt(v)), in place, of float64 integers ``1 <= v < 2**52`` (LayerNorm's variance is below 2**43):
    the floor of the correctly rounded sqrt is already exact. If ``v = n**2`` the sqrt is exact;
    otherwise ``n**2 < v < (n+1)**2`` so ``sqrt(v) < n + 1 - 1 / (2(n+1))``, and rounding can reach
    ``n + 1`` only within half an ulp, ``(n+1) 2**-53``, of it, which needs ``(n+1)**2 > 2**52``; nor
    can it fall below ``n``, a representable value not above ``sqrt(v)``."""
    np.sqrt(v, out=v)
    return np.floor(v, out=v)


class _Linear:
    """int8 weights by int8 activations as a float32 GEMM (exact: see the module docstring; the
    reduction split in chunks of at most 1040), then the requantization in float64:
    ``floor(acc (m 2**-s) + c')`` with ``c' = (bias m + 2**(s-1)) 2**-s``. Scaled by ``2**s`` the
    product is the integer ``acc m`` and the sum the integer ``(acc + bias) m + 2**(s-1)``, both of
    magnitude below ``(k 127 |w| + |bias|) m + 2**s < 2**53`` (check_bounds): exact with or without
    FMA, and scaling by a power of two changes no rounding."""

    def __init__(self, w: Mapping[str, np.ndarray], prefix: str) -> None:
        shift = w[prefix + ".s"].astype(np.int64)
        inv = np.ldexp(1.0, -shift)  # 2**-s: multiplying by it is exact
        m = w[prefix + ".m"].astype(np.float64)
        self.wt = torch.from_numpy(w[prefix + ".w"].astype(np.float32).T.copy())  # (in, out)
        self.scale = torch.from_numpy(m * inv)
        self.c = torch.from_numpy(
            (w[prefix + ".bias"].astype(np.float64) * m + np.ldexp(1.0, shift - 1)) * inv
        )
        self.k = self.wt.shape[0]
        self.scale_np, self.c_np = self.scale.numpy(), self.c.numpy()  # the kernels' views
        self.w8 = torch.from_numpy(np.ascontiguousarray(w[prefix + ".w"].T))  # (in, out) int8
        self._w_t: tuple[torch.Tensor, torch.Tensor] | None = None  # see gemm_t

    def gemm(self, a: torch.Tensor, out: np.ndarray, out_t: torch.Tensor) -> np.ndarray:
        """The float32 GEMM alone, for the kernels (:mod:`.exact_kernels`): ``a`` (n, in) float32
        ints -> the accumulator (n, out): into ``out`` (float32; ``out_t`` is its tensor view) for
        one chunk, else the float64 sum of its chunks (a new array); or int8 ``a`` -> int32 ``out``
        by the int8 GEMM. Operands come as tensors (views the session keeps): wrapping the arrays
        on every call cost about a microsecond each, 18 per step of a 2-layer model."""
        if a.dtype == torch.int8:  # int32 accumulators (see int8_gemm_exact)
            torch._int_mm(a, self.w8, out=out_t)
            return out
        if self.k <= GEMM_CHUNK:
            torch.mm(a, self.wt, out=out_t)
            return out
        acc = None
        for i in range(0, self.k, GEMM_CHUNK):
            part = (a[:, i : i + GEMM_CHUNK] @ self.wt[i : i + GEMM_CHUNK]).to(F64)
            acc = part if acc is None else acc.add_(part)
        assert acc is not None
        return acc.numpy()

    def gemm_t(self, a_t: torch.Tensor, out_t: np.ndarray, out_tt: torch.Tensor) -> np.ndarray:
        """:meth:`gemm` transposed: ``out_t`` (out, n) = ``acc.T``, as ``W a.T`` (the same products
        and sums of each output, so the same exact integers; for the kernels that read a column of
        every row at once, see ``exact_kernels.attend``). ``a_t`` is ``a.T`` as a tensor (in, n),
        ``out_tt`` the tensor view of ``out_t``. Where :meth:`gemm` chunks the reduction (float32,
        K > GEMM_CHUNK) it returns the transpose of its float64 sum."""
        if self._w_t is None:  # (out, in) contiguous, made on first use (only attention's is used)
            self._w_t = (self.w8.T.contiguous(), self.wt.T.contiguous())
        w8_t, wt_t = self._w_t
        if a_t.dtype == torch.int8:  # int32 accumulators (see int8_gemm_exact)
            torch._int_mm(w8_t, a_t, out=out_tt)
            return out_t
        if self.k <= GEMM_CHUNK:
            torch.mm(wt_t, a_t, out=out_tt)
            return out_t
        return np.ascontiguousarray(self.gemm(a_t.T, out_t.T, out_tt.T).T)

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        """``a``: (n, in) float32 holding ints in [-127, 127] -> requantized float64 ints (n, out).
        One chunk (K <= 1040): the float32 accumulator goes straight into the float64 ``addcmul``
        (type promotion converts it exactly), without a separate conversion."""
        if self.k <= GEMM_CHUNK:
            return torch.addcmul(self.c, a @ self.wt, self.scale).floor_()
        acc = None
        for i in range(0, self.k, GEMM_CHUNK):
            part = (a[:, i : i + GEMM_CHUNK] @ self.wt[i : i + GEMM_CHUNK]).to(F64)
            acc = part if acc is None else acc.add_(part)
        assert acc is not None
        return torch.addcmul(self.c, acc, self.scale).floor_()


class _Norm:
    """Integer LayerNorm in float64 (see the module docstring), in few, mostly in-place ops: a
    step of a small model is bound by the number of torch calls, not by arithmetic."""

    def __init__(self, w: Mapping[str, np.ndarray], prefix: str) -> None:
        # g 2**-(LN_GAIN_BITS - 1): (d g + sigma 2**15) 2**-15 is an integer below 2**53 scaled by a
        # power of two, so the addcmul below is exact with or without FMA
        self.g_scaled = torch.from_numpy(np.ldexp(w[prefix + ".g"].astype(np.float64), 1 - LN_GAIN_BITS))
        self.b = torch.from_numpy(w[prefix + ".b"].astype(np.float64))
        self.eps = float(w[prefix + ".eps"][0])
        self.params = (self.g_scaled.numpy(), self.b.numpy(), self.eps)  # for the kernels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """float64 ints (n, C) -> float32 (n, C) holding ints in [-127, 127].

        ``mu = floor((sum + C / 2) / C)``: the quotient is the real number ``(2 sum + C) / 2C`` of
        ``rdiv``, and ``sum + C / 2`` is exact, so the correctly rounded quotient and its floor are
        :func:`_rdiv`'s. Likewise ``(d g 2**-15 + sigma) / (2 sigma)`` is the real number
        ``(2 d g + den) / (2 den)`` with ``den = sigma 2**16``: the same rounded quotient as ``rdiv(d g,
        den)``."""
        C = x.shape[1]
        # The per-row statistics, (n, 1) each, are done in numpy on the tensors' memory: numpy's
        # float64 +, /, sqrt and floor are the same correctly rounded IEEE operations, at a fraction
        # of a torch call's overhead on a few dozen values.
        mu = x.sum(1, keepdim=True)
        m = mu.numpy()
        m += C / 2
        m /= C
        np.floor(m, out=m)
        xc = x - mu
        sigma = (xc * xc).sum(1, keepdim=True)
        v = sigma.numpy()
        v /= C
        np.floor(v, out=v)
        v += self.eps
        _isqrt_(v)
        y = torch.addcmul(sigma, xc, self.g_scaled).div_(torch.from_numpy(v * 2)).floor_().add_(self.b)
        return y.clamp_(-ACT_MAX, ACT_MAX).to(torch.float32)  # a GEMM input: ints in [-127, 127]


class _Layer:
    def __init__(self, w: Mapping[str, np.ndarray], i: int, head_dim: int) -> None:
        p = f"blocks.{i}."
        self.ln_1, self.ln_2 = _Norm(w, p + "ln_1"), _Norm(w, p + "ln_2")
        self.attn, self.proj = _Linear(w, p + "attn"), _Linear(w, p + "proj")
        self.fc, self.out = _Linear(w, p + "fc"), _Linear(w, p + "out")
        self.lut = torch.from_numpy(w[p + "act.lut"].astype(np.float32))
        self.lut_np = self.lut.numpy()
        self.lut_i8 = w[p + "act.lut"].astype(np.int8)  # the kernels' table for int8 GEMM inputs
        m, s = (int(v) for v in w[p + "attn.index"])
        # A score difference d is an integer in [0, dmax]; its attention weight is
        # exp_attention[min(rshift(d m, s), 511)], non-increasing in d and constant from the first d
        # whose index reaches 511 (``sat``). Tabulated here once, in exact Python/int64 integers, for
        # every d up to ``sat``, as the weight's two bytes [hi, lo] (w = 256 hi + lo, the operands of
        # the weights x values GEMM), so a step looks the bytes up instead of computing them. Row
        # ``sentinel`` (after the last) is [0, 0]: the weight of a masked position.
        dmax = 2 * head_dim * ACT_MAX * ACT_MAX
        # index(d) >= 511 once d m >= 511 2**s - 2**(s-1); any d past that point will do as ``sat``
        sat = 0 if m == 0 else min(dmax, (((EXP_ENTRIES - 1) << s) - (1 << (s - 1))) // m + 1)
        e = w["exp_attention"].astype(np.int64)
        if sat < _WEIGHT_TABLE_MAX:
            d = np.arange(sat + 1, dtype=np.int64)
            index = np.minimum((d * m + (1 << (s - 1))) >> s, EXP_ENTRIES - 1)  # d m < 2**53: check_bounds
            if sat < dmax and index[-1] != EXP_ENTRIES - 1:
                raise AssertionError("attention weight table does not reach saturation")
            weights = e[index]
            self.index_scale = None
        else:  # a steep index: the arithmetic below instead, over the 512 table entries
            weights = e
            # floor((d m + 2**(s-1)) 2**-s) = floor(d (m 2**-s) + 0.5): d m < 2**53 (check_bounds),
            # and scaling by a power of two is exact, so both round nowhere
            self.index_scale = math.ldexp(float(m), -s)
        self.limit = len(weights) - 1  # the largest index (d clamped to it, or the exp table's last)
        self.sentinel = len(weights)
        table = np.zeros((len(weights) + 1, 2), dtype=np.float32)
        table[:-1, 0], table[:-1, 1] = weights >> 8, weights & 255  # exact: bytes in float32
        self.weight_bytes = torch.from_numpy(table)  # for float32 GEMMs (long spans, whole chunks)
        # The same weights whole, in float64 (short spans: weights x values elementwise in float64)
        self.weights = torch.from_numpy(np.append(weights, 0).astype(np.float64))
        # The kernels' arguments for the weights: the exp table with the index's multiplier and
        # shift (the definition's arithmetic: a few integer operations per position beat a lookup
        # in a table of up to 2**18 entries, which does not stay in the cache)
        # (and one 0 after the table: exact_kernels.attend's weight past a row's position)
        self.weight_args = (np.append(e, 0).astype(np.int32), EXP_ENTRIES - 1, m, s)


class ExactNet:
    """The fast path's parameters, converted once from an :class:`ExactModel`. Integers are held
    in float32 (GEMM operands, below 2**24) and float64 (everything else, below 2**53), where the
    arithmetic used is exact; this is several times faster than int64 division and conversions."""

    def __init__(self, model: ExactModel) -> None:
        w, cfg = model.tensors, model.config
        self.config = cfg
        self.n_layers, self.n_heads, self.head_dim = cfg.n_layers, cfg.n_heads, cfg.head_dim
        emb = {}
        for name in ("tok_emb", "pos_emb"):
            table = w[name].astype(np.int64)
            m = w[name + ".m"].astype(np.int64)[:, None]
            s = w[name + ".s"].astype(np.int64)[:, None]
            rows = (table * m + (np.int64(1) << (s - 1))) >> s  # requantized once per model
            emb[name] = torch.from_numpy(rows.astype(np.float64))
        self.tok, self.pos = emb["tok_emb"], emb["pos_emb"]
        self.layers = [_Layer(w, i, cfg.head_dim) for i in range(cfg.n_layers)]
        self.ln_f = _Norm(w, "ln_f")
        self.head = _Linear(w, "head")
        # The kernels may run the linear layers as int8 GEMMs (where int8_gemm_exact says so)
        linears = [self.head] + [getattr(layer, name) for layer in self.layers for name in LINEARS]
        self.int8_gemm = all(lin.k <= INT8_GEMM_MAX_K for lin in linears)
        self.exp_logits = torch.from_numpy(w["exp_logits"].astype(np.float64))
        self.tok_np, self.pos_np = self.tok.numpy(), self.pos.numpy()
        self.exp_logits_np = w["exp_logits"].astype(np.int64)  # the kernels' (int64 sums)

    def tables(self, logits: torch.Tensor, precision: int) -> np.ndarray:
        """Integer softmax of float64-int logits (n, 256) -> int64 cumulative tables (n, 257).
        A difference beyond 511 may round, but stays beyond 511: the clamp makes it exact."""
        idx = torch.sub(logits.amax(1, keepdim=True), logits).clamp_(max=EXP_ENTRIES - 1)
        e = _lookup(self.exp_logits, idx)  # <= 2**20; e * (2**P - 256) < 2**44
        f = (e * float((1 << precision) - N_SYMBOLS)).div_(e.sum(1, keepdim=True)).floor_().add_(1)
        cum = np.zeros((len(f), N_SYMBOLS + 1), dtype=np.int64)
        np.cumsum(f.numpy(), axis=1, out=cum[:, 1:])  # integers below 2**53: exact in any order
        return cum


#: Weights x values over at most this many cached positions as one elementwise product and sum in
#: float64 (fewer, cheaper ops for the short spans of windows mode); longer spans as float32 GEMMs.
_PV_ELEMENTWISE = 24


def _attend(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    layer: _Layer,
    hidden: torch.Tensor | None,
    float64_diff: bool,
) -> torch.Tensor:
    """One query per row over cached positions ``[0, span)``. q: (n, nh, hs) float32 ints; keys:
    (n, nh, span, hs), values: (n, nh, span, hs + 1) float32 ints whose last column is 1 (so the
    same product also sums the weights). ``hidden``: None when every row attends over all ``span``
    positions, else (n, 1, span) True past a row's position. Returns float64 ints (n, nh, hs).

    Exact: ``q . k`` sums hs products of int8 values, below ``hs 127**2 < 2**24`` (check_bounds),
    so the float32 elementwise product and sum are exact in any order; a difference of two scores
    is below ``2 hs 127**2``, exact in float32 when that is below 2**24 (else ``float64_diff``). The
    weights come from the layer's tables (exact integers up to 2**15). Over a short span, weights x
    values are float64 products below 2**22 summed in float64, below 2**53 in any order; over a
    longer one, two GEMMs of byte-sized weights by int8 values in chunks of at most 518 positions
    (``518 * 255 * 127 < 2**24``). Their results, and everything after, are float64 integers below
    2**53."""
    n, nh, span, hs = keys.shape
    scores = (keys * q[:, :, None, :]).sum(-1)  # (n, nh, span)
    if float64_diff:
        scores = scores.to(F64)
    top = (scores if hidden is None else scores.masked_fill(hidden, -math.inf)).amax(-1, keepdim=True)
    d = torch.sub(top, scores, out=scores)
    if layer.index_scale is None:  # a difference past the table's end has the last entry's weight
        index = d.clamp_(max=layer.limit)
    else:
        index = d.to(F64).mul_(layer.index_scale).add_(0.5).floor_().clamp_(max=layer.limit)
    if hidden is not None:
        index = index.masked_fill_(hidden, layer.sentinel)  # weight 0
    if span <= _PV_ELEMENTWISE:
        e = _lookup(layer.weights, index)  # (n, nh, span) float64
        acc = (e[..., None] * values).sum(2)  # (n, nh, hs + 1): sum w v, then sum w
    else:
        parts = _lookup(layer.weight_bytes, index).transpose(-1, -2)  # (n, nh, 2, span): hi, lo
        out = None
        for i in range(0, span, PV_CHUNK):
            chunk = (parts[..., i : i + PV_CHUNK] @ values[:, :, i : i + PV_CHUNK]).to(F64)
            out = chunk if out is None else out.add_(chunk)
        assert out is not None
        acc = torch.add(out[:, :, 1], out[:, :, 0], alpha=256)
    return _rdiv(acc[..., :hs], acc[..., hs:])


class ExactSession:
    """``n_rows`` rows with a KV cache of ``max_len`` positions; the M1Session interface (START,
    RESTART + b, IDLE; ``start_table``)."""

    # The session's tensors (cache included) are made and updated in inference mode only: it skips
    # autograd's version counting, a measurable share of a step of many small ops.
    @torch.inference_mode()
    def __init__(self, m1: Any, n_rows: int, max_len: int) -> None:
        from compresslm.coding.m1 import _single_threaded_ops

        if max_len > m1.max_context:
            raise ConfigError(
                f"max_window_bytes {max_len} exceeds the model's context of {m1.max_context} positions"
            )
        self.m1 = m1
        self.net: ExactNet = m1.net
        self.n_rows, self.max_len = n_rows, max_len
        self.timings = m1.timings
        self._release = _single_threaded_ops
        self._closed = False
        net = self.net
        self.float64_diff = 2 * net.head_dim * ACT_MAX * ACT_MAX >= 1 << 24
        # The fused kernels (CPU) or the torch ops (the reference the kernels are tested against)
        self.kernels = bool(getattr(m1, "kernels", False))
        self._buffers: dict[str, np.ndarray] | None = None
        self._views: tuple[int, dict[str, np.ndarray], dict[str, torch.Tensor]] | None = None
        # step_decode's rows, token ids, positions and physical rows (see exact_kernels.advance_rows)
        self._plan = tuple(np.empty(n_rows, dtype=np.int64) for _ in range(4))
        _single_threaded_ops(+1)
        # Logical rows (what the caller indexes) live in physical rows of the cache (see _place).
        self.phys = np.full(n_rows, -1, dtype=np.int64)
        # Position 0 of every window is BOS: its table, keys and values are the same for every row,
        # so the cache holds them from its allocation on and no step ever writes position 0.
        start_k, start_v = [], []
        x = (net.tok[BOS][None] + net.pos[0][None]).clamp(-RESIDUAL_MAX, RESIDUAL_MAX)
        for layer in net.layers:
            q, k, v = self._qkv(layer, x)
            start_k.append(k[0])
            start_v.append(v[0])
            values = torch.cat([v[:, :, None], torch.ones(1, net.n_heads, 1, 1)], dim=-1)
            y = _attend(q, k[:, :, None], values, layer, None, self.float64_diff)
            x = self._rest(layer, x, y)
        self.start_table = net.tables(net.head(net.ln_f(x)), m1.precision)[0]
        self.start_table.setflags(write=False)
        self.start_keys = torch.stack(start_k)  # (layers, nh, hs)
        self.start_values = torch.stack(start_v)
        self._allocate(n_rows)

    def _allocate(self, rows: int, keep: np.ndarray | None = None) -> None:
        """The cache for ``rows`` physical rows, all ``max_len`` positions at once (no copies as
        rows grow); ``keep`` lists old physical rows copied, in order, into the first new ones.
        Values carry a last column of ones (see _attend)."""
        net = self.net
        shape = (net.n_layers, rows, net.n_heads, self.max_len, net.head_dim)
        if self.kernels:  # int8, no column of ones (the kernels sum the weights themselves)
            self._allocate_int8(shape, keep)
            return
        keys, values = torch.zeros(shape), torch.zeros((*shape[:-1], net.head_dim + 1))
        values[..., -1] = 1.0
        keys[:, :, :, 0] = self.start_keys[:, None]
        values[:, :, :, 0, :-1] = self.start_values[:, None]
        pos = np.zeros(rows, dtype=np.int64)
        if keep is not None and len(keep):
            old = torch.from_numpy(keep)
            keys[:, : len(keep)] = self.keys.index_select(1, old)
            values[:, : len(keep)] = self.values.index_select(1, old)
            pos[: len(keep)] = self.pos[keep]
        self.keys, self.values, self.pos, self.rows = keys, values, pos, rows

    def _allocate_int8(self, shape: tuple[int, ...], keep: np.ndarray | None) -> None:
        """The kernels' cache: keys and values as int8 (exact: both are in [-127, 127]), a quarter
        of the float32 cache's memory traffic."""
        from compresslm.coding.exact_kernels import attention_scratch, new_cache

        layers, rows, nh, L, hs = shape
        keys, values = new_cache(*shape)  # (layers, L, hs, nh rows): head h, row r at h rows + r
        for cache, start in ((keys, self.start_keys), (values, self.start_values)):  # position 0
            lanes = cache[:, 0].reshape(layers, hs, nh, rows)
            lanes[:] = start.numpy().transpose(0, 2, 1)[..., None]
        pos = np.zeros(rows, dtype=np.int64)
        if keep is not None and len(keep):
            old_rows = self.rows
            for cache, old in ((keys, self.keys), (values, self.values)):
                new_lanes = cache.reshape(layers, L, hs, nh, rows)
                new_lanes[..., : len(keep)] = old.reshape(layers, L, hs, nh, old_rows)[..., keep]
            pos[: len(keep)] = self.pos[keep]
        self.keys, self.values, self.pos, self.rows = keys, values, pos, rows
        self._scratch = attention_scratch(rows, nh, L, hs)

    def _qkv(self, layer: _Layer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k and v as float32 ints in [-127, 127], each (n, nh, hs)."""
        net = self.net
        qkv = layer.attn(layer.ln_1(x)).clamp_(-ACT_MAX, ACT_MAX).to(torch.float32)
        return qkv.view(len(x), 3, net.n_heads, net.head_dim).unbind(1)

    @staticmethod
    def _rest(layer: _Layer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The block after attention: projection, residual, MLP, residual."""
        x = layer.proj(y.reshape(len(x), -1).to(torch.float32)).add_(x).clamp_(-RESIDUAL_MAX, RESIDUAL_MAX)
        h = layer.fc(layer.ln_2(x)).clamp_(-ACT_MAX, ACT_MAX)
        g = _lookup(layer.lut, h.add_(ACT_MAX))
        return layer.out(g).add_(x).clamp_(-RESIDUAL_MAX, RESIDUAL_MAX)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release(-1)

    def _place(self, active: np.ndarray, opening: np.ndarray) -> None:
        """Give every active logical row a physical row of the cache (see ``m1.place_rows``)."""
        from compresslm.coding.m1 import place_rows

        place_rows(self.phys, self.rows, active, opening, MIN_ROWS, self._resize)

    def _resize(self, n_active: int, keep: np.ndarray) -> int:
        self._allocate(max(n_active, 1), keep)
        return self.rows

    def _open(self, phys: np.ndarray) -> None:
        """A window opens in physical rows ``phys``: position 0 (BOS's constant keys and values,
        never overwritten: steps write positions >= 1) is already in place."""
        self.pos[phys] = 0

    @torch.inference_mode()
    def step(self, tokens: np.ndarray) -> np.ndarray:
        tokens = self._check_tokens(tokens)
        active = tokens != IDLE
        if not active.any():
            return np.zeros((self.n_rows, N_SYMBOLS + 1), dtype=np.int64)
        # Not zeroed as a whole: computed rows are overwritten, the others zeroed or set below (a
        # step's tables are as large as its cache's rows; zeroing them all showed in profiles).
        tables = np.empty((self.n_rows, N_SYMBOLS + 1), dtype=np.int64)
        computing = active & (tokens != START)
        tables[~computing] = 0
        if self._place_and_open(tokens, active):
            tables[tokens == START] = self.start_table
        if not computing.any():
            return tables
        t0 = time.perf_counter()
        rows = np.flatnonzero(computing)
        ids, at, phys = self._advance(tokens, rows)
        if self.kernels:
            self._forward_kernels(ids, at, phys, tables, rows)
            self._count(t0, len(phys))
            return tables
        span = int(at.max()) + 1
        # Every physical row is computed (no gather of the cache): rows with nothing to do run BOS
        # at the last position of the span in their own, dead or about-to-be-reopened, cache, so
        # when the busy rows share a position (stream mode) no row needs a mask.
        ids_all = np.full(self.rows, BOS, dtype=np.int64)
        ids_all[phys] = ids
        pos = np.full(self.rows, span - 1, dtype=np.int64)
        pos[phys] = at
        logits = self._forward(
            torch.from_numpy(ids_all), torch.from_numpy(pos), span, bool((at == span - 1).all())
        )
        t1 = time.perf_counter()
        if len(phys) < self.rows or np.any(phys != np.arange(self.rows)):
            logits = logits[torch.from_numpy(phys)]
        tables[computing] = self.net.tables(logits, self.m1.precision)
        timings = self.timings
        timings.forward_s += t1 - t0
        timings.quantize_s += time.perf_counter() - t1
        timings.steps += 1
        timings.row_positions += self.rows
        return tables

    def step_decode(self, tokens: np.ndarray, decoder: VectorDecoder) -> np.ndarray:
        """:meth:`step`, and every row whose token is not IDLE decodes its next symbol from
        ``decoder`` (decoder row = session row) with the step's table; the symbols, in row order.
        The same symbols and decoder states as ``decoder.decode(rows, step(tokens)[rows])``: with
        the kernels, one fused kernel (``exact_kernels.decode``) computes the tables' frequencies
        and decodes with them, never writing the tables (257 int64 per row). No row may send START
        (its table is the constant ``start_table``, which needs no step: code it before)."""
        tokens = self._check_tokens(tokens)
        if not self.kernels:
            self._refuse_start(tokens)
            rows = np.flatnonzero(tokens != IDLE)
            return decoder.decode(rows, self.step(tokens)[rows])
        from compresslm.coding import exact_kernels as K

        # The bookkeeping in two compiled calls (``_open`` stays the session's), the general path
        # where they decline (a START, a cache to resize, an error to report)
        rows, ids, at, phys = self._plan
        opened = K.place_rows(tokens, self.phys, self.rows, MIN_ROWS, phys)
        if opened < 0:
            self._refuse_start(tokens)
            self._place_and_open(tokens, tokens != IDLE)
        elif opened:
            self._open(phys[:opened].copy())
        k = K.advance_rows(tokens, self.phys, self.pos, self.max_len, rows, ids, at, phys)
        if k < 0:
            raise ConfigError(f"a window row ran past its {self.max_len} positions")
        if not k:
            return np.zeros(0, dtype=np.int64)
        t0 = time.perf_counter()
        rows, ids, at, phys = rows[:k], ids[:k], at[:k], phys[:k]
        acc = self._head_kernels(ids, at, phys)
        sym = np.empty(k, dtype=np.int64)
        head = self.net.head
        K.decode(
            acc, head.scale_np, head.c_np, self.net.exp_logits_np, self.m1.precision,
            *decoder.state(), rows, sym,
        )  # fmt: skip
        self._count(t0, k)
        return sym

    @staticmethod
    def _refuse_start(tokens: np.ndarray) -> None:
        if np.any(tokens == START):
            raise ConfigError("step_decode takes no START token: code the start_table without a step")

    def _check_tokens(self, tokens: np.ndarray) -> np.ndarray:
        if len(tokens) != self.n_rows:
            raise ConfigError(f"step needs {self.n_rows} tokens, got {len(tokens)}")
        return np.asarray(tokens, dtype=np.int64)

    def _place_and_open(self, tokens: np.ndarray, active: np.ndarray) -> bool:
        """Physical rows for the ``active`` rows (see :meth:`_place`), opening the rows whose token
        is START or RESTART + b; whether any opened."""
        opening = (tokens == START) | (tokens >= RESTART)
        self._place(active, opening)
        if not opening.any():
            return False
        self._open(self.phys[opening])
        return True

    def _advance(self, tokens: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The computed ``rows`` move one position on: their token ids (RESTART + b is byte b), new
        positions and physical rows."""
        phys = self.phys[rows]
        at = self.pos[phys] + 1
        if int(at.max()) >= self.max_len:
            raise ConfigError(f"a window row ran past its {self.max_len} positions")
        self.pos[phys] = at
        ids = tokens[rows]
        return np.where(ids >= RESTART, ids - RESTART, ids), at, phys

    def _count(self, t0: float, positions: int) -> None:
        timings = self.timings
        timings.forward_s += time.perf_counter() - t0
        timings.steps += 1
        timings.row_positions += positions

    def chunk_intervals(self, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`chunk_intervals` with this session's model: through the fused kernels or the
        torch ops (neither uses the session's cache)."""
        t0 = time.perf_counter()
        if self.kernels:
            out = self._chunk_intervals_kernels(chunks)
        else:
            out = chunk_intervals(self.net, chunks, self.m1.precision)
        self.timings.forward_s += time.perf_counter() - t0
        self.timings.row_positions += chunks.size
        return out

    def _chunk_intervals_kernels(
        self, chunks: np.ndarray, rows_per_pass: int = 16
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`chunk_intervals` by the step's kernels: a pass computes every position of up to
        ``rows_per_pass`` chunks as the rows of one call (row ``r T + t`` is position t of chunk
        r; attention within each chunk by ``attend_windows``, the interval of each coded byte by
        ``intervals``), so every GEMM has ``rows_per_pass * T`` rows; the same integers as
        stepping, since the kernels compute the definition's whatever the rows."""
        from compresslm.coding import exact_kernels as K

        n, T = chunks.shape
        if chunks.shape[1] > self.max_len:
            raise ConfigError(f"a chunk of {T} bytes exceeds the session's {self.max_len} positions")
        tokens = np.zeros((n, T), dtype=np.int64)  # BOS, then the chunk's bytes but the last
        tokens[:, 1:] = chunks[:, :-1]
        m = max(1, rows_per_pass)
        at = np.tile(np.arange(T, dtype=np.int64), m)
        phys = np.repeat(np.arange(m, dtype=np.int64), T)
        symbols = np.ascontiguousarray(chunks, dtype=np.int64).reshape(-1)
        start, freq, total = (np.empty(n * T, dtype=np.int64) for _ in range(3))
        head, precision = self.net.head, self.m1.precision
        for r0 in range(0, n, m):
            N = min(m, n - r0) * T
            acc = self._head_kernels(tokens[r0 : r0 + N // T].reshape(-1), at[:N], phys[:N], T)
            done = slice(r0 * T, r0 * T + N)
            K.intervals(
                acc, head.scale_np, head.c_np, self.net.exp_logits_np, precision,
                symbols[done], start[done], freq[done], total[done],
            )  # fmt: skip
        return start.reshape(n, T), freq.reshape(n, T), total.reshape(n, T)

    def _forward_kernels(
        self, ids: np.ndarray, at: np.ndarray, phys: np.ndarray, tables: np.ndarray, out_rows: np.ndarray
    ) -> None:
        """The new position ``at[i]`` of cache row ``phys[i]`` for token ``ids[i]``, through the
        fused kernels (:mod:`.exact_kernels`): float32 GEMMs over the computed rows only, one
        kernel call between two GEMMs; the cumulative tables go to ``tables[out_rows]``."""
        from compresslm.coding import exact_kernels as K

        net = self.net
        acc = self._head_kernels(ids, at, phys)
        K.tables(
            acc, net.head.scale_np, net.head.c_np, net.exp_logits_np, self.m1.precision, tables, out_rows
        )

    def _head_kernels(self, ids: np.ndarray, at: np.ndarray, phys: np.ndarray, window: int = 0) -> np.ndarray:
        """:meth:`_forward_kernels` up to the head's GEMM: its accumulator (n, 256), for the
        tables (a step) or the coded bytes' intervals (:meth:`_chunk_intervals_kernels`).
        ``window`` > 0: the rows are whole windows of that many positions (the chunk encoder),
        attending within each window (``attend_windows``: no cache)."""
        from compresslm.coding import exact_kernels as K

        net, n = self.net, len(ids)
        work, tensors = self._work(n)
        x, a, g, c = work["x"], work["a"], work["g"], work["c"]
        a_t, c_t = tensors["a"], tensors["c"]
        K.embed_norm(ids, at, net.tok_np, net.pos_np, *net.layers[0].ln_1.params, x, a)
        for i, layer in enumerate(net.layers):
            attn = (layer.attn.scale_np, layer.attn.c_np)
            if window:
                acc = layer.attn.gemm(a_t, work["qkv"], tensors["qkv"])
                K.attend_windows(acc, *attn, window, net.n_heads, *layer.weight_args, work["y"])
                y = tensors["y"]
            else:  # transposed in and out (see attend); the projection reads y_t.T, a view
                acc_t = layer.attn.gemm_t(tensors["a.T"], work["qkv_t"], tensors["qkv_t"])
                K.attend(
                    acc_t, *attn, phys, at, self.keys[i], self.values[i], *layer.weight_args, work["y_t"],
                    *self._scratch,
                )  # fmt: skip
                y = tensors["y_t.T"]
            acc = layer.proj.gemm(y, c, c_t)
            K.residual_norm(x, acc, layer.proj.scale_np, layer.proj.c_np, *layer.ln_2.params, a)
            acc = layer.fc.gemm(a_t, work["m"], tensors["m"])
            lut = layer.lut_i8 if g.dtype == np.int8 else layer.lut_np  # in g's dtype: see activation
            K.activation(acc, layer.fc.scale_np, layer.fc.c_np, lut, g)
            acc = layer.out.gemm(tensors["g"], c, c_t)
            norm = net.layers[i + 1].ln_1 if i + 1 < net.n_layers else net.ln_f
            K.residual_norm(x, acc, layer.out.scale_np, layer.out.c_np, *norm.params, a)
        return net.head.gemm(a_t, work["v"], tensors["v"])

    def _work(self, n: int) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
        """The kernels' buffers for ``n`` rows (views of buffers kept across steps: a step of a small
        model should not pay for allocating, and page-faulting, its GEMM outputs), and the torch
        views of the GEMMs' operands (wrapping arrays cost about a microsecond each, 18 per step of
        a 2-layer model). The views of the last row count are kept: a lane's steps mostly compute
        the same number of rows."""
        if self._buffers is None or len(self._buffers["x"]) < n:
            net = self.net
            C, M = net.config.d_model, net.config.d_mlp
            rows = max(n, self.n_rows)
            # GEMM inputs and outputs: int8 and int32 for the int8 GEMM, else float32 and float32
            a8 = net.int8_gemm and int8_gemm_exact()
            ins, outs = (np.int8, np.int32) if a8 else (np.float32, np.float32)
            self._buffers = {
                "x": np.empty((rows, C)),
                "a": np.empty((rows, C), dtype=ins),
                "y": np.empty((rows, C), dtype=ins),
                "g": np.empty((rows, M), dtype=ins),
                "qkv": np.empty((rows, 3 * C), dtype=outs),
                "c": np.empty((rows, C), dtype=outs),
                "m": np.empty((rows, M), dtype=outs),
                "v": np.empty((rows, N_SYMBOLS), dtype=outs),
            }
            self._views = None
        if self._views is None or self._views[0] != n:
            work = {k: v[:n] for k, v in self._buffers.items()}
            # Transposed buffers (out, n), contiguous: the first (out n) elements of a flat buffer
            for name, base in (("qkv_t", "qkv"), ("y_t", "y")):
                width = self._buffers[base].shape[1]
                work[name] = self._buffers[base].reshape(-1)[: width * n].reshape(width, n)
            with torch.inference_mode(False):  # ordinary tensors: used in and out of inference mode
                tensors = {
                    k: torch.from_numpy(work[k]) for k in ("a", "y", "g", "qkv", "c", "m", "v", "qkv_t")
                }
                tensors["a.T"] = tensors["a"].T
                # The projection's input y_t.T; one row as (1, C) with real strides (torch's _int_mm
                # misreads the transpose's degenerate ones, (1, 1), as a column-major matrix)
                y_t = work["y_t"]
                tensors["y_t.T"] = torch.from_numpy(y_t).T if n > 1 else torch.from_numpy(y_t.reshape(1, -1))
            self._views = (n, work, tensors)
        return self._views[1], self._views[2]

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, span: int, aligned: bool) -> torch.Tensor:
        """The new position of every physical row; its keys and values are stored in the cache and
        it attends over positions ``[0, span)`` masked to its own (any span gives the same ints).
        ``aligned``: every row is at position ``span - 1`` (no mask, and a strided copy stores)."""
        net = self.net
        hs, nh, L = net.head_dim, net.n_heads, self.max_len
        hidden, at = None, None
        if not aligned:  # index arithmetic in numpy: cheaper per call than torch on small arrays
            p = pos.numpy()
            hidden = torch.from_numpy((np.arange(span)[None, :] > p[:, None])[:, None, :])
            # Row r, head h, position p of a layer's cache viewed as (rows * nh * L, hs [+ 1]).
            at = torch.from_numpy(
                ((np.arange(self.rows) * (nh * L))[:, None] + np.arange(nh)[None] * L + p[:, None]).reshape(
                    -1
                )
            )
        x = (
            net.tok.index_select(0, ids)
            .add_(net.pos.index_select(0, pos))
            .clamp_(-RESIDUAL_MAX, RESIDUAL_MAX)
        )
        for i, layer in enumerate(net.layers):
            q, k, v = self._qkv(layer, x)
            keys, values = self.keys[i], self.values[i]  # (rows, nh, max_len, hs [+ 1])
            if aligned:
                keys[:, :, span - 1] = k
                values[:, :, span - 1, :hs] = v
            else:  # one flat index copy per tensor (advanced indexing is several times slower)
                assert at is not None
                keys.view(-1, hs).index_copy_(0, at, k.reshape(-1, hs))
                values.view(-1, hs + 1)[:, :hs].index_copy_(0, at, v.reshape(-1, hs))
            y = _attend(q, keys[:, :, :span], values[:, :, :span], layer, hidden, self.float64_diff)
            x = self._rest(layer, x, y)
        return net.head(net.ln_f(x))


def _attend_causal(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: _Layer, float64_diff: bool
) -> torch.Tensor:
    """Attention of every position of a window over the positions up to it, all at once: q, k
    (n, nh, T, hs) and v (n, nh, T, hs + 1, last column 1) float32 ints -> float64 ints (n, nh, T, hs).
    The same integers as :func:`_attend` at each position, by the same argument (scores are GEMMs
    of K = hs int8 products, weights x values GEMMs of byte-sized weights in chunks of 518)."""
    n, nh, T, hs = q.shape
    scores = q @ k.transpose(-1, -2)  # (n, nh, T, T): hs * 127**2 < 2**24, exact
    if float64_diff:
        scores = scores.to(F64)
    hidden = torch.ones(T, T, dtype=torch.bool).triu_(1)  # key j after query t
    top = scores.masked_fill(hidden, -math.inf).amax(-1, keepdim=True)
    d = torch.sub(top, scores, out=scores)
    if layer.index_scale is None:
        index = d.clamp_(max=layer.limit)
    else:
        index = d.to(F64).mul_(layer.index_scale).add_(0.5).floor_().clamp_(max=layer.limit)
    index = index.masked_fill_(hidden, layer.sentinel)
    parts = _lookup(layer.weight_bytes, index)  # (n, nh, T, T, 2)
    parts = parts.permute(0, 1, 4, 2, 3).reshape(n, nh, 2 * T, T)  # hi rows, then lo rows
    out = None
    for i in range(0, T, PV_CHUNK):
        chunk = (parts[..., i : i + PV_CHUNK] @ v[:, :, i : i + PV_CHUNK]).to(F64)
        out = chunk if out is None else out.add_(chunk)
    assert out is not None
    acc = torch.add(out[:, :, T:], out[:, :, :T], alpha=256)  # (n, nh, T, hs + 1)
    return _rdiv(acc[..., :hs], acc[..., hs:])


def chunk_intervals(
    net: ExactNet, chunks: np.ndarray, precision: int, rows_per_pass: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coder's interval of every byte of ``n`` chunks at once: ``chunks`` (n, T) bytes, each
    read from BOS (T <= the model's context; a shorter chunk's padding gets intervals too, unused)
    -> ``(start, freq, total)``, each (n, T) int64: byte t's cumulative frequency, frequency and
    table total in the table after ``[BOS] + chunk[:t]``. The same integers as stepping a session
    one position at a time (every operation is exact, so the order and shape of the computation
    cannot change them), with full GEMMs instead of one position per row: an encoder knows every
    byte in advance, so it uses this; the decoder cannot."""
    n, T = chunks.shape
    tokens = np.zeros((n, T), dtype=np.int64)
    tokens[:, 1:] = chunks[:, :-1]
    C, nh, hs = net.config.d_model, net.n_heads, net.head_dim
    float64_diff = 2 * hs * ACT_MAX * ACT_MAX >= 1 << 24
    start, freq, total = (np.empty((n, T), dtype=np.int64) for _ in range(3))
    positions = torch.arange(T)
    for r0 in range(0, n, rows_per_pass):
        ids = torch.from_numpy(np.ascontiguousarray(tokens[r0 : r0 + rows_per_pass], dtype=np.int64))
        m = len(ids)
        x = (_lookup(net.tok, ids) + _lookup(net.pos, positions)[None]).clamp_(-RESIDUAL_MAX, RESIDUAL_MAX)
        x = x.view(m * T, C)
        for layer in net.layers:
            qkv = layer.attn(layer.ln_1(x)).clamp_(-ACT_MAX, ACT_MAX).to(torch.float32)
            q, k, v = qkv.view(m, T, 3, nh, hs).permute(2, 0, 3, 1, 4).unbind(0)  # (m, nh, T, hs)
            v = torch.cat([v, torch.ones(m, nh, T, 1)], dim=-1)
            y = _attend_causal(q, k, v, layer, float64_diff)  # (m, nh, T, hs)
            x = ExactSession._rest(layer, x, y.permute(0, 2, 1, 3).reshape(m * T, C))
        cum = net.tables(net.head(net.ln_f(x)), precision)  # (m T, 257)
        sym = chunks[r0 : r0 + m].reshape(-1).astype(np.int64)
        k = np.arange(len(sym))
        lo, hi = cum[k, sym], cum[k, sym + 1]
        start[r0 : r0 + m] = lo.reshape(m, T)
        freq[r0 : r0 + m] = (hi - lo).reshape(m, T)
        total[r0 : r0 + m] = cum[:, N_SYMBOLS].reshape(m, T)
    return start, freq, total


def exp_table(step: float, one: int) -> np.ndarray:
    """``round(one * exp(-i * step))`` for i < 512: computed once when a model is made, then stored
    with it, so no machine's exp ever enters the numerics."""
    return np.array([round(one * math.exp(-i * step)) for i in range(EXP_ENTRIES)], dtype=np.int32)
