"""Linear fit, R² and a permutation p-value: the "alignment predicts loss" analysis.

scipy is not a dependency, so the p-value is a permutation test rather than the t-test the ZIP-FIT
paper reports: the share of relabellings of y whose |r| is at least the observed |r|. It is exact
(all n! orderings) for up to 8 points, the size of that analysis (the paper had 6–7), and a seeded
Monte-Carlo estimate above, so it needs no distributional assumption and is reproducible.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from compresslm.errors import ConfigError

EXACT_PERMUTATION_MAX_N = 8


@dataclass(frozen=True)
class LinearFit:
    """Least-squares line ``y = slope * x + intercept`` with its R² and Pearson r."""

    slope: float
    intercept: float
    r: float
    r_squared: float
    p_value: float  # permutation test of r = 0, two-sided
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "slope": self.slope,
            "intercept": self.intercept,
            "r": self.r,
            "r_squared": self.r_squared,
            "p_value": self.p_value,
            "n": self.n,
        }


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; 0.0 when either variable is constant (no linear relation to find)."""
    xa, ya = _pair(x, y)
    dx, dy = xa - xa.mean(), ya - ya.mean()
    denom = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return 0.0 if denom == 0.0 else float(dx @ dy) / denom


def r_squared(x: Sequence[float], y: Sequence[float]) -> float:
    """Coefficient of determination of the least-squares line (equals r² for a simple regression)."""
    return pearson_r(x, y) ** 2


def permutation_p_value(
    x: Sequence[float], y: Sequence[float], *, samples: int = 20_000, seed: int = 0
) -> float:
    """Two-sided p-value of |r| under random pairing of x and y (see module doc)."""
    xa, ya = _pair(x, y)
    dx, dy = xa - xa.mean(), ya - ya.mean()
    norm = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if norm == 0.0:
        return 1.0  # a constant variable: no pairing is more correlated than any other
    observed = abs(float(dx @ dy)) / norm - 1e-12  # tolerance: the identity permutation must count
    n = len(xa)
    if n <= EXACT_PERMUTATION_MAX_N:
        orders = np.array(list(itertools.permutations(range(n))), dtype=np.int64)  # (n!, n)
        r = np.abs(dy[orders] @ dx) / norm
        return float(np.mean(r >= observed))
    rng = np.random.default_rng(seed)
    orders = np.argsort(rng.random((samples, n)), axis=1)  # uniform random permutations
    hits = int(np.sum(np.abs(dy[orders] @ dx) / norm >= observed))
    return (hits + 1) / (samples + 1)  # the observed pairing is one of the permutations


def linear_fit(x: Sequence[float], y: Sequence[float], *, seed: int = 0) -> LinearFit:
    """Least-squares fit of y on x, R² and the permutation p-value."""
    xa, ya = _pair(x, y)
    dx = xa - xa.mean()
    sxx = float(dx @ dx)
    slope = 0.0 if sxx == 0.0 else float(dx @ (ya - ya.mean())) / sxx
    intercept = float(ya.mean()) - slope * float(xa.mean())
    r = pearson_r(xa, ya)
    return LinearFit(slope, intercept, r, r * r, permutation_p_value(xa, ya, seed=seed), len(xa))


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ConfigError(f"x and y must be 1-D and of the same length, got {xa.shape} and {ya.shape}")
    if len(xa) < 3:
        raise ConfigError(f"a linear fit needs at least 3 points, got {len(xa)}")
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise ConfigError("x and y must be finite")
    return xa, ya
