"""The training loop: it learns, it is deterministic, the schedule and clipping do what they say."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from compresslm.errors import ConfigError, DataError
from compresslm.models.data import TokenStream, bytes_to_tokens
from compresslm.models.train import (
    TrainConfig,
    bits_per_byte,
    configure_optimizer,
    evaluate_lm,
    lr_at,
    train_lm,
)
from compresslm.models.transformer import Transformer, config_for_size

SEQ = 32
CORPUS = bytes_to_tokens(
    ["the quick brown fox jumps over the lazy dog; " * 40, "pack my box with five dozen jugs. " * 40]
)
TIMING_KEYS = ("elapsed_s", "train_s")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(seed: int = 0) -> Transformer:
    return Transformer(config_for_size("tiny", vocab_size=256, max_seq_len=SEQ), seed=seed)


def config(**overrides) -> TrainConfig:
    # threads=1: on a loaded 2-core box two OpenMP threads can run 10x slower than one.
    base = dict(max_tokens=40 * 8 * SEQ, batch_size=8, seq_len=SEQ, lr=3e-3, threads=1, device="cpu")
    return TrainConfig(**{**base, **overrides})


def strip_timing(curve: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in TIMING_KEYS} for e in curve]


def test_tiny_byte_model_learns_a_repetitive_corpus() -> None:
    train, val = TokenStream(CORPUS, name="train"), TokenStream(CORPUS[:600], name="val")
    result = train_lm(
        tiny_model(),
        train,
        config(max_tokens=120 * 8 * SEQ, eval_every_tokens=40 * 8 * SEQ),
        eval_sets={"val": val},
        progress=False,
    )
    losses = [loss for _, loss in result.eval_curve("val")]
    assert [t for t, _ in result.eval_curve("val")] == [0, 40 * 8 * SEQ, 80 * 8 * SEQ, 120 * 8 * SEQ]
    assert losses[0] > 0.9 * math.log(256)  # starts near uniform
    assert losses[-1] < 1.0  # far below log(256) = 5.55 and below a unigram model (~2.9 nats)
    assert result.final_eval["val"] == losses[-1]
    assert result.steps == 120 and result.tokens == 120 * 8 * SEQ and result.tokens_per_s > 0
    assert not result.model.training


def test_same_seed_same_curve_different_seed_different_curve() -> None:
    stream = TokenStream(CORPUS)
    evals = {"val": TokenStream(CORPUS[:300])}
    runs = [
        train_lm(
            tiny_model(),
            stream,
            config(seed=seed, log_every_steps=5, eval_every_tokens=20 * 8 * SEQ),
            eval_sets=evals,
            progress=False,
        )
        for seed in (0, 0, 1)
    ]
    a, b, c = (strip_timing(r.curve) for r in runs)
    assert len(a) > 5 and a == b
    assert a != c
    for pa, pb in zip(runs[0].model.parameters(), runs[1].model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_training_leaves_the_global_rng_alone() -> None:
    model = tiny_model()  # (building modules draws from the global RNG; training must not)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_lm(model, TokenStream(CORPUS), config(max_tokens=2 * 8 * SEQ), progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_lr_schedule_warmup_cosine_floor() -> None:
    cfg = TrainConfig(
        max_tokens=100 * 4 * 8, batch_size=4, seq_len=8, lr=1.0, min_lr_ratio=0.1, warmup_steps=10
    )
    lrs = [lr_at(s, cfg) for s in range(cfg.total_steps + 5)]
    assert cfg.total_steps == 100
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # linear warmup to the peak
    assert lrs[9] == pytest.approx(1.0)
    assert all(x > y for x, y in zip(lrs[10:100], lrs[11:100], strict=False))  # strictly decreasing
    assert lrs[55] == pytest.approx(0.55)  # cosine midpoint: (lr + min_lr) / 2
    assert lrs[99] > 0.1 and lrs[99] == pytest.approx(0.1, abs=1e-3)
    assert lrs[100:] == [pytest.approx(0.1)] * 5  # the floor
    assert TrainConfig(max_tokens=3200, batch_size=4, seq_len=8, warmup_tokens=320).n_warmup_steps == 10
    assert TrainConfig(max_tokens=3200, batch_size=4, seq_len=8, warmup_fraction=0.25).n_warmup_steps == 25
    assert TrainConfig(max_tokens=3200, batch_size=4, seq_len=8, warmup_fraction=0.0).n_warmup_steps == 1
    assert TrainConfig(max_tokens=3200, batch_size=4, seq_len=8).n_warmup_steps == 5  # default 5%
    with pytest.raises(ConfigError, match="give one of"):
        TrainConfig(max_tokens=10, batch_size=1, seq_len=1, warmup_steps=1, warmup_tokens=1)
    with pytest.raises(ConfigError, match="give one of"):
        TrainConfig(max_tokens=10, batch_size=1, seq_len=1, warmup_steps=1, warmup_fraction=0.1)
    with pytest.raises(ConfigError, match="warmup_fraction"):
        TrainConfig(max_tokens=10, batch_size=1, seq_len=1, warmup_fraction=1.0)


def test_lr_in_the_curve_follows_the_schedule() -> None:
    cfg = config(max_tokens=20 * 8 * SEQ, log_every_steps=1)
    result = train_lm(tiny_model(), TokenStream(CORPUS), cfg, progress=False)
    assert [e["lr"] for e in result.curve] == [lr_at(s, cfg) for s in range(20)]


@pytest.mark.parametrize("clip", [1e-3, None])
def test_gradient_clipping_is_applied(clip: float | None) -> None:
    seen: list[float] = []

    def hook(optimizer, args, kwargs) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        seen.append(
            float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        )

    handle = register_optimizer_step_pre_hook(hook)
    try:
        result = train_lm(
            tiny_model(),
            TokenStream(CORPUS),
            config(max_tokens=5 * 8 * SEQ, grad_clip=clip, log_every_steps=1),
            progress=False,
        )
    finally:
        handle.remove()
    assert len(seen) == 5
    pre_clip = [e["grad_norm"] for e in result.curve]
    assert min(pre_clip) > 1e-2  # gradients are much larger than the clip threshold...
    if clip is None:
        assert seen == pytest.approx(pre_clip, rel=1e-4)
    else:
        assert max(seen) <= clip * (1 + 1e-4)  # ...yet the optimizer only ever sees clipped ones


def test_optimizer_groups_exclude_norms_biases_embeddings() -> None:
    model = tiny_model()
    opt = configure_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    decay, other = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and other["weight_decay"] == 0.0
    assert decayed and all(n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for n in decayed)
    assert {"wte.weight", "wpe.weight"} <= {names[id(p)] for p in other["params"]}
    assert len(decay["params"]) + len(other["params"]) == len(list(model.parameters()))


def test_evaluate_lm_of_a_uniform_model_is_log_vocab() -> None:
    model = tiny_model()
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied: every logit is 0, so every token costs log(256)
    stream = TokenStream(CORPUS[:500])
    assert evaluate_lm(model, stream, seq_len=SEQ) == pytest.approx(math.log(256), rel=1e-6)
    assert evaluate_lm(model, stream, 64, seq_len=SEQ) == pytest.approx(math.log(256), rel=1e-6)


def test_evaluate_lm_is_deterministic_and_restores_train_mode() -> None:
    model = tiny_model().train()
    stream = TokenStream(CORPUS)
    a = evaluate_lm(model, stream, 256, seq_len=SEQ)
    assert a == evaluate_lm(model, stream, 256, seq_len=SEQ)
    assert model.training


def test_bits_per_byte() -> None:
    assert bits_per_byte(math.log(256), tokens=1000, n_bytes=1000) == pytest.approx(8.0)
    # a learn-nothing model on tokens that compress 2x scores log2(v) / ratio (docs/design.md#tokenizers-and-m2)
    assert bits_per_byte(math.log(65536), tokens=500, n_bytes=1000) == pytest.approx(8.0)
    with pytest.raises(ConfigError):
        bits_per_byte(1.0, 1, 0)


def test_on_eval_can_stop_training_early() -> None:
    calls: list[int] = []

    def stop_after_first_trained_eval(entry: dict) -> bool:
        calls.append(entry["tokens"])
        return entry["tokens"] > 0

    result = train_lm(
        tiny_model(),
        TokenStream(CORPUS),
        config(eval_every_tokens=10 * 8 * SEQ),
        eval_sets={"val": TokenStream(CORPUS[:200])},
        on_eval=stop_after_first_trained_eval,
        progress=False,
    )
    assert calls == [0, 10 * 8 * SEQ] and result.stopped_early and result.steps == 10


def test_two_d_examples_with_padding_train() -> None:
    pad = 0
    ex = np.zeros((20, SEQ + 1), dtype=np.uint8)
    ex[:, :20] = np.frombuffer(b"abcdefghijklmnopqrst", dtype=np.uint8)
    result = train_lm(
        tiny_model(),
        TokenStream(ex, pad_id=pad),
        config(max_tokens=10 * 8 * SEQ),
        eval_sets={"ex": TokenStream(ex[:2], pad_id=pad)},
        progress=False,
    )
    assert math.isfinite(result.final_eval["ex"])


def test_user_errors() -> None:
    with pytest.raises(ConfigError, match="max_seq_len"):
        train_lm(tiny_model(), TokenStream(CORPUS), config(seq_len=SEQ + 1), progress=False)
    with pytest.raises(DataError, match="vocabulary"):
        train_lm(
            tiny_model(),
            TokenStream(np.full(100, 300, dtype=np.uint16), name="big"),
            config(),
            progress=False,
        )
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            train_lm(tiny_model(), TokenStream(CORPUS), config(device="cuda"), progress=False)
