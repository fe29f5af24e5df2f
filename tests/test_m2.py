"""M2 over a token dataset: the paper's metrics, their bounds, training that learns, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from compresslm.data.records import Record
from compresslm.errors import ConfigError, OutputExistsError
from compresslm.m2 import M2Config, evaluate_m2, load_m2, train_m2
from compresslm.m2.evaluate import flops_per_byte, uniform_bits_per_byte, unigram_bits_per_byte
from compresslm.models import Transformer, config_for_size
from compresslm.tokenizers import build_tokenizer
from compresslm.tokenizers.dataset import TokenDataset, TokenizeOptions, tokenize_corpus

# A learnable corpus: a few templates with varying numbers, so held-out documents are predictable.
TEXTS = [f"def square_{i}(x):\n    return x * x + {i % 7}\n\nprint(square_{i}({i}))\n" for i in range(160)]


def _records() -> list[Record]:
    return [Record(id=f"doc:{i}", source="mem", index=i, text=t) for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TokenDataset]:
    out = {}
    for scheme in ("bytes", "gzip"):
        path = tmp_path_factory.mktemp(scheme)
        tokenize_corpus(
            _records(), build_tokenizer(scheme), path, TokenizeOptions(val_fraction=0.15, workers=1)
        )
        out[scheme] = TokenDataset(path)
    return out


def test_bounds_and_flops_formulas() -> None:
    assert uniform_bits_per_byte(256, 2.66) == pytest.approx(3.008, abs=1e-3)  # the paper's Table 3
    assert uniform_bits_per_byte(65536, 5.32) == pytest.approx(uniform_bits_per_byte(256, 2.66))
    # Table 15: EqualInfoAC[b=16, v=65k], 25m -> 15.42M FLOPs/byte (2 x 25M / 5.31 + 2 x 3M)
    assert flops_per_byte(25_000_000, 5.31, 3_000_000) / 1e6 == pytest.approx(15.42, abs=0.01)
    assert flops_per_byte(25_000_000, 1.0) == 50_000_000
    counts = np.array([30, 10, 0, 0])
    held_out = np.array([0, 0, 1, 2])
    q = (counts + 0.5) / (counts + 0.5).sum()
    expected = -(2 * math.log2(q[0]) + math.log2(q[1]) + math.log2(q[2])) / 8
    assert unigram_bits_per_byte(counts, held_out, 8) == pytest.approx(expected)


def test_untrained_model_sits_at_the_uniform_bound(datasets: dict[str, TokenDataset]) -> None:
    """A freshly initialised M2 predicts ~uniformly over its vocabulary: bits/byte = log2(V) * targets / bytes."""
    ds = datasets["bytes"]
    model = Transformer(config_for_size("tiny", ds.vocab_size, 64), seed=0)
    ev = evaluate_m2(model, ds, seq_len=64)
    info = ds.split_info("val")
    assert ev.targets == info["stream_tokens"] - 1
    assert ev.bytes == info["bytes"]
    assert ev.bits_per_byte == pytest.approx(math.log2(ds.vocab_size) * ev.targets / ev.bytes, rel=0.02)
    assert ev.bits_per_byte == pytest.approx(ev.bits_per_token * ev.targets / ev.bytes)
    assert ev.compression_ratio == pytest.approx(1.0)
    assert ev.uniform_bits_per_byte == pytest.approx(8.0)
    assert ev.m1_params_non_embedding == 0
    assert ev.flops_per_byte == pytest.approx(2 * model.n_params(non_embedding=True))


def test_training_learns_and_checkpoints_round_trip(
    datasets: dict[str, TokenDataset], tmp_path: Path
) -> None:
    ds = datasets["bytes"]
    config = M2Config(
        size="tiny",
        seq_len=64,
        batch_size=8,
        max_tokens=16_000,
        lr=1e-2,
        device="cpu",
        eval_every_tokens=8_000,
        eval_tokens=1024,
    )
    model, summary = train_m2(ds, config, tmp_path / "m2")
    ev = evaluate_m2(model, ds)
    assert ev.bits_per_byte < ev.unigram_bits_per_byte < ev.uniform_bits_per_byte
    assert summary["curve"][-1]["eval/val"] < summary["curve"][0]["eval/val"]
    again, saved = load_m2(tmp_path / "m2")
    assert saved["scheme"] == "bytes" and saved["m2"]["seq_len"] == 64
    assert evaluate_m2(again, ds).bits_per_byte == pytest.approx(ev.bits_per_byte, rel=1e-6)
    with pytest.raises(OutputExistsError):
        train_m2(ds, config, tmp_path / "m2")


def test_model_and_dataset_must_match(datasets: dict[str, TokenDataset]) -> None:
    model = Transformer(config_for_size("tiny", 300, 32), seed=0)
    with pytest.raises(ConfigError, match="vocabulary"):
        evaluate_m2(model, datasets["gzip"])


def test_same_bytes_for_every_scheme(datasets: dict[str, TokenDataset]) -> None:
    a, b = (datasets[s].split_info("val") for s in ("bytes", "gzip"))
    assert a["bytes"] == b["bytes"] and a["documents"] == b["documents"]
    assert b["compression_ratio"] > 1.0
