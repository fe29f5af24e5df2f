"""Compel: keep documents whose LZ4 compression ratio lies in a band; no target at all.

The ZIP-FIT group's follow-up baseline: text that LZ4 compresses very well is repetitive (tables,
generated lists, boilerplate), text it barely compresses is noise (base64, minified data, random
identifiers), and the band between holds "natural" text and code. The score needs no target, so it
is the target-free baseline beside random and D4: if a targeted method cannot beat it, its targeting
adds nothing.

Definitions used here (the band's numbers come from the issue that asked for this baseline):

* ratio(x) = C(x) / |x|: LZ4 block bytes (``lz4:0``, the compressor ZIP-FIT's default uses; no
  frame header, so short documents are not inflated by container bytes) over UTF-8 bytes;
* documents with ``low <= ratio <= high`` (default [0.65, 0.80]) are kept; a selection of k (or a
  budget) takes a seeded uniform sample of the kept ones: their score is a Uniform[0, 1) draw,
  drawn per document in pool order as :class:`~compresslm.select.random_select.RandomSelection`
  does, so it does not depend on batching;
* documents outside the band score minus their distance to the band (always below every kept
  document), so if k exceeds the kept documents the nearest ones fill the rest, nearest first.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from compresslm.compressors import get_compressor
from compresslm.errors import ConfigError
from compresslm.select.base import PoolFactory, SelectionMethod

#: The band of LZ4 compression ratios (compressed / original bytes) Compel keeps.
DEFAULT_BAND = (0.65, 0.80)
#: The compressor whose ratio is measured: LZ4 block, fast mode.
COMPEL_COMPRESSOR = "lz4:0"


def parse_band(text: str) -> tuple[float, float]:
    """``"0.65,0.80"`` -> ``(0.65, 0.80)``; a band must satisfy 0 <= low <= high."""
    parts = text.replace(":", ",").split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--compel-band: expected LOW,HIGH (e.g. 0.65,0.80), got {text!r}") from None
    return check_band((low, high))


def check_band(band: tuple[float, float]) -> tuple[float, float]:
    low, high = (float(b) for b in band)
    if not (0.0 <= low <= high) or not np.isfinite(high):
        raise ConfigError(f"compel band must satisfy 0 <= low <= high, got [{low}, {high}]")
    return low, high


def compression_ratios(texts: list[str], compressor: str = COMPEL_COMPRESSOR) -> np.ndarray:
    """C(x) / |x| per text (float64); an empty text has ratio 0."""
    comp = get_compressor(compressor)
    out = np.empty(len(texts), dtype=np.float64)
    for i, t in enumerate(texts):
        data = t.encode("utf-8")
        out[i] = comp.size(data) / len(data) if data else 0.0
    return out


class Compel(SelectionMethod):
    """Target-free selection by compression-ratio band; see the module docstring."""

    name = "compel"

    def __init__(self, band: tuple[float, float] = DEFAULT_BAND, *, seed: int = 0) -> None:
        self.band = check_band(band)
        self.seed = seed
        self.kept: int | None = None

    def score_batches(self, pool: PoolFactory) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        low, high = self.band
        rng = np.random.default_rng(self.seed)  # fresh per pass: every pass yields the same scores
        self.kept = 0
        for batch in pool():
            indices = np.fromiter((i for i, _ in batch), dtype=np.int64, count=len(batch))
            ratios = compression_ratios([t for _, t in batch])
            draws = rng.random(len(batch))
            inside = (ratios >= low) & (ratios <= high)
            distance = np.where(ratios < low, low - ratios, ratios - high)
            self.kept += int(inside.sum())
            yield indices, np.where(inside, draws, -distance)

    def describe(self) -> dict[str, object]:
        return {
            "method": self.name,
            "compressor": COMPEL_COMPRESSOR,
            "band": list(self.band),
            "seed": self.seed,
            "in_band": self.kept,
        }
