"""The transformer: shapes, configs, parameter counts, the KV cache, the loss helper."""

from __future__ import annotations

import math

import pytest
import torch

from compresslm.errors import ConfigError
from compresslm.models.transformer import (
    SIZES,
    Transformer,
    TransformerConfig,
    config_for_size,
    loss,
)


@pytest.fixture(autouse=True)
def one_thread():
    # On a loaded 2-core box two OpenMP threads can be 10x slower than one; tests stay single-threaded.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**overrides) -> TransformerConfig:
    return config_for_size("tiny", vocab_size=256, max_seq_len=64, **overrides)


def expected_counts(d: int, h: int, n_layers: int, m: int, vocab: int, max_len: int) -> tuple[int, int]:
    """Count by hand: per layer two LayerNorms (weight + bias), qkv and output projections, and a
    2-matrix MLP, all with biases; a final LayerNorm; tied token embedding and position table."""
    layer = 2 * (2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
    non_embedding = n_layers * layer + 2 * d
    return non_embedding, non_embedding + vocab * d + max_len * d


def test_forward_shape_and_dtype() -> None:
    model = Transformer(tiny(), seed=0)
    idx = torch.randint(0, 256, (3, 17))
    logits = model(idx)
    assert logits.shape == (3, 17, 256)
    assert logits.dtype == torch.float32


def test_sequence_longer_than_max_seq_len_is_config_error() -> None:
    model = Transformer(tiny(), seed=0)
    with pytest.raises(ConfigError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))


@pytest.mark.parametrize("name", list(SIZES))
def test_param_counts_match_the_formula(name: str) -> None:
    shape = SIZES[name]
    cfg = config_for_size(name, vocab_size=256, max_seq_len=128)
    non_emb, total = expected_counts(
        shape["d_model"], shape["n_heads"], shape["n_layers"], shape["d_mlp"], 256, 128
    )
    assert cfg.n_params(non_embedding=True) == non_emb
    assert cfg.n_params(non_embedding=False) == total
    if name in ("tiny", "small", "3m"):  # instantiate only the cheap ones
        model = Transformer(cfg)
        assert model.n_params(non_embedding=True) == non_emb
        assert model.n_params(non_embedding=False) == total
        assert sum(p.numel() for p in model.parameters()) == total  # tied weights counted once


def test_3m_preset_is_the_papers_m1_shape() -> None:
    cfg = config_for_size("3m", vocab_size=256, max_seq_len=1024)
    assert (cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.d_mlp, cfg.head_dim) == (256, 4, 3, 1024, 64)
    # 2-matrix MLP: 3 * (4 d^2 + 2 d m) ~= 2.36M weights, plus LayerNorms and biases.
    assert 3 * (4 * 256**2 + 2 * 256 * 1024) < cfg.n_params(True) < 2.4e6
    assert cfg.n_params(False) - cfg.n_params(True) == (256 + 1024) * 256


def test_untied_head_counts_and_is_separate() -> None:
    cfg = tiny(tie_embeddings=False)
    model = Transformer(cfg, seed=0)
    assert model.lm_head.weight is not model.wte.weight
    assert model.n_params(False) == cfg.n_params(False)
    assert cfg.n_params(False) - tiny().n_params(False) == 256 * 64


def test_seeded_init_is_reproducible_and_independent_of_global_rng() -> None:
    torch.manual_seed(1)
    a = Transformer(tiny(), seed=7)
    torch.manual_seed(2)
    b = Transformer(tiny(), seed=7)
    c = Transformer(tiny(), seed=8)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.wte.weight, c.wte.weight)


def test_config_dict_round_trip_and_validation() -> None:
    cfg = tiny(dropout=0.1, activation="relu", attention="masked")
    assert TransformerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        TransformerConfig.from_dict({**cfg.to_dict(), "rope": True})
    with pytest.raises(ConfigError, match="missing"):
        TransformerConfig.from_dict({"vocab_size": 256})
    with pytest.raises(ConfigError, match="divisible"):
        TransformerConfig(vocab_size=256, d_model=100, n_heads=3, n_layers=1, d_mlp=8, max_seq_len=8)
    with pytest.raises(ConfigError, match="attention"):
        tiny(attention="flash")
    with pytest.raises(ConfigError, match="unknown model size"):
        config_for_size("huge", 256, 64)


@pytest.mark.parametrize("attention", ["sdpa", "masked"])
def test_kv_cache_matches_full_forward(attention: str) -> None:
    model = Transformer(tiny(attention=attention, init_std=0.1), seed=3).eval()
    idx = torch.randint(0, 256, (4, 50), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(idx)
        # prefill 7 positions, then chunks of 3, then single steps
        logits, cache = model.forward_with_cache(idx[:, :7])
        pieces = [logits]
        t = 7
        while t < 50:
            n = 3 if t < 25 else 1
            logits, cache = model.forward_with_cache(idx[:, t : t + n], cache)
            pieces.append(logits)
            t += n
    assert cache.length == 50
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


def test_cache_does_not_mutate_the_cache_passed_in() -> None:
    model = Transformer(tiny(), seed=0).eval()
    idx = torch.randint(0, 256, (1, 10))
    _, cache = model.forward_with_cache(idx[:, :5])
    _, cache2 = model.forward_with_cache(idx[:, 5:], cache)
    assert cache.length == 5 and cache2.length == 10


def test_attention_paths_agree() -> None:
    a = Transformer(tiny(attention="sdpa", init_std=0.1), seed=5).eval()
    b = Transformer(tiny(attention="masked", init_std=0.1), seed=5).eval()
    idx = torch.randint(0, 256, (2, 40))
    torch.testing.assert_close(a(idx), b(idx), atol=1e-5, rtol=0)


def test_greedy_generate_follows_the_full_forward_argmax() -> None:
    model = Transformer(tiny(init_std=0.2), seed=11).eval()
    prompt = torch.tensor([[10, 20, 30]])
    out = model.generate(prompt, 8, temperature=0)
    assert out.shape == (1, 11) and torch.equal(out[:, :3], prompt)
    with torch.no_grad():
        for t in range(3, 11):
            assert int(model(out[:, :t])[0, -1].argmax()) == int(out[0, t])


def test_loss_is_mean_nll_in_nats_and_ignores_index() -> None:
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    targets[0, 1] = -100
    logp = torch.log_softmax(logits, dim=-1)
    keep = targets != -100
    manual = -logp[keep].gather(-1, targets[keep].unsqueeze(-1)).mean()
    torch.testing.assert_close(loss(logits, targets, ignore_index=-100), manual)
    uniform = loss(torch.zeros(1, 3, 256), torch.tensor([[1, 2, 3]]))
    assert math.isclose(float(uniform), math.log(256), rel_tol=1e-6)
