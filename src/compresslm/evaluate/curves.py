"""Loss curves and the metrics read off them: lowest loss, tokens to reach it, "X% faster".

A curve is the held-out loss measured every N training tokens, as ``(tokens, loss)`` points with
strictly increasing tokens. Everything here is exact on those points: no interpolation and no
smoothing, so a number in a report can be checked against the curve in ``results.json`` by eye.

Definitions (the ZIP-FIT paper's, §2.6 of our notes; made precise where the paper reads numbers off
a figure):

* **lowest loss** of a curve: the minimum over its points.
* **tokens to lowest**: the tokens of the *first* point that attains the minimum.
* **tokens to reach level L**: the tokens of the first point with ``loss <= L``; ``None`` when the
  curve never gets there ("never", reported as such, never as a number).
* **X% faster to lowest loss**, ours against a baseline:
  ``1 - tokens_ours_to_reach(baseline_lowest) / tokens_baseline_to_lowest``.
  Positive: ours gets to the baseline's best loss with that fraction fewer tokens. Zero: same
  token count. Negative: ours reaches it, but later. ``None`` with a reason when ours never reaches
  it, or when the baseline's lowest point is at 0 tokens (it never improved on the starting model,
  so there is nothing to be faster than).

Units are whatever the caller's tokens are (bytes for the byte-level base model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compresslm.errors import ConfigError

NEVER = "never"  # ours does not reach the baseline's lowest loss within its run
BASELINE_FLAT = "baseline never improved"  # baseline's lowest point is at 0 tokens


@dataclass(frozen=True)
class LossCurve:
    """Held-out loss at increasing training-token counts (one training run)."""

    tokens: tuple[int, ...]
    losses: tuple[float, ...]
    label: str = ""

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.losses):
            raise ConfigError(
                f"curve {self.label!r}: {len(self.tokens)} token counts but {len(self.losses)} losses"
            )
        if not self.tokens:
            raise ConfigError(f"curve {self.label!r} has no points")
        if any(b <= a for a, b in zip(self.tokens, self.tokens[1:], strict=False)):
            raise ConfigError(f"curve {self.label!r}: token counts must be strictly increasing")
        if any(t < 0 for t in self.tokens):
            raise ConfigError(f"curve {self.label!r}: token counts must be non-negative")
        if not all(math.isfinite(x) for x in self.losses):
            raise ConfigError(f"curve {self.label!r}: losses must be finite")

    @classmethod
    def from_points(cls, points: Sequence[tuple[int, float]], label: str = "") -> LossCurve:
        return cls(tuple(int(t) for t, _ in points), tuple(float(x) for _, x in points), label)

    @property
    def lowest(self) -> float:
        return min(self.losses)

    @property
    def final(self) -> float:
        return self.losses[-1]

    @property
    def tokens_to_lowest(self) -> int:
        """Tokens of the first point that attains the lowest loss."""
        return self.tokens[self.losses.index(self.lowest)]

    def tokens_to_reach(self, level: float) -> int | None:
        """Tokens of the first point with ``loss <= level``; ``None`` if no point gets there."""
        for t, x in zip(self.tokens, self.losses, strict=True):
            if x <= level:
                return t
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "tokens": list(self.tokens), "losses": list(self.losses)}


@dataclass(frozen=True)
class Faster:
    """ "X% faster to lowest loss" of one curve against a baseline; ``value`` is a fraction."""

    value: float | None  # 0.85 means 85% fewer tokens; None with ``reason`` when undefined
    reason: str | None
    ours_tokens: int | None  # tokens ours needs to reach the baseline's lowest loss
    baseline_tokens: int  # tokens the baseline needs to reach its own lowest loss
    baseline_lowest: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "reason": self.reason,
            "ours_tokens": self.ours_tokens,
            "baseline_tokens": self.baseline_tokens,
            "baseline_lowest": self.baseline_lowest,
        }

    def describe(self) -> str:
        """ "85.1%", "-20.0%", "never" or "n/a (baseline never improved)"."""
        if self.value is not None:
            return f"{100 * self.value:.1f}%"
        return NEVER if self.reason == NEVER else f"n/a ({self.reason})"


def percent_faster(ours: LossCurve, baseline: LossCurve) -> Faster:
    """1 − tokens_ours_to_reach(baseline lowest) / tokens_baseline_to_its_lowest (see module doc)."""
    level = baseline.lowest
    t_base = baseline.tokens_to_lowest
    t_ours = ours.tokens_to_reach(level)
    if t_ours is None:
        return Faster(None, NEVER, None, t_base, level)
    if t_base == 0:
        return Faster(None, BASELINE_FLAT, t_ours, t_base, level)
    return Faster(1.0 - t_ours / t_base, None, t_ours, t_base, level)


def mean_curve(curves: Sequence[LossCurve], label: str = "") -> LossCurve:
    """Point-wise mean of runs evaluated at the same token counts (the seeds of one setting)."""
    if not curves:
        raise ConfigError("mean_curve needs at least one curve")
    grid = curves[0].tokens
    for c in curves[1:]:
        if c.tokens != grid:
            raise ConfigError(
                f"curves {curves[0].label!r} and {c.label!r} are evaluated at different token counts"
            )
    losses = np.mean(np.array([c.losses for c in curves], dtype=np.float64), axis=0)
    return LossCurve(grid, tuple(float(x) for x in losses), label or curves[0].label)


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation, min and max of a per-seed quantity."""

    mean: float
    std: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ConfigError("Spread of no values")
        arr = np.asarray(values, dtype=np.float64)
        std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
        return cls(float(arr.mean()), std, float(arr.min()), float(arr.max()), len(arr))

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max, "n": self.n}

    def describe(self, fmt: str = ".4f") -> str:
        return f"{self.mean:{fmt}} ± {self.std:{fmt}}" if self.n > 1 else f"{self.mean:{fmt}}"


def curve_summary(runs: Sequence[LossCurve]) -> dict[str, Any]:
    """Per-setting numbers over its seeds: lowest and final loss and tokens to lowest, each as a
    :class:`Spread`, plus the same read off the mean curve."""
    mean = mean_curve(runs)
    return {
        "seeds": len(runs),
        "lowest": Spread.of([c.lowest for c in runs]).to_dict(),
        "final": Spread.of([c.final for c in runs]).to_dict(),
        "tokens_to_lowest": Spread.of([float(c.tokens_to_lowest) for c in runs]).to_dict(),
        "mean_curve": {"lowest": mean.lowest, "tokens_to_lowest": mean.tokens_to_lowest, "final": mean.final},
    }


def faster_summary(ours: Sequence[LossCurve], baseline: Sequence[LossCurve]) -> dict[str, Any]:
    """ "X% faster" of ours against a baseline, over seeds.

    * ``mean_curve``: computed on the two mean curves (the headline number);
    * ``per_seed``: seed i of ours against seed i of the baseline (same seed = same fine-tuning
      order and initial state, so the pairing removes that noise); their spread counts only the
      seeds where the value is defined, and ``never`` says in how many ours never got there.
    """
    if len(ours) != len(baseline):
        raise ConfigError(f"faster_summary: {len(ours)} runs of ours but {len(baseline)} of the baseline")
    pairs = [percent_faster(o, b) for o, b in zip(ours, baseline, strict=True)]
    defined = [p.value for p in pairs if p.value is not None]
    head = percent_faster(mean_curve(ours), mean_curve(baseline))
    return {
        "mean_curve": head.to_dict() | {"text": head.describe()},
        "per_seed": [p.to_dict() for p in pairs],
        "spread": Spread.of(defined).to_dict() if defined else None,
        "never": sum(p.reason == NEVER for p in pairs),
        "undefined": sum(p.value is None for p in pairs),
    }
