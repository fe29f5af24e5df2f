"""Parity with the reference ``zip-fit`` package (ZIPFIT, gzip level 9) on real documents.

The corpus is built from files every Python installation has: chunks of standard-library modules
(code) and paragraphs of ``pydoc_data.topics`` (English prose), so the test needs no network and no
other part of compresslm.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from compresslm.select.topk import select_top_k
from compresslm.select.zipfit import zipfit_scores


def stdlib_corpus(n_code: int, n_prose: int) -> list[tuple[str, str]]:
    """Deterministic mix of (text, "code" | "prose"): distinct texts of 200-1500 characters."""
    code: list[str] = []
    for path in sorted(Path(os.__file__).parent.glob("*.py")):
        blocks = re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace"))
        chunk = ""
        for block in blocks:
            chunk = f"{chunk}\n\n{block}" if chunk else block
            if len(chunk) >= 400:
                code.append(chunk[:1500])
                chunk = ""
        if len(code) >= 4 * n_code:
            break
    from pydoc_data.topics import topics

    prose: list[str] = []
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            if len(para) >= 200:
                prose.append(para[:1500])
    docs = [(d, "code") for d in code[::4][:n_code]] + [(d, "prose") for d in prose[::2][:n_prose]]
    out, seen = [], set()
    for text, label in docs:  # distinct texts: the reference reports texts, not indices
        if text not in seen:
            seen.add(text)
            out.append((text, label))
    return out


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str], list[str]]:
    docs = stdlib_corpus(180, 150)
    targets = [text for text, _ in docs[:150:5]]  # 30 code chunks as the target set
    rest = [d for i, d in enumerate(docs) if not (i < 150 and i % 5 == 0)]
    return [text for text, _ in rest], targets, [label for _, label in rest]


def reference_scores(sources: list[str], targets: list[str]) -> tuple[np.ndarray, list[str]]:
    zip_fit = pytest.importorskip("zip_fit.zipfit")
    ref = zip_fit.ZIPFIT(
        "unused.jsonl", "unused.jsonl", k=len(sources), compression_algorithm="gzip", compress_level=9
    )
    ranked = ref.rank_sequences_by_alignment(sources, targets)
    position = {text: i for i, text in enumerate(sources)}
    scores = np.full(len(sources), np.nan)
    for text, score in ranked:
        scores[position[text]] = score
    return scores, [text for text, _ in ranked]


def test_gzip9_scores_and_ranking_equal_the_reference(corpus, capsys) -> None:
    sources, targets, labels = corpus
    assert len(sources) >= 250 and len(targets) == 30
    ours = zipfit_scores(sources, targets, compressor="gzip:9", workers=2, batch_size=16)
    ref, ref_order = reference_scores(sources, targets)
    capsys.readouterr()  # the reference prints progress lines
    assert not np.isnan(ref).any()
    assert np.max(np.abs(ours - ref)) < 1e-12
    # Both rank by score, highest first; no two distinct documents tie here, so the orders must agree.
    assert len(set(ours.tolist())) == len(ours)
    ours_order = [sources[i] for i in select_top_k(ours, len(sources))]
    assert ours_order == ref_order
    # A real signal, not a degenerate score: against code targets, code outscores prose on average.
    is_code = np.array([label == "code" for label in labels])
    assert is_code.sum() > 100 and (~is_code).sum() > 100
    assert ours[is_code].mean() > ours[~is_code].mean()
