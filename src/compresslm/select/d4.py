"""D4 (Tirumala et al. 2023): semantic deduplication, then prototypicality pruning, as a ranking.

D4 is target-agnostic: it ignores the targets and prefers diverse, non-duplicate, "hard" documents.
The steps, with our choices where the papers leave them open:

1. **Embed** every pool document (:mod:`compresslm.select.embeddings`; default all-MiniLM-L6-v2,
   unit vectors; the paper used OPT-125M). Embeddings are cached on disk.
2. **Cluster** with spherical k-means (cosine on unit vectors): greedy k-means++ seeding on a seeded
   sample, then Lloyd iterations with normalised centroids until no label changes or ``max_iter``
   (25, faiss's default ``niter``). Default ``n_clusters = round(sqrt(N))`` (the papers give no
   count for small pools). Hand-written in numpy because the usual libraries (scikit-learn, faiss)
   are not dependencies; it is short and seeded.
3. **SemDeDup** inside each cluster: order the members farthest-from-centroid first (ties by pool
   order) and drop a member whose cosine similarity to an *earlier* member exceeds ``1 − eps``, so
   of a group of near-duplicates the one farthest from the centroid is kept (SemDeDup's
   ``keep_hard``). ``dedup_against="all"`` compares with every earlier member, as the SemDeDup
   reference code does (max of the upper-triangular similarity matrix); ``"kept"`` compares only with
   earlier *kept* members (a chain a≈b≈c then keeps a and c). ``eps`` is either given or set, like
   D4, from ``dedup_keep_ratio`` (R_dedup, default 0.75): one global threshold, the R-quantile of the
   members' max similarity to earlier members, so about R of the pool survives under ``"all"``
   (ties may keep a few more) and at least R under ``"kept"`` — except that the derived eps is at
   least ``MIN_EPS`` (1e-5), so exact duplicates always go, even when fewer than R survive.
4. **Re-cluster** the survivors (``recluster=True``, same k rule on the survivor count, seed + 1)
   and score each by its cosine distance to its centroid (SSL prototypicality: far = hard = kept).
5. **Ranking**: survivors score their distance, in [0, 2] (``ranking="global"``: one global order,
   as in Sorscher et al.'s prototype metric), or their within-cluster percentile in (0, 1]
   (``"balanced"``: a top-k takes about the same fraction of every cluster). Deduplicated documents
   score ``distance to their first-pass centroid − 4``, so they all rank below every survivor, the
   most distinct of them first. A top-k therefore takes the hardest non-duplicates.

Memory: the embeddings are held in memory (N × 384 float32: 1.5 GB per million documents) plus one
cluster's similarity block at a time (bounded to about 64 MB).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import numpy as np

from compresslm.errors import ConfigError, DataError
from compresslm.select.base import PoolFactory, SelectionMethod
from compresslm.select.embeddings import (
    Embedder,
    EmbeddingCache,
    default_cache_dir,
    embed_pool,
    make_embedder,
)

#: Offset that puts every deduplicated document below every survivor (survivor scores are >= 0).
DEDUP_OFFSET = -4.0

#: Smallest eps derived from dedup_keep_ratio: exact duplicates (cosine 1 up to float32 rounding,
#: about 1e-7) are always dropped, even where that leaves fewer than R_dedup of the pool.
MIN_EPS = 1e-5

_BLOCK_ELEMENTS = 1 << 24  # similarity block size (float32): 64 MB


def default_n_clusters(n: int) -> int:
    """round(sqrt(n)), at least 1 and at most n."""
    return max(1, min(n, round(math.sqrt(n))))


def _assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid by cosine (max dot product; ties to the lower id) and that similarity."""
    labels = np.empty(len(x), dtype=np.int64)
    sims = np.empty(len(x), dtype=np.float32)
    step = max(1, _BLOCK_ELEMENTS // max(1, len(centroids)))
    for a in range(0, len(x), step):
        s = x[a : a + step] @ centroids.T
        labels[a : a + step] = np.argmax(s, axis=1)
        sims[a : a + step] = s[np.arange(len(s)), labels[a : a + step]]
    return labels, sims


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding, as scikit-learn does it: D² sampling (squared Euclidean distance,
    2 − 2·cos on unit vectors) of ``2 + ⌊ln k⌋`` candidates per step, keeping the candidate that
    lowers the total potential most. Plain k-means++ often puts two seeds in one big cluster."""
    trials = 2 + int(math.log(k))
    centers = [int(rng.integers(len(x)))]
    d2 = np.maximum(2.0 - 2.0 * (x @ x[centers[0]]), 0.0).astype(np.float64)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # every point coincides with a center: pick uniformly among the rest
            nxt = int(rng.choice(np.setdiff1d(np.arange(len(x)), centers)))
            centers.append(nxt)
            continue
        candidates = rng.choice(len(x), size=trials, p=d2 / total)
        sims = x @ x[candidates].T  # (N, trials): one gemm with a thin right-hand side
        cand_d2 = np.minimum(d2[:, None], np.maximum(2.0 - 2.0 * sims, 0.0))
        best = int(np.argmin(cand_d2.sum(axis=0)))
        centers.append(int(candidates[best]))
        d2 = np.ascontiguousarray(cand_d2[:, best])
    return x[centers].copy()


def spherical_kmeans(
    x: np.ndarray, k: int, *, seed: int = 0, max_iter: int = 25, init_sample: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster unit vectors by cosine; returns ``(centroids (k, d) unit float32, labels (N,) int64)``.

    Seeding runs k-means++ on a seeded sample of ``max(init_sample, 20·k)`` points (all of them when
    fewer), which bounds its O(sample·k) cost. An empty cluster is re-seeded with the point farthest
    from its centroid. Deterministic for a given seed and input.
    """
    n = len(x)
    if n == 0:
        raise DataError("d4: cannot cluster an empty pool")
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    sample_size = min(n, max(init_sample, 20 * k))
    sample = np.sort(rng.choice(n, size=sample_size, replace=False)) if sample_size < n else np.arange(n)
    centroids = _kmeans_pp(x[sample], k, rng)
    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(max_iter):
        new_labels, sims = _assign(x, centroids)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        order = np.argsort(labels, kind="stable")
        sorted_labels = labels[order]
        starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
        sums = np.add.reduceat(x[order], starts, axis=0)  # per-cluster sums in one O(N·d) pass
        occupied = sorted_labels[starts]
        centroids = centroids.copy()
        centroids[occupied] = sums
        empty = np.setdiff1d(np.arange(k), occupied)
        if len(empty):  # re-seed each empty cluster with a distinct far point
            far = np.argsort(sims, kind="stable")[: len(empty)]  # least similar to their centroid
            centroids[empty] = x[far]
        norms = np.linalg.norm(centroids, axis=1, keepdims=True)
        centroids = (centroids / np.where(norms == 0, 1.0, norms)).astype(np.float32)
    return centroids, labels


def _members_farthest_first(labels: np.ndarray, dist: np.ndarray) -> list[np.ndarray]:
    """Per cluster, member positions sorted by distance to the centroid descending, ties by position."""
    order = np.lexsort((np.arange(len(labels)), -dist, labels))
    sorted_labels = labels[order]
    cuts = np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 1
    return np.split(order, cuts)


def max_sim_to_earlier(x: np.ndarray, members: np.ndarray) -> np.ndarray:
    """For each member j (in the given order), max cosine to members before it (−inf for the first)."""
    m = len(members)
    out = np.full(m, -np.inf, dtype=np.float32)
    step = max(1, _BLOCK_ELEMENTS // max(1, m))
    xm = x[members]
    for a in range(1, m, step):
        b = min(m, a + step)
        s = xm[a:b] @ xm[:b].T  # rows j in [a, b), columns i in [0, b)
        s[np.arange(b - a)[:, None] <= np.arange(b)[None, :] - a] = -np.inf  # keep i < j only
        out[a:b] = s.max(axis=1)
    return out


def _greedy_keep(x: np.ndarray, members: np.ndarray, max_prev: np.ndarray, threshold: float) -> np.ndarray:
    """Keep j unless its similarity to an earlier *kept* member exceeds ``threshold``."""
    keep = max_prev <= threshold  # never near any earlier member: kept under either rule
    xm = x[members]
    for j in np.flatnonzero(~keep):
        earlier = np.flatnonzero(keep[:j])
        keep[j] = len(earlier) == 0 or float((xm[earlier] @ xm[j]).max()) <= threshold
    return keep


def semdedup(
    x: np.ndarray,
    labels: np.ndarray,
    centroids: np.ndarray,
    *,
    eps: float | None = None,
    keep_ratio: float = 0.75,
    against: str = "all",
) -> tuple[np.ndarray, float]:
    """``(keep mask, eps used)``; see the module docstring, step 3."""
    dist = 1.0 - np.einsum("ij,ij->i", x, centroids[labels])
    groups = _members_farthest_first(labels, dist)
    max_prev = np.empty(len(x), dtype=np.float32)
    for members in groups:
        max_prev[members] = max_sim_to_earlier(x, members)
    if eps is None:  # the R-quantile of max_prev, so that about R of the points survive
        ranked = np.sort(max_prev)
        threshold = float(ranked[max(1, math.ceil(keep_ratio * len(x))) - 1])
        eps = max(MIN_EPS, 1.0 - threshold) if math.isfinite(threshold) else 2.0
    threshold = 1.0 - eps
    if against == "all":
        return max_prev <= threshold, eps
    keep = np.zeros(len(x), dtype=bool)
    for members in groups:
        keep[members] = _greedy_keep(x, members, max_prev[members], threshold)
    return keep, eps


def prototypicality_distance(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine distance of each point to its cluster centroid (larger = less prototypical)."""
    return (1.0 - np.einsum("ij,ij->i", x, centroids[labels])).astype(np.float64)


def within_cluster_percentile(labels: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Rank of each distance within its cluster, as a fraction in (0, 1]; the farthest gets 1."""
    out = np.empty(len(labels), dtype=np.float64)
    for members in _members_farthest_first(labels, dist):
        m = len(members)
        out[members] = (m - np.arange(m)) / m
    return out


class D4(SelectionMethod):
    """Target-agnostic D4 ranking; every parameter is documented in the module docstring.

    Parameters:
        embedder: ``"minilm"`` (default, needs the ``d4`` extra), ``"hashing"`` (not the paper's),
            or an :class:`~compresslm.select.embeddings.Embedder`.
        n_clusters: k for both clusterings (None = round(sqrt(N)), resp. of the survivor count).
        eps: SemDeDup threshold (drop at cosine > 1 − eps); None = derived from dedup_keep_ratio.
        dedup_keep_ratio: R_dedup, the fraction kept by SemDeDup when eps is None (default 0.75).
        dedup_against: ``"all"`` (SemDeDup reference) or ``"kept"`` earlier members.
        recluster: re-run k-means on the survivors before prototypicality (D4 does).
        ranking: ``"global"`` distance or ``"balanced"`` within-cluster percentile.
        seed, max_iter: k-means seeding and iteration cap.
        cache_dir: embedding cache root (None = ~/.cache/compresslm/embeddings); use_cache=False
            disables it.
        embed_batch_size: model batch size; workers: torch threads while embedding (None = default).
        progress: show a progress bar while embedding (on a terminal).
    """

    name = "d4"

    def __init__(
        self,
        *,
        embedder: str | Embedder = "minilm",
        n_clusters: int | None = None,
        eps: float | None = None,
        dedup_keep_ratio: float | None = None,
        dedup_against: str = "all",
        recluster: bool = True,
        ranking: str = "global",
        seed: int = 0,
        max_iter: int = 25,
        cache_dir: str | os.PathLike[str] | None = None,
        use_cache: bool = True,
        embed_batch_size: int = 64,
        workers: int | None = None,
        progress: bool = True,
    ) -> None:
        if eps is not None and dedup_keep_ratio is not None:
            raise ConfigError("d4: give either eps or dedup_keep_ratio, not both")
        if eps is not None and not 0.0 <= eps <= 2.0:
            raise ConfigError(f"d4: eps must be in [0, 2], got {eps}")
        if dedup_keep_ratio is not None and not 0.0 < dedup_keep_ratio <= 1.0:
            raise ConfigError(f"d4: dedup_keep_ratio must be in (0, 1], got {dedup_keep_ratio}")
        if n_clusters is not None and n_clusters < 1:
            raise ConfigError(f"d4: n_clusters must be >= 1, got {n_clusters}")
        if dedup_against not in ("all", "kept"):
            raise ConfigError(f"d4: dedup_against must be 'all' or 'kept', got {dedup_against!r}")
        if ranking not in ("global", "balanced"):
            raise ConfigError(f"d4: ranking must be 'global' or 'balanced', got {ranking!r}")
        self.embedder = make_embedder(embedder, batch_size=embed_batch_size, threads=workers or None)
        self.n_clusters = n_clusters
        self.eps = eps
        self.dedup_keep_ratio = 0.75 if eps is None and dedup_keep_ratio is None else dedup_keep_ratio
        self.dedup_against = dedup_against
        self.recluster = recluster
        self.ranking = ranking
        self.seed = seed
        self.max_iter = max_iter
        self.cache_dir = None if not use_cache else (cache_dir or default_cache_dir())
        self.progress = progress
        self.indices: np.ndarray | None = None
        self.scores: np.ndarray | None = None
        self.kept: np.ndarray | None = None
        self.eps_used: float | None = None

    def embed(self, pool: PoolFactory) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, unit embeddings)`` of the pool, through the cache."""
        cache = None
        if self.cache_dir is not None:
            cache = EmbeddingCache(self.cache_dir, self.embedder.model_id, self.embedder.dim)
        return embed_pool(self.embedder, pool, cache, progress=self.progress)

    def rank(self, x: np.ndarray) -> np.ndarray:
        """Scores for unit embeddings ``x`` (one row per document); sets ``kept`` and ``eps_used``."""
        n = len(x)
        if n == 0:
            raise DataError("d4: the pool is empty")
        k = self.n_clusters or default_n_clusters(n)
        centroids, labels = spherical_kmeans(x, k, seed=self.seed, max_iter=self.max_iter)
        keep, self.eps_used = semdedup(
            x, labels, centroids, eps=self.eps, keep_ratio=self.dedup_keep_ratio or 0.75,
            against=self.dedup_against,
        )  # fmt: skip
        scores = prototypicality_distance(x, centroids, labels) + DEDUP_OFFSET
        survivors = np.flatnonzero(keep)
        xs = x[survivors]
        if self.recluster:
            k2 = min(self.n_clusters or default_n_clusters(len(xs)), len(xs))
            centroids, labels_s = spherical_kmeans(xs, k2, seed=self.seed + 1, max_iter=self.max_iter)
        else:
            labels_s = labels[survivors]
        dist = prototypicality_distance(xs, centroids, labels_s)
        if self.ranking == "balanced":
            scores[survivors] = within_cluster_percentile(labels_s, dist)
        else:
            scores[survivors] = np.maximum(dist, 0.0)  # float error can give −1e-7 for a centroid point
        self.kept = keep
        return scores

    def prepare(self, targets: Sequence[str], pool: PoolFactory) -> None:
        """Embed, cluster, deduplicate and rank the pool (the targets are not used: D4 is agnostic)."""
        self.indices, x = self.embed(pool)
        self.scores = self.rank(x)

    def score_batches(self, pool: PoolFactory) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self.indices is None or self.scores is None:
            raise RuntimeError("d4: call prepare() before scoring")
        for batch in pool():
            idx = np.fromiter((i for i, _ in batch), dtype=np.int64, count=len(batch))
            pos = np.searchsorted(self.indices, idx)
            if np.any(pos >= len(self.indices)) or not np.array_equal(
                self.indices[np.minimum(pos, len(self.indices) - 1)], idx
            ):
                raise DataError("d4: the pool changed between the embedding pass and the scoring pass")
            yield idx, self.scores[pos]

    def describe(self) -> dict[str, object]:
        return {
            "method": self.name,
            "embedder": self.embedder.model_id,
            "n_clusters": self.n_clusters or "round(sqrt(N))",
            "eps": self.eps,
            "dedup_keep_ratio": self.dedup_keep_ratio,
            "eps_used": self.eps_used,
            "dedup_against": self.dedup_against,
            "recluster": self.recluster,
            "ranking": self.ranking,
            "seed": self.seed,
            "max_iter": self.max_iter,
            "dedup_score_offset": DEDUP_OFFSET,
            "kept_after_dedup": None if self.kept is None else int(self.kept.sum()),
        }
