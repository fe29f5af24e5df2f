"""Transformer checkpoints: a directory with ``model.safetensors`` and ``config.json``. Never pickle.

Layout and invariants:

* ``model.safetensors`` holds the state dict (a tied output layer is stored once, as ``wte.weight``)
  in the canonical serialisation of :func:`safetensors.torch.save` with fixed metadata, so the file
  bytes depend only on the tensors: :func:`weights_sha256` of a model equals the sha256 of the file
  that :func:`save_model` writes for it.
* ``config.json`` holds the :class:`TransformerConfig`, the caller's ``extra`` dict and the sha256 of
  the weights file. It is written last, so a directory with a ``config.json`` is complete;
  :func:`load_model` verifies the hash (a weights file replaced or damaged -> IntegrityError).
* Each file is written through :func:`compresslm.data.writers.atomic_output` (a temporary beside it,
  renamed into place), so files get the modes the umask gives, like any other output.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from compresslm.data.jsonfile import read_versioned_json
from compresslm.errors import ConfigError, IntegrityError, OutputExistsError
from compresslm.models.transformer import Transformer, TransformerConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "compresslm.transformer"
FORMAT_VERSION = 1
_METADATA = {"format": "pt"}


def _canonical_tensors(model: Transformer) -> dict[str, torch.Tensor]:
    """State dict on CPU, contiguous, without the alias of a tied output layer."""
    state = model.state_dict()
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)
    return {k: v.detach().to("cpu").contiguous() for k, v in sorted(state.items())}


def _weights_bytes(model: Transformer) -> bytes:
    return st_save(_canonical_tensors(model), metadata=_METADATA)


def _atomic_write(path: Path, data: bytes) -> None:
    from compresslm.data.writers import atomic_output

    with atomic_output(path, force=True, mode="wb") as f:
        f.write(data)


def save_model(
    directory: str | Path,
    model: Transformer,
    config: TransformerConfig | None = None,
    extra: dict[str, Any] | None = None,
    *,
    force: bool = False,
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created if missing).

    ``extra`` (JSON-serialisable) is stored verbatim, e.g. training metadata. An existing checkpoint
    in ``directory`` is only replaced with ``force=True``. Returns the directory.
    """
    directory = Path(directory)
    config = config if config is not None else model.config
    if config.to_dict() != model.config.to_dict():
        raise ConfigError("save_model: config does not match the model's own config")
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if (directory / name).exists() and not force:
            raise OutputExistsError(f"{directory / name} exists; pass force=True (--force) to overwrite")
    data = _weights_bytes(model)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "n_params": model.n_params(non_embedding=False),
        "n_params_non_embedding": model.n_params(non_embedding=True),
        "extra": extra or {},
    }
    try:
        meta_text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"save_model: extra is not JSON-serialisable: {exc}") from exc
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / WEIGHTS_FILE, data)
    _atomic_write(directory / CONFIG_FILE, meta_text.encode("utf-8"))  # last: marks completeness
    return directory


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint (format checked)."""
    path = Path(directory) / CONFIG_FILE
    return read_versioned_json(
        path, FORMAT, FORMAT_VERSION, missing="not a compresslm checkpoint (config.json missing)"
    )


def read_weights(
    path: Path, sha256: str | None, load: Callable[[bytes], dict[str, Any]] = st_load
) -> dict[str, Any]:
    """The tensors of a safetensors file whose sha256 must be ``sha256`` (from the checkpoint's
    config.json): a missing, replaced or damaged weights file is an IntegrityError naming it.
    ``load`` is safetensors' torch loader, or its numpy one for arrays."""
    if not path.is_file():
        raise IntegrityError(f"{path}: weights file missing")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise IntegrityError(f"{path}: sha256 {digest} does not match config.json ({sha256})")
    try:
        return load(data)
    except SafetensorError as exc:
        raise IntegrityError(f"{path}: unreadable safetensors file: {exc}") from exc


def load_model(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[Transformer, TransformerConfig, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_model`; returns ``(model in eval mode, config, extra)``.

    Raises IntegrityError when the weights do not match the hash in config.json or the config.
    """
    directory = Path(directory)
    meta = read_checkpoint_meta(directory)
    config = TransformerConfig.from_dict(meta["config"])
    weights_path = directory / WEIGHTS_FILE
    tensors = read_weights(weights_path, meta.get("weights_sha256"))
    # Shapes from a model on the meta device (no memory): a config that does not match its weights,
    # say one declaring a huge d_model, fails here instead of allocating the model it declares.
    with torch.device("meta"):
        expected = Transformer(config).state_dict()
    if config.tie_embeddings:
        expected.pop("lm_head.weight", None)
    if set(tensors) != set(expected):
        raise IntegrityError(f"{weights_path}: tensor names do not match the config")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape or tensor.dtype != expected[name].dtype:
            raise IntegrityError(
                f"{weights_path}: tensor {name} is {tuple(tensor.shape)} {tensor.dtype}, the config "
                f"needs {tuple(expected[name].shape)} {expected[name].dtype}"
            )
    model = Transformer(config)
    model.load_state_dict(tensors, strict=not config.tie_embeddings)
    model.to(device)
    model.eval()
    return model, config, meta.get("extra", {})


def weights_sha256(source: str | Path | Transformer) -> str:
    """sha256 of the checkpoint's weights file, or of the file :func:`save_model` would write for a
    model: the two agree, so a loaded model hashes the same as its directory."""
    if isinstance(source, Transformer):
        return hashlib.sha256(_weights_bytes(source)).hexdigest()
    path = Path(source)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
