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
  Bayes: a one-piece document's score is noisier, and ranking noisy scores favours them).
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


@dataclass
class Spec:
    """How a variant samples (target and background counts, candidate target pieces) and scores."""

    n_targets: int | None = DEFAULT_MAX_TARGETS  # None: every candidate
    n_background: int = DEFAULT_CONTRAST_SIZE
    score: Variant = _default
    target_cap: int | None = None
    shrink: bool = False


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
    scores = document_scores(m, spec.score(m, tg, bg), spec.shrink)
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
