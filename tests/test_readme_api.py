"""The README's API snippet runs as written, and the API's defaults are the command line's."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np

from compresslm.cli import build_parser
from compresslm.select.zipfit import alignment

README = Path(__file__).resolve().parent.parent / "README.md"


def api_snippet() -> str:
    """The first ```python block of the README that calls zipfit_scores."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if "zipfit_scores(" in b]
    assert found, "README.md has no python snippet calling zipfit_scores"
    return found[0]


def test_readme_api_snippet_runs_as_written() -> None:
    namespace: dict[str, object] = {}
    exec(compile(api_snippet(), str(README), "exec"), namespace)  # noqa: S102 - our own README
    scores, best = namespace["scores"], namespace["best"]
    assert isinstance(scores, np.ndarray) and isinstance(best, np.ndarray)
    assert len(scores) == len(namespace["source_texts"])  # type: ignore[arg-type]
    assert len(set(best.tolist())) == len(best) > 0
    assert (np.diff(scores[best]) <= 0).all()  # best first


def test_alignment_defaults_are_the_align_commands() -> None:
    args = build_parser().parse_args(["align", "a.jsonl", "b.jsonl"])
    params = inspect.signature(alignment).parameters
    assert params["compressor"].default == args.compressor
    assert params["max_pairs"].default == args.max_pairs
