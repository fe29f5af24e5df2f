"""`make demo`: the main job on built-in data, end to end, in a few minutes on a laptop.

Step 1 (selection): pick Python-like documents out of the built-in mixed pool with ZIP-FIT against
held-out Python functions, print the summary and write the selection, the scores of every record and
a small report. Later steps (the selection study, the tokenization study) extend this recipe.
"""

from __future__ import annotations

from pathlib import Path

from compresslm.select.methods import make_method
from compresslm.select.pipeline import Outputs, SelectionResult, SelectionSpec, run_selection
from compresslm.select.pool import ReadOptions

DEMO_POOL = "builtin:pool"
DEMO_TARGETS = "builtin:python-targets"


def run_selection_demo(
    out_dir: str | Path, *, k: int = 1000, force: bool = False, progress: bool = True,
    workers: int | None = None,
) -> SelectionResult:
    """ZIP-FIT selection of ``k`` documents from the built-in pool; outputs under ``out_dir``."""
    from compresslm.select.pipeline import load_targets

    out = Path(out_dir)
    outputs = Outputs(
        selected=str(out / "selected.jsonl"),
        scores=str(out / "scores.parquet"),
        rejects=str(out / "rejects.jsonl"),
        report=str(out / "report.json"),
        force=force,
    )
    targets = load_targets([DEMO_TARGETS], ReadOptions())
    method = make_method("zipfit", workers=workers)
    return run_selection(
        method, targets, [DEMO_POOL], SelectionSpec(k=k), outputs=outputs, progress=progress,
    )
