"""`make demo`: the main job on built-in data, end to end, in a few minutes on a laptop.

Step 1 (selection): pick Python-like documents out of the built-in mixed pool with ZIP-FIT against
held-out Python functions, print the summary and write the selection, the scores of every record and
a small report.

Step 2 (selection study, small): select with ZIP-FIT (default and the paper's gzip-9), DSIR and
random at one byte budget, fine-tune a tiny pretrained byte-level model on each selection with three
seeds, and report the HumanEval test loss curves, lowest loss, bytes to reach it and "X% faster".
Later steps (the tokenization study) extend this recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compresslm.select.methods import make_method
from compresslm.select.pipeline import Outputs, SelectionResult, SelectionSpec, run_selection
from compresslm.select.pool import ReadOptions

if TYPE_CHECKING:
    from compresslm.experiments.selection_study import StudyConfig

DEMO_POOL = "builtin:pool"
DEMO_TARGETS = "builtin:python-targets"


def run_selection_demo(
    out_dir: str | Path,
    *,
    k: int = 1000,
    force: bool = False,
    progress: bool = True,
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
        method,
        targets,
        [DEMO_POOL],
        SelectionSpec(k=k),
        outputs=outputs,
        progress=progress,
    )


# -- step 2: a small selection study ----------------------------------------------------------------

#: The demo study: a few methods, one budget, a tiny byte-level base model pretrained in seconds (and
#: cached), HumanEval halves as target and test. Sized for about 5 minutes on 2 CPU cores; the full
#: study is ``compresslm study select`` (benchmarks/selection_study.py).
DEMO_STUDY_METHODS = ("zipfit", "zipfit:gzip9", "dsir", "random")
DEMO_STUDY_POOL = "builtin:pool:5000"
DEMO_STUDY_BUDGET = 100_000
DEMO_STUDY_SEEDS = (0, 1, 2)


def demo_study_config(out_dir: str | Path, *, force: bool = False, workers: int | None = None) -> StudyConfig:
    """The demo's study settings (see :data:`DEMO_STUDY_METHODS`); report under ``out_dir/study``."""
    from compresslm.experiments.base_model import PretrainSettings
    from compresslm.experiments.finetune import FinetuneSettings
    from compresslm.experiments.selection_study import StudyConfig

    return StudyConfig(
        out=str(Path(out_dir) / "study"),
        sources=[DEMO_STUDY_POOL],
        methods=list(DEMO_STUDY_METHODS),
        budgets=[DEMO_STUDY_BUDGET],
        seeds=list(DEMO_STUDY_SEEDS),
        pretrain=PretrainSettings(size="tiny", seq_len=128, mixture_docs=3000, tokens=400_000, batch_size=16),
        finetune=FinetuneSettings(lr=1e-3, batch_size=8, seq_len=128, eval_points=8),
        selection_workers=workers,
        force=force,
    )


def run_study_demo(
    out_dir: str | Path,
    *,
    force: bool = False,
    workers: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Step 2: the selection study at demo scale; returns its results (also in ``out_dir/study/report``)."""
    from compresslm.experiments.selection_study import run_selection_study

    return run_selection_study(demo_study_config(out_dir, force=force, workers=workers), log=log)
