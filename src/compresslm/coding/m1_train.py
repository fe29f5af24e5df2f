"""Training M1, the byte model of the window coder, with the shared training loop.

M1 is used with its context reset at every window, so it is trained the way it is used: every
sample is ``[BOS] + bytes`` from a random offset of the corpus (BOS = the NUL byte, which also
separates documents in the stream). Held-out bits/byte is measured on consecutive blocks, each with
its own reset, so it is the model's cross-entropy under the same short contexts the coder gives it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compresslm.coding.m1 import BOS
from compresslm.errors import ConfigError, DataError
from compresslm.models import (
    TokenStream,
    TrainConfig,
    Transformer,
    bytes_to_tokens,
    config_for_size,
    save_model,
    train_lm,
)
from compresslm.models.data import IGNORE_INDEX

DEFAULT_CONTEXT = 128


class ResetStream(TokenStream):
    """A byte stream whose blocks all start with BOS: ``[BOS, x_s .. x_{s+T-2}]`` -> ``x_s .. x_{s+T-1}``.

    Training draws ``s`` uniformly; evaluation reads consecutive blocks of ``seq_len`` targets, so
    each byte after the first block boundary is predicted exactly once, from a fresh context.
    """

    def _reset_batch(self, starts: Iterable[int], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = list(starts)
        inputs = np.full((len(starts), seq_len), BOS, dtype=np.int64)
        targets = np.full((len(starts), seq_len), IGNORE_INDEX, dtype=np.int64)
        for row, s in enumerate(starts):
            block = np.asarray(self.tokens[s : s + seq_len], dtype=np.int64)
            targets[row, : len(block)] = block
            inputs[row, 1 : len(block)] = block[:-1]
        return torch.from_numpy(inputs), torch.from_numpy(targets)

    def sample_batch(
        self, batch_size: int, seq_len: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.tokens) < seq_len:
            raise DataError(
                f"byte stream {self.name!r} has {len(self.tokens)} bytes, fewer than seq_len {seq_len}"
            )
        return self._reset_batch(rng.integers(0, len(self.tokens) - seq_len + 1, size=batch_size), seq_len)

    def n_blocks(self, seq_len: int) -> int:
        return -(-len(self.tokens) // seq_len)

    def sequential_batches(
        self, batch_size: int, seq_len: int, *, max_tokens: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ids = self.eval_block_ids(seq_len, max_tokens)
        for i in range(0, len(ids), batch_size):
            yield self._reset_batch((int(b) * seq_len for b in ids[i : i + batch_size]), seq_len)


@dataclass
class M1TrainReport:
    """What :func:`train_m1` did; ``heldout_bits_per_byte`` is None without held-out data."""

    size: str
    context: int
    n_params: int
    train_bytes: int
    heldout_bytes: int
    tokens_seen: int
    seconds: float
    heldout_bits_per_byte: float | None
    curve: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def corpus_bytes(texts: Iterable[str | bytes]) -> np.ndarray:
    """The training stream: each document's UTF-8 bytes followed by the NUL separator."""
    return bytes_to_tokens(texts)


def train_m1(
    texts: Iterable[str | bytes],
    *,
    size: str = "3m",
    context: int = DEFAULT_CONTEXT,
    max_tokens: int = 2_000_000,
    batch_size: int = 32,
    lr: float = 1e-3,
    heldout_fraction: float = 0.05,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
    out: str | Path | None = None,
    force: bool = False,
) -> tuple[Transformer, M1TrainReport]:
    """Train a byte-level M1 of preset ``size`` (``tiny``, ``small``, ``3m``, ...) on ``texts``.

    ``context`` is the model's ``max_seq_len`` and the training block length; the coder's
    ``max_window_bytes`` must not exceed it. The last ``heldout_fraction`` of the stream is held
    out for bits/byte. With ``out`` the model is saved there (safetensors + config.json, the report
    in its ``extra``).
    """
    stream = corpus_bytes(texts)
    if len(stream) < 2 * context:
        raise DataError(
            f"M1 training data has {len(stream)} bytes; need at least {2 * context} (2 x context)"
        )
    config = config_for_size(size, vocab_size=256, max_seq_len=context)
    model = Transformer(config, seed=seed)
    cut = len(stream) - int(len(stream) * heldout_fraction) if heldout_fraction > 0 else len(stream)
    if heldout_fraction > 0 and len(stream) - cut < context:
        cut = len(stream) - context
    train = ResetStream(stream[:cut], name="train")
    heldout = ResetStream(stream[cut:], name="heldout") if cut < len(stream) else None
    if not 0.0 <= heldout_fraction < 1.0:
        raise ConfigError(f"--heldout must be in [0, 1), got {heldout_fraction}")
    train_config = TrainConfig(
        max_tokens=max_tokens,
        batch_size=batch_size,
        seq_len=context,
        lr=lr,
        seed=seed,
        threads=threads,
        device="cpu",
        eval_at_start=False,
        eval_tokens=200_000,
        log_every_steps=10,
    )
    start = time.perf_counter()
    result = train_lm(
        model, train, train_config, eval_sets={"heldout": heldout} if heldout else None, progress=progress
    )
    bpb = result.final_eval.get("heldout")
    report = M1TrainReport(
        size=size,
        context=context,
        n_params=model.n_params(non_embedding=True),
        train_bytes=int(cut),
        heldout_bytes=int(len(stream) - cut),
        tokens_seen=result.tokens,
        seconds=time.perf_counter() - start,
        heldout_bits_per_byte=None if bpb is None else bpb / math.log(2),
        curve=result.curve,
    )
    if out is not None:
        save_model(
            out, model, extra={"m1": {k: v for k, v in report.to_dict().items() if k != "curve"}}, force=force
        )
    return model, report
