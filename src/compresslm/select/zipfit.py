"""ZIP-FIT: rank source documents by how well they compress together with a target set.

Exactly the published method (docs/design.md#zip-fit), on the UTF-8 bytes of each text::

    NCD(x, y)    = (C(x + y) - min(C(x), C(y))) / max(C(x), C(y))      source x FIRST
    alignment(x) = 1 - mean_j NCD(x, y_j)                               plain mean over all targets

with C the compressed length of the whole container (:mod:`compresslm.compressors`). With
``--compressor gzip:9`` the scores equal the reference ``zip-fit`` package's to ~1e-16.

How it is made fast without changing a single score (docs/design.md#zip-fit):

* the targets (bytes) and their sizes travel to each worker once, in the pool initializer; the
  parent sends source batches and gets back one float per source -- never a per-pair object;
* the pool is streamed: at most ``2 * workers`` batches are in flight, so memory stays flat in N;
* per source, the per-pair similarities are summed with ``math.fsum`` (exact, hence independent of
  order), so a score is bit-identical whatever the worker count, batch size or scheduling;
* the per-pair loop is one C-level ``map`` chain per source (see ``Compressor.concat_sizes``), and
  glibc's heap trimming is tamed wherever scoring runs (:func:`compresslm.select.parallel.tune_malloc`).

**The default mode and the paper's mode.** The paper's mode (``gzip:9``) keeps the paper's
semantics: whole documents, every target, no contrast. The default mode of :class:`ZipFit` (and of
:func:`zipfit_scores`, which runs it) is LZ4 with three changes, each measured on real pools
(``benchmarks/real_pools.py``: whole files of this machine, unequal lengths) and on ``builtin:pool``:

* **Length: documents are scored by pieces** (:data:`DEFAULT_CHUNK` bytes, at most
  :data:`DEFAULT_MAX_CHUNKS` evenly spaced pieces per document, :func:`split_pieces`); a document's
  similarity to a reference is the mean over its pieces. Why: ``1 - NCD(x, y)`` with ``|x| >> |y|``
  is about (bytes of y explained by x) / C(x), which goes to 0 as x grows whatever its content,
  and with ``|x| << |y|`` it is the small share of y a short x can explain -- noisy. Whole-document
  scores therefore depend on length first: on a pool of 4,900 real files (20% Python, HumanEval
  target) the previous default selected no file above 8 KB and its top 500 held 137 of the 241
  files under 512 bytes, Python share 0.48-0.55; within the 2-8 KB bucket alone it separated
  Python almost perfectly (69 Python against 9 others). Pieces of one size put every document on
  the same scale: Python share 0.90-0.95 there, selected median length close to the pool's.
  Why 512 bytes and not 1 KiB (the first length-robust default): side by side on the five real
  pools, with pool seeds 0 / 1, precision@500 rose on three pools (Debian-like 0.978 / 0.990
  against 0.926 / 0.922, standard library 0.896 / 0.870 against 0.810 / 0.810, documentation
  0.836 / 0.872 against 0.810 / 0.862) and held on two (site-packages 0.978 against 0.982, man
  pages 1.000), at half the bytes per pair; 2 KiB pieces were worse than 1 KiB. Our reading (not
  measured): 512 bytes still give LZ4 a target's words and idioms to match, and four pieces sample
  a long document at more places per byte scored.
* **Targets and background are pieces too**: targets are cut by the same rule and sampled
  (:data:`DEFAULT_MAX_TARGETS` pieces); the background is one random ``chunk``-byte window from
  each of :data:`DEFAULT_CONTRAST_SIZE` sampled pool documents, so a piece is compared with
  references of its own size (whole background documents averaged 11 KB and cost most of the time).
* **Background contrast** (below) with 64 background pieces and 64 target pieces: averaged over
  three real pools and two seeds, precision@500 0.87 against 0.84 with 32 + 64 and 0.76 with
  16 + 32 (1 KiB pieces); with 512-byte pieces, 32 background pieces lost 0.04-0.05 on the
  standard-library and documentation pools. Pieces are cheap, so on real pools the default takes
  0.3-0.6x DSIR's time; on ``builtin:pool``, whose documents are all short, every document pays
  for all 128 references; with repeated texts scored once (and batched scoring) it takes about
  DSIR's time there, 0.76-0.99x (docs/benchmarks.md).

* **Dictionary contrast** (:mod:`compresslm.select.dictionary`): 64 target pieces see 2-3% of a
  large, varied target set (100 documentation files: 2,200-3,500 pieces), and on the real
  documentation pool DSIR, which models every target byte, was more precise. So the default also
  compresses each piece with zstd against every target piece (up to 2,048) as one dictionary and
  against as many pool windows, and adds ``(C(x | background) - C(x | target)) / |x|`` with a
  weight fitted on each run from held-out target pieces and pool windows -- only where the sum
  separates those better than the pairwise score alone, so on the code pools (82 HumanEval
  problems) it is left out. Side by side (docs/benchmarks.md), documentation pool seeds 0 / 1:
  precision@500 0.922 / 0.956 against 0.836 / 0.872 without it and DSIR's 0.876 / 0.926, at
  +29-32% of the time (0.39-0.52x DSIR's); code pools identical. On ``builtin:pool`` it is added
  too and gains nothing (0.995-0.996 against 0.998), at +17-25% of the scoring time.

``max_targets=0`` (``--max-targets all``, spec modifier ``+all``) scores every target (piece);
``contrast="none"`` (``+nocontrast``) turns contrast off; ``chunk=0`` (``--chunk-bytes 0``,
``+whole``) scores whole documents; ``dictionary=False`` (``--dictionary off``, ``+nodict``) leaves
the dictionary contrast out.

Background contrast (``contrast=``): score = alignment to the targets - alignment to a background
sample (of the pool itself, in :class:`ZipFit`). It cancels what makes a document compress well
with anything (boilerplate, the language of the whole pool). A source is never compared with a
background document equal to it, or with a background piece cut from it (its self-similarity
would penalise exactly the sampled documents); identical documents thus still tie. If every
background reference is excluded for a source, its background alignment counts as 0.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Literal

import numpy as np

from compresslm.compressors import canonical_spec, get_compressor
from compresslm.errors import ConfigError
from compresslm.select.base import PoolFactory, SelectionMethod
from compresslm.select.dictionary import (
    DICTIONARY_PIECES,
    MIN_EXAMPLES,
    WEIGHT_NEGATIVES,
    WEIGHT_POSITIVES,
    DictionaryContrast,
    digest,
    fit_weight,
    window,
)
from compresslm.select.parallel import ordered_map, resolve_workers, tune_malloc

#: The compressor used when none is named. The paper's is gzip:9 (``--compressor gzip:9``); LZ4
#: block is an order of magnitude faster per pair and, without gzip's header and Huffman tables,
#: favours short documents far less (docs/benchmarks.md, "Selection against the reference packages").
DEFAULT_COMPRESSOR = "lz4"
#: The paper's setting: scores match the reference package, so every target is always scored.
PAPER_COMPRESSOR = "gzip:9"
#: Targets (target pieces) the default mode scores against when there are more (a seeded sample).
DEFAULT_MAX_TARGETS = 64
#: Background pieces for contrast unless set (see the module docstring for the measurements).
DEFAULT_CONTRAST_SIZE = 64
#: Length-robust default: documents are scored by pieces of about this many bytes (see "Length" in
#: the module docstring for why 512); ``0`` scores whole documents, as the paper does.
DEFAULT_CHUNK = 512
#: At most this many pieces of a long document are scored (evenly spaced over it).
DEFAULT_MAX_CHUNKS = 4

#: Pairs :func:`alignment` (and ``compresslm align``) samples by default on large datasets.
DEFAULT_ALIGN_PAIRS = 200_000

#: Work per task, in (source, reference) pairs: ~0.1 s (LZ4) to ~1 s (gzip-9) per task, far above
#: the ~0.1 ms of inter-process overhead, yet small enough to balance the load across workers.
PAIRS_PER_TASK = 16384
#: Below this many pairs an automatic worker count runs in-process (a pool costs ~0.1-0.5 s to start).
IN_PROCESS_PAIRS = 50_000

Text = str | bytes
Progress = bool | Callable[[int], None]


def _as_bytes(text: Text) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8")


def split_pieces(data: bytes, chunk: int, max_pieces: int | None = None) -> list[bytes]:
    """``data`` cut into ``n = max(1, round(len / chunk))`` consecutive pieces of near-equal length
    (so every piece has between 0.75 and 1.5 ``chunk`` bytes once ``data`` has 0.75 ``chunk`` or
    more); with more than ``max_pieces``, that many of them, evenly spaced from the first to the
    last. ``chunk <= 0`` returns ``[data]``. Integer arithmetic only: the same pieces everywhere."""
    if chunk <= 0:
        return [data]
    n = max(1, (len(data) + chunk // 2) // chunk)
    bounds = [i * len(data) // n for i in range(n + 1)]
    keep: Iterable[int] = range(n)
    if max_pieces is not None and n > max_pieces:
        keep = [0] if max_pieces == 1 else [j * (n - 1) // (max_pieces - 1) for j in range(max_pieces)]
    return [data[bounds[i] : bounds[i + 1]] for i in keep]


#: Window and stride of the exact pre-check for background pieces inside a document (PairScorer).
_GRAM = 32
_STRIDE = 32


class PairScorer:
    """Scores sources against fixed references: ``targets`` then, optionally, ``contrast`` texts.

    Holds the compressor, the reference bytes and their sizes; stateless between calls, so every
    worker (or the parent, for ``workers=1``) computes bit-identical scores. With ``chunk > 0`` a
    source's similarity to each reference is the mean over its pieces (:func:`split_pieces`).
    ``dictionary``: a :class:`~compresslm.select.dictionary.DictionaryContrast` whose weighted
    score (over the same pieces) is added to every score; ignored when its weight is 0.
    """

    def __init__(
        self,
        compressor: str,
        targets: Sequence[bytes],
        contrast: Sequence[bytes] = (),
        sizes: np.ndarray | None = None,
        chunk: int = 0,
        max_chunks: int | None = None,
        dictionary: DictionaryContrast | None = None,
    ) -> None:
        self.compressor = get_compressor(compressor)
        self.dictionary = dictionary if dictionary is not None and dictionary.weight else None
        self.refs = list(targets) + list(contrast)
        self.n_targets = len(targets)
        self.contrast = list(contrast)
        self.contrast_set = frozenset(self.contrast)
        # Background pieces shortest first: only those no longer than a document can be inside it.
        self._by_length = sorted(self.contrast, key=len)
        self._lengths = [len(c) for c in self._by_length]
        # Every _GRAM-byte window of the background pieces of _GRAM + _STRIDE - 1 bytes or more: such
        # a piece inside x covers a window of x starting at a multiple of _STRIDE, so when none of
        # those windows of x is in this set, none of these pieces is in x (exact, ~30x fewer searches).
        long = [c for c in self.contrast if len(c) >= _GRAM + _STRIDE - 1] if chunk else []
        self._grams = frozenset(c[i : i + _GRAM] for c in long for i in range(len(c) - _GRAM + 1))
        self._short = [c for c in self._by_length if len(c) < _GRAM + _STRIDE - 1]
        self.chunk = chunk
        self.max_chunks = max_chunks
        if sizes is None:
            sizes = np.fromiter(map(self.compressor.size, self.refs), np.int64, len(self.refs))
        self.sizes = np.asarray(sizes, dtype=np.int64)

    def _similarities(self, x: bytes) -> np.ndarray:
        cx = self.compressor.size(x)
        c12 = self.compressor.concat_sizes(x, self.refs)
        lo = np.minimum(self.sizes, cx)
        hi = np.maximum(self.sizes, cx)
        # Same operations as the reference: (int - int) / int (exact ints, one rounding), then 1 - ncd.
        return 1.0 - (c12 - lo) / hi

    def similarities(self, x: bytes) -> np.ndarray:
        """``1 - NCD(x, ref)`` for every reference, in reference order (float64); with ``chunk``,
        the mean over the pieces of ``x``."""
        if not self.chunk:
            return self._similarities(x)
        pieces = split_pieces(x, self.chunk, self.max_chunks)
        if len(pieces) == 1:
            return self._similarities(x)
        return np.mean(np.stack([self._similarities(p) for p in pieces]), axis=0)

    def _own_background(self, x: bytes) -> list[bool] | None:
        """Mask of the background references that may score ``x``, or None when all may.

        Whole documents: a background document equal to ``x`` is skipped. Pieces: a background
        piece contained in ``x`` (cut from it, or from a copy of it) is skipped.
        """
        if self.chunk:
            n = len(x)
            if not bisect.bisect_right(self._lengths, n):
                return None  # every background piece is longer than x
            windows = map(
                x.__getitem__, map(slice, range(0, n - _GRAM + 1, _STRIDE), range(_GRAM, n + 1, _STRIDE))
            )
            if not any(map(self._grams.__contains__, windows)) and not any(map(x.__contains__, self._short)):
                return None  # the usual case: no background piece can be inside x
            mask = [c not in x for c in self.contrast]
            return None if all(mask) else mask
        if x in self.contrast_set:
            return [c != x for c in self.contrast]
        return None

    def _combine(self, x: bytes, sims: np.ndarray) -> float:
        """The score of ``x`` from its similarities to every reference (targets, then background)."""
        n = self.n_targets
        value = math.fsum(sims[:n].tolist()) / n
        if self.contrast:
            background = sims[n:]
            mask = self._own_background(x)
            if mask is not None:
                background = background[mask]
            if len(background):
                value -= math.fsum(background.tolist()) / len(background)
        return value

    def _with_dictionary(self, value: float, x: bytes, pieces: Sequence[bytes]) -> float:
        """``value`` plus the weighted dictionary score of ``x`` (scored by ``pieces``), if any."""
        if self.dictionary is None:
            return value
        return value + self.dictionary.weight * self.dictionary.document_score(x, pieces)

    def score(self, x: bytes) -> float:
        value = self._combine(x, self.similarities(x))
        if self.dictionary is None:
            return value
        return self._with_dictionary(value, x, split_pieces(x, self.chunk, self.max_chunks))

    def score_batch(self, docs: Sequence[Text]) -> np.ndarray:
        """The scores of ``docs``: :meth:`score` of each, bit for bit, computed for the whole batch
        at once -- every (piece, reference) size in one array, the NCD arithmetic as one array
        operation (the same element-wise operations as :meth:`similarities`), a document's pieces
        averaged with the same ``np.mean`` -- instead of a dozen small numpy calls per piece."""
        data = [_as_bytes(d) for d in docs]
        if not data:
            return np.empty(0, dtype=np.float64)
        if self.chunk:
            split = [split_pieces(x, self.chunk, self.max_chunks) for x in data]
            counts = [len(p) for p in split]
            pieces = [p for ps in split for p in ps]
        else:
            counts = [1] * len(data)
            pieces = data
        comp = self.compressor
        n_refs = len(self.refs)
        cx = np.fromiter(map(comp.size, pieces), np.int64, len(pieces))
        c12 = np.concatenate([comp.concat_sizes(p, self.refs) for p in pieces]).reshape(len(pieces), n_refs)
        lo = np.minimum(self.sizes, cx[:, None])
        hi = np.maximum(self.sizes, cx[:, None])
        sims = 1.0 - (c12 - lo) / hi
        out = np.empty(len(data), dtype=np.float64)
        row = 0
        for i, (x, k) in enumerate(zip(data, counts, strict=True)):
            doc_sims = sims[row] if k == 1 else np.mean(sims[row : row + k], axis=0)
            out[i] = self._with_dictionary(self._combine(x, doc_sims), x, pieces[row : row + k])
            row += k
        return out


# --- worker side: one PairScorer per process, built once by the pool initializer -------------------

_WORKER_SCORER: PairScorer | None = None


def _init_worker(
    compressor: str,
    targets: list[bytes],
    contrast: list[bytes],
    sizes: np.ndarray,
    chunk: int = 0,
    max_chunks: int | None = None,
    dictionary: DictionaryContrast | None = None,
) -> None:
    global _WORKER_SCORER
    _WORKER_SCORER = PairScorer(compressor, targets, contrast, sizes, chunk, max_chunks, dictionary)


def _score_task(docs: list[Text]) -> np.ndarray:
    assert _WORKER_SCORER is not None, "worker used before its initializer ran"
    return _WORKER_SCORER.score_batch(docs)


# --- the streaming engine --------------------------------------------------------------------------


def default_batch_size(n_refs: int) -> int:
    """Sources per task so that one task is about :data:`PAIRS_PER_TASK` pairs (1..256)."""
    return max(1, min(256, PAIRS_PER_TASK // max(1, n_refs)))


def iter_scores(
    batches: Iterable[Sequence[Text]],
    targets: Sequence[Text],
    *,
    compressor: str = DEFAULT_COMPRESSOR,
    contrast: Sequence[Text] | None = None,
    workers: int | None = 1,
    start_method: str | None = None,
    chunk: int = 0,
    max_chunks: int | None = None,
    dictionary: DictionaryContrast | None = None,
) -> Iterator[np.ndarray]:
    """Score each batch of sources; yields one float64 array per batch, in input order.

    The caller chooses the batching (one batch = one task for a worker). ``workers`` as in
    :func:`zipfit_scores`, except that ``None`` always means every core here. ``chunk``,
    ``max_chunks`` and ``dictionary`` as in :class:`PairScorer` (0: whole documents).
    """
    if not targets:
        raise ConfigError("ZIP-FIT needs at least one target document (the target set is empty)")
    spec = canonical_spec(compressor)
    target_bytes = [_as_bytes(t) for t in targets]
    contrast_bytes = [_as_bytes(t) for t in contrast or ()]
    scorer = PairScorer(spec, target_bytes, contrast_bytes, None, chunk, max_chunks, dictionary)  # sizes once
    n_workers = resolve_workers(workers)
    dedup = _Dedup(DEDUP_CHARS)
    if n_workers == 1:
        tune_malloc()  # the parent scores: same glibc trap as in a worker (idempotent, bounded retention)
        raw: Iterator[np.ndarray] = map(scorer.score_batch, dedup.unique(batches))
    else:
        raw = ordered_map(
            _score_task,
            dedup.unique(batches),
            workers=n_workers,
            initializer=_init_worker,
            initargs=(spec, target_bytes, contrast_bytes, scorer.sizes, chunk, max_chunks, dictionary),
            start_method=start_method,
        )
    for scores in raw:
        yield dedup.expand(scores)


#: Texts (in characters, all together) the scoring pass remembers to score each distinct text once.
#: A score depends on the text alone, so a repeated document takes the score of its first copy
#: (bit-identical) instead of 128+ compressions; ``builtin:pool`` repeats 37% of its documents.
#: Past this budget new texts are no longer remembered (memory stays bounded in the pool size).
DEDUP_CHARS = 64 << 20


class _Dedup:
    """Sends each distinct text to scoring once and fills in the scores of its repeats.

    :meth:`unique` turns every batch into the batch of its texts not seen before (first copies);
    :meth:`expand` takes the scores of those, in the same batch order, and returns the full batch's.
    Scores come back in submission order, so a repeat's first copy is always scored by then.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.known: dict[Text, float] = {}  # remembered texts -> score (NaN until scored)
        self.plans: deque[tuple[int, list[int], list[Text], list[tuple[int, Text]]]] = deque()

    def unique(self, batches: Iterable[Sequence[Text]]) -> Iterator[list[Text]]:
        known = self.known
        for batch in batches:
            send: list[Text] = []
            positions: list[int] = []
            repeats: list[tuple[int, Text]] = []
            for i, text in enumerate(batch):
                if text in known:
                    repeats.append((i, text))
                    continue
                if self.budget >= len(text):
                    self.budget -= len(text)
                    known[text] = math.nan
                positions.append(i)
                send.append(text)
            self.plans.append((len(batch), positions, send, repeats))
            yield send

    def expand(self, scores: np.ndarray) -> np.ndarray:
        n, positions, sent, repeats = self.plans.popleft()
        if not repeats and len(positions) == n:
            out = scores
        else:
            out = np.empty(n, dtype=np.float64)
            out[positions] = scores
        known = self.known
        for text, value in zip(sent, scores.tolist(), strict=True):
            if text in known:
                known[text] = value
        for i, text in repeats:
            out[i] = known[text]
        return out


def _chunks(items: Iterable[Text], size: int) -> Iterator[list[Text]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _progress_callback(progress: Progress, total: int | None) -> tuple[Callable[[int], None] | None, object]:
    if callable(progress):
        return progress, None
    if not progress:
        return None, None
    from compresslm.progress import progress_bar

    bar = progress_bar(total=total, unit="doc", desc="ZIP-FIT", smoothing=0.05)
    return bar.update, bar


def _list_pool(docs: Sequence[Text], batch: int = 4096) -> PoolFactory:
    """An in-memory pool (see :mod:`compresslm.select.base`) over ``docs``, indices 0..N-1."""

    def pool() -> Iterator[list[tuple[int, Text]]]:
        for start in range(0, len(docs), batch):
            yield [(i, docs[i]) for i in range(start, min(start + batch, len(docs)))]

    return pool  # type: ignore[return-value]


def zipfit_scores(
    sources: Iterable[Text],
    targets: Sequence[Text],
    *,
    compressor: str = DEFAULT_COMPRESSOR,
    contrast: Literal["none", "background"] | Sequence[Text] | None = None,
    contrast_size: int | None = None,
    max_targets: int | None = None,
    chunk: int | None = None,
    max_chunks: int | None = None,
    dictionary: bool | None = None,
    seed: int = 0,
    workers: int | None = None,
    batch_size: int | None = None,
    progress: Progress = False,
    start_method: str | None = None,
) -> np.ndarray:
    """ZIP-FIT scores of every source against ``targets`` (float64, aligned with ``sources``).

    The defaults are the command line's (``compresslm select``), so ``select_top_k`` of these
    scores is what the CLI selects from the same documents: the default mode (LZ4, pieces of
    :data:`DEFAULT_CHUNK` bytes, at most :data:`DEFAULT_MAX_TARGETS` sampled target pieces,
    background contrast against :data:`DEFAULT_CONTRAST_SIZE` pieces sampled from ``sources`` with
    ``seed``, plus the fitted dictionary contrast), and with ``compressor="gzip:9"`` the paper exactly. ``contrast``: ``"none"``,
    ``"background"`` (sampled from ``sources``), ``None`` (the mode's default) or a list of
    background texts used as given. Other settings as in :class:`ZipFit`.

    ``workers``: processes (``None`` = every core this process may use; small jobs run
    in-process; 1 = in-process, no pool). ``batch_size``: sources per task (default: about
    :data:`PAIRS_PER_TASK` pairs). ``progress``: True for a tqdm bar, or a callable that receives
    the number of documents finished after each batch. Scores do not depend on ``workers``,
    ``batch_size`` or ``start_method`` (bit-identical).
    """
    if not targets:
        raise ConfigError("ZIP-FIT needs at least one target document (the target set is empty)")
    docs = sources if isinstance(sources, Sequence) else list(sources)
    explicit = None if contrast is None or isinstance(contrast, str) else list(contrast)
    n_refs = min(len(targets), max_targets or len(targets)) + (
        len(explicit) if explicit is not None else (contrast_size or DEFAULT_CONTRAST_SIZE)
    )
    if workers is None and len(docs) * n_refs <= IN_PROCESS_PAIRS:
        workers = 1
    method = ZipFit(
        compressor,
        workers=workers,
        contrast=None if explicit is not None else contrast,  # type: ignore[arg-type]
        contrast_size=contrast_size,
        seed=seed,
        batch_size=batch_size,
        start_method=start_method,
        max_targets=max_targets,
        chunk=chunk,
        max_chunks=max_chunks,
        background=explicit,
        dictionary=dictionary,
    )
    pool = _list_pool(docs)
    method.prepare(targets, pool)  # type: ignore[arg-type]
    callback, bar = _progress_callback(progress, len(docs))
    parts: list[np.ndarray] = []
    try:
        for _, scores in method.score_batches(pool):
            parts.append(scores)
            if callback is not None:
                callback(len(scores))
    finally:
        if bar is not None:
            bar.close()  # type: ignore[attr-defined]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)


def alignment(
    a: Sequence[Text],
    b: Sequence[Text],
    *,
    compressor: str = PAPER_COMPRESSOR,
    max_pairs: int | None = DEFAULT_ALIGN_PAIRS,
    seed: int = 0,
    workers: int | None = None,
) -> float:
    """Dataset-level alignment of ``a`` with ``b``: the mean of ``1 - NCD(x, y)`` over pairs.

    All ``len(a) * len(b)`` pairs (x from ``a`` first) when there are at most ``max_pairs`` (or
    ``max_pairs=None``), else a uniform sample of that many distinct pairs drawn with ``seed`` (the
    paper's "alignment predicts loss" analysis on large sets). Defaults are ``compresslm align``'s:
    the paper's compressor and :data:`DEFAULT_ALIGN_PAIRS` pairs.
    """
    if not a or not b:
        raise ConfigError(f"alignment needs two non-empty datasets (got {len(a)} and {len(b)} documents)")
    if max_pairs is not None and max_pairs <= 0:
        raise ConfigError(f"max_pairs must be positive, got {max_pairs}")
    n_pairs = len(a) * len(b)
    if max_pairs is None or max_pairs >= n_pairs:
        per_source = zipfit_scores(
            a, b, compressor=compressor, workers=workers, contrast="none", max_targets=0, chunk=0
        )
        return math.fsum(per_source) / len(a)
    rng = np.random.default_rng(seed)
    pairs = np.sort(rng.choice(n_pairs, size=max_pairs, replace=False))
    sources, refs = np.divmod(pairs, len(b))
    comp = get_compressor(compressor)
    b_bytes = [_as_bytes(y) for y in b]
    b_sizes = np.fromiter(map(comp.size, b_bytes), np.int64, len(b_bytes))
    sims: list[np.ndarray] = []
    starts = np.flatnonzero(np.r_[True, sources[1:] != sources[:-1]])
    for start, stop in zip(starts, [*starts[1:], len(sources)], strict=True):
        x = _as_bytes(a[int(sources[start])])
        js = refs[start:stop]
        cx = comp.size(x)
        ct = b_sizes[js]
        c12 = comp.concat_sizes(x, [b_bytes[j] for j in js])
        sims.append(1.0 - (c12 - np.minimum(ct, cx)) / np.maximum(ct, cx))
    return math.fsum(np.concatenate(sims)) / max_pairs


def sample_targets(targets: Sequence[bytes], max_targets: int | None, seed: int) -> list[bytes]:
    """At most ``max_targets`` of ``targets``: a seeded uniform sample, kept in target order.

    ``None`` (or a cap at least the number of targets) returns every target. The seed is derived
    from ``seed`` so the sample is independent of the background-contrast sample drawn with it.
    """
    if max_targets is None or len(targets) <= max_targets:
        return list(targets)
    keep = sorted(random.Random(f"zipfit-targets:{seed}").sample(range(len(targets)), max_targets))
    return [targets[i] for i in keep]


def reservoir_sample(pool: PoolFactory, k: int, seed: int) -> list[str]:
    """A uniform sample of ``k`` texts from one streaming pass over ``pool()`` (Algorithm R).

    Deterministic for a given pool order and seed; fewer than ``k`` texts if the pool is smaller.
    """
    return _sample_pool(pool, k, 0, 0, seed)[0]


def sample_window(text: Text, chunk: int, seed: int) -> tuple[bytes, bytes]:
    """What the dictionary contrast keeps of a sampled pool document: its :func:`digest` and one
    ``chunk``-byte window chosen from its own bytes and ``seed`` (so any engine cuts the same)."""
    data = _as_bytes(text)
    return digest(data), window(data, chunk, seed)


def _sample_pool(
    pool: PoolFactory, k: int, extra: int, chunk: int, seed: int
) -> tuple[list[str], list[tuple[bytes, bytes]]]:
    """:func:`reservoir_sample`'s ``k`` texts (Algorithm R) and, in the same pass, an independent
    reservoir sample of ``extra`` documents kept as (digest, one ``chunk``-byte window): the
    dictionary contrast's pool windows, kept small however long the documents are."""
    rng = random.Random(seed)
    rng_extra = random.Random(f"zipfit-dictionary-sample:{seed}")
    sample: list[str] = []
    windows: list[tuple[bytes, bytes]] = []
    seen = 0
    for batch in pool():
        for _, text in batch:
            if seen < k:
                sample.append(text)
            else:
                j = rng.randrange(seen + 1)
                if j < k:
                    sample[j] = text
            if extra:
                j = seen if seen < extra else rng_extra.randrange(seen + 1)
                if j < extra:
                    item = sample_window(text, chunk, seed)
                    if j == len(windows):
                        windows.append(item)
                    else:
                        windows[j] = item
            seen += 1
    return sample, windows


def background_pieces(docs: Sequence[bytes], chunk: int, seed: int) -> list[bytes]:
    """One seeded random window of ``chunk`` bytes from each document (the whole of a shorter one):
    a background of the same size as the pieces it is compared with."""
    rng = random.Random(f"zipfit-background-pieces:{seed}")
    out = []
    for d in docs:
        start = rng.randrange(len(d) - chunk + 1) if len(d) > chunk else 0
        out.append(d[start : start + chunk])
    return out


class ZipFit(SelectionMethod):
    """ZIP-FIT as a selection method: one streaming scoring pass (two with background contrast).

    ``max_targets``: score against at most this many targets (target pieces when ``chunk`` is
    set), a seeded sample (``None``: the default, :data:`DEFAULT_MAX_TARGETS`, except with the
    paper's ``gzip:9`` where every target is scored; ``0``: every target). ``contrast``:
    ``"background"`` first draws a seeded reservoir sample of ``contrast_size`` (default
    :data:`DEFAULT_CONTRAST_SIZE`) documents from the pool (one random ``chunk``-byte window of
    each when ``chunk`` is set) and subtracts each document's alignment to that sample; ``None``
    (the default) means ``"background"``, except ``"none"`` with the paper's ``gzip:9``.
    ``background``: explicit background texts, used as given instead of a sample. ``chunk``: score
    documents by pieces of about this many bytes, at most ``max_chunks`` of them (``None``:
    :data:`DEFAULT_CHUNK` and :data:`DEFAULT_MAX_CHUNKS`, except whole documents with ``gzip:9``;
    ``0``: whole documents / every piece). ``batch_size`` is sources per worker task (default:
    about :data:`PAIRS_PER_TASK` pairs); pool batches are re-chunked to it, and every yielded
    ``(indices, scores)`` pair carries its own indices, in pool order. ``dictionary``: fit the
    dictionary contrast and add it where it helps (:meth:`_fit_dictionary`; ``None``: wherever it
    can run -- pieces and a background sampled from the pool, so never with ``gzip:9``).
    """

    name = "zipfit"

    def __init__(
        self,
        compressor: str = DEFAULT_COMPRESSOR,
        workers: int | None = None,
        contrast: Literal["none", "background"] | None = None,
        contrast_size: int | None = None,
        seed: int = 0,
        batch_size: int | None = None,
        start_method: str | None = None,
        max_targets: int | None = None,
        chunk: int | None = None,
        max_chunks: int | None = None,
        background: Sequence[Text] | None = None,
        dictionary: bool | None = None,
    ) -> None:
        self.compressor = canonical_spec(compressor)  # ConfigError now, not after a pass over the pool
        if max_targets is not None and max_targets < 0:
            raise ConfigError(f"--max-targets must be a positive number or 'all', got {max_targets}")
        paper = self.compressor == canonical_spec(PAPER_COMPRESSOR)
        if max_targets is None:
            max_targets = 0 if paper else DEFAULT_MAX_TARGETS
        self.max_targets: int | None = max_targets or None  # None: every target
        if background is not None:
            if contrast == "none":
                raise ConfigError("background texts given with contrast 'none'")
            contrast = "background"
        if contrast is None:
            contrast = "none" if paper else "background"
        if contrast not in ("none", "background"):
            raise ConfigError(f"unknown contrast '{contrast}' (choose from: none, background)")
        if contrast_size is not None and contrast_size <= 0:
            raise ConfigError(f"--contrast-size must be positive, got {contrast_size}")
        if batch_size is not None and batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        if chunk is not None and chunk < 0:
            raise ConfigError(f"--chunk-bytes must be positive, or 0 for whole documents, got {chunk}")
        if max_chunks is not None and max_chunks < 0:
            raise ConfigError(f"--max-chunks must be positive, or 0 for every piece, got {max_chunks}")
        self.chunk = (0 if paper else DEFAULT_CHUNK) if chunk is None else chunk
        self.max_chunks: int | None = (DEFAULT_MAX_CHUNKS if max_chunks is None else max_chunks) or None
        self.workers = resolve_workers(workers)
        self.contrast = contrast
        self.contrast_size = contrast_size
        self.seed = seed
        self.batch_size = batch_size
        self.start_method = start_method
        self._explicit_background = None if background is None else [_as_bytes(t) for t in background]
        if dictionary and (not self.chunk or contrast != "background" or background is not None):
            raise ConfigError(
                "the dictionary contrast needs pieces (--chunk-bytes > 0) and a background sampled "
                "from the pool (contrast 'background')"
            )
        #: Whether to fit the dictionary contrast (the default wherever it can run; never with gzip:9).
        self.dictionary = (
            bool(self.chunk) and contrast == "background" and background is None and not paper
            if dictionary is None
            else dictionary
        )
        self._dictionary: DictionaryContrast | None = None
        self._targets: list[bytes] | None = None
        self.n_targets_given: int | None = None
        self._background: list[bytes] = []

    def pool_sample_size(self) -> int:
        """Pool documents :meth:`prepare` samples: the background, and with the dictionary contrast
        its labelled windows and two background dictionaries' documents (the staged engine's plan
        map draws this many)."""
        size = self.contrast_size or DEFAULT_CONTRAST_SIZE
        return size + (WEIGHT_NEGATIVES + 2 * DICTIONARY_PIECES if self.dictionary else 0)

    def prepare(self, targets: Sequence[str], pool: PoolFactory) -> None:
        if not targets:
            raise ConfigError("ZIP-FIT needs at least one target document (the target set is empty)")
        sample: list[str] = []
        windows: list[tuple[bytes, bytes]] = []
        if self._explicit_background is None and self.contrast == "background":
            size = self.contrast_size or DEFAULT_CONTRAST_SIZE
            extra = WEIGHT_NEGATIVES + 2 * DICTIONARY_PIECES if self.dictionary else 0
            sample, windows = _sample_pool(pool, size, extra, self.chunk, self.seed)
        self.prepare_sampled(targets, sample, windows)

    def prepare_sampled(
        self, targets: Sequence[str], background: Sequence[Text], windows: Sequence[tuple[bytes, bytes]]
    ) -> None:
        """:meth:`prepare` from pool samples drawn elsewhere (the staged engine's plan map):
        ``background``, the background documents (used as given); ``windows``, the
        :func:`sample_window` of each document sampled for the dictionary contrast (ignored
        without it; documents of the background are left out here)."""
        if not targets:
            raise ConfigError("ZIP-FIT needs at least one target document (the target set is empty)")
        self.n_targets_given = len(targets)
        target_bytes = [_as_bytes(t) for t in targets]
        if self.chunk:
            target_bytes = [p for t in target_bytes for p in split_pieces(t, self.chunk)]
        self._targets = sample_targets(target_bytes, self.max_targets, self.seed)
        self._background = []
        self._dictionary = None
        if self._explicit_background is not None:
            self._background = list(self._explicit_background)
        elif self.contrast == "background":
            docs = [_as_bytes(t) for t in background]
            self._background = background_pieces(docs, self.chunk, self.seed) if self.chunk else docs
            if self.dictionary:
                own = {digest(d) for d in docs}
                distinct = {h: w for h, w in windows if h not in own}  # a repeated document once
                self._dictionary = self._fit_dictionary(target_bytes, list(distinct.items()))

    def _fit_dictionary(
        self, pieces: list[bytes], windows: list[tuple[bytes, bytes]]
    ) -> DictionaryContrast | None:
        """The dictionary contrast and its weight (:mod:`compresslm.select.dictionary`), or None
        when there are too few held-out target pieces or pool windows to fit the weight, or it
        comes out 0. ``pieces``: every target piece; ``windows``: (document digest, window) of
        pool documents outside the background sample, in sample order."""
        assert self._targets is not None
        rng = random.Random(f"zipfit-dictionary:{self.seed}")
        refs = set(self._targets)
        free = [p for p in dict.fromkeys(pieces) if p not in refs]  # distinct, not references
        positives = rng.sample(free, min(WEIGHT_POSITIVES, len(free)))
        rng.shuffle(windows)
        n_neg = min(WEIGHT_NEGATIVES, len(windows) // 4)
        negatives, rest = windows[:n_neg], windows[n_neg:]
        held = set(positives)
        in_dictionary = [p for p in pieces if p not in held]
        n = min(DICTIONARY_PIECES, len(in_dictionary), len(rest) // 2)
        if len(positives) < MIN_EXAMPLES or n_neg < MIN_EXAMPLES or n < MIN_EXAMPLES:
            return None
        target = sorted(rng.sample(range(len(in_dictionary)), n))
        a, b = rest[:n], rest[n : 2 * n]
        dictionary = DictionaryContrast(
            [in_dictionary[i] for i in target],
            [w for _, w in a],
            [w for _, w in b],
            frozenset(h for h, _ in a),
        )
        scorer = PairScorer(
            self.compressor, self._targets, self._background, None, self.chunk, self.max_chunks
        )
        pairwise_pos = np.array([scorer.score(p) for p in positives])
        pairwise_neg = np.array([scorer.score(w) for _, w in negatives])
        dict_pos = np.array([dictionary.piece_scores([p], False)[0] for p in positives])
        dict_neg = np.array(
            [dictionary.piece_scores([w], h in dictionary.members_a)[0] for h, w in negatives]
        )
        dictionary.weight = fit_weight(pairwise_pos, dict_pos, pairwise_neg, dict_neg)
        return dictionary if dictionary.weight else None

    def score_batches(self, pool: PoolFactory) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self._targets is None:
            raise RuntimeError("ZipFit.prepare(targets, pool) must run before score_batches")
        # Sized for one piece per document: repeats are not sent and most documents are short, so
        # sizing for max_chunks pieces made tasks of ~5 ms on builtin:pool, where the parent's
        # per-task work and scheduling cost 10-30 % of the wall time (128 documents: 3.3-6.9 s
        # against 4.5-7.8 s with 32, side by side); a task of long documents is still ~0.1 s.
        size = self.batch_size or default_batch_size(len(self._targets) + len(self._background))
        index_queue: deque[np.ndarray] = deque()

        def texts() -> Iterator[list[str]]:
            # Re-chunk pool batches into tasks of `size`; indices wait in a queue (results are in order).
            idx: list[int] = []
            docs: list[str] = []
            for batch in pool():
                for i, text in batch:
                    idx.append(i)
                    docs.append(text)
                    if len(docs) == size:
                        index_queue.append(np.asarray(idx, dtype=np.int64))
                        yield docs
                        idx, docs = [], []
            if docs:
                index_queue.append(np.asarray(idx, dtype=np.int64))
                yield docs

        for scores in iter_scores(
            texts(),
            self._targets,
            compressor=self.compressor,
            contrast=self._background or None,
            workers=self.workers,
            start_method=self.start_method,
            chunk=self.chunk,
            max_chunks=self.max_chunks,
            dictionary=self._dictionary,
        ):
            yield index_queue.popleft(), scores

    def describe(self) -> dict[str, object]:
        comp = get_compressor(self.compressor).describe()
        return {
            "method": self.name,
            "compressor": self.compressor,
            "library": comp["library"],
            "library_version": comp["library_version"],
            "zlib_runtime_version": comp["zlib_runtime_version"],
            "contrast": self.contrast,
            "contrast_size": len(self._background) if self.contrast == "background" else None,
            "chunk_bytes": self.chunk,
            "max_chunks": self.max_chunks if self.chunk else None,
            "seed": self.seed,
            "workers": self.workers,
            "batch_size": self.batch_size,
            "targets": self.n_targets_given,
            "targets_scored": len(self._targets) if self._targets is not None else None,
            "max_targets": self.max_targets,
            "dictionary": self._dictionary.describe() if self._dictionary is not None else None,
        }
