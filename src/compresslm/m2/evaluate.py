"""Evaluation of M2 in the paper's metrics.

Metrics (Lester et al. 2024, §3.8; docs/design.md#tokenizers-and-m2), all on the held-out split, which holds the same
documents (the same bytes) for every scheme:

* bits/byte = total NLL of every held-out target (data ids and each document's end id), in bits,
  divided by the held-out UTF-8 bytes; equal to (tokens / bytes) * mean NLL / ln 2;
* bits/token = mean NLL / ln 2;
* compression ratio = held-out bytes / held-out data ids;
* FLOPs/byte = 2 * N / ratio, N the non-embedding parameters, plus 2 * N_M1 for schemes that run M1
  (one M1 forward per byte); the softmax over a 65,538-id vocabulary is not counted (the paper's
  convention), so wall time is reported beside it;
* bounds: uniform = log2(v) / ratio (a model that learned nothing), unigram = cross-entropy of the
  held-out data ids under the training split's id frequencies (add-1/2 smoothing) per byte.
  Both bounds leave out the end-of-document ids (one per document), M2's bits/byte includes them.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compresslm.errors import ConfigError
from compresslm.tokenizers.dataset import TokenDataset


def as_dataset(dataset: TokenDataset | str | Path) -> TokenDataset:
    """A :class:`TokenDataset`, opened from its folder when given a path."""
    return dataset if isinstance(dataset, TokenDataset) else TokenDataset(dataset)


@dataclass
class M2Eval:
    """One evaluation of an M2 on one split (see the module docstring for definitions)."""

    scheme: str
    name: str
    split: str
    bits_per_byte: float
    bits_per_token: float
    nll_nats: float
    targets: int
    bytes: int
    data_tokens: int
    compression_ratio: float
    uniform_bits_per_byte: float
    unigram_bits_per_byte: float
    flops_per_byte: float
    params_non_embedding: int
    params_total: int
    m1_params_non_embedding: int
    seconds: float
    targets_per_second: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def uniform_bits_per_byte(data_vocab_size: int, ratio: float) -> float:
    """log2(v) / ratio: the bits/byte of a model that predicts every data id with probability 1/v."""
    return math.log2(data_vocab_size) / ratio


def unigram_bits_per_byte(train_counts: np.ndarray, held_out: np.ndarray, n_bytes: int) -> float:
    """Bits/byte of the held-out data ids under the training unigram (add-1/2 smoothing)."""
    counts = np.asarray(train_counts, dtype=np.float64) + 0.5
    log_q = np.log2(counts / counts.sum())
    ids = np.asarray(held_out, dtype=np.int64)
    return float(-log_q[ids].sum() / n_bytes)


def flops_per_byte(params_non_embedding: int, ratio: float, m1_params_non_embedding: int = 0) -> float:
    """2 N / ratio (+ 2 N_M1 for M1-based schemes): the paper's inference FLOPs per byte."""
    return 2.0 * params_non_embedding / ratio + 2.0 * m1_params_non_embedding


def m1_params(dataset: TokenDataset) -> int:
    """Non-embedding parameters of the dataset's M1 (0 for schemes without M1)."""
    return int(dataset.meta["tokenizer"].get("m1_params_non_embedding", 0)) if dataset.uses_m1 else 0


def evaluate_m2(
    model: Any,
    dataset: TokenDataset | str | Path,
    *,
    split: str = "val",
    seq_len: int | None = None,
    batch_size: int = 32,
    extra: dict[str, Any] | None = None,
) -> M2Eval:
    """Evaluate ``model`` on every id of ``split`` (see the module docstring)."""
    from compresslm.models.train import eval_nll_sum

    ds = as_dataset(dataset)
    if model.config.vocab_size != ds.vocab_size:
        raise ConfigError(
            f"model vocabulary {model.config.vocab_size} does not match the dataset's {ds.vocab_size} "
            f"({ds.name}): was the model trained on another scheme?"
        )
    seq_len = seq_len or model.config.max_seq_len
    if not 2 <= seq_len <= model.config.max_seq_len:
        raise ConfigError(
            f"--seq-len {seq_len} is outside the model's 2..{model.config.max_seq_len} positions"
        )
    info = ds.split_info(split)
    t0 = time.perf_counter()
    total, count = eval_nll_sum(
        model, ds.token_stream(split, seq_len), seq_len=seq_len, batch_size=batch_size
    )
    seconds = time.perf_counter() - t0
    expected = info["stream_tokens"] - 1
    if count != expected:
        raise ConfigError(f"evaluation predicted {count} ids, the split holds {expected}")
    ratio = info["bytes"] / info["tokens"]
    stream = np.asarray(ds.stream(split))
    held_out = stream[stream < ds.data_vocab_size]
    n_m1 = m1_params(ds)
    n = model.n_params(non_embedding=True)
    return M2Eval(
        scheme=ds.meta["scheme"],
        name=ds.name,
        split=split,
        bits_per_byte=total / math.log(2) / info["bytes"],
        bits_per_token=total / count / math.log(2),
        nll_nats=total / count,
        targets=count,
        bytes=info["bytes"],
        data_tokens=info["tokens"],
        compression_ratio=ratio,
        uniform_bits_per_byte=uniform_bits_per_byte(ds.data_vocab_size, ratio),
        unigram_bits_per_byte=unigram_bits_per_byte(ds.unigram_counts("train"), held_out, info["bytes"]),
        flops_per_byte=flops_per_byte(n, ratio, n_m1),
        params_non_embedding=n,
        params_total=model.n_params(non_embedding=False),
        m1_params_non_embedding=n_m1,
        seconds=seconds,
        targets_per_second=count / seconds if seconds > 0 else float("inf"),
        extra=dict(extra or {}),
    )
