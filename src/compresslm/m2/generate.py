"""Sampling text from M2: draw ids autoregressively, then decode them to text through the tokenizer
(for EqualInfoAC that is M1 driving the window decoder, one window per id at b = 16, v = 65k).

The context starts with the end-of-document id, as every document does in training, followed by the
prompt's ids. Padding is never sampled; the end-of-document id stops generation. M2 keeps its keys
and values in a cache while the context fits in ``max_seq_len``, and runs on the last ``max_seq_len``
ids beyond it (the positions it was trained on).

Latency is reported the way the paper's §4 argues it (steps per byte) and the way it does not
(wall time): M2 steps per second, bytes per step, and the seconds M1 needs to decode the windows.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compresslm.errors import CompressLMError, ConfigError
from compresslm.tokenizers.base import Tokenizer


@dataclass
class Generation:
    """One sample: the continuation's text and ids, and how fast it came."""

    prompt: str
    text: str | None  # None when the sampled ids do not decode (stream schemes: GZip, AC)
    ids: list[int]
    steps: int
    bytes: int
    stopped: str  # "end of document" or "max steps"
    m2_seconds: float
    decode_seconds: float
    error: str | None = None

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.m2_seconds if self.m2_seconds > 0 else float("inf")

    @property
    def bytes_per_step(self) -> float | None:
        """Decoded bytes per sampled id; None when the ids do not decode (a stream scheme's sample is
        not a valid stream: GZip needs a zlib header, StaticAC/AC a chunk header whose word count
        matches), so no byte count exists to divide."""
        if self.text is None:
            return None
        return self.bytes / self.steps if self.steps else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "steps_per_second": self.steps_per_second,
            "bytes_per_step": self.bytes_per_step,
        }


def load_generation_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer of a token dataset folder, or a tokenizer folder itself."""
    from compresslm.tokenizers import load_tokenizer
    from compresslm.tokenizers.dataset import META_FILE, TOKENIZER_DIR

    path = Path(path)
    if (path / META_FILE).is_file() or (path / TOKENIZER_DIR / "tokenizer.json").is_file():
        return load_tokenizer(path / TOKENIZER_DIR)
    return load_tokenizer(path)


@torch.no_grad()
def sample_ids(
    model: Any,
    context: list[int],
    *,
    max_steps: int,
    eod_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> tuple[list[int], str]:
    """Sampled ids after ``context`` (stopping at ``eod_id``, which is not returned), through
    :meth:`Transformer.sample <compresslm.models.transformer.Transformer.sample>`: padding is never
    drawn, and the KV cache serves while the context fits."""
    model.eval()
    device = next(model.parameters()).device
    steps = model.sample(
        torch.tensor([context], dtype=torch.long, device=device),
        temperature=temperature,
        top_k=top_k,
        generator=torch.Generator().manual_seed(seed),
        banned=(pad_id,),
    )
    out: list[int] = []
    for nxt in itertools.islice(steps, max_steps):
        token = int(nxt[0, 0])
        if token == eod_id:
            return out, "end of document"
        out.append(token)
    return out, "max steps"


def decode_continuation(tokenizer: Tokenizer, prompt_ids: list[int], ids: list[int]) -> bytes:
    """Bytes of the sampled ids. Window and piece schemes decode the continuation alone (for
    EqualInfoAC only its complete windows); stream schemes must decode prompt and continuation
    together, from the chunk start, and raise when the sample is not a valid stream."""
    from compresslm.tokenizers.base import ChunkedTokenizer
    from compresslm.tokenizers.equal_info import EqualInfoTokenizer

    if isinstance(tokenizer, EqualInfoTokenizer):
        return tokenizer.decode_windows(tokenizer.codes(ids, strict=False))
    if isinstance(tokenizer, ChunkedTokenizer):
        prompt = tokenizer.decode_bytes(prompt_ids)
        return tokenizer.decode_bytes([*prompt_ids, *ids])[len(prompt) :]
    return tokenizer.decode_bytes(ids)


def generate(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    prompt: str,
    *,
    max_steps: int = 64,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> Generation:
    """Sample up to ``max_steps`` ids after ``prompt`` and decode them (see the module docstring)."""
    if model.config.vocab_size != tokenizer.vocab_size:
        raise ConfigError(
            f"the model's vocabulary ({model.config.vocab_size}) is not the tokenizer's ({tokenizer.vocab_size}, "
            f"{tokenizer.name}): give the token dataset the model was trained on"
        )
    if max_steps < 1:
        raise ConfigError(f"--max-steps must be positive, got {max_steps}")
    prompt_ids = tokenizer.encode(prompt)
    t0 = time.perf_counter()
    ids, stopped = sample_ids(
        model,
        [tokenizer.eod_id, *prompt_ids],
        max_steps=max_steps,
        eod_id=tokenizer.eod_id,
        pad_id=tokenizer.pad_id,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
    )
    m2_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    text: str | None
    error = None
    try:
        data = decode_continuation(tokenizer, prompt_ids, ids)
        text = data.decode("utf-8", errors="replace")
    except CompressLMError as exc:
        data, text, error = b"", None, str(exc)
    return Generation(
        prompt=prompt,
        text=text,
        ids=ids,
        steps=len(ids),
        bytes=len(data),
        stopped=stopped,
        m2_seconds=m2_seconds,
        decode_seconds=time.perf_counter() - t1,
        error=error,
    )


def bytes_per_step(dataset: Any, split: str = "val") -> float:
    """Bytes one generation step yields on average: the split's bytes per data id (its ratio)."""
    info = dataset.split_info(split)
    return float(info["bytes"] / info["tokens"]) if info["tokens"] else float(np.nan)
