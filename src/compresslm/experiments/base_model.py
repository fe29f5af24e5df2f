"""The base model of the selection study: pretrained once on the generic built-in mixture, cached.

Every selection is fine-tuned from the same starting point, so the study needs a model that already
knows "text" but not the target (docs/design.md#the-selection-study). Without ``--base-model`` the tool pretrains our
byte-level transformer on ``builtin:mixture`` (all stdlib domains by natural proportion; held-out
Python files never enter it, so the Python targets stay unseen) and caches it under
``<cache>/base-models/<key>/`` as safetensors + JSON (:mod:`compresslm.models.checkpoint`). The key
is a hash of everything that determines the weights: model shape, training settings and the sha256
of the training bytes, so a changed stdlib or setting trains a new model instead of reusing a stale
one. The cache folder is ``$COMPRESSLM_CACHE``, else ``$XDG_CACHE_HOME/compresslm``, else
``~/.cache/compresslm``.

A base model may also be given by path: a compresslm checkpoint folder (byte-level), or a local
Hugging Face causal LM folder with its tokenizer (tokens are then that tokenizer's tokens).

Token unit: a byte-level model's "tokens" are UTF-8 bytes (plus one NUL separator after each
document, see :func:`~compresslm.models.data.bytes_to_tokens`); an HF model's are its tokenizer's.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn

from compresslm.errors import ConfigError, OutputExistsError

BYTE_VOCAB = 256
CACHE_ENV = "COMPRESSLM_CACHE"
_KEY_VERSION = 1  # bump when the pretraining recipe changes in a way the key does not capture


def cache_root() -> Path:
    """``$COMPRESSLM_CACHE``, else ``$XDG_CACHE_HOME/compresslm``, else ``~/.cache/compresslm``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "compresslm"


@dataclass(frozen=True)
class PretrainSettings:
    """How the default base model is pretrained (every field enters the cache key)."""

    size: str = "small"  # a preset of compresslm.models.transformer.SIZES
    seq_len: int = 256
    mixture_docs: int = 10_000  # documents of builtin:mixture
    tokens: int = 2_000_000  # training tokens (bytes)
    batch_size: int = 16
    lr: float = 3e-3
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    seed: int = 0
    heldout_fraction: float = 0.02  # tail of the mixture held out to report the model's own loss

    def __post_init__(self) -> None:
        if not 0.0 < self.heldout_fraction < 0.5:
            raise ConfigError(f"heldout_fraction must be in (0, 0.5), got {self.heldout_fraction}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")


@dataclass
class BaseModel:
    """A starting point for fine-tuning, with the way to turn texts into its tokens.

    ``fresh()`` returns an independent copy of the weights each call, so runs never share state.
    """

    model: nn.Module
    kind: str  # "compresslm" (byte level) or "hf"
    unit: str  # "bytes" or "tokens"
    max_seq_len: int
    encode: Callable[[Sequence[str]], np.ndarray]  # texts -> one packed 1-D token stream
    source: str  # where it came from (cache folder or the given path)
    tokenizer: str | None = None  # tokenizer.json of an HF model, for token budgets
    info: dict[str, Any] = field(default_factory=dict)

    def fresh(self) -> nn.Module:
        return copy.deepcopy(self.model)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "unit": self.unit,
            "max_seq_len": self.max_seq_len,
            "source": self.source,
            "tokenizer": self.tokenizer,
            **self.info,
        }


def encode_bytes(texts: Sequence[str]) -> np.ndarray:
    """UTF-8 bytes of each text, each followed by a NUL separator (the byte model's vocabulary)."""
    from compresslm.models.data import bytes_to_tokens

    return bytes_to_tokens(texts)


def pretrain_key(settings: PretrainSettings, data_sha256: str) -> str:
    """Cache key: sha256 over the settings, the training data and the recipe version (16 hex)."""
    payload = json.dumps(
        {"v": _KEY_VERSION, "settings": asdict(settings), "data": data_sha256}, sort_keys=True
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def mixture_stream(
    settings: PretrainSettings, texts: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) byte streams of ``builtin:mixture`` (or of ``texts``): the held-out part is
    the last ``heldout_fraction`` of the documents."""
    if texts is None:
        from compresslm.data.builtin import generic_mixture

        texts = [r.text for r in generic_mixture(settings.mixture_docs)]
    cut = max(1, int(len(texts) * (1 - settings.heldout_fraction)))
    if cut >= len(texts):
        raise ConfigError(f"a pretraining corpus of {len(texts)} documents is too small to hold some out")
    return encode_bytes(texts[:cut]), encode_bytes(texts[cut:])


def pretrain_base_model(
    settings: PretrainSettings = PretrainSettings(),
    *,
    texts: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> BaseModel:
    """The cached base model for ``settings``, pretraining and caching it first if needed.

    ``texts`` replaces the built-in mixture as the pretraining corpus (its bytes enter the cache
    key like the mixture's do).
    """
    from compresslm.models.checkpoint import CONFIG_FILE, load_model, save_model
    from compresslm.models.train import TrainConfig, evaluate_lm, train_lm
    from compresslm.models.transformer import Transformer, config_for_size

    say = log or (lambda _msg: None)
    train, heldout = mixture_stream(settings, texts)
    key = pretrain_key(settings, hashlib.sha256(train.tobytes() + b"|" + heldout.tobytes()).hexdigest())
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    folder = root / "base-models" / key
    if (folder / CONFIG_FILE).is_file():
        model, config, extra = load_model(folder)
        say(
            f"base model: cached at {folder} (held-out mixture loss {extra.get('heldout_loss', float('nan')):.4f})"
        )
        return _byte_model(model, config.max_seq_len, str(folder), extra)

    say(
        f"base model: pretraining '{settings.size}' on {settings.tokens:,} bytes of builtin:mixture "
        f"(cached afterwards in {folder})"
    )
    config = config_for_size(settings.size, BYTE_VOCAB, settings.seq_len)
    model = Transformer(config, seed=settings.seed)
    tc = TrainConfig(
        max_tokens=settings.tokens,
        batch_size=settings.batch_size,
        seq_len=settings.seq_len,
        lr=settings.lr,
        min_lr_ratio=settings.min_lr_ratio,
        warmup_fraction=settings.warmup_fraction,
        weight_decay=settings.weight_decay,
        seed=settings.seed,
        device=device,
        threads=threads,
        eval_at_start=False,
    )
    from compresslm.models.data import TokenStream

    t0 = time.perf_counter()
    result = train_lm(model, TokenStream(train, name="mixture"), tc, progress=progress)
    model.to("cpu")
    heldout_loss = evaluate_lm(model, TokenStream(heldout, name="mixture-heldout"), seq_len=settings.seq_len)
    extra = {
        "recipe": "pretrained on builtin:mixture" if texts is None else "pretrained on given texts",
        "settings": asdict(settings),
        "key": key,
        "heldout_loss": heldout_loss,
        "train_bytes": int(train.size),
        "seconds": time.perf_counter() - t0,
        "final_train_loss": result.curve[-1].get("train_loss") if result.curve else None,
    }
    _save_atomically(folder, lambda tmp: save_model(tmp, model, extra=extra))
    say(f"base model: done in {extra['seconds']:.0f} s, held-out mixture loss {heldout_loss:.4f}")
    return _byte_model(model, settings.seq_len, str(folder), extra)


def _save_atomically(folder: Path, save: Callable[[Path], object]) -> None:
    """Write through :func:`~compresslm.data.writers.atomic_folder`: a concurrent or interrupted
    run never sees a half-written cache entry (if another process won the race, its identical
    entry is kept)."""
    from compresslm.data.writers import atomic_folder

    try:
        with atomic_folder(folder) as tmp:
            save(tmp)
    except OutputExistsError:
        if not folder.is_dir():
            raise


def _byte_model(model: nn.Module, max_seq_len: int, source: str, extra: dict[str, Any]) -> BaseModel:
    info = {
        "heldout_loss": extra.get("heldout_loss"),
        "recipe": extra.get("recipe"),
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    return BaseModel(
        model=model,
        kind="compresslm",
        unit="bytes",
        max_seq_len=max_seq_len,
        encode=encode_bytes,
        source=source,
        info=info,
    )


def load_base_model(path: str | Path) -> BaseModel:
    """A compresslm checkpoint folder (byte level) or a local Hugging Face causal LM folder."""
    from compresslm.models.checkpoint import CONFIG_FILE, load_model, read_checkpoint_meta

    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"--base-model {path}: not a folder (a compresslm checkpoint or a local HF model)")
    config_path = folder / CONFIG_FILE
    if config_path.is_file():
        try:
            is_ours = json.loads(config_path.read_text(encoding="utf-8")).get("format") is not None
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            is_ours = False
        if is_ours:
            read_checkpoint_meta(folder)  # validates the format
            model, config, extra = load_model(folder)
            if config.vocab_size < BYTE_VOCAB:
                raise ConfigError(f"--base-model {path}: vocabulary {config.vocab_size} is not byte level")
            return _byte_model(model, config.max_seq_len, str(folder), extra)
    return _hf_base_model(folder)


def _hf_base_model(folder: Path) -> BaseModel:
    from compresslm.models.data import pack_documents
    from compresslm.models.hf import load_hf_causal_lm, load_hf_tokenizer

    model = load_hf_causal_lm(folder)
    tokenizer = load_hf_tokenizer(folder)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError(
            f"--base-model {folder}: the tokenizer has no end-of-sequence token to separate documents"
        )
    tokenizer_json = folder / "tokenizer.json"

    def encode(texts: Sequence[str]) -> np.ndarray:
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return pack_documents(ids, eos)

    max_len = model.max_seq_len or 1024
    return BaseModel(
        model=model,
        kind="hf",
        unit="tokens",
        max_seq_len=max_len,
        encode=encode,
        source=str(folder),
        tokenizer=str(tokenizer_json) if tokenizer_json.is_file() else None,
        info={"n_params": sum(p.numel() for p in model.parameters())},
    )
