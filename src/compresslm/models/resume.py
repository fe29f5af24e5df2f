"""Training checkpoints that a run resumes from: weights, optimizer state, RNG states and progress.

A long CPU run is interrupted (a machine restart, a session's end, a helper stopping it to take a
snapshot); :func:`compresslm.models.train.train_lm` with a ``work_dir`` writes one of these every
few minutes and, started again with the same ``work_dir``, continues from the last one as if it had
never stopped: same batches, same learning rates, the same weights at the end (tests check this).

Layout of ``<work_dir>/checkpoint/`` (safetensors only, never pickle):

* ``model.safetensors``: the module's parameters and buffers (``safetensors.torch.save_model``,
  which stores a tied output layer once);
* ``optimizer.safetensors``: per parameter ``i`` (in the optimizer's order) its state tensors as
  ``state.<i>.<name>`` (AdamW: ``exp_avg``, ``exp_avg_sq``, ``step``) and the torch RNG state;
* ``state.json``: the step, the training config, the optimizer's hyper-parameters per group, the
  numpy generator's state, the running loss and the curve so far.

A checkpoint is written into ``checkpoint.tmp/`` and then renamed over ``checkpoint/`` (the previous
one kept as ``checkpoint.old/`` during the swap), so a crash while saving leaves the last complete
checkpoint readable.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model as st_save_model

from compresslm.errors import ConfigError, IntegrityError

CHECKPOINT = "checkpoint"
STATE_FILE = "state.json"
STATE_VERSION = 1
#: TrainConfig fields that may differ when a run resumes: all but ``max_tokens`` and ``amp`` change
#: no batch and no update; ``amp`` (bfloat16 autocast) changes only the forward's rounding, as a
#: thread count may, so a CPU run can switch to it for speed; ``max_tokens`` extends or shortens the run (see :class:`Rewarm`: the learning rate
#: moves from where the run stopped onto the schedule of the new length, so a run can be given more
#: data, or cut short for a deadline, without starting over; the result then differs from a run
#: planned that long from the start).
RESUMABLE_CHANGES = frozenset(
    {
        "threads",
        "device",
        "log_every_steps",
        "eval_every_tokens",
        "eval_tokens",
        "eval_batch_size",
        "eval_at_start",
        "max_tokens",
        "amp",
    }
)


@dataclass
class Rewarm:
    """How a run whose length changed on resume moves onto its new schedule.

    A run stopped at ``step`` used learning rate ``lr`` last; the new length's schedule
    (:func:`compresslm.models.train.lr_at`) may be far from it (an extended run's cosine is back
    near its peak). Jumping there in one step can spike the loss, so the rate ramps linearly from
    ``lr`` to the new schedule over ``steps`` steps (the new schedule's warmup length): a re-warm
    then re-decay, the usual way to continue pre-training. Stored in the checkpoint so that a run
    interrupted again resumes on exactly the same rates.
    """

    step: int
    lr: float
    steps: int

    def apply(self, step: int, planned: float) -> float:
        """The learning rate at ``step`` given the new schedule's ``planned`` rate there."""
        if step < self.step:
            return planned
        mix = min(1.0, (step - self.step + 1) / max(1, self.steps))
        return self.lr + (planned - self.lr) * mix


@dataclass
class TrainState:
    """Progress of a run that is not in the model or the optimizer."""

    step: int
    config: dict[str, Any]
    rng_state: dict[str, Any]
    loss_sum: float
    loss_steps: int
    next_eval: int | None
    train_s: float
    elapsed_s: float
    curve: list[dict[str, Any]]
    rewarm: dict[str, Any] | None = None  # a Rewarm's fields, once the run's length changed


def checkpoint_dir(work_dir: str | Path) -> Path | None:
    """The complete checkpoint in ``work_dir`` (``checkpoint/``, or ``checkpoint.old/`` when a save
    was interrupted mid-swap), or None when the run has none yet."""
    for name in (CHECKPOINT, CHECKPOINT + ".old"):
        d = Path(work_dir) / name
        if (d / STATE_FILE).is_file():
            return d
    return None


def save_checkpoint(
    work_dir: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState
) -> Path:
    """Write a checkpoint of ``model``, ``optimizer`` and ``state`` atomically (see module doc)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp, final, old = (
        work_dir / (CHECKPOINT + ".tmp"),
        work_dir / CHECKPOINT,
        work_dir / (CHECKPOINT + ".old"),
    )
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    st_save_model(_cpu(model), str(tmp / "model.safetensors"))
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"torch_rng_state": torch.get_rng_state()}
    for i, per_param in opt["state"].items():
        for name, value in per_param.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"state.{i}.{name}"] = t.detach().to("cpu").contiguous()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    groups = [{k: v for k, v in g.items()} for g in opt["param_groups"]]
    meta = {"version": STATE_VERSION, "param_groups": groups, **state.__dict__}
    with open(tmp / STATE_FILE, "w", encoding="utf-8") as f:
        json.dump(meta, f, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _cpu(model: nn.Module) -> nn.Module:
    p = next(model.parameters(), None)
    return model if p is None or p.device.type == "cpu" else _CpuView(model)


class _CpuView(nn.Module):
    """Wraps a module so ``save_model`` sees CPU copies (the original stays on its device)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._sd = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return dict(self._sd)


def load_checkpoint(
    work_dir: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, config: dict[str, Any]
) -> TrainState | None:
    """Restore ``model`` and ``optimizer`` from the run's checkpoint and return its progress (and set
    torch's RNG state); None when ``work_dir`` holds no checkpoint yet.

    The checkpoint's training config must equal ``config`` apart from :data:`RESUMABLE_CHANGES`:
    resuming with another schedule, batch size or seed would not continue the same run.
    """
    d = checkpoint_dir(work_dir)
    if d is None:
        return None
    try:
        meta = json.loads((d / STATE_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise IntegrityError(f"{d / STATE_FILE}: unreadable training state: {exc}") from exc
    if meta.get("version") != STATE_VERSION:
        raise IntegrityError(f"{d / STATE_FILE}: unsupported version {meta.get('version')!r}")
    saved = meta["config"]
    changed = sorted(
        k
        for k in set(saved) | set(config)
        if k not in RESUMABLE_CHANGES and _norm(saved.get(k)) != _norm(config.get(k))
    )
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise ConfigError(
            f"{work_dir}: the checkpoint was written by a run with another config ({diffs}); "
            "use a new work folder or the same settings"
        )
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    missing, unexpected = st_load_model(model, str(d / "model.safetensors"), strict=True, device=str(device))
    tensors = load_file(str(d / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("torch_rng_state"))
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, i, name = key.split(".", 2)
        per_param.setdefault(int(i), {})[name] = value
    groups = meta["param_groups"]
    current = optimizer.state_dict()["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in current]:
        raise IntegrityError(f"{d}: the optimizer's parameter groups do not match the model")
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    fields = TrainState.__dataclass_fields__
    return TrainState(**{k: meta[k] for k in fields if k in meta or k != "rewarm"})


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
