"""Optional: a local Hugging Face causal LM behind the same interface as our Transformer.

:class:`HFCausalLM` wraps any ``AutoModelForCausalLM`` so that ``forward(idx[B, T])`` returns
logits ``[B, T, V]``; :func:`~compresslm.models.train.train_lm` and
:func:`~compresslm.models.train.evaluate_lm` then fine-tune and evaluate it unchanged (the selection
study's "any local Hugging Face causal LM given by path", docs/design.md#the-selection-study).

``transformers`` is an optional extra (``pip install 'compresslm[hf]'``), imported lazily. Models
load from a local path only (``local_files_only=True``): nothing is downloaded; and from safetensors
only (``use_safetensors=True``): a ``pytorch_model.bin`` (pickle) is refused, never unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from compresslm.errors import ConfigError


def import_transformers() -> Any:
    """The ``transformers`` module, or a ConfigError that says how to install it."""
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError(
            "a Hugging Face model needs the optional 'transformers' package: pip install 'compresslm[hf]'"
        ) from exc
    return transformers


class HFCausalLM(nn.Module):
    """Thin adapter: ``forward(idx) -> logits``; ``vocab_size`` and ``max_seq_len`` for checks."""

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model

    @property
    def vocab_size(self) -> int:
        # The output layer's size, which may exceed config.vocab_size after resize_token_embeddings.
        head = self.hf.get_output_embeddings()
        return int(head.weight.shape[0]) if head is not None else int(self.hf.config.vocab_size)

    @property
    def max_seq_len(self) -> int | None:
        cfg = self.hf.config
        for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
            value = getattr(cfg, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=idx, use_cache=False).logits  # (B, T, V)

    def save(self, directory: str | Path, *, force: bool = False) -> Path:
        """``save_pretrained`` (safetensors) through :func:`~compresslm.data.writers.atomic_folder`:
        an interrupted save never leaves a half-written model, and ``force`` replaces only a
        folder that holds a saved model (a ``config.json``)."""
        from compresslm.data.writers import atomic_folder

        with atomic_folder(
            directory, force=force, owned=lambda p: (p / "config.json").is_file(), what="a saved model"
        ) as tmp:
            self.hf.save_pretrained(tmp, safe_serialization=True)
        return Path(directory)


def _check_local(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: not a local Hugging Face model directory (nothing is downloaded)")
    return path


def load_hf_causal_lm(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> HFCausalLM:
    """Load a causal LM saved with ``save_pretrained`` from a local directory."""
    path = _check_local(path)
    transformers = import_transformers()
    kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": True}  # never pickle
    if dtype is not None:
        kwargs["torch_dtype"] = dtype  # "dtype" only from transformers 4.56; this works on both
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot load a causal LM: {exc}") from exc
    return HFCausalLM(model).to(device)


def load_hf_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved beside a local model (``AutoTokenizer``, local files only)."""
    path = _check_local(path)
    transformers = import_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot load a tokenizer: {exc}") from exc
