"""Fine-tuning runs of the studies: one base model, many (dataset, seed) runs, test loss curves.

Protocol (the same for every method, so only the data differs):

* each run starts from an independent copy of the base model's weights;
* it trains for exactly ``tokens`` tokens (the budget; in bytes for the byte-level model) on random
  contiguous blocks of the run's packed token stream, AdamW with linear warmup then cosine decay,
  gradient clipping (:func:`compresslm.models.train.train_lm`). A selection of B bytes is therefore
  seen about once in expectation; a smaller selection (a pool that runs out) is repeated, and
  ``epochs`` in the result says by how much;
* the held-out test loss (mean NLL per token, nats) is measured before the first step and then every
  ``tokens // eval_points`` tokens on the whole test stream (or a fixed, evenly spread
  ``eval_tokens`` of it), so every run of one budget has the same evaluation grid and curves can be
  averaged over seeds;
* the seed fixes the batch order (and dropout, if any); the same seed gives the same curve on the
  same machine, thread count and device.

``workers > 1`` runs several fine-tunings at once in spawned processes with one torch thread each:
on a CPU the small models of these studies use one core badly with several threads (tiny matrices),
so process parallelism is the faster way to use every core. Results do not depend on ``workers``
because every run uses one thread either way (``threads`` fixes it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from compresslm.errors import ConfigError, DataError
from compresslm.evaluate.curves import LossCurve
from compresslm.experiments.base_model import BaseModel


@dataclass(frozen=True)
class FinetuneSettings:
    """Hyper-parameters shared by every fine-tuning run of a study."""

    # Measured on the default base model (pretrained at peak 3e-3, ending at 3e-4): 1e-3 with 5% warmup
    # first raised the test loss by ~0.06 nats/byte for every selection before it fell; 3e-4 with 10%
    # warmup rose far less and ended lower for both ZIP-FIT and DSIR selections.
    lr: float = 3e-4
    batch_size: int = 8
    seq_len: int = 256
    warmup_fraction: float = 0.1
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_points: int = 10  # evaluations after the start, evenly spaced over the run
    eval_tokens: int | None = None  # test tokens per evaluation (fixed, evenly spread blocks); None: all
    eval_batch_size: int = 64
    device: str = "auto"
    threads: int | None = 1  # torch threads per run (see the module docstring)

    def __post_init__(self) -> None:
        if self.eval_points < 1:
            raise ConfigError(f"eval_points must be >= 1, got {self.eval_points}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunSpec:
    """One fine-tuning run: ``train`` is the packed token stream of the run's dataset."""

    key: str  # e.g. "zipfit@200000" (groups the seeds of one setting)
    seed: int
    train: np.ndarray
    tokens: int


@dataclass
class RunResult:
    key: str
    seed: int
    curve: LossCurve
    tokens: int
    epochs: float  # training tokens / dataset tokens
    train_s: float
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "tokens": self.tokens,
            "epochs": self.epochs,
            "train_s": self.train_s,
            "elapsed_s": self.elapsed_s,
            "curve": {"tokens": list(self.curve.tokens), "losses": list(self.curve.losses)},
        }


def _train_config(settings: FinetuneSettings, tokens: int, seed: int) -> Any:
    from compresslm.models.train import TrainConfig

    return TrainConfig(
        max_tokens=tokens,
        batch_size=settings.batch_size,
        seq_len=settings.seq_len,
        lr=settings.lr,
        min_lr_ratio=settings.min_lr_ratio,
        warmup_fraction=settings.warmup_fraction,
        weight_decay=settings.weight_decay,
        grad_clip=settings.grad_clip,
        seed=seed,
        eval_every_tokens=max(settings.tokens_per_step, tokens // settings.eval_points),
        eval_tokens=settings.eval_tokens,
        eval_batch_size=settings.eval_batch_size,
        eval_at_start=True,
        device=settings.device,
        threads=settings.threads,
        log_every_steps=10**9,  # only the evaluation points are needed
    )


def run_one(base: BaseModel, spec: RunSpec, test: np.ndarray, settings: FinetuneSettings) -> RunResult:
    """Fine-tune a fresh copy of ``base`` on ``spec.train``; the curve is the test loss."""
    from compresslm.models.data import TokenStream
    from compresslm.models.train import train_lm

    if len(spec.train) < settings.seq_len + 1:
        raise DataError(
            f"{spec.key}: the selected data has {len(spec.train)} tokens, fewer than one "
            f"training block of {settings.seq_len + 1}; raise the budget"
        )
    t0 = time.perf_counter()
    result = train_lm(
        base.fresh(),
        TokenStream(spec.train, name=spec.key),
        _train_config(settings, spec.tokens, spec.seed),
        eval_sets={"test": TokenStream(test, name="test")},
        progress=False,
    )
    curve = LossCurve.from_points(result.eval_curve("test"), label=spec.key)
    return RunResult(
        spec.key,
        spec.seed,
        curve,
        result.tokens,
        result.tokens / len(spec.train),
        result.train_s,
        time.perf_counter() - t0,
    )


# -- process pool -----------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(base_source: str, test: np.ndarray, settings: FinetuneSettings) -> None:
    import torch

    from compresslm.experiments.base_model import load_base_model

    torch.set_num_threads(settings.threads or 1)
    _WORKER.update(base=load_base_model(base_source), test=test, settings=settings)


def _run_in_worker(spec: RunSpec) -> RunResult:
    return run_one(_WORKER["base"], spec, _WORKER["test"], _WORKER["settings"])


def default_jobs(settings: FinetuneSettings, n_runs: int) -> int:
    """All cores (one thread per run) on a CPU, one process on a GPU."""
    from compresslm.models.train import resolve_device

    if resolve_device(settings.device).type != "cpu":
        return 1
    from compresslm.select.parallel import default_workers as cores

    return max(1, min(n_runs, cores() // max(1, settings.threads or 1)))


def run_all(
    base: BaseModel,
    specs: Sequence[RunSpec],
    test: np.ndarray,
    settings: FinetuneSettings,
    *,
    workers: int = 1,
    log: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Every run, results in the order of ``specs``. ``workers > 1`` needs a base model that can be
    loaded from ``base.source`` (a checkpoint folder or a local HF model)."""
    if workers <= 1 or len(specs) <= 1:
        out = []
        for spec in specs:
            out.append(run_one(base, spec, test, settings))
            if log is not None:
                log(out[-1])
        return out
    from compresslm.select.parallel import ordered_map

    results = []
    # spawn, not fork: forking a process that has run torch can deadlock its thread pools.
    for result in ordered_map(
        _run_in_worker,
        specs,
        workers=min(workers, len(specs)),
        initializer=_init_worker,
        initargs=(base.source, test, settings),
        start_method="spawn",
    ):
        results.append(result)
        if log is not None:
            log(result)
    return results
