"""JSON files: one writer (atomic, numpy-aware) and one reader for files stamped with a format.

Every metadata file compresslm writes for itself (a checkpoint's ``config.json``, a tokenizer's
``tokenizer.json``, a token dataset's ``meta.json``) carries ``format`` and ``format_version``, so a
reader can refuse what it does not understand instead of misreading it. :func:`read_versioned_json`
is that check, written once; its errors name the file.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "meta.json"
>>> _ = write_json(path, {"format": "demo", "format_version": 1, "n": np.int64(3)})
>>> read_versioned_json(path, "demo", 1)["n"]
3
>>> read_versioned_json(path, "demo", 2)
Traceback (most recent call last):
...
compresslm.errors.IntegrityError: .../meta.json: format_version 1 is not supported (this version reads 2)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from compresslm.errors import ConfigError, IntegrityError


def json_default(value: Any) -> Any:
    """Values JSON has no type for: numpy scalars and arrays as numbers and lists, anything else
    (paths, dates) as its ``str``, so a report never fails at its last step over a type."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path: str | Path, obj: Any, *, force: bool = False, **dump_options: Any) -> Path:
    """Write ``obj`` as one JSON document with a final newline, atomically
    (:func:`~compresslm.data.writers.atomic_output`: refuses an existing file unless ``force``).
    ``dump_options`` go to :func:`json.dump` (``indent`` defaults to 2, ``default`` to
    :func:`json_default`)."""
    from compresslm.data.writers import atomic_output

    dump_options.setdefault("indent", 2)
    dump_options.setdefault("default", json_default)
    with atomic_output(path, force=force, mode="w") as f:
        json.dump(obj, f, **dump_options)
        f.write("\n")
    return Path(path)


def read_versioned_json(
    path: str | Path, fmt: str, version: int, *, missing: str | None = None
) -> dict[str, Any]:
    """The JSON object in ``path``, checked to carry ``format == fmt`` and ``format_version ==
    version``. Raises :class:`IntegrityError` naming the file for unreadable JSON, anything but an
    object, another format or another version. A missing file is a :class:`ConfigError` saying
    ``missing`` (what the folder should have been: "not a tokenizer folder")."""
    path = Path(path)
    if missing is not None and not path.is_file():
        raise ConfigError(f"{path}: {missing}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{path}: invalid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise IntegrityError(f"{path}: not a {fmt} file")
    if meta.get("format_version") != version:
        raise IntegrityError(
            f"{path}: format_version {meta.get('format_version')!r} is not supported (this version reads {version})"
        )
    return meta
