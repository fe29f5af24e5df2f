"""Metrics on hand-made loss curves, the alignment fit, and the report renderers."""

from __future__ import annotations

import base64
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compresslm.errors import ConfigError
from compresslm.evaluate.curves import (
    BASELINE_FLAT,
    NEVER,
    LossCurve,
    Spread,
    curve_summary,
    faster_summary,
    mean_curve,
    percent_faster,
)
from compresslm.evaluate.html import Figure, Section, Table, render_html, write_html
from compresslm.evaluate.plots import render_histograms, render_loss_curves, render_scatter_fit
from compresslm.evaluate.stats import linear_fit, pearson_r, permutation_p_value, r_squared

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def curve(losses: list[float], step: int = 100, label: str = "") -> LossCurve:
    return LossCurve(tuple(range(0, step * len(losses), step)), tuple(losses), label)


# -- lowest loss and tokens to reach it ----------------------------------------------------------


def test_lowest_and_tokens_to_lowest_take_the_first_minimum() -> None:
    c = curve([3.0, 2.5, 2.0, 2.2, 2.0, 2.1])
    assert c.lowest == 2.0
    assert c.tokens_to_lowest == 200  # the first of the two points at 2.0
    assert c.final == 2.1


def test_tokens_to_reach_is_first_point_at_or_below_level() -> None:
    c = curve([3.0, 2.5, 2.0, 1.5])
    assert c.tokens_to_reach(2.5) == 100  # "at or below": equality counts
    assert c.tokens_to_reach(2.4) == 200
    assert c.tokens_to_reach(3.5) == 0
    assert c.tokens_to_reach(1.0) is None


def test_curve_validation() -> None:
    with pytest.raises(ConfigError):
        LossCurve((0, 100), (1.0,))
    with pytest.raises(ConfigError):
        LossCurve((0, 100, 100), (1.0, 2.0, 3.0))
    with pytest.raises(ConfigError):
        LossCurve((), ())
    with pytest.raises(ConfigError):
        LossCurve((0, 1), (1.0, math.nan))


# -- X% faster ----------------------------------------------------------------------------------


def test_percent_faster_the_papers_example() -> None:
    # CodeGemma at 770k: ZIP-FIT reaches DSIR's final (lowest) loss at 0.115M tokens -> 85%.
    baseline = LossCurve((0, 115_000, 385_000, 770_000), (1.0, 0.9, 0.8, 0.7), "dsir")
    ours = LossCurve((0, 115_000, 385_000, 770_000), (1.0, 0.7, 0.6, 0.55), "zipfit")
    f = percent_faster(ours, baseline)
    assert f.value == pytest.approx(1 - 115_000 / 770_000)
    assert f.ours_tokens == 115_000 and f.baseline_tokens == 770_000
    assert f.baseline_lowest == 0.7
    assert f.describe() == "85.1%"


def test_percent_faster_is_negative_when_ours_is_later() -> None:
    baseline = curve([3.0, 2.0, 2.1, 2.2, 2.3])  # lowest 2.0 at 100
    ours = curve([3.0, 2.8, 2.5, 2.0, 1.9])  # reaches 2.0 at 300
    f = percent_faster(ours, baseline)
    assert f.value == pytest.approx(1 - 300 / 100)
    assert f.value < 0
    assert f.describe() == "-200.0%"


def test_percent_faster_never_reached() -> None:
    baseline = curve([3.0, 2.0, 1.5])
    ours = curve([3.0, 2.0, 1.6])
    f = percent_faster(ours, baseline)
    assert f.value is None and f.reason == NEVER and f.ours_tokens is None
    assert f.describe() == "never"


def test_percent_faster_baseline_that_never_improved() -> None:
    baseline = curve([2.0, 2.5, 2.6])  # fine-tuning only hurt: lowest at 0 tokens
    ours = curve([2.0, 1.9, 1.8])
    f = percent_faster(ours, baseline)
    assert f.value is None and f.reason == BASELINE_FLAT
    assert "n/a" in f.describe()


def test_a_curve_against_itself_is_zero_percent_faster() -> None:
    c = curve([3.0, 2.5, 2.2, 2.3])
    assert percent_faster(c, c).value == 0.0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(0.1, 10.0), min_size=2, max_size=30),
    st.lists(st.floats(0.1, 10.0), min_size=2, max_size=30),
)
def test_percent_faster_properties(a: list[float], b: list[float]) -> None:
    n = min(len(a), len(b))
    ours, base = curve(a[:n]), curve(b[:n])
    f = percent_faster(ours, base)
    if f.value is not None:
        assert f.value <= 1.0  # can never need fewer than zero tokens
        assert f.ours_tokens is not None and ours.losses[ours.tokens.index(f.ours_tokens)] <= base.lowest
        # no earlier point of ours reaches the level
        assert all(
            x > base.lowest for t, x in zip(ours.tokens, ours.losses, strict=True) if t < f.ours_tokens
        )
    elif f.reason == NEVER:
        assert ours.lowest > base.lowest
    else:
        assert base.tokens_to_lowest == 0


# -- seeds ----------------------------------------------------------------------------------------


def test_mean_curve_and_grid_mismatch() -> None:
    m = mean_curve([curve([3.0, 2.0]), curve([1.0, 4.0])])
    assert m.losses == (2.0, 3.0)
    with pytest.raises(ConfigError):
        mean_curve([curve([3.0, 2.0]), curve([3.0, 2.0], step=50)])


def test_spread() -> None:
    s = Spread.of([1.0, 2.0, 3.0])
    assert (s.mean, s.min, s.max, s.n) == (2.0, 1.0, 3.0, 3)
    assert s.std == pytest.approx(1.0)  # sample standard deviation
    assert Spread.of([5.0]).std == 0.0
    assert s.describe(".1f") == "2.0 ± 1.0"


def test_curve_and_faster_summaries_over_seeds() -> None:
    base = [curve([3.0, 2.0, 1.9, 1.8]), curve([3.0, 2.1, 2.0, 1.9]), curve([3.0, 2.0, 2.0, 2.0])]
    ours = [curve([3.0, 1.5, 1.4, 1.3]), curve([3.0, 2.5, 2.4, 2.3]), curve([3.0, 1.9, 1.8, 1.7])]
    summary = curve_summary(ours)
    assert summary["seeds"] == 3
    assert summary["lowest"]["min"] == 1.3 and summary["lowest"]["max"] == 2.3
    fs = faster_summary(ours, base)
    # seed 0: base lowest 1.8 at 300, ours reaches it at 100 -> 2/3; seed 1: never; seed 2: base
    # lowest 2.0 at 100 (the first), ours reaches at 100 -> 0.
    values = [p["value"] for p in fs["per_seed"]]
    assert values[0] == pytest.approx(2 / 3) and values[1] is None and values[2] == 0.0
    assert fs["never"] == 1 and fs["undefined"] == 1
    assert fs["spread"]["n"] == 2
    assert fs["mean_curve"]["text"].endswith("%") or fs["mean_curve"]["text"] == NEVER
    with pytest.raises(ConfigError):
        faster_summary(ours[:2], base)


# -- alignment fit --------------------------------------------------------------------------------


def test_r_squared_of_exact_line_and_of_noise() -> None:
    x = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert r_squared(x, [2 - 3 * v for v in x]) == pytest.approx(1.0)
    fit = linear_fit(x, [2 - 3 * v for v in x])
    assert fit.slope == pytest.approx(-3.0) and fit.intercept == pytest.approx(2.0)
    assert fit.r == pytest.approx(-1.0)
    # exact permutation test on 5 points: only the identity and its reversal reach |r| = 1
    assert fit.p_value == pytest.approx(2 / 120)
    assert r_squared([1, 2, 3, 4], [1, 1, 1, 1]) == 0.0  # constant y: nothing explained


def test_r_squared_matches_numpy_corrcoef() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=20), rng.normal(size=20)
    assert pearson_r(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    # Monte-Carlo p-value for n > 8: uncorrelated noise should not look significant
    assert permutation_p_value(x, y, samples=2000) > 0.01
    assert permutation_p_value(x, 2 * x + 0.01 * y, samples=2000) < 0.01


def test_fit_needs_three_points() -> None:
    with pytest.raises(ConfigError):
        linear_fit([1.0, 2.0], [1.0, 2.0])


# -- plots and HTML ----------------------------------------------------------------------------------


def test_plots_render_png() -> None:
    runs = {"a": [curve([3.0, 2.0, 1.5]), curve([3.0, 2.1, 1.6])], "b": [curve([3.0, 2.5, 2.4])]}
    png = render_loss_curves(runs, title="t", reference=3.0)
    assert png.startswith(PNG_MAGIC)
    assert render_loss_curves(runs, title="t", reference=3.0) == png  # deterministic bytes
    fit = linear_fit([0.1, 0.2, 0.3], [3.0, 2.5, 2.1])
    assert render_scatter_fit(
        [0.1, 0.2, 0.3], [3.0, 2.5, 2.1], ["x", "y", "z"], fit, title="t", xlabel="a", ylabel="b"
    ).startswith(PNG_MAGIC)
    assert render_histograms({"p": [0.1, 0.2, 0.25], "q": []}, title="h").startswith(PNG_MAGIC)


def test_html_is_self_contained_and_escaped(tmp_path) -> None:
    png = render_histograms({"p": [0.1, 0.2]}, title="h")
    sec = Section(
        "Results <1>",
        paragraphs=["a & b"],
        tables=[Table(["m", "v"], [["<x>", 1.5]], "cap")],
        figures=[Figure(png, "curves")],
        notes=["n"],
    )
    text = render_html("T", [sec])
    assert "Results &lt;1&gt;" in text and "a &amp; b" in text and "<td>&lt;x&gt;</td>" in text
    data = re.search(r'src="data:image/png;base64,([^"]+)"', text)
    assert data is not None and base64.b64decode(data.group(1)) == png
    path = write_html(tmp_path / "index.html", "T", [sec])
    assert path.read_text(encoding="utf-8") == text
