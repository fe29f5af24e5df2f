"""What `select` reports: per-source counts, precision at k, the budget used in its unit, every
selected document in --json, scores.parquet with `selected` and `rank`, one id column name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from compresslm.cli import main
from compresslm.select.pipeline import NO_DOMAIN
from compresslm.select.report import histogram_range


@pytest.fixture()
def pools(tmp_path: Path) -> tuple[Path, list[Path]]:
    target = tmp_path / "t.jsonl"
    target.write_text('{"text": "def f(x):\\n    return x + 1\\n"}\n')
    paths = []
    for name in ("a.jsonl", "b.jsonl"):
        rows = []
        for i in range(30):
            if i % 3 == 0:
                rows.append({"text": f"def g{i}(y):\n    return y * {i}\n", "domain": "python"})
            elif i % 3 == 1:
                rows.append({"text": f"The quick brown fox number {i} jumps.", "domain": "prose"})
            else:
                rows.append({"text": f"untagged line {i} of plain words"})
        rows.append({"text": ""})  # one rejection per file
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(tmp_path / name)
    return target, paths


def test_select_json_and_outputs_are_complete(
    pools: tuple[Path, list[Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target, sources = pools
    scores, rejects = tmp_path / "s.parquet", tmp_path / "r.jsonl"
    argv = ["select", "--target", str(target), "--source", *map(str, sources), "--k", "25", "--workers", "1"]
    argv += ["--domain-field", "domain", "--scores", str(scores), "--rejects", str(rejects), "--json"]
    assert main([*argv, "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["selected"]) == 25  # not cut to 20
    per_source = result["accounting"]["sources"]
    assert sum(c["selected"] for c in per_source.values()) == 25
    assert all(c["rejected"] == 1 and c["not_selected"] == 30 - c["selected"] for c in per_source.values())
    domains = result["domains"]
    assert domains[NO_DOMAIN]["pool"] == 20 and sum(d["pool"] for d in domains.values()) == 60
    precision = result["precision_at_k"]
    assert precision["k"] == 25 and precision["by_domain"]["python"] == domains["python"]["selected"] / 25
    size = result["size_selected"]
    assert size["unit"] == "bytes" and size["total"] == sum(s["size"] for s in result["selected"])
    table = pq.read_table(scores).to_pylist()
    assert len(table) == 60 and sum(r["selected"] for r in table) == 25
    ranked = sorted((r["rank"], r["record_id"]) for r in table if r["selected"])
    assert ranked == [(s["rank"], s["record_id"]) for s in result["selected"]]
    assert all(r["rank"] is None for r in table if not r["selected"])
    rows = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert len(rows) == 2 and all(set(r) == {"record_id", "source", "reason"} for r in rows)


def test_budget_used_is_reported_in_the_budget_unit(
    pools: tuple[Path, list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    target, sources = pools
    argv = ["select", "--target", str(target), "--source", str(sources[0]), "--budget-tokens", "40"]
    assert main([*argv, "--workers", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "words of 40 (" in out and "of the budget" in out
    assert "method.batch_size" not in out and "None" not in out  # no internals, no empty values


def test_histogram_range_is_not_squashed_by_outliers() -> None:
    scores = np.concatenate([np.linspace(-1.0, 1.0, 2000), [5e4, -7e4]])
    lo, hi = histogram_range(scores)
    assert -1.0 <= lo < -0.9 and 0.9 < hi <= 1.0
    assert histogram_range(scores, cut=3.0)[1] == 3.0  # the selection cut stays in view
