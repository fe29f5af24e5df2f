"""Training and evaluation loop for the transformer (or any module whose ``forward(idx)`` returns
logits, e.g. the Hugging Face adapter in :mod:`compresslm.models.hf`).

AdamW without decay on norms, biases and embeddings; linear warmup then cosine decay to
``min_lr_ratio * lr``; gradient-norm clipping; periodic evaluation on fixed blocks of each eval set.

Determinism: the batch order comes from ``np.random.default_rng(seed)`` and dropout from a torch RNG
seeded inside :func:`torch.random.fork_rng` (the caller's global RNG state is left untouched), so on
CPU the same model initialisation, data, config and thread count give the identical loss curve.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from compresslm.errors import ConfigError, DataError
from compresslm.models.data import IGNORE_INDEX, TokenStream
from compresslm.models.resume import Rewarm, TrainState, load_checkpoint, save_checkpoint
from compresslm.models.transformer import loss as lm_loss
from compresslm.progress import progress_bar

DEFAULT_THREADS = 1
"""torch CPU threads for the commands that train or run our small models (``m1 train``, ``train``,
``eval``, ``generate``). Measured on a shared 2-core machine (load ~20): ``m1 train --size tiny
--train-tokens 300k`` 99-103 s with 1 thread against 571-649 s with torch's default; ``train`` (tiny,
50k tokens) 28-46 s against 132-139 s; ``generate`` 122-166 against 3.5-4.6 steps/s. Small matrices
gain little from more threads and lose much when the cores are shared; pass ``threads`` for more."""

#: ``on_eval(entry)`` is called after every evaluation; returning True stops training early.
EvalCallback = Callable[[dict[str, Any]], "bool | None"]


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_lm`. Token counts include every position of every batch."""

    max_tokens: int  # training stops after max(1, max_tokens // (batch_size * seq_len)) steps
    batch_size: int
    seq_len: int
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio and stays there
    warmup_steps: int | None = None  # give at most one of warmup_steps / warmup_tokens /
    warmup_tokens: int | None = None  # warmup_fraction (of the steps, at least 1 step);
    warmup_fraction: float | None = None  # none of them: 5% of the steps (at least 1)
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0  # max global gradient L2 norm; None disables clipping
    seed: int = 0
    eval_every_tokens: int | None = None  # None: evaluate only at the start and the end
    eval_tokens: int | None = None  # tokens per eval set per evaluation; None: the whole set
    eval_batch_size: int | None = None  # None: batch_size
    eval_at_start: bool = True
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:N"
    threads: int | None = None  # torch CPU threads during training; None: leave as is (see DEFAULT_THREADS)
    log_every_steps: int = 10  # a train-loss entry in the curve every N steps
    amp: bool = False  # bfloat16 autocast of the forward (weights, optimizer and loss stay float32)

    def __post_init__(self) -> None:
        for name in ("max_tokens", "batch_size", "seq_len", "log_every_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        given = [
            n for n in ("warmup_steps", "warmup_tokens", "warmup_fraction") if getattr(self, n) is not None
        ]
        if len(given) > 1:
            raise ConfigError(
                f"TrainConfig: give one of warmup_steps / warmup_tokens / warmup_fraction, not {given}"
            )
        if self.warmup_fraction is not None and not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"TrainConfig.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"TrainConfig.grad_clip must be positive or None, got {self.grad_clip}")
        if self.eval_every_tokens is not None and self.eval_every_tokens < 1:
            raise ConfigError(f"TrainConfig.eval_every_tokens must be >= 1, got {self.eval_every_tokens}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def total_steps(self) -> int:
        return max(1, self.max_tokens // self.tokens_per_step)

    @property
    def n_warmup_steps(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        if self.warmup_tokens is not None:
            return self.warmup_tokens // self.tokens_per_step
        if self.warmup_fraction is not None:
            return max(1, int(self.total_steps * self.warmup_fraction))
        return max(1, self.total_steps // 20)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    Linear warmup ``lr * (step + 1) / warmup`` for the first ``warmup`` steps, then a half cosine
    from ``lr`` down to ``lr * min_lr_ratio`` at ``total_steps``, and that floor afterwards.
    """
    return lr_schedule(
        step,
        lr=config.lr,
        min_lr=config.lr * config.min_lr_ratio,
        warmup_steps=config.n_warmup_steps,
        total_steps=config.total_steps,
    )


def lr_schedule(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # in [0, 1)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def configure_optimizer(
    model: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float], eps: float = 1e-8
) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only.

    Norms and biases (1-D) and embeddings (including an output layer tied to them) are not decayed:
    decay pulls rarely seen tokens' embeddings to zero and fights LayerNorm's scale.
    """
    no_decay = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay_params, other_params, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay_params if p.ndim >= 2 and id(p) not in no_decay else other_params).append(p)
    groups = [
        {"params": decay_params, "weight_decay": weight_decay},
        {"params": other_params, "weight_decay": 0.0},
    ]
    fused = all(p.is_cuda for p in decay_params + other_params) and bool(decay_params + other_params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


@dataclass
class TrainResult:
    """What :func:`train_lm` did. ``curve`` entries: tokens, step, lr, train_loss (mean over the
    steps since the previous entry; None at step 0), grad_norm (before clipping), elapsed_s,
    train_s and, at evaluation points, ``"eval/<name>"``: mean NLL in nats per token."""

    model: nn.Module
    config: TrainConfig
    curve: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0
    steps: int = 0
    train_s: float = 0.0  # wall time of training steps only (no evaluation)
    elapsed_s: float = 0.0
    stopped_early: bool = False
    resumed_step: int | None = None  # the checkpoint's step when the run resumed from one

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_s if self.train_s > 0 else 0.0

    @property
    def final_eval(self) -> dict[str, float]:
        for entry in reversed(self.curve):
            evals = {k[5:]: v for k, v in entry.items() if k.startswith("eval/")}
            if evals:
                return evals
        return {}

    def eval_curve(self, name: str) -> list[tuple[int, float]]:
        """``(tokens, loss)`` at every evaluation of eval set ``name``."""
        return [(e["tokens"], e[f"eval/{name}"]) for e in self.curve if f"eval/{name}" in e]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no model)."""
        return {
            "config": self.config.to_dict(),
            "curve": self.curve,
            "tokens": self.tokens,
            "steps": self.steps,
            "train_s": self.train_s,
            "elapsed_s": self.elapsed_s,
            "tokens_per_s": self.tokens_per_s,
            "stopped_early": self.stopped_early,
        }


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}") from exc


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for the block, then restore it."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _model_limits(model: nn.Module) -> tuple[int | None, int | None]:
    """(vocab_size, max_seq_len) of our Transformer, the HF adapter, or None when unknown."""
    cfg = getattr(model, "config", None)
    vocab = getattr(model, "vocab_size", None) or getattr(cfg, "vocab_size", None)
    max_len = getattr(model, "max_seq_len", None) or getattr(cfg, "max_seq_len", None)
    return vocab, max_len


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    if amp and device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_vocab(x: torch.Tensor, vocab: int | None, stream: TokenStream) -> None:
    if vocab is not None and x.numel() and int(x.max()) >= vocab:
        raise DataError(
            f"token stream {stream.name!r} holds id {int(x.max())}, outside the model's vocabulary of {vocab}"
        )


@torch.no_grad()
def eval_nll_sum(
    model: nn.Module,
    stream: TokenStream,
    *,
    seq_len: int,
    max_tokens: int | None = None,
    batch_size: int = 16,
    amp: bool = False,
) -> tuple[float, int]:
    """(total NLL in nats, number of predicted tokens) over the stream's fixed evaluation blocks."""
    device = _model_device(model)
    vocab, _ = _model_limits(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for x, y in stream.sequential_batches(batch_size, seq_len, max_tokens=max_tokens):
            _check_vocab(x, vocab, stream)
            x, y = x.to(device), y.to(device)
            with _autocast(device, amp):
                logits = model(x)
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(),
                y.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
            total += float(nll)
            count += int((y != IGNORE_INDEX).sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise DataError(f"eval set {stream.name!r} has no tokens to predict at seq_len {seq_len}")
    return total, count


def evaluate_lm(
    model: nn.Module,
    stream: TokenStream,
    max_tokens: int | None = None,
    *,
    seq_len: int | None = None,
    batch_size: int = 16,
    amp: bool = False,
) -> float:
    """Mean NLL (nats per predicted token) on a fixed set of blocks (see
    :meth:`TokenStream.eval_block_ids`); ``seq_len`` defaults to the model's ``max_seq_len``."""
    if seq_len is None:
        _, seq_len = _model_limits(model)
        if seq_len is None:
            raise ConfigError("evaluate_lm: give seq_len (the model does not declare max_seq_len)")
    total, count = eval_nll_sum(
        model, stream, seq_len=seq_len, max_tokens=max_tokens, batch_size=batch_size, amp=amp
    )
    return total / count


def bits_per_byte(nll_nats_per_token: float, tokens: int, n_bytes: int) -> float:
    """The Equal-Info paper's bits/byte: (tokens / bytes) * NLL / ln 2, i.e. the token loss in bits
    divided by the compression ratio bytes/token."""
    if n_bytes <= 0:
        raise ConfigError(f"bits_per_byte: byte count must be positive, got {n_bytes}")
    return (tokens / n_bytes) * nll_nats_per_token / math.log(2)


def train_lm(
    model: nn.Module,
    train: TokenStream,
    config: TrainConfig,
    *,
    eval_sets: dict[str, TokenStream] | None = None,
    progress: bool = True,
    on_eval: EvalCallback | None = None,
    work_dir: str | Path | None = None,
    checkpoint_every_s: float | None = 600.0,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Train ``model`` in place on random blocks of ``train``; the model is left on the training
    device, in eval mode. See the module docstring for the determinism guarantee.

    With ``work_dir`` the run is resumable (:mod:`compresslm.models.resume`): it continues from the
    checkpoint found there, if any, and writes one every ``checkpoint_every_s`` seconds of wall
    time (None: only at the end) and when it stops. ``stop_after_steps`` ends this call after that
    many steps *of this call* (checkpointed), to run a long schedule in slices; the result then
    covers the steps done so far, ``stopped_early`` is False and ``steps < config.total_steps``.
    """
    eval_sets = eval_sets or {}
    device = resolve_device(config.device)
    vocab, max_len = _model_limits(model)
    if max_len is not None and config.seq_len > max_len:
        raise ConfigError(f"TrainConfig.seq_len {config.seq_len} exceeds the model's max_seq_len {max_len}")
    eval_bs = config.eval_batch_size or config.batch_size
    result = TrainResult(model=model, config=config)
    fork_devices = [device.index or 0] if device.type == "cuda" else []

    with torch_threads(config.threads), torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(config.seed)
        model.to(device)
        model.train()
        optimizer = configure_optimizer(
            model, lr=config.lr, weight_decay=config.weight_decay, betas=config.betas, eps=config.eps
        )
        params = [p for group in optimizer.param_groups for p in group["params"]]
        rng = np.random.default_rng(config.seed)
        t_start = time.perf_counter()
        resumed = None
        if work_dir is not None:
            resumed = load_checkpoint(work_dir, model, optimizer, config.to_dict())
        rewarm: Rewarm | None = None
        if resumed is not None:
            rng.bit_generator.state = resumed.rng_state
            result.curve = list(resumed.curve)
            result.train_s = resumed.train_s
            t_start -= resumed.elapsed_s
            result.resumed_step = resumed.step
            rewarm = _rewarm_on_resume(resumed, config, optimizer)

        def evaluate_into(entry: dict[str, Any]) -> bool:
            for name, stream in eval_sets.items():
                entry[f"eval/{name}"] = evaluate_lm(
                    model,
                    stream,
                    config.eval_tokens,
                    seq_len=config.seq_len,
                    batch_size=eval_bs,
                    amp=config.amp,
                )
            model.train()
            entry["elapsed_s"] = time.perf_counter() - t_start
            return bool(on_eval(entry)) if on_eval is not None else False

        def new_entry(
            step: int, lr: float, train_loss: float | None, grad_norm: float | None
        ) -> dict[str, Any]:
            return {
                "tokens": step * config.tokens_per_step,
                "step": step,
                "lr": lr,
                "train_loss": train_loss,
                "grad_norm": grad_norm,
                "elapsed_s": time.perf_counter() - t_start,
                "train_s": result.train_s,
            }

        if eval_sets and config.eval_at_start and resumed is None:
            entry = new_entry(0, lr_at(0, config), None, None)
            result.stopped_early = evaluate_into(entry)
            result.curve.append(entry)

        every = config.eval_every_tokens
        next_eval = every if every is not None else None
        loss_sum = torch.zeros((), device=device)  # summed on device: no host sync per step
        loss_steps = 0
        step = 0
        if resumed is not None:
            step, loss_steps, next_eval = resumed.step, resumed.loss_steps, resumed.next_eval
            loss_sum.fill_(resumed.loss_sum)

        def checkpoint() -> None:
            state = TrainState(
                step=step,
                config=config.to_dict(),
                rng_state=rng.bit_generator.state,
                loss_sum=float(loss_sum),
                loss_steps=loss_steps,
                next_eval=next_eval,
                train_s=result.train_s,
                elapsed_s=time.perf_counter() - t_start,
                curve=result.curve,
                rewarm=None if rewarm is None else dict(rewarm.__dict__),
            )
            save_checkpoint(work_dir, model, optimizer, state)  # type: ignore[arg-type]

        bar = progress_bar(
            total=config.total_steps * config.tokens_per_step,
            initial=step * config.tokens_per_step,
            unit="tok",
            unit_scale=True,
            disable=not progress,
            desc="train",
        )
        first_step, last_save = step, time.perf_counter()
        try:
            while step < config.total_steps and not result.stopped_early:
                if stop_after_steps is not None and step - first_step >= stop_after_steps:
                    break
                t_step = time.perf_counter()
                lr = lr_at(step, config)
                if rewarm is not None:
                    lr = rewarm.apply(step, lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, y = train.sample_batch(config.batch_size, config.seq_len, rng)
                _check_vocab(x, vocab, train)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with _autocast(device, config.amp):
                    logits = model(x)
                batch_loss = lm_loss(logits, y, IGNORE_INDEX)
                optimizer.zero_grad(set_to_none=True)
                batch_loss.backward()
                max_norm = config.grad_clip if config.grad_clip is not None else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                optimizer.step()
                loss_sum += batch_loss.detach()
                loss_steps += 1
                step += 1
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                result.train_s += time.perf_counter() - t_step
                bar.update(config.tokens_per_step)

                tokens = step * config.tokens_per_step
                due_eval = bool(eval_sets) and (
                    step == config.total_steps or (next_eval is not None and tokens >= next_eval)
                )
                if due_eval or step % config.log_every_steps == 0 or step == config.total_steps:
                    mean_loss = float(loss_sum) / loss_steps
                    loss_sum.zero_()
                    loss_steps = 0
                    entry = new_entry(step, lr, mean_loss, float(grad_norm))
                    bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                    if due_eval:
                        while next_eval is not None and tokens >= next_eval:
                            next_eval += every  # type: ignore[operator]
                        result.stopped_early = evaluate_into(entry)
                    result.curve.append(entry)
                if (
                    work_dir is not None
                    and checkpoint_every_s is not None
                    and time.perf_counter() - last_save >= checkpoint_every_s
                ):
                    checkpoint()
                    last_save = time.perf_counter()
        finally:
            bar.close()
        if work_dir is not None and step > first_step:
            checkpoint()
        model.eval()
        result.steps = step
        result.tokens = step * config.tokens_per_step
        result.elapsed_s = time.perf_counter() - t_start
    return result


def _rewarm_on_resume(
    resumed: TrainState, config: TrainConfig, optimizer: torch.optim.Optimizer
) -> Rewarm | None:
    """The re-warm of a resumed run: the checkpoint's own when its length is unchanged (a run
    resumed again replays the same rates), a new one from the last rate used when ``max_tokens``
    changed (see :class:`~compresslm.models.resume.Rewarm`)."""
    if resumed.config.get("max_tokens") == config.max_tokens:
        return None if resumed.rewarm is None else Rewarm(**resumed.rewarm)
    last_lr = float(optimizer.param_groups[0]["lr"])
    return Rewarm(step=resumed.step, lr=last_lr, steps=config.n_warmup_steps)
