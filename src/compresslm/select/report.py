"""The small selection report: a JSON file with every number, and a score histogram per domain/source.

The histogram comes from a bounded reservoir of scores per group (see the pipeline), so the report
costs the same memory for 10k and 10M documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from compresslm.data.jsonfile import write_json
from compresslm.data.writers import atomic_output
from compresslm.select.pipeline import NO_DOMAIN

if TYPE_CHECKING:
    from compresslm.select.pipeline import SelectionResult

OUTLIER_SHARE = 0.005
"""The histogram's x range leaves out this share of scores at each end (they are counted in the edge
bins and the legend says how many): DSIR's log-ratios have tails thousands of times wider than the
bulk, which would squash every other bin into one."""


def histogram_path(report_path: str | Path) -> Path:
    return Path(report_path).with_suffix(".png")


def write_selection_report(path: str | Path, result: SelectionResult, *, force: bool = False) -> None:
    """Write ``path`` (JSON) and, beside it, ``<stem>.png`` with the score histograms."""
    payload = result.to_dict()
    labelled = [d for d in result.domains if result.domains[d]["pool"] and d != NO_DOMAIN]
    ks = [k for k in (100, 1000, 2000) if k < len(result.selected)]
    if labelled and ks:  # precision at smaller cut-offs too: is the head of the ranking purer?
        payload["precision_at_k"]["at"] = {
            str(k): {d: result.precision_at(k, d) for d in labelled} for k in ks
        }
    png = histogram_path(path)
    payload["histogram"] = png.name
    write_json(path, payload, force=force, ensure_ascii=False)
    _plot_histograms(png, result, force=force)


def histogram_range(scores: Any, cut: float | None = None) -> tuple[float, float]:
    """The x range of the histogram: all but :data:`OUTLIER_SHARE` of the scores at each end, widened
    to show the selection ``cut``."""
    import numpy as np

    lo, hi = (
        float(x)
        for x in np.quantile(np.asarray(scores, dtype=np.float64), [OUTLIER_SHARE, 1 - OUTLIER_SHARE])
    )
    if cut is not None and np.isfinite(cut):
        lo, hi = min(lo, cut), max(hi, cut)
    return lo, hi


def _plot_histograms(path: Path, result: SelectionResult, *, force: bool) -> None:
    # matplotlib's object API, not pyplot: no global backend switch in the caller's process.
    import numpy as np
    from matplotlib.figure import Figure

    samples = {g: np.asarray(v, dtype=np.float64) for g, v in result.score_samples.items() if v}
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    finite = {g: v[np.isfinite(v)] for g, v in samples.items()}
    finite = {g: v for g, v in finite.items() if v.size}
    if finite:
        cut = result.selected[-1].score if result.selected else None
        lo, hi = histogram_range(np.concatenate(list(finite.values())), cut)
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-9, 50)
        outside = 0
        for group, values in sorted(finite.items()):
            outside += int(((values < lo) | (values > hi)).sum())
            ax.hist(
                np.clip(values, lo, hi),
                bins=bins,
                histtype="step",
                density=True,
                label=f"{group} (n={values.size:,})",
            )
        if cut is not None:
            ax.axvline(cut, color="k", linestyle="--", linewidth=1, label=f"selection cut ({cut:.4f})")
        ax.legend(fontsize=8, title=f"{outside:,} outliers in the edge bins" if outside else None)
    ax.set_xlabel(f"score ({result.method_info.get('method', '?')})")
    ax.set_ylabel("density")
    ax.set_title("Score distribution by domain / source file")
    fig.tight_layout()
    with atomic_output(path, force=force, mode="wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
