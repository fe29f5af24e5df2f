"""Generation: sampled M2 ids decoded to text (through M1's window decoder for EqualInfoAC), and the
tokenize -> train -> eval -> generate -> study commands end to end on tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compresslm.cli import main
from compresslm.coding.m1 import M1
from compresslm.m2.generate import generate, sample_ids
from compresslm.models import Transformer, config_for_size, save_model
from compresslm.tokenizers import build_tokenizer
from compresslm.tokenizers.equal_info import EqualInfoTokenizer


def tiny_m1() -> M1:
    return M1(Transformer(config_for_size("tiny", vocab_size=256, max_seq_len=32), seed=0), threads=1)


class _Scripted(Transformer):
    """Predicts id ``script[t]`` at generated step t (and PAD everywhere else: it must never be sampled).
    Every model call is one step, with or without the KV cache; ``contexts`` records how many
    positions each call saw in all (cached ones included)."""

    def __init__(self, vocab: int, script: list[int], pad: int) -> None:
        super().__init__(config_for_size("tiny", vocab, 16), seed=0)
        self.script, self.pad, self.contexts = script, pad, []

    def _run(self, idx: torch.Tensor, cache):  # type: ignore[no-untyped-def]
        _, cache = super()._run(idx, cache)
        self.contexts.append(cache.length)
        logits = torch.full((1, idx.shape[1], self.config.vocab_size), -10.0)
        logits[0, -1, self.pad] = 100.0
        logits[0, -1, self.script[len(self.contexts) - 1]] = 50.0
        return logits, cache


def test_sampling_stops_at_end_of_document_and_never_samples_padding() -> None:
    tok = build_tokenizer("bytes")
    model = _Scripted(tok.vocab_size, [104, 105, tok.eod_id, 106], tok.pad_id)
    ids, stopped = sample_ids(
        model, [tok.eod_id], max_steps=10, eod_id=tok.eod_id, pad_id=tok.pad_id, temperature=0
    )
    assert ids == [104, 105] and stopped == "end of document"
    model = _Scripted(tok.vocab_size, [104] * 50, tok.pad_id)
    ids, stopped = sample_ids(
        model, [tok.eod_id] * 30, max_steps=20, eod_id=tok.eod_id, pad_id=tok.pad_id, temperature=0
    )  # a context longer than max_seq_len is cut to the last 16 ids
    assert ids == [104] * 20 and stopped == "max steps"
    assert model.contexts[:2] == [16, 16] and max(model.contexts) == 16
    model = _Scripted(tok.vocab_size, [104] * 50, tok.pad_id)
    sample_ids(model, [tok.eod_id] * 4, max_steps=14, eod_id=tok.eod_id, pad_id=tok.pad_id, temperature=0)
    assert model.contexts == [*range(4, 17), 16]  # the cache grows to max_seq_len, then the context slides


def test_equal_info_generation_decodes_through_m1() -> None:
    tok = EqualInfoTokenizer(tiny_m1(), 16, 16)
    model = Transformer(config_for_size("tiny", tok.vocab_size, 32), seed=1)
    g = generate(model, tok, "def ", max_steps=6, seed=3)
    assert g.error is None and g.text is not None
    assert 0 < g.steps <= 6 and g.bytes > 0
    # each sampled id is one window: the text is the windows' bytes, one after the other
    pieces = b"".join(tok.decode_windows(tok.codes([i])) for i in g.ids)
    assert pieces.decode("utf-8", errors="replace") == g.text
    assert g.bytes_per_step == pytest.approx(len(pieces) / g.steps)
    again = generate(model, tok, "def ", max_steps=6, seed=3)
    assert again.ids == g.ids  # seeded


def test_stream_schemes_report_undecodable_samples() -> None:
    tok = build_tokenizer("gzip")
    model = Transformer(config_for_size("tiny", tok.vocab_size, 32), seed=0)
    g = generate(model, tok, "hello", max_steps=8, seed=0)
    assert g.text is None and g.error
    assert g.bytes_per_step is None and g.to_dict()["bytes_per_step"] is None  # not 0.0: nothing decoded


def test_vocabulary_mismatch_is_an_error() -> None:
    model = Transformer(config_for_size("tiny", 300, 32), seed=0)
    with pytest.raises(Exception, match="vocabulary"):
        generate(model, build_tokenizer("bytes"), "x")


def _corpus(path: Path, n: int) -> str:
    lines = [
        json.dumps({"text": f"import os\n\ndef f_{i}(x):\n    return os.path.join(x, '{i}')\n"})
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_commands_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m1_dir = tmp_path / "m1"
    save_model(m1_dir, tiny_m1().model)
    tokens, m2 = tmp_path / "tokens", tmp_path / "m2"
    corpus = _corpus(tmp_path / "corpus.jsonl", 60)
    assert (
        main(
            [
                "tokenize",
                corpus,
                "--scheme",
                "eqinfo16-256",
                "--model",
                str(m1_dir),
                "-o",
                str(tokens),
                "--val-fraction",
                "0.25",
                "--workers",
                "1",
                "--limit-bytes",
                "3k",
                "--json",
            ]
        )
        == 0
    )
    meta = json.loads(capsys.readouterr().out)
    assert meta["splits"]["val"]["documents"] > 0 and meta["tokenizer"]["name"] == "EqualInfoAC[b=16, v=256]"
    assert (
        main(["tokenize", corpus, "--scheme", "eqinfo16-256", "--model", str(m1_dir), "-o", str(tokens)]) == 2
    )
    assert "exists" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--tokens",
                str(tokens),
                "-o",
                str(m2),
                "--train-tokens",
                "2k",
                "--seq-len",
                "32",
                "--batch-size",
                "8",
                "--device",
                "cpu",
                "--json",
            ]
        )
        == 0
    )
    trained = json.loads(capsys.readouterr().out)
    assert main(["eval", "--model", str(m2), "--tokens", str(tokens), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["bits_per_byte"] == pytest.approx(trained["bits_per_byte"])
    assert evaluated["flops_per_byte"] == pytest.approx(
        2 * evaluated["params_non_embedding"] / evaluated["compression_ratio"]
        + 2 * evaluated["m1_params_non_embedding"]
    )
    assert (
        main(
            [
                "generate",
                "--model",
                str(m2),
                "--tokens",
                str(tokens),
                "--prompt",
                "import ",
                "--max-steps",
                "6",
                "--json",
            ]
        )
        == 0
    )
    (sample,) = json.loads(capsys.readouterr().out)
    assert sample["text"] is not None and sample["steps"] <= 6
    assert main(["generate", "--model", str(m2)]) == 0  # the dataset recorded in M2
    assert "bytes/step" in capsys.readouterr().out


def test_study_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m1_dir = tmp_path / "m1"
    save_model(m1_dir, tiny_m1().model)
    out = tmp_path / "study"
    args = [
        "study",
        "tokenization",
        "--corpus",
        _corpus(tmp_path / "corpus.jsonl", 200),
        "--limit-bytes",
        "10k",
        "--schemes",
        "bytes,gzip,ac,eqinfo16-256",
        "--sizes",
        "tiny",
        "--train-tokens",
        "2k",
        "--seq-len",
        "32",
        "--batch-size",
        "8",
        "--m1",
        str(m1_dir),
        "--jobs",
        "1",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--val-fraction",
        "0.2",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "AC[v=256]" in text and "report:" in text
    results = json.loads((out / "report" / "results.json").read_text())
    assert [r["label"] for r in results["rows"]] == ["bytes", "gzip", "ac", "eqinfo16-256"]
    assert {r["bytes"] for r in results["runs"]} == {results["runs"][0]["bytes"]}  # same held-out bytes
    for name in ("index.html", "report.md", "bits_per_byte_vs_flops.png"):
        assert (out / "report" / name).stat().st_size > 0
    assert set(results["samples"]) == {"bytes", "gzip", "ac", "eqinfo16-256"}
    # a rerun reuses every finished part
    assert main(args) == 0
    assert "M2 bytes" not in capsys.readouterr().out
