"""Compel: the target-free LZ4 compression-ratio band baseline."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest

from compresslm.compressors import get_compressor
from compresslm.errors import ConfigError
from compresslm.select.base import Batch, PoolFactory
from compresslm.select.compel import DEFAULT_BAND, Compel, compression_ratios, parse_band
from compresslm.select.methods import make_method
from compresslm.select.pipeline import SelectionSpec, run_selection


def _texts() -> list[str]:
    rng = random.Random(0)
    repetitive = ["abc " * rng.randint(50, 200) for _ in range(10)]  # ratio far below the band
    noise = [
        "".join(
            rng.choice("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/") for _ in range(800)
        )
        for _ in range(10)
    ]
    words = "the of and to in is that for it as with was on be by this are from or at an which"
    words += " selection compression target document pool ratio band random method score"
    vocab = words.split(" ")
    prose = [" ".join(rng.choice(vocab) for _ in range(rng.randint(60, 150))) + "." for _ in range(10)]
    return repetitive + noise + prose


def _pool(texts: list[str], batch_size: int) -> PoolFactory:
    def pool() -> Iterator[Batch]:
        for b in range(0, len(texts), batch_size):
            yield [(i, texts[i]) for i in range(b, min(b + batch_size, len(texts)))]

    return pool


def _scores(method: Compel, pool: PoolFactory) -> np.ndarray:
    return np.concatenate([s for _, s in method.score_batches(pool)])


def test_ratio_is_lz4_block_size_over_bytes() -> None:
    texts = _texts()
    lz4 = get_compressor("lz4:0")
    expected = [lz4.size(t.encode()) / len(t.encode()) for t in texts]
    np.testing.assert_allclose(compression_ratios(texts), expected)


def test_band_members_rank_above_the_rest_nearest_first() -> None:
    texts = _texts()
    ratios = compression_ratios(texts)
    low, high = float(np.quantile(ratios, 0.3)), float(np.quantile(ratios, 0.7))
    scores = _scores(Compel((low, high), seed=3), _pool(texts, 7))
    inside = (ratios >= low) & (ratios <= high)
    assert inside.any() and (~inside).any()
    assert scores[inside].min() >= 0 > scores[~inside].max()
    outside = np.flatnonzero(~inside)
    distance = np.where(ratios < low, low - ratios, ratios - high)[outside]
    assert np.array_equal(np.argsort(-scores[outside], kind="stable"), np.argsort(distance, kind="stable"))


def test_scores_do_not_depend_on_batching_and_seed_changes_the_sample() -> None:
    texts = _texts()
    band = (0.0, 10.0)  # everything inside: the selection is a seeded uniform sample
    a = _scores(Compel(band, seed=1), _pool(texts, 4))
    b = _scores(Compel(band, seed=1), _pool(texts, 30))
    c = _scores(Compel(band, seed=2), _pool(texts, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_default_band_keeps_prose_and_drops_repetition_and_noise() -> None:
    texts = _texts()
    ratios = compression_ratios(texts)
    low, high = DEFAULT_BAND
    assert (ratios[:10] < low).all()  # repetitive
    assert (ratios[10:20] > high).all()  # random base64-like noise


def test_band_parsing_and_errors() -> None:
    assert parse_band("0.6,0.9") == (0.6, 0.9)
    for bad in ("0.9,0.6", "x,y", "0.5", "-1,0.5"):
        with pytest.raises(ConfigError):
            parse_band(bad)
    assert make_method("compel:0.5,0.7").band == (0.5, 0.7)
    assert make_method("compel", band=(0.1, 0.2)).band == (0.1, 0.2)
    assert make_method("compel").band == DEFAULT_BAND


def test_compel_through_the_pipeline(tmp_path) -> None:
    import json

    texts = _texts()
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    ratios = compression_ratios(texts)
    low, high = float(np.quantile(ratios, 0.25)), float(np.quantile(ratios, 0.75))
    inside = {i for i, r in enumerate(ratios) if low <= r <= high}
    result = run_selection(Compel((low, high)), ["unused target"], [str(path)], SelectionSpec(k=len(inside)))
    assert {int(s.id.rsplit(":", 1)[1]) - 1 for s in result.selected} == inside
    assert result.method_info["in_band"] == len(inside)
