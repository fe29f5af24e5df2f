"""The M1 shipped with the package: what ``compress`` and ``tokenize`` use when no ``--model`` is given.

``compresslm compress FILE`` should just work, offline, and the file it writes should open on any
machine with the same package: so a trained M1 (the 3m shape, exact numerics) ships as package data
in ``compresslm/shipped/m1/`` (``model.safetensors``, ``config.json`` and ``MODEL_CARD.md``, which
says what it was trained on, for how long, its held-out bits/byte and its sha256).

A ``.clm`` records the path of the M1 that wrote it; that path is another one on another machine
(or after an upgrade moves the package), so decompression falls back to the shipped M1 when the
recorded folder is missing, and the weights' sha256 recorded in the file still decides whether it
is the right model.
"""

from __future__ import annotations

from pathlib import Path

from compresslm.errors import ConfigError

SHIPPED_M1_DIR = Path(__file__).resolve().parent.parent / "shipped" / "m1"
"""Where the package keeps its default M1."""
MODEL_CARD = "MODEL_CARD.md"


def has_default_m1() -> bool:
    """Whether this installation ships a default M1 (a checkpoint's ``config.json`` is present)."""
    return (SHIPPED_M1_DIR / "config.json").is_file()


def default_m1_path() -> Path:
    """The folder of the shipped M1; a clear error when this installation lacks it."""
    if not has_default_m1():
        raise ConfigError(
            f"no default M1 in this installation ({SHIPPED_M1_DIR} holds no config.json): pass --model "
            "M1_FOLDER (train one with `compresslm m1 train`)"
        )
    return SHIPPED_M1_DIR


def m1_or_default(model: str | Path | None) -> str | Path:
    """``model`` itself, or the shipped M1's folder when it is None."""
    return default_m1_path() if model is None else model
