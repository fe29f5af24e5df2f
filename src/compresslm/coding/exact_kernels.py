"""Fused numba kernels for the exact M1's step: everything between two GEMMs in one call.

A step of a small exact M1 on the CPU is bound by the number of operations it issues, not by
arithmetic (the tiny M1 does ~150k multiply-adds per byte; the torch path spent them in ~270
small torch calls per step). Here the linear layers stay batched GEMMs over all rows (int8 GEMMs
with int32 accumulators where :func:`compresslm.coding.exact.int8_gemm_exact` finds them exact,
else float32; BLAS is far faster than any loop for those, and both are exact: docs/numerics.md),
and each stretch between two
GEMMs is one compiled call over all rows: requantization, residual and LayerNorm; the activation
table; q/k/v, the KV-cache write and the attention over the cache; the integer softmax into the
coder's cumulative tables (or, for the stream decoder, straight into its range decoder's step:
:func:`decode`). A step makes about ``4 L + 2`` kernel calls and ``4 L + 1`` GEMMs.

**Why these kernels compute the definition's integers** (docs/numerics.md, ``exact_ref``):

- Integer arithmetic where it is cheap and vectorizes: attention scores ``q . k`` (int32, below
  ``hs 127**2 < 2**24``), score differences, exp-table indices (int64, ``d m < 2**53`` by
  check_bounds), the KV cache (int8: every key and value is in [-127, 127]), the tables' cumulative
  sums (int64). Integer sums are associative, so the compiler may vectorize them in any order.
- float64 where the torch path uses it and the module docstring of :mod:`.exact` proves it exact:
  requantization ``floor(acc (m 2**-s) + c')``, LayerNorm, ``rdiv`` as ``floor((a + b/2) / b)``, the
  integer softmax's quotient: integers below 2**53, sums and products exact in any order, floors of
  correctly rounded quotients equal to the integer floors. The same IEEE operations as the torch
  path, so the same values bit for bit. Weights x values: int32 products ``|e v| <= 2**15 127``
  summed in int32 over blocks of PV_BLOCK positions, the blocks' sums added in float64.
- No ``fastmath``: no reassociation or contraction is needed for speed here (integer reductions
  vectorize without it; the float64 loops run over independent output elements).

Rows never interact, and a row's result depends only on its own cache row (lanes of a vector),
so the order of rows and which rows a call computes cannot change a row's result.

Arrays: residual streams ``x`` are float64 (n, C) integers; GEMM inputs int8 or float32 (n, K)
integers in [-127, 127]; GEMM outputs ``acc`` int32, float32 (one chunk) or float64 (sum of
chunks), (n, out);
per-channel ``scale = m 2**-s`` and ``c = (bias m + 2**(s-1)) 2**-s`` float64 (see ``_Linear``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from compresslm.coding.range_coder import decode_advance
from compresslm.coding.window_coder import IDLE, RESTART, START

ACT = 127.0
RESIDUAL = float((1 << 20) - 1)


@njit(cache=True, nogil=True)
def _norm_rows(x, total, g_scaled, b, eps, out):  # pragma: no cover - compiled
    """Integer LayerNorm of every float64-int row of ``x`` into ``out`` (ints in [-127, 127]), given
    each row's sum ``total[i]`` (int64): ``mu = floor((sum + C/2) / C)``, ``sigma = isqrt(floor(sum
    d**2 / C) + eps)``, ``y = floor((d g 2**-15 + sigma) / (2 sigma)) + b`` (the quotients of rdiv,
    see ``_Norm``). The sums run in int64: every ``x[j]`` is an integer (``|x| < 2**20``), so
    ``sum x`` and ``sum d**2`` (below 2**53 by check_bounds) are the same integers as float64 sums
    in any order, and converted back to float64 exactly; unlike a float64 sum, which numba must
    run in order, an integer sum vectorizes.

    In phases over all rows (every row's mean and squares, then every sigma, then every output),
    not row after row: the same operations on the same values, but a row's chain of dependent
    steps (sums, mean, square root, quotients) no longer waits for the previous row's (a 256-row,
    64-wide call measured 26 -> 13 us)."""
    n, C = x.shape
    mu = np.empty(n, dtype=np.float64)
    sigma = np.empty(n, dtype=np.float64)
    for i in range(n):
        xi = x[i]
        m = np.floor((float(total[i]) + C / 2) / C)
        mi = np.int64(m)
        ss = 0
        for j in range(C):
            d = np.int64(xi[j]) - mi
            ss += d * d
        mu[i], sigma[i] = m, float(ss)
    for i in range(n):
        sigma[i] = np.floor(math.sqrt(np.floor(sigma[i] / C) + eps))  # isqrt: see exact._isqrt_
    for i in range(n):
        xi, o = x[i], out[i]
        m, sg = mu[i], sigma[i]
        den = 2.0 * sg
        for j in range(C):
            y = np.floor(((xi[j] - m) * g_scaled[j] + sg) / den) + b[j]
            o[j] = min(max(y, -ACT), ACT)


@njit(cache=True, nogil=True)
def embed_norm(ids, positions, tok, pos, g_scaled, b, eps, x, a):  # pragma: no cover - compiled
    """The embedding of every row (``x[i] = sat(tok[ids[i]] + pos[positions[i]], R)``, the tables
    already requantized) and the first LayerNorm of it into ``a``."""
    n, C = x.shape
    total = np.empty(n, dtype=np.int64)
    for i in range(n):
        t, p, xi = ids[i], positions[i], x[i]
        row_sum = 0
        for j in range(C):
            v = min(max(tok[t, j] + pos[p, j], -RESIDUAL), RESIDUAL)
            xi[j] = v
            row_sum += np.int64(v)
        total[i] = row_sum
    _norm_rows(x, total, g_scaled, b, eps, a)


@njit(cache=True, nogil=True)
def residual_norm(x, acc, scale, c, g_scaled, b, eps, a):  # pragma: no cover - compiled
    """``x = sat(x + requant(acc), R)`` in place, then LayerNorm of it into ``a`` (each row's sum
    taken as it is written)."""
    n, C = x.shape
    total = np.empty(n, dtype=np.int64)
    for i in range(n):
        xi, ai = x[i], acc[i]
        row_sum = 0
        for j in range(C):
            v = min(max(xi[j] + np.floor(ai[j] * scale[j] + c[j]), -RESIDUAL), RESIDUAL)
            xi[j] = v
            row_sum += np.int64(v)
        total[i] = row_sum
    _norm_rows(x, total, g_scaled, b, eps, a)


@njit(cache=True, nogil=True)
def activation(acc, scale, c, lut, out):  # pragma: no cover - compiled
    """The MLP's activation: ``out = lut[sat(requant(acc), 127) + 127]``, ``lut`` in ``out``'s dtype.

    Two passes per row: the requantized, saturated indices into a row of uint8 (``h + 127`` in
    [0, 254]), then the table lookups. The first pass is arithmetic the compiler vectorizes, which
    a lookup in the same loop prevented (half the time of one loop); the table in the output's dtype
    makes the second a plain byte gather, with no conversion per element."""
    n, M = acc.shape
    index = np.empty(M, dtype=np.uint8)
    for i in range(n):
        a, o = acc[i], out[i]
        for j in range(M):
            index[j] = np.int64(min(max(np.floor(a[j] * scale[j] + c[j]), -ACT), ACT)) + 127
        for j in range(M):
            o[j] = lut[index[j]]


#: Weights x values accumulate int32 products ``e v`` (|e v| <= 2**15 127) in int32 over blocks of
#: at most this many positions (``516 * 2**15 * 127 < 2**31``), then in float64.
PV_BLOCK = 512


def new_cache(
    n_layers: int, rows: int, n_heads: int, length: int, head_dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """A zeroed KV cache in the layout :func:`attend` streams through: keys and values
    (layers, L, hs, nh rows), int8 (every key and value is an integer in [-127, 127]); cache row r
    of head h is lane ``h rows + r`` of the last axis.

    Heads and rows last: the attention of each (head, row) pair is independent, so every inner
    loop of the attention runs over all heads of all the step's rows at once (long, vectorizable
    loops, however few rows or small the head), and a step's new keys land side by side.
    Positions outermost: a step reads its keys, then its values, for positions ``0..span`` as one
    contiguous run, which the hardware prefetchers stream from L3 or memory (a lane's cache is
    megabytes, it does not stay in L2 between steps). With the dimension outermost (hs, L, rows),
    every dimension was a separate short run: weights x values measured 4x slower from L3 than
    from L2 that way, and as fast as from L2 this way."""
    shape = (n_layers, length, head_dim, n_heads * rows)
    return np.zeros(shape, dtype=np.int8), np.zeros(shape, dtype=np.int8)


def attention_scratch(rows: int, n_heads: int, length: int, head_dim: int) -> tuple[np.ndarray, ...]:
    """:func:`attend`'s scratch for a cache of ``rows`` rows: q (hs, nh rows) int32, scores and
    weights (L, nh rows) int32 (kept by the caller across steps: no allocation per call)."""
    return (
        np.empty((head_dim, n_heads * rows), dtype=np.int32),
        np.empty((length, n_heads * rows), dtype=np.int32),
        np.empty((length, n_heads * rows), dtype=np.int32),
    )


@njit(cache=True, nogil=True, inline="always")
def _add_products4(acc, a0, b0, a1, b1, a2, b2, a3, b3):  # pragma: no cover - compiled
    """``acc += a0 b0 + a1 b1 + a2 b2 + a3 b3`` elementwise in int32 (``a`` int32, ``b`` int8):
    four products per pass over the accumulator, a quarter of its loads and stores (the loop's
    cost; int32 sums are the same integers in any order). Inlined, so it vectorizes in place."""
    for r in range(acc.shape[0]):
        acc[r] += (
            a0[r] * np.int32(b0[r])
            + a1[r] * np.int32(b1[r])
            + a2[r] * np.int32(b2[r])
            + a3[r] * np.int32(b3[r])
        )


#: Positions per pass of :func:`attend`'s scores: four query dimensions are loaded once for this
#: many positions (fewer passes over q, which is 4 hs rows bytes; 8 measured best of 4, 8, 16).
_SCORE_BLOCK = 8


@njit(cache=True, nogil=True)
def attend(
    acc_t, scale, c, rows, positions, keys, values, weights, limit, index_m, index_s, y_t, q, scores, e
):  # pragma: no cover - compiled
    """Attention of the step's rows over their cache rows, every loop vectorized across all heads
    of the cache rows at once.

    Row i's q, k, v come from column i of the attention GEMM's transposed accumulator ``acc_t``
    (3C, n), requantized and saturated to int8; its key and value are stored at position
    ``positions[i]`` of cache row ``rows[i]`` (one layer of :func:`new_cache`, (L, hs, nh R): head
    h of cache row r in lane ``h R + r``), every row's before any row attends; the step's ``rows``
    are distinct cache rows (one query per cache row). Transposed in and out (``acc_t`` and
    ``y_t`` (C, n)) because the cache is rows-last: a (head, dimension) of every row is one
    contiguous run of ``acc_t``, of the cache and of ``y_t`` (written row by row, a row's 3C
    values would land far apart, in few L1 sets: a miss per store; the GEMMs read and write
    either orientation at the same speed). When the step's rows are consecutive cache rows at one
    position (stream mode's usual step) those runs are plain vectorized copies.

    Then, for the lanes ``lo .. (nh - 1) R + hi`` (every head of the cache rows ``lo..hi`` the step
    spans) at once: scores ``q . k`` in int32 (``|q . k| <= hs 127**2 < 2**24``, check_bounds) for
    positions up to the step's longest span, each lane's top score over its row's positions
    ``0..positions[i]``, the weight of a difference d the definition's
    ``weights[min(rshift(d index_m, index_s), limit)]`` in int64 (``d m < 2**53``: check_bounds;
    ``weights`` is the exp table followed by one 0, the weight of positions past a row's own:
    index ``limit + 1``); weights x values as int32 products ``|e v| <= 2**15 127`` summed in
    int32 over blocks of PV_BLOCK positions, then in float64; ``y_t[h hs + d, i] = rdiv(sum e v,
    sum e)`` (heads stacked, as the projection's GEMM reads the transpose). Positions are the
    outer loops of both products, so the cache is read in the order it lies in memory. Lanes the
    step does not compute (rows outside it, between ``hi`` of one head and ``lo`` of the next) are
    computed too and ignored (their weights are 0). Scratch (from :func:`attention_scratch`):
    ``q``, ``scores``, ``e``."""
    width, n = acc_t.shape
    L, hs, lanes = keys.shape
    C = width // 3
    nh = C // hs
    R = lanes // nh
    at = np.full(R, -1, dtype=np.int64)  # each cache row's position in this step, -1: not computed
    lo, hi, span = R, 0, 0
    first, p0 = rows[0], positions[0]
    aligned = True  # rows first, first + 1, ... in order, all at position p0
    for i in range(n):
        r, p = rows[i], positions[i]
        at[r] = p
        lo, hi, span = min(lo, r), max(hi, r + 1), max(span, p + 1)
        aligned = aligned and r == first + i and p == p0
    column = np.empty(n, dtype=np.int32)
    for j in range(width):
        part, hd = j // C, j % C
        d, base = hd % hs, (hd // hs) * R  # dimension, and the head's first lane
        a, sj, cj = acc_t[j], scale[j], c[j]
        if aligned:  # vectorized: straight into the cache (or q)
            if part == 0:
                qd = q[d, base + first : base + first + n]
                for i in range(n):
                    qd[i] = np.int32(min(max(np.floor(a[i] * sj + cj), -ACT), ACT))
            else:
                cd = (keys if part == 1 else values)[p0, d, base + first : base + first + n]
                for i in range(n):
                    cd[i] = np.int8(min(max(np.floor(a[i] * sj + cj), -ACT), ACT))
            continue
        for i in range(n):
            column[i] = np.int32(min(max(np.floor(a[i] * sj + cj), -ACT), ACT))
        for i in range(n):
            if part == 0:
                q[d, base + rows[i]] = column[i]
            elif part == 1:
                keys[positions[i], d, base + rows[i]] = column[i]
            else:
                values[positions[i], d, base + rows[i]] = column[i]
    # Inner loops run over slices [lo, hi) from 0: numba then knows no index is negative, and the
    # loops vectorize (``range(lo, hi)`` with a run-time ``lo`` kept them scalar, 10x slower).
    hi = (nh - 1) * R + hi  # lanes lo..hi: every head of the rows the step spans
    m = hi - lo
    live = np.empty(m, dtype=np.int64)  # each lane's position (its row's), -1: not computed
    for v in range(m):
        live[v] = at[(lo + v) % R]
    top = np.empty(m, dtype=np.int32)
    total = np.empty(m, dtype=np.int64)
    index = np.empty(m, dtype=np.int32)
    block = np.empty((hs, m), dtype=np.int32)  # weights x values of a block of positions, int32
    out = np.empty((hs, m), dtype=np.float64)  # their sum over the blocks
    sums = np.empty(m, dtype=np.float64)  # sum e and half of it, float64 (exact: below 2**53)
    half_total = np.empty(m, dtype=np.float64)
    inverse = np.empty(m, dtype=np.float64)
    half = np.int64(1) << (index_s - 1)
    d4 = hs - hs % 4
    # Scores: a block of positions at a time, four dimensions per pass over a score row.
    for t0 in range(0, span, _SCORE_BLOCK):
        t1 = min(t0 + _SCORE_BLOCK, span)
        for t in range(t0, t1):
            st = scores[t, lo:hi]
            for v in range(m):
                st[v] = 0
        for d in range(0, d4, 4):
            q0, q1, q2, q3 = q[d, lo:hi], q[d + 1, lo:hi], q[d + 2, lo:hi], q[d + 3, lo:hi]
            for t in range(t0, t1):
                kt = keys[t]
                _add_products4(
                    scores[t, lo:hi], q0, kt[d, lo:hi], q1, kt[d + 1, lo:hi], q2, kt[d + 2, lo:hi],
                    q3, kt[d + 3, lo:hi],
                )  # fmt: skip
        for d in range(d4, hs):
            qd = q[d, lo:hi]
            for t in range(t0, t1):
                st, kd = scores[t, lo:hi], keys[t, d, lo:hi]
                for v in range(m):
                    st[v] += qd[v] * np.int32(kd[v])
    s0 = scores[0, lo:hi]
    for v in range(m):
        top[v] = s0[v]
        total[v] = 0
    for t in range(1, span):
        st = scores[t, lo:hi]
        for v in range(m):
            if t <= live[v] and st[v] > top[v]:
                top[v] = st[v]
    # The weights: the table's indices first (integer arithmetic, vectorized), then the lookups
    # (a gather), then the sums: split, the index loop vectorizes; fused, none did.
    for t in range(span):
        st, et = scores[t, lo:hi], e[t, lo:hi]
        for v in range(m):
            diff = max(np.int64(top[v] - st[v]), 0)  # past a row's position: any valid index
            k = min((diff * index_m + half) >> index_s, limit)
            index[v] = np.int32(k if t <= live[v] else limit + 1)
        for v in range(m):
            et[v] = weights[index[v]]
        for v in range(m):
            total[v] += et[v]
    for v in range(m):
        sums[v] = float(total[v])
        half_total[v] = sums[v] / 2
        # (0 for lanes the step does not compute: their sums are 0, their outputs unused)
        inverse[v] = 1.0 / sums[v] if total[v] > 0 else 0.0
    for d in range(hs):
        od = out[d]
        for v in range(m):
            od[v] = 0.0
    # Weights x values: positions outermost (the cache's order), four per pass over the
    # (hs, lanes) accumulator block.
    for t0 in range(0, span, PV_BLOCK):
        t1 = min(t0 + PV_BLOCK, span)
        t4 = t1 - (t1 - t0) % 4
        for d in range(hs):
            bd = block[d]
            for v in range(m):
                bd[v] = 0
        for t in range(t0, t4, 4):
            e0, e1, e2, e3 = e[t, lo:hi], e[t + 1, lo:hi], e[t + 2, lo:hi], e[t + 3, lo:hi]
            w0, w1, w2, w3 = values[t], values[t + 1], values[t + 2], values[t + 3]
            for d in range(hs):
                _add_products4(
                    block[d], e0, w0[d, lo:hi], e1, w1[d, lo:hi], e2, w2[d, lo:hi], e3, w3[d, lo:hi]
                )
        for t in range(t4, t1):
            et, wt = e[t, lo:hi], values[t]
            for d in range(hs):
                bd, vd = block[d], wt[d, lo:hi]
                for v in range(m):
                    bd[v] += et[v] * np.int32(vd[v])
        for d in range(hs):
            od, bd = out[d], block[d]
            for v in range(m):
                od[v] += bd[v]
    # y = rdiv(a, b) = floor((a + b/2) / b) without a division per output: the quotient through
    # the lane's 1/b is within one of the floor (relative error below 2**-51 on a quotient below
    # 2**8), and the remainder ``a + b/2 - q b`` (exact: half-integers below 2**53) puts it
    # right: the same integer as the definition's.
    for d in range(hs):
        od = out[d]
        for v in range(m):
            num = od[v] + half_total[v]
            quot = np.floor(num * inverse[v])
            rem = num - quot * sums[v]
            od[v] = quot - 1.0 if rem < 0 else (quot + 1.0 if rem >= sums[v] else quot)
    for h in range(nh):
        shift = h * R - lo  # lane of row r, head h, in the lo.. slices: r + shift
        for d in range(hs):
            od, yd = out[d], y_t[h * hs + d]
            if aligned:  # rows first.. in order: vectorized
                src = od[first + shift : first + shift + n]
                for i in range(n):
                    yd[i] = src[i]
            else:
                for i in range(n):
                    yd[i] = od[rows[i] + shift]


@njit(cache=True, nogil=True)
def _softmax_weights(acc_row, scale, c, exp_logits, logit, e):  # pragma: no cover - compiled
    """One row's integer softmax weights into ``e`` (int64) and their sum, the part :func:`tables`,
    :func:`intervals` and :func:`decode` share: the logits ``requant(acc)`` into ``logit``, their
    maximum, and ``e_s = exp_logits[min(max l - l_s, 511)]`` (``exp_logits`` int64). The logits
    (integers below 2**53), their maximum and differences and the weights' sum (below 2**29) are
    held in int64: the same integers as float64, exactly, and integer reductions vectorize (a
    float64 one runs in order). The maximum is taken in the requantizing loop (one pass). The table
    index is unsigned (``max l - l_s >= 0``, so the same value): a signed one made numba add the
    wrap-around of negative indices to every lookup (the lookups then took twice as long)."""
    V = acc_row.shape[0]
    last = np.uint64(exp_logits.shape[0] - 1)
    top = np.int64(-(1 << 62))  # below every logit (|l| < 2**53: check_bounds)
    for s in range(V):
        v = np.int64(np.floor(acc_row[s] * scale[s] + c[s]))
        logit[s] = v
        top = max(top, v)
    weight_sum = 0
    for s in range(V):
        w = exp_logits[min(np.uint64(top - logit[s]), last)]
        e[s] = w
        weight_sum += w
    return weight_sum


@njit(cache=True, nogil=True)
def _frequencies(e, weight_sum, span, f):  # pragma: no cover - compiled
    """``f_s = floor(e_s span / sum e) + 1`` (int64) for one row's weights ``e``, and their total.

    The quotient in float64, as the torch path computes it: ``e_s span < 2**44`` and ``sum e``
    are integers held exactly, so the floor of the correctly rounded quotient is the integer floor
    (see :mod:`.exact`). A loop of its own, which vectorizes (the cumulative sums that follow in
    :func:`tables` cannot); float64 ``e_s`` converted from int64 is exact (``e_s <= 2**20``)."""
    weight = float(weight_sum)
    total = 0
    for s in range(e.shape[0]):
        fs = np.int64(np.floor(float(e[s]) * span / weight)) + 1
        f[s] = fs
        total += fs
    return total


@njit(cache=True, nogil=True, inline="always")
def _softmax_setup(V, precision):  # pragma: no cover - compiled
    """What :func:`tables`, :func:`intervals` and :func:`decode` share before their row loop: the
    frequencies' span ``2**P - V`` (float64) and int64 buffers for one row's logits, weights and
    frequencies."""
    buffers = (np.empty(V, dtype=np.int64), np.empty(V, dtype=np.int64), np.empty(V, dtype=np.int64))
    return float((1 << precision) - V), buffers[0], buffers[1], buffers[2]


@njit(cache=True, nogil=True)
def tables(acc, scale, c, exp_logits, precision, out, out_rows):  # pragma: no cover - compiled
    """The head's logits ``requant(acc)`` (not saturated), the integer softmax and the coder's
    cumulative table of row i into ``out[out_rows[i]]`` (int64, 257 entries):
    ``f_s = 1 + floor(e_s (2**P - 256) / sum e)`` with ``e_s = exp_logits[min(max l - l_s, 511)]``
    (:func:`_softmax_weights`, :func:`_frequencies`). A difference beyond 511 is clamped to 511 as
    in the definition."""
    n, V = acc.shape
    span, logit, e, f = _softmax_setup(V, precision)
    for i in range(n):
        _frequencies(e, _softmax_weights(acc[i], scale, c, exp_logits, logit, e), span, f)
        row = out[out_rows[i]]
        row[0] = 0
        cum = 0
        for s in range(V):
            cum += f[s]
            row[s + 1] = cum


@njit(cache=True, nogil=True)
def intervals(
    acc, scale, c, exp_logits, precision, symbols, start, freq, total
):  # pragma: no cover - compiled
    """The encoder's :func:`tables`: the same integer softmax and frequencies of row i, but only
    the interval of its byte ``symbols[i]`` is kept (``start[i]`` = cum[b], ``freq[i]`` = cum[b + 1]
    - cum[b], ``total[i]`` = cum[256], int64), not the whole table: an encoder that knows its bytes
    need not write 257 integers per position and gather three."""
    n, V = acc.shape
    span, logit, e, f = _softmax_setup(V, precision)
    for i in range(n):
        cum = _frequencies(e, _softmax_weights(acc[i], scale, c, exp_logits, logit, e), span, f)
        b = symbols[i]
        below = 0
        for s in range(b):
            below += f[s]
        start[i], freq[i], total[i] = below, f[b], cum


#: Symbols per block in :func:`decode`'s search: whole blocks first, then one block's symbols.
_SEARCH_BLOCK = 8


@njit(cache=True, nogil=True)
def decode(
    acc, scale, c, exp_logits, precision, value, rng, pos, end, data, rows, sym
):  # pragma: no cover - compiled
    """:func:`tables` and the range decoder's step (``range_coder._decode_step``) in one pass per
    row: row i's frequencies (the same integers as :func:`tables`) stay in a buffer of the kernel,
    and decoder row ``rows[i]`` (state ``value``, ``rng``, ``pos``, ``end``, bytes ``data``: a
    ``VectorDecoder``'s arrays) decodes its next symbol into ``sym[i]`` with them. The cumulative
    table is never written: the decoder needs its total (the frequencies' sum) and the last ``s``
    with ``cum[s] <= v`` (``v = min(value // r, total - 1) < total``), found by adding whole
    blocks of ``_SEARCH_BLOCK`` frequencies while the sum stays ``<= v``, then single ones (the
    blocks' sums taken only up to the symbol's block). As every ``f_s >= 1``, ``cum`` is strictly
    increasing and that ``s`` is the one the binary search of ``_decode_step`` finds; the row then
    advances by ``range_coder.decode_advance``, the very code ``_decode_step`` runs. So the symbols
    and decoder states are those of ``tables`` then ``VectorDecoder.decode``, without writing (and
    reading back) 257 int64 per row."""
    n, V = acc.shape
    span, logit, e, f = _softmax_setup(V, precision)
    for i in range(n):
        total = _frequencies(e, _softmax_weights(acc[i], scale, c, exp_logits, logit, e), span, f)
        row = rows[i]
        r = rng[row] // total
        v = min(value[row] // r, total - 1)
        below, s = 0, 0  # below = cum[s] <= v
        while s + _SEARCH_BLOCK <= V:
            block = 0
            for t in range(s, s + _SEARCH_BLOCK):
                block += f[t]
            if below + block > v:
                break
            below += block
            s += _SEARCH_BLOCK
        while below + f[s] <= v:  # ends at s < V: cum[V] = total > v
            below += f[s]
            s += 1
        sym[i] = s
        decode_advance(value, rng, pos, end, data, row, r, below, f[s])


#: Queries per block in :func:`attend_windows`: they share every key and value load.
_QB = 4


@njit(cache=True, nogil=True)
def attend_windows(acc, scale, c, T, n_heads, weights, limit, index_m, index_s, y):  # pragma: no cover
    """:func:`attend` for the chunk encoder: the rows of ``acc`` (n, 3C) are ``n / T`` whole windows,
    row ``r T + t`` position t of window r, and every position attends over the window's positions
    up to it (causal); no cache is read or written. The same integers as :func:`attend` (same
    scores, differences, weights, sums and quotient), organized for whole windows: per window and
    head, q, k and v are requantized once, and queries go in blocks of 4 that share each key and
    value load (scores and weights x values of 4 queries per pass over the keys).

    Scores ``q . k`` in int32 (``< 2**24``); a query's weights over positions after it are 0, so
    the block's weights x values run over the block's last position for all 4 queries; int32
    sums of ``e v`` (``|e v| <= 2**15 127``) over at most PV_BLOCK positions, then float64."""
    n, width = acc.shape
    C = width // 3
    hs = C // n_heads
    T4 = -(-T // _QB) * _QB  # queries padded to whole blocks (padding queries are 0, never written)
    row = np.empty(width, dtype=np.int32)
    q = np.zeros((n_heads, T4, hs), dtype=np.int32)
    kt = np.zeros((n_heads, hs, T4), dtype=np.int32)
    v = np.zeros((n_heads, T4, hs), dtype=np.int32)
    s = np.empty((_QB, T4), dtype=np.int32)
    e = np.empty((_QB, T4), dtype=np.int32)
    tot = np.empty(_QB, dtype=np.int64)
    o32 = np.empty((_QB, hs), dtype=np.int32)
    o = np.empty((_QB, hs), dtype=np.float64)
    half = np.int64(1) << (index_s - 1)
    for r in range(n // T):
        for t in range(T):
            i = r * T + t
            for j in range(width):
                row[j] = np.int32(min(max(np.floor(acc[i, j] * scale[j] + c[j]), -ACT), ACT))
            for h in range(n_heads):
                for d in range(hs):
                    q[h, t, d] = row[h * hs + d]
                    kt[h, d, t] = row[C + h * hs + d]
                    v[h, t, d] = row[2 * C + h * hs + d]
        for h in range(n_heads):
            qh, kh, vh = q[h], kt[h], v[h]
            s0, s1, s2, s3 = s[0], s[1], s[2], s[3]
            e0, e1, e2, e3 = e[0], e[1], e[2], e[3]
            o0, o1, o2, o3 = o32[0], o32[1], o32[2], o32[3]
            for t0 in range(0, T4, _QB):
                span = t0 + _QB
                s[:, :span] = 0
                for d in range(hs):
                    a0, a1, a2, a3 = qh[t0, d], qh[t0 + 1, d], qh[t0 + 2, d], qh[t0 + 3, d]
                    kd = kh[d]
                    for j in range(span):
                        k = kd[j]
                        s0[j] += a0 * k
                        s1[j] += a1 * k
                        s2[j] += a2 * k
                        s3[j] += a3 * k
                for b in range(_QB):
                    t = t0 + b
                    sb, eb = s[b], e[b]
                    eb[:span] = 0
                    total = 0
                    if t < T:
                        top = sb[0]
                        for j in range(t + 1):
                            top = max(top, sb[j])
                        for j in range(t + 1):
                            w = weights[min((np.int64(top - sb[j]) * index_m + half) >> index_s, limit)]
                            eb[j] = w
                            total += w
                    tot[b] = total
                o[:] = 0.0
                for j0 in range(0, span, PV_BLOCK):
                    o32[:] = 0
                    for j in range(j0, min(j0 + PV_BLOCK, span)):
                        w0, w1, w2, w3 = e0[j], e1[j], e2[j], e3[j]
                        vj = vh[j]
                        for d in range(hs):
                            x = vj[d]
                            o0[d] += w0 * x
                            o1[d] += w1 * x
                            o2[d] += w2 * x
                            o3[d] += w3 * x
                    for b in range(_QB):
                        for d in range(hs):
                            o[b, d] += o32[b, d]
                for b in range(_QB):
                    t = t0 + b
                    if t < T:
                        total = float(tot[b])
                        for d in range(hs):
                            y[r * T + t, h * hs + d] = np.floor((o[b, d] + total / 2) / total)


# The session's bookkeeping for a step, compiled: a dozen numpy operations on arrays of a few
# hundred rows cost more than these loops (about 1 us each, holding the GIL the other lanes wait
# for). ``ExactSession.step_decode`` uses them; the general path (m1.place_rows and numpy) stays
# for what they decline.


@njit(cache=True, nogil=True)
def place_rows(tokens, phys, n_phys, min_rows, opened):  # pragma: no cover - compiled
    """``m1.place_rows`` for a step without START tokens, when the cache keeps its size: rows with
    a token other than IDLE keep their physical row (``phys``, logical -> physical, -1 for none),
    the others lose theirs, and a row without one (it must open: RESTART + b) takes the first free
    physical rows in row order, as ``place_rows`` gives them. Writes the physical rows of the rows
    that open (RESTART + b) to ``opened`` and returns their count; returns -1, having changed
    nothing, where the general path must run: a START or out-of-range token, a cache ``place_rows``
    would resize (more active rows than physical ones, or at most half of them in use above
    ``min_rows``), or a row that lost its context (which the general path reports)."""
    n = tokens.shape[0]
    used = np.zeros(n_phys, dtype=np.bool_)
    n_active = 0
    for r in range(n):
        t = tokens[r]
        if t == IDLE:
            continue
        if t < 0 or START <= t < RESTART or t >= RESTART + 256:
            return -1
        n_active += 1
        if phys[r] >= 0:
            used[phys[r]] = True
        elif t < RESTART:
            return -1
    if n_active > n_phys or (n_phys > min_rows and n_active <= n_phys // 2):
        return -1
    free, m = 0, 0
    for r in range(n):
        t = tokens[r]
        if t == IDLE:
            phys[r] = -1
            continue
        if phys[r] < 0:
            while used[free]:
                free += 1
            used[free] = True
            phys[r] = free
        if t >= RESTART:
            opened[m] = phys[r]
            m += 1
    return m


@njit(cache=True, nogil=True)
def advance_rows(tokens, phys, pos, max_len, rows, ids, at, cache_rows):  # pragma: no cover - compiled
    """The rows whose token is not IDLE (placed, and opened rows at position 0) move one position
    on: in row order, their rows, token ids (RESTART + b is byte b), new positions (``pos``, per
    physical row, updated) and physical rows into ``rows``, ``ids``, ``at``, ``cache_rows``;
    returns their count, or -1, having changed nothing, if a row would pass ``max_len``
    positions."""
    n = tokens.shape[0]
    for r in range(n):
        if tokens[r] != IDLE and pos[phys[r]] + 1 >= max_len:
            return -1
    k = 0
    for r in range(n):
        t = tokens[r]
        if t == IDLE:
            continue
        p = phys[r]
        pos[p] += 1
        rows[k], ids[k], at[k], cache_rows[k] = r, t - RESTART if t >= RESTART else t, pos[p], p
        k += 1
    return k
