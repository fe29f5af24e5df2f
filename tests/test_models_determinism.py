"""M1 determinism (docs/design.md#m1-numerics): at a fixed sequence length, the logits at position t are
bit-identical whatever the tokens after t, the batch size (1 vs 64) and the thread count (1 vs 2).

Both attention paths are checked; the config's default must be one that passes.
"""

from __future__ import annotations

import pytest
import torch

from compresslm.models.transformer import Transformer, TransformerConfig, config_for_size

T = 48  # the fixed padded length, like max_window_bytes rows in the window coder
PATHS = ["sdpa", "masked"]


def model_for(attention: str) -> Transformer:
    # A larger init makes attention peaked and logits far from uniform, so bit differences would show.
    cfg = config_for_size("small", vocab_size=256, max_seq_len=64, attention=attention, init_std=0.1)
    return Transformer(cfg, seed=1).eval()


def batch(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, T), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_default_attention_path_is_one_that_is_tested() -> None:
    default = TransformerConfig(vocab_size=2, d_model=2, n_heads=1, n_layers=1, d_mlp=2, max_seq_len=2)
    assert default.attention in PATHS


@pytest.mark.parametrize("attention", PATHS)
@torch.no_grad()
def test_padding_after_t_does_not_change_logits_up_to_t(attention: str) -> None:
    model = model_for(attention)
    idx = batch(8)
    ref = model(idx)
    for t in (0, 5, 23, T - 2):
        other = idx.clone()
        other[:, t + 1 :] = torch.randint(0, 256, (8, T - t - 1), generator=torch.Generator().manual_seed(t))
        assert not torch.equal(other, idx)
        out = model(other)
        assert torch.equal(out[:, : t + 1], ref[:, : t + 1]), f"position <= {t} changed"
        assert not torch.equal(out[:, t + 1 :], ref[:, t + 1 :])  # the test can fail: later logits do move


@pytest.mark.parametrize("attention", PATHS)
@torch.no_grad()
def test_batch_1_and_64_are_bit_identical(attention: str) -> None:
    model = model_for(attention)
    idx = batch(64, seed=2)
    full = model(idx)
    for row in (0, 1, 31, 63):
        assert torch.equal(model(idx[row : row + 1]), full[row : row + 1]), f"row {row}"
    assert torch.equal(model(idx[:7]), full[:7])


@pytest.mark.parametrize("attention", PATHS)
@torch.no_grad()
def test_threads_1_and_2_are_bit_identical(attention: str) -> None:
    model = model_for(attention)
    idx = batch(64, seed=3)
    torch.set_num_threads(1)
    one = model(idx)
    torch.set_num_threads(2)
    two = model(idx)
    assert torch.equal(one, two)


@pytest.mark.parametrize("attention", PATHS)
@torch.no_grad()
def test_repeated_forward_is_bit_identical(attention: str) -> None:
    model = model_for(attention)
    idx = batch(4, seed=4)
    assert torch.equal(model(idx), model(idx))
