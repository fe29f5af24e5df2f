"""Evaluation shared by the studies: loss-curve metrics, statistics, plots and HTML reports.

* :mod:`.curves`: lowest loss, tokens to reach it, "X% faster to lowest loss", spread over seeds;
* :mod:`.stats`: linear fit, R² and a permutation p-value;
* :mod:`.plots`: PNG figures (loss curves, scatter with fit, histograms);
* :mod:`.html`: a self-contained HTML page of sections, tables and embedded figures.
"""

from compresslm.evaluate.curves import (
    Faster,
    LossCurve,
    Spread,
    curve_summary,
    faster_summary,
    percent_faster,
)
from compresslm.evaluate.stats import LinearFit, linear_fit, r_squared

__all__ = [
    "Faster",
    "LinearFit",
    "LossCurve",
    "Spread",
    "curve_summary",
    "faster_summary",
    "linear_fit",
    "percent_faster",
    "r_squared",
]
