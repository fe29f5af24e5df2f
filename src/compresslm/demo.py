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


# ------------------------------------------------------------------------------- step 4: compression

DEMO_COMPRESS_PACKAGE = "json"  # a folder every Python installation has: the stdlib's json package


def demo_compression_folder() -> Path:
    """Where step 4's sources come from: the standard library's ``json`` package (its ``.py``
    files are copied, so compiled caches beside them do not enter the archive)."""
    import sysconfig

    return Path(sysconfig.get_paths()["stdlib"]) / DEMO_COMPRESS_PACKAGE


def demo_m1(out_dir: str | Path) -> Path | None:
    """The M1 step 4 uses: the one shipped with the package when this installation has it, else the
    tiny M1 that step 3 trained (None when neither exists)."""
    try:
        from compresslm.coding.default_model import default_m1_path, has_default_m1
    except ImportError:  # an installation from before the shipped M1
        has_default_m1 = None  # type: ignore[assignment]
    if has_default_m1 is not None and has_default_m1():
        return default_m1_path()
    trained = Path(out_dir) / "tokenization" / "m1"
    return trained if (trained / "config.json").is_file() else None


def run_compression_demo(
    out_dir: str | Path,
    model: str | Path,
    *,
    force: bool = False,
    progress: bool = False,
    sources: Path | None = None,
) -> dict[str, Any]:
    """Compress a copy of :func:`demo_compression_folder`'s ``.py`` files in stream mode with
    ``model``, restore it, check
    every file byte for byte, and size the same bytes with gzip -9, xz -9e and zstd -19 (each file
    on its own, as the archive codes them, and the files concatenated as one stream).

    ``sources``: another folder whose ``.py`` files are used instead. Returns bits/byte per
    compressor, the sizes and the timings."""
    import gzip
    import lzma
    import os
    import shutil

    import zstandard

    from compresslm.coding.compress import compress, decompress

    out = Path(out_dir) / "compression"
    src = out / "input" / DEMO_COMPRESS_PACKAGE
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for p in sorted((sources or demo_compression_folder()).glob("*.py")):
        shutil.copyfile(p, src / p.name)
    clm, restored = out / f"{src.name}.clm", out / "restored"
    report = compress(src, clm, model=model, force=force, progress=progress)
    back = decompress(clm, restored, model=model, force=force, progress=progress)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    mismatched = [
        str(p.relative_to(src))
        for p in files
        if (restored / p.relative_to(src)).read_bytes() != p.read_bytes()
    ]
    data = [p.read_bytes() for p in files]
    joined = b"".join(data)
    n = len(joined)
    zc = zstandard.ZstdCompressor(level=19)
    peers = {
        "gzip -9": (gzip.compress, {"compresslevel": 9, "mtime": 0}),
        "xz -9e": (lzma.compress, {"preset": 9 | lzma.PRESET_EXTREME}),
        "zstd -19": (lambda d: zc.compress(d), {}),
    }
    rows = {
        name: (8 * sum(len(f(d, **kw)) for d in data) / n, 8 * len(f(joined, **kw)) / n)
        for name, (f, kw) in peers.items()
    }
    return {
        "folder": os.fspath(src),
        "files": len(files),
        "bytes": n,
        "clm_bytes": report.clm_bytes,
        "clm_bits_per_byte": 8 * report.clm_bytes / n,
        "code_bits_per_byte": report.bits_per_byte,
        "m1_bits_per_byte": report.m1_bits_per_byte,
        "encode_seconds": report.encode_seconds,
        "decode_seconds": back.seconds,
        "identical": not mismatched and len(files) == back.files,
        "mismatched": mismatched,
        "peers": rows,
        "output": os.fspath(clm),
    }
