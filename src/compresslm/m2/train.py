"""Train M2 (the shared transformer) on a token dataset's training split, and load it back.

Every scheme trains the same architecture with the same optimiser on its own token stream, so the
held-out bits/byte (see :mod:`compresslm.m2.evaluate`) compare tokenizations, not training recipes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import compresslm.m2.evaluate as evaluate
from compresslm.errors import ConfigError
from compresslm.m2.evaluate import as_dataset
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
    threads: int | None = 1  # models.train.DEFAULT_THREADS (not imported: keeps this module light)
    eval_every_tokens: int | None = None
    eval_tokens: int | None = 32_768  # per curve point; the final evaluation reads the whole split
    activation: str = "gelu"

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ConfigError(f"--seq-len must be at least 2, got {self.seq_len}")


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
        "tokenizer_sha256": dataset_tokenizer_identity(ds),
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


def dataset_tokenizer_identity(ds: TokenDataset) -> str:
    """The identity (:func:`~compresslm.tokenizers.registry.tokenizer_identity`) of ``ds``'s tokenizer."""
    from compresslm.tokenizers.dataset import TOKENIZER_DIR
    from compresslm.tokenizers.registry import tokenizer_identity

    return tokenizer_identity(ds.directory / TOKENIZER_DIR)


def check_tokenizer(summary: dict[str, Any], identity: str, *, model: str, tokenizer: str) -> None:
    """Refuse to pair an M2 with a tokenizer other than the one whose ids it learned.

    Two tokenizers of one vocabulary size (say EqualInfoAC over two M1s) fit the same M2 but give
    other ids for the same text: bits/byte would be wrong and samples garbage, without any error.
    An M2 saved before identities were recorded is accepted (nothing to check against).
    """
    recorded = summary.get("tokenizer_sha256")
    if recorded is not None and recorded != identity:
        raise ConfigError(
            f"{model} was trained on the ids of another tokenizer (sha256 {recorded[:12]}…, "
            f"{summary.get('name', '?')}) than {tokenizer} (sha256 {identity[:12]}…): use the token "
            "dataset it was trained on"
        )


def train_and_evaluate(
    dataset: TokenDataset | str | Path,
    config: M2Config,
    out_dir: str | Path,
    *,
    force: bool = False,
    progress: bool = False,
) -> tuple[Any, dict[str, Any], Any]:
    """Train M2, evaluate it on the held-out split, and only then save it with ``eval.json``.

    What ``compresslm train`` does. Nothing loadable is left behind by a run that fails or is
    interrupted, in training or in the final evaluation: the held-out split is checked first, and
    the checkpoint (whose ``config.json``, written last, marks it complete) is written once the
    evaluation has succeeded, with the evaluation inside it (``extra["eval"]``); ``eval.json`` is a
    copy written after it. Returns ``(model, summary, M2Eval)``.
    """
    from compresslm.data.writers import atomic_output, check_outputs_free
    from compresslm.models import save_model
    from compresslm.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE

    out = Path(out_dir)
    check_outputs_free([out / WEIGHTS_FILE, out / CONFIG_FILE, out / EVAL_FILE], force)
    ds = as_dataset(dataset)
    if not ds.split_info("val")["documents"]:
        raise ConfigError(
            f"{ds.directory} has no held-out documents (tokenized with --val-fraction 0); train evaluates "
            "M2 on them: tokenize again with --val-fraction above 0 (default 0.05)"
        )
    model, summary = train_m2(ds, config, None, progress=progress)
    result = evaluate.evaluate_m2(model, ds, extra={"train_seconds": summary["train_seconds"]})
    finite = {
        k: v for k, v in result.to_dict().items() if not (isinstance(v, float) and not math.isfinite(v))
    }
    save_model(out, model.to("cpu"), extra={"m2": summary, "eval": finite}, force=force)
    with atomic_output(out / EVAL_FILE, force=True) as f:
        json.dump(result.to_dict(), f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    return model, summary, result


EVAL_FILE = "eval.json"
