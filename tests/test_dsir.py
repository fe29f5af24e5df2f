"""DSIR: parity with the reference ``data-selection`` package, tokenizer/hash parity, sampling modes."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compresslm.errors import ConfigError, DataError
from compresslm.select.base import Batch, PoolFactory
from compresslm.select.dsir import DSIR, NgramHasher, ngram_bucket, wordpunct_tokenize

WORDS = (  # noqa: SIM905 - a readable word list
    "the of and to in a is that for it as was with be by on not he I this are or his from at which "
    "def return import class self None if else elif for while yield lambda print range len "
    "Über café naïve 中文 데이터 (x) [y] {z} == != <= -> += ** // 'a' \"b\" 42 3.14 0x1F # x² e\u0301te"
).split()


def synthetic_docs(n: int, seed: int, max_words: int = 260) -> list[str]:
    """Deterministic mixed prose/code documents, some well under 100 words."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        length = rng.choice([rng.randint(0, 30), rng.randint(60, 140), rng.randint(100, max_words)])
        words = [rng.choice(WORDS) for _ in range(length)]
        sep = rng.choice([" ", "\n", "  ", "\t"])
        docs.append(sep.join(w.upper() if rng.random() < 0.1 else w for w in words))
    return docs


def make_pool(texts: list[str], batch_size: int, start: int = 0) -> PoolFactory:
    def pool() -> Iterator[Batch]:
        for b in range(0, len(texts), batch_size):
            yield [(start + i, texts[i]) for i in range(b, min(b + batch_size, len(texts)))]

    return pool


def collect(method: DSIR, pool: PoolFactory) -> tuple[np.ndarray, np.ndarray]:
    parts = list(method.score_batches(pool))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def write_jsonl(path: Path, texts: list[str]) -> None:
    with path.open("w") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")


def test_parity_with_data_selection_package(tmp_path: Path) -> None:
    """Our log importance weights and min-length mask equal the package's saved ones.

    Aligned settings: tokenizer "wordpunct", ngrams 2, 10,000 buckets, num_tokens_to_fit "all",
    min_example_length 100. The package runs with num_proc=2 on one file, i.e. two virtual shards
    (shard k holds lines i with i % 2 == k); we interleave its shard files back into line order.
    """
    data_selection = pytest.importorskip("data_selection")
    pool_texts = synthetic_docs(240, seed=1)
    target_texts = synthetic_docs(40, seed=2)
    write_jsonl(tmp_path / "pool.jsonl", pool_texts)
    write_jsonl(tmp_path / "targets.jsonl", target_texts)
    ref = data_selection.HashedNgramDSIR(
        [str(tmp_path / "pool.jsonl")],
        [str(tmp_path / "targets.jsonl")],
        cache_dir=str(tmp_path / "cache"),
        num_proc=2,
        min_example_length=100,
    )
    try:
        ref.fit_importance_estimator(num_tokens_to_fit="all")
        ref.compute_importance_weights()
    finally:
        # joblib keeps its loky worker processes alive for reuse; stop them so later tests that
        # check for leftover child processes see only their own.
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    shards = [np.load(tmp_path / "cache" / "log_importance_weights" / f"{k}.npy") for k in (0, 1)]
    meta = [np.load(tmp_path / "cache" / "perexample_metadata" / f"{k}.npy") for k in (0, 1)]
    ref_weights = np.empty(len(pool_texts))
    ref_len = np.empty(len(pool_texts))
    for k in (0, 1):
        ref_weights[k::2], ref_len[k::2] = shards[k], meta[k]
    ref_mask = ref.perexample_metadata_filter(ref_len)
    assert 0 < ref_mask.sum() < len(pool_texts)  # the data really exercises the mask

    ours = DSIR(sampling="topk", min_example_length=100, workers=1)
    pool = make_pool(pool_texts, batch_size=37)
    ours.prepare(target_texts, pool)
    np.testing.assert_allclose(ours.log_diff, ref.log_diff, rtol=0, atol=1e-12)
    parts = list(ours.log_weights(pool))
    weights = np.concatenate([p[1] for p in parts])
    np.testing.assert_allclose(weights, ref_weights, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), ref_len)
    indices, scores = collect(ours, pool)
    np.testing.assert_array_equal(indices, np.arange(len(pool_texts)))
    np.testing.assert_array_equal(np.isfinite(scores), ref_mask)
    np.testing.assert_array_equal(scores[ref_mask], ref_weights[ref_mask])


def test_known_bucket_values() -> None:
    # Published test values of the reference implementation (data-selection's test suite).
    assert ngram_bucket("alice", 10_000) == 6720
    assert ngram_bucket("alice went", 10_000) == 114


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=80), st.integers(1, 3))
def test_counts_match_package(text: str, n: int) -> None:
    hashed = pytest.importorskip("data_selection.hashed_ngram_dsir")
    expected = hashed.get_ngram_counts(text, n=n, num_buckets=97)
    assert wordpunct_tokenize(text) == hashed.wpt.tokenize(text.lower())
    np.testing.assert_array_equal(NgramHasher(97, n).counts(text), expected)


@pytest.mark.parametrize(
    "text", ["a\x1cb c\x1fd", "plain ascii, text!", "caf\u00e9 x\u00b2 e\u0301t\u00e9", "\u00a0a\u2003b"]
)
def test_tokenizer_matches_nltk_on_engine_differences(text: str) -> None:
    """Texts where stdlib `re` and `regex` disagree (information separators, superscripts, marks)."""
    nltk_tokenize = pytest.importorskip("nltk.tokenize")
    assert wordpunct_tokenize(text) == nltk_tokenize.WordPunctTokenizer().tokenize(text.lower())


def test_hash_cache_is_bounded_and_exact() -> None:
    hasher = NgramHasher(10_000, 2, max_cache=5)
    text = "alice went to the market and alice went home"
    first = hasher.counts(text)
    assert len(hasher._cache) <= 5
    np.testing.assert_array_equal(hasher.counts(text), first)
    np.testing.assert_array_equal(first, NgramHasher(10_000, 2).counts(text))


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str]]:
    return synthetic_docs(300, seed=3), synthetic_docs(30, seed=4)


def test_gumbel_is_seeded_and_batch_size_independent(corpus: tuple[list[str], list[str]]) -> None:
    pool_texts, targets = corpus
    runs = []
    for seed, batch in [(7, 50), (7, 13), (8, 50)]:
        method = DSIR(seed=seed, workers=1)
        method.prepare(targets, make_pool(pool_texts, batch))
        runs.append(collect(method, make_pool(pool_texts, batch))[1])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    # the noise is standard Gumbel on top of the plain weights
    plain = DSIR(sampling="topk", workers=1)
    plain.prepare(targets, make_pool(pool_texts, 50))
    noise = runs[0] - collect(plain, make_pool(pool_texts, 50))[1]
    assert abs(noise.mean() - np.euler_gamma) < 0.25 and 0.9 < noise.std() < 1.7


def test_topk_scores_are_the_weights(corpus: tuple[list[str], list[str]]) -> None:
    pool_texts, targets = corpus
    method = DSIR(sampling="topk", workers=1)
    pool = make_pool(pool_texts, 64)
    method.prepare(targets, pool)
    _, scores = collect(method, pool)
    weights = np.concatenate([w for _, w, _ in method.log_weights(pool)])
    np.testing.assert_array_equal(scores, weights)


def test_ranks_target_domain_first() -> None:
    rng = random.Random(5)
    code = [
        "def",
        "return",
        "import",
        "class",
        "self",
        "None",
        "if",
        "else",
        "for",
        "in",
        "while",
        "yield",
        "lambda",
        "(",
        ")",
        ":",
        "=",
        "==",
        "[",
        "]",
    ]
    prose = [
        "the",
        "of",
        "and",
        "to",
        "a",
        "is",
        "that",
        "it",
        "was",
        "with",
        "he",
        "this",
        "are",
        "or",
        "his",
        "from",
        "at",
        "which",
        "by",
    ]

    def doc(vocab: list[str]) -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(40, 120)))

    pool_texts = [doc(code) if i % 2 else doc(prose) for i in range(200)]
    method = DSIR(sampling="topk", workers=1)
    pool = make_pool(pool_texts, 64)
    method.prepare([doc(code) for _ in range(20)], pool)
    _, scores = collect(method, pool)
    top = np.argsort(-scores, kind="stable")[:100]
    assert np.mean(top % 2 == 1) == 1.0  # every selected document is a code document


def test_min_length_mask(corpus: tuple[list[str], list[str]]) -> None:
    pool_texts, targets = corpus
    method = DSIR(min_example_length=100, sampling="gumbel", seed=1, workers=1)
    pool = make_pool(pool_texts, 64)
    method.prepare(targets, pool)
    _, scores = collect(method, pool)
    short = np.array([len(wordpunct_tokenize(t)) < 100 for t in pool_texts])
    assert short.any() and (~short).any()
    assert np.all(scores[short] == -np.inf)
    assert np.all(np.isfinite(scores[~short]))


def test_parallel_workers_give_identical_scores(corpus: tuple[list[str], list[str]]) -> None:
    pool_texts, targets = corpus
    pool = make_pool(pool_texts, 40)
    serial, parallel = DSIR(seed=3, workers=1), DSIR(seed=3, workers=2)
    serial.prepare(targets, pool)
    parallel.prepare(targets, pool)
    np.testing.assert_array_equal(collect(serial, pool)[1], collect(parallel, pool)[1])


def test_scores_without_kept_features_are_identical(corpus: tuple[list[str], list[str]]) -> None:
    pool_texts, targets = corpus
    pool = make_pool(pool_texts, 40)
    kept, recomputed = DSIR(seed=3, workers=1), DSIR(seed=3, workers=1, keep_features_mb=0.01)
    kept.prepare(targets, pool)
    recomputed.prepare(targets, pool)
    assert kept._features is not None and recomputed._features is None
    np.testing.assert_array_equal(collect(kept, pool)[1], collect(recomputed, pool)[1])


def test_pool_that_changes_between_passes_is_an_error(corpus: tuple[list[str], list[str]]) -> None:
    pool_texts, targets = corpus
    method = DSIR(workers=1)
    method.prepare(targets, make_pool(pool_texts, 40))
    with pytest.raises(DataError, match="pool changed"):
        collect(method, make_pool(pool_texts[:-1], 40))
    with pytest.raises(DataError, match="pool changed"):
        collect(method, make_pool(pool_texts, 40, start=1))


def test_bad_options_and_inputs() -> None:
    with pytest.raises(ConfigError, match="sampling"):
        DSIR(sampling="softmax")
    with pytest.raises(ConfigError, match="num_buckets"):
        DSIR(num_buckets=0)
    with pytest.raises(ConfigError, match="target set is empty"):
        DSIR().prepare([], make_pool(["some words"], 1))
    assert DSIR(seed=5).describe()["seed"] == 5
