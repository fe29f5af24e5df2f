"""M2: the language model trained on a token dataset, its evaluation and sampling from it.

* :mod:`compresslm.m2.train`: :func:`train_m2` / :func:`load_m2` (settings in :class:`M2Config`);
* :mod:`compresslm.m2.evaluate`: :func:`evaluate_m2`, bits/byte and its bounds on the held-out split;
* :mod:`compresslm.m2.generate`: :func:`generate`, ids sampled from M2 and decoded by the tokenizer.

The transformer and its training loop are shared with M1 and live in :mod:`compresslm.models`.
"""

from compresslm.m2.evaluate import M2Eval, evaluate_m2
from compresslm.m2.generate import Generation, generate, load_generation_tokenizer
from compresslm.m2.train import DEFAULT_SEQ_LEN, M2Config, load_m2, train_m2

__all__ = [
    "DEFAULT_SEQ_LEN",
    "Generation",
    "M2Config",
    "M2Eval",
    "evaluate_m2",
    "generate",
    "load_generation_tokenizer",
    "load_m2",
    "train_m2",
]
