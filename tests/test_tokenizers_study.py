"""The tokenization study's settings and report on synthetic results (the end-to-end run is in
tests/test_generate.py)."""

from __future__ import annotations

import pytest

from compresslm.errors import ConfigError
from compresslm.experiments.tokenization_study import (
    PAPER_RATIOS,
    TokenizationStudySettings,
    findings,
    markdown_table,
    render_plot,
)


def test_key_schemes_get_every_seed() -> None:
    s = TokenizationStudySettings(schemes=["spm", "bytes", "gzip", "eqinfo16-65k"], seeds=[0, 1, 2])
    assert {x.label: s.seeds_for(x.label) for x in s.specs} == {
        "spm-4096": [0, 1, 2],
        "bytes": [0, 1, 2],
        "gzip": [0],
        "eqinfo16-65k": [0, 1, 2],
    }
    s = TokenizationStudySettings(schemes=["gzip", "ac"], seeds=[4, 5], key_schemes=["ac"])
    assert [s.seeds_for(x.label) for x in s.specs] == [[4], [4, 5]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schemes": ["gzip", "gzip-256"]}, "twice"),
        ({"sizes": ["huge"]}, "unknown model size"),
        ({"schemes": ["lz4"]}, "unknown scheme"),
        ({"seeds": []}, "at least one"),
    ],
)
def test_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TokenizationStudySettings(**kwargs)


def _row(label: str, name: str, bpb: float, uniform: float, ratio: float, flops: float) -> dict:
    return {
        "label": label,
        "name": name,
        "size": "tiny",
        "seeds": 3,
        "bits_per_byte": bpb,
        "bits_per_byte_std": 0.01,
        "bits_per_token": bpb * ratio,
        "compression_ratio": ratio,
        "paper_ratio": PAPER_RATIOS.get(label),
        "paper_bits_per_byte_25m": None,
        "uniform_bits_per_byte": uniform,
        "unigram_bits_per_byte": uniform - 0.1,
        "flops_per_byte": flops,
        "bytes_per_step": ratio,
        "params_non_embedding": 100,
        "params_total": 200,
        "train_seconds": 1.0,
        "eval_targets_per_second": 1.0,
        "tokenize_bytes_per_second": 1.0,
        "learned": bpb < uniform,
    }


def test_report_states_the_paper_claims() -> None:
    results = {
        "rows": [
            _row("bytes", "Bytes", 4.0, 8.0, 1.0, 200_000),
            _row("spm", "SentencePiece[4096]", 3.0, 4.3, 3.0, 70_000),
            _row("ac", "AC[v=256]", 3.43, 3.42, 2.3, 290_000),
            _row("eqinfo16-65k", "EqualInfoAC[b=16, v=65k]", 3.9, 4.8, 3.3, 260_000),
        ],
        "m1_params_non_embedding": 100_096,
    }
    notes = findings(results)
    assert any(n.startswith("AC[v=256] (tiny)") and "learned nothing" in n for n in notes)
    assert any("3.30 bytes per generation step, SentencePiece 3.00 (+9% fewer steps)" in n for n in notes)
    assert any("3.900 vs Bytes 4.000 bits/byte (better) at 1.30x the FLOPs/byte" in n for n in notes)
    table = markdown_table(results)
    assert table.count("\n") == 5 and "| EqualInfoAC[b=16, v=65k] | tiny | 3 | 3.900 |" in table
    assert render_plot(results).startswith(b"\x89PNG")
