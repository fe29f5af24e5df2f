"""Dictionary contrast: how much better a piece compresses with the target set than with the pool.

The default ZIP-FIT score compares a piece with 64 sampled target pieces, one pair at a time. When
the target set is large and varied (100 package documentation files: 2,200-3,500 pieces), 64
pieces see 2-3% of it, and on the real documentation pool DSIR -- whose n-gram model is fitted on
every target byte -- was the more precise method with both pool seeds (docs/benchmarks.md).
Comparing with *every* target piece one pair at a time costs 30x the pairs. This module does it
in two compressions per piece instead: zstd with the target pieces as one raw-content dictionary,
and with as many pool windows as a background dictionary,

    dictionary score(x) = (C(x | background dictionary) - C(x | target dictionary)) / |x|

-- the bytes per byte the target set saves over the pool, a cross-entropy difference with zstd as
the model (Moore and Lewis's selection rule, with compression instead of n-gram models).

On its own it is good only where the target set is large: on the documentation pool it selects
0.88-0.89 (mean over sample draws, pool seeds 0 / 1) but on the code pools, whose target is 82
HumanEval problems (96 pieces), 0.33-0.74 (the pairwise score: 0.86-0.98). So :class:`compresslm.select.zipfit.ZipFit`
adds it with a weight fitted on every run (:func:`fit_weight`) from labelled examples that cost a
few hundred compressions: held-out target pieces against held-out pool windows. Where the
dictionary does not separate them better than the pairwise score already does, its weight is
about 0 and the score is the pairwise one.

A pool document whose window is in the background dictionary would compress well against it
(itself) and lose score, so the background is two dictionaries of disjoint document samples, A
and B: documents of A are scored against B, every other document against A.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence

import numpy as np

from compresslm.errors import ConfigError

#: zstd level of both dictionaries. In the simulation (benchmarks/zipfit_dictionary.py) levels 6, 9
#: and 13 were about equally precise added to the pairwise score; alone, level 3 lost 0.05-0.07 on
#: the documentation pool against 9. A piece costs ~30-50 us at 9 (~10 us at 3) per dictionary,
#: against ~300 us for its 128 LZ4 pairs.
DICTIONARY_LEVEL = 9
#: At most this many target pieces (of 512 bytes: about 1 MiB) in the target dictionary, and as
#: many pool windows in each background dictionary (each from its own document).
DICTIONARY_PIECES = 2048
#: Labelled examples for the weight: held-out target pieces (positives) ...
WEIGHT_POSITIVES = 64
#: ... and windows of pool documents that are in no reference (negatives).
WEIGHT_NEGATIVES = 128
#: Fewer labelled examples than this on either side: no dictionary (the weight would be noise).
MIN_EXAMPLES = 16


def digest(data: bytes) -> bytes:
    """Identity of a document's bytes (16-byte BLAKE2b), to route it to the dictionary without it."""
    return hashlib.blake2b(data, digest_size=16).digest()


def window(data: bytes, size: int, seed: int) -> bytes:
    """One random ``size``-byte window of ``data`` (all of a shorter one), chosen from the document's
    own bytes and ``seed`` -- the same window whatever order the pool is read in."""
    if len(data) <= size:
        return data
    rng = random.Random(f"zipfit-dictionary-window:{seed}:{digest(data).hex()}")
    start = rng.randrange(len(data) - size + 1)
    return data[start : start + size]


class DictionaryContrast:
    """Scores pieces against a target dictionary and a background dictionary (zstd, raw content).

    ``background_a`` / ``background_b``: the windows of two disjoint samples of pool documents;
    ``members_a``: the :func:`digest` of each document of sample A (scored against B). ``weight``:
    how much the dictionary score adds to the pairwise score (set by :func:`fit_weight`). Holds
    only bytes, so it pickles small; each process builds its zstd compressors once, on first use.
    """

    def __init__(
        self,
        target: Sequence[bytes],
        background_a: Sequence[bytes],
        background_b: Sequence[bytes],
        members_a: frozenset[bytes],
        level: int = DICTIONARY_LEVEL,
        weight: float = 0.0,
    ) -> None:
        if not target or not background_a or not background_b:
            raise ConfigError("the dictionary contrast needs target and background pieces")
        self.dictionaries = (b"".join(target), b"".join(background_a), b"".join(background_b))
        self.sizes = (len(target), len(background_a), len(background_b))
        self.members_a = members_a
        self.level = level
        self.weight = weight
        self._compressors: list[object] | None = None

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_compressors"] = None  # zstd objects do not pickle; each process builds its own
        return state

    def _build(self) -> list[object]:
        import zstandard

        out = []
        for data in self.dictionaries:
            # The whole dictionary must stay inside the window, or its start could not be matched.
            window_log = max(17, (len(data) + 4096).bit_length())
            params = zstandard.ZstdCompressionParameters.from_level(
                self.level,
                window_log=window_log,
                write_content_size=False,
                write_checksum=False,
                write_dict_id=False,
            )
            d = zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            d.precompute_compress(compression_params=params)
            out.append(zstandard.ZstdCompressor(dict_data=d, compression_params=params))
        return out

    def piece_scores(self, pieces: Sequence[bytes], in_a: bool) -> list[float]:
        """``(C(p | background) - C(p | target)) / |p|`` for each piece of one document; ``in_a``:
        the document is in background sample A (so it is compared with B)."""
        if self._compressors is None:
            self._compressors = self._build()
        target, a, b = self._compressors
        background = b if in_a else a
        return [
            (len(background.compress(p)) - len(target.compress(p))) / max(1, len(p))  # type: ignore[attr-defined]
            for p in pieces
        ]

    def document_score(self, doc: bytes, pieces: Sequence[bytes]) -> float:
        """The mean of :meth:`piece_scores` over the document's pieces (``math.fsum``: exact)."""
        scores = self.piece_scores(pieces, digest(doc) in self.members_a)
        return math.fsum(scores) / len(scores)

    def describe(self) -> dict[str, object]:
        import zstandard

        return {
            "weight": self.weight,
            "level": self.level,
            # Sizes (hence scores) depend on the zstd build, as LZ4's on the LZ4 build.
            "library_version": f"{zstandard.__version__} (libzstd {'.'.join(map(str, zstandard.ZSTD_VERSION))})",
            "target_pieces": self.sizes[0],
            "background_windows": self.sizes[1] + self.sizes[2],
        }


def _separation(pos: np.ndarray, neg: np.ndarray) -> float:
    """How far apart two samples of a score are: mean difference over the pooled standard deviation."""
    spread = math.sqrt((float(np.var(pos)) + float(np.var(neg))) / 2)
    return (float(np.mean(pos)) - float(np.mean(neg))) / spread if spread > 0 else 0.0


def fit_weight(
    pairwise_pos: np.ndarray, dict_pos: np.ndarray, pairwise_neg: np.ndarray, dict_neg: np.ndarray
) -> float:
    """How much of the dictionary score to add to the pairwise score, from held-out target pieces
    (``*_pos``) and held-out pool windows (``*_neg``); 0 for none.

    Each score's weight is its separation over its variance on the pool windows,
    ``(mean_pos - mean_neg) / var_neg`` (a linear discriminant that treats the two scores as
    independent); the result is ``w_dictionary / w_pairwise``, kept only if the weighted sum
    separates the held-out examples better than the pairwise score alone. Why the check: the two
    scores are correlated (both reward the target's words), and where the target set is small
    (82 HumanEval problems) the dictionary adds mostly noise -- in the simulation over the real
    pools (docs/benchmarks.md) adding it cost the Debian-like pool 0.005 without the check and
    nothing with it. Why not the joint fit (Fisher's discriminant with the 2x2 covariance): with
    32-64 positives the correlation is not pinned down, and its weight swung from 0 to 3x between
    sample draws of one pool (documentation pool seed 1: 0.918 against 0.935)."""
    if len(pairwise_pos) < 2 or len(pairwise_neg) < 2:
        return 0.0
    weights = []
    for pos, neg in ((pairwise_pos, pairwise_neg), (dict_pos, dict_neg)):
        var = float(np.var(neg))
        weights.append((float(np.mean(pos)) - float(np.mean(neg))) / var if var > 0 else 0.0)
    w_pairwise, w_dictionary = weights
    if (
        not (math.isfinite(w_pairwise) and math.isfinite(w_dictionary))
        or w_pairwise <= 0
        or w_dictionary <= 0
    ):
        return 0.0
    weight = w_dictionary / w_pairwise
    alone = _separation(pairwise_pos, pairwise_neg)
    combined = _separation(pairwise_pos + weight * dict_pos, pairwise_neg + weight * dict_neg)
    return weight if combined > alone else 0.0
