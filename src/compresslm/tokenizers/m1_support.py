"""M1 for the tokenizers: a copy of the checkpoint inside the tokenizer folder, verified on load.

A token dataset must decode with exactly the M1 that made it, so the tokenizer folder carries the
checkpoint (``m1/``), its weights' sha256 and the numerics fingerprint (docs/design.md#m1-numerics) (computed on
this machine at save time). Loading recomputes both: a different model or different numerics is an
IntegrityError, never silent garbage.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compresslm.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    from compresslm.coding.m1 import M1

M1_DIR = "m1"


def load_m1(directory: str | Path, *, threads: int | None = None) -> M1:
    from compresslm.coding.m1 import M1

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ConfigError(
            f"{directory}: not an M1 checkpoint (config.json missing); train one with `m1 train`"
        )
    m1 = M1.load(directory, threads=threads)
    if m1.model.config.vocab_size != 256:
        raise ConfigError(
            f"{directory}: M1 must be a byte model (vocabulary 256), this one has "
            f"{m1.model.config.vocab_size}"
        )
    return m1


def save_m1(m1: M1, directory: str | Path) -> None:
    """Copy (or write) M1's checkpoint into ``directory / m1``."""
    from compresslm.models import save_model

    target = Path(directory) / M1_DIR
    if m1.path is not None and (Path(m1.path) / "config.json").is_file():
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name in ("model.safetensors", "config.json"):
            shutil.copy2(Path(m1.path) / name, target / name)
    elif m1.exact:
        m1.model.save(target, force=True)
    else:
        save_model(target, m1.model, force=True)


def m1_config(m1: M1, max_len: int) -> dict[str, Any]:
    from compresslm.coding.m1 import fingerprint

    return {
        "m1_sha256": m1.sha256,
        "m1_fingerprint": fingerprint(m1, max_len),
        "m1_params_non_embedding": m1.n_params,
        "m1_context": m1.max_context,
        "precision": m1.precision,
    }


def load_saved_m1(
    directory: str | Path, config: dict[str, Any], max_len: int, *, threads: int | None = None
) -> M1:
    """M1 from a tokenizer folder, checked against the sha256 and fingerprint in ``config``."""
    from compresslm.coding.m1 import ModelCheck, verify_model

    m1 = load_m1(Path(directory) / M1_DIR, threads=threads)
    if "m1_sha256" not in config or "m1_fingerprint" not in config:
        raise IntegrityError(f"{directory}: tokenizer.json lacks the M1 sha256/fingerprint")
    verify_model(m1, ModelCheck(config["m1_sha256"], config["m1_fingerprint"]), max_len, str(directory))
    return m1


def probabilities(cum: np.ndarray) -> np.ndarray:
    """Cumulative integer tables (rows, 257) -> the exact quantised probabilities (rows, 256)."""
    freq = np.diff(np.asarray(cum, dtype=np.int64), axis=-1).astype(np.float64)
    return freq / freq.sum(axis=-1, keepdims=True)
