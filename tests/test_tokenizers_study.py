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
    sample_bytes_per_step,
    settings_rows,
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
            _row("spm-4096", "SentencePiece[4096]", 3.0, 4.3, 3.0, 70_000),
            _row("gzip", "GZip[v=256]", 3.07, 3.069, 2.6, 77_000),
            _row("ac", "AC[v=256]", 3.43, 3.42, 2.3, 290_000),
            _row("eqinfo16-256", "EqualInfoAC[b=16, v=256]", 4.0, 4.85, 1.65, 320_000),
            _row("eqinfo16-65k", "EqualInfoAC[b=16, v=65k]", 4.75, 4.8, 3.3, 260_000),
        ],
        "m1_params_non_embedding": 100_096,
    }
    notes = findings(results)
    # every scheme at the uniform bound is named, whatever its family
    assert any(n.startswith("AC[v=256] (tiny): 3.430 bits/byte, at the uniform bound") for n in notes)
    assert any(n.startswith("GZip[v=256] (tiny)") and "learned nothing" in n for n in notes)
    assert not any(n.startswith(("EqualInfoAC[b=16, v=256]", "Bytes", "SentencePiece")) for n in notes)
    # below the uniform bound but above the unigram bound: undertrained, said so
    assert any(n.startswith("EqualInfoAC[b=16, v=65k] (tiny)") and "unigram" in n for n in notes)
    # spm-N is SentencePiece for the bytes/step comparison
    assert any(
        "3.30 bytes per generation step, SentencePiece[4096] 3.00 (+9% fewer steps)" in n for n in notes
    )
    assert any("4.750 vs Bytes 4.000 bits/byte (worse) at 1.30x the FLOPs/byte" in n for n in notes)
    table = markdown_table(results)
    assert table.count("\n") == 16 and "| EqualInfoAC[b=16, v=65k] | tiny | 3 | 4.750 ± 0.010 |" in table
    assert all(line.count("|") <= 9 for line in table.splitlines())  # two tables that fit a page
    one_seed = {
        "rows": [_row("bytes", "Bytes", 4.0, 8.0, 1.0, 200_000) | {"seeds": 1, "bits_per_byte_std": 0.0}]
    }
    assert "| Bytes | tiny | 1 | 4.000 |" in markdown_table(one_seed) and "±" not in markdown_table(one_seed)
    settings = {"settings": {"corpus": ["builtin:mixture"], "seeds": [0, 1, 2], "train_tokens": 200_000}}
    assert settings_rows(settings) == [
        ["corpus", "builtin:mixture"],
        ["seeds", "0, 1, 2"],
        ["M2 training positions per run", "200,000"],
    ]
    assert render_plot(results).startswith(b"\x89PNG")


def test_samples_that_do_not_decode_show_na_not_zero() -> None:
    ok = {"text": "abc", "bytes_per_step": 1.5, "error": None}
    stream = {"text": None, "bytes_per_step": None, "error": "coded chunk truncated"}
    old_run = {"text": None, "bytes_per_step": 0.0, "error": "coded chunk truncated"}  # before the fix
    assert [sample_bytes_per_step(s) for s in (ok, stream, old_run)] == ["1.50", "n/a", "n/a"]


def test_demo_settings_keep_the_message() -> None:
    from compresslm.experiments.tokenization_study import demo_settings

    s = demo_settings("/tmp/x")
    labels = [x.label for x in s.specs]
    # the demo's message: AC is not learnable, EqualInfoAC is, EqualInfoAC[16, 65k] against Bytes
    assert {"bytes", "ac", "eqinfo16-256", "eqinfo16-65k"} <= set(labels)
    assert s.sizes == ["tiny"] and s.seeds == [0] and s.device == "cpu"
