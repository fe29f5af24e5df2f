"""Training M1, the byte model of the window coder, with the shared training loop.

M1 is used with its context reset at every window, so it is trained the way it is used: every
sample is ``[BOS] + bytes`` from a random offset of the corpus (BOS = the NUL byte, which also
separates documents in the stream). Held-out bits/byte is measured on consecutive blocks, each with
its own reset, so it is the model's cross-entropy under the same short contexts the coder gives it.

By default M1 is trained for the integer-exact path (``numerics="exact"``): quantization-aware
training (:mod:`compresslm.coding.m1_qat`) then conversion, so the model trained is the model
deployed; its held-out bits/byte is measured through the integer frequency tables themselves (what
the coder pays). ``numerics="float"`` trains the float model of earlier versions.
:func:`quantize_m1` turns a float M1 into an exact one (calibration, then a short QAT fine-tune).
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

from compresslm.coding.m1 import BOS, M1
from compresslm.coding.window_coder import IDLE, START
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
from compresslm.models.train import DEFAULT_THREADS

DEFAULT_CONTEXT = 128
NUMERICS_CHOICES = ("exact", "float")
EVAL_TOKENS = 200_000


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
    numerics: str = "float"
    # exact: the fake-quantized float forward's held-out bits/byte (the training loop's own eval)
    trained_bits_per_byte: float | None = None
    # the checkpoint's step when the run continued one from ``work_dir`` (None: started afresh)
    resumed_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def corpus_bytes(texts: Iterable[str | bytes]) -> np.ndarray:
    """The training stream: each document's UTF-8 bytes followed by the NUL separator."""
    return bytes_to_tokens(texts)


def split_heldout(
    stream: np.ndarray, context: int, heldout_fraction: float
) -> tuple[ResetStream, ResetStream | None, int]:
    if not 0.0 <= heldout_fraction < 1.0:
        raise ConfigError(f"--heldout must be in [0, 1), got {heldout_fraction}")
    if len(stream) < 2 * context:
        raise DataError(
            f"M1 training data has {len(stream)} bytes; need at least {2 * context} (2 x context)"
        )
    cut = len(stream) - int(len(stream) * heldout_fraction) if heldout_fraction > 0 else len(stream)
    if heldout_fraction > 0 and len(stream) - cut < context:
        cut = len(stream) - context
    train = ResetStream(stream[:cut], name="train")
    heldout = ResetStream(stream[cut:], name="heldout") if cut < len(stream) else None
    return train, heldout, cut


def heldout_bits_per_byte(
    m1: M1,
    heldout: ResetStream,
    context: int,
    *,
    max_tokens: int | None = EVAL_TOKENS,
    rows: int | None = None,
) -> float:
    """Bits/byte of ``m1``'s quantized frequency tables (what the coder pays) on the blocks the
    training loop evaluates: each block of ``context`` bytes read from a fresh BOS context.
    ``rows`` blocks run side by side (default: up to 512, fewer for long contexts, whose caches
    are large)."""
    rows = rows or max(16, min(512, (1 << 16) // context))
    ids = heldout.eval_block_ids(context, max_tokens)
    tokens = np.asarray(heldout.tokens, dtype=np.int64)
    bits, n = 0.0, 0
    for g in range(0, len(ids), rows):
        blocks = [tokens[int(b) * context : (int(b) + 1) * context] for b in ids[g : g + rows]]
        session = m1.session(len(blocks), context)
        try:
            feed = np.full(len(blocks), START, dtype=np.int64)
            for t in range(context):
                live = np.array([t < len(b) for b in blocks])
                if not live.any():
                    break
                tables = session.step(np.where(live, feed, IDLE))
                target = np.array([b[t] if t < len(b) else 0 for b in blocks])
                r = np.flatnonzero(live)
                f = tables[r, target[r] + 1] - tables[r, target[r]]
                bits -= float(np.log2(f / tables[r, -1]).sum())
                n += len(r)
                feed = target
        finally:
            close = getattr(session, "close", None)
            if close is not None:
                close()
    return bits / max(n, 1)


def train_m1(
    texts: Iterable[str | bytes] | np.ndarray,
    *,
    heldout: np.ndarray | None = None,
    size: str = "3m",
    context: int = DEFAULT_CONTEXT,
    max_tokens: int = 2_000_000,
    batch_size: int = 32,
    lr: float = 1e-3,
    heldout_fraction: float = 0.05,
    seed: int = 0,
    threads: int | None = DEFAULT_THREADS,
    progress: bool = True,
    out: str | Path | None = None,
    force: bool = False,
    numerics: str = "exact",
    activation: str | None = None,
    work_dir: str | Path | None = None,
    checkpoint_every_s: float | None = 600.0,
    eval_every_tokens: int | None = None,
    bf16: bool = False,
) -> tuple[Any, M1TrainReport]:
    """Train a byte-level M1 of preset ``size`` (``tiny``, ``small``, ``3m``, ...) on ``texts``.

    ``context`` is the model's ``max_seq_len`` and the training block length; the coder's
    ``max_window_bytes`` must not exceed it. The last ``heldout_fraction`` of the stream is held
    out for bits/byte. ``numerics``: ``"exact"`` (default; quantization-aware training, returns an
    :class:`~compresslm.coding.exact.ExactModel`) or ``"float"`` (returns a ``Transformer``).
    ``activation``: the MLP's (default: ReLU for exact, as in the paper's M1; GELU for float).
    With ``out`` the model is saved there (safetensors + config.json, the report in its ``extra``).

    ``texts`` may also be a ready byte stream (a uint8 array or memmap, documents separated by NUL,
    such as :mod:`compresslm.data.machine_corpus` writes); ``heldout``, a second such stream, is
    then the held-out set instead of the stream's tail. With ``work_dir`` the run is resumable
    (checkpoints every ``checkpoint_every_s`` seconds; started again with the same arguments and
    ``work_dir``, it continues from the last one). Started again with another ``max_tokens`` it
    continues too: a larger budget extends the run (also one that finished), a smaller one ends it
    sooner; the learning rate re-warms from its last value onto the cosine of the new length
    (:class:`~compresslm.models.resume.Rewarm`). Any other change that shapes the run (batch size,
    learning rate, seed, model) is refused. ``bf16``: the forward in bfloat16 autocast (weights,
    AdamW and the loss stay float32), about 1.6x less CPU per step where the CPU has AVX512-BF16
    (docs/benchmarks.md); it may be switched on or off when a run resumes.
    """
    if numerics not in NUMERICS_CHOICES:
        raise ConfigError(f"--numerics must be one of {', '.join(NUMERICS_CHOICES)}, got {numerics!r}")
    if bf16 and numerics != "float":
        # fake quantization simulates int8 rounding on float32 values; bf16 would round them again
        raise ConfigError("--bf16 trains the float M1 only (--numerics float, then m1 quantize)")
    stream = texts if isinstance(texts, np.ndarray) else corpus_bytes(texts)
    if heldout is not None:
        if len(heldout) < context:
            raise DataError(f"M1 held-out stream has {len(heldout)} bytes, fewer than the context {context}")
        heldout_fraction = 0.0
    train, held, cut = split_heldout(stream, context, heldout_fraction)
    if heldout is not None:
        held = ResetStream(heldout, name="heldout")
    act = activation or ("relu" if numerics == "exact" else "gelu")
    config = config_for_size(size, vocab_size=256, max_seq_len=context, activation=act)
    if numerics == "exact":
        from compresslm.coding.m1_qat import QATTransformer

        model: Transformer = QATTransformer(config, seed=seed)
    else:
        model = Transformer(config, seed=seed)
    train_config = TrainConfig(
        max_tokens=max_tokens,
        batch_size=batch_size,
        seq_len=context,
        lr=lr,
        seed=seed,
        threads=threads,
        device="cpu",
        eval_at_start=False,
        eval_tokens=EVAL_TOKENS,
        eval_every_tokens=eval_every_tokens,
        log_every_steps=10,
        amp=bf16,
    )
    start = time.perf_counter()
    result = train_lm(
        model,
        train,
        train_config,
        eval_sets={"heldout": held} if held else None,
        progress=progress,
        work_dir=work_dir,
        checkpoint_every_s=checkpoint_every_s,
    )
    bpb = result.final_eval.get("heldout")
    trained = None if bpb is None else bpb / math.log(2)
    final: Any = model
    if numerics == "exact":
        final, exact_bpb = _finish_exact(model, held, context, threads)
        bpb_report, trained_report = exact_bpb, trained
    else:
        bpb_report, trained_report = trained, None
    report = M1TrainReport(
        size=size,
        context=context,
        n_params=config.n_params(non_embedding=True),
        train_bytes=int(cut),
        heldout_bytes=int(len(held.tokens)) if held is not None else 0,
        tokens_seen=result.tokens,
        seconds=time.perf_counter() - start,
        heldout_bits_per_byte=bpb_report,
        curve=result.curve,
        numerics=numerics,
        trained_bits_per_byte=trained_report,
        resumed_step=result.resumed_step,
    )
    if out is not None:
        _save(final, out, {"m1": {k: v for k, v in report.to_dict().items() if k != "curve"}}, force)
    return final, report


def _save(model: Any, out: str | Path, extra: dict[str, Any], force: bool) -> None:
    if isinstance(model, Transformer):
        save_model(out, model, extra=extra, force=force)
    else:
        model.extra = extra
        model.save(out, force=force)


def _finish_exact(
    qat: Any, heldout: ResetStream | None, context: int, threads: int | None
) -> tuple[Any, float | None]:
    """The integer model of a trained QAT model, and its held-out bits/byte through integer tables."""
    from compresslm.coding.m1 import ExactM1
    from compresslm.coding.m1_qat import to_exact

    qat.eval()
    exact = to_exact(qat)
    if heldout is None:
        return exact, None
    return exact, heldout_bits_per_byte(ExactM1(exact, threads=threads or 1), heldout, context)


@dataclass
class QuantizeReport:
    """What :func:`quantize_m1` did: the source's and the exact model's held-out bits/byte, both
    through their quantized frequency tables on the same held-out blocks."""

    source: str
    source_sha256: str
    calibration_bytes: int
    calibration_batches: int
    heldout_bytes: int
    tokens_seen: int
    seconds: float
    float_bits_per_byte: float | None
    calibrated_bits_per_byte: float | None
    heldout_bits_per_byte: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def quantize_m1(
    model_dir: str | Path,
    texts: Iterable[str | bytes] | np.ndarray,
    *,
    heldout: np.ndarray | None = None,
    out: str | Path | None = None,
    max_tokens: int = 500_000,
    batch_size: int = 32,
    lr: float = 1e-4,
    heldout_fraction: float = 0.05,
    calibration_batches: int = 16,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> tuple[Any, QuantizeReport]:
    """An exact M1 from the float M1 in ``model_dir``: observers calibrated on ``texts`` (their
    maximum over ``calibration_batches`` random blocks), then ``max_tokens`` of quantization-aware
    fine-tuning at ``lr`` (0: calibration only). The last ``heldout_fraction`` of the bytes is held
    out for the report. With ``out`` the exact model is saved there. As in :func:`train_m1`,
    ``texts`` may be a ready byte stream and ``heldout`` a held-out byte stream (then nothing of
    ``texts`` is held out)."""
    from compresslm.coding.m1 import ExactM1
    from compresslm.coding.m1_qat import calibrate, from_float, to_exact
    from compresslm.models.checkpoint import load_model, weights_sha256

    start = time.perf_counter()
    source = M1.load(model_dir, threads=threads or 1)
    if source.exact:
        raise ConfigError(f"{model_dir}: already an exact M1")
    float_model, config, _ = load_model(model_dir)
    context = config.max_seq_len
    stream = texts if isinstance(texts, np.ndarray) else corpus_bytes(texts)
    held_stream = heldout
    train, heldout, cut = split_heldout(stream, context, 0.0 if held_stream is not None else heldout_fraction)
    if held_stream is not None:
        heldout = ResetStream(held_stream, name="heldout")
    qat = from_float(float_model)
    rng = np.random.default_rng(seed)
    n_cal = calibrate(
        qat, (train.sample_batch(batch_size, context, rng)[0] for _ in range(calibration_batches))
    )
    evaluate = heldout is not None
    float_bpb = heldout_bits_per_byte(source, heldout, context) if evaluate else None
    calibrated_bpb = (
        heldout_bits_per_byte(ExactM1(to_exact(qat), threads=threads or 1), heldout, context)
        if evaluate
        else None
    )
    tokens = 0
    if max_tokens > 0:
        result = train_lm(
            qat,
            train,
            TrainConfig(
                max_tokens=max_tokens,
                batch_size=batch_size,
                seq_len=context,
                lr=lr,
                warmup_fraction=0.0,
                seed=seed,
                threads=threads,
                device="cpu",
                eval_at_start=False,
                log_every_steps=10,
            ),
            progress=progress,
        )
        tokens = result.tokens
    exact, bpb = _finish_exact(qat, heldout, context, threads)
    report = QuantizeReport(
        source=str(model_dir),
        source_sha256=weights_sha256(model_dir),
        calibration_bytes=int(cut),
        calibration_batches=n_cal,
        heldout_bytes=int(len(heldout.tokens)) if heldout is not None else 0,
        tokens_seen=tokens,
        seconds=time.perf_counter() - start,
        float_bits_per_byte=float_bpb,
        calibrated_bits_per_byte=calibrated_bpb,
        heldout_bits_per_byte=bpb,
    )
    if out is not None:
        _save(exact, out, {"m1_quantize": report.to_dict()}, force)
    return exact, report
