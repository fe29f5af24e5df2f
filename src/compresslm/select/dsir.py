"""DSIR: data selection with importance resampling on hashed n-grams (Xie et al. 2023).

A document's score is the log importance weight

    log w(x) = Σ_b counts_b(x) · (log(p_target[b] + 1e-8) − log(p_raw[b] + 1e-8))

over the hashed unigram+bigram buckets b, i.e. a bag-of-n-grams log-likelihood ratio between the
target and the raw (pool) distribution. It is a *sum*, not a mean, so long documents get
large-magnitude weights. With ``sampling="gumbel"`` (the paper's resampling) seeded Gumbel noise is
added, so a top-k of the scores is a sample without replacement with probability ∝ w (the
Gumbel-top-k trick); ``sampling="topk"`` keeps the plain weights (a deterministic best-first list).

Exactness. Everything that determines the weights matches ``data_selection.HashedNgramDSIR``
1.0.3 (``tokenizer="wordpunct"``): the text is lower-cased and split by NLTK's WordPunct regex
``\\w+|[^\\w\\s]+``; every unigram, then every k-gram (k = 2..ngrams, tokens joined by one space) is
hashed as ``int(sha256(utf8).hexdigest(), 16) % num_buckets``; p_raw is fitted on *every* pool
document (the package's ``fit_importance_estimator(num_tokens_to_fit="all")``; its default "auto"
stops after 1e9 counts, which no pool here reaches), p_target on all targets; the word count used by
``min_example_length`` is the package's ``(Σ counts + n(n−1)/2) // n``. Weights are computed as
``np.dot(log_diff, counts)`` per document, as the package does, so they agree bit for bit (the
parity test asserts 1e-9). Differences, all deliberate: ``target_laplace_smoothing`` (a pseudo-count
added to every target bucket; 0 = the package), seeded noise (the package's ``np.random.gumbel`` is
unseeded), and the default ``min_example_length=0`` (the package's 100 excludes every document under
100 words, which is most short code; pass 100 to reproduce it). Masked documents score ``-inf``:
like the package's mask, they can never be selected.

Speed. The package runs a Python ``sha256`` per n-gram occurrence and tokenizes the pool twice
(fit, then weights). Here each *distinct* n-gram is hashed once per process and remembered in a
bounded dict, the fitting pass keeps the documents' bucket ids (``keep_features_mb``) so the
scoring pass does no text processing, counts come from ``np.bincount``, and ``workers`` processes
featurize batches (:func:`compresslm.select.parallel.ordered_map`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import regex

from compresslm.errors import ConfigError, DataError
from compresslm.select.base import Batch, PoolFactory, SelectionMethod
from compresslm.select.parallel import ordered_map, resolve_workers

R = TypeVar("R")

# NLTK's WordPunctTokenizer is RegexpTokenizer(r"\w+|[^\w\s]+") with these flags; reimplemented so the
# core package does not depend on nltk (the parity test checks it against nltk on random text). NLTK
# compiles it with the third-party `regex` engine (nltk.redos), whose \w and \s follow the Unicode
# standard and differ from stdlib `re` on about 3,400 assigned code points (combining marks,
# superscript digits, some controls): we use `regex` too, so words split exactly as in the reference.
_WORDPUNCT = regex.compile(r"\w+|[^\w\s]+", re.UNICODE | re.MULTILINE | re.DOTALL)

# The package's smoothing constant inside both logarithms.
_LOG_EPS = 1e-8

SAMPLING_MODES = ("gumbel", "topk")


# On ASCII text the stdlib engine splits identically (the engines' \w and \s differ only on
# non-ASCII code points and on the ASCII information separators \x1c-\x1f) and is about 30% faster.
_WORDPUNCT_ASCII = re.compile(r"\w+|[^\w\s]+")
_INFO_SEPARATORS = re.compile(r"[\x1c-\x1f]")


def wordpunct_tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it like ``nltk.WordPunctTokenizer`` (the package's default)."""
    text = text.lower()
    if text.isascii() and not _INFO_SEPARATORS.search(text):
        return _WORDPUNCT_ASCII.findall(text)
    return _WORDPUNCT.findall(text)


def ngram_bucket(ngram: str, num_buckets: int) -> int:
    """The package's ``hash_buckets``: ``int(sha256(ngram).hexdigest(), 16) % num_buckets``."""
    return int.from_bytes(hashlib.sha256(ngram.encode("utf-8")).digest(), "big") % num_buckets


class NgramHasher:
    """Maps a text to the bucket ids of its n-grams, hashing each distinct n-gram once.

    The bucket of an n-gram never changes, so a dict from n-gram to bucket is exact. It is cleared
    when it holds ``max_cache`` entries, which bounds memory (about 150 bytes per entry) at the cost
    of re-hashing after a clear.
    """

    def __init__(self, num_buckets: int, ngrams: int, max_cache: int = 2_000_000) -> None:
        self.num_buckets = num_buckets
        self.ngrams = ngrams
        self.max_cache = max_cache
        self._cache: dict[str, int] = {}

    def _lookup(self, grams: Iterable[str]) -> list[int]:
        cache = self._cache
        out: list[int] = []
        append = out.append  # local aliases: this loop is the hot path
        for g in grams:
            b = cache.get(g)
            if b is None:
                b = ngram_bucket(g, self.num_buckets)
                cache[g] = b
            append(b)
        if len(cache) > self.max_cache:
            cache.clear()
        return out

    def bucket_ids(self, text: str) -> list[int]:
        """Bucket of every unigram, then every k-gram for k = 2..ngrams (the package's order)."""
        words = wordpunct_tokenize(text)
        ids = self._lookup(words)
        for k in range(2, self.ngrams + 1):
            ids.extend(self._lookup(" ".join(words[i : i + k]) for i in range(len(words) - k + 1)))
        return ids

    def counts(self, text: str) -> np.ndarray:
        """The package's ``get_ngram_counts``: an int64 count vector of length ``num_buckets``."""
        return np.bincount(np.asarray(self.bucket_ids(text), dtype=np.int64), minlength=self.num_buckets)


# One hasher per (num_buckets, ngrams) per process, so worker processes keep their cache across batches.
_HASHERS: dict[tuple[int, int], NgramHasher] = {}


def _hasher(num_buckets: int, ngrams: int) -> NgramHasher:
    key = (num_buckets, ngrams)
    if key not in _HASHERS:
        _HASHERS[key] = NgramHasher(num_buckets, ngrams)
    return _HASHERS[key]


@dataclass(frozen=True)
class Features:
    """The bucket ids of one batch's documents: document j's are ``ids[offsets[j]:offsets[j + 1]]``."""

    indices: np.ndarray  # int64 pool indices
    ids: np.ndarray  # uint16 (or uint32 for more than 65,536 buckets)
    offsets: np.ndarray  # int64, len(indices) + 1

    @property
    def nbytes(self) -> int:
        return self.indices.nbytes + self.ids.nbytes + self.offsets.nbytes


def count_features(
    batches: Iterable[Features], num_buckets: int, keep_mb: float
) -> tuple[np.ndarray, list[Features] | None]:
    """The pool's raw bucket counts over featurized ``batches``, and the batches themselves while
    they fit in ``keep_mb`` MiB (None once over: the scoring pass featurizes again). One pass
    serves both the in-process fit and the staged plan task."""
    raw = np.zeros(num_buckets, dtype=np.int64)
    kept: list[Features] | None = []
    budget = keep_mb * 2**20
    for feats in batches:
        raw += np.bincount(feats.ids, minlength=num_buckets)
        if kept is not None:
            budget -= feats.nbytes
            if budget >= 0:
                kept.append(feats)
            else:
                kept = None
    return raw, kept


class _FeaturizeJob:
    """Picklable batch job for the process pool (a lambda would not pickle)."""

    def __init__(self, num_buckets: int, ngrams: int) -> None:
        self.num_buckets, self.ngrams = num_buckets, ngrams

    def __call__(self, batch: Batch) -> Features:
        hasher = _hasher(self.num_buckets, self.ngrams)
        ids: list[int] = []
        offsets = np.zeros(len(batch) + 1, dtype=np.int64)
        for j, (_, text) in enumerate(batch):
            ids.extend(hasher.bucket_ids(text))
            offsets[j + 1] = len(ids)
        dtype = np.uint16 if self.num_buckets <= 1 << 16 else np.uint32
        indices = np.fromiter((i for i, _ in batch), dtype=np.int64, count=len(batch))
        return Features(indices, np.asarray(ids, dtype=dtype), offsets)


def _map_batches(job: Callable[[Batch], R], pool: PoolFactory, workers: int) -> Iterator[R]:
    """``map(job, pool())`` in order: in this process for one worker, else in a bounded process pool."""
    if workers == 1:
        return map(job, pool())
    return ordered_map(job, pool(), workers=workers)


class DSIR(SelectionMethod):
    """Hashed-n-gram DSIR; see the module docstring for the exact definition and package parity.

    Parameters (all recorded by :meth:`describe`):
        num_buckets: hash buckets shared by all n-gram orders (package default 10,000).
        ngrams: highest n-gram order; 2 = unigrams + bigrams (package default).
        min_example_length: documents with fewer words score ``-inf`` (never selected). Default 0;
            the package's default is 100.
        target_laplace_smoothing: pseudo-count added to every target bucket before normalising
            (0 = the package).
        sampling: ``"gumbel"`` adds seeded Gumbel(0, 1) noise (DSIR's resampling); ``"topk"`` scores
            by the plain log weight.
        seed: seed of the Gumbel noise (``numpy.random.default_rng(seed)``, drawn per document in pool
            order, so the scores do not depend on the batch size).
        workers: processes that featurize batches (None or 0 = every available core, 1 = in this
            process); does not change the scores.
        keep_features_mb: the fitting pass keeps every document's bucket ids (2 bytes per n-gram,
            about 0.7 KB per 1 KB of text) up to this many MB, so the scoring pass only re-reads
            the pool instead of tokenizing and hashing it again; a larger pool is featurized twice.
    """

    name = "dsir"

    def __init__(
        self,
        *,
        num_buckets: int = 10_000,
        ngrams: int = 2,
        min_example_length: int = 0,
        target_laplace_smoothing: float = 0.0,
        sampling: str = "gumbel",
        seed: int = 0,
        workers: int | None = None,
        keep_features_mb: float = 1024,
    ) -> None:
        if num_buckets < 1:
            raise ConfigError(f"dsir: num_buckets must be >= 1, got {num_buckets}")
        if ngrams < 1:
            raise ConfigError(f"dsir: ngrams must be >= 1, got {ngrams}")
        if min_example_length < 0:
            raise ConfigError(f"dsir: min_example_length must be >= 0, got {min_example_length}")
        if target_laplace_smoothing < 0:
            raise ConfigError(f"dsir: target_laplace_smoothing must be >= 0, got {target_laplace_smoothing}")
        if sampling not in SAMPLING_MODES:
            raise ConfigError(f"dsir: sampling must be one of {', '.join(SAMPLING_MODES)}, got {sampling!r}")
        if workers is not None and workers < 0:
            raise ConfigError(f"dsir: workers must be >= 0, got {workers}")
        self.num_buckets = num_buckets
        self.ngrams = ngrams
        self.min_example_length = min_example_length
        self.target_laplace_smoothing = target_laplace_smoothing
        self.sampling = sampling
        self.seed = seed
        self.workers = workers
        self.keep_features_mb = keep_features_mb
        self._features: list[Features] | None = None
        self._store: tuple[np.ndarray, np.ndarray, Features] | None = None  # see use_features
        self.raw_probs: np.ndarray | None = None
        self.target_probs: np.ndarray | None = None
        self.log_diff: np.ndarray | None = None

    def fit(self, targets: Sequence[str], raw_counts: np.ndarray) -> None:
        """Set ``log_diff`` from the targets and the pool's summed counts (``prepare`` computes them)."""
        if not targets:
            raise ConfigError("dsir: the target set is empty")
        if raw_counts.sum() == 0:
            raise DataError("dsir: the pool has no words, so its n-gram distribution is undefined")
        feats = _FeaturizeJob(self.num_buckets, self.ngrams)(list(enumerate(targets)))
        target_counts = np.bincount(feats.ids, minlength=self.num_buckets).astype(np.float64)
        target_counts += self.target_laplace_smoothing
        if target_counts.sum() == 0:
            raise DataError("dsir: the targets have no words (and target_laplace_smoothing is 0)")
        self.raw_probs = raw_counts / raw_counts.sum()
        self.target_probs = target_counts / target_counts.sum()
        self.log_diff = np.log(self.target_probs + _LOG_EPS) - np.log(self.raw_probs + _LOG_EPS)

    def prepare(self, targets: Sequence[str], pool: PoolFactory) -> None:
        """Fit p_raw on every pool document (one pass) and p_target on all targets."""
        if not targets:
            raise ConfigError("dsir: the target set is empty")
        job = _FeaturizeJob(self.num_buckets, self.ngrams)
        raw, kept = count_features(
            _map_batches(job, pool, resolve_workers(self.workers)), self.num_buckets, self.keep_features_mb
        )
        self._features = kept
        self.fit(targets, raw)

    def use_features(self, feats: Features) -> None:
        """Score the documents in ``feats`` from these bucket ids (looked up by pool index) instead
        of tokenizing and hashing them again; a batch with a document not in ``feats`` is
        featurized as usual. Why: the staged engines' plan stage featurizes every shard to count its
        n-grams, and hashing is most of DSIR's time; the scoring stage reuses what it stored."""
        order = np.argsort(feats.indices, kind="stable")
        self._store = (feats.indices[order], order, feats)

    def _stored(self, indices: np.ndarray) -> Features | None:
        """The stored features of exactly these documents, in this order, or None if any is missing."""
        assert self._store is not None
        sorted_indices, order, feats = self._store
        pos = np.searchsorted(sorted_indices, indices)
        if len(sorted_indices) == 0 or pos.max(initial=0) >= len(sorted_indices):
            return None
        if not np.array_equal(sorted_indices[pos], indices):
            return None
        rows = order[pos]
        starts, stops = feats.offsets[rows], feats.offsets[rows + 1]
        ids = np.concatenate([feats.ids[a:b] for a, b in zip(starts.tolist(), stops.tolist(), strict=True)])
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(stops - starts, out=offsets[1:])
        return Features(indices, ids.astype(feats.ids.dtype, copy=False), offsets)

    def _weigh(self, feats: Features) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert self.log_diff is not None
        remainder = self.ngrams * (self.ngrams - 1) / 2
        n = len(feats.indices)
        weights = np.empty(n, dtype=np.float64)
        lengths = np.empty(n, dtype=np.float64)
        for j in range(n):
            counts = np.bincount(
                feats.ids[feats.offsets[j] : feats.offsets[j + 1]], minlength=self.num_buckets
            )
            weights[j] = np.dot(self.log_diff, counts)  # the package's very call: bit-identical sums
            lengths[j] = (counts.sum() + remainder) // self.ngrams  # the package's word count
        return feats.indices, weights, lengths

    def log_weights(self, pool: PoolFactory) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(indices, log importance weights, word counts)`` per batch, before masking or noise.

        Iterates ``pool()`` once either way (the pipeline accounts for documents during this pass).
        """
        if self.log_diff is None:
            raise RuntimeError("dsir: call prepare() before scoring")
        if self._store is not None:
            job = _FeaturizeJob(self.num_buckets, self.ngrams)
            for batch in pool():
                indices = np.fromiter((i for i, _ in batch), dtype=np.int64, count=len(batch))
                feats = self._stored(indices) if len(batch) else None
                yield self._weigh(feats if feats is not None else job(batch))
            return
        if self._features is None:
            job = _FeaturizeJob(self.num_buckets, self.ngrams)
            yield from map(self._weigh, _map_batches(job, pool, resolve_workers(self.workers)))
            return
        stored = iter(self._features)
        for batch in pool():
            feats = next(stored, None)
            indices = np.fromiter((i for i, _ in batch), dtype=np.int64, count=len(batch))
            if feats is None or not np.array_equal(feats.indices, indices):
                raise DataError("dsir: the pool changed between the fitting pass and the scoring pass")
            yield self._weigh(feats)
        if next(stored, None) is not None:
            raise DataError("dsir: the pool changed between the fitting pass and the scoring pass")

    def score_batches(self, pool: PoolFactory) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(self.seed)  # fresh per pass: every pass yields the same scores
        for indices, weights, lengths in self.log_weights(pool):
            scores = weights.copy()
            if self.sampling == "gumbel":
                scores += rng.gumbel(size=len(scores))
            scores[lengths < self.min_example_length] = -np.inf
            yield indices, scores

    def describe(self) -> dict[str, object]:
        return {
            "method": self.name,
            "num_buckets": self.num_buckets,
            "ngrams": self.ngrams,
            "tokenizer": "wordpunct (lower-cased)",
            "hash": "sha256 % num_buckets",
            "min_example_length": self.min_example_length,
            "target_laplace_smoothing": self.target_laplace_smoothing,
            "num_tokens_to_fit": "all",
            "sampling": self.sampling,
            "seed": self.seed,
            "workers": self.workers,
            "keep_features_mb": self.keep_features_mb,
        }
