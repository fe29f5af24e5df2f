"""compresslm: compression for language-model training data.

Two halves share one data layer, one compressor registry and one small transformer:

* selection by compression alignment (ZIP-FIT) with DSIR, D4 and random baselines;
* neural compression with Equal-Info Windows (M1 + an exact integer window coder).
"""

__version__ = "0.1.0"

# The public API, imported lazily so `import compresslm` stays cheap (no torch unless needed).
_EXPORTS = {
    "zipfit_scores": "compresslm.select.zipfit",
    "alignment": "compresslm.select.zipfit",
    "ZipFit": "compresslm.select.zipfit",
    "select_top_k": "compresslm.select.topk",
    "get_compressor": "compresslm.compressors",
    "read_records": "compresslm.data.readers",
    "run_selection": "compresslm.select.pipeline",
    "SelectionSpec": "compresslm.select.pipeline",
    "make_method": "compresslm.select.methods",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'compresslm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
