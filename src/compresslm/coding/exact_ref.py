"""The integer semantics of the exact M1, written plainly in numpy int64 (docs/numerics.md).

This module is the *definition*: slow, one window at a time, no cache, every operation on Python-
sized integers in int64 where no bound can be exceeded (the bounds are checked when a model loads,
:func:`compresslm.coding.exact.check_bounds`). The fast torch path in :mod:`compresslm.coding.exact`
must give the same tables bit for bit; property tests compare the two on random models and inputs.

Notation: ``rshift(v, s) = floor((v + 2**(s-1)) / 2**s)`` (round half up), ``rdiv(a, b) =
floor((2a + b) / 2b)`` for ``b > 0``, ``requant(acc, m, s) = rshift(acc * m, s)``, ``sat(v, M) =
clamp(v, -M, M)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

ACT_MAX = 127  # every GEMM input is an integer in [-127, 127]
RESIDUAL_MAX = (1 << 20) - 1  # the residual stream saturates at +-(2**20 - 1)
LN_GAIN_BITS = 16  # LayerNorm gains are fixed-point numbers with 16 fraction bits
EXP_ENTRIES = 512  # both exp tables: entry i is exp(-i * step), the index saturates at 511
EXP_ATTENTION_ONE = 1 << 15  # exp_attention[0]: attention weights are at most 2**15
EXP_LOGITS_ONE = 1 << 20  # exp_logits[0]
N_SYMBOLS = 256
BOS = 0


def rshift(v: np.ndarray, s: np.ndarray | int) -> np.ndarray:
    s = np.asarray(s, dtype=np.int64)
    return (np.asarray(v, dtype=np.int64) + (np.int64(1) << (s - 1))) >> s


def rdiv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (2 * np.asarray(a, dtype=np.int64) + b) // (2 * np.asarray(b, dtype=np.int64))


def requant(acc: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    return rshift(np.asarray(acc, dtype=np.int64) * np.asarray(m, dtype=np.int64), s)


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: int) -> np.ndarray:
    """Integer LayerNorm of one vector: integer mean, variance and square root; int8-range output."""
    x = np.asarray(x, dtype=np.int64)
    mu = rdiv(x.sum(), np.int64(len(x)))
    xc = x - mu
    var = int((xc * xc).sum()) // len(x)
    sigma = math.isqrt(var + int(eps))
    y = rdiv(xc * np.asarray(g, dtype=np.int64), np.int64(sigma << LN_GAIN_BITS)) + b
    return np.clip(y, -ACT_MAX, ACT_MAX)


def linear(a: np.ndarray, w: Mapping[str, np.ndarray], prefix: str) -> np.ndarray:
    """``requant(a @ W.T + bias)`` per output channel (int64, not saturated)."""
    acc = np.asarray(w[prefix + ".w"], dtype=np.int64) @ np.asarray(a, dtype=np.int64)
    return requant(acc + w[prefix + ".bias"], w[prefix + ".m"], w[prefix + ".s"])


def frequencies(logits: np.ndarray, exp_logits: np.ndarray, precision: int) -> np.ndarray:
    """The coder's cumulative table (257 ints) from integer logits: an integer softmax, then
    ``f = 1 + floor(e * (2**P - 256) / sum(e))``, so every byte has 1 and the total is <= 2**P."""
    logits = np.asarray(logits, dtype=np.int64)
    idx = np.minimum(logits.max() - logits, EXP_ENTRIES - 1)
    e = np.asarray(exp_logits, dtype=np.int64)[idx]
    f = 1 + (e * ((1 << precision) - N_SYMBOLS)) // e.sum()
    return np.concatenate([[0], np.cumsum(f)]).astype(np.int64)


def embed(w: Mapping[str, np.ndarray], token: int, position: int) -> np.ndarray:
    tok = requant(w["tok_emb"][token], w["tok_emb.m"][token], w["tok_emb.s"][token])
    pos = requant(w["pos_emb"][position], w["pos_emb.m"][position], w["pos_emb.s"][position])
    return np.clip(tok + pos, -RESIDUAL_MAX, RESIDUAL_MAX)


def window_tables(
    w: Mapping[str, np.ndarray], n_layers: int, n_heads: int, window: bytes, precision: int
) -> np.ndarray:
    """Tables of every position of ``[BOS] + window``: row t is the table of byte t's successor
    (row 0 the table of the window's first byte). Attention at position t reads positions 0..t."""
    tokens = [BOS, *window]
    T = len(tokens)
    x = np.stack([embed(w, t, p) for p, t in enumerate(tokens)])  # (T, C)
    C = x.shape[1]
    hs = C // n_heads
    ln = lambda name, v: layer_norm(v, w[name + ".g"], w[name + ".b"], int(w[name + ".eps"][0]))  # noqa: E731
    for i in range(n_layers):
        p = f"blocks.{i}."
        a = np.stack([ln(p + "ln_1", x[t]) for t in range(T)])
        qkv = np.clip(np.stack([linear(a[t], w, p + "attn") for t in range(T)]), -ACT_MAX, ACT_MAX)
        q, k, v = qkv[:, :C], qkv[:, C : 2 * C], qkv[:, 2 * C :]
        am, ash = w[p + "attn.index"]
        y = np.zeros((T, C), dtype=np.int64)
        for t in range(T):
            for h in range(n_heads):
                sl = slice(h * hs, (h + 1) * hs)
                scores = k[: t + 1, sl] @ q[t, sl]  # (t + 1,)
                idx = np.minimum(rshift((scores.max() - scores) * am, ash), EXP_ENTRIES - 1)
                e = np.asarray(w["exp_attention"], dtype=np.int64)[idx]
                y[t, sl] = rdiv(e @ v[: t + 1, sl], e.sum())
        x = np.clip(
            x + np.stack([linear(y[t], w, p + "proj") for t in range(T)]), -RESIDUAL_MAX, RESIDUAL_MAX
        )
        a = np.stack([ln(p + "ln_2", x[t]) for t in range(T)])
        h = np.clip(np.stack([linear(a[t], w, p + "fc") for t in range(T)]), -ACT_MAX, ACT_MAX)
        g = np.asarray(w[p + "act.lut"], dtype=np.int64)[h + ACT_MAX]
        x = np.clip(x + np.stack([linear(g[t], w, p + "out") for t in range(T)]), -RESIDUAL_MAX, RESIDUAL_MAX)
    a = np.stack([ln("ln_f", x[t]) for t in range(T)])
    return np.stack([frequencies(linear(a[t], w, "head"), w["exp_logits"], precision) for t in range(T)])
