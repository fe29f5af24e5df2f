"""Train M2 (the shared transformer) on a token dataset's training split, and load it back.

Every scheme trains the same architecture with the same optimiser on its own token stream, so the
held-out bits/byte (see :mod:`compresslm.m2.evaluate`) compare tokenizations, not training recipes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compresslm.errors import ConfigError
from compresslm.tokenizers.dataset import TokenDataset

DEFAULT_SEQ_LEN = 128


@dataclass
class M2Config:
    """How to train M2. ``max_tokens`` counts every position of every batch (padding included)."""

    size: str = "tiny"
    seq_len: int = DEFAULT_SEQ_LEN
    batch_size: int = 16
    max_tokens: int = 200_000
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    eval_every_tokens: int | None = None
    eval_tokens: int | None = 32_768  # per curve point; the final evaluation reads the whole split
    activation: str = "gelu"

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ConfigError(f"--seq-len must be at least 2, got {self.seq_len}")


def as_dataset(dataset: TokenDataset | str | Path) -> TokenDataset:
    """A :class:`TokenDataset`, opened from its folder when given a path."""
    return dataset if isinstance(dataset, TokenDataset) else TokenDataset(dataset)


def train_m2(
    dataset: TokenDataset | str | Path,
    config: M2Config,
    out_dir: str | Path | None = None,
    *,
    force: bool = False,
    progress: bool = False,
    eval_split: str | None = "val",
) -> tuple[Any, dict[str, Any]]:
    """Train M2 on ``dataset``'s training split; save it to ``out_dir`` (safetensors) if given.

    Returns ``(model, summary)``; the summary (also stored in the checkpoint's ``extra``) holds the
    training configuration, the loss curve (held-out NLL at each evaluation) and wall times.
    """
    from compresslm.models import TrainConfig, Transformer, config_for_size, save_model, train_lm

    ds = as_dataset(dataset)
    if out_dir is not None and (Path(out_dir) / "config.json").exists() and not force:
        from compresslm.errors import OutputExistsError

        raise OutputExistsError(f"{Path(out_dir) / 'config.json'} exists; pass --force to overwrite it")
    model_config = config_for_size(config.size, ds.vocab_size, config.seq_len, activation=config.activation)
    model = Transformer(model_config, seed=config.seed)
    train = ds.token_stream("train", config.seq_len)
    eval_sets = {}
    if eval_split is not None and ds.split_info(eval_split)["documents"]:
        eval_sets[eval_split] = ds.token_stream(eval_split, config.seq_len)
    tc = TrainConfig(
        max_tokens=config.max_tokens,
        batch_size=config.batch_size,
        seq_len=config.seq_len,
        lr=config.lr,
        seed=config.seed,
        device=config.device,
        threads=config.threads,
        eval_every_tokens=config.eval_every_tokens,
        eval_tokens=config.eval_tokens,
    )
    result = train_lm(model, train, tc, eval_sets=eval_sets, progress=progress)
    summary = {
        "dataset": str(ds.directory),
        "scheme": ds.meta["scheme"],
        "name": ds.name,
        "tokenizer": ds.meta["tokenizer"],
        "m2": asdict(config),
        "train_config": tc.to_dict(),
        "curve": result.curve,
        "steps": result.steps,
        "tokens": result.tokens,
        "train_seconds": result.train_s,
        "elapsed_seconds": result.elapsed_s,
        "params_non_embedding": model.n_params(non_embedding=True),
        "params_total": model.n_params(non_embedding=False),
    }
    if out_dir is not None:
        save_model(out_dir, model.to("cpu"), extra={"m2": summary}, force=force)
    return model, summary


def load_m2(model_dir: str | Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """(model, the summary saved by :func:`train_m2`) from a checkpoint folder."""
    from compresslm.models import load_model

    model, _, extra = load_model(model_dir, device=device)
    return model, extra.get("m2", {})
