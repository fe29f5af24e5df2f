"""Plots for the studies: loss curves over seeds, scatter with a fitted line, score histograms.

Each function renders to PNG bytes (``render_*``) so a report can embed them, and ``save_png``
writes them atomically. Figures are built on :class:`matplotlib.figure.Figure` directly, not
pyplot: no global figure state, no GUI backend, nothing to close, safe to call from any thread.
PNG metadata carries no timestamp, so the same data gives the same file.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compresslm.evaluate.curves import LossCurve, mean_curve
from compresslm.evaluate.stats import LinearFit

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 110


def _figure(width: float = 7.5, height: float = 4.6) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _finish(fig: Figure, ax: Axes, title: str, xlabel: str, ylabel: str, *, legend: bool = True) -> bytes:
    """Titles, a light grid and the legend: the same frame for every plot."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if legend:
        ax.legend(fontsize=8)
    return _png(fig)


def save_png(path: str | Path, png: bytes, *, force: bool = True) -> Path:
    """Write PNG bytes atomically (a reader never sees half a file)."""
    from compresslm.data.writers import atomic_output

    with atomic_output(str(path), force=force, mode="wb") as fh:
        fh.write(png)
    return Path(path)


def render_loss_curves(
    runs: Mapping[str, Sequence[LossCurve]],
    *,
    title: str,
    xlabel: str = "training tokens",
    ylabel: str = "target-test cross-entropy (nats / token)",
    reference: float | None = None,
    reference_label: str = "before fine-tuning",
) -> bytes:
    """One line per setting: the mean over its runs, a band from the lowest to the highest run, and
    a marker at the mean curve's lowest point. ``reference`` draws a horizontal line (e.g. the base
    model's loss before any fine-tuning)."""
    fig, ax = _figure()
    for label, curves in runs.items():
        mean = mean_curve(curves, label)
        x = np.asarray(mean.tokens, dtype=np.float64)
        (line,) = ax.plot(x, mean.losses, label=f"{label} (n={len(curves)})", linewidth=1.6)
        if len(curves) > 1:
            stack = np.array([c.losses for c in curves])
            ax.fill_between(x, stack.min(axis=0), stack.max(axis=0), color=line.get_color(), alpha=0.15)
        ax.plot([mean.tokens_to_lowest], [mean.lowest], marker="o", color=line.get_color(), markersize=5)
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle=":", linewidth=1, label=reference_label)
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _si(v)))
    return _finish(fig, ax, title, xlabel, ylabel)


def _si(value: float) -> str:
    """Token counts on an axis: 0, 500, 20k, 1.5M."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:g}{suffix}"
    return f"{value:g}"


def render_scatter_fit(
    x: Sequence[float],
    y: Sequence[float],
    labels: Sequence[str],
    fit: LinearFit,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
) -> bytes:
    """Labelled points with the least-squares line and R² (and its p-value) in the legend."""
    fig, ax = _figure(6.5, 4.6)
    ax.scatter(x, y, zorder=3)
    for xi, yi, label in zip(x, y, labels, strict=True):
        ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    lo, hi = float(min(x)), float(max(x))
    xs = np.linspace(lo, hi, 2)
    ax.plot(
        xs,
        fit.slope * xs + fit.intercept,
        color="tab:red",
        linewidth=1.2,
        label=f"fit: R² = {fit.r_squared:.3f}, p = {fit.p_value:.3g} (n = {fit.n})",
    )
    return _finish(fig, ax, title, xlabel, ylabel)


def render_histograms(
    samples: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str = "score",
    bins: int = 40,
    cut: float | None = None,
) -> bytes:
    """Overlaid normalised histograms, one per group (e.g. selection scores per domain), of the
    finite values (a NaN score means "no score"); ``cut`` draws the selection threshold."""
    fig, ax = _figure(6.5, 4.0)
    finite = {label: np.asarray(v, dtype=np.float64) for label, v in samples.items()}
    samples = {label: v[np.isfinite(v)] for label, v in finite.items()}
    values = [v for v in samples.values() if len(v)]
    if values:
        lo = min(float(v.min()) for v in values)
        hi = max(float(v.max()) for v in values)
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        for label, v in samples.items():
            if len(v):
                ax.hist(
                    np.asarray(v, dtype=np.float64),
                    bins=edges,
                    density=True,
                    histtype="step",
                    linewidth=1.4,
                    label=f"{label} (n={len(v)})",
                )
        if cut is not None:
            ax.axvline(cut, color="k", linestyle="--", linewidth=1, label=f"selection cut ({cut:.4f})")
    return _finish(fig, ax, title, xlabel, "density", legend=bool(values))
