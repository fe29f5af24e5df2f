"""The dictionary contrast over many sample draws on the real pools: alone, added to the pairwise
score by the default's rule, and by the rules it was chosen over.

    .venv/bin/python benchmarks/zipfit_dictionary.py [--pools doc:0,doc:1,debian:0,debian:1,site:0,stdlib:0,stdlib:1,man:0]
        [--sample-seeds 6] [--level 9] [--cache bench-out/zipfit_variants]

Why: like ``benchmarks/zipfit_variants.py`` (whose cached similarity matrices it reuses for the
pairwise score: build them with that script first), one real run is one draw of the samples, and
precision on the documentation pool moves by 0.1 between draws. Per draw it samples what
:meth:`compresslm.select.zipfit.ZipFit.prepare` samples -- 64 target pieces and 64 background
windows (the references), up to 64 other target pieces (positives) and 128 held-out background
windows (negatives), a target dictionary of up to 2,048 other target pieces and two background
dictionaries of as many windows of other pool documents -- and scores with the library's own
:class:`~compresslm.select.dictionary.DictionaryContrast` and
:func:`~compresslm.select.dictionary.fit_weight`. Rows:

* ``pairwise``: the default's score without the dictionary;
* ``dictionary``: the dictionary score alone;
* ``default``: pairwise + fitted weight x dictionary, kept only where it separates the held-out
  examples better (:func:`fit_weight`: today's default);
* ``no check``: the same weight without that check;
* ``joint fit``: Fisher's discriminant with the 2x2 covariance of the two scores;
* ``weight``: the default's fitted weight (mean, smallest draw).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compresslm.select.dictionary import (  # noqa: E402
    DICTIONARY_PIECES,
    WEIGHT_NEGATIVES,
    WEIGHT_POSITIVES,
    DictionaryContrast,
    fit_weight,
    window,
)
from compresslm.select.zipfit import DEFAULT_CHUNK, DEFAULT_MAX_CHUNKS, background_pieces, split_pieces  # noqa: E402
from real_pools import POOLS, build_pool  # noqa: E402
from zipfit_variants import BACKGROUND, _default, background_rows, build, document_scores  # noqa: E402

ROWS = ("pairwise", "dictionary", "default", "no check", "joint fit", "weight")


def _pairwise(rows: np.ndarray, target_cols: np.ndarray, background_cols: np.ndarray) -> np.ndarray:
    """The default's pairwise score of labelled examples (no own-document exclusion needed)."""
    return rows[:, target_cols].astype(np.float64).mean(1) - rows[:, background_cols].astype(np.float64).mean(
        1
    )


def _joint(pp: np.ndarray, dp: np.ndarray, pn: np.ndarray, dn: np.ndarray) -> np.ndarray:
    pos, neg = np.column_stack([pp, dp]), np.column_stack([pn, dn])
    return np.linalg.solve((np.cov(pos.T) + np.cov(neg.T)) / 2, pos.mean(0) - neg.mean(0))


def draws(name: str, seed: int, n_draws: int, level: int, cache: Path, k: int) -> dict[str, list[float]]:
    m = build(name, seed, cache, 1)
    bg_rows = background_rows(name, seed, cache, 1, m)
    pool = build_pool(POOLS[name], 4900, seed)
    docs = [r["text"].encode("utf-8") for r in pool.records]
    targets = [p for t in pool.targets for p in split_pieces(t.encode("utf-8"), DEFAULT_CHUNK)]
    doc_pieces = [split_pieces(d, DEFAULT_CHUNK, DEFAULT_MAX_CHUNKS) for d in docs]
    windows = background_pieces([docs[i] for i in m.background_doc], DEFAULT_CHUNK, seed)
    assert len(targets) == m.n_targets and sum(map(len, doc_pieces)) == len(m.owner), "stale cache"
    out: dict[str, list[float]] = {r: [] for r in ROWS}

    def precision(piece_scores: np.ndarray) -> float:
        scores = document_scores(m, piece_scores, False)
        return float(m.labels[np.argsort(-scores, kind="stable")[:k]].mean())

    for draw in range(n_draws):
        rng = random.Random(f"zipfit-variants-draw:{draw}")  # the same references as zipfit_variants
        tg = np.sort(np.array(rng.sample(range(m.n_targets), min(64, m.n_targets))))
        bg = np.sort(np.array(rng.sample(range(BACKGROUND), 64)))
        r2 = random.Random(f"zipfit-dictionary-draw:{draw}")
        free = sorted(set(range(m.n_targets)) - set(tg.tolist()))
        pos = sorted(r2.sample(free, min(WEIGHT_POSITIVES, len(free))))
        neg = sorted(r2.sample(sorted(set(range(BACKGROUND)) - set(bg.tolist())), WEIGHT_NEGATIVES))
        in_dict = [i for i in range(m.n_targets) if i not in set(pos)]
        taken = set(m.background_doc[bg].tolist()) | set(m.background_doc[neg].tolist())
        others = [i for i in range(len(docs)) if i not in taken]
        n = min(DICTIONARY_PIECES, len(in_dict), len(others) // 2)
        chosen = r2.sample(others, 2 * n)
        a, b = chosen[:n], chosen[n:]
        dictionary = DictionaryContrast(
            [targets[i] for i in sorted(r2.sample(in_dict, n))],
            [window(docs[i], DEFAULT_CHUNK, draw) for i in a],
            [window(docs[i], DEFAULT_CHUNK, draw) for i in b],
            frozenset(),
            level=level,
        )
        members_a = set(a)
        t0 = time.perf_counter()
        d_pool = np.concatenate(
            [dictionary.piece_scores(ps, i in members_a) for i, ps in enumerate(doc_pieces)]
        )
        d_pos = np.array([dictionary.piece_scores([targets[i]], False)[0] for i in pos])
        d_neg = np.array([dictionary.piece_scores([windows[i]], False)[0] for i in neg])
        seconds = time.perf_counter() - t0

        z_pool = _default(m, tg, bg)
        z_pos = _pairwise(m.target_sims[pos], tg, m.n_targets + bg)
        z_neg = _pairwise(bg_rows[neg], tg, m.n_targets + bg)
        weight = fit_weight(z_pos, d_pos, z_neg, d_neg)
        w_z = (z_pos.mean() - z_neg.mean()) / z_neg.var()
        w_d = (d_pos.mean() - d_neg.mean()) / d_neg.var()
        unchecked = w_d / w_z if w_z > 0 and w_d > 0 else 0.0
        joint = _joint(z_pos, d_pos, z_neg, d_neg)
        out["pairwise"].append(precision(z_pool))
        out["dictionary"].append(precision(d_pool))
        out["default"].append(precision(z_pool + weight * d_pool))
        out["no check"].append(precision(z_pool + unchecked * d_pool))
        out["joint fit"].append(precision(joint[0] * z_pool + joint[1] * d_pool))
        out["weight"].append(weight)
        print(
            f"{name} ({seed}) draw {draw}: weight {weight:.3f}, default {out['default'][-1]:.3f}, "
            f"pairwise {out['pairwise'][-1]:.3f}; dictionary scores {seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pools", default="doc:0,doc:1,debian:0,debian:1,site:0,stdlib:0,stdlib:1,man:0")
    ap.add_argument("--sample-seeds", type=int, default=6)
    ap.add_argument("--level", type=int, default=9, help="zstd level of the dictionaries")
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--cache", default="bench-out/zipfit_variants")
    args = ap.parse_args(argv)
    pools = [p.split(":") for p in args.pools.split(",")]
    results = [draws(n, int(s), args.sample_seeds, args.level, Path(args.cache), args.k) for n, s in pools]
    print(
        f"precision@{args.k}: mean over {args.sample_seeds} sample draws (worst draw); zstd level {args.level}\n"
    )
    print("| score | " + " | ".join(f"{n} ({s})" for n, s in pools) + " |")
    print("|---" * (len(pools) + 1) + "|")
    for row in ROWS:
        cells = [f"{np.mean(r[row]):.3f} ({min(r[row]):.3f})" for r in results]
        print(f"| {row} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
