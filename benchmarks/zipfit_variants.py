"""Variants of the default ZIP-FIT score on the real pools, from cached similarity matrices.

    .venv/bin/python benchmarks/zipfit_variants.py [--pools doc:0,doc:1,debian:0,debian:1,site:0,stdlib:0,stdlib:1,man:0]
        [--variants default,refs=128/128,...] [--sample-seeds 6] [--cache bench-out/zipfit_variants]

Why: a real-pools run (``benchmarks/real_pools.py``) measures one draw of the default's target and
background samples, and on the documentation pool precision moves by 0.1 from one draw to the
next. Comparing ways of turning (piece, reference) similarities into a document's score needs many
draws, which a real run cannot afford. This script builds each pool exactly as ``real_pools.py``
does (same files, same seed), cuts every document into the default's pieces
(:func:`compresslm.select.zipfit.split_pieces`: 512 bytes, at most 4 per document), and computes
once, with the default's LZ4 ``1 - NCD``, the similarity of every piece to **every** target piece
and to 256 background windows (one seeded ``chunk``-byte window from each of 256 pool documents,
as the default cuts its background). Each variant then draws its own target and background
samples from those columns (``--sample-seeds`` draws), and the table gives precision@k, mean and
the worst draw. ``default`` reproduces today's rule: the mean over 64 target pieces minus the mean
over 64 background pieces (skipping the background window cut from the document itself), averaged
over the document's pieces.

What the variants are (each a candidate change, kept here with its measurement in
docs/benchmarks.md, "Changes to the default's score, tried on the real pools"):

* ``refs=T/B``: T target pieces and B background pieces (``T = all``: every target piece);
* ``bg-max``: minus the best background similarity instead of the mean;
* ``lambda=L``: target mean minus L times the background mean;
* ``column-z``: every reference's similarities standardised over the pool's pieces before
  averaging (the pool-wide statistics a streaming pass would have to estimate: an upper bound);
* ``doc-weights``: every target piece, weighted so each target document counts once;
* ``target-cap=N``: at most N evenly spaced pieces per target document (the rule for documents);
* ``target-dedup``: drop the quarter of target pieces most similar to the background (licence
  boilerplate and the like carry no domain signal);
* ``shrink``: each document's mean shrunk toward the pool's by its number of pieces (empirical
  Bayes: a one-piece document's score is noisier, and ranking noisy scores favours them);
* ``knn=K`` / ``knn-vote=K``: the mean of a piece's K best target similarities minus the mean of
  its K best background ones / the share of targets among its K nearest references;
* learned reference weights, a linear classifier on a piece's similarities to the 64 + 64
  references, fitted on held-out target pieces (positives) and held-out background windows
  (negatives: the windows of the cached 256 that are not references; their similarities are
  cached in ``{pool}-{seed}-background.npy``): ``meandiff`` (weights = class-mean difference),
  ``lda=S`` (Fisher's discriminant, covariance shrunk by S toward its diagonal), ``logreg=L``
  (L2-regularised logistic regression; ``+prior``: shrunk toward the default's weights instead of
  0); options ``+posN`` / ``+negN`` (examples), ``+loo`` (a positive's similarities to references
  from its own target document imputed), ``+self`` (the references themselves as examples, their
  own column imputed), ``+poolnegN`` (N pool pieces as further, unlabelled negatives), ``+center``
  (each row minus its mean).

The dictionary contrast that became part of the default (:mod:`compresslm.select.dictionary`) is
not a function of these matrices; its simulation is ``benchmarks/zipfit_dictionary.py``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compresslm.select.zipfit import (  # noqa: E402
    DEFAULT_CHUNK,
    DEFAULT_CONTRAST_SIZE,
    DEFAULT_MAX_CHUNKS,
    DEFAULT_MAX_TARGETS,
    PairScorer,
    background_pieces,
    split_pieces,
)
from real_pools import POOLS, build_pool  # noqa: E402

#: Background windows cached per pool; variants sample up to this many.
BACKGROUND = 256
DEFAULT_VARIANTS = (
    "default",
    "refs=128/128",
    "refs=all/64",
    "refs=all/256",
    "bg-max",
    "lambda=0.75",
    "lambda=1.25",
    "column-z",
    "doc-weights",
    "target-cap=4",
    "target-dedup",
    "shrink",
)


@dataclass
class Matrices:
    """One pool's cached similarities: pool pieces x (every target piece, then the background)."""

    labels: np.ndarray  # bool per document: the pool's target domain
    owner: np.ndarray  # document index of each pool piece
    target_owner: np.ndarray  # target document of each target piece
    background_doc: np.ndarray  # pool document each background window was cut from
    sims: np.ndarray  # float32 (pool pieces, target pieces + BACKGROUND)
    target_sims: np.ndarray  # float32 (target pieces, target pieces + BACKGROUND)

    @property
    def n_targets(self) -> int:
        return len(self.target_owner)

    @property
    def n_docs(self) -> int:
        return len(self.labels)


_SCORER: PairScorer | None = None


def _init(refs: list[bytes]) -> None:
    global _SCORER
    _SCORER = PairScorer("lz4", refs)


def _rows(pieces: list[bytes]) -> np.ndarray:
    assert _SCORER is not None
    return np.stack([_SCORER.similarities(p) for p in pieces]).astype(np.float32)


def background_rows(name: str, seed: int, cache: Path, workers: int, m: Matrices) -> np.ndarray:
    """Similarities of each of the pool's BACKGROUND windows to every reference (the same columns as
    ``Matrices.sims``), cached beside the pool's matrices: the labelled negatives of the learned
    variants. Rebuilds the pool's windows exactly as :func:`build` cut them."""
    path = cache / f"{name}-{seed}-background.npy"
    if path.exists():
        return np.load(path)
    pool = build_pool(POOLS[name], 4900, seed)
    docs = [r["text"].encode("utf-8") for r in pool.records]
    targets = [p for t in pool.targets for p in split_pieces(t.encode("utf-8"), DEFAULT_CHUNK)]
    assert len(targets) == m.n_targets, "pool differs from the cached matrices"
    background = background_pieces([docs[i] for i in m.background_doc], DEFAULT_CHUNK, seed)
    with Pool(workers, initializer=_init, initargs=(targets + background,)) as p:
        rows = np.concatenate(
            p.map(_rows, [background[i : i + 32] for i in range(0, len(background), 32)], chunksize=1)
        )
    np.save(path, rows)
    return rows


def build(name: str, seed: int, cache: Path, workers: int) -> Matrices:
    """The pool's matrices, from ``cache`` when already computed (the slow part: every pair once)."""
    path = cache / f"{name}-{seed}.npz"
    if path.exists():
        z = np.load(path)
        return Matrices(*(z[f] for f in Matrices.__dataclass_fields__))
    pool = build_pool(POOLS[name], 4900, seed)
    docs = [r["text"].encode("utf-8") for r in pool.records]
    targets, target_owner = [], []
    for i, t in enumerate(pool.targets):
        pieces = split_pieces(t.encode("utf-8"), DEFAULT_CHUNK)
        targets += pieces
        target_owner += [i] * len(pieces)
    chosen = random.Random(f"sim:{seed}").sample(range(len(docs)), BACKGROUND)  # "sim": the first runs' seed
    background = background_pieces([docs[i] for i in chosen], DEFAULT_CHUNK, seed)
    pieces, owner = [], []
    for i, d in enumerate(docs):
        ps = split_pieces(d, DEFAULT_CHUNK, DEFAULT_MAX_CHUNKS)
        pieces += ps
        owner += [i] * len(ps)
    rows = pieces + targets
    with Pool(workers, initializer=_init, initargs=(targets + background,)) as p:
        sims = np.concatenate(
            p.map(_rows, [rows[i : i + 256] for i in range(0, len(rows), 256)], chunksize=1)
        )
    m = Matrices(
        labels=np.array([r["domain"] == pool.spec.positive for r in pool.records]),
        owner=np.array(owner),
        target_owner=np.array(target_owner),
        background_doc=np.array(chosen),
        sims=sims[: len(pieces)],
        target_sims=sims[len(pieces) :],
    )
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f: getattr(m, f) for f in Matrices.__dataclass_fields__})
    return m


# -- the variants: (matrices, target columns, background columns) -> one score per pool piece ------


def _background(m: Matrices, bg: np.ndarray) -> np.ndarray:
    """Background similarities of every piece, NaN where the window was cut from its own document."""
    b = m.sims[:, m.n_targets + bg].astype(np.float64)
    return np.where(m.owner[:, None] == m.background_doc[bg][None, :], np.nan, b)


def _default(m: Matrices, tg: np.ndarray, bg: np.ndarray, lam: float = 1.0) -> np.ndarray:
    return m.sims[:, tg].astype(np.float64).mean(1) - lam * np.nanmean(_background(m, bg), 1)


def _weighted(m: Matrices, tg: np.ndarray, bg: np.ndarray, w: np.ndarray) -> np.ndarray:
    return m.sims[:, tg].astype(np.float64) @ (w / w.sum()) - np.nanmean(_background(m, bg), 1)


def _bg_max(m: Matrices, tg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    return m.sims[:, tg].astype(np.float64).mean(1) - np.nanmax(_background(m, bg), 1)


def _column_z(m: Matrices, tg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    r = m.sims[:, np.r_[tg, m.n_targets + bg]].astype(np.float64)
    z = (r - r.mean(0)) / (r.std(0) + 1e-12)
    return z[:, : len(tg)].mean(1) - z[:, len(tg) :].mean(1)


def _doc_weights(m: Matrices, tg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    every = np.arange(m.n_targets)
    per_doc = np.bincount(m.target_owner)
    return _weighted(m, every, bg, 1.0 / per_doc[m.target_owner])


def _target_dedup(m: Matrices, tg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    affinity = m.target_sims[np.ix_(tg, m.n_targets + bg)].mean(1)
    return _weighted(m, tg, bg, (affinity <= np.quantile(affinity, 0.75)).astype(np.float64))


def _capped(m: Matrices, cap: int) -> np.ndarray:
    """Target pieces kept when each target document keeps at most ``cap`` evenly spaced pieces."""
    keep: list[int] = []
    for o in np.unique(m.target_owner):
        idx = np.flatnonzero(m.target_owner == o)
        n = len(idx)
        keep += list(idx) if n <= cap else [int(idx[j * (n - 1) // (cap - 1)]) for j in range(cap)]
    return np.array(keep)


Variant = Callable[[Matrices, np.ndarray, np.ndarray], np.ndarray]


# -- learned reference weights: a linear classifier on a piece's similarities to the references -----
#
# Every piece is a feature vector: its similarities to the T target and B background references.
# Labelled examples cost only their own compressions against those references: target pieces that
# are not references (positives) and pool background windows that are not references (negatives).
# A linear score averaged over a document's pieces is the score of the averaged similarities, so
# the streaming pass stays as it is; only the weights of the references change.


def _training(
    m: Matrices, tg: np.ndarray, bg: np.ndarray, rng: random.Random, n_pos: int, n_neg: int, loo: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Features of held-out target pieces (positives) and held-out background windows (negatives).

    ``loo``: a positive's similarities to references cut from its own target document are replaced
    by the mean over the other positives (a piece of the same file is no evidence about the pool)."""
    cols = np.r_[tg, m.n_targets + bg]
    free = np.setdiff1d(np.arange(m.n_targets), tg)
    pos = np.sort(np.array(rng.sample(list(free), min(n_pos, len(free)))))
    neg_free = np.setdiff1d(np.arange(BACKGROUND), bg)
    neg = np.sort(np.array(rng.sample(list(neg_free), min(n_neg, len(neg_free)))))
    xp = m.target_sims[np.ix_(pos, cols)].astype(np.float64)
    if loo:
        same = np.zeros_like(xp, dtype=bool)
        same[:, : len(tg)] = m.target_owner[pos][:, None] == m.target_owner[tg][None, :]
        xp[same] = np.nan
        xp = np.where(same, np.nanmean(xp, 0)[None, :], xp)
    xn = m.bg_rows[np.ix_(neg, cols)].astype(np.float64)  # type: ignore[attr-defined]
    return xp, xn


def _pool_features(m: Matrices, tg: np.ndarray, bg: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Every pool piece's similarities to the references; a background window cut from the piece's
    own document is replaced by ``fill`` (that column's mean over the negatives)."""
    x = np.concatenate([m.sims[:, tg].astype(np.float64), _background(m, bg)], 1)
    return np.where(np.isnan(x), fill[None, :], x)


def _center(x: np.ndarray) -> np.ndarray:
    """Each row minus its mean over the references: what makes a piece compress well with anything."""
    return x - x.mean(1, keepdims=True)


def _logistic(x: np.ndarray, y: np.ndarray, lam: float, w0: np.ndarray, iters: int = 30) -> np.ndarray:
    """L2-regularised logistic regression toward ``w0`` (Newton steps; the intercept unpenalised)."""
    n, d = x.shape
    xa = np.concatenate([x, np.ones((n, 1))], 1)
    w = np.r_[w0, 0.0]
    reg = np.full(d + 1, lam)
    reg[-1] = 0.0
    prior = np.r_[w0, 0.0]
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(xa @ w)))
        g = xa.T @ (p - y) + reg * (w - prior)
        h = (xa * (p * (1 - p))[:, None]).T @ xa + np.diag(reg) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1]


@dataclass
class Learned:
    """How the learned variants fit reference weights (see :func:`_learned`)."""

    model: str  # "logreg" | "lda" | "meandiff"
    lam: float = 1.0
    n_pos: int = 128
    n_neg: int = 128
    loo: bool = False
    self_refs: bool = False  # the references themselves are examples too, their own column imputed
    pool_neg: int = 0  # negatives drawn from the pool's own pieces (unlabelled: PU) instead of windows
    center: bool = False
    prior: bool = False  # logreg: shrink toward the default's weights (scaled), not toward 0
    blend: float = 0.0  # meandiff/lda: weight = (1 - blend) * learned + blend * default (unit norms)


def _learned(m: Matrices, tg: np.ndarray, bg: np.ndarray, rng: random.Random, how: Learned) -> np.ndarray:
    xp, xn = _training(m, tg, bg, rng, how.n_pos, how.n_neg, how.loo)
    fill = xn.mean(0)
    x = _pool_features(m, tg, bg, fill)
    if how.self_refs:
        cols = np.r_[tg, m.n_targets + bg]
        tp = m.target_sims[np.ix_(tg, cols)].astype(np.float64)
        own = np.zeros_like(tp, dtype=bool)
        own[:, : len(tg)] = m.target_owner[tg][:, None] == m.target_owner[tg][None, :]
        tp = np.where(own, np.nanmean(np.where(own, np.nan, tp), 0)[None, :], tp)
        bn = m.bg_rows[np.ix_(bg, cols)].astype(np.float64)  # type: ignore[attr-defined]
        eye = np.zeros_like(bn, dtype=bool)
        eye[:, len(tg) :] = np.eye(len(bg), dtype=bool)
        bn = np.where(eye, np.nanmean(np.where(eye, np.nan, bn), 0)[None, :], bn)
        xp, xn = np.concatenate([xp, tp]), np.concatenate([xn, bn])
    if how.pool_neg:
        rows = np.array(rng.sample(range(len(x)), how.pool_neg))
        xn = np.concatenate([xn, x[rows]])
    if how.center:
        xp, xn, x = _center(xp), _center(xn), _center(x)
    default = np.r_[np.full(len(tg), 1.0 / len(tg)), np.full(len(bg), -1.0 / len(bg))]
    if how.model == "meandiff":
        w = xp.mean(0) - xn.mean(0)
    elif how.model == "lda":
        within = np.concatenate([xp - xp.mean(0), xn - xn.mean(0)])
        cov = within.T @ within / len(within)
        d = cov.shape[0]
        cov = (1 - how.lam) * cov + how.lam * np.trace(cov) / d * np.eye(d)
        w = np.linalg.solve(cov, xp.mean(0) - xn.mean(0))
    else:
        y = np.r_[np.ones(len(xp)), np.zeros(len(xn))]
        xt = np.concatenate([xp, xn])
        scale = xt.std(0).mean()
        w0 = np.zeros(len(default))
        if how.prior:
            s = xt @ default
            a = _logistic(((s - s.mean()) / s.std())[:, None], y, 1.0, np.zeros(1))[0] / s.std()
            w0 = a * default
        w = _logistic(xt / scale, y, how.lam, w0 * scale) / scale
    if how.blend:
        w = (1 - how.blend) * w / np.linalg.norm(w) + how.blend * default / np.linalg.norm(default)
    return x @ w


def _knn(m: Matrices, tg: np.ndarray, bg: np.ndarray, k: int, vote: bool) -> np.ndarray:
    """Mean of the k best target similarities minus the mean of the k best background ones; with
    ``vote``, the share of targets among the piece's k nearest references."""
    t = np.sort(m.sims[:, tg].astype(np.float64), 1)[:, ::-1]
    b = np.sort(np.nan_to_num(_background(m, bg), nan=-np.inf), 1)[:, ::-1]
    if not vote:
        return t[:, :k].mean(1) - b[:, :k].mean(1)
    both = np.concatenate([t[:, :k], b[:, :k]], 1)
    kth = np.sort(both, 1)[:, -k][:, None]
    return (t[:, :k] >= kth).sum(1) / k


@dataclass
class Spec:
    """How a variant samples (target and background counts, candidate target pieces) and scores."""

    n_targets: int | None = DEFAULT_MAX_TARGETS  # None: every candidate
    n_background: int = DEFAULT_CONTRAST_SIZE
    score: Variant = _default
    target_cap: int | None = None
    shrink: bool = False
    learned: Learned | None = None


def parse(name: str) -> Spec:
    key, _, value = name.partition("=")
    if key == "default":
        return Spec()
    if key == "refs":
        t, b = value.split("/")
        return Spec(None if t == "all" else int(t), int(b))
    if key == "bg-max":
        return Spec(score=_bg_max)
    if key == "lambda":
        lam = float(value)
        return Spec(score=lambda m, tg, bg: _default(m, tg, bg, lam))
    if key == "column-z":
        return Spec(score=_column_z)
    if key == "doc-weights":
        return Spec(score=_doc_weights)
    if key == "target-cap":
        return Spec(target_cap=int(value))
    if key == "target-dedup":
        return Spec(score=_target_dedup)
    if key == "shrink":
        return Spec(shrink=True)
    if key in ("knn", "knn-vote"):
        k = int(value)
        return Spec(score=lambda m, tg, bg: _knn(m, tg, bg, k, key == "knn-vote"))
    if key in ("logreg", "lda", "meandiff"):
        # e.g. logreg=0.1+pos128+neg128+loo+center+prior, lda=0.5, meandiff=blend0.5
        opts = value.split("+") if value else []
        how = Learned(key)
        for o in opts:
            if o.replace(".", "", 1).isdigit():
                how.lam = float(o)
            elif o.startswith("pos"):
                how.n_pos = int(o[3:])
            elif o.startswith("neg"):
                how.n_neg = int(o[3:])
            elif o.startswith("blend"):
                how.blend = float(o[5:])
            elif o.startswith("poolneg"):
                how.pool_neg = int(o[7:])
            elif o == "self":
                how.self_refs = True
            elif o in ("loo", "center", "prior"):
                setattr(how, o, True)
            else:
                raise SystemExit(f"unknown option {o!r} in {name!r}")
        return Spec(learned=how)
    raise SystemExit(f"unknown variant {name!r}")


def document_scores(m: Matrices, piece_scores: np.ndarray, shrink: bool) -> np.ndarray:
    """Mean over each document's pieces; with ``shrink``, pulled toward the pool mean by
    ``1 / (1 + r / pieces)``, r = within-document piece variance / between-document variance."""
    count = np.bincount(m.owner, minlength=m.n_docs).astype(np.float64)
    mean = np.bincount(m.owner, weights=piece_scores, minlength=m.n_docs) / count
    if not shrink:
        return mean
    spread = np.bincount(m.owner, weights=(piece_scores - mean[m.owner]) ** 2, minlength=m.n_docs)
    multi = count >= 2
    within = spread[multi].sum() / (count[multi] - 1).sum()
    between = max(mean.var() - np.mean(within / count), 1e-12)
    return mean.mean() + (mean - mean.mean()) / (1.0 + within / between / count)


def precision(m: Matrices, spec: Spec, draw: int, k: int) -> float:
    rng = random.Random(f"zipfit-variants-draw:{draw}")
    candidates = np.arange(m.n_targets) if spec.target_cap is None else _capped(m, spec.target_cap)
    nt = len(candidates) if spec.n_targets is None else min(spec.n_targets, len(candidates))
    tg = np.sort(np.array(rng.sample(list(candidates), nt)))
    bg = np.sort(np.array(rng.sample(range(BACKGROUND), spec.n_background)))
    if spec.learned is not None:
        piece_scores = _learned(m, tg, bg, random.Random(f"zipfit-variants-train:{draw}"), spec.learned)
    else:
        piece_scores = spec.score(m, tg, bg)
    scores = document_scores(m, piece_scores, spec.shrink)
    return float(m.labels[np.argsort(-scores, kind="stable")[:k]].mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pools", default="doc:0,doc:1,debian:0,debian:1,site:0,stdlib:0,stdlib:1,man:0")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    ap.add_argument("--sample-seeds", type=int, default=6, help="draws of the target/background samples")
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", default="bench-out/zipfit_variants")
    args = ap.parse_args(argv)
    pools = [p.split(":") for p in args.pools.split(",")]
    variants = args.variants.split(",")
    specs = {v: parse(v) for v in variants}
    print(f"precision@{args.k}: mean over {args.sample_seeds} sample draws (worst draw)\n")
    print("| variant | " + " | ".join(f"{n} ({s})" for n, s in pools) + " |")
    print("|---" * (len(pools) + 1) + "|")
    rows: dict[str, list[str]] = {v: [] for v in variants}
    for name, seed in pools:
        t0 = time.perf_counter()
        m = build(name, int(seed), Path(args.cache), args.workers)
        if any(spec.learned is not None for spec in specs.values()):
            m.bg_rows = background_rows(name, int(seed), Path(args.cache), args.workers, m)  # type: ignore[attr-defined]
        print(
            f"{name} ({seed}): {m.n_docs} documents, {m.n_targets} target pieces, "
            f"{time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        for v, spec in specs.items():
            ps = [precision(m, spec, d, args.k) for d in range(args.sample_seeds)]
            rows[v].append(f"{np.mean(ps):.3f} ({min(ps):.3f})")
    for v in variants:
        print(f"| {v} | " + " | ".join(rows[v]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
