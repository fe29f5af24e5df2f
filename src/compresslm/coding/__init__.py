"""Neural compression with Equal-Info windows (docs/design.md#neural-compression).

* :mod:`~compresslm.coding.intervals`, :mod:`~compresslm.coding.window_coder` (the per-row
  reference), :mod:`~compresslm.coding.window_vector` (the same coder in numpy over all rows, the
  default), :mod:`~compresslm.coding.packing`: the exact integer window coder (no torch);
* :mod:`~compresslm.coding.m1`, :mod:`~compresslm.coding.m1_train`: M1, its deterministic
  inference path and its training; :mod:`~compresslm.coding.exact` (with the numpy reference
  :mod:`~compresslm.coding.exact_ref` and :mod:`~compresslm.coding.m1_qat`): the integer-exact M1,
  whose tables are the same on every machine (docs/numerics.md);
* :mod:`~compresslm.coding.equal_info`: ``EqualInfoCoder(model, window_bits=16)``;
* :mod:`~compresslm.coding.container`, :mod:`~compresslm.coding.header`,
  :mod:`~compresslm.coding.layout`, :mod:`~compresslm.coding.compress`: the .clm file (its format:
  docs/clm-format.md) and compress / decompress / inspect.

Names below are imported lazily, so the pure coder can be used without loading torch. The
file-level functions live in their module: ``from compresslm.coding.compress import compress,
decompress, inspect`` (a package attribute named ``compress`` would clash with that module).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CoderParams": "intervals",
    "Window": "window_coder",
    "CallableModel": "window_coder",
    "exception_table": "window_coder",
    "M1": "m1",
    "ExactM1": "m1",
    "train_m1": "m1_train",
    "quantize_m1": "m1_train",
    "EqualInfoCoder": "equal_info",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
