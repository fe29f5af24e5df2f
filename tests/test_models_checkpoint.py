"""safetensors checkpoints: round trip, stable hashes, no overwrite, integrity checks, no pickle."""

from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch

from compresslm.errors import ConfigError, IntegrityError, OutputExistsError
from compresslm.models.checkpoint import load_model, save_model, weights_sha256
from compresslm.models.transformer import Transformer, TransformerConfig, config_for_size


def make(seed: int = 0, **overrides) -> Transformer:
    cfg = config_for_size("tiny", vocab_size=256, max_seq_len=32, init_std=0.1, **overrides)
    return Transformer(cfg, seed=seed).eval()


@pytest.mark.parametrize("tie", [True, False])
def test_round_trip_gives_identical_logits(tmp_path, tie: bool) -> None:
    model = make(tie_embeddings=tie)
    save_model(tmp_path / "ckpt", model, model.config, {"step": 12, "note": "m1"})
    loaded, config, extra = load_model(tmp_path / "ckpt")
    assert config == model.config and extra == {"step": 12, "note": "m1"}
    assert not loaded.training
    idx = torch.randint(0, 256, (3, 32))
    with torch.no_grad():
        assert torch.equal(loaded(idx), model(idx))
    assert (loaded.lm_head.weight is loaded.wte.weight) == tie


def test_config_json_round_trip(tmp_path) -> None:
    model = make(activation="relu", attention="masked")
    save_model(tmp_path, model, model.config, {})
    meta = json.loads((tmp_path / "config.json").read_text())
    assert TransformerConfig.from_dict(meta["config"]) == model.config
    assert meta["weights_sha256"] == weights_sha256(tmp_path)
    assert meta["n_params_non_embedding"] == model.config.n_params(non_embedding=True)


def test_sha256_is_stable_and_content_addressed(tmp_path) -> None:
    a, b = make(seed=1), make(seed=1)
    save_model(tmp_path / "a", a)
    save_model(tmp_path / "b", b)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()
    digest = weights_sha256(tmp_path / "a")
    assert digest == weights_sha256(tmp_path / "b") == weights_sha256(a)
    assert weights_sha256(load_model(tmp_path / "a")[0]) == digest
    assert weights_sha256(make(seed=2)) != digest


def test_refuses_to_overwrite_without_force(tmp_path) -> None:
    save_model(tmp_path, make(seed=1))
    before = weights_sha256(tmp_path)
    with pytest.raises(OutputExistsError, match="model.safetensors"):
        save_model(tmp_path, make(seed=2))
    assert weights_sha256(tmp_path) == before
    save_model(tmp_path, make(seed=2), force=True)
    assert weights_sha256(tmp_path) == weights_sha256(make(seed=2)) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]  # no temp files


def test_never_pickles(tmp_path, monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(torch, "save", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "dump", forbidden)
    monkeypatch.setattr(pickle, "dumps", forbidden)
    model = make()
    save_model(tmp_path, model)
    load_model(tmp_path)
    raw = (tmp_path / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])  # safetensors: u64 header length, then a JSON header
    assert json.loads(raw[8 : 8 + header_len])["__metadata__"] == {"format": "pt"}


def test_tampered_weights_are_integrity_error(tmp_path) -> None:
    save_model(tmp_path, make())
    path = tmp_path / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="sha256"):
        load_model(tmp_path)


def test_missing_or_foreign_checkpoint(tmp_path) -> None:
    with pytest.raises(ConfigError, match="config.json missing"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(IntegrityError, match="not a"):
        load_model(tmp_path)


def test_extra_must_be_json(tmp_path) -> None:
    with pytest.raises(ConfigError, match="JSON"):
        save_model(tmp_path, make(), extra={"bad": object()})
    assert not (tmp_path / "config.json").exists()


def test_config_must_match_model(tmp_path) -> None:
    model = make()
    other = config_for_size("small", vocab_size=256, max_seq_len=32)
    with pytest.raises(ConfigError, match="does not match"):
        save_model(tmp_path, model, other)
