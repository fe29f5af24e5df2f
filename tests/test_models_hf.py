"""The optional Hugging Face adapter. The model is built from a config (no download) and saved to
a temporary folder, then loaded back by path like a user's local model."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from compresslm.errors import ConfigError, OutputExistsError
from compresslm.models.data import TokenStream
from compresslm.models.hf import import_transformers, load_hf_causal_lm
from compresslm.models.train import TrainConfig, evaluate_lm, train_lm


def test_missing_transformers_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ConfigError, match=r"compresslm\[hf\]"):
        import_transformers()


def test_path_must_be_a_local_directory(tmp_path) -> None:
    with pytest.raises(ConfigError, match="nothing is downloaded"):
        load_hf_causal_lm(tmp_path / "gpt2")


@pytest.fixture
def hf_model_dir(tmp_path):
    transformers = pytest.importorskip(
        "transformers", reason="optional extra compresslm[hf] (transformers) is not installed"
    )
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=256, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "gpt2", safe_serialization=True)
    return tmp_path / "gpt2"


def test_adapter_forward_train_evaluate_save(hf_model_dir, tmp_path) -> None:
    model = load_hf_causal_lm(hf_model_dir)
    assert model.vocab_size == 256 and model.max_seq_len == 32
    idx = torch.randint(0, 256, (2, 16))
    assert model(idx).shape == (2, 16, 256)

    tokens = np.frombuffer(b"abcabcabd" * 100, dtype=np.uint8)
    stream = TokenStream(tokens, name="abc")
    before = evaluate_lm(model, stream, seq_len=16)
    cfg = TrainConfig(max_tokens=30 * 8 * 16, batch_size=8, seq_len=16, lr=3e-3, device="cpu", threads=1)
    result = train_lm(model, stream, cfg, eval_sets={"abc": stream}, progress=False)
    assert result.final_eval["abc"] < before - 1.0

    out = model.save(tmp_path / "tuned")
    with pytest.raises(OutputExistsError):
        model.save(out)
    again = load_hf_causal_lm(out)
    with torch.no_grad():
        torch.testing.assert_close(again(idx), model(idx))
