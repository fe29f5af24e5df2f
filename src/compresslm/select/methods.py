"""Selection methods by name, so the CLI, the pipeline and the study build them the same way.

A method spec is ``name[:variant]``. Variants name common settings so one study can compare the
paper's setting with ours in a single run:

* ``zipfit`` (the default mode: LZ4, documents scored by 512-byte pieces, background contrast, at
  most 64 sampled targets), ``zipfit:gzip9`` (the paper: whole documents, every target, no
  contrast), ``zipfit:lz4`` (= the default mode), ``zipfit:zstd3``; modifiers: ``+contrast`` /
  ``+contrast=N`` (background contrast, N documents), ``+nocontrast``, ``+targets=N`` (at most N
  sampled targets), ``+all`` (every target), ``+chunk=N`` (pieces of about N bytes),
  ``+chunks=N`` (at most N pieces per document), ``+whole`` (whole documents), ``+nodict`` /
  ``+dict`` (without / with the dictionary contrast); e.g.
  ``zipfit:lz4+nocontrast+all+whole`` is plain ZIP-FIT with LZ4, ``zipfit:gzip9+contrast``;
* ``dsir`` (Gumbel top-k), ``dsir:topk`` (plain top-k by importance weight);
* ``d4``; ``d4:hashing`` (the cheap embedding backend, not the paper's);
* ``random``;
* ``compel`` (target-free: LZ4 compression ratio in a band, default [0.65, 0.80]); ``compel:LOW,HIGH``
  sets the band.

Options given explicitly (``compressor=...``) override what a variant implies.
"""

from __future__ import annotations

import re
from typing import Any

from compresslm.errors import ConfigError
from compresslm.select.base import SelectionMethod

METHODS = ("zipfit", "dsir", "d4", "random", "compel")


def _zipfit_variant(variant: str) -> dict[str, Any]:
    """``gzip9`` -> gzip:9, ``lz4+contrast`` -> lz4 with background contrast."""
    opts: dict[str, Any] = {}
    parts = variant.split("+")
    comp = parts[0]
    for extra in parts[1:]:
        key, eq, value = extra.partition("=")
        if eq and not value.isdigit() and not (key == "targets" and value == "all"):
            raise ConfigError(f"zipfit variant modifier '+{extra}' needs a count, e.g. +{key}=16")
        if key == "contrast":
            opts["contrast"] = "background"
            if eq:
                opts["contrast_size"] = int(value)
        elif key == "nocontrast" and not eq:
            opts["contrast"] = "none"
        elif key == "all" and not eq:
            opts["max_targets"] = 0
        elif key == "targets" and eq:
            opts["max_targets"] = 0 if value == "all" else int(value)
        elif key == "chunk" and eq:
            opts["chunk"] = int(value)
        elif key == "chunks" and eq:
            opts["max_chunks"] = int(value)
        elif key in ("dict", "nodict") and not eq:
            opts["dictionary"] = key == "dict"
        elif key == "whole" and not eq:
            opts["chunk"] = 0
        else:
            raise ConfigError(
                f"unknown zipfit variant modifier '+{extra}' (known: +contrast, +contrast=N, +nocontrast, "
                "+targets=N, +all, +chunk=N, +chunks=N, +whole, +dict, +nodict)"
            )
    from compresslm.compressors.registry import list_compressors

    if comp in {info.name for info in list_compressors()}:  # "lz4" is a name, not "lz" at level 4
        opts["compressor"] = comp
    elif comp:
        m = re.fullmatch(r"([a-z0-9]+?)(?::?(\d+))?", comp)
        if not m:
            raise ConfigError(f"bad zipfit variant '{variant}'")
        name, level = m.group(1), m.group(2)
        opts["compressor"] = f"{name}:{level}" if level else name
    return opts


def make_method(spec: str, **options: Any) -> SelectionMethod:
    """Build a selection method from ``name[:variant]`` plus keyword options (None = default)."""
    name, _, variant = spec.partition(":")
    options = {k: v for k, v in options.items() if v is not None}
    if name == "zipfit":
        from compresslm.select.zipfit import ZipFit

        opts = _zipfit_variant(variant) if variant else {}
        opts.update({k: v for k, v in options.items() if k in _ZIPFIT_KEYS})
        return ZipFit(**opts)
    if name == "dsir":
        from compresslm.select.dsir import DSIR

        opts = {"sampling": variant} if variant else {}
        opts.update({k: v for k, v in options.items() if k in _DSIR_KEYS})
        return DSIR(**opts)
    if name == "d4":
        from compresslm.select.d4 import D4

        opts = {"embedder": variant} if variant else {}
        opts.update({k: v for k, v in options.items() if k in _D4_KEYS})
        return D4(**opts)
    if name == "random":
        from compresslm.select.random_select import RandomSelection

        return RandomSelection(**{k: v for k, v in options.items() if k == "seed"})
    if name == "compel":
        from compresslm.select.compel import Compel, parse_band

        opts = {"band": parse_band(variant)} if variant else {}
        opts.update({k: v for k, v in options.items() if k in _COMPEL_KEYS})
        return Compel(**opts)
    raise ConfigError(f"unknown selection method '{spec}' (choose from: {', '.join(METHODS)})")


_ZIPFIT_KEYS = {
    "compressor",
    "contrast",
    "contrast_size",
    "workers",
    "seed",
    "batch_size",
    "max_targets",
    "chunk",
    "max_chunks",
    "dictionary",
}
_DSIR_KEYS = {
    "sampling",
    "seed",
    "num_buckets",
    "ngrams",
    "min_example_length",
    "workers",
    "keep_features_mb",
}
_D4_KEYS = {"embedder", "seed", "cache_dir", "n_clusters", "workers"}
_COMPEL_KEYS = {"band", "seed"}
