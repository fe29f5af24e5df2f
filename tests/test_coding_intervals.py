"""The integer arithmetic of the window coder against brute force (tests/test_coding_window.py
checks the coder built on it)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compresslm.coding.intervals import (
    CoderParams,
    cell_straddles,
    check_table,
    child,
    find_child,
    fits,
    lowest_straddling_cell,
    quantize,
    shortest_dyadic_cell,
    whole_cells,
)
from compresslm.errors import ConfigError


def random_table(seed: int, concentration: float, precision: int = 14) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return quantize(rng.dirichlet(np.full(256, concentration)).astype(np.float32), precision)


def brute_bounds(lo: int, hi: int, cum: np.ndarray) -> list[int]:
    w, total = hi - lo, int(cum[-1])
    return [lo + w * int(c) // total for c in cum]


tables = st.builds(random_table, st.integers(0, 2**32 - 1), st.sampled_from([0.005, 0.05, 0.5, 5.0]))


@st.composite
def intervals(draw: st.DrawFn) -> tuple[int, int, int]:
    """(lo, hi, guard_bits) with a handful of whole cells at most, where brute force is cheap."""
    g = draw(st.integers(1, 20))
    lo = draw(st.integers(0, 2**40))
    width = draw(st.integers(1 << g, 40 << g))
    return lo, lo + width, g


@given(st.integers(0, 2**32 - 1), st.floats(0.001, 10.0), st.sampled_from([9, 12, 14, 16, 20]))
@settings(max_examples=200, deadline=None)
def test_quantize_invariants(seed: int, concentration: float, precision: int) -> None:
    p = np.random.default_rng(seed).dirichlet(np.full(256, concentration)).astype(np.float32)
    cum = quantize(p, precision)
    check_table(cum, precision)  # cum[0] = 0, every frequency >= 1, total <= 2**P
    freqs = np.diff(cum)
    budget = (1 << precision) - 256
    assert np.array_equal(freqs, 1 + np.floor(p.astype(np.float64) * budget).astype(np.int64))


def test_quantize_clamps_an_overfull_table() -> None:
    p = np.full(256, 1 / 255, dtype=np.float32)  # sums to ~1.004: the floors exceed the budget
    cum = quantize(p, 14)
    check_table(cum, 14)
    assert cum[-1] == 1 << 14


@given(intervals(), tables, st.data())
@settings(max_examples=300, deadline=None)
def test_find_child_matches_brute_force(
    iv: tuple[int, int, int], cum: np.ndarray, data: st.DataObject
) -> None:
    lo, hi, _ = iv
    point = data.draw(st.integers(lo, hi - 1))
    b = brute_bounds(lo, hi, cum)
    expected = next(s for s in range(256) if b[s] <= point < b[s + 1])
    s, clo, chi = find_child(lo, hi, cum, point)
    assert (s, clo, chi) == (expected, b[expected], b[expected + 1])
    assert child(lo, hi, cum, s) == (clo, chi)


@given(intervals(), tables)
@settings(max_examples=300, deadline=None)
def test_lowest_straddling_cell_matches_brute_force(iv: tuple[int, int, int], cum: np.ndarray) -> None:
    lo, hi, g = iv
    unit = 1 << g
    b = brute_bounds(lo, hi, cum)
    first, last = whole_cells(lo, hi, g)

    def inside_one_child(j: int) -> bool:
        return any(b[s] <= j * unit and (j + 1) * unit <= b[s + 1] for s in range(256))

    expected = next((j for j in range(first, last + 1) if not inside_one_child(j)), None)
    assert lowest_straddling_cell(lo, hi, cum, g) == expected
    for j in range(first, last + 1):
        assert cell_straddles(lo, hi, cum, j, g) == (not inside_one_child(j))


@given(intervals())
@settings(max_examples=300, deadline=None)
def test_fits_means_a_whole_cell(iv: tuple[int, int, int]) -> None:
    lo, hi, g = iv
    unit = 1 << g
    whole = [j for j in range(lo // unit, hi // unit + 1) if lo <= j * unit and (j + 1) * unit <= hi]
    assert fits(lo, hi, g) == bool(whole)
    if whole:
        assert whole_cells(lo, hi, g) == (whole[0], whole[-1])


@given(st.integers(0, 2**16 - 1), st.integers(1, 2**16), st.integers(1, 6))
@settings(max_examples=300, deadline=None)
def test_shortest_dyadic_cell_is_the_shortest_lowest_code(start: int, width: int, g: int) -> None:
    b = 16
    lo = start << g | (start % (1 << g))
    hi = min(lo + (width << g), 1 << (b + g))
    if not fits(lo, hi, g):
        return
    cell = shortest_dyadic_cell(lo, hi, b, g)
    # Brute force: the first (length, value) whose dyadic interval lies inside [lo, hi).
    for length in range(b + 1):
        size = 1 << (b + g - length)
        inside = [m for m in range(1 << length) if lo <= m * size and (m + 1) * size <= hi]
        if inside:
            assert cell == inside[0] << (b - length)
            return
    raise AssertionError("no code found")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_bits": 12}, "multiple of 8"),
        ({"window_bits": 8}, "at least precision"),
        ({"window_bits": 16, "precision": 15}, "at least precision"),
        ({"precision": 8}, "precision"),
        ({"code": "ones"}, "--code"),
        ({"max_window_bytes": 0}, "max_window_bytes"),
        ({"guard_bits": True}, "guard_bits"),
    ],
)
def test_params_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CoderParams(**kwargs)  # type: ignore[arg-type]
