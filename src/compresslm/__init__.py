"""compresslm: compression for language-model training data.

Two halves share one data layer, one compressor registry and one small transformer:

* selection by compression alignment (ZIP-FIT) with DSIR, D4 and random baselines;
* neural compression with Equal-Info Windows (M1 + an exact integer window coder).
"""

__version__ = "0.1.0"
