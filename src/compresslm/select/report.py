"""The small selection report: a JSON file with every number, and a score histogram per domain/source.

The histogram comes from a bounded reservoir of scores per group (see the pipeline), so the report
costs the same memory for 10k and 10M documents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from compresslm.data.writers import atomic_output

if TYPE_CHECKING:
    from compresslm.select.pipeline import SelectionResult


def histogram_path(report_path: str | Path) -> Path:
    return Path(report_path).with_suffix(".png")


def write_selection_report(path: str | Path, result: SelectionResult, *, force: bool = False) -> None:
    """Write ``path`` (JSON) and, beside it, ``<stem>.png`` with the score histograms."""
    payload = result.to_dict()
    labelled = [d for d in result.domains if result.domains[d]["pool"]]
    if labelled:
        payload["precision"] = {
            d: {str(k): result.precision_at(k, d) for k in (100, 1000, 2000) if k <= len(result.selected)}
            for d in labelled
        }
    png = histogram_path(path)
    payload["histogram"] = png.name
    with atomic_output(path, force=force) as fh:
        json.dump(payload, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    _plot_histograms(png, result, force=force)


def _plot_histograms(path: Path, result: SelectionResult, *, force: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    samples = {g: np.asarray(v) for g, v in result.score_samples.items() if v}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    finite = [v[np.isfinite(v)] for v in samples.values()]
    finite = [v for v in finite if v.size]
    if finite:
        lo = min(float(v.min()) for v in finite)
        hi = max(float(v.max()) for v in finite)
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-9, 50)
        for group, values in sorted(samples.items()):
            values = values[np.isfinite(values)]
            if values.size:
                ax.hist(values, bins=bins, histtype="step", density=True, label=f"{group} (n={values.size})")
        if result.selected:
            cut = result.selected[-1].score
            ax.axvline(cut, color="k", linestyle="--", linewidth=1, label=f"selection cut ({cut:.4f})")
        ax.legend(fontsize=8)
    ax.set_xlabel(f"score ({result.method.get('method', '?')})")
    ax.set_ylabel("density")
    ax.set_title("Score distribution by domain / source file")
    fig.tight_layout()
    with atomic_output(path, force=force, mode="wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
